/**
 * Routing of room operations: the ring of the newest map names the owner; the operation runs in-process when
 * that is this node and over gRPC otherwise. A wrong_owner answer means one of the two maps is stale: the
 * router refreshes its map and retries, so the client never sees it.
 *
 * Subscriptions follow the owner too: when the map changes or the owner refuses a room, the room's
 * subscription moves to the new owner, whose first event (the head) lets the feed fetch what it missed.
 */
import { FractalError, type HistoryQuery, type RoomEvent, type RoomListener, type SendRecord, type StoredMessage } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { LocalOwner } from "./owner.js";
import type { Caller, JoinResult, OwnerApi, OwnerEvents, RoomInfo } from "./room-api.js";

const MAX_REROUTES = 3;
const REFUSED_RETRY_MS = 250;

/** How the router reaches other nodes: gRPC links in a node process (PeerPool), in-memory owners in fast tests. */
export interface Peers {
  /** The owner API of node `node`; throws unavailable when the node is unknown. */
  get(node: string): OwnerApi & OwnerEvents;
}

export type ForwardObserver = (op: string, seconds: number, outcome: string) => void;

interface Subscription {
  owner: string | undefined;
  readonly listener: RoomListener;
  retry: NodeJS.Timeout | undefined;
}

export class Router {
  private readonly subscriptions = new Map<string, Subscription>();

  constructor(
    private readonly self: string,
    private readonly membership: Membership,
    private readonly local: LocalOwner,
    private readonly peers: Peers,
    private readonly log: Logger,
    private readonly observe: ForwardObserver = () => {},
  ) {
    membership.onChange(() => this.rerouteAll());
  }

  join(room: string, user: string): Promise<JoinResult> {
    return this.route(room, "join", (api, c) => api.join(c, room, user));
  }

  leave(room: string, user: string): Promise<void> {
    return this.route(room, "leave", (api, c) => api.leave(c, room, user));
  }

  send(room: string, user: string, id: string, text: string): Promise<SendRecord> {
    return this.route(room, "send", (api, c) => api.send(c, room, user, id, text));
  }

  history(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    return this.route(room, "history", (api, c) => api.history(c, room, query));
  }

  typing(room: string, user: string): Promise<void> {
    return this.route(room, "typing", (api, c) => api.typing(c, room, user));
  }

  info(room: string): Promise<RoomInfo> {
    return this.route(room, "info", (api, c) => api.info(c, room));
  }

  /** Follows a room's events wherever its owner is. One subscription per room per node. */
  follow(room: string, listener: RoomListener): void {
    this.unfollow(room);
    const sub: Subscription = { owner: undefined, listener, retry: undefined };
    this.subscriptions.set(room, sub);
    this.attach(room, sub);
  }

  unfollow(room: string): void {
    const sub = this.subscriptions.get(room);
    if (sub === undefined) return;
    this.subscriptions.delete(room);
    clearTimeout(sub.retry);
    if (sub.owner !== undefined) this.eventsOf(sub.owner)?.unsubscribe(this.caller(), room);
  }

  get followed(): number {
    return this.subscriptions.size;
  }

  private caller(): Caller {
    return { node: this.self, epoch: this.membership.epoch };
  }

  private apiOf(owner: string): OwnerApi {
    return owner === this.self ? this.local : this.peers.get(owner);
  }

  private eventsOf(owner: string): OwnerEvents | undefined {
    if (owner === this.self) return this.local;
    try {
      return this.peers.get(owner);
    } catch {
      return undefined;
    }
  }

  private async route<T>(room: string, op: string, call: (api: OwnerApi, caller: Caller) => Promise<T>): Promise<T> {
    const started = performance.now();
    for (let attempt = 0; ; attempt++) {
      const owner = this.membership.ownerOf(room);
      if (owner === undefined) throw new FractalError("unavailable", "no node can own rooms right now");
      try {
        const result = await call(this.apiOf(owner), this.caller());
        if (owner !== this.self) this.observe(op, (performance.now() - started) / 1000, "ok");
        return result;
      } catch (err) {
        if (err instanceof FractalError && err.code === "wrong_owner" && attempt < MAX_REROUTES) {
          this.log.debug({ room, owner, theirEpoch: err.epoch, ourEpoch: this.membership.epoch }, "wrong owner, refreshing map");
          await this.membership.refresh().catch((e: unknown) => this.log.warn({ err: e }, "map refresh failed"));
          continue;
        }
        if (owner !== this.self) this.observe(op, (performance.now() - started) / 1000, err instanceof FractalError ? err.code : "internal");
        throw err;
      }
    }
  }

  private attach(room: string, sub: Subscription): void {
    const owner = this.membership.ownerOf(room);
    sub.owner = owner;
    if (owner === undefined) return this.retryLater(room, sub);
    const events = this.eventsOf(owner);
    if (events === undefined) return this.retryLater(room, sub);
    const listener = (event: RoomEvent) => {
      if (this.subscriptions.get(room) !== sub || sub.owner !== owner) return;
      if (event.type === "refused") {
        this.log.debug({ room, owner, code: event.code }, "owner refused subscription, re-routing");
        void this.membership.refresh().catch(() => {});
        return this.retryLater(room, sub);
      }
      sub.listener(event);
    };
    try {
      events.subscribe(this.caller(), room, listener);
    } catch (err) {
      this.log.debug({ room, owner, err }, "local subscription refused, re-routing");
      this.retryLater(room, sub);
    }
  }

  private retryLater(room: string, sub: Subscription): void {
    clearTimeout(sub.retry);
    sub.retry = setTimeout(() => {
      if (this.subscriptions.get(room) !== sub) return;
      if (sub.owner !== undefined) this.eventsOf(sub.owner)?.unsubscribe(this.caller(), room);
      this.attach(room, sub);
    }, REFUSED_RETRY_MS);
  }

  private rerouteAll(): void {
    for (const [room, sub] of this.subscriptions) {
      const owner = this.membership.ownerOf(room);
      if (owner === sub.owner) continue;
      if (sub.owner !== undefined) this.eventsOf(sub.owner)?.unsubscribe(this.caller(), room);
      this.attach(room, sub);
    }
  }
}
