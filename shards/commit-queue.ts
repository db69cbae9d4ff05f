/**
 * Group commit: sends that arrive in the same event-loop turn, from any room, are handed to the store as one
 * batch. Batches do not wait for each other: the SQLite store commits each at once and makes every commit made
 * during its running fsync durable with the next one. So a send waits for at most the fsync in progress plus its
 * own, never for an earlier batch to be answered first.
 */
import type { RoomStore, StoredMessage } from "./room-store.js";

export type PendingMessage = Omit<StoredMessage, "ts">;

interface Entry {
  readonly message: PendingMessage;
  readonly resolve: (m: StoredMessage) => void;
  readonly reject: (err: unknown) => void;
  /** Called after resolve or reject (roomDrained waiters). */
  readonly settled: (() => void)[];
  /** Rejected already: its batch or an earlier batch of its room failed. */
  done: boolean;
}

interface Batch {
  readonly entries: Entry[];
  readonly messages: StoredMessage[];
  /** Set when the store answered; batches are settled in order. */
  outcome?: { readonly ok: true } | { readonly ok: false; readonly err: unknown };
}

export interface CommitHooks {
  /** Called synchronously after a batch is durable, in seq order, before any send is acknowledged. */
  committed(messages: readonly StoredMessage[]): void;
  /** Called when a batch failed: nothing of it was stored. */
  failed(messages: readonly PendingMessage[], err: unknown): void;
}

/** Largest batch per transaction; keeps one turn's blocking time bounded under a burst. */
const MAX_BATCH = 2000;
/** Batches handed to the store and not yet answered; beyond this, turns' sends wait and merge into one batch. */
const MAX_IN_FLIGHT = 8;

export class CommitQueue {
  private queue: Entry[] = [];
  private scheduled = false;
  private idle: (() => void)[] = [];
  /** Batches handed to the store, oldest first. */
  private inFlight: Batch[] = [];

  constructor(
    private readonly store: RoomStore,
    private readonly hooks: CommitHooks,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Resolves with the stored message once it is durable; rejects if its batch failed. */
  enqueue(message: PendingMessage): Promise<StoredMessage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject, settled: [], done: false });
      this.schedule();
    });
  }

  get pending(): number {
    return this.queue.length;
  }

  /**
   * Resolves when the messages of `room` enqueued so far have been committed or failed. Unlike drained(), it
   * does not wait for other rooms: a handoff under load must not wait for the whole node to go idle.
   */
  roomDrained(room: string): Promise<void> {
    const waiting = [...this.inFlight.flatMap((b) => b.entries), ...this.queue].filter((e) => !e.done && e.message.room === room);
    if (waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      let left = waiting.length;
      const one = () => {
        if (--left === 0) resolve();
      };
      for (const e of waiting) e.settled.push(one);
    });
  }

  /** Resolves when every enqueued message has been committed or failed. */
  drained(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private isIdle(): boolean {
    return this.queue.length === 0 && !this.scheduled && this.inFlight.length === 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    // At the limit, the batch answered next reschedules.
    while (this.queue.length > 0 && this.inFlight.length < MAX_IN_FLIGHT) this.dispatch(this.queue.splice(0, MAX_BATCH));
    this.notifyIdle();
  }

  private dispatch(entries: Entry[]): void {
    const ts = this.clock();
    const batch: Batch = { entries, messages: entries.map((e) => ({ ...e.message, ts })) };
    this.inFlight.push(batch);
    let durable: Promise<void>;
    try {
      durable = this.store.appendAsync ? this.store.appendAsync(batch.messages) : Promise.resolve(this.store.append(batch.messages));
    } catch (err) {
      durable = Promise.reject(err);
    }
    durable.then(
      () => this.answered(batch, { ok: true }),
      (err: unknown) => this.answered(batch, { ok: false, err }),
    );
  }

  /** Settles answered batches in the order they were handed to the store (hooks see seqs in order). */
  private answered(batch: Batch, outcome: NonNullable<Batch["outcome"]>): void {
    batch.outcome = outcome;
    while (this.inFlight[0]?.outcome !== undefined) {
      const next = this.inFlight.shift()!;
      if (next.outcome!.ok) this.committed(next);
      else this.failed(next, (next.outcome as { err: unknown }).err);
    }
    if (this.queue.length > 0) this.schedule();
    else this.notifyIdle();
  }

  private committed(batch: Batch): void {
    this.hooks.committed(batch.messages);
    const early = batch.entries.filter((e) => e.done);
    // Cannot happen with a store that refuses gaps; if it did, the room must count these seqs as taken again.
    if (early.length > 0) this.hooks.failed(early.map((e) => e.message), new Error("committed after its room was rolled back"));
    for (let i = 0; i < batch.entries.length; i++) if (!batch.entries[i]!.done) batch.entries[i]!.resolve(batch.messages[i]!);
    settle(batch.entries);
  }

  private failed(batch: Batch, err: unknown): void {
    const live = batch.entries.filter((e) => !e.done);
    if (live.length === 0) return; // its failed entries were rejected with an earlier batch of their rooms
    // Later sends of the same rooms, handed to the store or queued, carry seqs after the failed ones: they cannot
    // land either (the store refuses the gap), so they fail now, before the rooms hand out those seqs again.
    const rooms = new Set(live.map((e) => e.message.room));
    const later = [...this.inFlight.flatMap((b) => b.entries), ...this.queue].filter((e) => !e.done && rooms.has(e.message.room));
    this.queue = this.queue.filter((e) => !rooms.has(e.message.room));
    const failed = [...live, ...later];
    for (const e of failed) e.done = true;
    this.hooks.failed(
      failed.map((e) => e.message),
      err,
    );
    for (const e of failed) e.reject(err);
    settle(failed);
  }

  private notifyIdle(): void {
    if (this.isIdle()) for (const resolve of this.idle.splice(0)) resolve();
  }
}

function settle(entries: readonly Entry[]): void {
  for (const e of entries) for (const f of e.settled.splice(0)) f();
}
