/**
 * The owner's side of replicated durability (DESIGN.md "Durability", `--durability replicated`): a committed
 * message is acknowledged and published only once the room's replica — the next node after the owner on the
 * room's ring, `successors(room, 2)[1]` under the owner's current map — holds it too, at the owner's current
 * epoch. A failover then loses nothing acknowledged: the replica becomes the owner and continues after its
 * copy (node/replica-failover.ts).
 *
 * - After each group commit the batch's messages go, per room, to the room's replica: one Replicate call per
 *   replica node at a time, carrying whatever the rooms of that node committed meanwhile (the call in flight
 *   keeps order per room; a slow replica makes the next call bigger, not more numerous). The owner's next
 *   group commit does not wait for the replication of the last one.
 * - The replica accepts only data that continues its copy; otherwise it says where its copy ends and the
 *   owner sends from there, read from its own SQLite (at most the checkpoint backlog: the copy needs nothing
 *   the chain holds).
 * - A room's released head (acknowledged, published, served) moves only on an answer from the room's replica
 *   under the current map and epoch: an answer to a call made under an older map does not count, since the
 *   new replica may not have the message.
 * - After every map change (and at start) each owned room is synced with its replica: an empty item "your
 *   copy should end at my head" that the replica records as current at the new epoch, or backfilled.
 * - A room whose region has no other node has no replica: it is released after the local commit (degraded,
 *   counted in a metric, logged once).
 * - A room this node knows nothing about yet (after a restart or a takeover) is released up to its checkpoint
 *   only (the chain has that); it is served once its replica confirmed the rest (`ready`).
 */
import {
  FractalError,
  type MessageRelease,
  type ReplicaItem,
  type RoomStore,
  type StoredMessage,
} from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { Caller } from "./room-api.js";

/** What a replica answered for one room (see ReplicaResult in proto/fractal.proto). */
export interface ReplicaAnswer {
  readonly status: string;
  readonly head: number;
  readonly message: string;
}

/** The replication transport: PeerLink over gRPC, in-memory replica services in fast tests. */
export interface ReplicaPeer {
  replicate(caller: Caller, items: readonly ReplicaItem[], timeoutMs: number): Promise<ReplicaAnswer[]>;
}

export interface ReplicatorDeps {
  readonly self: string;
  readonly membership: Membership;
  readonly store: RoomStore;
  readonly peers: { get(node: string): ReplicaPeer };
  readonly log: Logger;
  /** Deadline of one Replicate call. */
  readonly timeoutMs: number;
  /** Publishes a released message to the room's subscribers (the room actor, if the room is in memory). */
  readonly publish: (message: StoredMessage) => void;
  /** Whether a room is being taken over or rebuilt here (it is synced when it is first used afterwards). */
  readonly settling?: (room: string) => boolean;
  /** Asked when a room's history has a hole above its checkpoint (a skip the chain does not record yet). */
  readonly checkpointSoon?: (room: string) => void;
  /** Each Replicate call: its duration and outcome ("ok" or an error code). */
  readonly observe?: (seconds: number, outcome: string) => void;
  /** A room's waiting sends were refused because its replica did not confirm ("unreachable", "refused", ...). */
  readonly failed?: (rooms: number, reason: string) => void;
}

interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly reject: (err: FractalError) => void;
}

/** What this owner knows of a room's replica copy: where it ends, as answered by `node` at `epoch`. */
interface KnownCopy {
  readonly node: string;
  readonly epoch: number;
  readonly head: number;
  /** Answered "ok" (the copy is this node's history up to head); otherwise only a position to verify. */
  readonly confirmed: boolean;
}

interface RoomReplication {
  /** Highest seq released; undefined until known (a restart or a takeover: the first sync decides). */
  released: number | undefined;
  copy: KnownCopy | undefined;
  /** The replica's copy is of another history: the next item resets it. */
  reset: boolean;
  /** Committed, not yet shipped (the next call sends them without reading the store). */
  outgoing: StoredMessage[];
  /** Committed above `released`, ascending, for publishing without reading the store. */
  unreleased: StoredMessage[];
  waiters: Waiter[];
  /** Answers in a row that were not "ok": a copy that keeps refusing must not keep the room spinning. */
  rounds: number;
}

interface Channel {
  readonly rooms: Set<string>;
  busy: boolean;
  scheduled: boolean;
}

/** Per call: bounded rooms and bytes (the peer's gRPC limit is 8 MiB), bounded messages per room. */
const MAX_CALL_ROOMS = 2000;
const MAX_CALL_BYTES = 4 * 1024 * 1024;
const MAX_ITEM_MESSAGES = 2000;
const MAX_ROUNDS = 8;

export class Replicator implements MessageRelease {
  private readonly rooms = new Map<string, RoomReplication>();
  private readonly channels = new Map<string, Channel>();
  private warnedDegraded = false;
  private closed = false;

  constructor(private readonly d: ReplicatorDeps) {}

  visibleHead(room: string): number {
    const r = this.state(room);
    if (r.released !== undefined) return r.released;
    return Math.min(this.d.store.head(room), this.checkpointed(room));
  }

  committed(messages: readonly StoredMessage[]): void {
    const touched = new Set<string>();
    for (const m of messages) {
      const r = this.state(m.room);
      r.outgoing.push(m);
      r.unreleased.push(m);
      touched.add(m.room);
    }
    for (const room of touched) this.want(room);
  }

  released(room: string, seq: number): Promise<void> {
    const r = this.state(room);
    if (r.released !== undefined && seq <= r.released) return Promise.resolve();
    if (this.closed) return Promise.reject(new FractalError("unavailable", `node ${this.d.self} is stopping`));
    return new Promise((resolve, reject) => {
      r.waiters.push({ seq, resolve, reject });
      this.want(room);
    });
  }

  /** True while the room cannot be served yet: its released head is unknown until its replica answers. */
  needsSync(room: string): boolean {
    return this.state(room).released === undefined;
  }

  /** Resolves once the room's released head is known (its replica confirmed the local copy). */
  async ready(room: string, timeoutMs: number): Promise<void> {
    if (!this.needsSync(room)) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.released(room, this.d.store.head(room)),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new FractalError("unavailable", `room ${room}: its replica has not confirmed the room yet`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The room's local copy was replaced (a takeover or a restore): what was released before says nothing about
   * it, and the replica's copy may be of another history. It is served again once synced (`ready`).
   */
  forget(room: string, options: { reset?: boolean } = {}): void {
    const r = this.rooms.get(room);
    this.rooms.delete(room);
    for (const w of r?.waiters ?? []) w.reject(new FractalError("unavailable", `room ${room} changed on this node; retry`));
    if (options.reset === true) this.state(room).reset = true;
  }

  /**
   * Syncs every room this node owns with its replica (after a map change, and at start): rooms that moved away
   * refuse their waiting sends (the sender retries at the new owner), the others are brought in sync under
   * the new epoch.
   */
  resync(): void {
    const { membership, self } = this.d;
    for (const room of [...this.rooms.keys()]) if (membership.ownerOf(room) !== self) this.drop(room, this.moved(room));
    if (this.hasReplicas()) this.warnedDegraded = false;
    for (const room of this.d.store.rooms()) {
      if (membership.ownerOf(room) === self && this.d.settling?.(room) !== true) this.want(room);
    }
  }

  /** Rooms owned here that have no replica (their region has no other node); for the metric. */
  degradedRooms(): number {
    if (this.hasReplicas()) return 0;
    return this.d.store.rooms().filter((room) => this.d.membership.ownerOf(room) === this.d.self).length;
  }

  /** Resolves once no send waits for its replica (a graceful stop lets them finish), or after `timeoutMs`. */
  async idle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && [...this.rooms.values()].some((r) => r.waiters.length > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Refuses every waiting send (the node is stopping). */
  close(): void {
    this.closed = true;
    for (const room of [...this.rooms.keys()]) this.drop(room, new FractalError("unavailable", `node ${this.d.self} is stopping`));
  }

  private state(room: string): RoomReplication {
    let r = this.rooms.get(room);
    if (r === undefined) {
      const head = this.d.store.head(room);
      // Everything up to the checkpoint is in the chain: safe to show. Beyond it, only the replica can say.
      const degraded = this.d.membership.ownerOf(room) === this.d.self && this.replicaOf(room) === undefined;
      const known = head <= this.checkpointed(room) || degraded;
      r = { released: known ? head : undefined, copy: undefined, reset: false, outgoing: [], unreleased: [], waiters: [], rounds: 0 };
      this.rooms.set(room, r);
    }
    return r;
  }

  private checkpointed(room: string): number {
    return this.d.store.checkpointOf(room)?.seq ?? 0;
  }

  private replicaOf(room: string): string | undefined {
    const [owner, replica] = this.d.membership.ring.successors(room, 2);
    return owner === this.d.self ? replica : undefined;
  }

  private hasReplicas(): boolean {
    const ring = this.d.membership.ring;
    const region = this.d.membership.node(this.d.self)?.region;
    return ring.nodeIds.some((id) => id !== this.d.self && this.d.membership.node(id)?.region === region);
  }

  private moved(room: string): FractalError {
    const epoch = this.d.membership.epoch;
    return new FractalError("wrong_owner", `node ${this.d.self} no longer owns room ${room} at epoch ${epoch}`, { epoch });
  }

  /** Schedules the room for its replica's channel (or releases it at once when it has none). */
  private want(room: string): void {
    if (this.closed) return;
    if (this.d.membership.ownerOf(room) !== this.d.self) return this.drop(room, this.moved(room));
    const replica = this.replicaOf(room);
    if (replica === undefined) return this.degraded(room);
    let ch = this.channels.get(replica);
    if (ch === undefined) this.channels.set(replica, (ch = { rooms: new Set(), busy: false, scheduled: false }));
    ch.rooms.add(room);
    this.schedule(replica, ch);
  }

  private schedule(node: string, ch: Channel): void {
    if (ch.busy || ch.scheduled) return;
    ch.scheduled = true;
    setImmediate(() => {
      ch.scheduled = false;
      this.flush(node, ch);
    });
  }

  private degraded(room: string): void {
    if (!this.warnedDegraded) {
      this.warnedDegraded = true;
      this.d.log.warn(
        { room, region: this.d.membership.node(this.d.self)?.region },
        "replicated durability, but no other node in this region: rooms are acknowledged after the local commit only (degraded)",
      );
    }
    const r = this.state(room);
    r.outgoing = [];
    this.advance(room, r, this.d.store.head(room));
  }

  /** One Replicate call to `node` with the rooms waiting for it; the next call goes when this one is answered. */
  private flush(node: string, ch: Channel): void {
    if (ch.busy || this.closed) return;
    const { membership, self } = this.d;
    const epoch = membership.epoch;
    const items: ReplicaItem[] = [];
    /** The state each item was made from: an answer for a room forgotten meanwhile (restore, takeover) is void. */
    const made: RoomReplication[] = [];
    let bytes = 0;
    for (const room of ch.rooms) {
      if (items.length >= MAX_CALL_ROOMS || bytes >= MAX_CALL_BYTES) break;
      ch.rooms.delete(room);
      if (membership.ownerOf(room) !== self) {
        this.drop(room, this.moved(room));
        continue;
      }
      if (this.replicaOf(room) !== node) {
        this.want(room); // the map changed since the room was queued
        continue;
      }
      const item = this.itemFor(room, node, epoch, MAX_CALL_BYTES - bytes);
      if (item === undefined) continue;
      items.push(item);
      made.push(this.state(room));
      bytes += 64 + item.room.length + item.messages.reduce((n, m) => n + messageBytes(m), 0);
    }
    if (items.length === 0) return;
    ch.busy = true;
    const started = performance.now();
    let call: Promise<ReplicaAnswer[]>;
    try {
      call = this.d.peers.get(node).replicate({ node: self, epoch }, items, this.d.timeoutMs);
    } catch (err) {
      call = Promise.reject(err);
    }
    call
      .then(
        (answers) => {
          this.d.observe?.((performance.now() - started) / 1000, "ok");
          items.forEach((item, i) => this.rooms.get(item.room) === made[i] && this.answered(node, epoch, item, answers[i]));
        },
        (err: unknown) => {
          const e = err instanceof FractalError ? err : new FractalError("unavailable", String(err));
          this.d.observe?.((performance.now() - started) / 1000, e.code);
          this.d.log.warn({ replica: node, rooms: items.length, err: e.message }, "replication call failed; sends wait for a retry");
          const refused = new FractalError("unavailable", `the replica ${node} of the room did not confirm: ${e.message}; retry with the same id`);
          items.forEach((item, i) => this.rooms.get(item.room) === made[i] && this.fail(item.room, refused, "unreachable"));
        },
      )
      .finally(() => {
        ch.busy = false;
        if (ch.rooms.size > 0) this.schedule(node, ch);
      });
  }

  /** What to send for a room, or undefined when its replica already has everything (it is then released). */
  private itemFor(room: string, node: string, epoch: number, budget: number): ReplicaItem | undefined {
    const r = this.state(room);
    const head = this.d.store.head(room);
    const checkpointed = this.checkpointed(room);
    const known = r.copy !== undefined && r.copy.node === node && r.copy.epoch === epoch ? r.copy : undefined;
    if (!r.reset && known !== undefined && known.head > head) r.reset = true; // a copy past our head is of another history
    if (!r.reset && known?.confirmed === true && known.head >= head) {
      r.outgoing = [];
      this.advance(room, r, known.head);
      return undefined;
    }
    let after: number;
    let verify: boolean;
    if (r.reset) {
      after = checkpointed;
      verify = false;
    } else if (known !== undefined) {
      // Continue where the copy ends (the chain covers anything below the checkpoint); a position the replica
      // only reported (not confirmed) is checked against our message there.
      after = Math.max(known.head, checkpointed);
      verify = !known.confirmed;
    } else {
      // First contact under this map: our new messages if any, else "you should end at our head"; the
      // replica checks our message at that point, so a copy of another history is never extended.
      after = r.outgoing.length > 0 ? r.outgoing[0]!.seq - 1 : head;
      verify = true;
    }
    const messages = this.messagesAfter(room, r, after, head, budget);
    if (messages === undefined) return undefined;
    const at = verify && after > checkpointed ? this.messageAt(room, after) : undefined;
    return { room, checkpointed, after, afterId: at?.id ?? "", afterTs: at?.ts ?? 0, messages, reset: r.reset };
  }

  /** The room's messages after `after` up to `head` (bounded), from what was just committed or the store. */
  private messagesAfter(room: string, r: RoomReplication, after: number, head: number, budget: number): StoredMessage[] | undefined {
    const fresh = r.outgoing.filter((m) => m.seq > after);
    r.outgoing = [];
    let messages: StoredMessage[];
    if (fresh.length === 0 || fresh[0]!.seq === after + 1) messages = fresh;
    else messages = this.d.store.history(room, { after, before: head + 1, limit: Math.min(head - after, MAX_ITEM_MESSAGES) });
    if (messages.length === 0 && after < head) messages = this.d.store.history(room, { after, before: head + 1, limit: Math.min(head - after, MAX_ITEM_MESSAGES) });
    if (messages.length > 0 && messages[0]!.seq !== after + 1) {
      // Seqs skipped above the checkpoint (a takeover that could not record its skip yet): the replica cannot
      // take a hole, and the chain will cover it once the skip is checkpointed.
      this.fail(room, new FractalError("unavailable", `room ${room} has skipped seqs not in object storage yet; retry shortly`), "skip_not_checkpointed");
      this.d.checkpointSoon?.(room);
      return undefined;
    }
    let bytes = 0;
    let n = 0;
    while (n < messages.length && n < MAX_ITEM_MESSAGES && (n === 0 || bytes + messageBytes(messages[n]!) <= budget)) {
      bytes += messageBytes(messages[n]!);
      n++;
    }
    return n === messages.length ? messages : messages.slice(0, n);
  }

  private messageAt(room: string, seq: number): StoredMessage | undefined {
    const m = this.d.store.history(room, { after: seq - 1, limit: 1 })[0];
    return m?.seq === seq ? m : undefined;
  }

  private answered(node: string, epoch: number, item: ReplicaItem, answer: ReplicaAnswer | undefined): void {
    const { room } = item;
    const r = this.rooms.get(room);
    if (r === undefined) return; // dropped or forgotten meanwhile
    const { membership, self } = this.d;
    if (membership.ownerOf(room) !== self) return this.drop(room, this.moved(room));
    // An answer under an older map does not count: the room's replica now may not hold the message.
    if (membership.epoch !== epoch || this.replicaOf(room) !== node) return this.want(room);
    if (answer === undefined) return this.fail(room, new FractalError("internal", `replica ${node} answered a short batch`), "refused");
    const head = this.d.store.head(room);
    switch (answer.status) {
      case "ok":
        r.copy = { node, epoch, head: answer.head, confirmed: true };
        r.reset = false;
        r.rounds = 0;
        this.advance(room, r, answer.head);
        if (head > answer.head) this.want(room);
        return;
      case "behind":
      case "ahead":
        if (answer.head > head) r.reset = true;
        else r.copy = { node, epoch, head: answer.head, confirmed: false };
        return this.retry(room, r, answer);
      case "diverged":
        r.reset = true;
        return this.retry(room, r, answer);
      case "stale":
      case "wrong_owner":
        // The replica has a newer map, or a newer owner wrote the copy: learn the map before trying again.
        void membership.refresh().catch(() => undefined);
        return this.retry(room, r, answer);
      default:
        return this.fail(room, new FractalError("unavailable", `replica ${node} refused room ${room}: ${answer.status} ${answer.message}`), "refused");
    }
  }

  private retry(room: string, r: RoomReplication, answer: ReplicaAnswer): void {
    if (++r.rounds <= MAX_ROUNDS) return this.want(room);
    this.fail(room, new FractalError("unavailable", `the replica of room ${room} keeps answering ${answer.status}; retry shortly`), "refused");
  }

  /** Moves the room's released head up to `confirmed` (never past the local head): publish, then acknowledge. */
  private advance(room: string, r: RoomReplication, confirmed: number): void {
    const target = Math.min(confirmed, this.d.store.head(room));
    if (r.released === undefined) {
      // Nothing was served from this copy yet (nobody subscribed before it was known): no events to publish.
      r.released = target;
    } else if (target > r.released) {
      for (const m of this.between(room, r, r.released, target)) this.d.publish(m);
      r.released = target;
    }
    const released = r.released;
    r.unreleased = r.unreleased.filter((m) => m.seq > released);
    const ready = r.waiters.filter((w) => w.seq <= released);
    if (ready.length === 0) return;
    r.waiters = r.waiters.filter((w) => w.seq > released);
    for (const w of ready) w.resolve();
  }

  /** The messages with seqs in (from, to], ascending: kept since the commit, or read back after a restart. */
  private between(room: string, r: RoomReplication, from: number, to: number): StoredMessage[] {
    const kept = r.unreleased.filter((m) => m.seq > from && m.seq <= to);
    if (kept.length === to - from) return kept;
    return this.d.store.history(room, { after: from, before: to + 1, limit: to - from });
  }

  /** Refuses the room's waiting sends; what the replica holds is unknown until it answers again. */
  private fail(room: string, err: FractalError, reason: "unreachable" | "refused" | "skip_not_checkpointed"): void {
    const r = this.rooms.get(room);
    if (r === undefined) return;
    r.copy = undefined;
    r.rounds = 0;
    const waiters = r.waiters;
    r.waiters = [];
    for (const w of waiters) w.reject(err);
    if (waiters.length > 0) this.d.failed?.(1, reason);
  }

  private drop(room: string, err: FractalError): void {
    const r = this.rooms.get(room);
    this.rooms.delete(room);
    for (const w of r?.waiters ?? []) w.reject(err);
  }
}

function messageBytes(m: StoredMessage): number {
  return m.text.length * 3 + m.id.length + m.user.length + 32;
}
