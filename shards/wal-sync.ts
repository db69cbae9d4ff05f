/**
 * Group fsync of a SQLite write-ahead log. The node commits on its event loop with `synchronous = NORMAL` (SQLite
 * writes the transaction's WAL frames but does not sync them) and acknowledges a commit only once a sync of the log
 * that started after the commit has finished: the same durability as `synchronous = FULL` (a commit is its frames
 * in the log, and those are on disk).
 *
 * Where the sync runs: on the event loop itself while the disk syncs fast, on libuv's thread pool while it does
 * not. On the loop, one sync right after the turn's commits (a microtask) covers all of them, and the sends are
 * released in the same turn; through the pool, every sync costs two thread wake-ups (to a pool thread and back)
 * and the round trip through the loop's queue. Measured on this project's 2-core machines: 72 µs of CPU per
 * fdatasync on the loop against 121 µs through the pool, and in 8 back-to-back fan-out runs at 1,000 msg/s the
 * cluster's CPU was lower in 8 of 8 (~5 points of 200) and p99 lower in 6 of 8. But a sync on the loop blocks
 * the whole node for as long as the disk takes: so a sync that takes longer than SLOW_SYNC_MS sends the following
 * ones to the pool for POOL_AFTER_SLOW_MS (the loop keeps serving while the disk is slow), after which the loop
 * tries again. A disk that is slow only now and then costs the loop one slow sync per POOL_AFTER_SLOW_MS.
 *
 * Through the pool, one sync runs at a time; the commits made while it runs share the next one (group commit). A
 * failed sync is final: after an fsync error the kernel may have dropped the dirty pages it could not write, so
 * nothing written since the last good sync can be trusted, and every later flush fails too (the node must
 * restart and recover from the file).
 */
import { closeSync, fdatasync, fdatasyncSync, openSync } from "node:fs";

export type SyncFile = (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;

/** A sync on the loop slower than this sends the next ones to the thread pool (ms). */
export const SLOW_SYNC_MS = 4;
/** How long syncs stay on the pool after a slow one on the loop (ms). */
export const POOL_AFTER_SLOW_MS = 10_000;

export interface WalSyncOptions {
  /** The sync on libuv's thread pool (default fs.fdatasync). */
  readonly sync?: SyncFile;
  /** The sync on the event loop, used while syncs are fast (default fs.fdatasyncSync); null: always the pool. */
  readonly syncNow?: ((fd: number) => void) | null;
  /** Told once, when a sync fails (the node stops: it can acknowledge nothing more). */
  readonly onFailure?: (err: Error) => void;
  /** Milliseconds, monotonic (tests). */
  readonly now?: () => number;
}

interface Waiters {
  readonly promise: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class WalSync {
  private fd: number | undefined;
  private running: Waiters | undefined;
  private next: Waiters | undefined;
  private failure: Error | undefined;
  /** close() was called: the descriptor goes once no sync uses it, and nothing more is synced or reported. */
  private closed = false;
  /** A sync on the loop is queued as a microtask (the flushes until it runs share it). */
  private syncQueued = false;
  /** Syncs go to the pool until this time (after a slow one on the loop). */
  private poolUntil = Number.NEGATIVE_INFINITY;
  private readonly sync: SyncFile;
  private readonly syncNow: ((fd: number) => void) | null;
  private readonly onFailure: (err: Error) => void;
  private readonly now: () => number;
  /** Syncs run on the loop and on the pool, and the loop's syncs slower than SLOW_SYNC_MS (metrics, tests). */
  readonly counts = { loop: 0, pool: 0, slow: 0 };

  constructor(
    /** The log file (`<db>-wal`); opened at the first flush (SQLite creates it with the first write). */
    private readonly path: string,
    options: WalSyncOptions = {},
  ) {
    this.sync = options.sync ?? fdatasync;
    this.syncNow = options.syncNow === undefined ? fdatasyncSync : options.syncNow;
    this.onFailure = options.onFailure ?? (() => {});
    this.now = options.now ?? (() => performance.now());
  }

  /** Set once a sync failed: the log's recent writes may be lost, so nothing more may be acknowledged. */
  get failed(): Error | undefined {
    return this.failure;
  }

  /** Resolves once everything written to the log before the call is on disk. */
  flush(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error("the SQLite log is closed"));
    const waiters = (this.next ??= makeWaiters());
    if (this.running !== undefined || this.syncQueued) return waiters.promise;
    if (this.syncNow !== null && this.now() >= this.poolUntil) {
      this.syncQueued = true;
      queueMicrotask(() => this.syncOnLoop());
    } else {
      this.start();
    }
    return waiters.promise;
  }

  /** Syncs the log now with the thread blocked (tests and tools that write synchronously). */
  flushSync(): void {
    if (this.failure !== undefined) throw this.failure;
    try {
      const fd = this.open();
      if (fd !== undefined) fdatasyncSync(fd);
    } catch (err) {
      this.fail(err as Error);
      throw this.failure;
    }
  }

  /**
   * Closes the descriptor, once the running sync (if any) is done with it: a descriptor closed under a sync
   * would fail it (EBADF) as if the disk had, or sync whatever file reused its number.
   */
  close(): void {
    // A sync queued for the end of this turn runs now: its commits were made, and a graceful stop answers them.
    if (this.syncQueued) this.syncOnLoop();
    this.closed = true;
    if (this.running === undefined) this.closeFd();
  }

  private closeFd(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** One sync on the loop for every flush since it was queued. */
  private syncOnLoop(): void {
    this.syncQueued = false;
    const waiters = this.next;
    if (waiters === undefined || this.failure !== undefined) return;
    if (this.closed) {
      this.next = undefined;
      return waiters.reject(new Error("the SQLite log is closed"));
    }
    this.next = undefined;
    try {
      const fd = this.open();
      const started = this.now();
      if (fd !== undefined) this.syncNow!(fd);
      const took = this.now() - started;
      this.counts.loop++;
      if (took > SLOW_SYNC_MS) {
        this.counts.slow++;
        this.poolUntil = this.now() + POOL_AFTER_SLOW_MS;
      }
    } catch (err) {
      this.running = waiters;
      return this.fail(err as Error);
    }
    waiters.resolve();
  }

  private start(): void {
    const waiters = this.next;
    if (waiters === undefined) return;
    this.next = undefined;
    this.running = waiters;
    let fd: number | undefined;
    try {
      fd = this.open();
    } catch (err) {
      return this.fail(err as Error);
    }
    if (fd === undefined) return this.synced(waiters);
    this.counts.pool++;
    this.sync(fd, (err) => {
      if (this.closed) return this.closedWhileRunning(waiters, err);
      if (err !== null) return this.fail(err);
      this.synced(waiters);
    });
  }

  /** The store closed during this sync: its outcome goes to its waiters, and no later sync starts. */
  private closedWhileRunning(waiters: Waiters, err: Error | null): void {
    this.running = undefined;
    this.closeFd();
    if (err === null) waiters.resolve();
    else waiters.reject(err);
    this.next?.reject(new Error("the SQLite log is closed"));
    this.next = undefined;
  }

  private synced(waiters: Waiters): void {
    this.running = undefined;
    waiters.resolve();
    this.start();
  }

  /** The log's descriptor; undefined while there is no log (nothing written, so nothing to sync). */
  private open(): number | undefined {
    if (this.fd !== undefined) return this.fd;
    try {
      return (this.fd = openSync(this.path, "r"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  private fail(cause: Error): void {
    this.failure = new Error(`the SQLite write-ahead log could not be synced (${cause.message}): recent commits may be lost, restart the node`, {
      cause,
    });
    for (const w of [this.running, this.next]) w?.reject(this.failure);
    this.running = this.next = undefined;
    this.onFailure(this.failure);
  }
}

function makeWaiters(): Waiters {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A flush nobody awaits (a write whose caller went away) must not become an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
