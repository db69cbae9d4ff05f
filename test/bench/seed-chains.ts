/**
 * Seeds checkpoint chains straight into a directory object store, so the rebuild and rebalance phases can start
 * from the sizes the issues name (1,000 rooms / 1,000,000 messages) without feeding every message through HTTP:
 * a node commits about 1,000 HTTP sends/s on this machine, so 1M messages would take 17 minutes to load.
 *
 * Each room's chain is the one an owner leaves behind after checkpointing `batch` new messages per round for
 * the room's whole life: with FANOUT-way merges, A rounds leave, for each level L from the top, digit L of A in
 * base FANOUT segments of batch × FANOUT^L messages (e.g. 1,000 messages at 1 per round: 1×512, 7×64, 5×8).
 * Writing that final layout directly (the project's own segment and manifest encoders, the manifest by
 * create-only put) costs one write per final segment instead of replaying every round and merge. The messages are
 * deterministic (room, seq → message), so a verifier can recompute any of them.
 */
import {
  DirectoryObjectStore,
  encodeManifest,
  encodeSegment,
  FANOUT,
  FORMAT,
  manifestKey,
  segmentKey,
  sha256,
  type SegmentRef,
  type StoredMessage,
} from "../../shards/index.js";

export interface SeedOptions {
  readonly dir: string;
  readonly rooms: readonly string[];
  readonly messagesPerRoom: number;
  /** New messages per checkpoint round (the level-0 segment size). */
  readonly batch: number;
  readonly textBytes: number;
  /** Writer recorded in the manifests (the node that "owned" the rooms). */
  readonly node: string;
  readonly epoch: number;
  readonly concurrency?: number;
  readonly onProgress?: (roomsDone: number, messages: number) => void;
}

const BASE_TS = 1_767_225_600_000;

/** The seeded message `seq` of `room` (what a verifier expects to read back). */
export function seededMessage(room: string, seq: number, textBytes: number): StoredMessage {
  const head = `${room} #${seq} `;
  const text = head.length >= textBytes ? head : head + "x".repeat(textBytes - head.length);
  return { room, seq, id: `seed-${seq}`, user: `user${seq % 10}`, text, ts: BASE_TS + seq * 10 };
}

/** Segment sizes (level, messages) of a room of `total` messages checkpointed `batch` at a time, oldest first. */
export function chainLayout(total: number, batch: number): { level: number; size: number }[] {
  const layout: { level: number; size: number }[] = [];
  let rounds = Math.floor(total / batch);
  const digits: number[] = [];
  for (; rounds > 0; rounds = Math.floor(rounds / FANOUT)) digits.push(rounds % FANOUT);
  for (let level = digits.length - 1; level >= 0; level--) {
    for (let i = 0; i < digits[level]!; i++) layout.push({ level, size: batch * FANOUT ** level });
  }
  // The last round may have been smaller than a batch.
  if (total % batch > 0) layout.push({ level: 0, size: total % batch });
  return layout;
}

export async function seedChains(o: SeedOptions): Promise<{ rooms: number; messages: number; segments: number; ms: number }> {
  const started = performance.now();
  const objects = new DirectoryObjectStore(o.dir);
  let next = 0;
  let roomsDone = 0;
  let messages = 0;
  let segmentCount = 0;
  const layout = chainLayout(o.messagesPerRoom, o.batch);
  const worker = async (): Promise<void> => {
    while (next < o.rooms.length) {
      const room = o.rooms[next++]!;
      const segments: SegmentRef[] = [];
      let seq = 1;
      for (const { level, size } of layout) {
        const batch: StoredMessage[] = [];
        for (let i = 0; i < size; i++) batch.push(seededMessage(room, seq++, o.textBytes));
        const body = encodeSegment(room, batch);
        const key = segmentKey(room, batch[0]!.seq, seq - 1, level, o.epoch);
        await objects.put(key, body, { ifNoneMatch: "*" });
        segments.push({ key, from: batch[0]!.seq, to: seq - 1, level, bytes: body.length, sha256: sha256(body) });
      }
      const head = seq - 1;
      const manifest = { format: FORMAT, room, epoch: o.epoch, owner: o.node, head, headTs: head === 0 ? 0 : seededMessage(room, head, 0).ts, updatedAt: Date.now(), segments };
      await objects.put(manifestKey(room), encodeManifest(manifest), { ifNoneMatch: "*" });
      messages += head;
      segmentCount += segments.length;
      o.onProgress?.(++roomsDone, messages);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency ?? 8, o.rooms.length) }, worker));
  return { rooms: o.rooms.length, messages, segments: segmentCount, ms: performance.now() - started };
}
