import { expect } from "chai";
import { CommitQueue, MemoryRoomStore, type StoredMessage } from "../../shards/index.js";

/** A store whose commits finish only when the test says so. */
class GatedStore extends MemoryRoomStore {
  readonly gates: (() => void)[] = [];
  appendAsync(messages: readonly StoredMessage[]): Promise<void> {
    return new Promise((resolve) => this.gates.push(() => resolve(this.append(messages))));
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
});
