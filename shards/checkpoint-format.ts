/**
 * The checkpoint format of a room in object storage.
 *
 *   rooms/<room>/manifest.json                   the manifest (changed only by compare-and-swap)
 *   segments/<room>/<from>-<to>-L<level>-e<epoch>-<nonce>.json.gz
 *                                                immutable segments of consecutive messages
 *   trash/<room>/<at>-e<epoch>-<nonce>.json      tombstones: segments a merge or a restore replaced at <at>,
 *                                                deleted once they are past retention and unreferenced
 *
 * A segment holds the messages from..to (their idempotency keys included: a message is its own dedupe
 * record), gzipped JSON, with its SHA-256 in the manifest. The manifest lists segments that together cover
 * 1..head without a gap. Level-0 segments are what each checkpoint appends (the messages since the previous
 * one); when the chain ends in FANOUT segments of one level they are merged into one segment of the next
 * level (a compacted snapshot of that range), so every message is rewritten O(log n) times and a checkpoint
 * costs in proportion to the new data, not to the room's size.
 *
 * Fencing: segment keys are unique (epoch + nonce), so nobody overwrites a segment; the manifest carries the
 * owner's epoch and is written with If-Match, and a writer whose epoch is lower than the manifest's refuses.
 *
 * Inline segments (manifest format 2): a small level-0 segment travels inside the manifest (`inline`, its body
 * in base64) instead of as an object of its own, until the merge of its level writes it out as part of a
 * level-1 object. A checkpoint round then writes one object per room instead of two (plus a tombstone per
 * merge): on a local disk each object is a file created and fsynced beside SQLite's commits, and halving them
 * took a third off the fan-out's median latency with checkpoints on. Its key is still unique, but no object
 * has it. Format-1 manifests (no inline segments) are read as before.
 */
import { createHash, randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import type { StoredMessage } from "./room-store.js";

/** Manifest format written (2: may hold inline segments); 1 is still read. */
export const FORMAT = 2;
/** Segment body format. */
export const SEGMENT_FORMAT = 1;
/** Largest level-0 segment carried inline in the manifest (bytes of its gzipped body). */
export const INLINE_MAX_BYTES = 16 * 1024;
/** Segments of one level merged into one of the next. */
export const FANOUT = 8;

export interface SegmentRef {
  /** Object key; "" for a gap. */
  readonly key: string;
  readonly from: number;
  readonly to: number;
  readonly level: number;
  readonly bytes: number;
  readonly sha256: string;
  /**
   * A range of seqs that will never hold messages (skipped after a failover or a lost disk, so no seq a
   * previous owner may have acknowledged is reused). No object behind it.
   */
  readonly gap?: boolean;
  /** The segment's body (base64) when it is carried in the manifest instead of an object (see the header). */
  readonly inline?: string;
}

export interface Manifest {
  readonly format: number;
  readonly room: string;
  /** Cluster-map epoch of the owner that wrote this manifest. */
  readonly epoch: number;
  readonly owner: string;
  /** Highest checkpointed seq (0: nothing yet). */
  readonly head: number;
  /** Commit time of the message at head (ms). */
  readonly headTs: number;
  readonly updatedAt: number;
  readonly segments: readonly SegmentRef[];
  /**
   * Written by format-1 writers before tombstones existed: replaced segments kept in the manifest itself (it
   * grew by one entry per merge for the whole retention). Read so the next append moves them to a tombstone.
   */
  readonly superseded?: readonly { readonly key: string; readonly at: number }[];
}

/** Segments replaced at `at` by the writer at `epoch` (see trashKey). */
export interface Tombstone {
  readonly room: string;
  readonly at: number;
  readonly epoch: number;
  readonly keys: readonly string[];
}

export class CheckpointCorruptError extends Error {
  constructor(
    readonly room: string,
    message: string,
  ) {
    super(`room ${room}: checkpoint corrupt: ${message}`);
    this.name = "CheckpointCorruptError";
  }
}

export function manifestKey(room: string): string {
  return `rooms/${room}/manifest.json`;
}

export const MANIFEST_PREFIX = "rooms/";

/** The room id of a manifest key, or undefined for other keys. */
export function roomOfManifestKey(key: string): string | undefined {
  const m = /^rooms\/([^/]+)\/manifest\.json$/.exec(key);
  return m?.[1];
}

export function segmentKey(room: string, from: number, to: number, level: number, epoch: number): string {
  const pad = (n: number) => String(n).padStart(12, "0");
  return `segments/${room}/${pad(from)}-${pad(to)}-L${level}-e${epoch}-${randomBytes(4).toString("hex")}.json.gz`;
}

export function trashPrefix(room: string): string {
  return `trash/${room}/`;
}

/** Time-ordered, so a sweep can tell from the key alone whether a tombstone is past retention. */
export function trashKey(room: string, at: number, epoch: number): string {
  return `${trashPrefix(room)}${String(at).padStart(15, "0")}-e${epoch}-${randomBytes(4).toString("hex")}.json`;
}

/** The time in a tombstone key, or undefined for a key that is not one. */
export function trashKeyTime(key: string): number | undefined {
  const m = /\/(\d{15})-e\d+-[0-9a-f]+\.json$/.exec(key);
  return m === null ? undefined : Number(m[1]);
}

export function encodeTombstone(t: Tombstone): Buffer {
  return Buffer.from(JSON.stringify(t));
}

export function parseTombstone(room: string, body: Buffer): Tombstone {
  let t: Partial<Tombstone>;
  try {
    t = JSON.parse(body.toString("utf8")) as Partial<Tombstone>;
  } catch {
    throw new CheckpointCorruptError(room, "tombstone is not JSON");
  }
  if (t.room !== room || !Number.isInteger(t.epoch) || !Array.isArray(t.keys) || !t.keys.every((k) => typeof k === "string")) {
    throw new CheckpointCorruptError(room, "tombstone is invalid");
  }
  return t as Tombstone;
}

export function sha256(body: Buffer): string {
  return createHash("sha256").update(body).digest("hex");
}

type WireMessage = [seq: number, id: string, user: string, text: string, ts: number];

export function encodeSegment(room: string, messages: readonly StoredMessage[]): Buffer {
  const wire: WireMessage[] = messages.map((m) => [m.seq, m.id, m.user, m.text, m.ts]);
  const from = messages[0]?.seq ?? 0;
  const to = messages[messages.length - 1]?.seq ?? 0;
  // Level 1 gzip: checkpoints run beside the serving path, and chat text compresses well even so.
  return gzipSync(JSON.stringify({ format: SEGMENT_FORMAT, room, from, to, messages: wire }), { level: 1 });
}

/** Decodes a segment and verifies it against its reference: checksum, room, range and seq contiguity. */
export function decodeSegment(room: string, ref: SegmentRef, body: Buffer): StoredMessage[] {
  if (sha256(body) !== ref.sha256) throw new CheckpointCorruptError(room, `segment ${ref.key} checksum mismatch`);
  let parsed: { format?: unknown; room?: unknown; from?: unknown; to?: unknown; messages?: unknown };
  try {
    parsed = JSON.parse(gunzipSync(body).toString("utf8"));
  } catch {
    throw new CheckpointCorruptError(room, `segment ${ref.key} does not decode`);
  }
  if (parsed.format !== SEGMENT_FORMAT || parsed.room !== room || parsed.from !== ref.from || parsed.to !== ref.to || !Array.isArray(parsed.messages)) {
    throw new CheckpointCorruptError(room, `segment ${ref.key} header does not match the manifest`);
  }
  const messages: StoredMessage[] = [];
  let expected = ref.from;
  for (const w of parsed.messages as unknown[]) {
    if (!Array.isArray(w) || w.length !== 5 || w[0] !== expected) {
      throw new CheckpointCorruptError(room, `segment ${ref.key} is not contiguous at seq ${expected}`);
    }
    const [seq, id, user, text, ts] = w as WireMessage;
    messages.push({ room, seq, id, user, text, ts });
    expected++;
  }
  if (expected !== ref.to + 1) throw new CheckpointCorruptError(room, `segment ${ref.key} ends at ${expected - 1}, not ${ref.to}`);
  return messages;
}

export function parseManifest(room: string, body: Buffer): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(body.toString("utf8")) as Manifest;
  } catch {
    throw new CheckpointCorruptError(room, "manifest is not JSON");
  }
  if ((m.format !== 1 && m.format !== FORMAT) || m.room !== room || !Array.isArray(m.segments) || !Number.isInteger(m.head)) {
    throw new CheckpointCorruptError(room, "manifest header is invalid");
  }
  for (const seg of m.segments) {
    if (seg.inline !== undefined && (m.format < 2 || typeof seg.inline !== "string" || seg.gap === true)) {
      throw new CheckpointCorruptError(room, `segment ${seg.key} has an invalid inline body`);
    }
  }
  verifyChain(m);
  return m;
}

/** The segments must cover 1..head in order without gap or overlap. */
export function verifyChain(m: Pick<Manifest, "room" | "head" | "segments">): void {
  let next = 1;
  for (const s of m.segments) {
    if (s.from !== next || s.to < s.from) throw new CheckpointCorruptError(m.room, `chain breaks at seq ${next} (segment ${s.key})`);
    next = s.to + 1;
  }
  if (next !== m.head + 1) throw new CheckpointCorruptError(m.room, `chain ends at ${next - 1} but head is ${m.head}`);
}

export function encodeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(m, null, 1));
}

/**
 * Which trailing segments to merge after an append: the last FANOUT segments when they share one level
 * (repeated while the merge result completes another group). Returns the index where the merge starts, or
 * undefined when nothing is due.
 */
export function mergeStart(segments: readonly SegmentRef[]): number | undefined {
  if (segments.length < FANOUT) return undefined;
  const tail = segments.slice(-FANOUT);
  const level = tail[0]!.level;
  return tail.every((s) => s.level === level && !s.gap) ? segments.length - FANOUT : undefined;
}

export function gapRef(from: number, to: number): SegmentRef {
  return { key: "", from, to, level: 0, bytes: 0, sha256: "", gap: true };
}
