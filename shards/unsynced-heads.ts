/**
 * What readers may see of rooms whose latest commits are in SQLite but not yet synced to disk (wal-sync.ts).
 * The event loop's one connection reads its own writes at once, but a message must not be shown — in history,
 * in a room's head, to a checkpoint — before it is durable: a power cut could take it back and its seq would
 * then go to another message. Per such room: the head readers see and the head written.
 */
export interface UnsyncedRoom {
  readonly room: string;
  visible: number;
  written: number;
}

export class UnsyncedHeads {
  private readonly rooms = new Map<string, UnsyncedRoom>();

  /**
   * The room was written up to `written`, from a durable head of `before` (kept when already unsynced). Returns
   * the handle to pass to `synced` once the write is durable.
   */
  wrote(room: string, before: number, written: number): UnsyncedRoom {
    let entry = this.rooms.get(room);
    if (entry === undefined) this.rooms.set(room, (entry = { room, visible: before, written }));
    else entry.written = written;
    return entry;
  }

  /**
   * A write of the room up to `head` is durable (syncs finish in the order of the writes they cover). A handle
   * from before the room was forgotten changes nothing: its rows are gone.
   */
  synced(entry: UnsyncedRoom, head: number): void {
    if (this.rooms.get(entry.room) !== entry) return;
    if (head >= entry.written) this.rooms.delete(entry.room);
    else entry.visible = Math.max(entry.visible, head);
  }

  /** The head readers may see, when the room has unsynced writes (undefined: everything written is durable). */
  visible(room: string): number | undefined {
    return this.rooms.get(room)?.visible;
  }

  /** The room's rows are being replaced or removed: its unsynced writes no longer matter. */
  forget(room: string): void {
    this.rooms.delete(room);
  }
}
