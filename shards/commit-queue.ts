/**
 * Group commit: sends that arrive in the same event-loop turn, from any room, are written in one store
 * transaction (one fsync). Latency cost is at most one turn; throughput grows with load.
 */
import type { RoomStore, StoredMessage } from "./room-store.js";

export type PendingMessage = Omit<StoredMessage, "ts">;

interface Entry {
  readonly message: PendingMessage;
  readonly resolve: (m: StoredMessage) => void;
  readonly reject: (err: unknown) => void;
  /** Called after resolve or reject (roomDrained waiters). */
  readonly settled: (() => void)[];
}

export interface CommitHooks {
  /** Called synchronously after a batch is durable, in seq order, before any send is acknowledged. */
  committed(messages: readonly StoredMessage[]): void;
  /** Called when a batch failed: nothing of it was stored. */
  failed(messages: readonly PendingMessage[], err: unknown): void;
}

/** Largest batch per transaction; keeps one turn's blocking time bounded under a burst. */
const MAX_BATCH = 2000;

export class CommitQueue {
  private queue: Entry[] = [];
  private scheduled = false;
  /** One commit at a time: batches must land in order, and a slow commit makes the next batch bigger. */
  private committing = false;
  private idle: (() => void)[] = [];
  /** The batch being committed (its entries left `queue`). */
  private inFlight: Entry[] = [];

  constructor(
    private readonly store: RoomStore,
    private readonly hooks: CommitHooks,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Resolves with the stored message once it is durable; rejects if its batch failed. */
  enqueue(message: PendingMessage): Promise<StoredMessage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject, settled: [] });
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
    const waiting = [...this.inFlight, ...this.queue].filter((e) => e.message.room === room);
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
    if (this.queue.length === 0 && !this.scheduled && !this.committing) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    if (this.committing) return; // the commit in flight reschedules when it is done
    const batch = this.queue.splice(0, MAX_BATCH);
    if (batch.length === 0) return this.notifyIdle();
    this.committing = true;
    this.inFlight = batch;
    const ts = this.clock();
    const messages = batch.map((e) => ({ ...e.message, ts }));
    let durable: Promise<void>;
    try {
      durable = this.store.appendAsync ? this.store.appendAsync(messages) : Promise.resolve(this.store.append(messages));
    } catch (err) {
      durable = Promise.reject(err);
    }
    durable.then(
      () => {
        this.hooks.committed(messages);
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(messages[i]!);
        settle(batch);
        this.done();
      },
      (err: unknown) => {
        // Sends queued meanwhile for the same rooms carry seqs after the failed ones: they cannot land either.
        const rooms = new Set(batch.map((e) => e.message.room));
        const doomed = this.queue.filter((e) => rooms.has(e.message.room));
        this.queue = this.queue.filter((e) => !rooms.has(e.message.room));
        const failed = [...batch, ...doomed];
        this.hooks.failed(
          failed.map((e) => e.message),
          err,
        );
        for (const e of failed) e.reject(err);
        settle(failed);
        this.done();
      },
    );
  }

  private done(): void {
    this.committing = false;
    this.inFlight = [];
    if (this.queue.length > 0) this.schedule();
    else this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.queue.length === 0 && !this.scheduled && !this.committing) for (const resolve of this.idle.splice(0)) resolve();
  }
}

function settle(entries: readonly Entry[]): void {
  for (const e of entries) for (const f of e.settled.splice(0)) f();
}
