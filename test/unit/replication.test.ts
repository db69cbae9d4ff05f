/**
 * Replicated durability in-process: owners' Replicators talking to ReplicaServices over an in-memory transport
 * (the test double for the Replicate gRPC call, which test/cluster/replicated.test.ts exercises for real), with
 * a switch that makes a node unreachable. Checks that nothing is acknowledged, published or served before the
 * replica holds it, that retries wait again, that a map change backfills the new replica, that bad peer input
 * is refused per room, and that a failover continues from a trusted copy.
 */
import { expect } from "chai";
import { pino } from "pino";
import { Membership } from "../../node/membership.js";
import { ReplicaFailover } from "../../node/replica-failover.js";
import { ReplicaService, type ReplicaRoomRequest } from "../../node/replica-service.js";
import { ReplicaRecovery } from "../../node/replica-recovery.js";
import type { Caller } from "../../node/room-api.js";
import { Replicator, type ReplicaPeer } from "../../node/replicator.js";
import {
  FractalError,
  MemoryReplicaStore,
  MemoryRoomStore,
  OwnedRooms,
  type ClusterMap,
  type NodeState,
  type RoomEvent,
} from "../../shards/index.js";

const log = pino({ level: "silent" });

function mapAt(epoch: number, states: Record<string, NodeState>): ClusterMap {
  return { epoch, nodes: Object.entries(states).map(([id, state]) => ({ id, grpc: `mem:${id}`, http: "", region: "local", state })) };
}

interface Node {
  readonly id: string;
  readonly membership: Membership;
  readonly store: MemoryRoomStore;
  readonly replicas: MemoryReplicaStore;
  readonly replicator: Replicator;
  readonly rooms: OwnedRooms;
  readonly service: ReplicaService;
}

/** Nodes n1..n3 wired in memory; `down` holds the nodes whose Replicate calls fail like a dead peer's. */
function cluster(initial: ClusterMap) {
  let latest = initial;
  const down = new Set<string>();
  const nodes = new Map<string, Node>();
  const calls: { from: string; to: string; rooms: number; messages: number }[] = [];
  const peerOf = (from: string, to: string): ReplicaPeer => ({
    async replicate(caller, items) {
      await new Promise((r) => setImmediate(r));
      if (down.has(to)) throw new FractalError("unavailable", `node ${to} is unreachable`);
      calls.push({ from, to, rooms: items.length, messages: items.reduce((n, i) => n + i.messages.length, 0) });
      // Through the wire shape (room left empty), as the gRPC server hands it to the service.
      const wire: ReplicaRoomRequest[] = items.map((i) => ({ ...i, messages: i.messages.map((m) => ({ ...m, room: "" })) }));
      return nodes.get(to)!.service.replicate(caller, wire);
    },
  });
  for (const id of initial.nodes.map((n) => n.id)) {
    const membership = new Membership(id, initial, async () => latest);
    const store = new MemoryRoomStore();
    const replicas = new MemoryReplicaStore();
    let rooms: OwnedRooms | undefined;
    const replicator = new Replicator({
      self: id,
      membership,
      store,
      peers: { get: (to) => peerOf(id, to) },
      log,
      timeoutMs: 1000,
      publish: (m) => rooms?.peek(m.room)?.committed(m),
    });
    rooms = new OwnedRooms(store, () => {}, replicator);
    membership.onChange(() => replicator.resync());
    nodes.set(id, { id, membership, store, replicas, replicator, rooms, service: new ReplicaService({ self: id, membership, store: replicas }) });
  }
  return {
    nodes,
    down,
    calls,
    /** Publishes a new map and lets every node adopt it. */
    async change(map: ClusterMap) {
      latest = map;
      for (const n of nodes.values()) await n.membership.refresh();
    },
  };
}

const ALL = { n1: "active", n2: "active", n3: "active" } as const;

function roomOf(membership: Membership, owner: string, prefix = "room"): { room: string; replica: string } {
  for (let i = 0; ; i++) {
    const [o, r] = membership.ring.successors(`${prefix}-${i}`, 2);
    if (o === owner) return { room: `${prefix}-${i}`, replica: r! };
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("replicated durability (in-process, in-memory transport)", () => {
  it("acknowledges and publishes a message only once the room's replica holds it; batches per replica node", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    const actor = n1.rooms.get(room);
    const events: RoomEvent[] = [];
    actor.subscribe("n2", (e) => events.push(e));
    const acks = await Promise.all([1, 2, 3].map((k) => actor.send({ user: "alice", id: `m${k}`, text: `hello ${k}` })));
    expect(acks.map((a) => a.seq)).to.deep.equal([1, 2, 3]);
    const copy = c.nodes.get(replica)!.replicas;
    expect(copy.record(room)).to.include({ owner: "n1", epoch: 1, head: 3 });
    expect(copy.messages(room, 0, 10).map((m) => m.id)).to.deep.equal(["m1", "m2", "m3"]);
    expect(events.filter((e) => e.type === "message").map((e) => (e.type === "message" ? e.message.seq : 0))).to.deep.equal([1, 2, 3]);
    // One group commit, one call to the replica for it.
    expect(c.calls.filter((x) => x.to === replica)).to.have.length(1);
  });

  it("replica unreachable: the send is refused (unavailable), nothing is shown; the retry waits again and gets the same seq", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    const actor = n1.rooms.get(room);
    await actor.send({ user: "alice", id: "first", text: "ok" });
    c.down.add(replica);
    const err = await actor.send({ user: "alice", id: "lost?", text: "stored locally only" }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(FractalError).with.property("code", "unavailable");
    expect(n1.store.head(room), "committed locally").to.equal(2);
    expect(actor.head, "but not shown").to.equal(1);
    expect(actor.history({ after: 0, limit: 10 }).map((m) => m.seq)).to.deep.equal([1]);
    // The retry (same id) finds the committed message but must wait for the replica like the original.
    const retry = await actor.send({ user: "alice", id: "lost?", text: "stored locally only" }).catch((e: unknown) => e);
    expect(retry).to.be.instanceOf(FractalError).with.property("code", "unavailable");
    c.down.delete(replica);
    const ok = await actor.send({ user: "alice", id: "lost?", text: "stored locally only" });
    expect(ok.seq).to.equal(2);
    expect(actor.head).to.equal(2);
    expect(c.nodes.get(replica)!.replicas.record(room)?.head).to.equal(2);
  });

  it("after the map changes the owner backfills the new replica, and sends waiting for the dead one go through", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    const other = ["n2", "n3"].find((n) => n !== replica)!;
    const actor = n1.rooms.get(room);
    for (let k = 1; k <= 5; k++) await actor.send({ user: "alice", id: `m${k}`, text: `t${k}` });
    c.down.add(replica);
    const refused = await actor.send({ user: "alice", id: "m6", text: "t6" }).catch((e: unknown) => e);
    expect(refused).to.have.property("code", "unavailable");
    // The dead replica is marked down: the room's replica is now the other node, which has nothing yet.
    await c.change(mapAt(2, { ...ALL, [replica]: "down" }));
    expect(n1.membership.ring.successors(room, 2)).to.deep.equal(["n1", other]);
    await actor.send({ user: "alice", id: "m6", text: "t6" });
    const copy = c.nodes.get(other)!.replicas;
    expect(copy.record(room)).to.include({ owner: "n1", epoch: 2, head: 6 });
    expect(copy.messages(room, 0, 100).map((m) => m.seq)).to.deep.equal([1, 2, 3, 4, 5, 6]);
  });

  it("an unchanged replica is told it is in sync at the new epoch (one call per replica node for all rooms)", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const owned = [0, 1, 2, 3, 4].map((i) => roomOf(n1.membership, "n1", `sync${i}`));
    for (const { room } of owned) await n1.rooms.get(room).send({ user: "u", id: "x", text: "t" });
    const before = c.calls.length;
    await c.change(mapAt(2, { ...ALL, n4: "joining" }));
    for (let i = 0; i < 20; i++) await tick();
    for (const { room, replica } of owned) expect(c.nodes.get(replica)!.replicas.record(room)?.epoch, room).to.equal(2);
    const syncCalls = c.calls.slice(before).filter((x) => x.from === "n1");
    expect(syncCalls.every((x) => x.messages === 0)).to.equal(true);
    expect(syncCalls.length).to.equal(new Set(owned.map((o) => o.replica)).size);
  });

  it("refuses bad peer input per room, never crashing, and a caller that does not own the room", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    const service = c.nodes.get(replica)!.service;
    const good: ReplicaRoomRequest = { room, checkpointed: 0, after: 0, afterId: "", afterTs: 0, messages: [{ seq: 1, id: "a", user: "u", text: "t", ts: 5 }], reset: false };
    const answers = await service.replicate({ node: "n1", epoch: 1 }, [
      { ...good, room: "BAD ROOM" },
      { ...good, messages: [{ seq: 2, id: "a", user: "u", text: "t", ts: 5 }] },
      { ...good, messages: [{ seq: 1, id: "", user: "u", text: "t", ts: 5 }] },
      { ...good, messages: [{ seq: 1, id: "a", user: "bad user!", text: "t", ts: 5 }] },
      { ...good, after: -1 },
      { ...good, after: Number.MAX_SAFE_INTEGER + 10 },
      { ...good, messages: [{ seq: 1, id: "a", user: "u", text: "t", ts: Number.NaN }] },
      { ...good, messages: "nope" as unknown as ReplicaRoomRequest["messages"] },
      good,
    ]);
    expect(answers.slice(0, 8).map((a) => a.status)).to.deep.equal(Array(8).fill("bad_request"));
    expect(answers[8]).to.include({ status: "ok", head: 1 });
    // Not the owner under the replica's map: a deposed owner cannot write the copy.
    const other = ["n2", "n3"].find((n) => n !== replica)!;
    const [refused] = await service.replicate({ node: other, epoch: 1 }, [{ ...good, after: 1, messages: [] }]);
    expect(refused).to.include({ status: "wrong_owner", epoch: 1 });
    // Oversized calls are refused whole, with bad_request.
    const many = Array.from({ length: 5001 }, () => good);
    const err = await service.replicate({ node: "n1", epoch: 1 }, many).catch((e: unknown) => e);
    expect(err).to.have.property("code", "bad_request");
  });

  it("reads a copy back for the room's owner only (lost disk), refusing garbage and other callers", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1", "copy");
    for (let i = 1; i <= 5; i++) await n1.rooms.get(room).send({ user: "u", id: `m${i}`, text: `t${i}` });
    const service = c.nodes.get(replica)!.service;
    const copy = await service.copy({ node: "n1", epoch: 1 }, room, 2, 100);
    expect(copy).to.include({ found: true, owner: "n1", epoch: 1, head: 5 });
    expect(copy.messages.map((m) => m.seq)).to.deep.equal([3, 4, 5]);
    expect((await service.copy({ node: "n1", epoch: 1 }, "room-without-copy", 0, 10)).found).to.equal(false);
    const other = ["n2", "n3"].find((n) => n !== replica)!;
    for (const [caller, r, after] of [
      [{ node: other, epoch: 1 }, room, 0],
      [{ node: "n1", epoch: 1 }, "BAD ROOM", 0],
      [{ node: "n1", epoch: 1 }, room, -1],
      [{ node: "n1", epoch: 1 }, room, Number.NaN],
      [{ node: "bad node!", epoch: 1 }, room, 0],
      [{ node: "n1", epoch: 0 }, room, 0],
    ] as const) {
      const err = await service.copy(caller, r, after, 10).catch((e: unknown) => e);
      expect(err, JSON.stringify([caller, r, after])).to.be.instanceOf(FractalError);
      expect((err as FractalError).code).to.be.oneOf(["bad_request", "wrong_owner"]);
    }
  });

  it("lost disk: the owner continues from a trusted copy, and skips the backlog for an untrusted one", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1", "lost");
    for (let i = 1; i <= 6; i++) await n1.rooms.get(room).send({ user: "u", id: `m${i}`, text: `t${i}` });
    // The restarted owner's store: the chain restored up to seq 2 (the copy was told nothing was checkpointed).
    const fresh = new MemoryRoomStore();
    fresh.append(n1.store.history(room, { after: 0, limit: 2 }));
    const peers = { get: (to: string) => ({ replicaCopy: (caller: Caller, r: string, after: number, limit: number) => c.nodes.get(to)!.service.copy(caller, r, after, limit) }) };
    const recovery = (wasReplicated: boolean, store = fresh) => new ReplicaRecovery({ self: "n1", membership: n1.membership, store, peers, log, wasReplicated });
    expect(await recovery(false).continueAfterRestore(room, 2), "previous run acknowledged alone").to.equal(undefined);
    expect(await recovery(true).continueAfterRestore(room, 2)).to.equal(6);
    expect(fresh.history(room, { after: 0, limit: 10 }).map((m) => m.id)).to.deep.equal(["m1", "m2", "m3", "m4", "m5", "m6"]);
    // A chain of another history at the junction: not trusted.
    const other = new MemoryRoomStore();
    other.append([{ room, seq: 1, id: "m1", user: "u", text: "t1", ts: 1 }, { room, seq: 2, id: "not-m2", user: "u", text: "x", ts: 2 }]);
    expect(await recovery(true, other).continueAfterRestore(room, 2)).to.equal(undefined);
    // The owner comes back to a newer map than the copy's record (another replica may have been asked meanwhile).
    const newer = mapAt(2, { ...ALL, n4: "joining" });
    const later = new MemoryRoomStore();
    later.append(n1.store.history(room, { after: 0, limit: 2 }));
    const atEpoch2 = new ReplicaRecovery({ self: "n1", membership: new Membership("n1", newer, async () => newer), store: later, peers, log, wasReplicated: true });
    expect(c.nodes.get(replica)!.replicas.record(room)?.epoch).to.equal(1);
    expect(await atEpoch2.continueAfterRestore(room, 2)).to.equal(undefined);
    expect(later.head(room)).to.equal(2);
  });

  it("failover: the replica becomes the owner and continues after its copy (nothing acknowledged lost, no seq skipped)", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    const actor = n1.rooms.get(room);
    for (let k = 1; k <= 7; k++) await actor.send({ user: "alice", id: `m${k}`, text: `t${k}` });
    // A commit the replica never confirmed (never acknowledged, never shown).
    c.down.add(replica);
    await actor.send({ user: "alice", id: "unacked", text: "x" }).catch(() => undefined);
    c.down.delete(replica);
    // n1 dies; the map marks it down; the replica owns the room now and takes it over from its copy.
    c.down.add("n1");
    await c.change(mapAt(2, { ...ALL, n1: "down" }));
    const b = c.nodes.get(replica)!;
    expect(b.membership.ownerOf(room)).to.equal(replica);
    const failover = new ReplicaFailover({ self: replica, membership: b.membership, replicas: b.replicas, store: b.store, log });
    const change = b.membership.lastOwnerChange(room)!;
    expect(change).to.include({ from: "n1", to: replica, epoch: 2 });
    const head = await failover.continueFromCopy(room, "n1", change.epoch);
    expect(head).to.equal(7);
    expect(b.store.history(room, { after: 0, limit: 100 }).map((m) => m.id)).to.deep.equal(["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    expect(b.replicas.record(room), "the used copy is dropped").to.equal(undefined);
    // A second failover attempt finds no copy: it falls back to the backlog skip.
    expect(await failover.continueFromCopy(room, "n1", change.epoch)).to.equal(undefined);
  });

  it("failover: a copy is not used when the dead owner's last run acknowledged alone (--durability local)", async () => {
    const c = cluster(mapAt(1, ALL));
    const n1 = c.nodes.get("n1")!;
    const { room, replica } = roomOf(n1.membership, "n1");
    for (let k = 1; k <= 3; k++) await n1.rooms.get(room).send({ user: "alice", id: `m${k}`, text: `t${k}` });
    c.down.add("n1");
    await c.change(mapAt(2, { ...ALL, n1: "down" }));
    const b = c.nodes.get(replica)!;
    const failover = new ReplicaFailover({ self: replica, membership: b.membership, replicas: b.replicas, store: b.store, log, replicatedOwner: async () => false });
    expect(await failover.continueFromCopy(room, "n1", 2)).to.equal(undefined);
    expect(b.store.head(room)).to.equal(0);
  });
});
