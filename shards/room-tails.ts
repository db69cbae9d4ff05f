/**
 * The latest committed messages of each room, as the owner's event loop saw them committed. History reads that
 * fall inside a tail (a checkpoint round writing the messages since the last one, a feed filling a gap, a client
 * resuming a few messages back) are answered from memory: SQLite's read connection drops its page cache after
 * every commit of the writer thread (WAL), so under load each small read re-reads its pages from the file, and
 * those reads were the event loop's largest cost after socket writes and gRPC.
 *
 * A tail is contiguous and ends at the room's head as of the last commit this thread saw; it only grows by
 * commits. Any other write to the room (a restore, a takeover's tail, a skip, a delete) must `forget` it, so a
 * tail never holds what the file does not.
 */
import type { StoredMessage } from "./room-store.js";

export class RoomTails {
  private readonly tails = new Map<string, StoredMessage[]>();
  /** Highest seq committed per room since it was last forgotten: a tail that ends below it is not served. */
  private readonly highest = new Map<string, number>();
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
      if (m.seq > (this.highest.get(m.room) ?? 0)) this.highest.set(m.room, m.seq);
      let tail = this.tails.get(m.room);
      if (tail !== undefined && tail[tail.length - 1]!.seq + 1 !== m.seq) {
        this.drop(m.room); // cannot happen while every other write forgets; never serve a hole
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
    this.drop(room);
    this.highest.delete(room);
  }

  private drop(room: string): void {
    const tail = this.tails.get(room);
    if (tail === undefined) return;
    this.size -= tail.length;
    this.tails.delete(room);
  }

  /**
   * Messages with `after` < seq < `before`, ascending, at most `limit`; undefined when the tail does not hold the
   * whole answer (it starts after `after + 1`, or the room has none).
   */
  range(room: string, after: number, before: number, limit: number): StoredMessage[] | undefined {
    const tail = this.tails.get(room);
    const first = tail?.[0]?.seq;
    if (first === undefined || first > after + 1) return undefined;
    // A tail restarted below a newer commit (commits seen out of order) would end the answer early: a history
    // page that stops short reads as the room's end to a client paging through it.
    if (tail![tail!.length - 1]!.seq < this.highest.get(room)!) return undefined;
    // Contiguous: tail[i].seq === first + i.
    const start = after + 1 - first;
    const end = Math.max(start, Math.min(tail!.length, start + Math.max(0, limit), before - first));
    return tail!.slice(start, end);
  }

  get messages(): number {
    return this.size;
  }
}
