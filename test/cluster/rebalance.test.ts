/**
 * Rebalance and drain on real node processes under a steady send load (DESIGN.md invariants 1, 2, 5):
 * a fourth node joins with --join and `fractal admin rebalance` moves exactly the rooms whose owner changes,
 * with nothing acknowledged lost, nothing duplicated and every client's stream gap-free; `fractal admin drain`
 * empties a node so it can be stopped; two rebalances at once do not corrupt the map.
 */
import { expect } from "chai";
import path from "node:path";
import {
  connect,
  emitAck,
  fullHistory,
  http,
  join,
  runAdmin,
  session,
  sleep,
  startCluster,
  uniqueRoom,
  uniqueUser,
  waitUntil,
  type Ack,
  type ChatMessage,
  type SendAck,
  type Socket,
  type TestCluster,
} from "../helpers/cluster.js";

const ARGS = ["--lease-ttl", "10s", "--checkpoint-interval", "300ms"];
const ROOMS = 800;
const LOADED = 12;


function lines(stdout: string): Record<string, any>[] {
  return stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
}

interface Load {
  acked: Map<string, { room: string; seq: number }>;
  errors: Map<string, number>;
  received: Map<string, number[]>;
  stop(): Promise<void>;
}

/** Clients on every node of `urls`, each in every loaded room, sending in turn with retries (same id). */
async function startLoad(urls: string[], rooms: string[]): Promise<Load> {
  const acked = new Map<string, { room: string; seq: number }>();
  const errors = new Map<string, number>();
  const received = new Map<string, number[]>();
  const sockets: { socket: Socket; name: string }[] = [];
  for (const [i, url] of urls.entries()) {
    const name = uniqueUser(`rb${i}`);
    const socket = await connect(url, await session(url, name), { reconnection: false });
    for (const room of rooms) await join(socket, room);
    socket.on("message", (m: ChatMessage) => {
      const key = `${name}/${m.room}`;
      received.set(key, [...(received.get(key) ?? []), m.seq]);
    });
    sockets.push({ socket, name });
  }
  let stopped = false;
  const loops = sockets.map(async ({ socket }, k) => {
    for (let i = 0; !stopped; i++) {
      const room = rooms[(i + k) % rooms.length]!;
      const id = `rb-${k}-${i}`;
      for (let attempt = 0; attempt < 50; attempt++) {
        const ack = await emitAck<Ack<SendAck>>(socket, "send", { room, text: id, id }, 5000).catch(() => undefined);
        if (ack?.ok) {
          acked.set(id, { room, seq: ack.seq });
          break;
        }
        const code = ack && !ack.ok ? ack.error.code : "timeout";
        errors.set(code, (errors.get(code) ?? 0) + 1);
        if (stopped && attempt > 3) break; // a send that cannot complete after the run is reported, not awaited
        await sleep(100);
      }
      await sleep(15);
    }
  });
  return {
    acked,
    errors,
    received,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      await sleep(500); // let the last deliveries land
    },
  };
}

/** Every acked message is in history at its acked seq, history has no duplicate id, streams are gap-free. */
async function checkNothingLost(c: TestCluster, load: Load, rooms: string[]) {
  const token = await c.token();
  let lost = 0;
  let duplicates = 0;
  for (const room of rooms) {
    const hist = await fullHistory(c.node(0).httpUrl, token, room);
    const ids = new Set<string>();
    for (const m of hist) {
      if (ids.has(m.id)) duplicates++;
      ids.add(m.id);
    }
    const bySeq = new Map(hist.map((m) => [m.seq, m.id]));
    for (const [id, a] of load.acked) if (a.room === room && bySeq.get(a.seq) !== id) lost++;
  }
  let gaps = 0;
  let dupDeliveries = 0;
  for (const seqs of load.received.values()) {
    for (let i = 1; i < seqs.length; i++) {
      if (seqs[i]! === seqs[i - 1]!) dupDeliveries++;
      else if (seqs[i]! !== seqs[i - 1]! + 1) gaps++;
    }
  }
  return { acked: load.acked.size, lost, duplicates, gaps, dupDeliveries, errors: Object.fromEntries(load.errors) };
}

describe("cluster: rebalance and drain under load", function () {
  this.timeout(240_000);
  let c: TestCluster;
  let joiner: TestCluster | undefined;
  let rooms: string[];
  before(async function () {
    this.timeout(120_000);
    c = await startCluster({ nodes: 3, extraArgs: ARGS });
    const token = await c.token();
    rooms = Array.from({ length: ROOMS }, () => uniqueRoom("rb"));
    // Every room gets one message so it exists on its owner's disk.
    for (let i = 0; i < rooms.length; i += 40) {
      await Promise.all(
        rooms.slice(i, i + 40).map((room) => http(`${c.node(0).httpUrl}/api/rooms/${room}/messages`, { method: "POST", token, body: { text: "hello", id: "init" } })),
      );
    }
  });
  after(async () => {
    await joiner?.stopAll();
    await c?.stopAll();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") {
      c.printLogTails(40);
      joiner?.printLogTails(40);
    }
  });

  async function owners(): Promise<Map<string, string>> {
    const token = await c.token();
    const out = new Map<string, string>();
    for (let i = 0; i < rooms.length; i += 50) {
      await Promise.all(
        rooms.slice(i, i + 50).map(async (room) => out.set(room, (await http(`${c.node(1).httpUrl}/api/rooms/${room}`, { token })).json.owner as string)),
      );
    }
    return out;
  }

  it("a joined fourth node takes its share: only rooms whose owner changes move, nothing lost or duplicated", async () => {
    joiner = await startCluster({
      nodes: 1,
      idPrefix: "j",
      dataDir: path.join(c.root, "joiner"),
      extraArgs: [...ARGS, "--object-store", path.join(c.root, "objects"), "--join", c.node(0).httpUrl],
    });
    const before = await owners();
    const dry = lines((await runAdmin(c.node(0).httpUrl, ["rebalance", "--dry-run", "--json"])).stdout);
    const plan = dry[0]!.plan as { moves: { room: string; from: string; to: string }[] };
    expect(plan.moves.length).to.be.greaterThan(0);
    expect(plan.moves.every((m) => m.to === "j1")).to.equal(true);
    expect((await owners()).get(plan.moves[0]!.room)).to.equal(plan.moves[0]!.from); // the dry run changed nothing

    const loaded = rooms.slice(0, LOADED);
    const load = await startLoad([...c.nodes.map((n) => n.httpUrl), joiner.node(0).httpUrl], loaded);
    await sleep(1500);
    const result = await runAdmin(c.node(1).httpUrl, ["rebalance", "--json", "--max-concurrent", "32"]);
    expect(result.code, result.stderr).to.equal(0);
    const out = lines(result.stdout);
    const final = out[out.length - 1]!.result as { done: number; total: number; failed: number; pauseMs: { p50: number; p99: number; max: number } };
    await sleep(1500);
    await load.stop();

    const after = await owners();
    const changed = rooms.filter((r) => before.get(r) !== after.get(r));
    const planned = new Set(plan.moves.map((m) => m.room));
    expect(changed.every((r) => planned.has(r) && after.get(r) === "j1"), "only planned rooms moved, all to j1").to.equal(true);
    expect(changed.length).to.equal(plan.moves.length);
    const share = new Map<string, number>();
    for (const o of after.values()) share.set(o, (share.get(o) ?? 0) + 1);
    const even = ROOMS / 4;
    const check = await checkNothingLost(c, load, loaded);
    process.stdout.write(`      rebalance report: ${JSON.stringify({ ...final, share: Object.fromEntries(share), ...check })}\n`);
    expect(final.failed).to.equal(0);
    for (const [node, n] of share) expect(n / even, `share of ${node}`).to.be.within(0.8, 1.2);
    expect(check).to.include({ lost: 0, duplicates: 0, gaps: 0, dupDeliveries: 0 });
    expect(check.acked).to.be.greaterThan(50);
  });

  it("drain moves every room off a node under load; it can then be stopped with nothing lost", async function () {
    this.timeout(60_000);
    const loaded = rooms.slice(LOADED, LOADED * 2);
    const load = await startLoad(c.nodes.map((n) => n.httpUrl), loaded);
    // A reader connected to the node being drained: the drain sends it away (its connection closes without a
    // disconnect packet), it comes back through another node and resumes with since.
    const drained = joiner!.node(0).httpUrl;
    const reader = { seqs: [] as number[], releasedAt: 0, reason: "", resumed: false };
    const readerToken = await session(drained, uniqueUser("reader"));
    const first = await connect(drained, readerToken);
    first.on("message", (m: ChatMessage) => m.room === loaded[0] && reader.seqs.push(m.seq));
    await join(first, loaded[0]!);
    first.on("disconnect", (reason: string) => {
      reader.releasedAt = Date.now();
      reader.reason = reason;
      void (async () => {
        const again = await connect(c.node(0).httpUrl, readerToken);
        again.on("message", (m: ChatMessage) => m.room === loaded[0] && reader.seqs.push(m.seq));
        await join(again, loaded[0]!, reader.seqs[reader.seqs.length - 1] ?? 0);
        reader.resumed = true;
      })();
    });
    await sleep(1000);
    const result = await runAdmin(c.node(0).httpUrl, ["drain", "j1", "--json"]);
    expect(result.code, result.stderr).to.equal(0);
    const after = await owners();
    expect([...after.values()].includes("j1")).to.equal(false);
    expect((await http(`${drained}/readyz`)).status, "a draining node is not ready for new clients").to.equal(503);
    await waitUntil(() => (reader.resumed ? true : undefined), "the reader on the drained node to be sent elsewhere and resume", 15_000, 50);
    const stoppedAt = Date.now();
    await joiner!.stopAll();
    joiner = undefined;
    await sleep(1000);
    await load.stop();
    const check = await checkNothingLost(c, load, loaded);
    process.stdout.write(`      drain report: ${JSON.stringify({ ...check, readerSeqs: reader.seqs.length })}\n`);
    expect(check).to.include({ lost: 0, duplicates: 0, gaps: 0, dupDeliveries: 0 });
    expect(reader.releasedAt, "released by the drain, before the node was stopped").to.be.within(1, stoppedAt);
    expect(reader.reason, "closed without a disconnect packet, so clients reconnect by themselves").to.equal("transport close");
    const hist = await fullHistory(c.node(1).httpUrl, await c.token(), loaded[0]!);
    const from = reader.seqs[0]!;
    expect(reader.seqs, "the reader's stream: every message from its first, once, in order").to.deep.equal(hist.map((m) => m.seq).filter((q) => q >= from && q <= reader.seqs[reader.seqs.length - 1]!));
    expect(reader.seqs[reader.seqs.length - 1], "the reader is live at the end").to.equal(hist[hist.length - 1]!.seq);
  });

  it("two rebalances at once: one wins, the other is told, the map is not corrupted", async () => {
    const extra = await startCluster({
      nodes: 1,
      idPrefix: "k",
      dataDir: path.join(c.root, "k"),
      extraArgs: [...ARGS, "--object-store", path.join(c.root, "objects"), "--join", c.node(0).httpUrl],
    });
    try {
      const token = await c.token();
      // The node drained and stopped by the previous test is marked down once its lease expires (a map change):
      // let that happen first, or both rebalances are rightly told the map changed since their plan.
      await waitUntil(
        async () => {
          const m = (await http(`${c.node(0).httpUrl}/api/cluster`, { token })).json as { nodes: { id: string; state: string }[] };
          return m.nodes.every((n) => n.id !== "j1" || n.state === "down") ? true : undefined;
        },
        "the stopped j1 to be marked down",
        30_000,
        200,
      );
      const epochBefore = (await http(`${c.node(0).httpUrl}/api/cluster`, { token })).json.epoch as number;
      const [a, b] = await Promise.all([runAdmin(c.node(0).httpUrl, ["rebalance", "--json"]), runAdmin(c.node(2).httpUrl, ["rebalance", "--json"])]);
      const outcomes = [a, b].map((r) => (r.code === 0 ? "ok" : /changed since the plan|already/.test(r.stderr) ? "told" : `failed: ${r.stderr}`));
      expect(outcomes.filter((o) => o === "ok").length, JSON.stringify(outcomes)).to.be.at.least(1);
      expect(outcomes.every((o) => o === "ok" || o === "told"), JSON.stringify(outcomes)).to.equal(true);
      const map = (await http(`${c.node(0).httpUrl}/api/cluster`, { token })).json as { epoch: number; nodes: { id: string; state: string }[] };
      expect(map.nodes.filter((n) => n.id === "k1").map((n) => n.state)).to.deep.equal(["active"]);
      expect(map.epoch).to.be.greaterThan(epochBefore);
      expect(new Set(map.nodes.map((n) => n.id)).size).to.equal(map.nodes.length);
    } finally {
      await runAdmin(c.node(0).httpUrl, ["drain", "k1"]);
      await extra.stopAll();
    }
  });
});
