import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteRoomStore, type StoredMessage } from "../../shards/index.js";
import { RoomTails } from "../../shards/room-tails.js";

const msg = (room: string, seq: number): StoredMessage => ({ room, seq, id: `${room}-${seq}`, user: "u", text: `t${seq}`, ts: seq });
const seqs = (list: readonly StoredMessage[] | undefined) => list?.map((m) => m.seq);

describe("room tails", () => {
  it("answers only ranges it wholly holds: `limit` messages, or every seq below `before`", () => {
    const tails = new RoomTails(4, 100);
    tails.committed([msg("a", 1), msg("a", 2), msg("b", 7)]);
    tails.committed([msg("a", 3)]);
    expect(seqs(tails.range("a", 0, Infinity, 3))).to.deep.equal([1, 2, 3]);
    expect(seqs(tails.range("a", 1, Infinity, 1))).to.deep.equal([2]);
    expect(seqs(tails.range("a", 1, 3, 10))).to.deep.equal([2]); // bounded by `before`
    expect(seqs(tails.range("a", 2, 2, 10))).to.deep.equal([]); // an empty range is an answer too
    // Fewer than `limit` up to the tail's end: the file may already hold more (see the next test).
    expect(tails.range("a", 0, Infinity, 10)).to.equal(undefined);
    expect(tails.range("a", 3, Infinity, 10)).to.equal(undefined);
    expect(seqs(tails.range("b", 6, Infinity, 1))).to.deep.equal([7]);
    expect(tails.range("b", 5, Infinity, 2)).to.equal(undefined); // seq 6 may exist before the tail
    expect(tails.range("c", 0, Infinity, 10)).to.equal(undefined);
    expect(tails.range("a", 0, Infinity, 0)).to.equal(undefined);
    // Bounded per room: older messages drop out, and ranges reaching them go to the file.
    for (let s = 4; s <= 10; s++) tails.committed([msg("a", s)]);
    expect(tails.range("a", 0, Infinity, 3)).to.equal(undefined);
    expect(seqs(tails.range("a", 8, Infinity, 2))).to.deep.equal([9, 10]);
    // A hole (a write the tails did not see) never shows: the room starts over from the new message.
    tails.committed([msg("b", 9)]);
    expect(tails.range("b", 6, Infinity, 3)).to.equal(undefined);
    expect(seqs(tails.range("b", 8, Infinity, 1))).to.deep.equal([9]);
    tails.forget("b");
    expect(tails.range("b", 8, Infinity, 1)).to.equal(undefined);
  });

  it("never answers short while the file is ahead of it (a commit whose answer is still on its way)", () => {
    // What a checkpoint round did: the head from the file is 6, the chain ends at 4, the tail at 4 (the commit of
    // 5-6 has landed in the file, its answer not yet processed). An empty answer there recorded 5-6 as a gap.
    const tails = new RoomTails(8, 100);
    tails.committed([msg("a", 1), msg("a", 2), msg("a", 3), msg("a", 4)]);
    const headInFile = 6;
    expect(tails.range("a", 4, Infinity, headInFile - 4)).to.equal(undefined); // not []: read the file
    expect(tails.range("a", 2, Infinity, headInFile - 2)).to.equal(undefined); // not [3, 4]
    tails.committed([msg("a", 5), msg("a", 6)]);
    expect(seqs(tails.range("a", 4, Infinity, headInFile - 4))).to.deep.equal([5, 6]);
    // Commits seen out of order restart the tail below a newer one: still never a short answer.
    tails.committed([msg("a", 9)]);
    tails.committed([msg("a", 7), msg("a", 8)]);
    expect(tails.range("a", 6, Infinity, 3)).to.equal(undefined); // not [7, 8]
    expect(seqs(tails.range("a", 6, Infinity, 2))).to.deep.equal([7, 8]); // what the tail wholly holds
  });

  it("stops taking new rooms at its total bound", () => {
    const tails = new RoomTails(10, 3);
    tails.committed([msg("a", 1), msg("a", 2), msg("a", 3), msg("b", 1)]);
    expect(tails.range("b", 0, Infinity, 10)).to.equal(undefined);
    expect(tails.messages).to.equal(3);
  });
});

describe("SqliteRoomStore history with tails", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("shows a commit (head, history from the tail or the file, checkpoint backlog) only once its sync has finished", async () => {
    // The event loop's connection reads its own writes at once; a commit whose log frames are not yet on disk
    // could be taken back by a power cut, and its seq then given to another message.
    const dir = mkdtempSync(join(tmpdir(), "fractal-tails-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    await store.appendAsync([msg("r", 1), msg("r", 2), msg("r", 3), msg("r", 4)]);
    store.setCheckpoint("r", { seq: 2, version: "v", at: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const landing = store.appendAsync([msg("r", 5), msg("r", 6)]);
    // In the file (another connection sees it), not yet synced: the sync's answer needs this turn to end.
    const other = new Database(file, { readonly: true });
    expect(other.prepare("SELECT head FROM rooms WHERE room = 'r'").pluck().get()).to.equal(6);
    other.close();
    expect(store.head("r")).to.equal(4);
    expect(store.history("r", { after: 2, limit: 10 }).map((m) => m.seq)).to.deep.equal([3, 4]);
    expect(store.history("r", { after: 0, before: 100, limit: 1000 }).map((m) => m.seq)).to.deep.equal([1, 2, 3, 4]);
    expect(store.history("r", { before: 100, limit: 3 }).map((m) => m.seq)).to.deep.equal([2, 3, 4]);
    expect(store.uncheckpointed()).to.deep.equal([{ room: "r", head: 4, checkpointed: 2 }]);
    // The next write continues after the unsynced one, and a retry finds it (the room actor holds it in flight).
    const next = store.appendAsync([msg("r", 7)]);
    expect(store.findSend("r", "u", "r-6")?.seq).to.equal(6);
    await landing;
    expect(store.head("r")).to.be.oneOf([6, 7]);
    await next;
    expect(store.head("r")).to.equal(7);
    expect(store.history("r", { after: 4, limit: 10 }).map((m) => m.seq)).to.deep.equal([5, 6, 7]);
    expect(store.uncheckpointed()).to.deep.equal([{ room: "r", head: 7, checkpointed: 2 }]);
    await store.closeAsync();
  });

  it("answers every range exactly as the file does, through commits, restores, skips, takeovers and deletes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-tails-"));
    dirs.push(dir);
    const file = join(dir, "rooms.db");
    const store = new SqliteRoomStore(file);
    const file_ = new Database(file, { readonly: true });
    const truth = file_.prepare<[string, number, number, number], StoredMessage>(
      "SELECT room, seq, id, user, text, ts FROM messages WHERE room = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT ?",
    );
    const heads = new Map<string, number>();
    const next = (room: string, n: number) => {
      const from = (heads.get(room) ?? 0) + 1;
      heads.set(room, from + n - 1);
      return Array.from({ length: n }, (_, i) => msg(room, from + i));
    };
    const check = (when: string) => {
      for (const room of ["a", "b", "c"]) {
        const head = heads.get(room) ?? 0;
        for (const after of [0, 1, head - 5, head - 1, head, head + 3]) {
          for (const [before, limit] of [[Number.MAX_SAFE_INTEGER, 200], [head, 200], [Number.MAX_SAFE_INTEGER, 2]] as const) {
            const got = store.history(room, { after: Math.max(0, after), before, limit });
            const want = truth.all(room, Math.max(0, after), before, limit);
            expect(got, `${when}: ${room} after ${after} before ${before} limit ${limit}`).to.deep.equal(want);
          }
        }
      }
    };
    for (let round = 0; round < 5; round++) {
      await Promise.all([store.appendAsync([...next("a", 3), ...next("b", 1)]), store.appendAsync(next("c", 2))]);
      check(`commits ${round}`);
    }
    await store.appendAsync(next("a", 20), { bulk: true }); // a restore's rows
    check("bulk append");
    await store.appendAsync(next("b", 4), { grouped: true }); // a takeover's tail
    check("grouped append");
    await store.appendAsync(next("a", 2));
    check("commit after a bulk append");
    await store.skipTo("c", 40);
    heads.set("c", 40);
    check("skip");
    await store.appendAsync(next("c", 3));
    check("commit after a skip");
    await store.deleteRoom("b");
    heads.delete("b");
    check("delete");
    await store.appendAsync(next("b", 2));
    check("room recreated");
    // A failed commit (a gap) leaves the tails as they were.
    await store.appendAsync([msg("a", 999)]).catch(() => undefined);
    check("failed commit");
    file_.close();
    await store.closeAsync();
  });
});
