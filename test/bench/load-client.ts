/**
 * Load-generator child process of the benchmark. Started by run.ts with an IPC channel; it owns a set of
 * socket.io clients (all members of its rooms live here, so a message's sender and all its receivers share
 * one clock: latency = performance.now() at receive − performance.now() at send, same process).
 *
 * Requests (protocol.ts): setup → create sessions, connect, join; step → send at a rate for a duration, then
 * drain; finish → final per-step accounting (late deliveries included); verify → page the room history over
 * HTTP (Fractal) and check every acked message is there; close → disconnect and exit.
 */
import { io, type Socket } from "socket.io-client";
import { Histogram } from "./hist.js";
import type {
  ClientSpec,
  FinishRes,
  Req,
  ReqEnvelope,
  ResEnvelope,
  SetupReq,
  SetupRes,
  StepReq,
  StepRes,
  StepSummary,
  SystemName,
  VerifyReq,
  VerifyRes,
  VerifyRoom,
} from "./protocol.js";

if (process.send === undefined) {
  process.stderr.write("load-client.ts must be started by run.ts with an IPC channel\n");
  process.exit(2);
}
const send = (m: ResEnvelope): void => {
  process.send?.(m);
};
process.on("disconnect", () => process.exit(0));

interface Client {
  spec: ClientSpec;
  url: string;
  token: string;
  socket: Socket | undefined;
  bit: number;
  /** Highest seq seen (starts at the join ack's seq). */
  lastSeq: number;
}

const enum Status {
  Pending = 0,
  Acked = 1,
  Failed = 2,
}

/**
 * A message in flight. Records are dropped as soon as the message is acked and every room member got it,
 * so the load generator's heap (and its GC pauses, which would show up as latency) stays small.
 */
interface MsgRec {
  step: number;
  senderNode: number;
  roomIdx: number;
  senderBit: number;
  sendT: number;
  status: Status;
  /** Seq from the ack or first delivery (0 = unknown). */
  seq: number;
  /** Bit per room member that received it. */
  mask: number;
  deliveries: number;
}

interface StepState {
  step: number;
  sent: number;
  acked: number;
  ackErrors: Record<string, number>;
  /** acked × room size. */
  expected: number;
  /** Unique deliveries of acked messages. */
  receivedAcked: number;
  /** Unique deliveries of any message of this step. */
  receivedAll: number;
  lat: Histogram;
  ackLat: Histogram;
  dups: number;
  late: number;
  outOfOrder: number;
  seqConflicts: number;
  seqMismatch: number;
  outstandingAcks: number;
  outstandingDeliveries: number;
  accounted: boolean;
  windowDeliveries: number;
  /** Start of the send window (performance.now()). */
  t0: number;
  /** Max e2e latency per SLOT_MS slot of send time, to spot stalls and their period. */
  slotMax: number[];
  latByPath: Histogram[];
}

const SLOT_MS = 100;

/** Growable Int32 array (off the JS object heap, so no GC pressure). */
class IntLog {
  buf = new Int32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const nb = new Int32Array(this.buf.length * 2);
      nb.set(this.buf);
      this.buf = nb;
    }
    this.buf[this.length++] = v;
  }
  /** Sets index i (grows, zero-filled). */
  set(i: number, v: number): void {
    while (i >= this.buf.length) {
      const nb = new Int32Array(this.buf.length * 2);
      nb.set(this.buf);
      this.buf = nb;
    }
    this.buf[i] = v;
    if (i >= this.length) this.length = i + 1;
  }
  get(i: number): number {
    return i < this.length ? (this.buf[i] ?? 0) : 0;
  }
}

let system: SystemName = "peer";
let procIdx = 0;
let checkOrder = false;
let textBytes = 64;
let clients: Client[] = [];
const roomSize = new Map<number, number>();
const roomName = new Map<number, string>();
/** Room → index of its owner node (Fractal, from GET /api/rooms/:room after the joins). */
const roomOwner = new Map<number, number>();
/** Per room: seq → message key (0 = none yet), to detect two different messages with the same seq. */
const roomSeqs = new Map<number, IntLog>();
/** Per room: keys and seqs of acked messages, for the persistence check. */
const ackLog = new Map<number, { keys: IntLog; seqs: IntLog }>();
/** Key → step of every message ever sent (to attribute duplicates of already completed messages). */
const keyStep = new IntLog();
const msgs = new Map<number, MsgRec>();
const steps = new Map<number, StepState>();
let msgCounter = 0;
let idPrefix = "";
let windowStep: StepState | undefined;
let unknownMessages = 0;
let misrouted = 0;
let seqGaps = 0;
let totalDeliveries = 0;
let setupDone = false;
const disconnects: Record<string, number> = {};
/** BENCH_DEBUG_SLOW_MS=50 logs (up to 50) deliveries slower than that, to find where outliers come from. */
const DEBUG_SLOW_MS = Number(process.env.BENCH_DEBUG_SLOW_MS ?? Infinity) || Infinity;
let debugSlowLeft = 50;
let stepStartT = 0;

function progress(text: string): void {
  send({ event: "progress", text: `[load ${procIdx}] ${text}` });
}

function stepState(step: number): StepState {
  let st = steps.get(step);
  if (st === undefined) {
    st = {
      step,
      sent: 0,
      acked: 0,
      ackErrors: {},
      expected: 0,
      receivedAcked: 0,
      receivedAll: 0,
      lat: new Histogram(),
      ackLat: new Histogram(),
      dups: 0,
      late: 0,
      outOfOrder: 0,
      seqConflicts: 0,
      seqMismatch: 0,
      outstandingAcks: 0,
      outstandingDeliveries: 0,
      accounted: false,
      windowDeliveries: 0,
      t0: performance.now(),
      slotMax: [],
      latByPath: [new Histogram(), new Histogram(), new Histogram(), new Histogram()],
    };
    steps.set(step, st);
  }
  return st;
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
    for (;;) {
      const i = next++;
      const item = items[i];
      if (item === undefined) return;
      await fn(item, i);
    }
  });
  await Promise.all(workers);
}

function noteSeq(rec: MsgRec, key: number, seq: number, st: StepState): void {
  if (rec.seq === 0) rec.seq = seq;
  else if (rec.seq !== seq) st.seqMismatch++;
  if (!(seq > 0 && seq < 2 ** 30)) return;
  let m = roomSeqs.get(rec.roomIdx);
  if (m === undefined) {
    m = new IntLog();
    roomSeqs.set(rec.roomIdx, m);
  }
  const prev = m.get(seq);
  if (prev === 0) m.set(seq, key);
  else if (prev !== key) st.seqConflicts++;
}

/** Drops the record once it is acked and every member has it. */
function maybeComplete(key: number, rec: MsgRec): void {
  if (rec.status === Status.Acked && rec.deliveries >= (roomSize.get(rec.roomIdx) ?? 0)) msgs.delete(key);
}

function onMessage(c: Client, raw: unknown): void {
  const now = performance.now();
  totalDeliveries++;
  if (windowStep !== undefined) windowStep.windowDeliveries++;
  const m = raw as { room?: unknown; seq?: unknown; id?: unknown } | null;
  const id = m?.id;
  if (typeof id !== "string" || !id.startsWith(idPrefix)) {
    unknownMessages++;
    return;
  }
  const key = Number(id.slice(idPrefix.length));
  const rec = msgs.get(key);
  if (rec === undefined) {
    // Keys are 1..msgCounter; a known key without a record belongs to a completed message: a duplicate.
    if (Number.isInteger(key) && key >= 1 && key <= msgCounter) stepState(keyStep.get(key)).dups++;
    else unknownMessages++;
    return;
  }
  if (m?.room !== c.spec.room || rec.roomIdx !== c.spec.roomIdx) {
    misrouted++;
    return;
  }
  const st = stepState(rec.step);
  const seq = typeof m.seq === "number" ? m.seq : -1;
  if ((rec.mask & c.bit) !== 0) {
    st.dups++;
    return;
  }
  rec.mask |= c.bit;
  rec.deliveries++;
  st.receivedAll++;
  if (rec.status === Status.Acked) {
    st.receivedAcked++;
    st.outstandingDeliveries--;
  }
  const latMs = now - rec.sendT;
  st.lat.add(latMs);
  const owner = roomOwner.get(rec.roomIdx);
  if (owner !== undefined) st.latByPath[(rec.senderNode === owner ? 0 : 2) + (c.spec.node === owner ? 0 : 1)]?.add(latMs);
  const slot = Math.max(0, Math.floor((rec.sendT - st.t0) / SLOT_MS));
  if (slot < 100000 && !((st.slotMax[slot] ?? 0) >= latMs)) {
    for (let i = st.slotMax.length; i < slot; i++) st.slotMax[i] = 0;
    st.slotMax[slot] = latMs;
  }
  if (now - rec.sendT > DEBUG_SLOW_MS && debugSlowLeft > 0 && rec.step > 0) {
    debugSlowLeft--;
    const sender = clients.find((x) => x.spec.roomIdx === rec.roomIdx && x.bit === rec.senderBit);
    progress(
      `slow delivery ${(now - rec.sendT).toFixed(1)} ms: step ${rec.step} sent at +${(rec.sendT - stepStartT).toFixed(0)} ms ` +
        `room ${c.spec.room} sender node ${sender?.spec.node} receiver node ${c.spec.node} seq ${String(m.seq)}`,
    );
  }
  if (st.accounted) st.late++;
  if (checkOrder) {
    if (seq <= c.lastSeq) st.outOfOrder++;
    else {
      if (seq > c.lastSeq + 1) seqGaps += seq - c.lastSeq - 1;
      c.lastSeq = seq;
    }
    noteSeq(rec, key, seq, st);
  }
  maybeComplete(key, rec);
}

// ---------------------------------------------------------------- setup

async function postJson(url: string, body: unknown, timeoutMs = 15000): Promise<unknown> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${url} → HTTP ${res.status}: ${text.slice(0, 200)}`);
  return JSON.parse(text) as unknown;
}

async function setup(req: SetupReq): Promise<SetupRes> {
  system = req.system;
  procIdx = req.procIdx;
  checkOrder = req.checkOrder;
  textBytes = req.textBytes;
  idPrefix = `b${Math.random().toString(36).slice(2, 7)}${procIdx}-`;
  clients = req.clients.map((spec) => {
    const url = req.urls[spec.node];
    if (url === undefined) throw new Error(`no url for node ${spec.node}`);
    roomSize.set(spec.roomIdx, (roomSize.get(spec.roomIdx) ?? 0) + 1);
    roomName.set(spec.roomIdx, spec.room);
    if (spec.memberIdx > 30) throw new Error("rooms larger than 31 members are not supported");
    return { spec, url, token: "", socket: undefined, bit: 1 << spec.memberIdx, lastSeq: 0 };
  });
  const errors: string[] = [];
  const noteErr = (e: string): void => {
    if (errors.length < 10) errors.push(e);
  };

  // One pipeline per client: session → connect → join, `concurrency` clients in flight.
  const t0 = performance.now();
  let sessionMs = 0;
  let connected = 0;
  let joined = 0;
  let failed = 0;
  let done = 0;
  await pool(clients, req.concurrency, async (c) => {
    const ts = performance.now();
    for (let attempt = 0; ; attempt++) {
      try {
        const r = (await postJson(`${c.url}/api/session`, { name: c.spec.user })) as { token?: unknown };
        if (typeof r.token !== "string") throw new Error(`session for ${c.spec.user}: no token in ${JSON.stringify(r)}`);
        c.token = r.token;
        break;
      } catch (e) {
        if (attempt >= 2) {
          noteErr(e instanceof Error ? e.message : String(e));
          break;
        }
        await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      }
    }
    sessionMs += performance.now() - ts;
    if (c.token !== "") {
      const socket = io(c.url, {
        auth: { token: c.token },
        transports: ["websocket"],
        forceNew: true,
        reconnection: false,
        timeout: 30000,
      });
      c.socket = socket;
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once("connect", () => resolve());
          socket.once("connect_error", (e: Error) => reject(new Error(`connect ${c.url}: ${e.message}`)));
        });
        connected++;
        if (req.track) socket.on("message", (m: unknown) => onMessage(c, m));
        socket.on("disconnect", (reason: string) => {
          if (setupDone) disconnects[reason] = (disconnects[reason] ?? 0) + 1;
        });
        const ack = (await socket.timeout(30000).emitWithAck("join", { room: c.spec.room })) as {
          ok?: unknown;
          seq?: unknown;
          error?: { code?: string; message?: string };
        };
        if (ack?.ok !== true) throw new Error(`join ${c.spec.room}: ${JSON.stringify(ack)}`);
        c.lastSeq = typeof ack.seq === "number" ? ack.seq : 0;
        joined++;
      } catch (e) {
        failed++;
        noteErr(e instanceof Error ? e.message : String(e));
      }
    } else failed++;
    if (++done % 2000 === 0) progress(`${done}/${clients.length} clients set up (${joined} joined, ${failed} failed)`);
  });
  setupDone = true;
  if (req.nodeIds !== undefined) await lookupOwners(req.nodeIds, noteErr);
  return { connected, joined, failed, errors, sessionMs: sessionMs / Math.max(1, clients.length), connectMs: performance.now() - t0 };
}

async function lookupOwners(nodeIds: string[], noteErr: (e: string) => void): Promise<void> {
  const firstMember = new Map<number, Client>();
  for (const c of clients) if (c.token !== "" && !firstMember.has(c.spec.roomIdx)) firstMember.set(c.spec.roomIdx, c);
  await pool([...firstMember.values()], 16, async (c) => {
    try {
      const res = await fetch(`${c.url}/api/rooms/${encodeURIComponent(c.spec.room)}`, {
        headers: { authorization: `Bearer ${c.token}` },
        signal: AbortSignal.timeout(10000),
      });
      const body = (await res.json()) as { owner?: unknown };
      const idx = typeof body.owner === "string" ? nodeIds.indexOf(body.owner) : -1;
      if (idx >= 0) roomOwner.set(c.spec.roomIdx, idx);
      else noteErr(`GET /api/rooms/${c.spec.room}: HTTP ${res.status}, owner ${JSON.stringify(body.owner)} not one of ${nodeIds.join(",")}`);
    } catch (e) {
      noteErr(`GET /api/rooms/${c.spec.room}: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
}

// ---------------------------------------------------------------- sending

function makeText(id: string, sendT: number): string {
  const head = `bench ${id} t=${(performance.timeOrigin + sendT).toFixed(3)} `;
  return head.length >= textBytes ? head : head + "x".repeat(textBytes - head.length);
}

function sendOne(c: Client, st: StepState): void {
  const socket = c.socket;
  if (socket === undefined) return;
  const key = ++msgCounter;
  keyStep.set(key, st.step);
  const id = `${idPrefix}${key}`;
  const sendT = performance.now();
  const rec: MsgRec = {
    step: st.step,
    senderNode: c.spec.node,
    roomIdx: c.spec.roomIdx,
    senderBit: c.bit,
    sendT,
    status: Status.Pending,
    seq: 0,
    mask: 0,
    deliveries: 0,
  };
  st.sent++;
  if (!socket.connected) {
    st.ackErrors.client_disconnected = (st.ackErrors.client_disconnected ?? 0) + 1;
    return;
  }
  msgs.set(key, rec);
  st.outstandingAcks++;
  socket.emit("send", { room: c.spec.room, text: makeText(id, sendT), id }, (res: unknown) => {
    const r = res as { ok?: unknown; seq?: unknown; error?: { code?: unknown } } | null;
    if (rec.status !== Status.Pending) return;
    st.outstandingAcks--;
    if (r?.ok === true) {
      rec.status = Status.Acked;
      const size = roomSize.get(rec.roomIdx) ?? 0;
      st.acked++;
      st.expected += size;
      st.receivedAcked += rec.deliveries;
      st.outstandingDeliveries += size - rec.deliveries;
      st.ackLat.add(performance.now() - sendT);
      const seq = typeof r.seq === "number" ? r.seq : 0;
      if (checkOrder && seq > 0) noteSeq(rec, key, seq, st);
      let log = ackLog.get(rec.roomIdx);
      if (log === undefined) {
        log = { keys: new IntLog(), seqs: new IntLog() };
        ackLog.set(rec.roomIdx, log);
      }
      log.keys.push(key);
      log.seqs.push(seq);
      maybeComplete(key, rec);
    } else {
      rec.status = Status.Failed;
      const code = r?.error?.code;
      const k = typeof code === "string" ? code : "bad_ack";
      st.ackErrors[k] = (st.ackErrors[k] ?? 0) + 1;
    }
  });
}

async function runStep(req: StepReq): Promise<StepRes> {
  const st = stepState(req.step);
  const senders = clients.filter((c) => c.socket?.connected === true);
  let rr = Math.floor(Math.random() * Math.max(1, senders.length));
  let sent = 0;
  const t0 = performance.now();
  stepStartT = t0;
  st.t0 = t0;
  windowStep = st;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      const el = Math.min(now - t0, req.durationMs);
      const target = Math.floor((req.rate * el) / 1000);
      while (sent < target && senders.length > 0) {
        const c = senders[rr++ % senders.length]!;
        sendOne(c, st);
        sent++;
      }
      if (now - t0 >= req.durationMs) resolve();
      else setTimeout(tick, 2);
    };
    tick();
  });
  const windowMs = performance.now() - t0;
  windowStep = undefined;
  const d0 = performance.now();
  const complete = (): boolean => st.outstandingAcks <= 0 && st.outstandingDeliveries <= 0;
  while (!complete() && performance.now() - d0 < req.drainMs) await new Promise((r) => setTimeout(r, 20));
  const drained = complete();
  st.accounted = true;
  return {
    step: req.step,
    sent,
    windowMs,
    windowDeliveries: st.windowDeliveries,
    drained,
    drainMs: performance.now() - d0,
    summary: summarize(st),
  };
}

function summarize(st: StepState): StepSummary {
  // Completed messages were dropped; only incomplete ones are left to look at.
  let lostSelf = 0;
  let failed = 0;
  for (const rec of msgs.values()) {
    if (rec.step !== st.step) continue;
    if (rec.status === Status.Acked && (rec.mask & rec.senderBit) === 0) lostSelf++;
  }
  for (const v of Object.values(st.ackErrors)) failed += v;
  return {
    step: st.step,
    sent: st.sent,
    acked: st.acked,
    ackErrors: { ...st.ackErrors },
    unacked: st.sent - st.acked - failed,
    expected: st.expected,
    received: st.receivedAcked,
    receivedAll: st.receivedAll,
    lost: st.expected - st.receivedAcked,
    lostSelf,
    dups: st.dups,
    late: st.late,
    outOfOrder: st.outOfOrder,
    seqConflicts: st.seqConflicts,
    seqMismatch: st.seqMismatch,
    latency: st.lat.data(),
    ackLatency: st.ackLat.data(),
    slotMaxMs: st.slotMax.map((x) => Math.round(x * 10) / 10),
    latByPath: st.latByPath.map((h) => h.data()),
  };
}

function finish(): FinishRes {
  return {
    steps: [...steps.values()].map(summarize),
    disconnects,
    unknownMessages,
    misrouted,
    seqGaps,
    totalDeliveries,
  };
}

// ---------------------------------------------------------------- persistence check (Fractal)

async function verify(req: VerifyReq): Promise<VerifyRes> {
  const rooms: VerifyRoom[] = [];
  for (const roomIdx of req.roomIdxs) {
    const room = roomName.get(roomIdx);
    const member = clients.find((c) => c.spec.roomIdx === roomIdx && c.token !== "");
    if (room === undefined || member === undefined) continue;
    const ackedById = new Map<string, number>();
    const log = ackLog.get(roomIdx);
    for (let i = 0; log !== undefined && i < log.keys.length; i++) ackedById.set(`${idPrefix}${log.keys.get(i)}`, log.seqs.get(i));
    const out: VerifyRoom = {
      room,
      acked: ackedById.size,
      historyMessages: 0,
      pages: 0,
      missing: 0,
      seqMismatch: 0,
      historyGaps: 0,
      historyDupSeqs: 0,
      missingSample: [],
    };
    const found = new Set<string>();
    try {
      let after = 0;
      let lastSeq = 0;
      for (let page = 0; page < 10000; page++) {
        const url = `${member.url}/api/rooms/${encodeURIComponent(room)}/messages?after=${after}&limit=${req.pageLimit}`;
        const res = await fetch(url, {
          headers: { authorization: `Bearer ${member.token}` },
          signal: AbortSignal.timeout(15000),
        });
        const text = await res.text();
        if (res.status !== 200) throw new Error(`GET ${url} → HTTP ${res.status}: ${text.slice(0, 200)}`);
        const body = JSON.parse(text) as { messages?: unknown };
        if (!Array.isArray(body.messages)) throw new Error(`GET ${url}: no messages array`);
        out.pages++;
        const list = body.messages as { seq?: unknown; id?: unknown }[];
        if (list.length === 0) break;
        for (const m of list) {
          const seq = typeof m.seq === "number" ? m.seq : NaN;
          if (!(seq > lastSeq)) out.historyDupSeqs++;
          else {
            if (seq > lastSeq + 1) out.historyGaps += seq - lastSeq - 1;
            lastSeq = seq;
          }
          out.historyMessages++;
          if (typeof m.id === "string") {
            const want = ackedById.get(m.id);
            if (want !== undefined) {
              found.add(m.id);
              if (want !== 0 && want !== seq) out.seqMismatch++;
            }
          }
        }
        const lastInPage = list[list.length - 1]?.seq;
        if (typeof lastInPage !== "number" || lastInPage <= after) throw new Error(`GET ${url}: paging does not advance`);
        after = lastInPage;
      }
    } catch (e) {
      out.error = e instanceof Error ? e.message : String(e);
    }
    for (const id of ackedById.keys()) {
      if (!found.has(id)) {
        out.missing++;
        if (out.missingSample.length < 5) out.missingSample.push(`${id}(seq ${ackedById.get(id)})`);
      }
    }
    rooms.push(out);
  }
  return { rooms };
}

// ---------------------------------------------------------------- IPC loop

async function handle(req: Req): Promise<unknown> {
  switch (req.type) {
    case "setup":
      return setup(req);
    case "step":
      return runStep(req);
    case "finish":
      return finish();
    case "verify":
      return verify(req);
    case "close":
      for (const c of clients) c.socket?.disconnect();
      setTimeout(() => process.exit(0), 200);
      return { closed: clients.length };
  }
}

process.on("message", (raw) => {
  const env = raw as ReqEnvelope;
  handle(env.req).then(
    (result) => send({ reqId: env.reqId, ok: true, result }),
    (e: unknown) => send({ reqId: env.reqId, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
void system;
