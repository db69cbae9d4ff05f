/**
 * The socket.io gateway: client protocol v1 (DESIGN.md). It authenticates sockets, validates every payload,
 * forwards room operations through the router and delivers room events from the feeds to local sockets.
 *
 * Delivery: a socket in a room is either catching up (replaying history after `since`, emitted to it alone)
 * or live (in the socket.io room `live:<room>`, to which the room's feed broadcasts). A socket becomes live at
 * the exact seq the feed has reached, so it sees every message once, in order.
 */
import type { Server, Socket } from "socket.io";
import { FractalError, toFractalError, type StoredMessage } from "../shards/index.js";
import type { Tokens } from "./auth.js";
import type { Logger } from "./log.js";
import { backlogBytes } from "./slow-clients.js";
import type { NodeMetrics } from "./metrics.js";
import {
  HistoryPayload,
  historyQuery,
  JoinPayload,
  LeavePayload,
  MAX_HISTORY_LIMIT,
  parsePayload,
  parseSend,
  TypingPayload,
} from "./protocol.js";
import { RoomBroadcast } from "./room-broadcast.js";
import { RoomFeed, type FeedSink } from "./room-feed.js";
import type { Router } from "./router.js";

const CATCH_UP_RETRY_MS = 500;
/** A socket that cannot be caught up for this long is disconnected; it reconnects and resumes with since. */
const CATCH_UP_GIVE_UP_MS = 30_000;
/** How often a catch-up looks whether its client has read enough of what was sent to take the next page. */
const CATCH_UP_DRAIN_POLL_MS = 50;
/**
 * Typing events a connection may relay: at most one per this interval. Each reaches every member of the room, so
 * the general rate limit (hundreds per second) would let one client flood a large room; an indicator needs one
 * every few seconds (the web page sends one per 2 s while the user types).
 */
const TYPING_MIN_INTERVAL_MS = 500;

/**
 * Per-socket state, kept in `socket.data` (no WeakMap entry, no extra object). Idle sockets are the bulk of a
 * node's memory, so it is one object with a fixed shape and small-integer fields only: the first room joined
 * lives inline, further rooms in a Map created on demand, and the two token buckets are inline integers.
 */
export class ClientState {
  /** The first room joined or being joined (undefined when none), and its code (generation * 2 + joined). */
  private room: string | undefined = undefined;
  private code = 0;
  /** Rooms beyond the first, room -> code; created on the second room. */
  private more: Map<string, number> | undefined = undefined;
  /** Token buckets in milli-tokens, refilled per whole millisecond: integers, so no heap numbers per socket. */
  private sendTokens: number;
  private sendAt: number;
  private otherTokens: number;
  private otherAt: number;
  /** When this connection last relayed a typing event (ms, performance.now based). */
  private typingAt: number;

  constructor(
    readonly user: string,
    rateLimit: number,
  ) {
    this.sendTokens = rateLimit * 2 * 1000;
    this.otherTokens = rateLimit * 8 * 1000;
    this.sendAt = this.otherAt = nowMs();
    this.typingAt = this.sendAt - TYPING_MIN_INTERVAL_MS;
  }

  /**
   * Rooms joined or being joined, each with a generation that changes on re-join so a stale catch-up stops.
   * `joined` turns true once the owner has counted the presence; only then does a disconnect undo it.
   */
  generation(room: string): number | undefined {
    const code = this.room === room ? this.code : this.more?.get(room);
    return code === undefined ? undefined : Math.floor(code / 2);
  }

  joined(room: string): boolean {
    const code = this.room === room ? this.code : this.more?.get(room);
    return code !== undefined && code % 2 === 1;
  }

  set(room: string, generation: number, joined: boolean): void {
    const code = generation * 2 + (joined ? 1 : 0);
    if (this.room === room || (this.room === undefined && this.more?.has(room) !== true)) {
      this.room = room;
      this.code = code;
    } else (this.more ??= new Map()).set(room, code);
  }

  /** Rooms joined or being joined. */
  get roomCount(): number {
    return (this.room === undefined ? 0 : 1) + (this.more?.size ?? 0);
  }

  delete(room: string): void {
    if (this.room === room) this.room = undefined;
    else this.more?.delete(room);
  }

  /** The rooms whose presence the owner counted; forgets every room. */
  takeJoined(): string[] {
    const rooms: string[] = [];
    if (this.room !== undefined && this.code % 2 === 1) rooms.push(this.room);
    if (this.more !== undefined) for (const [room, code] of this.more) if (code % 2 === 1) rooms.push(room);
    this.room = undefined;
    this.more = undefined;
    return rooms;
  }

  /** True (and noted) if a typing event may be relayed now: at most one per TYPING_MIN_INTERVAL_MS. */
  takeTyping(): boolean {
    const now = nowMs();
    if (now - this.typingAt < TYPING_MIN_INTERVAL_MS) return false;
    this.typingAt = now;
    return true;
  }

  /** Takes one send token; false when rate limited (`rateLimit` per second, burst twice that). */
  takeSend(rateLimit: number): boolean {
    const now = nowMs();
    const tokens = Math.min(rateLimit * 2000, this.sendTokens + (now - this.sendAt) * rateLimit);
    this.sendAt = now;
    const allowed = tokens >= 1000;
    this.sendTokens = allowed ? tokens - 1000 : tokens;
    return allowed;
  }

  /** Takes one token for any other event (4 × `rateLimit` per second, burst 8 ×). */
  takeOther(rateLimit: number): boolean {
    const now = nowMs();
    const tokens = Math.min(rateLimit * 8000, this.otherTokens + (now - this.otherAt) * rateLimit * 4);
    this.otherAt = now;
    const allowed = tokens >= 1000;
    this.otherTokens = allowed ? tokens - 1000 : tokens;
    return allowed;
  }
}

/** Whole milliseconds of a monotonic clock (a small integer for the first ~24 days of the process). */
function nowMs(): number {
  return Math.floor(performance.now());
}

/**
 * What `socket.handshake` holds after authentication: socket.io keeps the upgrade request's headers, the query,
 * the auth payload (with the session token), a date string... for the socket's lifetime, and nothing here reads
 * them after the middleware; one shared object instead saves ~0.5 KiB per socket.
 */
const DROPPED_HANDSHAKE = Object.freeze({
  headers: Object.freeze({}),
  time: "",
  address: "",
  xdomain: false,
  secure: false,
  issued: 0,
  url: "",
  query: Object.freeze({}),
  auth: Object.freeze({}),
});

export interface GatewayOptions {
  readonly maxTextLength: number;
  readonly rateLimit: number;
  readonly forwardTimeoutMs: number;
  /** Rooms one connection may be in at once: each costs a feed here and a member at the owner. */
  readonly maxRoomsPerConnection: number;
  /** What may wait to be sent to one connection (see slow-clients.ts); a catch-up stays well below it. */
  readonly clientBacklogBytes: number;
}

type Ack = (reply: unknown) => void;

export function liveRoom(room: string): string {
  return `live:${room}`;
}

export function wireMessage(m: StoredMessage) {
  return { room: m.room, seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts };
}

type Handler = (g: Gateway, socket: Socket, state: ClientState, payload: unknown) => Promise<object>;

function stateOf(socket: Socket): ClientState {
  return socket.data as ClientState;
}

/** Acked client events and what serves them (a Map: event names like "constructor" must not hit a prototype). */
const ACKED = new Map<string, Handler>([
  ["join", (g, socket, state, p) => g.join(socket, state, p)],
  ["leave", (g, socket, state, p) => g.leave(socket, state, p)],
  ["send", (g, _socket, state, p) => g.send(state, p)],
  ["history", (g, _socket, _state, p) => g.history(p)],
]);

export class Gateway implements FeedSink {
  private readonly feeds = new Map<string, RoomFeed>();
  private readonly broadcast: RoomBroadcast;
  private generation = 0;
  /** Listeners shared by every socket (socket.io calls them with `this` = the socket): no closures per socket. */
  private readonly onAnyEvent: (this: Socket, event: string, ...args: unknown[]) => void;
  private readonly onDisconnect: (this: Socket) => void;

  constructor(
    private readonly io: Server,
    private readonly router: Router,
    private readonly tokens: Tokens,
    private readonly metrics: NodeMetrics,
    private readonly log: Logger,
    private readonly options: GatewayOptions,
  ) {
    this.broadcast = new RoomBroadcast(io);
    const gateway = this;
    this.onAnyEvent = function (this: Socket, event: string, ...args: unknown[]) {
      gateway.dispatch(this, stateOf(this), event, args);
    };
    this.onDisconnect = function (this: Socket) {
      gateway.disconnected(this);
    };
    io.use((socket, next) => {
      try {
        const auth = socket.handshake.auth as { token?: unknown } | undefined;
        socket.data = new ClientState(tokens.verify(auth?.token), options.rateLimit);
        (socket as { handshake: unknown }).handshake = DROPPED_HANDSHAKE;
        next();
      } catch {
        next(new Error("unauthorized"));
      }
    });
    io.on("connection", (socket) => this.onConnection(socket));
  }

  get connectedClients(): number {
    return this.io.of("/").sockets.size;
  }

  /**
   * Closes every client's connection, a batch every 100 ms over `spreadMs` (a draining node sends them away:
   * they reconnect by themselves, elsewhere through the load balancer, and resume with since).
   */
  async releaseClients(spreadMs: number): Promise<number> {
    const sockets = [...this.io.of("/").sockets.values()];
    const batches = Math.max(1, Math.floor(spreadMs / 100));
    const size = Math.max(1, Math.ceil(sockets.length / batches));
    for (let i = 0; i < sockets.length; i += size) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      // Closing the connection underneath (no socket.io disconnect packet, which disconnect(true) would send
      // first) makes the client see "transport close" and reconnect by itself; after "io server disconnect" it
      // would wait for its application to reconnect.
      for (const socket of sockets.slice(i, i + size)) socket.conn.close();
    }
    return sockets.length;
  }

  get followedRooms(): number {
    return this.feeds.size;
  }

  // FeedSink: what the feeds deliver.
  message(room: string, m: StoredMessage): void {
    this.metrics.messagesDelivered.inc(this.broadcast.emit(liveRoom(room), "message", wireMessage(m)));
  }

  presence(room: string, user: string, event: "join" | "leave"): void {
    this.broadcast.emit(liveRoom(room), "presence", { room, user, event });
  }

  typing(room: string, user: string): void {
    this.broadcast.emit(liveRoom(room), "typing", { room, user });
  }

  gap(room: string, after: number, next: number): void {
    this.broadcast.emit(liveRoom(room), "gap", { room, after, next });
  }

  reset(room: string, seq: number): void {
    // Extension of protocol v1: history was restored to `seq`; clients drop what they hold above it.
    this.broadcast.emit(liveRoom(room), "reset", { room, seq });
  }

  resubscribed(room: string): void {
    // The owner forgot this node's presence when the stream broke: report every local member again.
    const users = new Set<string>();
    for (const socket of this.io.sockets.sockets.values()) {
      const state = stateOf(socket);
      if (state.joined(room)) users.add(state.user);
    }
    for (const user of users) {
      this.router.join(room, user).catch((err: unknown) => this.log.debug({ room, user, err }, "presence re-join failed"));
    }
  }

  private onConnection(socket: Socket): void {
    this.metrics.connectedClients.inc();
    // One listener per socket for every event (not one closure per event name), shared by all sockets.
    socket.onAny(this.onAnyEvent);
    socket.on("disconnect", this.onDisconnect);
  }

  private disconnected(socket: Socket): void {
    this.metrics.connectedClients.dec();
    const state = stateOf(socket);
    for (const room of state.takeJoined()) this.release(room, state.user);
  }

  /** Routes one client event; acked events get `{ok: false, error}` for any failure, nothing throws out. */
  private dispatch(socket: Socket, state: ClientState, event: string, args: unknown[]): void {
    const payload = args[0];
    if (event === "typing") return this.clientTyping(state, payload);
    const handler = ACKED.get(event);
    if (handler === undefined) return; // unknown events are ignored (protocol v1)
    const last = args[args.length - 1];
    const reply: Ack = typeof last === "function" ? (last as Ack) : () => {};
    const allowed = event === "send" ? state.takeSend(this.options.rateLimit) : state.takeOther(this.options.rateLimit);
    if (!allowed) return this.fail(reply, new FractalError("rate_limited", `too many ${event} requests`));
    handler(this, socket, state, payload).then(
      (result) => reply({ ok: true, ...result }),
      (err: unknown) => this.fail(reply, err),
    );
  }

  private clientTyping(state: ClientState, payload: unknown): void {
    try {
      const { room } = parsePayload(TypingPayload, payload);
      if (!state.joined(room) || !state.takeTyping() || !state.takeOther(this.options.rateLimit)) return;
      this.router.typing(room, state.user).catch(() => {});
    } catch {
      // typing has no ack: a bad one is dropped
    }
  }

  private fail(reply: Ack, err: unknown): void {
    const e = toFractalError(err);
    if (e.code === "internal") this.log.error({ err }, "client request failed");
    this.metrics.clientErrors.inc({ code: e.clientCode });
    reply({ ok: false, error: { code: e.clientCode, message: e.message } });
  }

  async join(socket: Socket, state: ClientState, payload: unknown) {
    const { room, since } = parsePayload(JoinPayload, payload);
    const generation = ++this.generation;
    let seq: number;
    let members: string[];
    if (state.generation(room) !== undefined) {
      // Re-join of a joined room (e.g. to resume with since): same presence, fresh delivery.
      state.set(room, generation, state.joined(room));
      socket.leave(liveRoom(room));
      ({ seq, members } = await this.router.info(room));
    } else {
      if (state.roomCount >= this.options.maxRoomsPerConnection) {
        throw new FractalError("forbidden", `a connection may be in at most ${this.options.maxRoomsPerConnection} rooms; leave one first`);
      }
      state.set(room, generation, false);
      const feed = this.acquire(room);
      try {
        await feed.whenReady(this.options.forwardTimeoutMs).catch(() => {
          throw new FractalError("unavailable", `the owner of room ${room} is unreachable`);
        });
        ({ seq, members } = await this.router.join(room, state.user));
      } catch (err) {
        if (state.generation(room) !== undefined) state.delete(room);
        this.releaseFeed(room);
        throw err;
      }
      // Counted by the owner: mark it joined (under whatever generation a later re-join gave it).
      const current = state.generation(room);
      if (current !== undefined) state.set(room, current, true);
      if (!socket.connected || current === undefined) {
        // The socket went away (or left) while the owner was counting it: undo here, nobody else will.
        this.release(room, state.user);
        throw new FractalError("unavailable", "disconnected while joining");
      }
    }
    // A newer join of the same room by this socket (sent before this one finished) owns delivery now.
    if (state.generation(room) !== generation) return { room, seq, members };
    if (since === undefined) socket.join(liveRoom(room));
    else void this.catchUp(socket, state, room, generation, Math.min(since, seq));
    return { room, seq, members };
  }

  /** Replays history after `since` to one socket, then admits it to the live set at the feed's cursor. */
  private async catchUp(socket: Socket, state: ClientState, room: string, generation: number, since: number): Promise<void> {
    const feed = this.feeds.get(room);
    if (feed === undefined) return;
    const current = () => socket.connected && state.generation(room) === generation;
    let cursor = since;
    const started = Date.now();
    const pauseAbove = this.options.clientBacklogBytes / 4;
    while (current()) {
      if (cursor >= feed.position && feed.whenAt(cursor, () => current() && socket.join(liveRoom(room)))) return;
      let page: StoredMessage[];
      try {
        page = await this.router.history(room, { after: cursor, limit: MAX_HISTORY_LIMIT });
      } catch (err) {
        if (Date.now() - started > CATCH_UP_GIVE_UP_MS) {
          this.log.warn({ room, err }, "catch-up failed for too long; disconnecting the client so it resumes");
          socket.disconnect(true);
          return;
        }
        await new Promise((r) => setTimeout(r, CATCH_UP_RETRY_MS));
        continue;
      }
      if (!current()) return;
      for (const m of page) {
        if (m.seq <= cursor) continue;
        // Flow control: a message waits until the client has read most of what was sent before it, so a slow
        // reader catching up on a long history goes at its own pace instead of being cut as too slow.
        while (backlogBytes(socket, pauseAbove) > pauseAbove) {
          await new Promise((r) => setTimeout(r, CATCH_UP_DRAIN_POLL_MS));
          if (!current()) return;
        }
        if (m.seq > cursor + 1) {
          // Seqs that do not exist (skipped after a failover, or past retention): say so instead of skipping
          // silently (invariant 5).
          socket.emit("gap", { room, after: cursor, next: m.seq });
        }
        socket.emit("message", wireMessage(m));
        cursor = m.seq;
      }
      if (page.length === 0 && cursor < feed.position) {
        // History has nothing the feed already delivered past: admit at the feed's position.
        cursor = feed.position;
      }
    }
  }

  async leave(socket: Socket, state: ClientState, payload: unknown) {
    const { room } = parsePayload(LeavePayload, payload);
    if (!state.joined(room)) throw new FractalError("not_joined", `not joined to room ${room}`);
    state.delete(room);
    socket.leave(liveRoom(room));
    this.release(room, state.user);
    return {};
  }

  async send(state: ClientState, payload: unknown) {
    const { room, text, id } = parseSend(payload, this.options.maxTextLength);
    if (!state.joined(room)) throw new FractalError("not_joined", `join room ${room} before sending to it`);
    const { seq, ts } = await this.router.send(room, state.user, id, text);
    return { seq, ts };
  }

  async history(payload: unknown) {
    const p = parsePayload(HistoryPayload, payload);
    const messages = await this.router.history(p.room, historyQuery(p));
    return { messages: messages.map(wireMessage) };
  }

  private acquire(room: string): RoomFeed {
    let feed = this.feeds.get(room);
    if (feed === undefined) {
      feed = new RoomFeed(room, this.router, this, this.log);
      this.feeds.set(room, feed);
    }
    feed.refs++;
    return feed;
  }

  private release(room: string, user: string): void {
    this.router.leave(room, user).catch((err: unknown) => this.log.debug({ room, user, err }, "leave failed"));
    this.releaseFeed(room);
  }

  private releaseFeed(room: string): void {
    const feed = this.feeds.get(room);
    if (feed === undefined || --feed.refs > 0) return;
    feed.close();
    this.feeds.delete(room);
  }
}
