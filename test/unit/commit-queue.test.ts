import { expect } from "chai";
import { CommitQueue, MemoryRoomStore, type StoredMessage } from "../../shards/index.js";

/** A store whose commits finish only when the test says so (each gate commits its batch then, or fails it). */
class GatedStore extends MemoryRoomStore {
  readonly gates: ((fail?: Error) => void)[] = [];
  appendAsync(messages: readonly StoredMessage[]): Promise<void> {
    return new Promise((resolve, reject) =>
      this.gates.push((fail) => {
        try {
          if (fail !== undefined) throw fail;
          resolve(this.append(messages));
        } catch (err) {
          reject(err);
        }
      }),
    );
  }
}

const msg = (room: string, seq: number) => ({ room, seq, id: `${room}-${seq}`, user: "u", text: "t" });
const turn = () => new Promise((r) => setImmediate(r));

describe("commit queue", () => {
  it("groups the sends of one turn into one commit, in order", async () => {
    const store = new GatedStore();
    const committed: number[] = [];
    const q = new CommitQueue(store, { committed: (m) => committed.push(m.length), failed: () => {} });
    const acks = [q.enqueue(msg("a", 1)), q.enqueue(msg("b", 1)), q.enqueue(msg("a", 2))];
    await turn();
    expect(store.gates).to.have.length(1);
    store.gates.shift()!();
    expect((await Promise.all(acks)).map((m) => `${m.room}${m.seq}`)).to.deep.equal(["a1", "b1", "a2"]);
    expect(committed).to.deep.equal([3]);
  });

  it("roomDrained waits for the room's own commits only, not for the whole node to go idle", async () => {
    const store = new GatedStore();
    const q = new CommitQueue(store, { committed: () => {}, failed: () => {} });
    void q.enqueue(msg("a", 1));
    void q.enqueue(msg("b", 1));
    await turn(); // batch 1 (a1, b1) is committing
    void q.enqueue(msg("b", 2)); // queued behind it
    let roomA = false;
    let roomB = false;
    let all = false;
    void q.roomDrained("a").then(() => (roomA = true));
    void q.roomDrained("b").then(() => (roomB = true));
    void q.drained().then(() => (all = true));
    expect(await q.roomDrained("c").then(() => true)).to.equal(true);
    store.gates.shift()!(); // batch 1 lands
    await turn();
    await turn();
    expect([roomA, roomB, all]).to.deep.equal([true, false, false]);
    // Sends that keep arriving for other rooms do not hold room a's drain (already resolved) nor b's.
    void q.enqueue(msg("c", 1));
    await turn();
    store.gates.shift()!(); // batch 2 (b2) lands; c1 is committing now
    await turn();
    await turn();
    expect([roomB, all]).to.deep.equal([true, false]);
    store.gates.shift()!();
    await turn();
    await turn();
    expect(all).to.equal(true);
  });

  it("hands each turn's sends to the store without waiting for the commit in progress, and settles them in order", async () => {
    const store = new GatedStore();
    const committed: string[] = [];
    const q = new CommitQueue(store, { committed: (m) => committed.push(m.map((x) => `${x.room}${x.seq}`).join(",")), failed: () => {} });
    const first = q.enqueue(msg("a", 1));
    await turn();
    const second = q.enqueue(msg("b", 1));
    await turn();
    expect(store.gates).to.have.length(2); // the second batch did not wait for the first
    const acked: string[] = [];
    void first.then(() => acked.push("a1"));
    void second.then(() => acked.push("b1"));
    store.gates[1]!(); // the store answers the second first...
    await turn();
    expect(committed).to.deep.equal([]); // ...which waits for the first
    store.gates[0]!();
    await turn();
    expect(committed).to.deep.equal(["a1", "b1"]);
    expect(acked).to.deep.equal(["a1", "b1"]);
  });

  it("a failed batch fails the later sends of its rooms, handed over or queued; other rooms' sends are not touched", async () => {
    const store = new GatedStore();
    const failedHook: string[][] = [];
    const q = new CommitQueue(store, { committed: () => {}, failed: (m) => failedHook.push(m.map((x) => `${x.room}${x.seq}`)) });
    const outcome = (p: Promise<unknown>) => p.then(() => "ok", () => "failed");
    const b1 = outcome(q.enqueue(msg("a", 1)));
    const b1b = outcome(q.enqueue(msg("b", 1)));
    await turn();
    const b2 = outcome(q.enqueue(msg("a", 2)));
    const b2c = outcome(q.enqueue(msg("c", 1)));
    await turn();
    const a3 = outcome(q.enqueue(msg("a", 3))); // still queued
    const d1 = outcome(q.enqueue(msg("d", 1)));
    store.gates[0]!(new Error("disk full"));
    await turn();
    expect(await Promise.all([b1, b1b, b2, a3])).to.deep.equal(["failed", "failed", "failed", "failed"]);
    expect(failedHook).to.deep.equal([["a1", "b1", "a2", "a3"]]);
    // The second batch reaches the store with a2 in it: the store refuses the gap, so c1 (same batch) fails too,
    // and only c1 is reported (a2 was already).
    store.gates[1]!();
    expect(await b2c).to.equal("failed");
    expect(failedHook).to.deep.equal([["a1", "b1", "a2", "a3"], ["c1"]]);
    await turn();
    store.gates[2]!(); // d1's batch
    expect(await d1).to.equal("ok");
    expect(store.head("d")).to.equal(1);
    expect(store.head("a")).to.equal(0);
  });
});
