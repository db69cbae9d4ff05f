import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteRoomStore } from "../../shards/index.js";
import { SendFilter } from "../../shards/send-filter.js";
import { SendKeys, type SendKeyPage } from "../../shards/send-keys.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempFile = () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-sends-"));
  dirs.push(dir);
  return join(dir, "rooms.db");
};
const waitFor = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
};

describe("SendFilter", () => {
  it("holds every key added (no false negatives), across its growth into layers", () => {
    const filter = new SendFilter();
    const n = 300_000; // past the first layers (65,536 and 131,072 keys)
    for (let i = 0; i < n; i++) filter.add(`room-${i % 997}`, `user${i % 131}`, `send-${i}`);
    expect(filter.size).to.equal(n);
    for (let i = 0; i < n; i++) {
      if (!filter.mayHold(`room-${i % 997}`, `user${i % 131}`, `send-${i}`)) expect.fail(`key ${i} missing`);
    }
  });

  it("says no to almost every key never added (false positives well under 1 %)", () => {
    const filter = new SendFilter();
    for (let i = 0; i < 100_000; i++) filter.add("room", `user${i % 50}`, `id-${i}`);
    let yes = 0;
    const probes = 100_000;
    for (let i = 0; i < probes; i++) if (filter.mayHold("room", `user${i % 50}`, `other-${i}`)) yes++;
    expect(yes / probes).to.be.below(0.01);
  });

  it("keeps the parts of a key apart: (room, user, id) is not a concatenation", () => {
    const filter = new SendFilter();
    filter.add("ab", "c", "d");
    expect(filter.mayHold("ab", "c", "d")).to.equal(true);
    const shifted = [["a", "bc", "d"], ["abc", "", "d"], ["ab", "cd", ""], ["ab", "", "cd"]] as const;
    expect(shifted.filter(([r, u, i]) => filter.mayHold(r, u, i))).to.deep.equal([]);
  });
});

describe("SendKeys (a file that cannot be read)", () => {
  const key = (room: string, i: number) => ({ room, user: "u", id: `k${i}` });
  const turns = (n: number) => new Promise<void>((r) => { let left = n; const next = () => (--left <= 0 ? r() : setImmediate(next)); setImmediate(next); });

  it("stays incomplete when the file's keys cannot be read: every lookup says maybe (SQLite answers)", async () => {
    const keys = new SendKeys(() => {
      throw new Error("SQLITE_IOERR");
    }, () => true);
    await turns(3);
    expect(keys.complete).to.equal(false);
    expect(keys.mayHold("r", "u", "never-written")).to.equal(true);
  });

  it("a fresh reading that fails is dropped: the current filter keeps answering, and a later one can succeed", async () => {
    const file = new Map<string, [string, string, string]>(); // sorted key -> row, the "file"
    let broken = false;
    const page: SendKeyPage = (after, limit) => {
      if (broken) throw new Error("SQLITE_IOERR");
      const from = after.join("\u0000");
      return [...file.entries()].filter(([k]) => k > from).sort(([a], [b]) => (a < b ? -1 : 1)).slice(0, limit).map(([, row]) => row);
    };
    const put = (room: string, n: number) => {
      const ks = Array.from({ length: n }, (_, i) => key(room, i));
      for (const k of ks) file.set([k.room, k.user, k.id].join("\u0000"), [k.room, k.user, k.id]);
      keys.added(ks);
    };
    const keys = new SendKeys(page, () => true);
    expect(keys.complete).to.equal(true); // empty file: complete at once
    put("a", 40_000);
    put("b", 40_000);
    for (const k of file.keys()) if (k.startsWith("a\u0000")) file.delete(k);
    broken = true;
    keys.removed(40_000); // half the keys are dead: a fresh reading starts, and fails
    await turns(3);
    expect(keys.size).to.equal(80_000); // still the old filter
    expect(keys.mayHold("b", "u", "k39999")).to.equal(true);
    broken = false;
    keys.removed(0); // the next deletion tries again
    for (let i = 0; i < 100 && keys.size === 80_000; i++) await turns(5);
    expect(keys.size).to.equal(40_000);
    expect(keys.mayHold("b", "u", "k0")).to.equal(true);
    expect(keys.mayHold("b", "u", "k39999")).to.equal(true);
  });
});

describe("SqliteRoomStore dedupe lookups through the send filter", () => {
  const msg = (room: string, seq: number, user = "u") => ({ room, seq, id: `id-${room}-${seq}`, user, text: "t", ts: seq });
  const rows = (room: string, n: number) => Array.from({ length: n }, (_, i) => msg(room, i + 1));

  it("finds every send the file held when it was opened, whichever page of the file it was read from", async () => {
    const file = tempFile();
    // Written behind the store's back, as a previous run of the node left them: 12,000 keys over 6 pages.
    const db = new Database(file);
    db.pragma("journal_mode = WAL");
    db.close();
    let store = new SqliteRoomStore(file);
    await store.closeAsync();
    const raw = new Database(file);
    const insert = raw.prepare("INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)");
    raw.transaction(() => {
      for (let seq = 1; seq <= 3000; seq++) for (const room of ["a", "b", "c", "d"]) insert.run(room, seq, `id-${room}-${seq}`, `u${seq % 7}`, "t", seq);
      raw.prepare("INSERT INTO rooms (room, head) VALUES ('a', 3000), ('b', 3000), ('c', 3000), ('d', 3000)").run();
    })();
    raw.close();

    store = new SqliteRoomStore(file);
    // Before the file is read in, lookups go to SQLite; after, through the filter: both find the same sends.
    const lookups = () => [1, 777, 2000, 2999, 3000].flatMap((seq) => ["a", "d"].map((room) => store.findSend(room, `u${seq % 7}`, `id-${room}-${seq}`)?.seq));
    expect(store.sendKeysLoaded).to.equal(false);
    expect(lookups()).to.deep.equal([1, 1, 777, 777, 2000, 2000, 2999, 2999, 3000, 3000]);
    await waitFor(() => store.sendKeysLoaded, "the file's keys to be read in");
    expect(lookups()).to.deep.equal([1, 1, 777, 777, 2000, 2000, 2999, 2999, 3000, 3000]);
    // Every one of the 12,000, and none that is not there.
    let found = 0;
    for (let seq = 1; seq <= 3000; seq++) for (const room of ["a", "b", "c", "d"]) if (store.findSend(room, `u${seq % 7}`, `id-${room}-${seq}`)?.seq === seq) found++;
    expect(found).to.equal(12_000);
    expect(store.findSend("a", "u1", "id-a-2")).to.equal(undefined); // that send was u2's
    await store.closeAsync();
  });

  it("finds sends written through every kind of append while the file's keys are still being read in", async () => {
    const file = tempFile();
    let store = new SqliteRoomStore(file);
    const big = [];
    for (let seq = 1; seq <= 6000; seq++) big.push(msg("old", seq));
    await store.appendAsync(big, { bulk: true });
    await store.closeAsync();

    store = new SqliteRoomStore(file);
    expect(store.sendKeysLoaded).to.equal(false);
    // A group commit, a grouped (takeover) append and a bulk (restore) append, all before the reading ends.
    await Promise.all([
      store.appendAsync([msg("live", 1, "alice"), msg("live", 2, "bob")]),
      store.appendAsync([msg("moved", 1), msg("moved", 2)], { grouped: true }),
      store.appendAsync([msg("restored", 1)], { bulk: true }),
    ]);
    await waitFor(() => store.sendKeysLoaded, "the file's keys to be read in");
    expect(store.findSend("live", "alice", "id-live-1")?.seq).to.equal(1);
    expect(store.findSend("live", "bob", "id-live-2")?.seq).to.equal(2);
    expect(store.findSend("moved", "u", "id-moved-2")?.seq).to.equal(2);
    expect(store.findSend("restored", "u", "id-restored-1")?.seq).to.equal(1);
    expect(store.findSend("old", "u", "id-old-5999")?.seq).to.equal(5999);
    expect(store.findSend("live", "alice", "id-live-2")).to.equal(undefined);
    await store.closeAsync();
  });

  it("finds sends of an in-memory store (no log to sync) and of a room deleted and written again", async () => {
    const store = new SqliteRoomStore(":memory:");
    expect(store.sendKeysLoaded).to.equal(true);
    store.append([msg("r", 1), msg("r", 2)]);
    expect(store.findSend("r", "u", "id-r-2")?.seq).to.equal(2);
    await store.deleteRoom("r");
    expect(store.findSend("r", "u", "id-r-2")).to.equal(undefined); // a false positive of the filter, answered by SQLite
    store.append([msg("r", 1)]);
    expect(store.findSend("r", "u", "id-r-1")?.seq).to.equal(1);
    store.close();
  });

  it("sheds the keys of deleted rooms: once half the filter is theirs it is read again from the file, and no send is missed meanwhile", async () => {
    const store = new SqliteRoomStore(tempFile());
    await Promise.all([store.appendAsync(rows("gone", 50_000), { bulk: true }), store.appendAsync(rows("kept", 40_000), { bulk: true })]);
    expect(store.sendKeys).to.equal(90_000);
    await store.deleteRoom("gone"); // 50,000 of 90,000 keys are now dead: a reload starts
    // Written while the fresh filter is being read, in a part of the file it has read already ("aaa" sorts first):
    // it must be in the fresh filter when that takes over.
    await store.appendAsync([msg("aaa", 1, "alice")]);
    await waitFor(() => store.sendKeys < 90_000, "the filter to be read again");
    expect(store.sendKeys).to.equal(40_001);
    expect(store.findSend("aaa", "alice", "id-aaa-1")?.seq).to.equal(1);
    expect(store.findSend("kept", "u", "id-kept-1")?.seq).to.equal(1);
    expect(store.findSend("kept", "u", "id-kept-40000")?.seq).to.equal(40_000);
    expect(store.findSend("gone", "u", "id-gone-7")).to.equal(undefined);
    await store.closeAsync();
  });

  it("a fresh filter holds the sends written while a room was deleted and its reading began", async () => {
    const store = new SqliteRoomStore(tempFile());
    await store.appendAsync(rows("kept", 20_000), { bulk: true });
    let missed = 0;
    for (let round = 1; round <= 5; round++) {
      await store.appendAsync(rows(`gone${round}`, 50_000), { bulk: true });
      const before = store.sendKeys;
      // In one turn: the delete (a chunk per turn; its end starts the reading) and a send, committed while the
      // delete goes on: "a1" sorts into the fresh filter's first page.
      const deleted = store.deleteRoom(`gone${round}`);
      const sent = store.appendAsync([msg(`a${round}`, 1, "alice")]);
      await Promise.all([deleted, sent]);
      await waitFor(() => store.sendKeys < before, "the filter to be read again");
      if (store.findSend(`a${round}`, "alice", `id-a${round}-1`)?.seq !== 1) missed++;
    }
    expect(missed, "sends missed by the fresh filter").to.equal(0);
    await store.closeAsync();
  });

  it("refuses a companion statement that would write the rooms' tables behind the filter's back", async () => {
    const store = new SqliteRoomStore(tempFile());
    const companion = store.companion("CREATE TABLE IF NOT EXISTS side (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;");
    await companion.write([["INSERT INTO side (k, v) VALUES (?, ?)", ["a", "b"]]]);
    let refused: unknown;
    await companion
      .write([["INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)", ["r", 1, "x", "u", "t", 1]]])
      .catch((err: unknown) => (refused = err));
    expect(String(refused)).to.match(/may not write the rooms' tables/);
    expect(store.head("r")).to.equal(0);
    expect(store.findSend("r", "u", "x")).to.equal(undefined);
    await store.closeAsync();
  });
});
