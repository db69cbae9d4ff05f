/**
 * Reads and writes one room's checkpoint chain in the object store (format: checkpoint-format.ts).
 *
 * Contract: `append` adds the messages after the manifest's head as a new level-0 segment, merges trailing
 * segments when a level fills up, and publishes the new manifest with compare-and-swap. It throws
 * StaleOwnerError when the manifest was written by a newer epoch, and PreconditionFailedError when another
 * writer changed the manifest since it was read (the caller re-reads and retries). Segments are written before
 * the manifest that references them, so a reader never sees a manifest pointing at a missing segment.
 */
import {
  CheckpointCorruptError,
  decodeSegment,
  encodeManifest,
  encodeTombstone,
  gapRef,
  encodeSegment,
  FORMAT,
  INLINE_MAX_BYTES,
  manifestKey,
  MANIFEST_PREFIX,
  mergeStart,
  parseManifest,
  parseTombstone,
  roomOfManifestKey,
  segmentKey,
  sha256,
  trashKey,
  trashKeyTime,
  trashPrefix,
  type Manifest,
  type SegmentRef,
} from "./checkpoint-format.js";
import type { ObjectStore } from "./object-store.js";
import type { StoredMessage } from "./room-store.js";

export interface VersionedManifest {
  readonly manifest: Manifest;
  readonly version: string;
}

export class StaleOwnerError extends Error {
  constructor(
    readonly room: string,
    readonly ours: number,
    readonly theirs: number,
  ) {
    super(`room ${room}: manifest written at epoch ${theirs}, we are at ${ours}: not the owner any more`);
    this.name = "StaleOwnerError";
  }
}

export interface ChainWriter {
  readonly node: string;
  readonly epoch: number;
}

/** Where merges read the messages of the segments they replace (the owner's local store is cheapest). */
export type RangeReader = (room: string, from: number, to: number) => Promise<StoredMessage[]>;

export class CheckpointChain {
  /** Room -> earliest time one of its tombstones is past retention (absent: unknown, list on next sweep). */
  private readonly nextSweep = new Map<string, number>();

  constructor(
    private readonly objects: ObjectStore,
    /** How long replaced segments are kept before deletion (ms). */
    private readonly retentionMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  async read(room: string): Promise<VersionedManifest | undefined> {
    const obj = await this.objects.get(manifestKey(room));
    if (obj === undefined) return undefined;
    return { manifest: parseManifest(room, obj.body), version: obj.version };
  }

  /** Rooms that have a manifest. */
  async rooms(): Promise<string[]> {
    const keys = await this.objects.list(MANIFEST_PREFIX);
    return keys.flatMap((k) => {
      const room = roomOfManifestKey(k);
      return room === undefined ? [] : [room];
    });
  }

  async append(
    room: string,
    current: VersionedManifest | undefined,
    messages: readonly StoredMessage[],
    writer: ChainWriter,
    readRange?: RangeReader,
  ): Promise<VersionedManifest> {
    const base = current?.manifest;
    if (base !== undefined && base.epoch > writer.epoch) throw new StaleOwnerError(room, writer.epoch, base.epoch);
    const head = base?.head ?? 0;
    const first = messages[0];
    if (first === undefined || first.seq <= head) {
      throw new Error(`room ${room}: checkpoint must continue after seq ${head}, got ${first?.seq}`);
    }
    let segments = [...(base?.segments ?? [])];
    // Seqs the room skipped (failover, lost disk) are recorded as a gap so the chain still covers 1..head.
    if (first.seq > head + 1) segments.push(gapRef(head + 1, first.seq - 1));
    segments.push(await this.writeSegment(room, messages, 0, writer.epoch));
    const replaced = (base?.superseded ?? []).map((s) => s.key);
    // Merge full levels (the last FANOUT segments of one level become one segment a level up).
    for (let start = mergeStart(segments); start !== undefined; start = mergeStart(segments)) {
      const group = segments.slice(start);
      const from = group[0]!.from;
      const to = group[group.length - 1]!.to;
      const merged = readRange ? await readRange(room, from, to) : await this.readSegments(room, group);
      if (merged.length !== to - from + 1) {
        // The local store no longer has the range: fall back to the segments themselves.
        merged.splice(0, merged.length, ...(await this.readSegments(room, group)));
      }
      const ref = await this.writeSegment(room, merged, group[0]!.level + 1, writer.epoch);
      segments = [...segments.slice(0, start), ref];
      // Inline segments have no object to delete later.
      for (const s of group) if (s.inline === undefined) replaced.push(s.key);
    }
    await this.retire(room, replaced, writer.epoch);
    const last = messages[messages.length - 1]!;
    return this.publishAndSweep(room, current, writer, {
      format: FORMAT,
      room,
      epoch: writer.epoch,
      owner: writer.node,
      head: last.seq,
      headTs: last.ts,
      updatedAt: this.clock(),
      segments,
    });
  }

  /** Records that the room skipped seqs head+1..to (no messages will ever have them). */
  async appendGap(room: string, current: VersionedManifest | undefined, to: number, writer: ChainWriter): Promise<VersionedManifest> {
    const base = current?.manifest;
    if (base !== undefined && base.epoch > writer.epoch) throw new StaleOwnerError(room, writer.epoch, base.epoch);
    const head = base?.head ?? 0;
    if (to <= head) throw new Error(`room ${room}: gap must end after seq ${head}`);
    await this.retire(room, (base?.superseded ?? []).map((s) => s.key), writer.epoch);
    return this.publishAndSweep(room, current, writer, {
      format: FORMAT,
      room,
      epoch: writer.epoch,
      owner: writer.node,
      head: to,
      headTs: base?.headTs ?? 0,
      updatedAt: this.clock(),
      segments: [...(base?.segments ?? []), gapRef(head + 1, to)],
    });
  }

  /**
   * Cuts the chain back to `toSeq` (point-in-time restore): segments wholly below stay, the one that
   * straddles is rewritten from `messages` (which must be its part up to toSeq), later ones are superseded.
   */
  async truncate(
    room: string,
    current: VersionedManifest,
    toSeq: number,
    straddling: readonly StoredMessage[],
    writer: ChainWriter,
  ): Promise<VersionedManifest> {
    const base = current.manifest;
    if (base.epoch > writer.epoch) throw new StaleOwnerError(room, writer.epoch, base.epoch);
    const keep = base.segments.filter((s) => s.to <= toSeq);
    const dropped = base.segments.filter((s) => s.to > toSeq);
    const segments = [...keep];
    const cut = dropped[0];
    if (cut !== undefined && cut.from <= toSeq && cut.gap) {
      segments.push(gapRef(cut.from, toSeq));
    } else if (cut !== undefined && cut.from <= toSeq) {
      if (straddling.length !== toSeq - cut.from + 1 || straddling[0]?.seq !== cut.from) {
        throw new Error(`room ${room}: truncation needs messages ${cut.from}..${toSeq}`);
      }
      segments.push(await this.writeSegment(room, straddling, 0, writer.epoch));
    }
    const headTs = toSeq === 0 ? 0 : (straddling[straddling.length - 1]?.ts ?? (await this.messageTs(room, keep, toSeq)));
    await this.retire(room, [...(base.superseded ?? []).map((s) => s.key), ...dropped.filter((s) => !s.gap && s.inline === undefined).map((s) => s.key)], writer.epoch);
    return this.publishAndSweep(room, current, writer, {
      format: FORMAT,
      room,
      epoch: writer.epoch,
      owner: writer.node,
      head: toSeq,
      headTs,
      updatedAt: this.clock(),
      segments,
    });
  }

  /**
   * Yields the room's messages from..to (inclusive) in order, one verified segment at a time (checksum,
   * header, contiguity), with the segment's position for progress.
   */
  async *messages(
    room: string,
    manifest: Manifest,
    from: number,
    to: number,
  ): AsyncGenerator<{ messages: StoredMessage[]; segment: number; segments: number; skipTo?: number }> {
    const wanted = manifest.segments.filter((s) => s.to >= from && s.from <= to);
    for (const [i, ref] of wanted.entries()) {
      if (ref.gap) {
        yield { messages: [], segment: i + 1, segments: wanted.length, skipTo: Math.min(ref.to, to) };
        continue;
      }
      const all = await this.readSegment(room, ref);
      yield { messages: all.filter((m) => m.seq >= from && m.seq <= to), segment: i + 1, segments: wanted.length };
    }
  }

  private async readSegments(room: string, refs: readonly SegmentRef[]): Promise<StoredMessage[]> {
    const out: StoredMessage[] = [];
    for (const ref of refs) if (!ref.gap) out.push(...(await this.readSegment(room, ref)));
    return out;
  }

  private async readSegment(room: string, ref: SegmentRef): Promise<StoredMessage[]> {
    if (ref.inline !== undefined) return decodeSegment(room, ref, Buffer.from(ref.inline, "base64"));
    const obj = await this.objects.get(ref.key);
    if (obj === undefined) throw new CheckpointCorruptError(room, `segment ${ref.key} is missing`);
    return decodeSegment(room, ref, obj.body);
  }

  private async messageTs(room: string, keep: readonly SegmentRef[], seq: number): Promise<number> {
    const ref = keep.find((s) => s.from <= seq && s.to >= seq && !s.gap);
    if (ref === undefined) return 0;
    return (await this.readSegment(room, ref)).find((m) => m.seq === seq)?.ts ?? 0;
  }

  private async writeSegment(room: string, messages: readonly StoredMessage[], level: number, epoch: number): Promise<SegmentRef> {
    const from = messages[0]!.seq;
    const to = messages[messages.length - 1]!.seq;
    const body = encodeSegment(room, messages);
    const key = segmentKey(room, from, to, level, epoch);
    if (level === 0 && body.length <= INLINE_MAX_BYTES) {
      // Carried in the manifest that is written next anyway (see checkpoint-format.ts): one object per round.
      return { key, from, to, level, bytes: body.length, sha256: sha256(body), inline: body.toString("base64") };
    }
    // Unique key, written once: if-none-match makes "never overwrite a segment" hold even against a bug.
    await this.objects.put(key, body, { ifNoneMatch: "*" });
    return { key, from, to, level, bytes: body.length, sha256: sha256(body) };
  }

  private async publish(room: string, current: VersionedManifest | undefined, manifest: Manifest): Promise<VersionedManifest> {
    const body = encodeManifest(manifest);
    const { version } = await this.objects.put(
      manifestKey(room),
      body,
      current === undefined ? { ifNoneMatch: "*" } : { ifMatch: current.version },
    );
    return { manifest, version };
  }

  /** Writes a tombstone for segments the next manifest drops (before it is published: see the header). */
  private async retire(room: string, keys: readonly string[], epoch: number): Promise<void> {
    if (keys.length === 0) return;
    const at = this.clock();
    await this.objects.put(trashKey(room, at, epoch), encodeTombstone({ room, at, epoch, keys }), { ifNoneMatch: "*" });
    this.nextSweep.set(room, Math.min(this.nextSweep.get(room) ?? Infinity, at + this.retentionMs));
  }

  private async publishAndSweep(room: string, current: VersionedManifest | undefined, writer: ChainWriter, manifest: Manifest): Promise<VersionedManifest> {
    const published = await this.publish(room, current, manifest);
    // Best effort: a failed sweep leaves objects for the next one, never a broken chain.
    await this.sweep(room, writer).catch(() => {});
    return published;
  }

  /**
   * Deletes the segments of tombstones past retention that the room's current manifest does not reference.
   * Lists the room's tombstones only when one may be due. A room this process has not seen yet is listed one
   * retention from now (tombstones of an earlier process are older, so due by then): a restarted node must not
   * list every room's tombstones on its first checkpoint round.
   */
  async sweep(room: string, writer: ChainWriter): Promise<number> {
    const now = this.clock();
    const next = this.nextSweep.get(room);
    if (next === undefined && this.retentionMs > 0) {
      this.nextSweep.set(room, now + this.retentionMs);
      return 0;
    }
    if (now < (next ?? 0)) return 0;
    const keys = await this.objects.list(trashPrefix(room));
    const isDue = (k: string) => (trashKeyTime(k) ?? Infinity) + this.retentionMs <= now;
    const due = keys.filter(isDue);
    let deleted = 0;
    if (due.length > 0) {
      const fresh = await this.read(room);
      // Only the room's current writer sweeps; a newer owner's tombstones may name segments it still uses.
      if (fresh === undefined || fresh.manifest.epoch !== writer.epoch) return 0;
      const live = new Set(fresh.manifest.segments.map((s) => s.key));
      for (const key of due) {
        const obj = await this.objects.get(key);
        if (obj === undefined) continue;
        const tomb = parseTombstone(room, obj.body);
        if (tomb.epoch > writer.epoch) continue;
        for (const k of tomb.keys) {
          if (live.has(k)) continue;
          await this.objects.delete(k);
          deleted++;
        }
        await this.objects.delete(key);
      }
    }
    const pending = keys.filter((k) => !isDue(k)).map((k) => (trashKeyTime(k) ?? now) + this.retentionMs);
    this.nextSweep.set(room, pending.length === 0 ? Infinity : Math.min(...pending));
    return deleted;
  }
}
