/**
 * Gateway side of fan-out: one feed per room that has local clients. The feed follows the room's owner once
 * for the whole node and delivers each message to the node's live sockets in seq order, exactly once.
 *
 * The feed's cursor is the last seq delivered to live sockets. A message that arrives out of line (the event
 * stream broke and came back, the owner moved) makes the feed fetch the missing range from the owner's
 * history before going on, so live sockets never see a gap. Sockets that join with `since` catch up from
 * history on their own and are admitted to the live set at the exact moment the feed's cursor equals theirs
 * (`whenAt`), which is what makes resume gap-free and duplicate-free.
 */
import type { RoomEvent, StoredMessage, PresenceChange } from "../shards/index.js";
import type { Logger } from "./log.js";
import { MAX_HISTORY_LIMIT } from "./protocol.js";

/** Where a feed delivers to: the node's sockets that are live in the room. Must not throw. */
export interface FeedSink {
  message(room: string, message: StoredMessage): void;
  presence(room: string, user: string, event: PresenceChange): void;
  typing(room: string, user: string): void;
  /** The owner path came back after a break: the owner may have forgotten this node's presence. */
  resubscribed(room: string): void;
  /** The room's history now ends at `seq` (restored to an earlier point): messages above it are gone. */
  reset(room: string, seq: number): void;
  /** Seqs after `after` and before `next` do not exist (skipped or lost). */
  gap(room: string, after: number, next: number): void;
}

export interface FeedSource {
  follow(room: string, listener: (event: RoomEvent) => void): void;
  unfollow(room: string): void;
  history(room: string, query: { after: number; limit: number }): Promise<StoredMessage[]>;
}

const FILL_RETRY_MS = 200;

export class RoomFeed {
  /** Last seq delivered to live sockets; -1 until the owner told us its head. */
  private cursor = -1;
  /** Highest seq known to exist at the owner (from head events and messages seen). */
  private known = -1;
  private readonly pending = new Map<number, StoredMessage>();
  private filling = false;
  private readonly waiters = new Map<number, (() => void)[]>();
  private readyWaiters: (() => void)[] = [];
  private closed = false;
  refs = 0;

  constructor(
    readonly room: string,
    private readonly source: FeedSource,
    private readonly sink: FeedSink,
    private readonly log: Logger,
  ) {
    source.follow(room, (event) => this.onEvent(event));
  }

  get ready(): boolean {
    return this.cursor >= 0;
  }

  get position(): number {
    return this.cursor;
  }

  /** Resolves once the owner has answered the subscription (or rejects after `timeoutMs`). */
  whenReady(timeoutMs: number): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done);
        reject(new Error("owner did not answer the subscription in time"));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.readyWaiters.push(done);
    });
  }

  /**
   * Runs `admit` synchronously at the moment the cursor equals `seq` (now, if it already does), before any
   * later message is delivered. Returns false if the cursor is already past `seq`.
   */
  whenAt(seq: number, admit: () => void): boolean {
    if (this.cursor === seq) {
      admit();
      return true;
    }
    if (this.cursor > seq) return false;
    const list = this.waiters.get(seq);
    if (list === undefined) this.waiters.set(seq, [admit]);
    else list.push(admit);
    return true;
  }

  close(): void {
    this.closed = true;
    this.source.unfollow(this.room);
    this.waiters.clear();
    this.pending.clear();
  }

  private onEvent(event: RoomEvent): void {
    if (this.closed) return;
    switch (event.type) {
      case "head":
        return this.onHead(event.seq);
      case "message":
        return this.onMessage(event.message);
      case "presence":
        return this.sink.presence(this.room, event.user, event.event);
      case "typing":
        return this.sink.typing(this.room, event.user);
      case "refused":
        return; // the router re-routes; a fresh head follows
    }
  }

  private onHead(head: number): void {
    this.known = Math.max(this.known, head);
    if (this.cursor < 0) {
      this.cursor = head;
      for (const w of this.readyWaiters.splice(0)) w();
      return;
    }
    this.sink.resubscribed(this.room);
    if (head > this.cursor) {
      void this.fill();
    } else if (head < this.cursor) {
      // The owner's history ends before what we delivered: it was rebuilt from an older checkpoint. Its seqs
      // continue from its head, so follow it; waiting sockets are admitted now rather than never.
      this.log.warn({ room: this.room, head, cursor: this.cursor }, "owner head is behind delivered messages");
      this.cursor = head;
      this.known = head;
      this.pending.clear();
      this.sink.reset(this.room, head);
      this.admitThrough(Number.MAX_SAFE_INTEGER);
    }
  }

  private onMessage(m: StoredMessage): void {
    if (this.cursor < 0 || m.seq <= this.cursor) return;
    this.known = Math.max(this.known, m.seq);
    if (m.seq === this.cursor + 1 && !this.filling && this.pending.size === 0) {
      this.deliver(m);
      return;
    }
    this.pending.set(m.seq, m);
    void this.fill();
  }

  private deliver(m: StoredMessage): void {
    this.sink.message(this.room, m);
    this.cursor = m.seq;
    const admitted = this.waiters.get(m.seq);
    if (admitted !== undefined) {
      this.waiters.delete(m.seq);
      for (const admit of admitted) admit();
    }
  }

  /** Delivers buffered messages in line; fetches from history whatever is missing before them. */
  private async fill(): Promise<void> {
    if (this.filling) return;
    this.filling = true;
    try {
      for (;;) {
        this.drainPending();
        if (this.closed || this.cursor >= this.known) break;
        // Messages exist beyond the cursor that did not arrive in line: fetch them from the owner.
        let page: StoredMessage[];
        try {
          page = await this.source.history(this.room, { after: this.cursor, limit: MAX_HISTORY_LIMIT });
        } catch (err) {
          this.log.debug({ room: this.room, err }, "feed gap fill failed, retrying");
          await new Promise((r) => setTimeout(r, FILL_RETRY_MS));
          continue;
        }
        for (const m of page) if (m.seq > this.cursor) this.pending.set(m.seq, m);
        if (!this.pending.has(this.cursor + 1)) {
          if (this.pending.size === 0) {
            this.known = this.cursor; // the owner has nothing more: what we believed existed does not
            break;
          }
          // The owner has no messages between the cursor and what comes next: seqs skipped after a failover
          // (or lost with an owner's disk). Say so and go on rather than stall the room.
          const next = Math.min(...this.pending.keys());
          this.log.info({ room: this.room, after: this.cursor, next }, "room history has a gap");
          this.sink.gap(this.room, this.cursor, next);
          this.cursor = next - 1;
          this.admitThrough(this.cursor);
        }
      }
    } finally {
      this.filling = false;
    }
  }

  /** Admits every socket waiting for a seq up to `seq` (used when the cursor jumps). */
  private admitThrough(seq: number): void {
    for (const [at, list] of [...this.waiters]) {
      if (at > seq) continue;
      this.waiters.delete(at);
      for (const admit of list) admit();
    }
  }

  private drainPending(): void {
    for (;;) {
      const next = this.pending.get(this.cursor + 1);
      if (next === undefined) break;
      this.pending.delete(next.seq);
      this.deliver(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.cursor) this.pending.delete(seq);
  }
}
