/**
 * The owner's durable room storage.
 *
 * Contract (every implementation, checked by test/unit/room-store.contract.ts):
 * - `append` is atomic and durable on return: either every message of the batch is stored (and survives
 *   a process crash) or none is and it throws. Batches may mix rooms; that is how the owner group-commits.
 * - Within a room, seqs are consecutive from 1. `append` refuses a message whose seq is not the room's head
 *   + 1 (that would be a gap or a second writer), and a second message with the same (room, user, id).
 * - `history` returns messages ascending by seq. With `after` it returns the first `limit` messages above it;
 *   with only `before` the last `limit` messages below it (scroll-back).
 * - Calls are synchronous and must come from one thread; the room actor is the only writer of a room.
 */
export interface StoredMessage {
  readonly room: string;
  readonly seq: number;
  /** Client-chosen idempotency key, unique per (room, user). */
  readonly id: string;
  readonly user: string;
  readonly text: string;
  /** Owner commit time, ms since the Unix epoch. */
  readonly ts: number;
}

export interface HistoryQuery {
  /** Only seq > after. */
  readonly after?: number;
  /** Only seq < before. */
  readonly before?: number;
  readonly limit: number;
}

export interface SendRecord {
  readonly seq: number;
  readonly ts: number;
}

/** What the node last wrote to object storage for a room (kept locally so a restart knows what is dirty). */
export interface CheckpointRecord {
  /** Highest seq in the object store's chain. */
  readonly seq: number;
  /** Version of the manifest that recorded it (for compare-and-swap). */
  readonly version: string;
  /** When it was written, ms. */
  readonly at: number;
}

export interface RoomHeads {
  readonly room: string;
  readonly head: number;
  /** Highest checkpointed seq (0 when never checkpointed). */
  readonly checkpointed: number;
}

export interface RoomStore {
  /** Latest committed seq of the room; 0 for a room never written. */
  head(room: string): number;
  /** The earlier send with this idempotency key, if any. */
  findSend(room: string, user: string, id: string): SendRecord | undefined;
  append(messages: readonly StoredMessage[]): void;
  /**
   * The same as `append`, resolving once durable, with the waiting for the disk off the event loop where the
   * implementation can. Calls are applied in the order they are made, each one all or nothing. `bulk`: copies
   * of data that is durable elsewhere (a restore from the checkpoint chain); `grouped`: a takeover's tail. Both
   * are not the room's own latest commits (caches of them are dropped).
   */
  appendAsync?(messages: readonly StoredMessage[], options?: { bulk?: boolean; grouped?: boolean }): Promise<void>;
  /**
   * Folds the write-ahead log into the file (after a rebuild or a rebalance's copy, before the rooms are served:
   * a large log slows every later read).
   */
  compact?(): Promise<void>;
  history(room: string, query: HistoryQuery): StoredMessage[];
  /**
   * Moves the room's head forward to `seq` without messages: the seqs in between will never exist. Used
   * after a failover or a lost disk, so that no seq the previous owner may have acknowledged is ever given to
   * another message (clients see the hole as a `gap`).
   */
  skipTo(room: string, seq: number): void | Promise<void>;
  /** Rooms that hold at least one message. */
  rooms(): string[];
  /** Number of rooms that hold at least one message. */
  roomCount(): number;
  /** Removes every message of a room and its checkpoint record (a restore replaces the room). */
  deleteRoom(room: string): void | Promise<void>;
  checkpointOf(room: string): CheckpointRecord | undefined;
  setCheckpoint(room: string, record: CheckpointRecord): void;
  /** Rooms whose head is above their checkpointed seq. */
  uncheckpointed(): RoomHeads[];
  close(): void;
}

/**
 * Checks the append contract against the heads the store reports; shared by implementations. Returns, per room
 * of the batch, its head before the batch and its last seq in it.
 */
export function checkContiguous(
  messages: readonly StoredMessage[],
  head: (room: string) => number,
): Map<string, { readonly before: number; last: number }> {
  const heads = new Map<string, { readonly before: number; last: number }>();
  for (const m of messages) {
    let h = heads.get(m.room);
    if (h === undefined) {
      const before = head(m.room);
      heads.set(m.room, (h = { before, last: before }));
    }
    if (m.seq !== h.last + 1) {
      throw new Error(`room ${m.room}: append seq ${m.seq} but expected ${h.last + 1} (gap or second writer)`);
    }
    h.last = m.seq;
  }
  return heads;
}

/** The stored message with exactly this seq (none for 0, a skipped seq or one past the head). */
export function messageAt(store: RoomStore, room: string, seq: number): StoredMessage | undefined {
  if (seq <= 0) return undefined;
  const m = store.history(room, { after: seq - 1, limit: 1 })[0];
  return m?.seq === seq ? m : undefined;
}

/** Whether the messages' seqs follow each other without a hole. */
export function contiguous(messages: readonly StoredMessage[]): boolean {
  return messages.every((m, i) => i === 0 || m.seq === messages[i - 1]!.seq + 1);
}
