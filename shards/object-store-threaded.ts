/**
 * An ObjectStore whose calls run on a worker thread. Checkpoints write a segment and a manifest per room per
 * interval; with the directory store each is several filesystem calls (fsync, rename, lock files), with S3 an
 * HTTPS request with signing and XML parsing. On the node's event loop that work delays deliveries; here the
 * loop pays one message each way per call. Same contract as the wrapped store (see object-store.ts); errors
 * come back as the same classes (PreconditionFailedError) or as Errors with the original name, message, code.
 */
import { Worker } from "node:worker_threads";
import { threadIdIn, threadIdSlot } from "./thread-id.js";
import { PreconditionFailedError, type ObjectStore, type ObjectVersion, type PutCondition, type StoredObject } from "./object-store.js";

/** What the worker opens: a directory path or `s3://bucket/prefix` (see openObjectStore). */
export interface ObjectStoreSpec {
  readonly location: string;
  readonly s3Endpoint?: string | undefined;
}

export type ObjectRequest =
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "put"; readonly key: string; readonly body: Uint8Array; readonly condition?: PutCondition | undefined }
  | { readonly op: "list"; readonly prefix: string }
  | { readonly op: "delete"; readonly key: string };

export type ObjectReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: { name: string; message: string; code?: unknown; key?: string } };

export class ThreadedObjectStore implements ObjectStore {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | undefined;
  /** Where the thread tells its OS thread id (for per-thread CPU in /metrics). */
  private readonly thread = threadIdSlot();

  constructor(
    spec: ObjectStoreSpec,
    readonly location: string = spec.location,
  ) {
    this.worker = new Worker(new URL("./object-store.worker.js", import.meta.url), { workerData: { ...spec, threadId: this.thread } });
    this.worker.on("message", (reply: ObjectReply) => this.settle(reply));
    this.worker.on("error", (err) => this.fail(err));
    this.worker.on("exit", (code) => this.fail(new Error(`object store thread exited with code ${code}`)));
    // Idle, the thread must not keep the process alive; with calls in flight it must (see call()).
    this.worker.unref();
  }

  /** The thread's OS thread id, once it has started (Linux). */
  get threadId(): number | undefined {
    return threadIdIn(this.thread);
  }

  async get(key: string): Promise<StoredObject | undefined> {
    const v = (await this.call({ op: "get", key })) as { body: Uint8Array; version: string } | undefined;
    return v === undefined ? undefined : { body: Buffer.from(v.body.buffer, v.body.byteOffset, v.body.byteLength), version: v.version };
  }

  async put(key: string, body: Buffer, condition?: PutCondition): Promise<ObjectVersion> {
    return (await this.call({ op: "put", key, body, condition })) as ObjectVersion;
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.call({ op: "list", prefix })) as string[];
  }

  async delete(key: string): Promise<void> {
    await this.call({ op: "delete", key });
  }

  /** Stops the thread; calls still in flight fail. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private call(request: ObjectRequest): Promise<unknown> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      if (this.waiting.size === 0) this.worker.ref();
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...request });
    });
  }

  private settle(reply: ObjectReply): void {
    const w = this.waiting.get(reply.id);
    if (w === undefined) return;
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) this.worker.unref();
    if (reply.ok) w.resolve(reply.value);
    else w.reject(reviveError(reply.error));
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }
}

function reviveError(e: { name: string; message: string; code?: unknown; key?: string }): Error {
  if (e.name === "PreconditionFailedError") return new PreconditionFailedError(e.key ?? "");
  const err = new Error(e.message);
  err.name = e.name;
  if (e.code !== undefined) Object.assign(err, { code: e.code });
  return err;
}
