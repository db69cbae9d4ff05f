import { expect } from "chai";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CheckpointChain,
  CheckpointCorruptError,
  Checkpointer,
  DirectoryObjectStore,
  FANOUT,
  INLINE_MAX_BYTES,
  MemoryRoomStore,
  restoreRoom,
  StaleOwnerError,
  type StoredMessage,
} from "../../shards/index.js";
import { FaultyObjectStore } from "../helpers/faulty-object-store.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function objectDir(): { dir: string; store: DirectoryObjectStore } {
  const dir = mkdtempSync(join(tmpdir(), "fractal-ckpt-"));
  dirs.push(dir);
  return { dir, store: new DirectoryObjectStore(dir) };
}

function messages(room: string, from: number, to: number): StoredMessage[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ({
    room,
    seq: from + i,
    id: `id-${from + i}`,
    user: `u${(from + i) % 3}`,
    text: `message ${from + i} ✓`,
    ts: 1_700_000_000_000 + from + i,
  }));
}

/**
 * Messages whose level-0 segment is too big to travel inline in the manifest (incompressible 4 KB texts), for
 * the tests about segment objects: 10 of them make a segment of about 33 KB.
 */
function bulky(room: string, from: number, to: number): StoredMessage[] {
  return messages(room, from, to).map((m) => ({
    ...m,
    text: Array.from({ length: 100 }, (_, i) => createHash("sha256").update(`${m.seq}:${i}`).digest("base64")).join(""),
  }));
}

const writer = { node: "n1", epoch: 1 };

describe("checkpoint chain", () => {
  it("appends segments, merges full levels, and reads back exactly the messages", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    let current = await chain.read("r");
    expect(current).to.equal(undefined);
    const rounds = FANOUT * FANOUT + 3;
    for (let i = 0; i < rounds; i++) current = await chain.append("r", current, messages("r", i * 10 + 1, i * 10 + 10), writer);
    const m = current!.manifest;
    expect(m.head).to.equal(rounds * 10);
    // 67 appends with fanout 8: one level-2 segment (64 rounds) and three level-0 segments.
    expect(m.segments.map((s) => s.level)).to.deep.equal([2, 0, 0, 0]);
    const all: StoredMessage[] = [];
    for await (const part of chain.messages("r", m, 1, m.head)) all.push(...part.messages);
    expect(all).to.deep.equal(messages("r", 1, rounds * 10));
    // Retention 0: merged-away segments are deleted, only referenced ones remain (level 0 travels inline).
    expect(m.segments.map((s) => s.inline !== undefined)).to.deep.equal([false, true, true, true]);
    expect((await store.list("segments/r/")).length).to.equal(1);
    expect(await store.list("trash/r/")).to.deep.equal([]);
    expect(await chain.rooms()).to.deep.equal(["r"]);
  });

  it("keeps replaced segments for the retention in tombstones, not in the manifest, then deletes them", async () => {
    const { store } = objectDir();
    let now = 1_000_000;
    const chain = new CheckpointChain(store, 60_000, () => now);
    // Segments too big to travel inline: they are objects, and merges replace them.
    const written = bulky("r", 1, 330);
    let current = await chain.append("r", undefined, written.slice(0, 10), writer);
    for (let i = 1; i < FANOUT * 4; i++) {
      now += 1000;
      current = await chain.append("r", current, written.slice(i * 10, i * 10 + 10), writer);
    }
    expect(current.manifest.segments.every((s) => s.inline === undefined)).to.equal(true);
    const manifestBytes = (await store.get("rooms/r/manifest.json"))!.body.length;
    expect(current.manifest.superseded).to.equal(undefined);
    expect(await store.list("trash/r/")).to.have.length(4);
    // 4 merges × 8 replaced segments are still there (retention), beside the referenced ones.
    expect(await store.list("segments/r/")).to.have.length(32 + current.manifest.segments.length);
    // A failed publish leaves a tombstone naming segments that stay live: the sweep must not delete them.
    const live = current.manifest.segments.map((s) => s.key);
    await store.put(`trash/r/${String(now).padStart(15, "0")}-e1-0badf00d.json`, Buffer.from(JSON.stringify({ room: "r", at: now, epoch: 1, keys: live })));
    // A stale writer (lower epoch than the manifest) sweeps nothing.
    now += 120_000;
    expect(await chain.sweep("r", { node: "old", epoch: 0 })).to.equal(0);
    expect(await store.list("segments/r/")).to.have.length(32 + live.length);
    // The owner's next checkpoint sweeps: replaced segments and tombstones go, live segments stay.
    current = await chain.append("r", current, written.slice(320, 330), writer);
    const after = await store.list("segments/r/");
    expect(after.sort()).to.deep.equal(current.manifest.segments.map((s) => s.key).sort());
    expect(await store.list("trash/r/")).to.deep.equal([]);
    const all: StoredMessage[] = [];
    for await (const part of chain.messages("r", current.manifest, 1, 330)) all.push(...part.messages);
    expect(all).to.deep.equal(written);
    // The manifest does not grow with the room's history of merges.
    expect((await store.get("rooms/r/manifest.json"))!.body.length).to.be.below(manifestBytes * 2);
  });

  it("refuses a writer with an older epoch than the manifest's (fencing)", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    const v = await chain.append("r", undefined, messages("r", 1, 5), { node: "n2", epoch: 7 });
    let err: unknown;
    await chain.append("r", v, messages("r", 6, 8), { node: "n1", epoch: 6 }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(StaleOwnerError);
    expect((await chain.read("r"))!.manifest.head).to.equal(5);
  });

  it("refuses to publish over a manifest that changed since it was read (compare-and-swap)", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    const v1 = await chain.append("r", undefined, messages("r", 1, 5), writer);
    await chain.append("r", v1, messages("r", 6, 6), writer);
    let err: unknown;
    await chain.append("r", v1, messages("r", 6, 7), writer).catch((e: unknown) => (err = e));
    expect(err).to.have.property("name", "PreconditionFailedError");
    expect((await chain.read("r"))!.manifest.head).to.equal(6);
  });

  it("detects a corrupted segment and reports it", async () => {
    const { dir, store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    const v = await chain.append("r", undefined, bulky("r", 1, 50), writer);
    const file = join(dir, ...v.manifest.segments[0]!.key.split("/"));
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] ?? 0) ^ 0xff;
    writeFileSync(file, bytes);
    const target = new MemoryRoomStore();
    let err: unknown;
    await restoreRoom(target, chain, "r", v).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(CheckpointCorruptError);
    expect((err as Error).message).to.match(/checksum mismatch/);
    expect(target.head("r")).to.equal(0);
  });

  it("verifies the whole chain before a replacing restore touches the local room", async () => {
    const { dir, store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    let v = await chain.append("r", undefined, bulky("r", 1, 10), writer);
    v = await chain.append("r", v, bulky("r", 11, 20), writer);
    const file = join(dir, ...v.manifest.segments[1]!.key.split("/"));
    writeFileSync(file, Buffer.from("not a segment"));
    const local = new MemoryRoomStore();
    local.append(messages("r", 1, 20));
    let err: unknown;
    await restoreRoom(local, chain, "r", v, { toSeq: 15, replace: true }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(CheckpointCorruptError);
    expect(local.head("r")).to.equal(20);
  });

  it("carries small level-0 segments inside the manifest: one object per checkpoint, verified like objects", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    let v = await chain.append("r", undefined, messages("r", 1, 10), writer);
    v = await chain.append("r", v, bulky("r", 11, 20), writer);
    v = await chain.append("r", v, messages("r", 21, 25), writer);
    expect(v.manifest.format).to.equal(2);
    expect(v.manifest.segments.map((s) => s.inline !== undefined)).to.deep.equal([true, false, true]);
    expect(v.manifest.segments.every((s) => s.bytes <= INLINE_MAX_BYTES || s.inline === undefined)).to.equal(true);
    // Only the big one is an object; the others live in the manifest.
    expect(await store.list("segments/r/")).to.deep.equal([v.manifest.segments[1]!.key]);
    const read = await chain.read("r");
    const all: StoredMessage[] = [];
    for await (const part of chain.messages("r", read!.manifest, 1, 25)) all.push(...part.messages);
    expect(all).to.deep.equal([...messages("r", 1, 10), ...bulky("r", 11, 20), ...messages("r", 21, 25)]);
    // A merge writes the inline ones out (as part of a level-1 object) and leaves no tombstone for them.
    for (let i = 0; i < FANOUT; i++) v = await chain.append("r", v, messages("r", 26 + i, 26 + i), writer);
    expect(v.manifest.segments.map((s) => `${s.level}${s.inline === undefined ? "o" : "i"}`)).to.deep.equal(["1o", "0i", "0i", "0i"]);
    // The one replaced object was named by a tombstone, and with retention 0 both are gone already.
    expect(await store.list("trash/r/")).to.deep.equal([]);
    expect(await store.list("segments/r/")).to.deep.equal([v.manifest.segments[0]!.key]);
    const again: StoredMessage[] = [];
    for await (const part of chain.messages("r", v.manifest, 1, v.manifest.head)) again.push(...part.messages);
    expect(again.map((m) => m.seq)).to.deep.equal(Array.from({ length: 33 }, (_, i) => i + 1));

    // A tampered inline body fails its checksum like an object would.
    const tampered = { ...v.manifest, segments: v.manifest.segments.map((s, i) => (i === 1 ? { ...s, inline: Buffer.from("junk").toString("base64") } : s)) };
    await store.put("rooms/t/manifest.json", Buffer.from(JSON.stringify({ ...tampered, room: "t" })));
    const t = await chain.read("t");
    let err: unknown;
    await restoreRoom(new MemoryRoomStore(), chain, "t", t!).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(CheckpointCorruptError);
    // Format 1 cannot have inline segments; an inline body must be a string.
    for (const bad of [{ ...v.manifest, format: 1 }, { ...v.manifest, segments: v.manifest.segments.map((s) => ({ ...s, inline: 5 })) }]) {
      await store.put("rooms/b/manifest.json", Buffer.from(JSON.stringify({ ...bad, room: "b" })));
      let e: unknown;
      await chain.read("b").catch((x: unknown) => (e = x));
      expect(e).to.be.instanceOf(CheckpointCorruptError);
    }
    // A format-1 manifest (segments as objects only) still reads.
    const old = await chain.append("o", undefined, bulky("o", 1, 10), writer);
    await store.put("rooms/o/manifest.json", Buffer.from(JSON.stringify({ ...old.manifest, format: 1 })));
    const legacy: StoredMessage[] = [];
    const o = await chain.read("o");
    for await (const part of chain.messages("o", o!.manifest, 1, 10)) legacy.push(...part.messages);
    expect(legacy).to.deep.equal(bulky("o", 1, 10));
  });

  it("detects a manifest whose chain has a hole", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 0);
    const v = await chain.append("r", undefined, messages("r", 1, 5), writer);
    const broken = { ...v.manifest, head: 9 };
    await store.put("rooms/r/manifest.json", Buffer.from(JSON.stringify(broken)));
    let err: unknown;
    await chain.read("r").catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(CheckpointCorruptError);
  });

  it("restores a room to a seq and truncates the chain there", async () => {
    const { store } = objectDir();
    const chain = new CheckpointChain(store, 60_000);
    // Segment objects (too big to travel inline), so the dropped one has an object for a tombstone to name.
    const written = bulky("r", 1, 100);
    let v = await chain.append("r", undefined, written.slice(0, 40), writer);
    v = await chain.append("r", v, written.slice(40, 100), writer);
    const local = new MemoryRoomStore();
    const progress: string[] = [];
    const result = await restoreRoom(local, chain, "r", v, { toSeq: 55, replace: true, onProgress: (p) => progress.push(`${p.phase}:${p.segmentsDone}`) });
    expect(result).to.deep.equal({ room: "r", restored: 55, head: 55 });
    expect(progress).to.deep.equal(["verify:1", "verify:2", "write:1", "write:2"]);
    expect(local.history("r", { after: 0, limit: 100 })).to.deep.equal(written.slice(0, 55));
    const cut = await chain.truncate("r", v, 55, written.slice(40, 55), writer);
    expect(cut.manifest.head).to.equal(55);
    expect(cut.manifest.segments.map((s) => [s.from, s.to])).to.deep.equal([
      [1, 40],
      [41, 55],
    ]);
    // The dropped segment is named by a tombstone (kept for the retention), not in the manifest.
    expect(cut.manifest.superseded).to.equal(undefined);
    const tombs = await store.list("trash/r/");
    expect(tombs).to.have.length(1);
    expect(JSON.parse((await store.get(tombs[0]!))!.body.toString()).keys).to.deep.equal([v.manifest.segments[1]!.key]);
    // The chain continues from the cut: the next checkpoint starts at 56.
    const next = await chain.append("r", cut, messages("r", 56, 60), writer);
    expect(next.manifest.head).to.equal(60);
  });
});

describe("checkpoint chain with skipped seqs", () => {
  it("records a skip as a gap, restores it, and merges around it", async () => {
    const { store: objects } = objectDir();
    const chain = new CheckpointChain(objects, 0);
    const local = new MemoryRoomStore();
    const cp = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 1, intervalMs: 1000 });
    local.append(messages("r", 1, 5));
    cp.committed(messages("r", 5, 5));
    await cp.flush();
    local.skipTo("r", 100); // a takeover after failover
    cp.markDirty("r");
    await cp.flush();
    local.append(messages("r", 101, 103));
    cp.committed(messages("r", 103, 103));
    await cp.flush();
    const m = (await chain.read("r"))!;
    expect(m.manifest.head).to.equal(103);
    expect(m.manifest.segments.map((x) => [x.from, x.to, x.gap ?? false])).to.deep.equal([
      [1, 5, false],
      [6, 100, true],
      [101, 103, false],
    ]);
    const rebuilt = new MemoryRoomStore();
    await restoreRoom(rebuilt, chain, "r", m);
    expect(rebuilt.head("r")).to.equal(103);
    expect(rebuilt.history("r", { after: 0, limit: 50 }).map((x) => x.seq)).to.deep.equal([1, 2, 3, 4, 5, 101, 102, 103]);
    // Truncating into the gap keeps a shorter gap.
    const cut = await chain.truncate("r", m, 50, [], writer);
    expect(cut.manifest.segments.map((x) => [x.from, x.to, x.gap ?? false])).to.deep.equal([
      [1, 5, false],
      [6, 50, true],
    ]);
  });
});

describe("checkpointer", () => {
  it("checkpoints dirty rooms, then restores them elsewhere with every message", async () => {
    const { store: objects } = objectDir();
    const chain = new CheckpointChain(objects, 60_000);
    const local = new MemoryRoomStore();
    const cp = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 1, intervalMs: 1000, maxSegmentMessages: 30 });
    for (const room of ["a", "b", "c"]) {
      local.append(messages(room, 1, 70));
      cp.committed(messages(room, 70, 70));
    }
    const round = await cp.flush();
    expect(round).to.deep.equal({ rooms: 3, messages: 210, failed: 0 });
    expect(cp.dirtyRooms).to.equal(0);
    expect(cp.status(["a"])[0]).to.include({ head: 70, checkpointed: 70, lagSeq: 0, lagSeconds: 0 });

    const rebuilt = new MemoryRoomStore();
    for (const room of await chain.rooms()) await restoreRoom(rebuilt, chain, room, (await chain.read(room))!);
    for (const room of ["a", "b", "c"]) expect(rebuilt.history(room, { after: 0, limit: 100 })).to.deep.equal(messages(room, 1, 70));
    expect(rebuilt.findSend("b", "u1", "id-7")?.seq).to.equal(7);
  });

  it("spreads a timer round's rooms over the spread window (no burst every interval), while flush writes at once", async () => {
    const { store: objects } = objectDir();
    const chain = new CheckpointChain(objects, 60_000);
    const local = new MemoryRoomStore();
    const done = new Map<string, number>();
    const cp = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 1, intervalMs: 150, spreadMs: 400, onCheckpoint: (room) => done.set(room, performance.now()) });
    const rooms = ["a", "b", "c", "d", "e"];
    const dirty = (target: Checkpointer) => {
      for (const room of rooms) {
        const from = local.head(room) + 1;
        local.append(messages(room, from, from + 2));
        target.committed(messages(room, from, from + 2));
      }
    };
    dirty(cp);
    const t0 = performance.now();
    cp.start();
    try {
      while (done.size < rooms.length && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
    } finally {
      cp.stop();
    }
    const times = rooms.map((r) => done.get(r)!);
    // Five rooms over 400 ms: one every 80 ms, in the order they became dirty; the last starts 320 ms after the first.
    expect(times.every((t, i) => i === 0 || t > times[i - 1]!)).to.equal(true);
    expect(times[4]! - times[0]!).to.be.greaterThan(250);
    // flush ignores the spread: with a 10-minute window a spread flush would start its last room 8 minutes in, so
    // finishing at all (bounded at 20 s, far above any disk's noise) shows it wrote the rooms at once.
    const flusher = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 1, intervalMs: 150, spreadMs: 600_000 });
    dirty(flusher);
    let timer: NodeJS.Timeout | undefined;
    const tooLong = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("flush was spread")), 20_000)));
    try {
      expect(await Promise.race([flusher.flush(), tooLong])).to.deep.equal({ rooms: 5, messages: 15, failed: 0 });
    } finally {
      clearTimeout(timer);
    }
  });

  it("keeps serving and keeps rooms dirty while the store is down, then catches up with nothing lost", async () => {
    const { store: dirStore } = objectDir();
    const objects = new FaultyObjectStore(dirStore);
    const chain = new CheckpointChain(objects, 60_000);
    const local = new MemoryRoomStore();
    let now = 1_000_000;
    const errors: unknown[] = [];
    const cp = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 1, intervalMs: 1000, clock: () => now, onError: (_r, e) => errors.push(e) });
    local.append(messages("r", 1, 10));
    cp.committed(messages("r", 1, 10));
    await cp.flush();
    objects.down = true;
    local.append(messages("r", 11, 20));
    cp.committed(messages("r", 11, 20));
    now += 5000;
    const failed = await cp.flush();
    expect(failed.failed).to.equal(1);
    expect(errors).to.have.length(1);
    expect(cp.lag()).to.deep.include({ rooms: 1, seq: 10 });
    expect(cp.lag().seconds).to.equal(5);
    objects.down = false;
    await cp.flush();
    expect(cp.lag()).to.deep.include({ rooms: 0, seq: 0 });
    const rebuilt = new MemoryRoomStore();
    await restoreRoom(rebuilt, chain, "r", (await chain.read("r"))!);
    expect(rebuilt.head("r")).to.equal(20);
  });

  it("stops writing a room once a newer owner's manifest is seen", async () => {
    const { store: objects } = objectDir();
    const chain = new CheckpointChain(objects, 0);
    await chain.append("r", undefined, messages("r", 1, 3), { node: "n2", epoch: 5 });
    const local = new MemoryRoomStore();
    local.append(messages("r", 1, 4));
    const stale: string[] = [];
    const cp = new Checkpointer({ store: local, chain, node: "n1", epoch: () => 4, intervalMs: 1000, onStale: (room) => stale.push(room) });
    cp.committed(messages("r", 4, 4));
    await cp.flush();
    expect(stale).to.deep.equal(["r"]);
    expect((await chain.read("r"))!.manifest).to.include({ head: 3, owner: "n2" });
  });
});
