/**
 * Rolling restart of every node under load, the documented procedure (README "Rolling restart"):
 * for each node, `fractal admin drain <id>`, stop it (SIGTERM), start it again, `fractal admin rebalance`.
 * Clients whose node restarts reconnect and resume with `since`; no acknowledged message is lost or
 * duplicated and every client's stream is gap-free.
 */
import { expect } from "chai";
import { io, type Socket } from "socket.io-client";
import { admin, emitAck, fullHistory, session, sleep, startCluster, uniqueRoom, uniqueUser, waitUntil, type Ack, type ChatMessage, type SendAck, type TestCluster } from "../helpers/cluster.js";



interface Member {
  socket: Socket;
  seqs: Map<string, number[]>;
}

/** A client in every room that reconnects by itself and resumes each room with since = highest seen. */
function member(url: string, token: string, rooms: string[]): Member {
  const seqs = new Map<string, number[]>(rooms.map((r) => [r, []]));
  const socket = io(url, { auth: { token }, transports: ["websocket"], reconnectionDelay: 200, reconnectionDelayMax: 1000, forceNew: true });
  let first = true;
  socket.on("connect", () => {
    for (const room of rooms) {
      const seen = seqs.get(room)!;
      socket.emit("join", first ? { room } : { room, since: seen.length ? seen[seen.length - 1] : 0 }, () => {});
    }
    first = false;
  });
  socket.on("message", (m: ChatMessage) => seqs.get(m.room)?.push(m.seq));
  return { socket, seqs };
}

describe("cluster: rolling restart of every node under load", function () {
  this.timeout(240_000);
  let c: TestCluster;
  before(async function () {
    this.timeout(60_000);
    c = await startCluster({ nodes: 3, extraArgs: ["--lease-ttl", "30s", "--checkpoint-interval", "300ms"] });
  });
  after(async () => {
    await c?.stopAll();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") c.printLogTails(40);
  });

  it("drain, restart and rebalance each node in turn: zero acknowledged messages lost or duplicated", async () => {
    const rooms = Array.from({ length: 8 }, () => uniqueRoom("roll"));
    const members: Member[] = [];
    for (const n of c.nodes) members.push(member(n.httpUrl, await session(n.httpUrl, uniqueUser("m")), rooms));
    await waitUntil(async () => (members.every((m) => m.socket.connected) ? true : undefined), "members to connect", 10_000, 50);
    await sleep(500);

    const acked = new Map<string, { room: string; seq: number }>();
    let stopped = false;
    const senders = members.map(async (m, k) => {
      for (let i = 0; !stopped; i++) {
        const room = rooms[(i + k) % rooms.length]!;
        const id = `roll-${k}-${i}`;
        for (let attempt = 0; attempt < 100 && !(stopped && attempt > 3); attempt++) {
          const ack = m.socket.connected ? await emitAck<Ack<SendAck>>(m.socket, "send", { room, text: id, id }, 3000).catch(() => undefined) : undefined;
          if (ack?.ok) {
            acked.set(id, { room, seq: ack.seq });
            break;
          }
          await sleep(150);
        }
        await sleep(20);
      }
    });

    for (const [i, n] of c.nodes.entries()) {
      const other = c.node((i + 1) % c.nodes.length).httpUrl;
      await admin(other, ["drain", n.id]);
      await c.stop(i);
      await c.restart(i);
      await admin(other, ["rebalance"]);
      await sleep(500);
    }
    await sleep(1500);
    stopped = true;
    await Promise.all(senders);
    await sleep(1000);

    const token = await c.token();
    let lost = 0;
    let duplicates = 0;
    for (const room of rooms) {
      const hist = await fullHistory(c.node(0).httpUrl, token, room);
      const bySeq = new Map(hist.map((m) => [m.seq, m.id]));
      const ids = new Set<string>();
      for (const m of hist) {
        if (ids.has(m.id)) duplicates++;
        ids.add(m.id);
      }
      for (const [id, a] of acked) if (a.room === room && bySeq.get(a.seq) !== id) lost++;
      // Every member ends with the room's whole history since it joined, in order, once.
      for (const m of members) {
        const seqs = m.seqs.get(room)!;
        for (let j = 1; j < seqs.length; j++) expect(seqs[j], `${room}: stream of a member`).to.equal(seqs[j - 1]! + 1);
      }
    }
    const map = (await (await fetch(`${c.node(0).httpUrl}/api/cluster`, { headers: { authorization: `Bearer ${token}` } })).json()) as { nodes: { id: string; state: string }[] };
    process.stdout.write(`      rolling-restart report: ${JSON.stringify({ acked: acked.size, lost, duplicates, states: map.nodes.map((n) => `${n.id}:${n.state}`) })}\n`);
    expect(acked.size).to.be.greaterThan(100);
    expect(lost).to.equal(0);
    expect(duplicates).to.equal(0);
    expect(map.nodes.every((n) => n.state === "active")).to.equal(true);
    for (const m of members) m.socket.close();
  });
});
