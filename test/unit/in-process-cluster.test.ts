/**
 * Fast in-process cluster: several nodes' owners and routers wired through an in-memory transport (the test
 * double for gRPC, which test/cluster exercises for real). Checks routing, forwarding, fencing by map epoch,
 * idempotency under races and commit-failure handling.
 */
import { expect } from "chai";
import { pino } from "pino";
import { Membership } from "../../node/membership.js";
import { LocalOwner } from "../../node/owner.js";
import { Router, type Peers } from "../../node/router.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CheckpointChain,
  Checkpointer,
  DirectoryObjectStore,
  MemoryRoomStore,
  OwnedRooms,
  RoomRebuilder,
  type ClusterMap,
  type RoomEvent,
} from "../../shards/index.js";

const log = pino({ level: "silent" });
const objectDirs: string[] = [];
after(() => {
  for (const d of objectDirs) rmSync(d, { recursive: true, force: true });
});

function mapOf(ids: string[], epoch: number): ClusterMap {
  return { epoch, nodes: ids.map((id) => ({ id, grpc: `mem:${id}`, http: "", region: "local", state: "active" as const })) };
}

interface TestNode {
  id: string;
  membership: Membership;
  store: MemoryRoomStore;
  owner: LocalOwner;
  router: Router;
}

/** Builds nodes that reach each other through an in-memory Peers; `latest` is the map source of truth. */
function cluster(ids: string[], initial: ClusterMap, latest: () => ClusterMap = () => initial): Map<string, TestNode> {
  const nodes = new Map<string, TestNode>();
  const peers: Peers = {
    get(id) {
      const node = nodes.get(id);
      if (node === undefined) throw new Error(`no node ${id}`);
      return node.owner;
    },
  };
  const objectDir = mkdtempSync(join(tmpdir(), "fractal-inproc-"));
  objectDirs.push(objectDir);
  const chain = new CheckpointChain(new DirectoryObjectStore(objectDir), 0);
  for (const id of ids) {
    const membership = new Membership(id, initial, async () => latest());
    const store = new MemoryRoomStore();
    const checkpointer = new Checkpointer({ store, chain, node: id, epoch: () => membership.epoch, intervalMs: 1000 });
    const durability = { rebuilder: new RoomRebuilder(store, chain), chain, checkpointer };
    const owner = new LocalOwner(id, membership, new OwnedRooms(store, (m) => checkpointer.committed(m)), durability);
    nodes.set(id, { id, membership, store, owner, router: new Router(id, membership, owner, peers, log) });
  }
  return nodes;
}

function roomOwnedBy(membership: Membership, node: string, prefix = "room"): string {
  for (let i = 0; ; i++) if (membership.ownerOf(`${prefix}-${i}`) === node) return `${prefix}-${i}`;
}

describe("in-process cluster (in-memory transport)", () => {
  it("forwards sends to the owner, which alone stores them with consecutive seqs", async () => {
    const nodes = cluster(["n1", "n2", "n3"], mapOf(["n1", "n2", "n3"], 1));
    const n1 = nodes.get("n1")!;
    const room = roomOwnedBy(n1.membership, "n2");
    const acks = await Promise.all(
      [...nodes.values()].flatMap((n) => [1, 2, 3].map((k) => n.router.send(room, `u-${n.id}`, `m${k}`, `hello ${k}`))),
    );
    expect(acks.map((a) => a.seq).sort((a, b) => a - b)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(nodes.get("n2")!.store.head(room)).to.equal(9);
    expect(nodes.get("n1")!.store.head(room)).to.equal(0);
    expect(nodes.get("n3")!.store.head(room)).to.equal(0);
  });

  it("returns the original seq for a retried or racing send with the same id", async () => {
    const nodes = cluster(["n1", "n2"], mapOf(["n1", "n2"], 1));
    const [a, b] = [nodes.get("n1")!, nodes.get("n2")!];
    const room = roomOwnedBy(a.membership, "n2");
    const racing = await Promise.all([a.router.send(room, "alice", "x", "hi"), b.router.send(room, "alice", "x", "hi")]);
    expect(racing[0]).to.deep.equal(racing[1]);
    const retry = await a.router.send(room, "alice", "x", "hi");
    expect(retry).to.deep.equal(racing[0]);
    const other = await a.router.send(room, "bob", "x", "hi");
    expect(other.seq).to.equal(2);
    expect(b.store.head(room)).to.equal(2);
  });

  it("refuses writes on a node that does not own the room (wrong_owner) and the sender re-routes", async () => {
    const newer = mapOf(["n1", "n2", "n3"], 2);
    const nodes = cluster(["n1", "n2", "n3"], mapOf(["n1", "n2"], 1), () => newer);
    for (const id of ["n2", "n3"]) nodes.get(id)!.membership.update(newer);
    const n1 = nodes.get("n1")!;
    // A room that n1's stale map gives to n2 but the newer map gives to n3.
    let room = "";
    for (let i = 0; room === ""; i++) {
      if (n1.membership.ownerOf(`r${i}`) === "n2" && nodes.get("n2")!.membership.ownerOf(`r${i}`) === "n3") room = `r${i}`;
    }
    let refused: unknown;
    await nodes
      .get("n2")!
      .owner.send({ node: "n1", epoch: 1 }, room, "alice", "1", "hi")
      .catch((e: unknown) => (refused = e));
    expect(refused).to.have.property("code", "wrong_owner");
    expect(refused).to.have.property("epoch", 2);
    const ack = await n1.router.send(room, "alice", "1", "hi");
    expect(ack.seq).to.equal(1);
    expect(n1.membership.epoch).to.equal(2);
    expect(nodes.get("n3")!.store.head(room)).to.equal(1);
    expect(nodes.get("n2")!.store.head(room)).to.equal(0);
  });

  it("delivers a room's events to a follower on another node, head first, in order", async () => {
    const nodes = cluster(["n1", "n2"], mapOf(["n1", "n2"], 1));
    const [a, b] = [nodes.get("n1")!, nodes.get("n2")!];
    const room = roomOwnedBy(a.membership, "n2");
    await b.router.send(room, "bob", "early", "before follow");
    const events: RoomEvent[] = [];
    a.router.follow(room, (e) => events.push(e));
    await a.router.join(room, "alice");
    await a.router.send(room, "alice", "1", "one");
    await b.router.send(room, "bob", "2", "two");
    await a.router.typing(room, "alice");
    a.router.unfollow(room);
    await b.router.send(room, "bob", "3", "unseen");
    expect(events.map((e) => (e.type === "message" ? `m${e.message.seq}` : e.type === "head" ? `h${e.seq}` : e.type))).to.deep.equal([
      "h1",
      "presence",
      "m2",
      "m3",
      "typing",
    ]);
  });

  it("counts presence per node and drops a node's users when its stream goes away", async () => {
    const nodes = cluster(["n1", "n2"], mapOf(["n1", "n2"], 1));
    const [a, b] = [nodes.get("n1")!, nodes.get("n2")!];
    const room = roomOwnedBy(a.membership, "n2");
    expect((await a.router.join(room, "alice")).members).to.deep.equal(["alice"]);
    await a.router.join(room, "alice");
    expect((await b.router.join(room, "bob")).members).to.deep.equal(["alice", "bob"]);
    await a.router.leave(room, "alice");
    expect((await a.router.info(room)).members).to.deep.equal(["alice", "bob"]);
    b.owner.forgetNode("n1");
    expect((await a.router.info(room)).members).to.deep.equal(["bob"]);
  });

  it("fails every send of a batch that could not be committed, then reuses their seqs", async () => {
    const nodes = cluster(["n1"], mapOf(["n1"], 1));
    const n1 = nodes.get("n1")!;
    n1.store.failNextAppend = true;
    const results = await Promise.allSettled([n1.router.send("r", "a", "1", "x"), n1.router.send("r", "a", "2", "y")]);
    expect(results.map((r) => r.status)).to.deep.equal(["rejected", "rejected"]);
    expect((results[0] as PromiseRejectedResult).reason).to.have.property("code", "unavailable");
    const retry = await n1.router.send("r", "a", "1", "x");
    expect(retry.seq).to.equal(1);
    expect((await n1.router.send("r", "a", "2", "y")).seq).to.equal(2);
    expect(n1.store.head("r")).to.equal(2);
  });

  it("refuses new sends while stopping, with a retryable code", async () => {
    const nodes = cluster(["n1"], mapOf(["n1"], 1));
    const n1 = nodes.get("n1")!;
    n1.owner.accepting = false;
    let refused: unknown;
    await n1.router.send("r", "a", "1", "x").catch((e: unknown) => (refused = e));
    expect(refused).to.have.property("code", "unavailable");
    expect(refused).to.have.property("retryable", true);
  });
});
