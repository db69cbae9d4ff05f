/**
 * Object storage seam: checkpoints, the cluster map and leases live here (S3 in production, a local
 * directory by default).
 *
 * Contract (every implementation):
 * - Keys are `/`-separated paths of `[A-Za-z0-9._=-]` segments; no empty, `.` or `..` segment.
 * - `put` replaces the whole object atomically: a reader sees the old or the new body, never a mix.
 * - Compare-and-swap: `ifNoneMatch: "*"` writes only if the key does not exist; `ifMatch: v` writes only if
 *   the current version is `v`. A failed condition throws PreconditionFailedError and changes nothing.
 * - Versions are opaque strings that change whenever the body changes.
 */
export interface ObjectVersion {
  readonly version: string;
}

export interface StoredObject extends ObjectVersion {
  readonly body: Buffer;
}

export interface PutCondition {
  readonly ifMatch?: string;
  readonly ifNoneMatch?: "*";
}

export interface ObjectStore {
  get(key: string): Promise<StoredObject | undefined>;
  put(key: string, body: Buffer, condition?: PutCondition): Promise<ObjectVersion>;
  /** Keys under `prefix`, sorted. */
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
  /** A human-readable location, for logs. */
  readonly location: string;
}

export class PreconditionFailedError extends Error {
  constructor(readonly key: string) {
    super(`precondition failed for object ${key}`);
    this.name = "PreconditionFailedError";
  }
}

const SEGMENT = /^[A-Za-z0-9._=-]+$/;

export function checkObjectKey(key: string): void {
  const parts = key.split("/");
  for (const p of parts) {
    if (!SEGMENT.test(p) || p === "." || p === "..") throw new Error(`invalid object key "${key}"`);
  }
}
