import { expect } from "chai";
import { Membership } from "../../node/membership.js";
import { homeOf, mapFromPeers, Ring, type ClusterMap } from "../../shards/index.js";

function mapOf(ids: string[], epoch = 1): ClusterMap {
  return { epoch, nodes: ids.map((id, i) => ({ id, grpc: `127.0.0.1:${9080 + i}`, http: "", region: "local", state: "active" })) };
}

describe("ring", () => {
  it("gives every node the same owner for a room from the same map, whatever the node order", () => {
    const a = new Ring(mapOf(["n1", "n2", "n3"]));
    const b = new Ring(mapOf(["n3", "n1", "n2"]));
    for (let i = 0; i < 1000; i++) expect(a.owner(`room-${i}`)).to.equal(b.owner(`room-${i}`));
  });

  it("routes rooms named like Object.prototype's properties like any other, and they break no later lookup", () => {
    // hashring's own cache kept entries in a plain object: "constructor" found Object, corrupted the cache's
    // list, and every later lookup of a new room threw (a client could stop a node routing new rooms).
    const ring = new Ring({ ...mapOf(["n1", "n2", "n3"]), homes: { pinned: "local" } });
    const fresh = () => new Ring(mapOf(["n1", "n2", "n3"]));
    for (const name of ["constructor", "hasownproperty", "tostring", "valueof", "isprototypeof"]) {
      expect(ring.owner(name), name).to.be.oneOf(["n1", "n2", "n3"]);
      expect(ring.region(name), name).to.equal("local");
    }
    for (let i = 0; i < 200; i++) expect(ring.owner(`after-${i}`), `after-${i}`).to.equal(fresh().owner(`after-${i}`));
    expect((Object as unknown as { value?: unknown }).value, "nothing written to the global Object").to.equal(undefined);
  });

  it("pins only the rooms the map names (own properties of homes), across two regions", () => {
    const map: ClusterMap = {
      epoch: 1,
      nodes: ["a1", "a2", "b1", "b2"].map((id, i) => ({ id, grpc: `127.0.0.1:${9080 + i}`, http: "", region: id.startsWith("a") ? "ra" : "rb", state: "active" })),
      homes: { "pinned-room": "rb" },
    };
    const ring = new Ring(map);
    expect(ring.region("pinned-room")).to.equal("rb");
    expect(homeOf(map, "constructor")).to.equal(undefined);
    expect(homeOf(map, "pinned-room")).to.equal("rb");
    expect(ring.region("constructor")).to.equal(new Ring({ ...map, homes: {} }).region("constructor"));
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

describe("membership: which map changes can give a node rooms", () => {
  // Checked against the rings themselves: whenever a node gained a room, mayHaveGained must have said so.
  const gainedAny = (before: ClusterMap, after: ClusterMap, node: string) => {
    const a = new Ring(before);
    const b = new Ring(after);
    for (let i = 0; i < 5000; i++) if (a.owner(`r${i}`) !== node && b.owner(`r${i}`) === node) return true;
    return false;
  };
  const cases: [string, ClusterMap, ClusterMap][] = [
    ["a node joins", mapOf(["n1", "n2", "n3"]), mapOf(["n1", "n2", "n3", "n4"], 2)],
    ["a node leaves", mapOf(["n1", "n2", "n3", "n4"]), mapOf(["n1", "n2", "n3"], 2)],
    ["a room is pinned", mapOf(["n1", "n2", "n3"]), { ...mapOf(["n1", "n2", "n3"], 2), homes: { "r7": "local" } }],
  ];
  for (const [name, before, after] of cases) {
    it(`${name}: says so for every node that gained rooms`, () => {
      for (const node of ["n1", "n2", "n3", "n4"]) {
        const m = new Membership(node, before);
        m.update(after);
        if (gainedAny(before, after, node)) expect(m.mayHaveGained(node), `${node} gained rooms`).to.equal(true);
      }
    });
  }
  it("a node joining gives only the joiner rooms: the others need not list the store", () => {
    const m = new Membership("n1", mapOf(["n1", "n2", "n3"]));
    m.update(mapOf(["n1", "n2", "n3", "n4"], 2));
    expect(m.mayHaveGained("n1")).to.equal(false);
    expect(m.mayHaveGained("n4")).to.equal(true);
    m.update(mapOf(["n1", "n2", "n4"], 3));
    expect(m.mayHaveGained("n1")).to.equal(true);
  });
});

describe("membership: refreshing the map", () => {
  it("callers during a read share the next read, which starts after theirs began; failures reach every caller", async () => {
    let reads = 0;
    let epoch = 1;
    const gates: (() => void)[] = [];
    const source = () => {
      reads++;
      const answer = epoch;
      return new Promise<ClusterMap>((resolve, reject) => gates.push(() => (answer < 0 ? reject(new Error("store down")) : resolve(mapOf(["n1", "n2"], answer)))));
    };
    const m = new Membership("n1", mapOf(["n1"]), source);
    const first = m.refresh();
    epoch = 2; // a change the first read cannot have seen
    const waiting = Array.from({ length: 50 }, () => m.refresh());
    expect(reads).to.equal(1);
    gates.shift()!();
    await first;
    expect(m.epoch).to.equal(1);
    await new Promise((r) => setImmediate(r));
    expect(reads, "one more read for all 50 callers").to.equal(2);
    gates.shift()!();
    await Promise.all(waiting);
    expect(m.epoch, "the callers' read saw the change").to.equal(2);
    epoch = -1;
    const failing = [m.refresh(), m.refresh()];
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
    gates.shift()!();
    for (const p of failing) expect(await p.then(() => "resolved", (e: Error) => e.message)).to.equal("store down");
    epoch = 3;
    const after = m.refresh();
    gates.shift()!();
    await after;
    expect(m.epoch, "a failed read does not block later ones").to.equal(3);
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
