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
  it("answers ranges inside the tail, and nothing it does not wholly hold", () => {
    const tails = new RoomTails(4, 100);
    tails.committed([msg("a", 1), msg("a", 2), msg("b", 7)]);
    tails.committed([msg("a", 3)]);
    expect(seqs(tails.range("a", 0, Infinity, 10))).to.deep.equal([1, 2, 3]);
    expect(seqs(tails.range("a", 1, Infinity, 1))).to.deep.equal([2]);
    expect(seqs(tails.range("a", 1, 3, 10))).to.deep.equal([2]);
    expect(seqs(tails.range("a", 3, Infinity, 10))).to.deep.equal([]); // at the head: nothing newer
    expect(seqs(tails.range("b", 6, Infinity, 10))).to.deep.equal([7]);
    expect(tails.range("b", 5, Infinity, 10)).to.equal(undefined); // seq 6 may exist before the tail
    expect(tails.range("c", 0, Infinity, 10)).to.equal(undefined);
    // Bounded per room: older messages drop out, and ranges reaching them go to the file.
    for (let s = 4; s <= 10; s++) tails.committed([msg("a", s)]);
    expect(tails.range("a", 0, Infinity, 10)).to.equal(undefined);
    expect(seqs(tails.range("a", 8, Infinity, 10))).to.deep.equal([9, 10]);
    // A hole (a write the tails did not see) never shows: the room starts over from the new message.
    tails.committed([msg("b", 9)]);
    expect(tails.range("b", 6, Infinity, 10)).to.equal(undefined);
    expect(seqs(tails.range("b", 8, Infinity, 10))).to.deep.equal([9]);
    tails.forget("b");
    expect(tails.range("b", 8, Infinity, 10)).to.equal(undefined);
  });

  it("never ends an answer below a commit it has seen, even when commits arrive out of order", () => {
    const tails = new RoomTails(8, 100);
    tails.committed([msg("a", 1), msg("a", 2)]);
    tails.committed([msg("a", 5)]); // 3 and 4 are answered later
    tails.committed([msg("a", 3), msg("a", 4)]); // the tail starts over at 3 and ends at 4, below 5
    expect(tails.range("a", 2, Infinity, 10)).to.equal(undefined); // not [3, 4]: the file has 5 too
    expect(tails.range("a", 4, Infinity, 10)).to.equal(undefined); // not []: that would read as the room's end
    tails.committed([msg("a", 6)]); // a hole after 4: the tail starts over at 6, the highest commit
    expect(seqs(tails.range("a", 5, Infinity, 10))).to.deep.equal([6]);
    // Another kind of write (a restore that replaces the room) starts the room's record over.
    tails.forget("a");
    tails.committed([msg("a", 1)]);
    expect(seqs(tails.range("a", 0, Infinity, 10))).to.deep.equal([1]);
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
