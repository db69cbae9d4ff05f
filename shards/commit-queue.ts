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
  private idle: (() => void)[] = [];

  constructor(
    private readonly store: RoomStore,
    private readonly hooks: CommitHooks,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Resolves with the stored message once it is durable; rejects if its batch failed. */
  enqueue(message: PendingMessage): Promise<StoredMessage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      this.schedule();
    });
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when every enqueued message has been committed or failed. */
  drained(): Promise<void> {
    if (this.queue.length === 0 && !this.scheduled) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue.splice(0, MAX_BATCH);
    if (this.queue.length > 0) this.schedule();
    if (batch.length > 0) this.commit(batch);
    if (this.queue.length === 0 && !this.scheduled) {
      for (const done of this.idle.splice(0)) done();
    }
  }

  private commit(batch: Entry[]): void {
    const ts = this.clock();
    const messages = batch.map((e) => ({ ...e.message, ts }));
    try {
      this.store.append(messages);
    } catch (err) {
      this.hooks.failed(
        batch.map((e) => e.message),
        err,
      );
      for (const e of batch) e.reject(err);
      return;
    }
    this.hooks.committed(messages);
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(messages[i]!);
  }
}
