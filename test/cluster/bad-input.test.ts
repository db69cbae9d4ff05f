/**
 * Invariant 7, "bad input never hurts", against a real 3-node cluster: every malformed client input gets
 * its documented error code, and the nodes keep serving afterwards (a good send works at the end, no node
 * process exited).
 */
import { expect } from "chai";
import { connect as tcpConnect } from "node:net";
import {
  connect,
  emitAck,
  expectOk,
  http,
  join,
  roomInfo,
  roomOwnedBy,
  roomPath,
  send,
  session,
  sleep,
  uniqueRoom,
  uniqueUser,
  useCluster,
  MessageCollector,
  type Ack,
  type AckError,
  type Socket,
  type TestCluster,
} from "../helpers/cluster.js";

describe("cluster: bad input", function () {
  this.timeout(30_000);
  const ROOMS_PER_CONNECTION = 30;
  const cluster = useCluster({ nodes: 3, extraArgs: ["--max-rooms-per-connection", String(ROOMS_PER_CONNECTION)] });

  let room: string; // owned by n1; the client sits on n2, so bad input also crosses the forwarding path
  let notJoined: string;
  let token: string;
  let sock: Socket;

  before(async function () {
    this.timeout(30_000);
    const c = cluster();
    room = await roomOwnedBy(c, "n1", "bad");
    notJoined = uniqueRoom("never-joined");
    token = await session(c.node(1).httpUrl, uniqueUser("mallory"));
    sock = await connect(c.node(1).httpUrl, token);
    await join(sock, room);
  });

  /** All nodes still alive and serving: a good send through every node reaches a client. */
  async function assertClusterServes(c: TestCluster, label: string): Promise<void> {
    expect(c.crashes, `${label}: node processes exited`).to.deep.equal([]);
    for (let i = 0; i < c.nodes.length; i++) {
      expect(c.isRunning(i), `${label}: ${c.node(i).id} running`).to.equal(true);
      expect((await http(`${c.node(i).httpUrl}/healthz`)).status, `${label}: ${c.node(i).id} healthz`).to.equal(200);
    }
    const t = await session(c.node(2).httpUrl, uniqueUser("good"));
    const s = await connect(c.node(2).httpUrl, t);
    const col = new MessageCollector(s);
    const j = await join(s, room);
    const id = `good-${Date.now()}-${Math.random()}`.slice(0, 64);
    const ack = await send(s, room, "still fine", id);
    expect(ack.seq).to.equal(j.seq + 1);
    const [m] = await col.waitFor(room, 1);
    expect(m?.seq).to.equal(ack.seq);
    s.disconnect();
  }

  const long = (n: number): string => "x".repeat(n);

  type Case = { name: string; event: string; payload: () => unknown; code: string };
  const cases: Case[] = [
    // join
    { name: "join with a number", event: "join", payload: () => 42, code: "bad_request" },
    { name: "join with a string", event: "join", payload: () => "room", code: "bad_request" },
    { name: "join with null", event: "join", payload: () => null, code: "bad_request" },
    { name: "join with an array", event: "join", payload: () => [room], code: "bad_request" },
    { name: "join with room as number", event: "join", payload: () => ({ room: 7 }), code: "bad_request" },
    { name: "join without room", event: "join", payload: () => ({}), code: "bad_request" },
    { name: "join room UPPER", event: "join", payload: () => ({ room: "UPPER" }), code: "bad_request" },
    { name: "join room -x", event: "join", payload: () => ({ room: "-x" }), code: "bad_request" },
    { name: "join room of 65 chars", event: "join", payload: () => ({ room: "a".repeat(65) }), code: "bad_request" },
    { name: "join room ../etc", event: "join", payload: () => ({ room: "../etc" }), code: "bad_request" },
    { name: "join room empty", event: "join", payload: () => ({ room: "" }), code: "bad_request" },
    { name: "join room with a space", event: "join", payload: () => ({ room: "a b" }), code: "bad_request" },
    { name: "join since negative", event: "join", payload: () => ({ room, since: -1 }), code: "bad_request" },
    { name: "join since as string", event: "join", payload: () => ({ room, since: "3" }), code: "bad_request" },
    // send
    { name: "send with text as object", event: "send", payload: () => ({ room, text: { a: 1 }, id: "o1" }), code: "bad_request" },
    { name: "send with text as number", event: "send", payload: () => ({ room, text: 5, id: "o2" }), code: "bad_request" },
    { name: "send without id", event: "send", payload: () => ({ room, text: "hi" }), code: "bad_request" },
    { name: "send with empty id", event: "send", payload: () => ({ room, text: "hi", id: "" }), code: "bad_request" },
    { name: "send with id as number", event: "send", payload: () => ({ room, text: "hi", id: 12 }), code: "bad_request" },
    { name: "send with id of 65 chars", event: "send", payload: () => ({ room, text: "hi", id: long(65) }), code: "bad_request" },
    { name: "send with a lone surrogate in text", event: "send", payload: () => ({ room, text: "a\ud800b", id: "s1" }), code: "bad_request" },
    { name: "send with a lone surrogate in id", event: "send", payload: () => ({ room, text: "hi", id: "s\udfff" }), code: "bad_request" },
    { name: "send with empty text", event: "send", payload: () => ({ room, text: "", id: "e1" }), code: "bad_request" },
    { name: "send with text of 4001 chars", event: "send", payload: () => ({ room, text: long(4001), id: "big1" }), code: "too_large" },
    { name: "send to room UPPER", event: "send", payload: () => ({ room: "UPPER", text: "hi", id: "u1" }), code: "bad_request" },
    { name: "send to room ../etc", event: "send", payload: () => ({ room: "../etc", text: "hi", id: "u2" }), code: "bad_request" },
    { name: "send before join", event: "send", payload: () => ({ room: notJoined, text: "hi", id: "nj1" }), code: "not_joined" },
    { name: "send with null", event: "send", payload: () => null, code: "bad_request" },
    { name: "send with a string", event: "send", payload: () => "hello", code: "bad_request" },
    // history / leave
    { name: "history with limit 1000", event: "history", payload: () => ({ room, limit: 1000 }), code: "bad_request" },
    { name: "history with limit -1", event: "history", payload: () => ({ room, limit: -1 }), code: "bad_request" },
    { name: "history with limit as string", event: "history", payload: () => ({ room, limit: "ten" }), code: "bad_request" },
    { name: "history with bad room", event: "history", payload: () => ({ room: "UPPER" }), code: "bad_request" },
    { name: "history with null", event: "history", payload: () => null, code: "bad_request" },
    { name: "leave with bad room", event: "leave", payload: () => ({ room: "-x" }), code: "bad_request" },
    { name: "leave with a number", event: "leave", payload: () => 3, code: "bad_request" },
  ];

  describe("socket events get their error code", function () {
    for (const tc of cases) {
      it(`${tc.name} → ${tc.code}`, async function () {
        const ack = await emitAck<Ack>(sock, tc.event, tc.payload());
        expect(ack, JSON.stringify(ack)).to.have.property("ok", false);
        const err = (ack as AckError).error;
        expect(err?.code, JSON.stringify(ack)).to.equal(tc.code);
        expect(err?.message, "error.message is a string").to.be.a("string");
        expect(sock.connected, "socket still connected").to.equal(true);
      });
    }

    it("a text of exactly 4000 chars and an id of exactly 64 chars are accepted", async function () {
      const ack = await send(sock, room, long(4000), "i".repeat(64));
      expect(ack.seq).to.be.a("number");
    });

    it("nothing was stored by the rejected sends", async function () {
      const hist = expectOk(await emitAck<Ack<{ messages: { id: string }[] }>>(sock, "history", { room }));
      // Only the accepted send (this describe runs first, before any other send to the room).
      expect(hist.messages.map((m) => m.id)).to.deep.equal(["i".repeat(64)]);
    });
  });

  describe("hostile socket usage does not crash a node", function () {
    it("unknown event names (with and without ack)", async function () {
      sock.emit("no-such-event", { room });
      sock.emit("__proto__", { room });
      sock.emit("constructor");
      // If the server acks unknown events at all, it must be an error ack; a timeout is also acceptable.
      const ack = await emitAck<Ack>(sock, "shutdown", { room }, 1000).catch(() => undefined);
      if (ack !== undefined) expect(ack.ok).to.equal(false);
      await sleep(200);
      await assertClusterServes(cluster(), "after unknown events");
    });

    it("events without an ack callback, non-object payloads, extra arguments", async function () {
      sock.emit("join", null);
      sock.emit("join", { room });
      sock.emit("send", { room, text: "no ack", id: "noack-1" });
      sock.emit("send", "string");
      sock.emit("send", 12345);
      sock.emit("history", undefined);
      sock.emit("leave");
      sock.emit("typing", null);
      sock.emit("typing", 5);
      sock.emit("typing", { room: "UPPER" });
      sock.emit("typing", { room: notJoined });
      sock.emit("join", { room }, "extra", 1, () => undefined);
      sock.emit("send", () => undefined); // the ack callback is the only argument
      sock.emit("history", { room, limit: 1e308 }, () => undefined);
      sock.emit("join", { room: { toString: "x" } }, () => undefined);
      sock.emit("send", { room, text: "a".repeat(100), id: { $gt: "" } }, () => undefined);
      await sleep(500);
      expect(sock.connected, "socket still connected").to.equal(true);
      await assertClusterServes(cluster(), "after ack-less and odd payloads");
      // The ack-less send did go through (it was valid), exactly once.
      const hist = expectOk(await emitAck<Ack<{ messages: { id: string }[] }>>(sock, "history", { room }));
      expect(hist.messages.filter((m) => m.id === "noack-1")).to.have.length(1);
    });

    it("a 2 MB socket payload does not crash the node (the connection may be dropped)", async function () {
      const c = cluster();
      const t = await session(c.node(0).httpUrl, uniqueUser("huge"));
      const s = await connect(c.node(0).httpUrl, t);
      await join(s, room);
      const outcome = await new Promise<string>((resolve) => {
        s.once("disconnect", (reason) => resolve(`disconnect: ${reason}`));
        s.timeout(10_000).emit("send", { room, text: "y".repeat(2 * 1024 * 1024), id: "huge-1" }, (err: Error | null, ack: Ack) => {
          if (err) resolve(`no ack: ${err.message}`);
          else resolve(`ack: ${JSON.stringify(ack).slice(0, 200)}`);
        });
      });
      // Either socket.io dropped the connection or the server refused the message; never stored.
      if (outcome.startsWith("ack:")) expect(outcome).to.match(/too_large|bad_request/);
      s.close();
      await assertClusterServes(c, `after a 2 MB payload (${outcome})`);
    });

    it("a 2 MB payload over long-polling does not crash the node", async function () {
      const c = cluster();
      const t = await session(c.node(2).httpUrl, uniqueUser("hugepoll"));
      const s = await connect(c.node(2).httpUrl, t, { transports: ["polling"], upgrade: false });
      const outcome = await new Promise<string>((resolve) => {
        s.once("disconnect", (reason) => resolve(`disconnect: ${reason}`));
        s.timeout(10_000).emit("join", { room, pad: "z".repeat(2 * 1024 * 1024) }, (err: Error | null) =>
          resolve(err ? `no ack: ${err.message}` : "ack"),
        );
      });
      s.close();
      await assertClusterServes(c, `after a 2 MB polling payload (${outcome})`);
    });

    it("rooms named like Object.prototype's properties work like any other, on every node, and so do rooms after them", async function () {
      // hashring's cache found Object under "constructor", and then no node could route a new room (fuzz.test.ts).
      const c = cluster();
      const names = ["constructor", "valueof", "hasownproperty", ...Array.from({ length: 20 }, (_, i) => uniqueRoom(`after-${i}`))];
      for (let i = 0; i < 3; i++) {
        const s = await connect(c.node(i).httpUrl, await session(c.node(i).httpUrl, uniqueUser("proto")));
        for (const name of names) {
          await join(s, name);
          await send(s, name, `hello ${name}`, `proto-${i}-${name}`.slice(0, 64));
          await emitAck(s, "leave", { room: name });
        }
        s.close();
      }
      const info = await http(`${c.node(0).httpUrl}${roomPath("constructor")}`, { token });
      expect(info.status, info.text).to.equal(200);
      expect(info.json.seq).to.equal(3);
      await assertClusterServes(c, "after rooms named constructor");
    });

    it("joining more rooms than --max-rooms-per-connection is forbidden and changes nothing; leaving one makes room", async function () {
      const c = cluster();
      const user = uniqueUser("hoarder");
      const s = await connect(c.node(1).httpUrl, await session(c.node(1).httpUrl, user));
      const rooms = Array.from({ length: ROOMS_PER_CONNECTION + 1 }, () => uniqueRoom("hoard"));
      for (const r of rooms.slice(0, ROOMS_PER_CONNECTION)) await join(s, r);
      const extra = rooms[ROOMS_PER_CONNECTION]!;
      const refused = await emitAck<Ack>(s, "join", { room: extra });
      expect(refused.ok, JSON.stringify(refused)).to.equal(false);
      expect((refused as AckError).error.code).to.equal("forbidden");
      // Not counted anywhere: the room's owner has no such member, and a send to it is not_joined.
      expect((await roomInfo(c, extra)).members ?? []).not.to.include(user);
      expect(((await emitAck<Ack>(s, "send", { room: extra, text: "hi", id: "x1" })) as AckError).error.code).to.equal("not_joined");
      expectOk(await emitAck<Ack>(s, "leave", { room: rooms[0] }));
      await join(s, extra);
      expect(s.connected).to.equal(true);
      s.close();
    });

    it("many rapid joins and sends from one socket do not crash the node", async function () {
      const c = cluster();
      const t = await session(c.node(1).httpUrl, uniqueUser("flood"));
      const s = await connect(c.node(1).httpUrl, t);
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, k) =>
          emitAck<Ack>(s, k % 2 === 0 ? "join" : "history", { room: `flood-${k % 20}` }, 15_000).catch((e: Error) => ({
            ok: false as const,
            error: { code: "timeout", message: e.message },
          })),
        ),
      );
      for (const r of results) {
        if (!r.ok) expect(r.error.code, JSON.stringify(r)).to.be.oneOf(["rate_limited", "bad_request", "not_joined", "forbidden"]);
      }
      s.close();
      await assertClusterServes(c, "after a flood");
    });
  });

  describe("socket authentication", function () {
    const expectUnauthorized = async (p: Promise<Socket>): Promise<void> => {
      let err: Error | undefined;
      try {
        const s = await p;
        s.close();
      } catch (e) {
        err = e as Error;
      }
      expect(err, "connection must fail").to.be.instanceOf(Error);
      expect(err?.message).to.equal("unauthorized");
    };

    it("no token → connect_error unauthorized", async function () {
      await expectUnauthorized(connect(cluster().node(0).httpUrl, null));
    });
    it("bad token → connect_error unauthorized", async function () {
      await expectUnauthorized(connect(cluster().node(1).httpUrl, "not-a-token"));
    });
    it("tampered token → connect_error unauthorized", async function () {
      const good = await session(cluster().node(0).httpUrl, uniqueUser("tamper"));
      const last = good.slice(-1);
      const bad = good.slice(0, -1) + (last === "A" ? "B" : "A");
      await expectUnauthorized(connect(cluster().node(2).httpUrl, bad));
    });
    it("token of the wrong type → connect_error unauthorized", async function () {
      await expectUnauthorized(connect(cluster().node(0).httpUrl, null, { auth: { token: { evil: true } } }));
      await expectUnauthorized(connect(cluster().node(0).httpUrl, null, { auth: { token: 12345 } }));
    });
    it("no token over long-polling → connect_error unauthorized", async function () {
      await expectUnauthorized(connect(cluster().node(1).httpUrl, null, { transports: ["polling"], upgrade: false }));
    });
  });

  describe("HTTP bad input", function () {
    const badNames: [string, unknown][] = [
      ["empty", ""],
      ["33 chars", "a".repeat(33)],
      ["with a space", "a b"],
      ["with a slash", "a/b"],
      ["a number", 42],
      ["null", null],
    ];
    for (const [label, name] of badNames) {
      it(`POST /api/session with name ${label} → 400 bad_request`, async function () {
        const r = await http(`${cluster().node(0).httpUrl}/api/session`, { body: { name } });
        expect(r.status, r.text).to.equal(400);
        expect(r.json?.error?.code, r.text).to.equal("bad_request");
        expect(r.json?.error?.message).to.be.a("string");
      });
    }

    it("POST /api/session without a name → 400 bad_request", async function () {
      const r = await http(`${cluster().node(1).httpUrl}/api/session`, { body: {} });
      expect(r.status, r.text).to.equal(400);
      expect(r.json?.error?.code).to.equal("bad_request");
    });

    it("a non-JSON body → 400 bad_request", async function () {
      const c = cluster();
      const r = await http(`${c.node(0).httpUrl}/api/session`, { rawBody: "{not json" });
      expect(r.status, r.text).to.equal(400);
      expect(r.json?.error?.code, r.text).to.equal("bad_request");
      const r2 = await http(`${c.node(1).httpUrl}${roomPath(room)}/messages`, { token, rawBody: "text=hi&id=1" });
      expect(r2.status, r2.text).to.equal(400);
      expect(r2.json?.error?.code, r2.text).to.equal("bad_request");
    });

    it("requests Node's HTTP parser refuses (a 20 KB URL, a garbage request line) get the API's error body", async function () {
      const c = cluster();
      const long = await http(`${c.node(0).httpUrl}/api/rooms/${"a".repeat(20_000)}/messages`, { token });
      expect(long.status, long.text).to.equal(431);
      expect(long.json?.error?.code, long.text).to.equal("too_large");
      const port = c.node(1).httpPort;
      for (const raw of ["HELLO\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "\u0000\u0001\u0002\r\n\r\n"]) {
        const answer = await new Promise<string>((resolve, reject) => {
          const sock = tcpConnect(port, "127.0.0.1", () => sock.end(raw));
          let got = "";
          sock.on("data", (d) => (got += d.toString("latin1")));
          sock.on("close", () => resolve(got));
          sock.on("error", reject);
        });
        expect(answer, JSON.stringify(raw)).to.match(/^HTTP\/1\.1 400 /);
        expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code, answer).to.equal("bad_request");
      }
      await assertClusterServes(c, "after unparsable requests");
    });

    it("HTTP without a token → 401 unauthorized; with a bad token → 401", async function () {
      const c = cluster();
      for (const [method, url, body] of [
        ["GET", `${c.node(0).httpUrl}${roomPath(room)}`, undefined],
        ["GET", `${c.node(1).httpUrl}${roomPath(room)}/messages`, undefined],
        ["POST", `${c.node(2).httpUrl}${roomPath(room)}/messages`, { text: "hi", id: "noauth" }],
      ] as const) {
        const r = await http(url, { method, body });
        expect(r.status, `${method} ${url}: ${r.text}`).to.equal(401);
        expect(r.json?.error?.code).to.equal("unauthorized");
        const r2 = await http(url, { method, body, token: "garbage" });
        expect(r2.status, `${method} ${url} bad token: ${r2.text}`).to.equal(401);
        expect(r2.json?.error?.code).to.equal("unauthorized");
      }
    });

    it("bad room ids over HTTP → 400 bad_request", async function () {
      const c = cluster();
      for (const bad of ["UPPER", "-x", "a".repeat(65), "../etc", "a b"]) {
        const r = await http(`${c.node(1).httpUrl}${roomPath(bad)}`, { token });
        expect(r.status, `${bad}: ${r.text}`).to.equal(400);
        expect(r.json?.error?.code).to.equal("bad_request");
        const r2 = await http(`${c.node(1).httpUrl}${roomPath(bad)}/messages`, { token, body: { text: "x", id: "x" } });
        expect(r2.status, `${bad}: ${r2.text}`).to.equal(400);
        expect(r2.json?.error?.code).to.equal("bad_request");
      }
      // Undecodable percent-encoding in the room's path segment (found by fuzz.test.ts: it was a 500 internal).
      for (const raw of ["%", "%ZZ", "%E0%A4%A", "%ED%A0%80"]) {
        for (const [path, body] of [[`/api/rooms/${raw}`, undefined], [`/api/rooms/${raw}/messages`, { text: "x", id: "x" }]] as const) {
          const r = await http(`${c.node(1).httpUrl}${path}`, { token, body });
          expect(r.status, `${path}: ${r.text}`).to.equal(400);
          expect(r.json?.error?.code, r.text).to.equal("bad_request");
        }
      }
    });

    it("bad message bodies over HTTP get bad_request / too_large", async function () {
      const c = cluster();
      const url = `${c.node(2).httpUrl}${roomPath(room)}/messages`;
      const expectCode = async (body: unknown, code: string, statuses: number[]) => {
        const r = await http(url, { token, body });
        expect(r.status, `${JSON.stringify(body).slice(0, 80)}: ${r.text}`).to.be.oneOf(statuses);
        expect(r.json?.error?.code, r.text).to.equal(code);
      };
      await expectCode({ text: "", id: "h1" }, "bad_request", [400]);
      await expectCode({ text: "hi" }, "bad_request", [400]);
      await expectCode({ text: "hi", id: long(65) }, "bad_request", [400]);
      await expectCode({ text: { a: 1 }, id: "h2" }, "bad_request", [400]);
      await expectCode({ text: "a\ud800", id: "h3" }, "bad_request", [400]);
      await expectCode({ text: long(4001), id: "h3" }, "too_large", [400, 413]);
      await expectCode([1, 2], "bad_request", [400]);
      await expectCode(null, "bad_request", [400]);
    });

    it("bad history query parameters → 400 bad_request", async function () {
      const c = cluster();
      for (const qs of ["limit=1000", "limit=-1", "limit=abc", "after=-5", "before=x"]) {
        const r = await http(`${c.node(0).httpUrl}${roomPath(room)}/messages?${qs}`, { token });
        expect(r.status, `${qs}: ${r.text}`).to.equal(400);
        expect(r.json?.error?.code).to.equal("bad_request");
      }
    });

    it("a large HTTP body (2 MB) is refused without hurting the node", async function () {
      const c = cluster();
      const r = await http(`${c.node(1).httpUrl}${roomPath(room)}/messages`, {
        token,
        body: { text: "q".repeat(2 * 1024 * 1024), id: "huge-http" },
      }).catch((e: Error) => ({ status: 0, text: e.message, json: undefined, headers: new Headers() }));
      expect(r.status, r.text.slice(0, 200)).to.be.oneOf([0, 400, 413]);
      await assertClusterServes(c, "after a 2 MB HTTP body");
    });

    it("unknown API paths → 404 not_found", async function () {
      const r = await http(`${cluster().node(0).httpUrl}/api/nope`, { token });
      expect(r.status).to.equal(404);
      expect(r.json?.error?.code).to.equal("not_found");
    });
  });

  // A describe of its own: mocha runs a describe's own `it`s before its nested describes.
  describe("finally", function () {
    it("after all of the above every node still serves (good send at the end)", async function () {
      await assertClusterServes(cluster(), "end of bad-input suite");
    });
  });
});
