import { expect } from "chai";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MemoryRoomStore, SqliteRoomStore } from "../../shards/index.js";
import { roomStoreContract } from "./room-store.contract.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

roomStoreContract("memory", () => ({ store: new MemoryRoomStore() }));
roomStoreContract("sqlite file", () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
  dirs.push(dir);
  const file = join(dir, "rooms.db");
  return { store: new SqliteRoomStore(file), reopen: () => new SqliteRoomStore(file) };
});

describe("SqliteRoomStore", () => {
  it("answers history from the primary-key index, not a scan, with many messages", () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const store = new SqliteRoomStore(join(dir, "rooms.db"));
    const rooms = ["a", "b", "c", "d"];
    const batch = [];
    for (let seq = 1; seq <= 25_000; seq++) {
      for (const room of rooms) batch.push({ room, seq, id: `i${seq}`, user: "u", text: "hello", ts: seq });
    }
    store.append(batch);
    expect(store.head("c")).to.equal(25_000);
    // Plans are what keeps it fast at millions of rows; assert them rather than timing.
    const plan = (store as unknown as { db: { prepare(s: string): { all(...a: unknown[]): { detail: string }[] } } }).db
      .prepare("EXPLAIN QUERY PLAN SELECT * FROM messages WHERE room = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT 50")
      .all("c", 100, 200)
      .map((r) => r.detail)
      .join(" ");
    expect(plan).to.match(/SEARCH messages USING PRIMARY KEY \(room=\? AND seq>\? AND seq<\?\)/);
    expect(store.history("c", { before: 20_001, limit: 3 }).map((m) => m.seq)).to.deep.equal([19_998, 19_999, 20_000]);
    store.close();
  });
});

describe("SqliteRoomStore bulk appends (restores)", () => {
  it("commits the bulk appends of one turn together, and a bad one fails alone without taking the others down", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const store = new SqliteRoomStore(join(dir, "rooms.db"));
    const msgs = (room: string, from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => ({ room, seq: from + i, id: `i${from + i}`, user: "u", text: `t${from + i}`, ts: from + i }));
    // Same turn: a, b, a gap in c (seq 5 on an empty room) and d.
    const results = await Promise.allSettled([
      store.appendAsync(msgs("a", 1, 100), { bulk: true }),
      store.appendAsync(msgs("b", 1, 50), { bulk: true }),
      store.appendAsync(msgs("c", 5, 9), { bulk: true }),
      store.appendAsync(msgs("d", 1, 3), { bulk: true }),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    expect(["a", "b", "c", "d"].map((r) => store.head(r))).to.deep.equal([100, 50, 0, 3]);
    // A request made after bulk appends reaches the writer after them (the skip sees b at 50, not 0).
    const appended = store.appendAsync(msgs("b", 51, 60), { bulk: true });
    await store.skipTo("b", 70);
    await appended;
    expect(store.head("b")).to.equal(70);
    expect(store.history("b", { after: 55, limit: 3 }).map((m) => m.seq)).to.deep.equal([56, 57, 58]);
    store.close();
  });
});

describe("SqliteRoomStore group commit (writer thread)", () => {
  it("commits the batches that queued during a commit together; a batch with a gap fails alone, and so do the later batches of its room", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    const msg = (room: string, seq: number) => ({ room, seq, id: `${room}${seq}`, user: "u", text: "t", ts: seq });
    store.setCheckpoint("b", { seq: 1, version: "v", at: 1 }); // an advisory record, written with the appends
    // Handed over in one turn, as the commit queue does when batches wait behind a slow fsync.
    const results = await Promise.allSettled([
      store.appendAsync([msg("a", 1), msg("b", 1)]),
      store.appendAsync([msg("a", 2)]),
      store.appendAsync([msg("c", 3)]), // a gap: c is empty
      store.appendAsync([msg("c", 4), msg("d", 1)]), // continues the failed c: refused, d with it (one batch)
      store.appendAsync([msg("a", 3), msg("e", 1)]),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "fulfilled", "rejected", "rejected", "fulfilled"]);
    await store.closeAsync();
    const reopened = new SqliteRoomStore(file);
    expect(["a", "b", "c", "d", "e"].map((r) => reopened.head(r))).to.deep.equal([3, 1, 0, 0, 1]);
    expect(reopened.history("a", { after: 0, limit: 10 }).map((m) => m.id)).to.deep.equal(["a1", "a2", "a3"]);
    expect(reopened.checkpointOf("b")?.seq).to.equal(1);
    reopened.close();
  });
  it("answers every batch of a group that commits together, and only once it is in the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    const msg = (room: string, seq: number) => ({ room, seq, id: `${room}${seq}`, user: "u", text: "t", ts: seq });
    await store.appendAsync([msg("a", 1)]); // the writer is idle again: the next turn's batches queue together
    const order: string[] = [];
    const batches = [[msg("a", 2)], [msg("b", 1), msg("a", 3)], [msg("c", 1)], [msg("b", 2)]];
    await Promise.all(batches.map((b, i) => store.appendAsync(b).then(() => order.push(`batch ${i}`))));
    expect(order).to.have.members(["batch 0", "batch 1", "batch 2", "batch 3"]);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.prepare("SELECT room, seq FROM messages ORDER BY room, seq").all()).to.deep.equal([
        { room: "a", seq: 1 }, { room: "a", seq: 2 }, { room: "a", seq: 3 }, { room: "b", seq: 1 }, { room: "b", seq: 2 }, { room: "c", seq: 1 },
      ]);
    } finally {
      db.close();
    }
    await store.closeAsync();
  });
});

describe("SqliteRoomStore checkpoint records", () => {
  it("answers a room's record as the file holds it (or as pending), through writes and a delete", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    const truth = (room: string) => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare<[string], { seq: number }>("SELECT seq FROM checkpoints WHERE room = ?").get(room)?.seq;
      } finally {
        db.close();
      }
    };
    const turn = () => new Promise((r) => setTimeout(r, 50));
    await store.appendAsync([{ room: "r", seq: 1, id: "a", user: "u", text: "t", ts: 1 }]);
    expect(store.checkpointOf("r")).to.equal(undefined); // read once, remembered as none
    store.setCheckpoint("r", { seq: 1, version: "v1", at: 1 });
    expect(store.checkpointOf("r")?.seq).to.equal(1); // pending
    await store.appendAsync([{ room: "r", seq: 2, id: "b", user: "u", text: "t", ts: 2 }]);
    await turn();
    expect([store.checkpointOf("r")?.seq, truth("r")]).to.deep.equal([1, 1]);
    store.setCheckpoint("r", { seq: 2, version: "v2", at: 2 });
    await turn();
    expect([store.checkpointOf("r")?.seq, truth("r")]).to.deep.equal([2, 2]);
    await store.deleteRoom("r");
    expect([store.checkpointOf("r"), truth("r")]).to.deep.equal([undefined, undefined]);
    store.setCheckpoint("r", { seq: 5, version: "v5", at: 5 });
    await turn();
    expect([store.checkpointOf("r")?.seq, truth("r")]).to.deep.equal([5, 5]);
    await store.closeAsync();
    const reopened = new SqliteRoomStore(file);
    expect(reopened.checkpointOf("r")?.seq).to.equal(5);
    reopened.close();
  });
});

describe("SqliteRoomStore on a corrupt file", () => {
  it("sets the file aside and starts empty instead of crashing", () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    writeFileSync(file, Buffer.alloc(8192, 0x42));
    const store = new SqliteRoomStore(file);
    expect(store.setAside).to.match(/rooms\.db\.corrupt-\d+$/);
    expect(existsSync(store.setAside!)).to.equal(true);
    expect(store.head("r")).to.equal(0);
    store.append([{ room: "r", seq: 1, id: "a", user: "u", text: "t", ts: 1 }]);
    store.close();
  });
});

describe("SqliteRoomStore compact", () => {
  it("folds bulk appends out of the write-ahead log into the file; everything stays readable, also after a reopen", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    const msgs = (room: string, from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => ({ room, seq: from + i, id: `i${from + i}`, user: "u", text: `t${from + i}`.repeat(20), ts: from + i }));
    await Promise.all(["a", "b", "c"].map((room) => store.appendAsync(msgs(room, 1, 2000), { bulk: true })));
    expect(statSync(`${file}-wal`).size).to.be.greaterThan(100_000);
    await store.compact();
    expect(statSync(`${file}-wal`).size).to.equal(0);
    expect(store.history("b", { after: 1990, limit: 20 }).map((m) => m.seq)).to.deep.equal([1991, 1992, 1993, 1994, 1995, 1996, 1997, 1998, 1999, 2000]);
    await store.appendAsync(msgs("a", 2001, 2001));
    await store.closeAsync();
    const reopened = new SqliteRoomStore(file);
    expect(["a", "b", "c"].map((r) => reopened.head(r))).to.deep.equal([2001, 2000, 2000]);
    reopened.close();
  });
});
