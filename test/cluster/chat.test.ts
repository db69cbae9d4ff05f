/**
 * Chat over a real 3-node cluster: fan-out across nodes, total order, forwarding, idempotent sends,
 * gap-free resume on another node, long-polling clients, presence and typing.
 */
import { expect } from "chai";
import {
  EventLog,
  MessageCollector,
  connect,
  emitAck,
  expectOk,
  fullHistory,
  http,
  join,
  ownerOf,
  range,
  roomInfo,
  roomOwnedBy,
  roomPath,
  send,
  session,
  sleep,
  waitUntil,
  uniqueRoom,
  uniqueUser,
  useCluster,
  type Ack,
  type ChatMessage,
} from "../helpers/cluster.js";

describe("cluster: chat across nodes", function () {
  this.timeout(30_000);
  const cluster = useCluster({ nodes: 3 });

  /** A user with a session and a connected, collecting socket on node i. */
  async function user(name: string, i: number, opts: Parameters<typeof connect>[2] = {}) {
    const c = cluster();
    const userName = uniqueUser(name);
    const token = await session(c.node(i).httpUrl, userName);
    const socket = await connect(c.node(i).httpUrl, token, opts);
    const collector = new MessageCollector(socket);
    return { name: userName, token, socket, collector, node: c.node(i) };
  }

  function assertSeqOrder(msgs: ChatMessage[], expected: number[], who: string): void {
    expect(
      msgs.map((m) => m.seq),
      `${who}: seqs in arrival order`,
    ).to.deep.equal(expected);
  }

  it("fans out every message exactly once, in seq order, to clients on all three nodes (concurrent senders)", async function () {
    const room = uniqueRoom("fanout");
    const users = await Promise.all([user("alice", 0), user("bob", 1), user("carol", 2)]);
    for (const u of users) {
      const ack = await join(u.socket, room);
      expect(ack.room).to.equal(room);
      expect(ack.seq).to.equal(0);
    }

    const PER_SENDER = 15;
    const acks = new Map<number, { user: string; id: string; text: string; ts: number }>();
    await Promise.all(
      users.map(async (u) => {
        let prev = 0;
        for (let k = 0; k < PER_SENDER; k++) {
          const id = `${u.name}-${k}`;
          const text = `hello ${k} from ${u.name}`;
          const ack = await send(u.socket, room, text, id);
          expect(acks.has(ack.seq), `seq ${ack.seq} acked twice`).to.equal(false);
          expect(ack.seq, `${u.name}'s own seqs increase`).to.be.greaterThan(prev);
          expect(ack.ts).to.be.a("number");
          prev = ack.seq;
          acks.set(ack.seq, { user: u.name, id, text, ts: ack.ts });
        }
      }),
    );
    const total = PER_SENDER * users.length;
    expect([...acks.keys()].sort((a, b) => a - b), "acked seqs are 1..N").to.deep.equal(range(1, total));

    for (const u of users) {
      const msgs = await u.collector.waitFor(room, total);
      await sleep(300); // anything extra (a duplicate) would show up now
      const all = u.collector.messages(room);
      expect(all.length, `${u.name} on ${u.node.id}: message count`).to.equal(total);
      assertSeqOrder(all, range(1, total), `${u.name} on ${u.node.id}`);
      for (const m of msgs) {
        const a = acks.get(m.seq)!;
        expect({ room: m.room, user: m.user, id: m.id, text: m.text, ts: m.ts }).to.deep.equal({
          room,
          user: a.user,
          id: a.id,
          text: a.text,
          ts: a.ts,
        });
      }
    }

    // History agrees with what was delivered.
    const hist = await fullHistory(users[1]!.node.httpUrl, users[1]!.token, room);
    expect(hist.map((m) => m.seq)).to.deep.equal(range(1, total));
  });

  it("forwards a send from a non-owner node; the ack's seq/ts match the delivered message", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n1", "fwd");
    const onOwner = await user("owner-side", 0);
    const sender = await user("fwd-sender", 1);
    const third = await user("third", 2);
    for (const u of [onOwner, sender, third]) await join(u.socket, room);

    const ack = await send(sender.socket, room, "forwarded hello", "fwd-1");
    expect(ack.seq).to.equal(1);
    expect(ack.ts).to.be.a("number");
    expect(Math.abs(ack.ts - Date.now())).to.be.lessThan(60_000);

    for (const u of [sender, onOwner, third]) {
      const [m] = await u.collector.waitFor(room, 1);
      expect(m, `delivered to ${u.node.id}`).to.deep.include({
        room,
        seq: ack.seq,
        ts: ack.ts,
        id: "fwd-1",
        user: sender.name,
        text: "forwarded hello",
      });
    }
    const info = await roomInfo(c, room, 2);
    expect(info.owner).to.equal("n1");
    expect(info.seq).to.equal(1);
  });

  describe("idempotent sends", function () {
    it("the same {room, text, id} sent twice returns the same seq and stores one message", async function () {
      const c = cluster();
      const room = await roomOwnedBy(c, "n3", "idem");
      const a = await user("idem", 0); // non-owner: forwarded path
      const watcher = await user("watch", 1);
      await join(a.socket, room);
      await join(watcher.socket, room);

      const first = await send(a.socket, room, "once", "dup-1");
      const second = await send(a.socket, room, "once", "dup-1");
      expect(second.seq).to.equal(first.seq);

      // Same user, same id, through another node (a second connection on n2).
      const other = await connect(c.node(1).httpUrl, a.token);
      await join(other, room);
      const third = await send(other, room, "once", "dup-1");
      expect(third.seq).to.equal(first.seq);

      const next = await send(a.socket, room, "next", "dup-2");
      expect(next.seq).to.equal(first.seq + 1);

      await watcher.collector.waitFor(room, 2);
      await sleep(300);
      expect(watcher.collector.seqs(room), "a retry is not delivered again").to.deep.equal([first.seq, next.seq]);
      const hist = await fullHistory(c.node(2).httpUrl, a.token, room);
      expect(hist.map((m) => m.id)).to.deep.equal(["dup-1", "dup-2"]);
      expect((await roomInfo(c, room)).seq).to.equal(2);
    });

    it("a socket send and an HTTP POST with the same id (same user) return the same seq", async function () {
      const c = cluster();
      const room = uniqueRoom("idem-http");
      const a = await user("idemhttp", 1);
      await join(a.socket, room);
      const viaSocket = await send(a.socket, room, "both ways", "same-id");

      const res = await http<{ seq: number; ts: number }>(`${c.node(2).httpUrl}${roomPath(room)}/messages`, {
        token: a.token,
        body: { text: "both ways", id: "same-id" },
      });
      expect(res.status, res.text).to.be.oneOf([200, 201]);
      expect(res.json.seq).to.equal(viaSocket.seq);

      // And the other way round: HTTP first, then the socket.
      const res2 = await http<{ seq: number; ts: number }>(`${c.node(0).httpUrl}${roomPath(room)}/messages`, {
        token: a.token,
        body: { text: "http first", id: "http-id" },
      });
      expect(res2.status, res2.text).to.be.oneOf([200, 201]);
      const viaSocket2 = await send(a.socket, room, "http first", "http-id");
      expect(viaSocket2.seq).to.equal(res2.json.seq);

      const hist = await fullHistory(c.node(0).httpUrl, a.token, room);
      expect(hist.map((m) => [m.seq, m.id])).to.deep.equal([
        [1, "same-id"],
        [2, "http-id"],
      ]);
    });

    it("the same id from two different users creates two messages (dedupe is per user)", async function () {
      const room = uniqueRoom("idem-users");
      const a = await user("ua", 0);
      const b = await user("ub", 2);
      await join(a.socket, room);
      await join(b.socket, room);
      const s1 = await send(a.socket, room, "from a", "shared");
      const s2 = await send(b.socket, room, "from b", "shared");
      expect(s2.seq).to.not.equal(s1.seq);
      const hist = await fullHistory(cluster().node(1).httpUrl, a.token, room);
      expect(hist.map((m) => m.user)).to.deep.equal([a.name, b.name]);
    });
  });

  describe("gap-free resume", function () {
    it("a client that reconnects to ANOTHER node with since=lastSeq gets exactly the missed messages, then live ones", async function () {
      const c = cluster();
      const room = await roomOwnedBy(c, "n1", "resume");
      const reader = await user("reader", 1);
      const writer = await user("writer", 2);
      await join(reader.socket, room);
      await join(writer.socket, room);

      for (let k = 1; k <= 5; k++) await send(writer.socket, room, `before ${k}`, `b${k}`);
      const seen = await reader.collector.waitFor(room, 5);
      const lastSeq = seen[seen.length - 1]!.seq;
      expect(lastSeq).to.equal(5);

      reader.socket.disconnect();
      for (let k = 1; k <= 7; k++) await send(writer.socket, room, `missed ${k}`, `m${k}`);

      // Reconnect on n3 (neither the old node nor the owner), asking for everything after lastSeq.
      const again = await connect(c.node(2).httpUrl, reader.token);
      const col = new MessageCollector(again);
      const ack = await join(again, room, lastSeq);
      expect(ack.seq).to.be.at.least(12);
      const missed = await col.waitFor(room, 7);
      assertSeqOrder(missed, range(6, 12), "resumed reader (backlog)");
      expect(missed.map((m) => m.id)).to.deep.equal(range(1, 7).map((k) => `m${k}`));

      for (let k = 1; k <= 4; k++) await send(writer.socket, room, `live ${k}`, `l${k}`);
      const all = await col.waitFor(room, 11);
      await sleep(300);
      assertSeqOrder(col.messages(room), range(6, 16), "resumed reader (backlog + live)");
      expect(all.slice(7).map((m) => m.id)).to.deep.equal(["l1", "l2", "l3", "l4"]);
    });

    it("resume while other clients keep sending during the join: no duplicates, no gaps", async function () {
      const c = cluster();
      const room = await roomOwnedBy(c, "n2", "resume-busy");
      const writer = await user("busy-writer", 0);
      await join(writer.socket, room);
      for (let k = 1; k <= 20; k++) await send(writer.socket, room, `pre ${k}`, `pre${k}`);

      const readerToken = await session(c.node(2).httpUrl, uniqueUser("late"));
      const late = await connect(c.node(2).httpUrl, readerToken);
      const col = new MessageCollector(late);
      // Keep sending while the late reader joins with since=10.
      const sending = (async () => {
        for (let k = 1; k <= 20; k++) await send(writer.socket, room, `during ${k}`, `dur${k}`);
      })();
      await join(late, room, 10);
      await sending;
      await col.waitFor(room, 30);
      await sleep(300);
      assertSeqOrder(col.messages(room), range(11, 40), "late reader");
    });

    it("join with since=0 on the owner replays the whole room; without since only live messages follow", async function () {
      const c = cluster();
      const room = await roomOwnedBy(c, "n2", "replay");
      const w = await user("rw", 0);
      await join(w.socket, room);
      for (let k = 1; k <= 3; k++) await send(w.socket, room, `m ${k}`, `r${k}`);

      const full = await user("full", 1);
      await join(full.socket, room, 0);
      assertSeqOrder(await full.collector.waitFor(room, 3), [1, 2, 3], "since=0");

      const liveOnly = await user("liveonly", 2);
      const ack = await join(liveOnly.socket, room);
      expect(ack.seq).to.equal(3);
      await send(w.socket, room, "m 4", "r4");
      await liveOnly.collector.waitFor(room, 1);
      await sleep(200);
      assertSeqOrder(liveOnly.collector.messages(room), [4], "no since");
    });
  });

  it("a long-polling-only client on a non-owner node joins, sends and receives", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n1", "polling");
    const poller = await user("poller", 1, { transports: ["polling"], upgrade: false });
    const ws = await user("wsuser", 2);
    expect(poller.socket.io.engine.transport.name).to.equal("polling");

    const j = await join(poller.socket, room);
    expect(j.seq).to.equal(0);
    await join(ws.socket, room);

    const mine = await send(poller.socket, room, "over polling", "p1");
    const theirs = await send(ws.socket, room, "over websocket", "w1");
    const got = await poller.collector.waitFor(room, 2);
    assertSeqOrder(got, [mine.seq, theirs.seq], "polling client");
    expect(got.map((m) => m.text)).to.deep.equal(["over polling", "over websocket"]);
    await ws.collector.waitFor(room, 2);
    expect(poller.socket.io.engine.transport.name, "never upgraded").to.equal("polling");

    const hist = expectOk(await emitAck<Ack<{ messages: ChatMessage[] }>>(poller.socket, "history", { room }));
    expect(hist.messages.map((m) => m.seq)).to.deep.equal([1, 2]);
  });

  describe("history over the socket", function () {
    it("returns ascending pages with before/after/limit", async function () {
      const room = uniqueRoom("hist");
      const a = await user("hist", 1);
      await join(a.socket, room);
      for (let k = 1; k <= 10; k++) await send(a.socket, room, `h${k}`, `h${k}`);
      const h = async (p: object) =>
        expectOk(await emitAck<Ack<{ messages: ChatMessage[] }>>(a.socket, "history", { room, ...p })).messages.map(
          (m) => m.seq,
        );
      expect(await h({})).to.deep.equal(range(1, 10));
      expect(await h({ after: 3, limit: 4 })).to.deep.equal([4, 5, 6, 7]);
      expect(await h({ before: 4 })).to.deep.equal([1, 2, 3]);
      expect(await h({ after: 10 })).to.deep.equal([]);
    });
  });

  describe("presence and typing", function () {
    it("join/leave presence and typing reach clients on other nodes; join ack lists members", async function () {
      const c = cluster();
      const room = await roomOwnedBy(c, "n3", "presence");
      const a = await user("pa", 0);
      const b = await user("pb", 1);
      const aLog = new EventLog(a.socket, ["presence", "typing"]);

      const ja = await join(a.socket, room);
      expect(ja.members).to.be.an("array");
      expect(ja.members, "a's own join ack").to.include(a.name);

      const jb = await join(b.socket, room);
      expect(jb.members, "b's join ack lists a").to.include(a.name);
      expect(jb.members).to.include(b.name);
      await aLog.waitFor("presence", (p) => p.user === b.name && p.event === "join" && p.room === room);

      const info = await roomInfo(c, room, 1);
      expect(info.members).to.include.members([a.name, b.name]);

      b.socket.emit("typing", { room });
      const t = await aLog.waitFor("typing", (p) => p.user === b.name);
      expect(t).to.deep.equal({ room, user: b.name });

      expectOk(await emitAck<Ack>(b.socket, "leave", { room }));
      await aLog.waitFor("presence", (p) => p.user === b.name && p.event === "leave" && p.room === room);

      // After leave, b no longer receives the room's messages.
      await send(a.socket, room, "after leave", "al1");
      await a.collector.waitFor(room, 1);
      await sleep(300);
      expect(b.collector.messages(room)).to.have.length(0);

      // A user on the third node that disconnects abruptly is reported as having left.
      const cc = await user("pc", 2);
      await join(cc.socket, room);
      await aLog.waitFor("presence", (p) => p.user === cc.name && p.event === "join");
      cc.socket.disconnect();
      await aLog.waitFor("presence", (p) => p.user === cc.name && p.event === "leave", 10_000);
      await waitMembers(c, room, (m) => !m.includes(cc.name) && m.includes(a.name));
    });
  });

  it("a flood of typing events reaches the room at most twice a second per connection", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n2", "typing-flood");
    const a = await user("ta", 0);
    const b = await user("tb", 2);
    const aLog = new EventLog(a.socket, ["typing"]);
    await join(a.socket, room);
    await join(b.socket, room);
    const started = Date.now();
    for (let i = 0; i < 50; i++) b.socket.emit("typing", { room });
    const burstMs = Date.now() - started;
    await aLog.waitFor("typing", (p) => p.user === b.name);
    await sleep(1500); // anything else the burst let through has arrived by now
    const relayed = aLog.all("typing", (p) => p.user === b.name).length;
    // One per 500 ms of the burst (it takes a few ms; the whole burst used to go through: 50 events).
    expect(relayed, `typing events relayed from a burst of 50 in ${burstMs} ms`).to.be.at.most(1 + Math.ceil(burstMs / 500));
    // The throttle is per interval, not a ban: typing again later is relayed.
    await sleep(600);
    b.socket.emit("typing", { room });
    await waitUntil(() => aLog.all("typing", (p) => p.user === b.name).length === relayed + 1, "the later typing event");
  });

  it("every node reports the same owner for a room", async function () {
    const c = cluster();
    const owners = new Set<string>();
    for (let k = 0; k < 5; k++) {
      const room = uniqueRoom("owner");
      const seen = await Promise.all(c.nodes.map((_, i) => ownerOf(c, room, i)));
      expect(new Set(seen).size, `owners of ${room}: ${seen.join(",")}`).to.equal(1);
      owners.add(seen[0]!);
    }
    for (const o of owners) expect(["n1", "n2", "n3"]).to.include(o);
  });
});

async function waitMembers(
  c: Parameters<typeof roomInfo>[0],
  room: string,
  pred: (members: string[]) => boolean,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  let last: string[] = [];
  while (Date.now() < deadline) {
    last = (await roomInfo(c, room)).members;
    if (pred(last)) return;
    await sleep(200);
  }
  throw new Error(`members of ${room} never matched; last ${JSON.stringify(last)}`);
}

