/**
 * The trust rule of replicated failover (shards/replica-trust.ts): a replica copy stands in for a dead owner
 * only if it is sure to hold everything that owner acknowledged.
 */
import { expect } from "chai";
import { replicaDistrust, replicaTrusted, Ring, type ClusterMap, type NodeState } from "../../shards/index.js";

function mapAt(epoch: number, states: Record<string, NodeState>): ClusterMap {
  return { epoch, nodes: Object.entries(states).map(([id, state]) => ({ id, grpc: `h:${id}`, http: "", region: "local", state })) };
}

const all = { n1: "active", n2: "active", n3: "active" } as const;
const ring4 = new Ring(mapAt(4, all));
const room = "general";
const [A, B, C] = ring4.successors(room, 3) as [string, string, string];

/** The rings this node has seen, by epoch. */
function seen(...maps: ClusterMap[]): (epoch: number) => Ring | undefined {
  const rings = new Map(maps.map((m) => [m.epoch, new Ring(m)]));
  return (epoch) => rings.get(epoch);
}

describe("replica trust rule", () => {
  it("trusts the copy the dead owner last synced in the last map in which it owned the room", () => {
    const ringAt = seen(mapAt(4, all), mapAt(5, { ...all, [A]: "down" }));
    expect(new Ring(mapAt(5, { ...all, [A]: "down" })).owner(room), "the replica becomes the owner").to.equal(B);
    expect(replicaTrusted({ room, dead: A, self: B, record: { owner: A, epoch: 4 }, lostAt: 5, ringAt })).to.equal(true);
  });

  it("trusts a copy synced earlier when every map since kept (dead owner, this node) as the room's pair", () => {
    // Epoch 5 only changed something else (a node joined): the owner had no other replica to acknowledge through.
    const ringAt = seen(mapAt(4, all), mapAt(5, { ...all, n4: "joining" }), mapAt(6, { ...all, n4: "joining", [A]: "down" }));
    expect(replicaTrusted({ room, dead: A, self: B, record: { owner: A, epoch: 4 }, lostAt: 6, ringAt })).to.equal(true);
  });

  it("does not trust a copy across a map this node never saw (it might have named another replica)", () => {
    const ringAt = seen(mapAt(4, all), mapAt(6, { ...all, [A]: "down" }));
    expect(replicaDistrust({ room, dead: A, self: B, record: { owner: A, epoch: 4 }, lostAt: 6, ringAt })).to.match(/epoch 5 .* not known/);
  });

  it("replica changed and changed back: a copy synced before the change is not trusted, one resynced after it is", () => {
    // Epoch 5: B is down, so the owner A acknowledges through C. Epoch 6: B is back on the ring (A resyncs it).
    // Epoch 7: A dies. B's copy from epoch 4 lacks what A acknowledged through C at epoch 5.
    const m5 = mapAt(5, { ...all, [B]: "down" });
    expect(new Ring(m5).successors(room, 2)).to.deep.equal([A, C]);
    const ringAt = seen(mapAt(4, all), m5, mapAt(6, all), mapAt(7, { ...all, [A]: "down" }));
    expect(replicaDistrust({ room, dead: A, self: B, record: { owner: A, epoch: 4 }, lostAt: 7, ringAt })).to.match(/at epoch 5 .* replica were/);
    expect(replicaTrusted({ room, dead: A, self: B, record: { owner: A, epoch: 6 }, lostAt: 7, ringAt })).to.equal(true);
  });

  it("does not trust a copy synced by another owner, at or after the loss, or no copy at all", () => {
    const ringAt = seen(mapAt(4, all), mapAt(5, { ...all, [A]: "down" }));
    expect(replicaDistrust({ room, dead: A, self: B, record: { owner: C, epoch: 4 }, lostAt: 5, ringAt })).to.match(/synced by/);
    expect(replicaDistrust({ room, dead: A, self: B, record: { owner: A, epoch: 5 }, lostAt: 5, ringAt })).to.match(/not before epoch 5/);
    expect(replicaDistrust({ room, dead: A, self: B, record: undefined, lostAt: 5, ringAt })).to.match(/no replica copy/);
  });

  it("does not trust a copy of a room the dead node owned again only later (another owner in between)", () => {
    // Epoch 5: A is down (B owns the room); epoch 6: A back and owning again; epoch 7: A dies again. A copy A
    // synced at epoch 4 says nothing about what A acknowledged at epoch 6.
    const ringAt = seen(mapAt(4, all), mapAt(5, { ...all, [A]: "down" }), mapAt(6, all), mapAt(7, { ...all, [A]: "down" }));
    expect(replicaTrusted({ room, dead: A, self: B, record: { owner: A, epoch: 4 }, lostAt: 7, ringAt })).to.equal(false);
  });
});
