/**
 * Replicated durability on real node processes (DESIGN.md "Durability", invariant 3): with
 * `--durability replicated` an owner acknowledges a send only once the room's replica (the next node on the
 * ring) holds it, so `kill -9` of the owner loses nothing acknowledged and the replica continues the room at
 * head + 1, without the checkpoint-backlog skip that `local` durability needs (run here too, for comparison).
 * A dead replica makes its rooms' sends `unavailable` until the map marks it down, then they go through.
 */
import Database from "better-sqlite3";
import { expect } from "chai";
import { readFileSync } from "node:fs";
import path from "node:path";
import { io, type Socket } from "socket.io-client";
import { Ring, type ClusterMap } from "../../shards/index.js";
import {
  admin,
  connect,
  emitAck,
  join,
  runAdmin,
  send,
  fullHistory,
  http,
  session,
  sleep,
  useCluster,
  uniqueRoom,
  uniqueUser,
  waitUntil,
  type Ack,
  type ChatMessage,
  type SendAck,
  type TestCluster,
} from "../helpers/cluster.js";

const BACKLOG = 1000;
/** A long checkpoint interval: at the kill, many acknowledged messages are in no checkpoint yet. */
const ARGS = ["--lease-ttl", "3s", "--checkpoint-interval", "2s", "--checkpoint-backlog", String(BACKLOG)];

interface Acked {
  readonly room: string;
  readonly id: string;
  readonly seq: number;
  readonly at: number;
}

/** Senders on the given nodes, round-robin over the rooms; a refused or unanswered send is retried with its id. */
async function startLoad(c: TestCluster, via: number[], rooms: string[], tag: string) {
  const acked: Acked[] = [];
  const errors: { room: string; code: string; at: number }[] = [];
  let stopped = false;
  const sockets: Socket[] = [];
  for (const i of via) {
    sockets.push(await connect(c.node(i).httpUrl, await session(c.node(i).httpUrl, uniqueUser(`s${i}`))));
  }
  const loops = sockets.map(async (socket, k) => {
    for (let i = 0; !stopped; i++) {
      const room = rooms[(i + k) % rooms.length]!;
      const id = `${tag}-${k}-${i}`;
      for (let attempt = 0; attempt < 100 && !(stopped && attempt > 2); attempt++) {
        const ack = await emitAck<Ack<SendAck>>(socket, "send", { room, text: id, id }, 4000).catch(() => undefined);
        if (ack?.ok) {
          acked.push({ room, id, seq: ack.seq, at: Date.now() });
          break;
        }
        errors.push({ room, code: ack && !ack.ok ? ack.error.code : "timeout", at: Date.now() });
        await sleep(100);
      }
      await sleep(15);
    }
  });
  // Senders must have joined to send.
  for (const socket of sockets) for (const room of rooms) await emitAck(socket, "join", { room });
  return {
    acked,
    errors,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      for (const s of sockets) s.close();
    },
  };
}

/**
 * A client following the rooms through one node; when that node dies it reconnects to `fallback` and resumes
 * each room with `since` = the last seq it saw. Records every message and gap it is sent.
 */
function watcher(urls: string[], token: string, rooms: string[]) {
  const seqs = new Map<string, number[]>(rooms.map((r) => [r, []]));
  const ids = new Map<string, string[]>(rooms.map((r) => [r, []]));
  const gaps: unknown[] = [];
  let connections = 0;
  const open = (k: number): void => {
    const socket = io(urls[Math.min(k, urls.length - 1)]!, { auth: { token }, transports: ["websocket"], forceNew: true, reconnection: false });
    // A join can be refused while the room's dead owner is still on the map: retry it, like a real client.
    const join = (room: string): void => {
      const seen = seqs.get(room)!;
      socket.emit("join", k === 0 ? { room } : { room, since: seen.length ? seen[seen.length - 1] : 0 }, (ack: Ack<object>) => {
        if (!ack?.ok && socket.connected) setTimeout(() => join(room), 300);
      });
    };
    socket.on("connect", () => {
      connections++;
      for (const room of rooms) join(room);
    });
    socket.on("message", (m: ChatMessage) => {
      seqs.get(m.room)?.push(m.seq);
      ids.get(m.room)?.push(m.id);
    });
    socket.on("gap", (g: unknown) => gaps.push(g));
    socket.on("disconnect", () => setTimeout(() => open(k + 1), 200));
    socket.on("connect_error", () => setTimeout(() => open(k + 1), 200));
    current = socket;
  };
  let current: Socket | undefined;
  open(0);
  return {
    seqs,
    ids,
    gaps,
    get connections() {
      return connections;
    },
    close: () => {
      current?.removeAllListeners("disconnect");
      current?.close();
    },
  };
}

function manifestHead(c: TestCluster, room: string): number {
  try {
    return (JSON.parse(readFileSync(path.join(c.root, "objects", "rooms", room, "manifest.json"), "utf8")) as { head: number }).head;
  } catch {
    return 0; // not checkpointed yet
  }
}

/** When `node` first logged a cluster map containing `state` (e.g. "n3:down"), ms since the epoch. */
function mapAdoptedAt(c: TestCluster, node: string, state: string): number | undefined {
  const lines = readFileSync(c.node(c.indexOf(node)).logFile, "utf8").split("\n");
  for (const line of lines) {
    if (!line.includes('"cluster map changed"') || !line.includes(`"${state}"`)) continue;
    return (JSON.parse(line) as { time: number }).time;
  }
  return undefined;
}

async function clusterMap(c: TestCluster, i: number): Promise<ClusterMap> {
  return (await http<ClusterMap>(`${c.node(i).httpUrl}/api/cluster`, { token: await c.token() })).json;
}

/**
 * The failover scenario of both durability modes: load on rooms owned by n2 from clients on n1 and n3, a
 * watcher through n2 (reconnects elsewhere with since) and one through n1; kill -9 n2 and never restart it.
 */
async function killOwnerUnderLoad(c: TestCluster, tag: string) {
  // Rooms owned by n2: two replicated to n1, two to n3.
  const ring = new Ring(await clusterMap(c, 0));
  const rooms: string[] = [];
  for (const replica of ["n1", "n1", "n3", "n3"]) {
    for (let i = 0; ; i++) {
      const room = uniqueRoom(`${tag}${rooms.length}`);
      const [owner, next] = ring.successors(room, 2);
      if (owner === "n2" && next === replica) {
        rooms.push(room);
        break;
      }
    }
  }
  const watchers = [
    watcher([c.node(1).httpUrl, c.node(0).httpUrl], await session(c.node(1).httpUrl, uniqueUser("w2")), rooms),
    watcher([c.node(0).httpUrl], await session(c.node(0).httpUrl, uniqueUser("w1")), rooms),
  ];
  await sleep(500);
  const load = await startLoad(c, [0, 0, 2, 2], rooms, tag);
  await sleep(3500);
  // Kill when something acknowledged is not checkpointed yet (right after a checkpoint round the kill would
  // test nothing; the load keeps sending, so that moment comes within a few sends).
  let checkpointed = new Map<string, number>();
  let killedAt = 0;
  await waitUntil(
    () => {
      checkpointed = new Map(rooms.map((r) => [r, manifestHead(c, r)]));
      killedAt = Date.now();
      return load.acked.some((a) => a.at <= killedAt && a.seq > checkpointed.get(a.room)!);
    },
    "an acknowledged message after the last checkpoint",
    5_000,
    20,
  );
  const ackedBeforeKill = load.acked.filter((a) => a.at <= killedAt);
  await c.kill9(c.indexOf("n2"));
  // Every room is written again by its new owner.
  await waitUntil(
    () => rooms.every((room) => load.acked.some((a) => a.room === room && a.at > killedAt + 200)),
    "every room written on its new owner",
    30_000,
    100,
  );
  const firstAfter = Math.min(...rooms.map((room) => load.acked.find((a) => a.room === room && a.at > killedAt + 200)!.at));
  await sleep(1500);
  await load.stop();
  await sleep(1000);

  const token = await c.token();
  const histories = new Map<string, ChatMessage[]>();
  for (const room of rooms) histories.set(room, await fullHistory(c.node(0).httpUrl, token, room));
  const lost = load.acked.filter((a) => histories.get(a.room)!.find((m) => m.seq === a.seq)?.id !== a.id);
  const atRisk = ackedBeforeKill.filter((a) => a.seq > checkpointed.get(a.room)!);
  const report = {
    acked: load.acked.length,
    ackedAfterLastCheckpointBeforeKill: atRisk.length,
    lost: lost.length,
    killToFirstWriteMs: firstAfter - killedAt,
    refused: load.errors.length,
    heads: rooms.map((r) => histories.get(r)!.at(-1)?.seq ?? 0),
  };
  process.stdout.write(`      ${tag} report: ${JSON.stringify(report)}\n`);
  return { rooms, load, watchers, histories, checkpointed, killedAt, ackedBeforeKill, atRisk, lost, token };
}

/**
 * Fault injection: commits the dead owner made that its replica never confirmed (never acknowledged, never
 * shown), appended to its SQLite file: the state a kill between its commit and its replica's answer leaves.
 */
function appendUnconfirmedCommits(c: TestCluster, node: string, rooms: readonly string[], count: number): void {
  const db = new Database(path.join(c.node(c.indexOf(node)).dataDir, "rooms.db"));
  try {
    db.transaction(() => {
      for (const room of rooms) {
        const head = db.prepare<[string], { head: number }>("SELECT head FROM rooms WHERE room = ?").get(room)?.head ?? 0;
        for (let k = 1; k <= count; k++) {
          db.prepare("INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)").run(room, head + k, `unconfirmed-${k}`, "ghost", "never acknowledged", Date.now());
        }
        db.prepare("UPDATE rooms SET head = ? WHERE room = ?").run(head + count, room);
      }
    })();
  } finally {
    db.close();
  }
}

/** Rows of the dead node's own SQLite file that differ from the room's history (committed, never confirmed). */
function divergentRows(c: TestCluster, node: string, histories: Map<string, ChatMessage[]>): number {
  const db = new Database(path.join(c.node(c.indexOf(node)).dataDir, "rooms.db"));
  try {
    let n = 0;
    for (const [room, hist] of histories) {
      const byseq = new Map(hist.map((m) => [m.seq, m.id]));
      const rows = db.prepare<[string], { seq: number; id: string }>("SELECT seq, id FROM messages WHERE room = ?").all(room);
      n += rows.filter((r) => byseq.get(r.seq) !== r.id).length;
    }
    return n;
  } finally {
    db.close();
  }
}

describe("cluster: replicated durability, kill -9 of an owner under load", function () {
  this.timeout(180_000);
  const cluster = useCluster({ nodes: 3, extraArgs: [...ARGS, "--durability", "replicated"] });
  /** The first test's rooms and their histories: later moves must never change them. */
  let failedOver: Map<string, ChatMessage[]> | undefined;

  it("loses no acknowledged message, continues each room at head + 1, and every client stream stays gap-free", async () => {
    const c = cluster();
    const r = await killOwnerUnderLoad(c, "rep");
    // The scenario must be one that local durability loses messages in: acknowledged after the last checkpoint.
    expect(r.atRisk.length, "messages acknowledged after the last checkpoint before the kill").to.be.greaterThan(0);
    expect(r.lost.map((a) => `${a.room}/${a.seq}/${a.id}`), "acknowledged messages lost").to.deep.equal([]);
    for (const room of r.rooms) {
      const hist = r.histories.get(room)!;
      const seqs = hist.map((m) => m.seq);
      // Contiguous from 1: the new owner continued at its copy's head + 1, no backlog skip.
      expect(seqs, `${room}: seqs`).to.deep.equal(Array.from({ length: seqs.length }, (_, i) => i + 1));
      expect(Math.max(...seqs)).to.be.below(BACKLOG);
      expect(new Set(hist.map((m) => m.id)).size, `${room}: each id once`).to.equal(hist.length);
    }
    // Both watchers (one of them reconnected from the dead node with since) saw every message once, in order.
    await waitUntil(
      () => r.watchers.every((w) => r.rooms.every((room) => (w.seqs.get(room)!.at(-1) ?? 0) >= r.histories.get(room)!.at(-1)!.seq)),
      "watchers to catch up",
      15_000,
      100,
    ).catch((err: Error) => {
      const where = r.watchers.map((w) => r.rooms.map((room) => `${w.seqs.get(room)!.at(-1)}/${r.histories.get(room)!.at(-1)!.seq} (${w.seqs.get(room)!.length} seen, from ${w.seqs.get(room)![0]})`));
      throw new Error(`${err.message}: watchers at ${JSON.stringify(where)}, connections ${r.watchers.map((w) => w.connections)}, gaps ${JSON.stringify(r.watchers.map((w) => w.gaps))}`);
    });
    expect(r.watchers[0]!.connections, "the watcher on n2 reconnected elsewhere").to.be.at.least(2);
    for (const [k, w] of r.watchers.entries()) {
      for (const room of r.rooms) {
        const seqs = w.seqs.get(room)!;
        const first = seqs[0]!;
        expect(seqs, `watcher ${k}, ${room}`).to.deep.equal(Array.from({ length: seqs.length }, (_, i) => first + i));
        const byseq = new Map(r.histories.get(room)!.map((m) => [m.seq, m.id]));
        expect(w.ids.get(room)!.every((id, i) => byseq.get(seqs[i]!) === id), `watcher ${k}, ${room}: ids`).to.equal(true);
      }
      expect(w.gaps, `watcher ${k}: gap events`).to.deep.equal([]);
      w.close();
    }
    // n2 comes back on its own disk, which may hold commits its replica never confirmed (never acknowledged,
    // never shown; their seqs went to other messages): it rejoins owning nothing and never serves them.
    const natural = divergentRows(c, "n2", r.histories);
    appendUnconfirmedCommits(c, "n2", r.rooms, 3);
    const divergent = divergentRows(c, "n2", r.histories);
    process.stdout.write(`      rows of the dead owner's disk that are not the room's history: ${natural} left by the kill, ${divergent} with the injected ones\n`);
    expect(divergent).to.be.at.least(r.rooms.length * 3);
    await c.restart(c.indexOf("n2"));
    await waitUntil(async () => ((await clusterMap(c, 0)).nodes.find((n) => n.id === "n2")?.state === "joining" ? true : undefined), "n2 to rejoin", 15_000, 200);
    failedOver = r.histories;
    for (const room of r.rooms) {
      const viaN2 = await fullHistory(c.node(c.indexOf("n2")).httpUrl, r.token, room);
      expect(viaN2.map((m) => `${m.seq}:${m.id}`), `${room} through the returned node`).to.deep.equal(r.histories.get(room)!.map((m) => `${m.seq}:${m.id}`));
    }
  });

  it("a dead replica: its rooms' sends are unavailable until the map marks it down, then succeed; other rooms never stop; nothing acknowledged is lost", async () => {
    const c = cluster();
    // The first test left n2 back as `joining`; a rebalance makes the three nodes active again (in replicated
    // durability too: the moved rooms are handed off and their new replicas backfilled).
    if (!c.isRunning(c.indexOf("n2"))) await c.restart(c.indexOf("n2"));
    await waitUntil(async () => ((await clusterMap(c, 0)).nodes.find((n) => n.id === "n2")?.state !== "down" ? true : undefined), "n2 to rejoin", 15_000, 200);
    await admin(c.node(0).httpUrl, ["rebalance"]);
    const map3 = await waitUntil(async () => {
      const m = await clusterMap(c, 0);
      return m.nodes.every((n) => n.state === "active") ? m : undefined;
    }, "all three nodes active", 30_000, 200);
    const ring3 = new Ring(map3);
    // Rooms that moved back to n2 (its old, possibly diverged copy) read exactly as before, through every node.
    const token0 = await c.token();
    for (const [room, hist] of failedOver ?? []) {
      for (const i of [0, 1, 2]) {
        const now = await fullHistory(c.node(i).httpUrl, token0, room);
        expect(now.map((m) => `${m.seq}:${m.id}`), `${room} via ${c.node(i).id} after the rebalance`).to.deep.equal(hist.map((m) => `${m.seq}:${m.id}`));
      }
    }
    // A room owned by n1 whose replica is n3, and one owned by n1 whose replica is n2.
    const pick = (replica: string) => {
      for (let i = 0; ; i++) {
        const r = uniqueRoom(`rp${i}`);
        const [o, rep] = ring3.successors(r, 2);
        if (o === "n1" && rep === replica) return r;
      }
    };
    const victim = pick("n3");
    const healthy = pick("n2");
    // Separate senders per room: a sender blocked on the victim room must not starve the healthy one.
    const victimLoad = await startLoad(c, [0, 1], [victim], "rv");
    const healthyLoad = await startLoad(c, [0, 1], [healthy], "rh");
    const load = {
      get acked() {
        return [...victimLoad.acked, ...healthyLoad.acked];
      },
      get errors() {
        return [...victimLoad.errors, ...healthyLoad.errors];
      },
      stop: () => Promise.all([victimLoad.stop(), healthyLoad.stop()]),
    };
    await sleep(1500);
    const killedAt = Date.now();
    await c.kill9(c.indexOf("n3"));
    const downAt = await waitUntil(
      async () => ((await clusterMap(c, 0)).nodes.find((n) => n.id === "n3")?.state === "down" ? Date.now() : undefined),
      "n3 to be marked down",
      20_000,
      100,
    );
    await waitUntil(() => load.acked.some((a) => a.room === victim && a.at > downAt), "the victim room to be written again", 20_000, 100);
    // The victim's owner may adopt the new map a little before this test's poll sees it: its log says when.
    const adoptedAt = mapAdoptedAt(c, "n1", "n3:down") ?? downAt;
    await sleep(1500);
    await load.stop();

    const acks = (r: string, from: number, to: number) => load.acked.filter((a) => a.room === r && a.at > from && a.at < to);
    const refusedVictim = load.errors.filter((e) => e.room === victim && e.at > killedAt && e.at < downAt + 1000);
    const report = {
      killToDownMs: downAt - killedAt,
      ownerAdoptedDownMapMsAfterKill: adoptedAt - killedAt,
      victimAckedWhileReplicaDead: acks(victim, killedAt + 300, adoptedAt).length,
      victimRefused: refusedVictim.length,
      victimRefusedCodes: [...new Set(refusedVictim.map((e) => e.code))],
      healthyAckedWhileReplicaDead: acks(healthy, killedAt + 300, adoptedAt).length,
      victimAckedAfterDown: acks(victim, downAt, Infinity).length,
    };
    process.stdout.write(`      replica-down report: ${JSON.stringify(report)}\n`);
    // Nothing is acknowledged without a replica holding it: none while the replica is dead and still on the ring.
    expect(report.victimAckedWhileReplicaDead, "victim room acks while its replica was dead").to.equal(0);
    expect(report.victimRefused).to.be.greaterThan(0);
    expect(report.victimRefusedCodes.every((code) => code === "unavailable" || code === "timeout")).to.equal(true);
    expect(report.healthyAckedWhileReplicaDead, "a room with a live replica keeps going").to.be.greaterThan(0);
    expect(report.victimAckedAfterDown).to.be.greaterThan(0);
    const token = await c.token();
    for (const r of [victim, healthy]) {
      const hist = await fullHistory(c.node(0).httpUrl, token, r);
      const byseq = new Map(hist.map((m) => [m.seq, m.id]));
      const lost = load.acked.filter((a) => a.room === r && byseq.get(a.seq) !== a.id);
      expect(lost, `${r}: acknowledged but lost`).to.deep.equal([]);
      // The owner never died: seqs stay contiguous, each id once (retries with the same id got their seq).
      expect(hist.map((m) => m.seq), `${r}: seqs`).to.deep.equal(Array.from({ length: hist.length }, (_, i) => i + 1));
      expect(new Set(hist.map((m) => m.id)).size).to.equal(hist.length);
    }
    // The operator sees the mode of every node.
    const status = JSON.parse((await runAdmin(c.node(0).httpUrl, ["status", "--json"])).stdout) as { nodes: { node: string; reachable: boolean; durability?: string }[] };
    for (const n of status.nodes.filter((x) => x.reachable)) expect(n.durability, n.node).to.equal("replicated");
  });
});

describe("cluster: replicated durability, an owner's disk lost and the node back before its lease expired", function () {
  this.timeout(180_000);
  // A long lease: the owner is back long before anybody could fail it over, so it rebuilds its own rooms.
  const cluster = useCluster({ nodes: 3, extraArgs: ["--lease-ttl", "15s", "--checkpoint-interval", "2s", "--checkpoint-backlog", String(BACKLOG), "--durability", "replicated"] });

  it("takes what it acknowledged after the last checkpoint back from the replicas: nothing lost, no backlog skip", async () => {
    const c = cluster();
    const ring = new Ring(await clusterMap(c, 0));
    const rooms: string[] = [];
    for (let i = 0; rooms.length < 3; i++) {
      const room = uniqueRoom(`wipe${i}`);
      if (ring.owner(room) === "n2") rooms.push(room);
    }
    const load = await startLoad(c, [0, 2], rooms, "wipe");
    await sleep(3500);
    // Kill when something acknowledged is not checkpointed yet (a kill right after a checkpoint round would not
    // test the path; the load keeps sending, so that moment comes within a few sends).
    let killedAt = 0;
    let atRisk: typeof load.acked = [];
    await waitUntil(
      () => {
        const checkpointed = new Map(rooms.map((r) => [r, manifestHead(c, r)]));
        killedAt = Date.now();
        atRisk = load.acked.filter((a) => a.at <= killedAt && a.seq > checkpointed.get(a.room)!);
        return atRisk.length > 0;
      },
      "an acknowledged message after the last checkpoint",
      5_000,
      20,
    );
    await c.kill9(c.indexOf("n2"));
    await c.restart(c.indexOf("n2"), { wipe: true });
    await waitUntil(
      () => rooms.every((room) => load.acked.some((a) => a.room === room && a.at > killedAt + 200)),
      "every room written after the restart",
      30_000,
      100,
    );
    await sleep(1000);
    await load.stop();
    const map = await clusterMap(c, 0);
    const token = await c.token();
    const histories = new Map<string, ChatMessage[]>();
    for (const room of rooms) histories.set(room, await fullHistory(c.node(0).httpUrl, token, room));
    const lost = load.acked.filter((a) => histories.get(a.room)!.find((m) => m.seq === a.seq)?.id !== a.id);
    const log = readFileSync(c.node(c.indexOf("n2")).logFile, "utf8");
    const continued = log.split("\n").filter((l) => l.includes("room continued from its replica's copy after the lost disk")).length;
    process.stdout.write(
      `      wiped-owner report: ${JSON.stringify({ acked: load.acked.length, ackedAfterLastCheckpointBeforeKill: atRisk.length, lost: lost.length, roomsContinuedFromCopy: continued, n2: map.nodes.find((n) => n.id === "n2")?.state, heads: rooms.map((r) => histories.get(r)!.at(-1)?.seq ?? 0) })}\n`,
    );
    // The path under test: n2 was never failed over, it rebuilt its own rooms from the chain and the replicas.
    expect(map.nodes.find((n) => n.id === "n2")?.state).to.equal("active");
    for (const room of rooms) expect(new Ring(map).owner(room)).to.equal("n2");
    expect(atRisk.length, "messages acknowledged after the last checkpoint before the kill").to.be.greaterThan(0);
    expect(continued, "rooms continued from a replica's copy").to.be.greaterThan(0);
    expect(lost.map((a) => `${a.room}/${a.seq}/${a.id}`), "acknowledged messages lost").to.deep.equal([]);
    for (const room of rooms) {
      const seqs = histories.get(room)!.map((m) => m.seq);
      expect(seqs, `${room}: contiguous from 1, no backlog skip`).to.deep.equal(Array.from({ length: seqs.length }, (_, i) => i + 1));
      expect(new Set(histories.get(room)!.map((m) => m.id)).size, `${room}: each id once`).to.equal(seqs.length);
    }
  });
});

describe("cluster: replicated durability on a single node (degraded)", function () {
  this.timeout(60_000);
  const cluster = useCluster({ nodes: 1, extraArgs: ["--durability", "replicated"] });

  it("acknowledges after the local commit, counts the rooms as degraded and warns once", async () => {
    const c = cluster();
    const url = c.node(0).httpUrl;
    const socket = await connect(url, await session(url, uniqueUser("solo")));
    const rooms = [uniqueRoom("solo"), uniqueRoom("solo")];
    for (const room of rooms) {
      await join(socket, room);
      for (let k = 1; k <= 3; k++) expect((await send(socket, room, `m${k}`, `m${k}`)).seq).to.equal(k);
    }
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).to.match(/^fractal_replication_degraded_rooms\{[^}]*\} 2$/m);
    const warnings = readFileSync(c.node(0).logFile, "utf8").split("\n").filter((l) => l.includes("no other node in this region"));
    expect(warnings).to.have.length(1);
  });
});

describe("cluster: local durability, the same kill -9 (for comparison)", function () {
  if (process.env.FRACTAL_TEST_SKIP_LOCAL) return;
  this.timeout(180_000);
  const cluster = useCluster({ nodes: 3, extraArgs: [...ARGS, "--durability", "local"] });

  it("loses at most what was acknowledged after the last checkpoint, and skips the backlog", async () => {
    const c = cluster();
    const r = await killOwnerUnderLoad(c, "loc");
    for (const w of r.watchers) w.close();
    // Whatever was lost had been acknowledged after the room's last checkpoint before the kill.
    for (const a of r.lost) expect(a.seq, `${a.room}/${a.id}`).to.be.above(r.checkpointed.get(a.room)!);
    for (const room of r.rooms) {
      const seqs = r.histories.get(room)!.map((m) => m.seq);
      expect(Math.max(...seqs), `${room}: the new owner started after the backlog`).to.be.above(BACKLOG);
    }
  });
});
