/**
 * In-memory ReplicaStore for fast in-process tests. Not durable: never used by a node process.
 */
import { checkItem, decide, type ReplicaItem, type ReplicaOutcome, type ReplicaRecord, type ReplicaStore } from "./replica-store.js";
import type { StoredMessage } from "./room-store.js";

export class MemoryReplicaStore implements ReplicaStore {
  private readonly records = new Map<string, ReplicaRecord>();
  /** Per room, rows ascending by seq. */
  private readonly rows = new Map<string, StoredMessage[]>();

  async apply(owner: string, epoch: number, items: readonly ReplicaItem[]): Promise<ReplicaOutcome[]> {
    items.forEach(checkItem); // before anything changes: a malformed call changes nothing
    return items.map((item) => {
      const d = decide(this.records.get(item.room), owner, epoch, item);
      if (d.next === undefined) return d.outcome;
      const kept = d.dropAll ? [] : (this.rows.get(item.room) ?? []);
      this.rows.set(item.room, [...kept, ...item.messages].filter((m) => m.seq > item.checkpointed));
      this.records.set(item.room, d.next);
      return d.outcome;
    });
  }

  record(room: string): ReplicaRecord | undefined {
    return this.records.get(room);
  }

  messages(room: string, after: number, limit: number): StoredMessage[] {
    return (this.rows.get(room) ?? []).filter((m) => m.seq > after).slice(0, limit);
  }

  async settled(): Promise<void> {}

  async drop(room: string): Promise<void> {
    this.records.delete(room);
    this.rows.delete(room);
  }

  rooms(): string[] {
    return [...this.records.keys()].sort();
  }
}
