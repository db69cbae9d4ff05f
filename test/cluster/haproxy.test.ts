/**
 * The load-balanced setup: HAProxy (Debian package) in front of three real nodes, with the configuration
 * `fractal cluster --lb-port` generates. Websocket and long-polling clients chat through it; a node killed
 * behind it makes its clients reconnect through HAProxy to another node and resume with `since`, gap-free.
 */
import { expect } from "chai";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { io, type Socket } from "socket.io-client";
import { haproxyConfig } from "../../node/cli/haproxy.js";
import { emitAck, http, pickPorts, roomOwnedBy, session, sleep, startCluster, uniqueRoom, uniqueUser, waitUntil, type Ack, type ChatMessage, type SendAck, type TestCluster } from "../helpers/cluster.js";

const haveHaproxy = spawnSync("haproxy", ["-v"]).status === 0;

/** A client that reconnects by itself and re-joins with since = the highest seq it has seen. */
function resumingClient(url: string, token: string, room: string, transports: ("websocket" | "polling")[]) {
  const seqs: number[] = [];
  let highest = 0;
  const socket: Socket = io(url, { auth: { token }, transports, upgrade: transports.length > 1, withCredentials: true, reconnectionDelay: 200, reconnectionDelayMax: 1000, forceNew: true });
  let joins = 0;
  socket.on("connect", () => {
    socket.emit("join", joins++ === 0 ? { room } : { room, since: highest }, () => {});
  });
  socket.on("message", (m: ChatMessage) => {
    if (m.room !== room) return;
    seqs.push(m.seq);
    highest = Math.max(highest, m.seq);
  });
  return { socket, seqs, joins: () => joins };
}

describe("cluster: behind HAProxy", function () {
  this.timeout(120_000);
  let c: TestCluster;
  let haproxy: ChildProcess | undefined;
  let lbUrl = "";
  before(async function () {
    if (!haveHaproxy) {
      console.log("      (haproxy is not installed: apt-get install -y haproxy; skipping)");
      return this.skip();
    }
    this.timeout(60_000);
    c = await startCluster({ nodes: 3, extraArgs: ["--lease-ttl", "60s"] });
    const [port] = await pickPorts(1);
    const cfg = path.join(c.root, "haproxy.cfg");
    writeFileSync(cfg, haproxyConfig(c.nodes.map((n) => ({ id: n.id, host: "127.0.0.1", port: n.httpPort })), { host: "127.0.0.1", port: port! }));
    expect(spawnSync("haproxy", ["-c", "-f", cfg]).status, "haproxy -c accepts the generated configuration").to.equal(0);
    haproxy = spawn("haproxy", ["-db", "-f", cfg], { stdio: "ignore" });
    lbUrl = `http://127.0.0.1:${port}`;
    await waitUntil(async () => ((await fetch(`${lbUrl}/readyz`).catch(() => undefined))?.ok ? true : undefined), "HAProxy to serve", 15_000, 200);
  });
  after(async () => {
    haproxy?.kill("SIGTERM");
    await c?.stopAll();
  });

  it("websocket and long-polling clients chat through one port", async () => {
    const room = uniqueRoom("lb");
    const a = resumingClient(lbUrl, await session(lbUrl, uniqueUser("ws")), room, ["websocket"]);
    const b = resumingClient(lbUrl, await session(lbUrl, uniqueUser("poll")), room, ["polling"]);
    await waitUntil(async () => (a.socket.connected && b.socket.connected ? true : undefined), "both clients to connect", 10_000, 50);
    await sleep(300);
    for (let i = 1; i <= 10; i++) {
      const sender = i % 2 ? a.socket : b.socket;
      const ack = await emitAck<Ack<SendAck>>(sender, "send", { room, text: `m${i}`, id: `m${i}` });
      expect(ack.ok).to.equal(true);
    }
    await waitUntil(async () => (a.seqs.length >= 10 && b.seqs.length >= 10 ? true : undefined), "deliveries", 10_000, 50);
    expect(a.seqs).to.deep.equal(Array.from({ length: 10 }, (_, i) => i + 1));
    expect(b.seqs).to.deep.equal(Array.from({ length: 10 }, (_, i) => i + 1));
    a.socket.close();
    b.socket.close();
  });

  it("a node killed behind HAProxy: its clients reconnect through HAProxy and resume without a gap", async () => {
    const room = await roomOwnedBy(c, "n1", "lbkill");
    const clients: ReturnType<typeof resumingClient>[] = [];
    for (let i = 0; i < 6; i++) clients.push(resumingClient(lbUrl, await session(lbUrl, uniqueUser(`c${i}`)), room, i % 2 ? ["polling"] : ["websocket"]));
    await waitUntil(async () => (clients.every((k) => k.socket.connected) ? true : undefined), "clients to connect", 10_000, 50);
    await sleep(500);
    const sender = await session(c.node(0).httpUrl, uniqueUser("sender"));
    let sent = 0;
    const post = async () => {
      sent++;
      const res = await http(`${c.node(0).httpUrl}/api/rooms/${room}/messages`, { method: "POST", token: sender, body: { text: `m${sent}`, id: `m${sent}` } });
      expect(res.status).to.equal(200);
    };
    for (let i = 0; i < 5; i++) await post();
    // Kill a non-owner node that holds some of the clients (round robin spread them over all three).
    await c.kill9(c.indexOf("n2"));
    for (let i = 0; i < 10; i++) {
      await post();
      await sleep(100);
    }
    await waitUntil(async () => (clients.every((k) => k.seqs.length >= sent) ? true : undefined), "every client to have every message", 20_000, 100);
    await sleep(300);
    for (const k of clients) expect(k.seqs, "each client saw 1..N once, in order").to.deep.equal(Array.from({ length: sent }, (_, i) => i + 1));
    expect(clients.some((k) => k.joins() > 1), "some clients had to reconnect").to.equal(true);
    for (const k of clients) k.socket.close();
    await c.restart(c.indexOf("n2"));
  });
});
