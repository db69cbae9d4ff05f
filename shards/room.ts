/**
 * The room actor on its owner: the single writer of one room. It assigns consecutive seqs, deduplicates
 * sends by (user, id), tracks who is present through which node, and publishes events to subscribers.
 *
 * Concurrency: all methods run on the owner's event loop; seq assignment is synchronous, so two sends can
 * never get the same seq. Durability comes from the shared CommitQueue (group commit).
 */
import type { CommitQueue } from "./commit-queue.js";
import { FractalError } from "./errors.js";
import type { MessageRelease } from "./message-release.js";
import type { RoomEvent, RoomListener } from "./room-event.js";
import type { HistoryQuery, RoomStore, SendRecord, StoredMessage } from "./room-store.js";

export interface SendInput {
  readonly user: string;
  readonly id: string;
  readonly text: string;
}

export class Room {
  /** Highest seq handed out (committed or in flight). */
  private assigned: number;
  /** Sends in flight, by idempotency key, so a retry racing its original gets the same answer. */
  private readonly inflight = new Map<string, Promise<SendRecord>>();
  /**
   * user -> node -> number of that node's sockets of that user in the room. The usual case, one socket through
   * one node, is stored as just the node's id (no Map per member: ~180 bytes less per user in a room).
   */
  private readonly presence = new Map<string, string | Map<string, number>>();
  private readonly listeners = new Map<string, RoomListener>();

  constructor(
    readonly id: string,
    private readonly store: RoomStore,
    private readonly commits: CommitQueue,
    /** Replicated durability: messages are shown only once released (undefined: right after the commit). */
    private readonly release?: MessageRelease,
  ) {
    this.assigned = store.head(id);
  }

  /** Highest seq handed out, committed or in flight. */
  get assignedSeq(): number {
    return this.assigned;
  }

  /** Latest seq that may be shown (committed, and released when there is a release). */
  get head(): number {
    return this.release !== undefined ? this.release.visibleHead(this.id) : this.store.head(this.id);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  send(input: SendInput): Promise<SendRecord> {
    const key = `${input.user}\u0000${input.id}`;
    const pending = this.inflight.get(key);
    if (pending !== undefined) return pending;
    const earlier = this.store.findSend(this.id, input.user, input.id);
    // A retry of a send that was committed but never acknowledged (its replica did not confirm it) waits for
    // the release like the original did.
    if (earlier !== undefined) return this.release === undefined ? Promise.resolve(earlier) : this.track(key, this.released(earlier));

    const seq = ++this.assigned;
    const committed = this.commits.enqueue({ room: this.id, seq, id: input.id, user: input.user, text: input.text }).then(
      (m) => ({ seq: m.seq, ts: m.ts }),
      (err: unknown) => {
        throw new FractalError("unavailable", "the room could not commit the message; retry with the same id", {
          cause: err,
        });
      },
    );
    return this.track(key, this.release === undefined ? committed : committed.then((r) => this.released(r)));
  }

  private track(key: string, result: Promise<SendRecord>): Promise<SendRecord> {
    const tracked = result.finally(() => this.inflight.delete(key));
    this.inflight.set(key, tracked);
    return tracked;
  }

  private async released(record: SendRecord): Promise<SendRecord> {
    await this.release!.released(this.id, record.seq);
    return record;
  }

  /** Called by the commit queue's hook when a batch with this room's messages failed. */
  rollback(): void {
    this.assigned = this.store.head(this.id);
  }

  /** Called in seq order once a message may be shown: after its commit, or its release (replicated durability). */
  committed(message: StoredMessage): void {
    this.publish({ room: this.id, type: "message", message });
  }

  /** Messages up to the head only: an unreleased message must not be seen before it is safe. */
  history(query: HistoryQuery): StoredMessage[] {
    if (this.release === undefined) return this.store.history(this.id, query);
    const below = this.head + 1;
    return this.store.history(this.id, { ...query, before: Math.min(query.before ?? below, below) });
  }

  /** A user is present through `node`; returns the sorted member list. */
  join(user: string, node: string): string[] {
    const byNode = this.presence.get(user);
    if (byNode === undefined) {
      this.presence.set(user, node);
      this.publish({ room: this.id, type: "presence", user, event: "join" });
    } else if (typeof byNode === "string") {
      this.presence.set(user, new Map([[byNode, 1]]).set(node, byNode === node ? 2 : 1));
    } else {
      byNode.set(node, (byNode.get(node) ?? 0) + 1);
    }
    return this.members();
  }

  leave(user: string, node: string): void {
    const byNode = this.presence.get(user);
    if (byNode === undefined) return;
    if (typeof byNode === "string") {
      if (byNode !== node) return;
    } else {
      const count = byNode.get(node);
      if (count === undefined) return;
      if (count > 1) byNode.set(node, count - 1);
      else byNode.delete(node);
      if (byNode.size > 0) return;
    }
    this.presence.delete(user);
    this.publish({ room: this.id, type: "presence", user, event: "leave" });
  }

  /** Forgets every user present through `node` (the node went away or re-registers its presence). */
  dropNode(node: string): void {
    for (const [user, byNode] of [...this.presence]) {
      if (typeof byNode === "string" ? byNode !== node : !byNode.delete(node) || byNode.size > 0) continue;
      this.presence.delete(user);
      this.publish({ room: this.id, type: "presence", user, event: "leave" });
    }
  }

  typing(user: string): void {
    this.publish({ room: this.id, type: "typing", user });
  }

  members(): string[] {
    return [...this.presence.keys()].sort();
  }

  /**
   * Starts delivering events to `subscriber` (one per node). The first event is the committed head, so the
   * subscriber can fetch anything it missed; events then follow in order.
   */
  subscribe(subscriber: string, listener: RoomListener): void {
    this.listeners.set(subscriber, listener);
    listener({ room: this.id, type: "head", seq: this.head });
  }

  unsubscribe(subscriber: string): void {
    this.listeners.delete(subscriber);
  }

  /**
   * The room's rows were replaced (point-in-time restore): seqs continue from the new head, and every
   * subscriber is told to re-subscribe (it then gets the new head and re-reports its presence).
   */
  reset(): void {
    this.assigned = this.store.head(this.id);
    const listeners = [...this.listeners.values()];
    this.listeners.clear();
    this.presence.clear();
    for (const listener of listeners) listener({ room: this.id, type: "refused", code: "unavailable" });
  }

  /** True when nothing references the room any more and it may be evicted from memory. */
  get idle(): boolean {
    return this.listeners.size === 0 && this.presence.size === 0 && this.inflight.size === 0;
  }

  private publish(event: RoomEvent): void {
    for (const listener of this.listeners.values()) listener(event);
  }
}
