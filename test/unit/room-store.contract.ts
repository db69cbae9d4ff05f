/** The RoomStore contract (shards/room-store.ts), run against every implementation. */
import { expect } from "chai";
import type { RoomStore, StoredMessage } from "../../shards/index.js";

function msg(room: string, seq: number, user = "alice", id = `id-${seq}`): StoredMessage {
  return { room, seq, id, user, text: `text ${seq}`, ts: 1000 + seq };
}

export function roomStoreContract(name: string, open: () => { store: RoomStore; reopen?: () => RoomStore }): void {
  describe(`RoomStore contract: ${name}`, () => {
    let store: RoomStore;
    let reopen: (() => RoomStore) | undefined;
    beforeEach(() => {
      ({ store, reopen } = open());
    });
    afterEach(() => store.close());

    it("starts rooms at head 0 and appends consecutive seqs", () => {
      expect(store.head("r")).to.equal(0);
      store.append([msg("r", 1), msg("r", 2)]);
      store.append([msg("r", 3)]);
      expect(store.head("r")).to.equal(3);
      expect(store.head("other")).to.equal(0);
      expect(store.rooms()).to.deep.equal(["r"]);
    });

    it("group-commits a batch spanning rooms atomically", () => {
      store.append([msg("a", 1), msg("b", 1), msg("a", 2)]);
      expect([store.head("a"), store.head("b")]).to.deep.equal([2, 1]);
      // The second batch has a gap in room b: nothing of it may land, room a included.
      expect(() => store.append([msg("a", 3), msg("b", 3)])).to.throw(/expected 2/);
      expect([store.head("a"), store.head("b")]).to.deep.equal([2, 1]);
      expect(store.history("a", { after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2]);
    });

    it("refuses a seq that is not head + 1 (a gap or a second writer)", () => {
      store.append([msg("r", 1)]);
      expect(() => store.append([msg("r", 1, "bob", "x")])).to.throw();
      expect(() => store.append([msg("r", 5)])).to.throw();
      expect(store.head("r")).to.equal(1);
    });

    it("keeps one idempotency record per (room, user, id)", () => {
      store.append([msg("r", 1, "alice", "same")]);
      expect(store.findSend("r", "alice", "same")).to.deep.equal({ seq: 1, ts: 1001 });
      expect(store.findSend("r", "bob", "same")).to.equal(undefined);
      expect(store.findSend("other", "alice", "same")).to.equal(undefined);
      expect(() => store.append([msg("r", 2, "alice", "same")])).to.throw();
      store.append([msg("r", 2, "bob", "same")]);
      expect(store.head("r")).to.equal(2);
    });

    it("answers history by seq range, ascending, with scroll-back", () => {
      store.append(Array.from({ length: 30 }, (_, i) => msg("r", i + 1)));
      const seqs = (q: { after?: number; before?: number; limit: number }) => store.history("r", q).map((m) => m.seq);
      expect(seqs({ after: 0, limit: 5 })).to.deep.equal([1, 2, 3, 4, 5]);
      expect(seqs({ after: 27, limit: 5 })).to.deep.equal([28, 29, 30]);
      expect(seqs({ before: 11, limit: 3 })).to.deep.equal([8, 9, 10]);
      expect(seqs({ before: 3, limit: 10 })).to.deep.equal([1, 2]);
      expect(seqs({ after: 10, before: 14, limit: 10 })).to.deep.equal([11, 12, 13]);
      expect(seqs({ after: 30, limit: 10 })).to.deep.equal([]);
      expect(seqs({ before: 1, limit: 10 })).to.deep.equal([]);
      expect(store.history("r", { after: 0, limit: 1 })[0]).to.deep.equal(msg("r", 1));
    });

    it("skips seqs: the head jumps, history has a hole, appends continue after it", async () => {
      store.append([msg("r", 1), msg("r", 2)]);
      await store.skipTo("r", 1000);
      await store.skipTo("r", 10); // never backwards
      expect(store.head("r")).to.equal(1000);
      expect(() => store.append([msg("r", 3)])).to.throw();
      store.append([msg("r", 1001)]);
      expect(store.history("r", { after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2, 1001]);
      expect(store.history("r", { before: 1001, limit: 10 }).map((m) => m.seq)).to.deep.equal([1, 2]);
      expect(store.history("r", { after: 2, limit: 10 }).map((m) => m.seq)).to.deep.equal([1001]);
    });

    it("keeps everything across a reopen", function () {
      if (reopen === undefined) return this.skip();
      store.append([msg("r", 1), msg("r", 2, "bob", "b")]);
      store.close();
      store = reopen();
      expect(store.head("r")).to.equal(2);
      expect(store.findSend("r", "bob", "b")?.seq).to.equal(2);
      expect(store.history("r", { after: 0, limit: 10 })).to.have.length(2);
    });
  });
}
