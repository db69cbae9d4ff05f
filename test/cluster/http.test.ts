/**
 * The HTTP API of a real 3-node cluster: sessions valid everywhere, messages over HTTP (any node), room
 * info with one owner across nodes, cluster map, health/readiness and Prometheus metrics.
 */
import { statCpuSeconds } from "../../node/thread-cpu.js";
import { expect } from "chai";
import {
  MessageCollector,
  connect,
  fullHistory,
  http,
  join,
  range,
  roomOwnedBy,
  roomPath,
  send,
  session,
  uniqueRoom,
  uniqueUser,
  useCluster,
  type ChatMessage,
} from "../helpers/cluster.js";

describe("cluster: HTTP API", function () {
  this.timeout(30_000);
  const cluster = useCluster({ nodes: 3 });

  it("POST /api/session returns {token, user}; the token works on every node", async function () {
    const c = cluster();
    const name = uniqueUser("http");
    const res = await http(`${c.node(0).httpUrl}/api/session`, { body: { name } });
    expect(res.status, res.text).to.be.oneOf([200, 201]);
    expect(res.json.user).to.equal(name);
    expect(res.json.token).to.be.a("string").and.not.empty;
    const room = uniqueRoom("tok");
    for (const n of c.nodes) {
      const r = await http(`${n.httpUrl}${roomPath(room)}`, { token: res.json.token });
      expect(r.status, `${n.id}: ${r.text}`).to.equal(200);
    }
    // And a socket on another node accepts it.
    const s = await connect(c.node(2).httpUrl, res.json.token);
    const j = await join(s, room);
    expect(j.members).to.include(name);
  });

  it("POST and GET /api/rooms/:room/messages work on every node, with after/before/limit", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n2", "httpmsg");
    const name = uniqueUser("bot");
    const token = await session(c.node(0).httpUrl, name);

    const acks: { seq: number; ts: number }[] = [];
    for (let k = 1; k <= 9; k++) {
      const node = c.node(k % 3); // owner and both non-owners
      const r = await http(`${node.httpUrl}${roomPath(room)}/messages`, { token, body: { text: `bot ${k}`, id: `bot-${k}` } });
      expect(r.status, `${node.id}: ${r.text}`).to.be.oneOf([200, 201]);
      expect(r.json.seq).to.equal(k);
      expect(r.json.ts).to.be.a("number");
      acks.push(r.json);
    }

    for (const n of c.nodes) {
      const r = await http<{ messages: ChatMessage[] }>(`${n.httpUrl}${roomPath(room)}/messages`, { token });
      expect(r.status, r.text).to.equal(200);
      expect(r.json.messages.map((m) => m.seq), n.id).to.deep.equal(range(1, 9));
      const m5 = r.json.messages[4]!;
      expect(m5).to.deep.include({ room, seq: 5, id: "bot-5", user: name, text: "bot 5", ts: acks[4]!.ts });
    }
    const q = async (qs: string) =>
      (await http<{ messages: ChatMessage[] }>(`${c.node(2).httpUrl}${roomPath(room)}/messages?${qs}`, { token })).json.messages.map(
        (m) => m.seq,
      );
    expect(await q("after=3&limit=4")).to.deep.equal([4, 5, 6, 7]);
    expect(await q("before=4")).to.deep.equal([1, 2, 3]);
    expect(await q("after=2&before=6")).to.deep.equal([3, 4, 5]);
    expect(await q("limit=2")).to.have.length(2);
    expect(await q("after=9")).to.deep.equal([]);
  });

  it("an HTTP POST is delivered live to socket clients on other nodes", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n1", "httplive");
    const token = await session(c.node(1).httpUrl, uniqueUser("sock"));
    const s = await connect(c.node(1).httpUrl, token);
    const col = new MessageCollector(s);
    await join(s, room);
    const botToken = await session(c.node(2).httpUrl, uniqueUser("hook"));
    const r = await http(`${c.node(2).httpUrl}${roomPath(room)}/messages`, { token: botToken, body: { text: "from a bot", id: "hook-1" } });
    expect(r.status, r.text).to.be.oneOf([200, 201]);
    const [m] = await col.waitFor(room, 1);
    expect(m).to.deep.include({ room, seq: r.json.seq, ts: r.json.ts, text: "from a bot", id: "hook-1" });
  });

  it("GET /api/rooms/:room: every node reports the same owner and seq", async function () {
    const c = cluster();
    const token = await session(c.node(0).httpUrl, uniqueUser("info"));
    const s = await connect(c.node(0).httpUrl, token);
    for (let k = 0; k < 6; k++) {
      const room = uniqueRoom("info");
      await join(s, room);
      await send(s, room, "x", "x1");
      await send(s, room, "y", "y1");
      const infos = await Promise.all(
        c.nodes.map(async (n) => {
          const r = await http(`${n.httpUrl}${roomPath(room)}`, { token });
          expect(r.status, `${n.id}: ${r.text}`).to.equal(200);
          return r.json;
        }),
      );
      for (const info of infos) {
        expect(info.room).to.equal(room);
        expect(info.owner).to.equal(infos[0].owner);
        expect(info.seq).to.equal(2);
        expect(info.members).to.be.an("array");
      }
      expect(["n1", "n2", "n3"]).to.include(infos[0].owner);
    }
  });

  it("GET /api/cluster lists the three nodes with the same epoch on every node", async function () {
    const c = cluster();
    const token = await session(c.node(0).httpUrl, uniqueUser("cl"));
    const epochs: number[] = [];
    for (const n of c.nodes) {
      const r = await http(`${n.httpUrl}/api/cluster`, { token });
      expect(r.status, r.text).to.equal(200);
      const self = typeof r.json.self === "string" ? r.json.self : r.json.self?.id;
      expect(self, `self of ${n.id}: ${JSON.stringify(r.json.self)}`).to.equal(n.id);
      expect(r.json.epoch).to.be.a("number");
      epochs.push(r.json.epoch);
      expect(r.json.nodes).to.be.an("array").with.length(3);
      expect(r.json.nodes.map((x: { id: string }) => x.id).sort()).to.deep.equal(["n1", "n2", "n3"]);
    }
    expect(new Set(epochs).size, `epochs ${epochs}`).to.equal(1);
  });

  it("/healthz and /readyz return 200 on every node", async function () {
    for (const n of cluster().nodes) {
      expect((await http(`${n.httpUrl}/healthz`)).status, `${n.id} healthz`).to.equal(200);
      expect((await http(`${n.httpUrl}/readyz`)).status, `${n.id} readyz`).to.equal(200);
    }
  });

  it("/metrics serves Prometheus text with fractal_ metrics", async function () {
    for (const n of cluster().nodes) {
      const r = await http(`${n.httpUrl}/metrics`);
      expect(r.status).to.equal(200);
      expect(r.headers.get("content-type") ?? "").to.match(/^text\/plain/);
      expect(r.text).to.match(/^fractal_\w+/m);
      expect(r.text).to.match(/^# (HELP|TYPE) fractal_/m);
    }
  });

  it("/metrics reports CPU time per thread: the event loop, the SQLite bulk thread, the object store's thread, the rest", async function () {
    // Every node has committed messages by now (earlier tests), so each of its threads has run.
    for (const n of cluster().nodes) {
      const text = (await http(`${n.httpUrl}/metrics`)).text;
      const seconds = (thread: string) => Number(new RegExp(`^fractal_thread_cpu_seconds_total\\{[^}]*thread="${thread}"[^}]*\\} (\\S+)$`, "m").exec(text)?.[1]);
      expect(seconds("main"), `${n.id} main`).to.be.greaterThan(0.1);
      expect(seconds("sqlite-bulk"), `${n.id} sqlite-bulk`).to.be.greaterThan(0);
      expect(seconds("object-store"), `${n.id} object-store`).to.be.greaterThan(0);
      expect(seconds("other"), `${n.id} other`).to.be.greaterThan(0);
      // The parts add up to the process's CPU time as the kernel counts it (read after the scrape).
      const total = statCpuSeconds(`/proc/${n.pid}/stat`) ?? 0;
      const sum = ["main", "sqlite-bulk", "object-store", "other"].reduce((a, t) => a + seconds(t), 0);
      expect(sum, `${n.id}: threads ${sum.toFixed(2)} s, process ${total.toFixed(2)} s`).to.be.within(total * 0.9 - 0.1, total + 0.05);
    }
  });

  it("GET / serves the web chat page", async function () {
    const r = await http(`${cluster().node(1).httpUrl}/`);
    expect(r.status).to.equal(200);
    expect(r.headers.get("content-type") ?? "").to.match(/text\/html/);
  });

  it("history is the same on every node after mixed socket and HTTP sends", async function () {
    const c = cluster();
    const room = uniqueRoom("mixed");
    const token = await session(c.node(2).httpUrl, uniqueUser("mix"));
    const s = await connect(c.node(2).httpUrl, token);
    await join(s, room);
    for (let k = 1; k <= 4; k++) {
      await send(s, room, `s${k}`, `s${k}`);
      const r = await http(`${c.node(k % 3).httpUrl}${roomPath(room)}/messages`, { token, body: { text: `h${k}`, id: `h${k}` } });
      expect(r.status, r.text).to.be.oneOf([200, 201]);
    }
    const views = await Promise.all(c.nodes.map((n) => fullHistory(n.httpUrl, token, room)));
    for (const v of views) {
      expect(v.map((m) => m.seq)).to.deep.equal(range(1, 8));
      expect(v).to.deep.equal(views[0]);
    }
  });
});
