/** The ReplicaStore contract (shards/replica-store.ts), run against every implementation. */
import { expect } from "chai";
import type { ReplicaItem, ReplicaStore, StoredMessage } from "../../shards/index.js";

function msg(room: string, seq: number, id = `id-${seq}`): StoredMessage {
  return { room, seq, id, user: "alice", text: `text ${seq}`, ts: 1000 + seq };
}

/** An item carrying seqs from..to of the owner's history `id-<seq>` (the default ids). */
function item(room: string, after: number, to: number, o: Partial<ReplicaItem> = {}): ReplicaItem {
  const messages = [];
  for (let seq = after + 1; seq <= to; seq++) messages.push(msg(room, seq));
  return { room, checkpointed: 0, after, afterId: after > 0 ? `id-${after}` : "", afterTs: after > 0 ? 1000 + after : 0, messages, reset: false, ...o };
}

export function replicaStoreContract(name: string, open: () => { store: ReplicaStore; reopen?: () => ReplicaStore; close?: () => void }): void {
  describe(`ReplicaStore contract: ${name}`, () => {
    let store: ReplicaStore;
    let reopen: (() => ReplicaStore) | undefined;
    let close: (() => void) | undefined;
    beforeEach(() => {
      ({ store, reopen, close } = open());
    });
    afterEach(() => close?.());

    const seqs = (room: string) => store.messages(room, 0, 1000).map((m) => m.seq);

    it("accepts contiguous data and records the owner, epoch and head", async () => {
      expect(await store.apply("n1", 3, [item("r", 0, 3)])).to.deep.equal([{ status: "ok", head: 3 }]);
      expect(await store.apply("n1", 3, [item("r", 3, 5)])).to.deep.equal([{ status: "ok", head: 5 }]);
      expect(store.record("r")).to.include({ owner: "n1", epoch: 3, head: 5, headId: "id-5", headTs: 1005 });
      expect(seqs("r")).to.deep.equal([1, 2, 3, 4, 5]);
      expect(store.rooms()).to.deep.equal(["r"]);
    });

    it("answers where its copy ends when the data does not continue it, and changes nothing", async () => {
      await store.apply("n1", 3, [item("r", 0, 3)]);
      // A batch after a lost one: the owner must backfill from 3.
      expect(await store.apply("n1", 3, [item("r", 7, 9)])).to.deep.equal([{ status: "behind", head: 3 }]);
      // Data the copy already holds more than.
      expect(await store.apply("n1", 3, [item("r", 1, 2)])).to.deep.equal([{ status: "ahead", head: 3 }]);
      expect(seqs("r")).to.deep.equal([1, 2, 3]);
      expect(store.record("r")?.head).to.equal(3);
      // The backfill the owner then sends (from the copy's head) is accepted.
      expect(await store.apply("n1", 3, [item("r", 3, 9)])).to.deep.equal([{ status: "ok", head: 9 }]);
    });

    it("takes the owner's checkpointed seq as a floor and drops the rows up to it", async () => {
      await store.apply("n1", 1, [item("r", 0, 5)]);
      // The owner checkpointed 4: rows 1-4 go; the copy still ends at 5.
      expect(await store.apply("n1", 1, [item("r", 5, 6, { checkpointed: 4 })])).to.deep.equal([{ status: "ok", head: 6 }]);
      expect(seqs("r")).to.deep.equal([5, 6]);
      // A copy behind the checkpoint is as good as ending there: the owner sends from it, no need for 7-10.
      expect(await store.apply("n1", 1, [item("r", 12, 13, { checkpointed: 12, afterId: "" })])).to.deep.equal([{ status: "ok", head: 13 }]);
      expect(seqs("r")).to.deep.equal([13]);
      expect(store.record("r")).to.include({ head: 13, checkpointed: 12 });
      // And one that is behind the floor answers the floor as its end.
      expect(await store.apply("n1", 1, [item("s", 30, 31, { checkpointed: 20 })])).to.deep.equal([{ status: "behind", head: 20 }]);
    });

    it("a sync (no messages) records the new epoch when the copy ends where the owner says", async () => {
      await store.apply("n1", 1, [item("r", 0, 4)]);
      expect(await store.apply("n1", 2, [item("r", 4, 4)])).to.deep.equal([{ status: "ok", head: 4 }]);
      expect(store.record("r")).to.include({ epoch: 2, head: 4, headId: "id-4" });
      expect(await store.apply("n1", 3, [item("r", 6, 6)])).to.deep.equal([{ status: "behind", head: 4 }]);
      expect(store.record("r")?.epoch).to.equal(2);
    });

    it("tells a copy of another history apart (same seq, other message) and resets it on request", async () => {
      await store.apply("n1", 1, [item("r", 0, 4)]);
      const other = item("r", 4, 5, { afterId: "someone-else", afterTs: 77 });
      expect(await store.apply("n2", 2, [other])).to.deep.equal([{ status: "diverged", head: 4 }]);
      expect(store.record("r")).to.include({ owner: "n1", epoch: 1 });
      // The owner resends from its checkpoint with reset: the copy is replaced.
      const reset = { room: "r", checkpointed: 2, after: 2, afterId: "", afterTs: 0, messages: [msg("r", 3, "x3")], reset: true };
      expect(await store.apply("n2", 2, [reset])).to.deep.equal([{ status: "ok", head: 3 }]);
      expect(store.messages("r", 0, 10).map((m) => m.id)).to.deep.equal(["x3"]);
      expect(store.record("r")).to.include({ owner: "n2", epoch: 2, head: 3, headId: "x3" });
    });

    it("refuses an older epoch, or another owner at the same epoch (a deposed owner cannot write)", async () => {
      await store.apply("n1", 5, [item("r", 0, 2)]);
      expect(await store.apply("n1", 4, [item("r", 2, 3)])).to.deep.equal([{ status: "stale", head: 2 }]);
      expect(await store.apply("n9", 5, [item("r", 2, 3)])).to.deep.equal([{ status: "stale", head: 2 }]);
      expect(seqs("r")).to.deep.equal([1, 2]);
      // A newer owner at a newer epoch continues the copy (after a failover, say).
      expect(await store.apply("n2", 6, [item("r", 2, 3)])).to.deep.equal([{ status: "ok", head: 3 }]);
    });

    it("decides the items of one call in order, rooms independently", async () => {
      const out = await store.apply("n1", 1, [item("a", 0, 2), item("b", 5, 6), item("a", 2, 3)]);
      expect(out).to.deep.equal([
        { status: "ok", head: 2 },
        { status: "behind", head: 0 },
        { status: "ok", head: 3 },
      ]);
      expect(store.rooms()).to.deep.equal(["a"]);
    });

    it("rejects a malformed item (seqs with a hole) and changes nothing", async () => {
      const full = item("r", 0, 3);
      const bad = { ...full, messages: full.messages.filter((m) => m.seq !== 2) };
      const err = await store.apply("n1", 1, [item("s", 0, 1), bad]).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).to.match(/expected seq 2/);
      expect(store.record("r")).to.equal(undefined);
      expect(store.record("s")).to.equal(undefined);
    });

    it("drops a room's copy", async () => {
      await store.apply("n1", 1, [item("r", 0, 2), item("s", 0, 1)]);
      await store.drop("r");
      await store.settled();
      expect(store.record("r")).to.equal(undefined);
      expect(seqs("r")).to.deep.equal([]);
      expect(store.rooms()).to.deep.equal(["s"]);
    });

    it("keeps the copy and its records across a reopen", async function () {
      if (reopen === undefined) return this.skip();
      expect(await store.apply("n1", 7, [item("r", 1, 3, { checkpointed: 1, afterId: "" })])).to.deep.equal([{ status: "ok", head: 3 }]);
      close?.();
      store = reopen();
      expect(store.record("r")).to.deep.equal({ room: "r", owner: "n1", epoch: 7, head: 3, checkpointed: 1, headId: "id-3", headTs: 1003 });
      expect(seqs("r")).to.deep.equal([2, 3]);
      expect(await store.apply("n1", 7, [item("r", 3, 4)])).to.deep.equal([{ status: "ok", head: 4 }]);
    });
  });
}
