/**
 * The rooms a node serves as owner: room actors created on first use over one store and one commit queue.
 */
import { CommitQueue } from "./commit-queue.js";
import type { MessageRelease } from "./message-release.js";
import { Room } from "./room.js";
import type { RoomStore, StoredMessage } from "./room-store.js";

export class OwnedRooms {
  private readonly rooms = new Map<string, Room>();
  readonly commits: CommitQueue;

  constructor(
    readonly store: RoomStore,
    private readonly onCommitted: (messages: readonly StoredMessage[]) => void = () => {},
    /** Replicated durability: publishing waits for the release (undefined: publish right after the commit). */
    private readonly release?: MessageRelease,
  ) {
    this.commits = new CommitQueue(store, {
      committed: (messages) => {
        if (this.release !== undefined) this.release.committed(messages);
        else for (const m of messages) this.rooms.get(m.room)?.committed(m);
        this.onCommitted(messages);
      },
      failed: (messages) => {
        for (const room of new Set(messages.map((m) => m.room))) this.rooms.get(room)?.rollback();
      },
    });
  }

  get(room: string): Room {
    let actor = this.rooms.get(room);
    if (actor === undefined) this.rooms.set(room, (actor = new Room(room, this.store, this.commits, this.release)));
    return actor;
  }

  peek(room: string): Room | undefined {
    return this.rooms.get(room);
  }

  /** Rooms held in memory (with subscribers, presence or sends in flight). */
  get size(): number {
    return this.rooms.size;
  }

  all(): IterableIterator<Room> {
    return this.rooms.values();
  }

  /** Drops a room actor from memory once nothing references it; its data stays in the store. */
  evictIfIdle(room: string): void {
    if (this.rooms.get(room)?.idle) this.rooms.delete(room);
  }

  /** Drops every presence that came through `node` (it stopped or its stream broke). */
  dropNode(node: string): void {
    for (const room of this.rooms.values()) room.dropNode(node);
  }
}
