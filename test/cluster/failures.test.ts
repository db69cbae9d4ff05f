/**
 * Process failures in a real 3-node cluster: kill -9 of a non-owner, kill -9 of the owner under a steady
 * send load followed by a restart on the same data dir (no acknowledged message may be lost, seqs stay
 * contiguous, retries with the same id are idempotent), and a graceful stop + restart with a wiped disk.
 */
import { expect } from "chai";
import {
  EventLog,
  MessageCollector,
  connect,
  emitAck,
  fullHistory,
  join,
  ownerOf,
  range,
  roomOwnedBy,
  send,
  session,
  sleep,
  uniqueUser,
  useCluster,
  waitUntil,
  type Ack,
  type ChatMessage,
  type SendAck,
  type Socket,
  type TestCluster,
} from "../helpers/cluster.js";

describe("cluster: node failures", function () {
  this.timeout(60_000);
  // A long lease: these tests restart a killed owner on its own disk and expect it to stay the owner
  // (failover to other nodes is tested in failover.test.ts).
  const cluster = useCluster({ nodes: 3, extraArgs: ["--lease-ttl", "120s"] });

  // Stops a background send load if its test fails or times out, so it cannot spill into later tests.
  let abortLoad: (() => void) | undefined;
  afterEach(function () {
    abortLoad?.();
    abortLoad = undefined;
  });

  /** Waits until every running node reports the same owner for `room` (after membership changes). */
  async function agreedOwner(c: TestCluster, room: string, timeoutMs = 15_000): Promise<string> {
    return waitUntil(
      async () => {
        const owners = await Promise.all(
          c.nodes.map((_, i) => i).filter((i) => c.isRunning(i)).map((i) => ownerOf(c, room, i)),
        );
        return new Set(owners).size === 1 ? owners[0] : undefined;
      },
      `all nodes to agree on the owner of ${room}`,
      timeoutMs,
      200,
    );
  }

  async function userOn(c: TestCluster, i: number, name: string) {
    const n = uniqueUser(name);
    const token = await session(c.node(i).httpUrl, n);
    const socket = await connect(c.node(i).httpUrl, token);
    return { name: n, token, socket, collector: new MessageCollector(socket) };
  }

  it("kill -9 of a NON-owner node: clients on the other nodes keep chatting; its clients resume elsewhere", async function () {
    const c = cluster();
    const room = await roomOwnedBy(c, "n1", "kill-nonowner");
    const a = await userOn(c, 0, "ka"); // on the owner
    const b = await userOn(c, 1, "kb"); // on a non-owner that survives
    const v = await userOn(c, 2, "kv"); // on the victim
    for (const u of [a, b, v]) await join(u.socket, room);

    await send(a.socket, room, "hi 1", "pre-a");
    await send(b.socket, room, "hi 2", "pre-b");
    const vSeen = await v.collector.waitFor(room, 2);
    const vLast = vSeen[vSeen.length - 1]!.seq;

    await c.kill9(2);
    expect(c.isRunning(2)).to.equal(false);

    // Right after the kill, and again after the victim's lease has had time to expire.
    let expected = 2;
    for (const phase of ["immediately", "after 4 s"]) {
      if (phase !== "immediately") await sleep(4000);
      for (let k = 0; k < 3; k++) {
        const ra = await send(a.socket, room, `${phase} a${k}`, `${phase}-a${k}`.replace(/ /g, "_"));
        const rb = await send(b.socket, room, `${phase} b${k}`, `${phase}-b${k}`.replace(/ /g, "_"));
        expect(ra.seq, phase).to.equal(++expected);
        expect(rb.seq, phase).to.equal(++expected);
      }
    }
    for (const u of [a, b]) {
      await u.collector.waitFor(room, expected);
      expect(u.collector.seqs(room)).to.deep.equal(range(1, expected));
    }
    expect(await ownerOf(c, room, 0)).to.equal("n1");

    // The victim's client reconnects to a surviving node and catches up exactly.
    const again = await connect(c.node(1).httpUrl, v.token);
    const col = new MessageCollector(again);
    await join(again, room, vLast);
    await col.waitFor(room, expected - vLast);
    await sleep(200);
    expect(col.seqs(room)).to.deep.equal(range(vLast + 1, expected));

    // Bring it back for the next tests; all nodes converge on one owner again.
    await c.restart(2);
    await agreedOwner(c, room);
    const late = await send(b.socket, room, "after restart", "after-restart");
    expect(late.seq).to.equal(expected + 1);
  });

  it("kill -9 of the OWNER under a steady send load, then restart (same data dir): no acked message is lost", async function () {
    this.timeout(120_000);
    const c = cluster();
    await waitUntil(async () => {
      for (let i = 0; i < 3; i++) {
        const r = await fetch(`${c.node(i).httpUrl}/readyz`);
        if (r.status !== 200) return false;
      }
      return true;
    }, "all nodes ready");
    const room = await roomOwnedBy(c, "n1", "kill-owner");
    expect(await agreedOwner(c, room)).to.equal("n1");
    const ownerIdx = 0;

    type Phase = "before" | "outage" | "after";
    /** phase: when the id was FIRST sent (an id first sent before the kill may be acked after the restart). */
    type Outcome = { id: string; seq: number; attempts: number; firstError?: string; phase?: Phase; ackedIn?: Phase };
    const acked = new Map<string, Outcome>(); // `${user}/${id}` → outcome
    const errorCounts = new Map<string, number>();
    const stats = { rejoins: 0, unavailableThenRetried: 0, ackedAfterRestart: 0, ackedBeforeKill: 0 };
    let phase: Phase = "before";
    let stopping = false;
    let aborted = false;
    abortLoad = () => {
      aborted = true;
      stopping = true;
    };

    const senders = await Promise.all([userOn(c, 1, "load-b"), userOn(c, 2, "load-c")]);
    const senderEvents = senders.map((s) => new EventLog(s.socket, ["reset", "gap", "disconnect"]));
    for (const s of senders) await join(s.socket, room);

    const countError = (code: string): void => {
      errorCounts.set(code, (errorCounts.get(code) ?? 0) + 1);
    };

    /** Sends id k, retrying the SAME id until it is acked (or the deadline passes). */
    async function sendUntilAcked(sock: Socket, user: string, id: string, deadline: number): Promise<Outcome | undefined> {
      let attempts = 0;
      let firstError: string | undefined;
      while (Date.now() < deadline && !aborted) {
        attempts++;
        let ack: Ack<SendAck>;
        try {
          ack = await emitAck<Ack<SendAck>>(sock, "send", { room, text: `load ${user} ${id}`, id }, 4000);
        } catch {
          ack = { ok: false, error: { code: "ack_timeout", message: "no ack" } };
        }
        if (ack.ok) {
          const o: Outcome = { id, seq: ack.seq, attempts, ...(firstError ? { firstError } : {}) };
          if (attempts > 1) stats.unavailableThenRetried++;
          return o;
        }
        countError(ack.error.code);
        firstError ??= ack.error.code;
        if (ack.error.code === "not_joined") {
          // The gateway forgot the join across the owner's restart; join again and retry the same id.
          stats.rejoins++;
          await emitAck(sock, "join", { room }, 4000).catch(() => undefined);
        } else if (!["unavailable", "ack_timeout", "rate_limited", "internal"].includes(ack.error.code)) {
          throw new Error(`send ${id}: unexpected error ${JSON.stringify(ack)}`);
        }
        await sleep(150);
      }
      return undefined;
    }

    const unacked: string[] = [];
    let fatal: Error | undefined; // an unexpected error in a send loop stops the load and fails the test
    // Three concurrent lanes per sender socket, so several sends are in flight when the owner dies.
    const LANES = 3;
    const loops = senders.flatMap((s) =>
      range(1, LANES).map(async (lane) => {
        try {
          for (let k = 0; !stopping; k++) {
            const id = `${s.name}-${lane}-${k}`;
            const startedIn = phase; // the phase when this id was first sent
            const o = await sendUntilAcked(s.socket, s.name, id, Date.now() + 45_000);
            if (o === undefined) {
              if (!aborted) unacked.push(`${s.name}/${id}`);
              continue;
            }
            acked.set(`${s.name}/${id}`, { ...o, phase: startedIn, ackedIn: phase });
            if (phase === "before") stats.ackedBeforeKill++;
            if (startedIn === "after") stats.ackedAfterRestart++;
            await sleep(20);
          }
        } catch (err) {
          fatal ??= err as Error;
          stopping = true;
          aborted = true;
        }
      }),
    );

    await waitUntil(() => fatal !== undefined || acked.size >= 30, "30 acked sends before the kill", 15_000);
    if (fatal) throw fatal;
    phase = "outage";
    const killedAt = Date.now();
    await c.kill9(ownerIdx);
    await sleep(3000);
    await c.restart(ownerIdx);
    const restartedAfterMs = Date.now() - killedAt;
    phase = "after";
    const afterBase = acked.size;
    await waitUntil(() => fatal !== undefined || acked.size >= afterBase + 30, "30 acked sends after the restart", 30_000);
    stopping = true;
    await Promise.all(loops);
    if (fatal) throw fatal;

    // ---- verification ----
    const token = senders[0]!.token;
    const hist = await fullHistory(c.node(1).httpUrl, token, room);
    const seqs = hist.map((m) => m.seq);
    const byKey = new Map<string, ChatMessage[]>();
    for (const m of hist) {
      const key = `${m.user}/${m.id}`;
      byKey.set(key, [...(byKey.get(key) ?? []), m]);
    }
    const lost: string[] = [];
    const moved: string[] = [];
    for (const [key, o] of acked) {
      const found = byKey.get(key);
      if (found === undefined || found.length === 0) lost.push(`${key}@${o.seq}`);
      else if (found[0]!.seq !== o.seq) moved.push(`${key}: acked ${o.seq}, stored ${found[0]!.seq}`);
    }
    const duplicates = [...byKey.entries()].filter(([, ms]) => ms.length > 1).map(([k, ms]) => `${k}×${ms.length}`);

    const report = {
      acked: acked.size,
      historyLength: hist.length,
      maxSeq: seqs[seqs.length - 1],
      ackedBeforeKill: stats.ackedBeforeKill,
      ackedAfterRestart: stats.ackedAfterRestart,
      retriedWithSameIdAndAcked: stats.unavailableThenRetried,
      rejoinsAfterNotJoined: stats.rejoins,
      errorsDuringRun: Object.fromEntries(errorCounts),
      restartedAfterMs,
      ownerAfter: await ownerOf(c, room, 1),
      lostAcked: lost.length,
      seqMismatches: moved.length,
      duplicates: duplicates.length,
      neverAcked: unacked.length,
    };
    process.stdout.write(`      owner-kill report: ${JSON.stringify(report)}\n`);

    expect(lost, "acknowledged messages missing from history").to.deep.equal([]);
    expect(moved, "acknowledged messages stored under another seq").to.deep.equal([]);
    expect(duplicates, "one (user, id) stored more than once").to.deep.equal([]);
    expect(seqs, "history seqs are contiguous 1..N").to.deep.equal(range(1, hist.length));
    expect(unacked, "sends never acked despite retries with the same id").to.deep.equal([]);
    expect(stats.ackedAfterRestart).to.be.greaterThan(0);

    // Acked seqs across the restart: all distinct, and the seqs after the restart continue the ones before.
    const ackedSeqs = [...acked.values()].map((o) => o.seq).sort((x, y) => x - y);
    expect(new Set(ackedSeqs).size, "two sends acked with the same seq").to.equal(ackedSeqs.length);
    const seqsIn = (p: Phase) => [...acked.values()].filter((o) => o.phase === p).map((o) => o.seq);
    // Acknowledged before the kill (an id first sent then may be acked after the restart, under any seq).
    const maxBefore = Math.max(...[...acked.values()].filter((o) => o.ackedIn === "before").map((o) => o.seq));
    const minAfter = Math.min(...seqsIn("after"));
    expect(minAfter, "sends first made after the restart get seqs above every seq acked before the kill").to.be.greaterThan(
      maxBefore,
    );

    // The restarted owner serves the same history, and a fresh client joining with since=0 on another node
    // receives exactly 1..N once each, in order.
    // The senders stayed connected (to non-owner nodes) through the owner's crash and restart: each saw
    // every message exactly once, in seq order, with no reset/gap notices.
    for (const [k, s] of senders.entries()) {
      await s.collector.waitFor(room, hist.length, 15_000);
      await sleep(200);
      expect(senderEvents[k]!.events, `${s.name}: reset/gap/disconnect events`).to.deep.equal([]);
      expect(s.collector.seqs(room), `${s.name}: live delivery across the owner restart`).to.deep.equal(range(1, hist.length));
    }

    const histOnOwner = await fullHistory(c.node(ownerIdx).httpUrl, token, room);
    expect(histOnOwner).to.deep.equal(hist);
    const reader = await userOn(c, 2, "load-reader");
    await join(reader.socket, room, 0);
    await reader.collector.waitFor(room, hist.length, 20_000);
    await sleep(300);
    expect(reader.collector.seqs(room)).to.deep.equal(range(1, hist.length));
  });

  it("graceful stop of the owner, restart with a wiped data dir: the room is rebuilt from object storage", async function () {
    this.timeout(90_000);
    const c = cluster();
    const room = await roomOwnedBy(c, "n2", "wipe");
    expect(await agreedOwner(c, room)).to.equal("n2");
    const u = await userOn(c, 0, "wiper");
    await join(u.socket, room);
    const sent: number[] = [];
    for (let k = 1; k <= 15; k++) sent.push((await send(u.socket, room, `w${k}`, `w${k}`)).seq);
    expect(sent).to.deep.equal(range(1, 15));
    await sleep(2500); // longer than the default 1 s checkpoint interval

    const ownerIdx = c.indexOf("n2");
    // A plain socket.io client on the stopping node: its connection is closed without a disconnect packet, so
    // it reconnects by itself (to this URL here; through a load balancer, elsewhere), unlike after
    // "io server disconnect", which leaves reconnecting to the application.
    const plain = await connect(c.node(ownerIdx).httpUrl, u.token, { reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 500 });
    const reasons: string[] = [];
    plain.on("disconnect", (reason: string) => reasons.push(reason));
    await c.stop(ownerIdx);
    await waitUntil(() => (reasons.length > 0 ? true : undefined), "the plain client to see the node go", 5_000, 50);
    expect(reasons).to.deep.equal(["transport close"]);
    await c.restart(ownerIdx, { wipe: true });
    await agreedOwner(c, room);
    await waitUntil(() => (plain.connected ? true : undefined), "the plain client to reconnect by itself", 15_000, 100);

    const hist = await waitUntil(
      async () => {
        const h = await fullHistory(c.node(ownerIdx).httpUrl, u.token, room);
        return h.length >= 15 ? h : undefined;
      },
      "the rebuilt room's history on the wiped node",
      20_000,
      300,
    );
    expect(hist.map((m) => m.seq)).to.deep.equal(range(1, 15));
    expect(hist.map((m) => m.id)).to.deep.equal(range(1, 15).map((k) => `w${k}`));

    // The client (whose socket on n1 survived) can keep sending; seq continues at 16.
    const next = await waitUntil(
      async () => {
        const ack = await emitAck<Ack<SendAck>>(u.socket, "send", { room, text: "after wipe", id: "after-wipe" });
        if (!ack.ok && ack.error.code === "not_joined") await join(u.socket, room);
        return ack.ok ? ack : undefined;
      },
      "a send after the wiped restart",
      20_000,
      300,
    );
    expect(next.seq).to.equal(16);
  });
});
