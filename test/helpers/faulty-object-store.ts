/** An ObjectStore wrapper with failure switches, so fault paths are tested on purpose. */
import type { ObjectStore, ObjectVersion, PutCondition, StoredObject } from "../../shards/index.js";

export class FaultyObjectStore implements ObjectStore {
  /** While true every call fails as if the store were unreachable. */
  down = false;
  /** Calls made, by kind. */
  readonly calls = { get: 0, put: 0, list: 0, delete: 0 };

  constructor(private readonly inner: ObjectStore) {}

  get location(): string {
    return `faulty(${this.inner.location})`;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    this.calls.get++;
    this.check();
    return this.inner.get(key);
  }

  async put(key: string, body: Buffer, condition?: PutCondition): Promise<ObjectVersion> {
    this.calls.put++;
    this.check();
    return this.inner.put(key, body, condition);
  }

  async list(prefix: string): Promise<string[]> {
    this.calls.list++;
    this.check();
    return this.inner.list(prefix);
  }

  async delete(key: string): Promise<void> {
    this.calls.delete++;
    this.check();
    return this.inner.delete(key);
  }

  private check(): void {
    if (this.down) throw Object.assign(new Error("object store unreachable (injected)"), { code: "ECONNREFUSED" });
  }
}
