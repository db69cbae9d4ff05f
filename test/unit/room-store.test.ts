import { expect } from "chai";
import { existsSync, fdatasync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MemoryRoomStore, SqliteRoomStore } from "../../shards/index.js";
import type { SyncFile } from "../../shards/wal-sync.js";
import { roomStoreContract } from "./room-store.contract.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh `rooms.db` path in a directory removed after the run. */
function tempDbFile(): string {
  const dir = mkdtempSync(join(tmpdir(), "fractal-store-"));
  dirs.push(dir);
  return join(dir, "rooms.db");
}

/** Messages from..to of a room, ids `i<seq>`, texts `text(seq)`. */
const msgs = (room: string, from: number, to: number, text: (seq: number) => string = (seq) => `t${seq}`) =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ room, seq: from + i, id: `i${from + i}`, user: "u", text: text(from + i), ts: from + i }));
/** One message, id `<room><seq>`. */
const msg = (room: string, seq: number) => ({ room, seq, id: `${room}${seq}`, user: "u", text: "t", ts: seq });

roomStoreContract("memory", () => ({ store: new MemoryRoomStore() }));
roomStoreContract("sqlite file", () => {
  const file = tempDbFile();
  return { store: new SqliteRoomStore(file), reopen: () => new SqliteRoomStore(file) };
});

describe("SqliteRoomStore", () => {
  it("answers history from the primary-key index, not a scan, with many messages", () => {
    const store = new SqliteRoomStore(tempDbFile());
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
  it("bulk appends of one turn: a bad one fails alone without taking the others down", async () => {
    const store = new SqliteRoomStore(tempDbFile());
    // Same turn: a, b, a gap in c (seq 5 on an empty room) and d.
    const results = await Promise.allSettled([
      store.appendAsync(msgs("a", 1, 100), { bulk: true }),
      store.appendAsync(msgs("b", 1, 50), { bulk: true }),
      store.appendAsync(msgs("c", 5, 9), { bulk: true }),
      store.appendAsync(msgs("d", 1, 3), { bulk: true }),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    expect(["a", "b", "c", "d"].map((r) => store.head(r))).to.deep.equal([100, 50, 0, 3]);
    // Writes apply in the order they are made (the skip sees b at 60, and skips to 70).
    const appended = store.appendAsync(msgs("b", 51, 60), { bulk: true });
    await store.skipTo("b", 70);
    await appended;
    expect(store.head("b")).to.equal(70);
    expect(store.history("b", { after: 55, limit: 3 }).map((m) => m.seq)).to.deep.equal([56, 57, 58]);
    store.close();
  });
});

describe("SqliteRoomStore writes behind a bulk append", () => {
  it("writes made while a bulk append is on the bulk thread wait in order behind it (not for SQLite's lock)", async () => {
    const store = new SqliteRoomStore(tempDbFile());
    // Each of these fails if it runs out of order: the bulk rows refuse a head above 0, the rest need them in.
    const bulk = store.appendAsync(msgs("a", 1, 20_000), { bulk: true });
    const other = store.appendAsync(msgs("b", 1, 1));
    const continued = store.appendAsync(msgs("a", 20_001, 20_001));
    const skip = store.skipTo("a", 20_010);
    expect(store.head("b"), "queued, not yet written").to.equal(0);
    await Promise.all([bulk, other, continued, skip]);
    expect([store.head("a"), store.head("b")]).to.deep.equal([20_010, 1]);
    expect(store.history("a", { after: 19_999, limit: 5 }).map((m) => m.seq)).to.deep.equal([20_000, 20_001]);
    await store.closeAsync();
  });
});

describe("SqliteRoomStore group commit", () => {
  it("batches handed over in one turn: a batch with a gap fails alone, and so does a later batch continuing its room", async () => {
    const file = tempDbFile();
    const store = new SqliteRoomStore(file);
    store.setCheckpoint("b", { seq: 1, version: "v", at: 1 }); // an advisory record, written with the appends
    // Handed over in one turn, as the commit queue does when batches wait behind a slow fsync (one sync for all).
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
  it("answers every batch of a turn, and only once it is in the file", async () => {
    const file = tempDbFile();
    const store = new SqliteRoomStore(file);
    await store.appendAsync([msg("a", 1)]); // no sync runs: the next turn's batches share the next one
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

describe("SqliteRoomStore without its bulk thread", () => {
  it("fails bulk appends at once instead of hanging; commits go on and the loop folds the log itself", async function () {
    this.timeout(20_000);
    const file = tempDbFile();
    const store = new SqliteRoomStore(file, { logLimitFrames: 200 });
    const big = (room: string, from: number, to: number) => msgs(room, from, to, () => "x".repeat(200));
    await (store as unknown as { bulk: { terminate(): Promise<number> } }).bulk.terminate();
    const failed = await store.appendAsync(big("a", 1, 10), { bulk: true }).then(() => undefined, (e: Error) => e);
    expect(failed?.message).to.match(/bulk thread exited/);
    let head = 0;
    for (const until = Date.now() + 2500; Date.now() < until; head += 20) await store.appendAsync(big("b", head + 1, head + 20));
    expect(statSync(file).size, "rows folded into the file").to.be.greaterThan(head * 200 * 0.5);
    await store.compact();
    expect(statSync(`${file}-wal`).size).to.equal(0);
    expect(store.head("b")).to.equal(head);
    await store.closeAsync();
  });
});

describe("SqliteRoomStore heads", () => {
  it("a batch that rolls back leaves every room's head where it was, also the rooms it had written before failing", async () => {
    const store = new SqliteRoomStore(tempDbFile());
    await store.appendAsync([msg("a", 1)]);
    // a 2 and 3 are inserted before b's gap rolls the transaction back.
    expect(await store.appendAsync([msg("a", 2), msg("a", 3), msg("b", 5)]).then(() => "ok", (e: Error) => e.message)).to.match(/room b: append seq 5 but expected 1/);
    expect([store.head("a"), store.head("b")]).to.deep.equal([1, 0]);
    await store.appendAsync([msg("a", 2), msg("b", 1)]);
    await store.skipTo("a", 10);
    await store.appendAsync([msg("a", 11)]);
    expect([store.head("a"), store.head("b")]).to.deep.equal([11, 1]);
    await store.closeAsync();
  });
});

describe("SqliteRoomStore checkpoint records", () => {
  it("answers a room's record as the file holds it (or as pending), through writes and a delete", async () => {
    const file = tempDbFile();
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
    const file = tempDbFile();
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
    const file = tempDbFile();
    const store = new SqliteRoomStore(file);
    const long = (room: string, from: number, to: number) => msgs(room, from, to, (seq) => `t${seq}`.repeat(20));
    await Promise.all(["a", "b", "c"].map((room) => store.appendAsync(long(room, 1, 2000), { bulk: true })));
    expect(statSync(`${file}-wal`).size).to.be.greaterThan(100_000);
    await store.compact();
    expect(statSync(`${file}-wal`).size).to.equal(0);
    expect(store.history("b", { after: 1990, limit: 20 }).map((m) => m.seq)).to.deep.equal([1991, 1992, 1993, 1994, 1995, 1996, 1997, 1998, 1999, 2000]);
    await store.appendAsync(long("a", 2001, 2001));
    await store.closeAsync();
    const reopened = new SqliteRoomStore(file);
    expect(["a", "b", "c"].map((r) => reopened.head(r))).to.deep.equal([2001, 2000, 2000]);
    reopened.close();
  });
});

describe("SqliteRoomStore durability (commits on the event loop, the log synced on the thread pool)", () => {

  it("a failed sync: nothing it covered is acknowledged or shown, and the store refuses every later write", async () => {
    let failing = false;
    const syncFile: SyncFile = (fd, done) => (failing ? done(Object.assign(new Error("EIO: i/o error"), { code: "EIO" })) : fdatasync(fd, done));
    const broken: Error[] = [];
    const store = new SqliteRoomStore(tempDbFile(), { syncFile, onBroken: (err) => broken.push(err) });
    await store.appendAsync(msgs("a", 1, 2));
    failing = true;
    const failed = await store.appendAsync(msgs("a", 3, 3)).then(() => undefined, (e: Error) => e);
    expect(failed?.message).to.match(/write-ahead log could not be synced \(EIO/);
    expect(store.head("a")).to.equal(2);
    expect(store.history("a", { after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2]);
    expect(store.uncheckpointed().map((r) => [r.room, r.head])).to.deep.equal([["a", 2]]);
    failing = false; // even a disk that recovered: what the kernel dropped cannot be known
    for (const write of [() => store.appendAsync(msgs("b", 1, 1)), () => store.skipTo("a", 10), () => store.deleteRoom("a")]) {
      expect((await Promise.resolve().then(write).then(() => undefined, (e: Error) => e))?.message).to.match(/could not be synced/);
    }
    expect(() => store.append(msgs("b", 1, 1))).to.throw(/could not be synced/);
    expect(store.head("b")).to.equal(0);
    expect(store.head("a")).to.equal(2);
    expect(broken.map((e) => e.message), "the node is told once").to.have.length(1);
    store.close();
  });

  it("deletes a large room a chunk per event-loop turn from its newest rows: every state in between is the room's first messages", async () => {
    const file = tempDbFile();
    const store = new SqliteRoomStore(file);
    await store.appendAsync(msgs("big", 1, 12_345), { bulk: true });
    await store.appendAsync(msgs("small", 1, 3));
    store.setCheckpoint("big", { seq: 12_000, version: "v", at: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const other = new Database(file, { readonly: true });
    const state = other.prepare<[], { head: number | null; rows: number; top: number | null }>(
      "SELECT (SELECT head FROM rooms WHERE room = 'big') AS head, count(*) AS rows, max(seq) AS top FROM messages WHERE room = 'big'",
    );
    let done = false;
    const deleting = store.deleteRoom("big").then(() => (done = true));
    const seen: { head: number | null; rows: number; top: number | null }[] = [];
    while (!done) {
      seen.push(state.get()!);
      await new Promise((r) => setImmediate(r));
    }
    await deleting;
    // The first look is before any chunk (deleteRoom runs its first chunk synchronously, so it is already gone).
    expect(seen.length, "turns the delete took").to.be.greaterThan(2);
    for (const s of seen) if (s.rows > 0) expect(s, "a prefix of the room").to.deep.equal({ head: s.rows, rows: s.rows, top: s.rows });
    expect(state.get()).to.deep.equal({ head: null, rows: 0, top: null });
    other.close();
    expect(store.head("big")).to.equal(0);
    expect(store.checkpointOf("big")).to.equal(undefined);
    expect(store.history("small", { after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2, 3]);
    await store.appendAsync(msgs("big", 1, 2));
    expect(store.history("big", { after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2]);
    await store.closeAsync();
  });

  it("folds the log into the file while commits go on, and the log starts over instead of growing with them", async function () {
    // SQLite's own checkpoints are off on the event loop's connection, and the log starts over only at a write
    // that finds all of it in the file, which a checkpointer thread alone never sees under steady commits.
    this.timeout(30_000);
    const file = tempDbFile();
    const store = new SqliteRoomStore(file, { logLimitFrames: 200 });
    let head = 0;
    const logSize = () => statSync(`${file}-wal`).size;
    const started = Date.now();
    let logAfter2s = 0;
    while (Date.now() - started < 6000) {
      await store.appendAsync(msgs("r", head + 1, head + 20, (seq) => `${"x".repeat(200)}${seq}`));
      head += 20;
      if (logAfter2s === 0 && Date.now() - started >= 2000) logAfter2s = logSize();
      await new Promise((r) => setTimeout(r, 2));
    }
    const fileSize = statSync(file).size;
    const logAtEnd = logSize(); // the file keeps its high-water size when the log starts over
    expect(fileSize, "rows folded into the file while the store was open").to.be.greaterThan(head * 200 * 0.5);
    // Growing with the commits, the log would be about 3 times its size after 2 s by now.
    expect(logAtEnd, `log after 2 s ${logAfter2s} bytes, at 6 s ${logAtEnd} (${head} messages)`).to.be.lessThan(logAfter2s * 2);
    await store.closeAsync();
    const reopened = new SqliteRoomStore(file);
    expect(reopened.head("r")).to.equal(head);
    expect(reopened.history("r", { after: head - 2, limit: 5 }).map((m) => m.seq)).to.deep.equal([head - 1, head]);
    reopened.close();
  });
});
