/**
 * Rebuilding a room's SQLite rows from its checkpoint chain: after a lost disk (rebuild on start) or by an
 * operator (point-in-time restore). Every segment is verified (checksum, header, seq contiguity) before its
 * messages are written; a corrupt chain stops the restore with CheckpointCorruptError and leaves what was
 * already contiguous in place.
 */
import type { CheckpointChain, VersionedManifest } from "./checkpoint-chain.js";
import type { RoomStore } from "./room-store.js";

export interface RestoreProgress {
  readonly room: string;
  /** "verify": checking every segment before anything is replaced; "write": writing messages. */
  readonly phase: "verify" | "write";
  readonly segmentsDone: number;
  readonly segmentsTotal: number;
  readonly messages: number;
  /** Seq the room is restored to. */
  readonly target: number;
}

export interface RestoreResult {
  readonly room: string;
  /** Messages written to the local store. */
  readonly restored: number;
  /** The room's head afterwards. */
  readonly head: number;
}

export interface RestoreOptions {
  /** Restore up to this seq (default: the chain's head). */
  readonly toSeq?: number;
  /** Replace the room (delete local rows first); otherwise only append what the local store lacks. */
  readonly replace?: boolean;
  readonly onProgress?: (p: RestoreProgress) => void;
}

export async function restoreRoom(
  store: RoomStore,
  chain: CheckpointChain,
  room: string,
  manifest: VersionedManifest,
  options: RestoreOptions = {},
): Promise<RestoreResult> {
  const target = Math.min(options.toSeq ?? manifest.manifest.head, manifest.manifest.head);
  if (options.replace) {
    // Replacing destroys the local copy: first prove the whole chain up to the target is intact, so a corrupt
    // segment is reported while the room is still as it was.
    let checked = 0;
    for await (const { messages, segment, segments } of chain.messages(room, manifest.manifest, 1, target)) {
      checked += messages.length;
      options.onProgress?.({ room, phase: "verify", segmentsDone: segment, segmentsTotal: segments, messages: checked, target });
    }
    await store.deleteRoom(room);
  }
  const from = store.head(room) + 1;
  let restored = 0;
  if (from <= target) {
    for await (const { messages, segment, segments, skipTo } of chain.messages(room, manifest.manifest, from, target)) {
      // One transaction per segment: bounded memory and bounded event-loop pauses.
      if (skipTo !== undefined) await store.skipTo(room, skipTo);
      else if (store.appendAsync) await store.appendAsync(messages, { bulk: true });
      else store.append(messages);
      restored += messages.length;
      options.onProgress?.({ room, phase: "write", segmentsDone: segment, segmentsTotal: segments, messages: restored, target });
    }
  }
  if (store.head(room) >= manifest.manifest.head) {
    store.setCheckpoint(room, { seq: manifest.manifest.head, version: manifest.version, at: Date.now() });
  }
  return { room, restored, head: store.head(room) };
}
