/**
 * Group fsync of a SQLite write-ahead log on libuv's thread pool. The node commits on its event loop with
 * `synchronous = NORMAL` (SQLite writes the transaction's WAL frames but does not sync them) and acknowledges a
 * commit only once a sync of the log that started after the commit has finished: the same durability as
 * `synchronous = FULL` (a commit is its frames in the log, and those are on disk), without blocking the loop for
 * the fsync or handing every commit to another thread.
 *
 * One sync runs at a time; the commits made while it runs share the next one (group commit). A failed sync is
 * final: after an fsync error the kernel may have dropped the dirty pages it could not write, so nothing
 * written since the last good sync can be trusted, and every later flush fails too (the node must restart and
 * recover from the file).
 */
import { closeSync, fdatasync, fdatasyncSync, openSync } from "node:fs";

export type SyncFile = (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;

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

  constructor(
    /** The log file (`<db>-wal`); opened at the first flush (SQLite creates it with the first write). */
    private readonly path: string,
    private readonly sync: SyncFile = fdatasync,
    /** Told once, when a sync fails (the node stops: it can acknowledge nothing more). */
    private readonly onFailure: (err: Error) => void = () => {},
  ) {}

  /** Set once a sync failed: the log's recent writes may be lost, so nothing more may be acknowledged. */
  get failed(): Error | undefined {
    return this.failure;
  }

  /** Resolves once everything written to the log before the call is on disk. */
  flush(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error("the SQLite log is closed"));
    const waiters = (this.next ??= makeWaiters());
    if (this.running === undefined) this.start();
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
    this.closed = true;
    if (this.running === undefined) this.closeFd();
  }

  private closeFd(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
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
