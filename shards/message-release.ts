/**
 * When a committed message may be shown: acknowledged to its sender, published to subscribers, answered in
 * history and counted in the room's head. With `local` durability that is right after the owner's commit (the
 * room actor needs no release). With `replicated` durability it is once the room's replica holds it too
 * (node/replicator.ts): no client may see a seq that a failover could give to another message.
 *
 * Contract:
 * - `visibleHead` never goes down while the room stays on this node, and every seq up to it is committed.
 * - `committed` is called synchronously after each group commit, in seq order per room; the release publishes
 *   the messages (Room.committed) in seq order once they are released, before it resolves `released` for them.
 * - `released(room, seq)` resolves once `seq` is released, or rejects with a FractalError (`unavailable`, or
 *   `wrong_owner` when the room moved meanwhile): the sender retries with the same id, and the retry waits again.
 */
import type { StoredMessage } from "./room-store.js";

export interface MessageRelease {
  /** Highest seq of the room that may be shown. */
  visibleHead(room: string): number;
  /** Called after each group commit is durable locally. */
  committed(messages: readonly StoredMessage[]): void;
  /** Resolves once the room's messages up to `seq` are released (published first). */
  released(room: string, seq: number): Promise<void>;
}
