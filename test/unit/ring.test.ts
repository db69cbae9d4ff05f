import { expect } from "chai";
import { mapFromPeers, Ring, type ClusterMap } from "../../shards/index.js";

function mapOf(ids: string[], epoch = 1): ClusterMap {
  return { epoch, nodes: ids.map((id, i) => ({ id, grpc: `127.0.0.1:${9080 + i}`, http: "", region: "local", state: "active" })) };
}

describe("ring", () => {
  it("gives every node the same owner for a room from the same map, whatever the node order", () => {
    const a = new Ring(mapOf(["n1", "n2", "n3"]));
    const b = new Ring(mapOf(["n3", "n1", "n2"]));
    for (let i = 0; i < 1000; i++) expect(a.owner(`room-${i}`)).to.equal(b.owner(`room-${i}`));
  });

  it("spreads rooms within 15% of even over three nodes", () => {
    const ring = new Ring(mapOf(["n1", "n2", "n3"]));
    const counts = new Map<string, number>();
    for (let i = 0; i < 30_000; i++) {
      const owner = ring.owner(`r${i}`)!;
      counts.set(owner, (counts.get(owner) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).to.deep.equal(["n1", "n2", "n3"]);
    for (const c of counts.values()) expect(c / 10_000).to.be.within(0.85, 1.15);
  });

  it("moves only the rooms that the new node takes when a node joins", () => {
    const before = new Ring(mapOf(["n1", "n2", "n3"]));
    const after = new Ring(mapOf(["n1", "n2", "n3", "n4"], 2));
    let moved = 0;
    for (let i = 0; i < 10_000; i++) {
      const o1 = before.owner(`r${i}`);
      const o2 = after.owner(`r${i}`);
      if (o1 !== o2) {
        moved++;
        expect(o2).to.equal("n4");
      }
    }
    expect(moved / 10_000).to.be.within(0.18, 0.32);
  });

  it("ignores nodes that are joining or down, and names successors", () => {
    const map: ClusterMap = {
      epoch: 3,
      nodes: [
        { id: "n1", grpc: "127.0.0.1:1", http: "", region: "local", state: "active" },
        { id: "n2", grpc: "127.0.0.1:2", http: "", region: "local", state: "down" },
        { id: "n3", grpc: "127.0.0.1:3", http: "", region: "local", state: "joining" },
      ],
    };
    const ring = new Ring(map);
    expect(ring.nodeIds).to.deep.equal(["n1"]);
    expect(ring.owner("anything")).to.equal("n1");
    expect(new Ring(mapOf(["a", "b", "c"])).successors("room", 2)).to.have.length(2);
    expect(new Ring({ epoch: 1, nodes: [] }).owner("x")).to.equal(undefined);
  });
});

describe("cluster map from --peers", () => {
  it("parses id=host:port lists at epoch 1", () => {
    const map = mapFromPeers("n1=127.0.0.1:9080, n2=127.0.0.1:9081");
    expect(map.epoch).to.equal(1);
    expect(map.nodes.map((n) => [n.id, n.grpc, n.state])).to.deep.equal([
      ["n1", "127.0.0.1:9080", "active"],
      ["n2", "127.0.0.1:9081", "active"],
    ]);
  });

  for (const bad of ["", "n1", "n1=", "=127.0.0.1:1", "n1=host", "n1=h:0", "n1=h:70000", "n1=h:1,n1=h:2", "bad id=h:1"]) {
    it(`rejects ${JSON.stringify(bad)} with bad_request`, () => {
      expect(() => mapFromPeers(bad)).to.throw().with.property("code", "bad_request");
    });
  }
});
