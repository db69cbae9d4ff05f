/**
 * The latest durable messages of each room, as the owner's event loop saw them become durable. History reads
 * that fall inside a tail (a checkpoint round writing the messages since the last one, a feed filling a gap, a
 * client resuming a few messages back) are answered from memory. They were the event loop's largest cost after
 * socket writes and gRPC while commits ran on a writer thread (until session 16: each of its commits emptied the
 * reading connection's page cache); from memory they still skip the statement and the row decoding.
 *
 * A tail is contiguous and ends at the room's head as of the last commit that became durable; it only grows by
 * commits. Any other write to the room (a restore, a takeover's tail, a skip, a delete) must `forget` it, so a
 * tail never holds what the file does not.
 */
import type { StoredMessage } from "./room-store.js";

export class RoomTails {
  private readonly tails = new Map<string, StoredMessage[]>();
  private size = 0;

  constructor(
    /** Messages kept per room (older ones are read from SQLite). */
    private readonly perRoom = 256,
    /** Messages kept over all rooms: rooms beyond it are read from SQLite. */
    private readonly total = 100_000,
  ) {}

  /** Messages that just became durable, in seq order per room. */
  committed(messages: readonly StoredMessage[]): void {
    for (const m of messages) {
      let tail = this.tails.get(m.room);
      if (tail !== undefined && tail[tail.length - 1]!.seq + 1 !== m.seq) {
        this.forget(m.room); // cannot happen while every other write forgets; never serve a hole
        tail = undefined;
      }
      if (tail === undefined) {
        if (this.size >= this.total) continue;
        this.tails.set(m.room, (tail = []));
      }
      tail.push(m);
      this.size++;
      if (tail.length >= 2 * this.perRoom) {
        tail.splice(0, tail.length - this.perRoom);
        this.size -= this.perRoom;
      }
    }
  }

  /** Another kind of write touched the room: read it from the file until it commits again. */
  forget(room: string): void {
    const tail = this.tails.get(room);
    if (tail === undefined) return;
    this.size -= tail.length;
    this.tails.delete(room);
  }

  /**
   * Messages with `after` < seq < `before`, ascending, at most `limit`; undefined unless the tail holds the whole
   * answer: it starts by `after + 1` and has either `limit` messages from there or every seq below `before`.
   *
   * Never an answer that stops at the tail's end: the file can be ahead of the tail (a room whose tail was
   * dropped, or beyond the memory limit, and started again later). A short answer there once made a checkpoint
   * round record a gap over acknowledged messages.
   */
  range(room: string, after: number, before: number, limit: number): StoredMessage[] | undefined {
    const tail = this.tails.get(room);
    const first = tail?.[0]?.seq;
    if (first === undefined || first > after + 1 || limit < 1) return undefined;
    // Contiguous: tail[i].seq === first + i.
    const start = after + 1 - first;
    const wanted = Math.min(start + limit, before - first);
    if (wanted > tail!.length) return undefined;
    return tail!.slice(start, Math.max(start, wanted));
  }

  get messages(): number {
    return this.size;
  }
}
