/**
 * Durable rooms on real node processes (DESIGN.md "Durability", invariants 3, 5, 6): kill -9 an owner under
 * load, wipe its disk, restart it, and count what survived, with the object store a local directory and with
 * S3 (s3rver behind the test helpers' conditional-write front); the object store down for a while; admin
 * checkpoint, restore to a seq and corrupt-segment detection through the CLI.
 */
import { expect } from "chai";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  EventLog,
  MessageCollector,
  connect,
  emitAck,
  fullHistory,
  join,
  range,
  roomOwnedBy,
  runAdmin,
  session,
  sleep,
  startCluster,
  uniqueUser,
  waitUntil,
  type Ack,
  type SendAck,
  type Socket,
  type TestCluster,
} from "../helpers/cluster.js";
import { S3_CREDENTIALS, startTestS3, type TestS3 } from "../helpers/s3.js";

const INTERVAL_MS = 500;
/**
 * Leases live in the object store, so an object-store outage longer than the lease fences every node (safety
 * over availability, see the README). These tests are about checkpoints, not failover: a long lease keeps a
 * restarted owner the owner and lets the outage test run longer than the default lease.
 */
const LONG_LEASE = ["--lease-ttl", "120s", "--checkpoint-backlog", "1000"];
/** Seqs a rebuilt room skips (the most its lost disk may have acknowledged beyond the chain). */
const BACKLOG = 1000;

interface Acked {
  seq: number;
  id: string;
  at: number;
}

/** Sends from clients on the non-owner nodes until stopped, recording every acknowledged send. */
function startLoad(sockets: Socket[], room: string, tag: string) {
  const acked: Acked[] = [];
  let stopped = false;
  const loops = sockets.map(async (socket, k) => {
    for (let i = 0; !stopped; i++) {
      const id = `${tag}-${k}-${i}`;
      const ack = await emitAck<Ack<SendAck>>(socket, "send", { room, text: `load ${id}`, id }, 3000).catch(() => undefined);
      if (ack?.ok) acked.push({ seq: ack.seq, id, at: Date.now() });
      else await sleep(50);
      await sleep(5);
    }
  });
  return {
    acked,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

async function client(c: TestCluster, i: number, name: string) {
  const token = await session(c.node(i).httpUrl, uniqueUser(name));
  const socket = await connect(c.node(i).httpUrl, token);
  return { token, socket };
}


/**
 * The crash test: load on a room owned by n2 from clients on n1 and n3; kill -9 n2 mid-load, wipe its data
 * directory, restart it. Every message acknowledged at or below the last completed checkpoint must be back
 * with the same seq; seqs must be contiguous; what was lost must have been acknowledged within the
 * checkpoint interval (plus the time one checkpoint takes) before the kill.
 */
async function crashAndWipe(c: TestCluster, manifestHead: (room: string) => Promise<number>) {
  const room = await roomOwnedBy(c, "n2", "crash");
  const a = await client(c, 0, "load-a");
  const b = await client(c, 2, "load-b");
  await join(a.socket, room);
  await join(b.socket, room);
  const load = startLoad([a.socket, b.socket], room, "crash");
  await sleep(2500);
  const checkpointed = await manifestHead(room);
  const killedAt = Date.now();
  await c.kill9(c.indexOf("n2"));
  await load.stop();
  await c.restart(c.indexOf("n2"), { wipe: true });

  const token = await c.token();
  const hist = await fullHistory(c.node(0).httpUrl, token, room);
  const byId = new Map(hist.map((m) => [m.id, m.seq]));
  const kept = load.acked.filter((x) => x.seq <= checkpointed);
  const lost = load.acked.filter((x) => byId.get(x.id) !== x.seq);
  const report = {
    acked: load.acked.length,
    checkpointedBeforeKill: checkpointed,
    restoredHead: hist.length,
    lost: lost.length,
    oldestLostAckedMsBeforeKill: lost.length ? killedAt - Math.min(...lost.map((x) => x.at)) : 0,
  };
  process.stdout.write(`      crash report: ${JSON.stringify(report)}\n`);
  expect(load.acked.length).to.be.greaterThan(20);
  expect(checkpointed, "a checkpoint completed before the kill").to.be.greaterThan(0);
  for (const x of kept) expect(byId.get(x.id), `acked ${x.id} at seq ${x.seq} (checkpointed) survives`).to.equal(x.seq);
  expect(hist.map((m) => m.seq), "restored seqs are contiguous").to.deep.equal(range(1, hist.length));
  expect(hist.length).to.be.at.least(checkpointed);
  // Loss is bounded by the checkpoint interval: nothing acknowledged well before the kill is gone.
  for (const x of lost) expect(killedAt - x.at, `lost ${x.id} was acked ${killedAt - x.at} ms before the kill`).to.be.below(INTERVAL_MS * 2 + 1500);

  // Seqs continue after everything the lost disk may have acknowledged (the backlog bound), so no seq is
  // ever given to two messages; a client replaying the room is told about the hole with a gap event.
  const after = await emitAck<Ack<SendAck>>(a.socket, "send", { room, text: "after restart", id: "after-restart" }, 5000);
  expect(after.ok && after.seq).to.equal(hist.length + BACKLOG + 1);
  const lostSeqs = new Set(lost.map((x) => x.seq));
  expect(after.ok && lostSeqs.has(after.seq), "a lost seq was given out again").to.equal(false);
  const reader = await client(c, 2, "reader");
  const collected = new MessageCollector(reader.socket);
  const gaps = new EventLog(reader.socket, ["gap"]);
  await join(reader.socket, room, 0);
  await collected.waitFor(room, hist.length + 1, 15_000);
  expect(collected.seqs(room)).to.deep.equal([...range(1, hist.length), hist.length + BACKLOG + 1]);
  await gaps.waitFor("gap", (g: { room: string; after: number; next: number }) => g.after === hist.length && g.next === hist.length + BACKLOG + 1);
}

describe("cluster: durable rooms (local directory object store)", function () {
  this.timeout(120_000);
  let c: TestCluster;
  before(async function () {
    this.timeout(60_000);
    c = await startCluster({ nodes: 3, extraArgs: ["--checkpoint-interval", `${INTERVAL_MS}ms`, ...LONG_LEASE] });
  });
  after(async () => {
    await c?.stopAll();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") c.printLogTails(40);
  });

  const manifestHead = async (room: string) => {
    try {
      return (JSON.parse(readFileSync(path.join(c.root, "objects", "rooms", room, "manifest.json"), "utf8")) as { head: number }).head;
    } catch {
      return 0;
    }
  };

  it("kill -9 of the owner under load, data dir wiped, restart: everything checkpointed is back, loss within the interval", async () => {
    await crashAndWipe(c, manifestHead);
  });

  it("admin checkpoint, status, restore to a seq, and a corrupt segment detected and reported", async () => {
    const room = await roomOwnedBy(c, "n3", "pitr");
    const a = await client(c, 0, "pitr");
    const watcher = await client(c, 1, "watch");
    const events = new EventLog(watcher.socket, ["reset", "message"]);
    await join(a.socket, room);
    await join(watcher.socket, room);
    for (let i = 1; i <= 30; i++) await emitAck(a.socket, "send", { room, text: `m${i}`, id: `m${i}` });

    const cp = await runAdmin(c.node(0).httpUrl, ["checkpoint", "--room", room, "--json"]);
    expect(cp.code, cp.stderr).to.equal(0);
    expect(await manifestHead(room)).to.equal(30);
    const status = await runAdmin(c.node(0).httpUrl, ["status", "--room", room, "--json"]);
    const s = JSON.parse(status.stdout) as { nodes: { node: string; rooms: { room: string; head: number; checkpointed: number; lagSeq: number }[] }[] };
    const row = s.nodes.find((n) => n.node === "n3")!.rooms[0]!;
    expect(row).to.include({ room, head: 30, checkpointed: 30, lagSeq: 0 });
    const human = await runAdmin(c.node(0).httpUrl, ["status"]);
    expect(human.stdout).to.match(/NODE\s+STATE/);

    // A bad bot floods the room; the operator restores it to seq 25.
    const restored = await runAdmin(c.node(0).httpUrl, ["restore", "--room", room, "--to-seq", "25", "--json"]);
    expect(restored.code, restored.stderr).to.equal(0);
    const lines = restored.stdout.trim().split("\n").map((l) => JSON.parse(l) as { progress?: unknown; result?: { head: number } });
    expect(lines.some((l) => l.progress !== undefined)).to.equal(true);
    expect(lines[lines.length - 1]!.result).to.include({ head: 25 });
    const token = await c.token();
    expect((await fullHistory(c.node(1).httpUrl, token, room)).map((m) => m.seq)).to.deep.equal(range(1, 25));
    await events.waitFor("reset", (r: { room: string; seq: number }) => r.room === room && r.seq === 25, 10_000);
    // Seqs continue from the restored head; the restored chain agrees.
    const next = await waitUntil(
      async () => {
        const ack = await emitAck<Ack<SendAck>>(a.socket, "send", { room, text: "after restore", id: "after-restore" });
        return ack.ok ? ack : undefined;
      },
      "a send after the restore",
      10_000,
      200,
    );
    expect(next.seq).to.equal(26);
    expect(await manifestHead(room)).to.equal(25);

    // Corrupt the first segment: a restore detects it, says so, fails, and leaves the room as it was.
    await runAdmin(c.node(0).httpUrl, ["checkpoint", "--room", room]);
    const manifestFile = path.join(c.root, "objects", "rooms", room, "manifest.json");
    const manifest = JSON.parse(readFileSync(manifestFile, "utf8")) as { segments: { key: string; inline?: string }[] };
    const seg = manifest.segments[0]!;
    const flip = (bytes: Buffer) => {
      bytes[Math.floor(bytes.length / 2)] = (bytes[Math.floor(bytes.length / 2)] ?? 0) ^ 0x55;
      return bytes;
    };
    if (seg.inline !== undefined) {
      // A small level-0 segment travels inside the manifest: corrupt its body there.
      seg.inline = flip(Buffer.from(seg.inline, "base64")).toString("base64");
      writeFileSync(manifestFile, JSON.stringify(manifest));
    } else {
      const first = path.join(c.root, "objects", ...seg.key.split("/"));
      writeFileSync(first, flip(readFileSync(first)));
    }
    const bad = await runAdmin(c.node(0).httpUrl, ["restore", "--room", room]);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/corrupt|checksum/);
    expect((await fullHistory(c.node(0).httpUrl, token, room)).map((m) => m.seq)).to.deep.equal(range(1, 26));
    const still = await emitAck<Ack<SendAck>>(a.socket, "send", { room, text: "still writable", id: "still" });
    expect(still.ok && still.seq).to.equal(27);
  });

  it("refuses admin requests that are malformed, with a clear error and no change", async () => {
    const bad = await runAdmin(c.node(0).httpUrl, ["restore", "--room", "NOT valid", "--json"]);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/bad_request/);
    const neg = await runAdmin(c.node(0).httpUrl, ["restore", "--room", "x", "--to-seq", "-3"]);
    expect(neg.code).to.not.equal(0);
    const missing = await runAdmin(c.node(0).httpUrl, ["restore", "--room", "no-such-room-ever"]);
    expect(missing.stderr).to.match(/not_found/);
  });
});

describe("cluster: durable rooms (S3 object store over the S3 protocol)", function () {
  this.timeout(150_000);
  let s3: TestS3;
  let c: TestCluster;
  const bucket = `fractal-dur-${process.pid}`;
  before(async function () {
    this.timeout(90_000);
    s3 = await startTestS3();
    await s3.createBucket(bucket);
    c = await startCluster({
      nodes: 3,
      extraArgs: ["--checkpoint-interval", `${INTERVAL_MS}ms`, "--object-store", `s3://${bucket}/chat`, "--s3-endpoint", s3.endpoint, ...LONG_LEASE],
      env: { AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey, AWS_REGION: "us-east-1" },
    });
  });
  after(async () => {
    await c?.stopAll();
    await s3?.stop();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") c.printLogTails(40);
  });

  async function checkpointedHead(room: string): Promise<number> {
    const r = await runAdmin(c.node(0).httpUrl, ["status", "--room", room, "--json"]);
    const s = JSON.parse(r.stdout) as { nodes: { rooms?: { room: string; checkpointed: number }[] }[] };
    return Math.max(0, ...s.nodes.flatMap((n) => (n.rooms ?? []).filter((x) => x.room === room).map((x) => x.checkpointed)));
  }

  it("kill -9 of the owner under load, data dir wiped, restart: everything checkpointed is back (S3)", async () => {
    await crashAndWipe(c, checkpointedHead);
  });

  it("object store down for a while: nodes keep serving, lag grows, then recovers with nothing lost", async () => {
    const room = await roomOwnedBy(c, "n1", "s3down");
    const a = await client(c, 1, "down-a");
    await join(a.socket, room);
    for (let i = 1; i <= 10; i++) await emitAck(a.socket, "send", { room, text: `before ${i}`, id: `b${i}` });
    await waitUntil(async () => ((await checkpointedHead(room)) === 10 ? true : undefined), "first checkpoint", 10_000, 200);

    s3.front.down = true;
    try {
      for (let i = 1; i <= 20; i++) {
        const ack = await emitAck<Ack<SendAck>>(a.socket, "send", { room, text: `during ${i}`, id: `d${i}` });
        expect(ack.ok, "sends are acknowledged while the object store is down").to.equal(true);
      }
      await sleep(3000);
      const during = await runAdmin(c.node(0).httpUrl, ["status", "--room", room, "--json"]);
      const owner = (JSON.parse(during.stdout) as { nodes: { node: string; lagSeconds: number; rooms: { room: string; lagSeq: number }[] }[] }).nodes.find(
        (n) => n.node === "n1",
      )!;
      expect(owner.rooms[0]!.lagSeq).to.equal(20);
      expect(owner.lagSeconds).to.be.greaterThan(2);
    } finally {
      s3.front.down = false;
    }
    await waitUntil(async () => ((await checkpointedHead(room)) === 30 ? true : undefined), "lag to recover", 40_000, 250);

    // Nothing was lost: lose the owner's disk now and everything comes back from S3.
    await c.kill9(c.indexOf("n1"));
    await c.restart(c.indexOf("n1"), { wipe: true });
    const hist = await fullHistory(c.node(2).httpUrl, await c.token(), room);
    expect(hist.map((m) => m.id)).to.deep.equal([...range(1, 10).map((i) => `b${i}`), ...range(1, 20).map((i) => `d${i}`)]);
  });
});
