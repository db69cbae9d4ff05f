/**
 * In-memory RoomStore for fast in-process tests. Not durable: never used by a node process.
 */
import {
  checkContiguous,
  type CheckpointRecord,
  type HistoryQuery,
  type RoomHeads,
  type RoomStore,
  type SendRecord,
  type StoredMessage,
} from "./room-store.js";

export class MemoryRoomStore implements RoomStore {
  /** Per room, messages ascending by seq (seqs may jump where the room skipped). */
  private readonly messages = new Map<string, StoredMessage[]>();
  private readonly heads = new Map<string, number>();
  private readonly sends = new Map<string, SendRecord>();
  private readonly checkpoints = new Map<string, CheckpointRecord>();
  /** Fault switch for tests: the next append throws. */
  failNextAppend = false;

  head(room: string): number {
    return this.heads.get(room) ?? 0;
  }

  findSend(room: string, user: string, id: string): SendRecord | undefined {
    return this.sends.get(sendKey(room, user, id));
  }

  append(messages: readonly StoredMessage[]): void {
    if (this.failNextAppend) {
      this.failNextAppend = false;
      throw new Error("injected append failure");
    }
    checkContiguous(messages, (room) => this.head(room));
    const keys = new Set<string>();
    for (const m of messages) {
      const key = sendKey(m.room, m.user, m.id);
      if (this.sends.has(key) || keys.has(key)) throw new Error(`duplicate send ${key}`);
      keys.add(key);
    }
    for (const m of messages) {
      let list = this.messages.get(m.room);
      if (list === undefined) this.messages.set(m.room, (list = []));
      list.push({ ...m });
      this.heads.set(m.room, m.seq);
      this.sends.set(sendKey(m.room, m.user, m.id), { seq: m.seq, ts: m.ts });
    }
  }

  skipTo(room: string, seq: number): void {
    if (seq > this.head(room)) this.heads.set(room, seq);
  }

  history(room: string, query: HistoryQuery): StoredMessage[] {
    const list = this.messages.get(room) ?? [];
    const after = query.after ?? 0;
    const before = query.before ?? Number.MAX_SAFE_INTEGER;
    const inRange = list.filter((m) => m.seq > after && m.seq < before);
    // Only `before`: the last `limit` below it (scroll-back); otherwise the first `limit` above `after`.
    return query.after === undefined && query.before !== undefined ? inRange.slice(-query.limit) : inRange.slice(0, query.limit);
  }

  rooms(): string[] {
    return [...this.heads.keys()].filter((r) => this.head(r) > 0).sort();
  }

  roomCount(): number {
    return this.rooms().length;
  }

  deleteRoom(room: string): void {
    for (const m of this.messages.get(room) ?? []) this.sends.delete(sendKey(room, m.user, m.id));
    this.messages.delete(room);
    this.heads.delete(room);
    this.checkpoints.delete(room);
  }

  checkpointOf(room: string): CheckpointRecord | undefined {
    return this.checkpoints.get(room);
  }

  setCheckpoint(room: string, record: CheckpointRecord): void {
    this.checkpoints.set(room, { ...record });
  }

  uncheckpointed(): RoomHeads[] {
    return this.rooms()
      .map((room) => ({ room, head: this.head(room), checkpointed: this.checkpoints.get(room)?.seq ?? 0 }))
      .filter((r) => r.head > r.checkpointed);
  }

  close(): void {}
}

function sendKey(room: string, user: string, id: string): string {
  return JSON.stringify([room, user, id]);
}
