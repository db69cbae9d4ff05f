/**
 * Clients that do not read: a real node, real socket.io clients whose TCP sockets stop reading (as a stalled
 * connection or a hostile client does). The node must not queue without bound for them (it cuts them past
 * --client-backlog, and they resume from history), and must not wait for them when it stops.
 */
import { readFileSync } from "node:fs";
import { expect } from "chai";
import {
  connect,
  emitAck,
  fullHistory,
  session,
  sleep,
  uniqueRoom,
  uniqueUser,
  useCluster,
  waitUntil,
  type Socket,
} from "../helpers/cluster.js";

/** Makes a client stop reading its TCP socket (ws would resume a merely paused one); returns "read again". */
function stopReading(socket: Socket): () => void {
  const tcp = (socket.io.engine.transport as unknown as { ws: { _socket: { pause(): void; resume: () => unknown } } }).ws._socket;
  const resume = tcp.resume;
  tcp.pause();
  tcp.resume = () => tcp;
  return () => {
    tcp.resume = resume;
    tcp.resume();
  };
}

/** Sends `count` messages of ~3.9 KB to `room` from a fresh member; returns how many were acked. */
async function fill(url: string, room: string, count: number): Promise<number> {
  const s = await connect(url, await session(url, uniqueUser("filler")));
  await emitAck(s, "join", { room });
  const text = "y".repeat(3900);
  let acked = 0;
  for (let i = 0; i < count; i += 100) {
    const acks = await Promise.all(Array.from({ length: Math.min(100, count - i) }, (_, j) => emitAck(s, "send", { room, id: `f${i + j}`, text }, 20_000)));
    acked += acks.filter((a: { ok: boolean }) => a.ok).length;
  }
  s.close();
  return acked;
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line === undefined ? Number.NaN : Number(line.split(" ").pop());
}

describe("cluster: clients that do not read", function () {
  this.timeout(90_000);
  const cluster = useCluster({ nodes: 1, extraArgs: ["--client-backlog", "256KiB", "--rate-limit", "2000"] });

  it("a client that stops reading in a busy room is cut past --client-backlog, others keep every message, and it resumes from history", async () => {
    const url = cluster().node(0).httpUrl;
    const room = uniqueRoom("slow");
    const slowUser = uniqueUser("slow");
    const slowToken = await session(url, slowUser);
    const slow = await connect(url, slowToken);
    await emitAck(slow, "join", { room });
    const reader = await connect(url, await session(url, uniqueUser("reader")));
    await emitAck(reader, "join", { room });
    const seen: number[] = [];
    reader.on("message", (m: { seq: number }) => seen.push(m.seq));
    const senders = await Promise.all(
      [0, 1, 2].map(async () => {
        const s = await connect(url, await session(url, uniqueUser("writer")));
        await emitAck(s, "join", { room });
        return s;
      }),
    );
    expect(await metric(url, "fractal_slow_clients_cut_total")).to.equal(0);
    stopReading(slow);

    // ~3.9 KB per message: the loopback's socket buffers (several MB) fill first, then the node's backlog.
    // The heartbeat would drop the client only after 20 s; the guard must cut it long before 60 MB went by.
    const text = "x".repeat(3900);
    let sent = 0;
    let acked = 0;
    while ((await metric(url, "fractal_slow_clients_cut_total")) === 0 && sent < 16_000) {
      const batch = senders.flatMap((s, k) => Array.from({ length: 50 }, (_, i) => emitAck(s, "send", { room, id: `m${k}-${sent + i}`, text }, 20_000)));
      sent += batch.length;
      const acks = await Promise.all(batch);
      acked += acks.filter((a: { ok: boolean }) => a.ok).length;
    }
    expect(await metric(url, "fractal_slow_clients_cut_total"), `cut after ${sent} sends`).to.equal(1);
    expect(acked).to.equal(sent);

    // Everyone else got every message, in order, and was not cut.
    await waitUntil(() => seen.length === acked, `the reader to get all ${acked} messages`, 30_000);
    expect(seen).to.deep.equal(Array.from({ length: acked }, (_, i) => i + 1));
    expect(reader.connected).to.equal(true);
    for (const s of senders) expect(s.connected).to.equal(true);

    // The cut client comes back and resumes from where it was (it read nothing): all of it, from history.
    slow.close();
    const back = await connect(url, slowToken);
    const resumed: number[] = [];
    back.on("message", (m: { seq: number }) => resumed.push(m.seq));
    await emitAck(back, "join", { room, since: 0 });
    await waitUntil(() => resumed.length === acked, `the resumed client to catch up ${acked} messages`, 30_000);
    expect(resumed).to.deep.equal(Array.from({ length: acked }, (_, i) => i + 1));
    expect((await fullHistory(url, slowToken, room)).length).to.equal(acked);
    for (const s of [back, reader, ...senders]) s.close();
  });

  it("a client catching up on a long history at its own pace is not cut: the node sends the next page when it has read the last", async () => {
    const url = cluster().node(0).httpUrl;
    const room = uniqueRoom("catchup");
    // ~16 MB of history: more than the loopback's socket buffers and --client-backlog together.
    const total = await fill(url, room, 4000);
    expect(total).to.equal(4000);
    const cutBefore = await metric(url, "fractal_slow_clients_cut_total");
    const late = await connect(url, await session(url, uniqueUser("late")));
    const got: number[] = [];
    late.on("message", (m: { seq: number }) => got.push(m.seq));
    await emitAck(late, "join", { room, since: 0 });
    const readAgain = stopReading(late);
    await sleep(2000); // several sweeps of the slow-client guard while the client reads nothing
    readAgain();
    await waitUntil(() => got.length >= total, `the late client to catch up ${total} messages`, 30_000);
    expect(got).to.deep.equal(Array.from({ length: total }, (_, i) => i + 1));
    expect(late.connected).to.equal(true);
    expect(await metric(url, "fractal_slow_clients_cut_total")).to.equal(cutBefore);
    late.close();
  });

  it("a node stops gracefully and promptly although a client does not answer the close of its connection", async () => {
    const node = cluster().node(0);
    const idle = await connect(node.httpUrl, await session(node.httpUrl, uniqueUser("idle")));
    await emitAck(idle, "join", { room: uniqueRoom("idle") });
    stopReading(idle);
    await sleep(200);
    const started = Date.now();
    await cluster().stop(0);
    // The harness SIGKILLs a node that has not exited 10 s after SIGTERM (a websocket close waits up to 30 s
    // for the client's answer); a graceful stop exits 0 by itself.
    const exit = readFileSync(node.logFile, "utf8").split("\n").filter((l) => l.includes(`${node.id} exited:`)).pop();
    expect(exit, `how the node exited (stop took ${Date.now() - started} ms)`).to.include("code=0 signal=null");
  });
});
