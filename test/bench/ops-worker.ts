/**
 * Load-generator child for the operations phases (durability, rebalance, failover; see ops.ts). Started with an
 * IPC channel; requests are OpsReq, answers `{reqId, ok, result | error}`.
 *
 *   load    — bulk-load rooms as fast as possible: `concurrency` parallel `POST /api/rooms/:room/messages` over
 *             keep-alive connections (one session token), each message acknowledged (retried with the same id
 *             on a 5xx or a network error). Stops at `total` messages or after `maxMs`.
 *   setup   — socket.io clients for a steady load: per room, `members` clients spread over the given nodes;
 *             member 0 sends.
 *   start   — steady sending: mode "rate" (a fixed total rate, round-robin over rooms, sends pipelined) or mode
 *             "serial" (each sender has one message in flight and sends the next `intervalMs` after its ack).
 *             A send whose ack is an error (or does not come within `attemptTimeoutMs`) is resent with the same
 *             id after `retryMs`, so the ack latency is the client-visible one (first send → first ok ack).
 *   stats   — per time window (epoch ms): sends started, acks, error acks by code, client-visible ack latency
 *             of sends started in the window, deliveries received, e2e latency of deliveries of messages sent
 *             in the window.
 *   failover — per room: the first ok ack of an attempt started after `killAt` (ms after the kill).
 *   stop    — stop sending, wait for outstanding acks and deliveries (`drainMs`), account loss, duplicates,
 *             order, gaps.
 *   verify  — page each room's history over HTTP and count acked messages that are missing.
 *   close   — disconnect and exit.
 */
import http from "node:http";
import { io, type Socket } from "socket.io-client";
import { Histogram } from "./hist.js";
import type { HistData } from "./protocol.js";

if (process.send === undefined) {
  process.stderr.write("ops-worker.ts must be started with an IPC channel\n");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));
const reply = (m: unknown): void => {
  process.send?.(m);
};
function progress(text: string): void {
  reply({ event: "progress", text: `[ops-worker ${process.pid}] ${text}` });
}

// ---------------------------------------------------------------- request/answer types (shared with ops.ts)

export interface LoadReq {
  type: "load";
  urls: string[];
  rooms: string[];
  total: number;
  concurrency: number;
  maxMs: number;
  textBytes: number;
  user: string;
  /** Id prefix, unique per worker. */
  idPrefix: string;
}
export interface LoadRes {
  sent: number;
  acked: number;
  failed: number;
  errors: Record<string, number>;
  ms: number;
  /** Acked messages per room (same order as rooms). */
  perRoom: number[];
  /** Highest acked seq per room. */
  maxSeq: number[];
  stoppedByTime: boolean;
  ackLatency: HistData;
}
export interface SetupReq {
  type: "setup";
  urls: string[];
  /** Per room: the url index of each member (member 0 sends). */
  rooms: { room: string; memberNodes: number[] }[];
  userPrefix: string;
  idPrefix: string;
  textBytes: number;
  concurrency: number;
}
export interface SetupRes {
  joined: number;
  failed: number;
  errors: string[];
  ms: number;
}
export interface StartReq {
  type: "start";
  mode: "rate" | "serial";
  /** mode rate: total messages per second over all rooms. */
  rate?: number;
  /** mode serial: pause after an ok ack before the next send of that room. */
  intervalMs?: number;
  retryMs: number;
  attemptTimeoutMs: number;
}
export interface WindowStats {
  name: string;
  from: number;
  to: number;
  sent: number;
  acked: number;
  /** Error acks (and attempt timeouts) by code; each is followed by a retry. */
  errors: Record<string, number>;
  ackLatency: HistData;
  deliveries: number;
  e2e: HistData;
}
export interface StatsReq {
  type: "stats";
  windows: { name: string; from: number; to: number }[];
}
export interface FailoverReq {
  type: "failover";
  killAt: number;
  rooms: string[];
}
export interface FailoverRes {
  /** Per room: ms from the kill to the first ok ack of an attempt started after the kill (null: none). */
  perRoom: { room: string; ms: number | null; seq: number | null }[];
  /** Error acks after the kill, by code. */
  errors: Record<string, number>;
}
export interface StopReq {
  type: "stop";
  drainMs: number;
}
export interface StopRes {
  sent: number;
  acked: number;
  /** Sends never acked ok (still retrying when the drain ended). */
  unacked: number;
  expected: number;
  delivered: number;
  lost: number;
  dups: number;
  outOfOrder: number;
  seqGaps: number;
  gapEvents: number;
  resetEvents: number;
  disconnects: Record<string, number>;
  retries: number;
  ackLatency: HistData;
  e2e: HistData;
  /** Up to 10 acked messages some member never received: room, seq, ack time, members (url index) missing it. */
  lostSample: { room: string; seq: number; ackedAt: string; missing: number[]; lastSeqOfMissing: number[] }[];
}
export interface VerifyReq {
  type: "verify";
  rooms: string[];
}
export interface VerifyRes {
  /** seqReused: acked messages missing from the history whose acked seq now holds a different message. */
  rooms: {
    room: string;
    acked: number;
    history: number;
    missing: number;
    seqReused: number;
    seqMismatch: number;
    dupSeqs: number;
    /** The acked seqs of the first missing messages, and the last seq history answered: where to look. */
    missingSeqs?: number[];
    lastSeq?: number;
    error?: string;
  }[];
}
export type OpsReq = LoadReq | SetupReq | StartReq | StatsReq | FailoverReq | StopReq | VerifyReq | { type: "close" };

// ---------------------------------------------------------------- helpers

class F64Log {
  buf = new Float64Array(4096);
  length = 0;
  push(v: number): number {
    if (this.length === this.buf.length) {
      const nb = new Float64Array(this.buf.length * 2);
      nb.set(this.buf);
      this.buf = nb;
    }
    this.buf[this.length] = v;
    return this.length++;
  }
  get(i: number): number {
    return this.buf[i] ?? NaN;
  }
  set(i: number, v: number): void {
    this.buf[i] = v;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
/** Wall clock with sub-ms resolution, comparable across processes. */
const wall = (): number => performance.timeOrigin + performance.now();

function text(id: string, textBytes: number): string {
  const head = `ops ${id} `;
  return head.length >= textBytes ? head : head + "x".repeat(textBytes - head.length);
}

function jsonRequest(agent: http.Agent, url: string, method: string, body: unknown, token: string | undefined, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      url,
      {
        method,
        agent,
        headers: {
          ...(data !== undefined ? { "content-type": "application/json", "content-length": String(data.length) } : {}),
          ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const s = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = s;
          try {
            parsed = JSON.parse(s);
          } catch {
            /* keep text */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("request timeout")));
    req.on("error", reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

async function session(url: string, name: string): Promise<string> {
  const agent = new http.Agent({ keepAlive: false });
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await jsonRequest(agent, `${url}/api/session`, "POST", { name }, undefined, 10000);
      const token = (r.body as { token?: unknown } | null)?.token;
      if (r.status === 200 && typeof token === "string") return token;
      throw new Error(`POST /api/session → ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
    } catch (e) {
      if (attempt >= 4) throw e;
      await sleep(200 * (attempt + 1));
    }
  }
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        await fn(items[i]!, i);
      }
    }),
  );
}

// ---------------------------------------------------------------- load

async function load(req: LoadReq): Promise<LoadRes> {
  const token = await session(req.urls[0]!, req.user);
  const agent = new http.Agent({ keepAlive: true, maxSockets: req.concurrency });
  const R = req.rooms.length;
  const perRoom = new Array<number>(R).fill(0);
  const maxSeq = new Array<number>(R).fill(0);
  const errors: Record<string, number> = {};
  const ackLat = new Histogram();
  let next = 0;
  let acked = 0;
  let failed = 0;
  let sent = 0;
  const t0 = performance.now();
  const deadline = t0 + req.maxMs;
  let stoppedByTime = false;
  let lastLog = t0;
  const paths = req.rooms.map((r) => `/api/rooms/${encodeURIComponent(r)}/messages`);
  await Promise.all(
    Array.from({ length: req.concurrency }, async (_, w) => {
      for (;;) {
        const k = next++;
        if (k >= req.total) return;
        if (performance.now() > deadline) {
          stoppedByTime = true;
          return;
        }
        const roomIdx = k % R;
        // Spread over the nodes by worker, so every node takes client load (most sends are forwarded).
        const url = req.urls[(w + roomIdx) % req.urls.length]!;
        const id = `${req.idPrefix}${k}`;
        const body = { text: text(id, req.textBytes), id };
        sent++;
        const ts = performance.now();
        for (let attempt = 0; ; attempt++) {
          let code: string;
          try {
            const r = await jsonRequest(agent, url + paths[roomIdx], "POST", body, token, 15000);
            if (r.status === 200) {
              acked++;
              perRoom[roomIdx]!++;
              const seq = (r.body as { seq?: unknown }).seq;
              if (typeof seq === "number" && seq > maxSeq[roomIdx]!) maxSeq[roomIdx] = seq;
              ackLat.add(performance.now() - ts);
              break;
            }
            code = `http_${r.status}_${String((r.body as { error?: { code?: unknown } } | null)?.error?.code ?? "")}`;
          } catch (e) {
            code = `net: ${errText(e).slice(0, 60)}`;
          }
          errors[code] = (errors[code] ?? 0) + 1;
          if (attempt >= 20 || (code.startsWith("http_4") && !code.startsWith("http_429"))) {
            failed++;
            break;
          }
          await sleep(50 * Math.min(10, attempt + 1));
        }
        const now = performance.now();
        if (now - lastLog > 10000) {
          lastLog = now;
          progress(`load: ${acked} acked (${((acked * 1000) / (now - t0)).toFixed(0)}/s), ${failed} failed`);
        }
      }
    }),
  );
  agent.destroy();
  return { sent, acked, failed, errors, ms: performance.now() - t0, perRoom, maxSeq, stoppedByTime, ackLatency: ackLat.data() };
}

// ---------------------------------------------------------------- steady load

interface Member {
  room: number;
  bit: number;
  url: string;
  token: string;
  socket: Socket | undefined;
  lastSeq: number;
}

let idPrefix = "m";
let textBytes = 64;
let rooms: { room: string; memberNodes: number[] }[] = [];
let members: Member[][] = [];
let urls: string[] = [];
let setupDone = false;
const disconnects: Record<string, number> = {};

// Per message key (index): room, first send, ok ack, start of the attempt that got the ok ack, seq, delivery mask.
const mRoom = new F64Log();
const mFirst = new F64Log();
const mAck = new F64Log();
const mAttempt = new F64Log();
const mSeq = new F64Log();
const mMask = new F64Log();
// Deliveries: receive time and the send time of the message.
const dRecv = new F64Log();
const dSent = new F64Log();
// Error acks: time and code index.
const eTime = new F64Log();
const eCode = new F64Log();
const codes: string[] = [];
let retries = 0;
let dups = 0;
let outOfOrder = 0;
let seqGaps = 0;
let gapEvents = 0;
let resetEvents = 0;
let running = false;
let pending = 0;
const loops: Promise<void>[] = [];

function codeIdx(c: string): number {
  let i = codes.indexOf(c);
  if (i < 0) {
    codes.push(c);
    i = codes.length - 1;
  }
  return i;
}

async function setup(req: SetupReq): Promise<SetupRes> {
  const t0 = performance.now();
  urls = req.urls;
  idPrefix = req.idPrefix;
  textBytes = req.textBytes;
  rooms = req.rooms;
  members = rooms.map((r, ri) =>
    r.memberNodes.map((n, mi) => ({ room: ri, bit: 1 << mi, url: req.urls[n]!, token: "", socket: undefined, lastSeq: 0 })),
  );
  const all = members.flat();
  const errors: string[] = [];
  let joined = 0;
  let failed = 0;
  await pool(all, req.concurrency, async (m) => {
    const room = rooms[m.room]!.room;
    try {
      m.token = await session(m.url, `${req.userPrefix}${m.room}-${Math.log2(m.bit)}`);
      const socket = io(m.url, { auth: { token: m.token }, transports: ["websocket"], forceNew: true, reconnection: false, timeout: 20000 });
      m.socket = socket;
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", () => resolve());
        socket.once("connect_error", (e: Error) => reject(new Error(`connect ${m.url}: ${e.message}`)));
      });
      socket.on("message", (msg: unknown) => onMessage(m, msg));
      socket.on("gap", () => gapEvents++);
      socket.on("reset", () => resetEvents++);
      socket.on("disconnect", (reason: string) => {
        if (setupDone) disconnects[reason] = (disconnects[reason] ?? 0) + 1;
      });
      const ack = (await socket.timeout(20000).emitWithAck("join", { room })) as { ok?: unknown; seq?: unknown };
      if (ack?.ok !== true) throw new Error(`join ${room}: ${JSON.stringify(ack)}`);
      m.lastSeq = typeof ack.seq === "number" ? ack.seq : 0;
      joined++;
    } catch (e) {
      failed++;
      if (errors.length < 10) errors.push(errText(e));
    }
  });
  setupDone = true;
  return { joined, failed, errors, ms: performance.now() - t0 };
}

function onMessage(m: Member, raw: unknown): void {
  const now = wall();
  const msg = raw as { id?: unknown; seq?: unknown } | null;
  const seq = typeof msg?.seq === "number" ? msg.seq : -1;
  if (seq <= m.lastSeq) outOfOrder++;
  else {
    if (seq > m.lastSeq + 1) seqGaps += seq - m.lastSeq - 1;
    m.lastSeq = seq;
  }
  const id = msg?.id;
  if (typeof id !== "string" || !id.startsWith(idPrefix)) return;
  const key = Number(id.slice(idPrefix.length));
  if (!(key >= 0 && key < mRoom.length)) return;
  const mask = mMask.get(key);
  if ((mask & m.bit) !== 0) {
    dups++;
    return;
  }
  mMask.set(key, mask | m.bit);
  dRecv.push(now);
  dSent.push(mFirst.get(key));
}

/** Sends message `key` until an ok ack (resending the same id after errors), resolves when acked or stopped. */
async function sendUntilAcked(ri: number, key: number, retryMs: number, attemptTimeoutMs: number): Promise<void> {
  const sender = members[ri]![0]!;
  const room = rooms[ri]!.room;
  const id = `${idPrefix}${key}`;
  const payload = { room, text: text(id, textBytes), id };
  pending++;
  try {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) retries++;
      const socket = sender.socket;
      const start = wall();
      let code: string;
      if (socket === undefined || !socket.connected) code = "client_disconnected";
      else {
        try {
          const ack = (await socket.timeout(attemptTimeoutMs).emitWithAck("send", payload)) as { ok?: unknown; seq?: unknown; error?: { code?: unknown } } | null;
          if (ack?.ok === true) {
            mAck.set(key, wall());
            mAttempt.set(key, start);
            mSeq.set(key, typeof ack.seq === "number" ? ack.seq : 0);
            return;
          }
          code = typeof ack?.error?.code === "string" ? ack.error.code : "bad_ack";
        } catch {
          code = "ack_timeout";
        }
      }
      eTime.push(wall());
      eCode.push(codeIdx(code));
      if (!running && !draining) return;
      await sleep(retryMs);
    }
  } finally {
    pending--;
  }
}

let draining = false;

function newKey(ri: number): number {
  const key = mRoom.push(ri);
  mFirst.push(wall());
  mAck.push(NaN);
  mAttempt.push(NaN);
  mSeq.push(0);
  mMask.push(0);
  return key;
}

function start(req: StartReq): { started: number } {
  running = true;
  const R = rooms.length;
  if (req.mode === "rate") {
    const rate = req.rate ?? 100;
    loops.push(
      new Promise<void>((resolve) => {
        const t0 = performance.now();
        let sent = 0;
        let rr = 0;
        const tick = (): void => {
          if (!running) return resolve();
          const target = Math.floor((rate * (performance.now() - t0)) / 1000);
          while (sent < target) {
            const ri = rr++ % R;
            sent++;
            if (members[ri]![0]!.socket === undefined) continue;
            void sendUntilAcked(ri, newKey(ri), req.retryMs, req.attemptTimeoutMs);
          }
          setTimeout(tick, 2);
        };
        tick();
      }),
    );
  } else {
    for (let ri = 0; ri < R; ri++) {
      if (members[ri]![0]!.socket === undefined) continue;
      loops.push(
        (async () => {
          await sleep(Math.random() * (req.intervalMs ?? 50));
          while (running) {
            await sendUntilAcked(ri, newKey(ri), req.retryMs, req.attemptTimeoutMs);
            await sleep(req.intervalMs ?? 50);
          }
        })(),
      );
    }
  }
  return { started: wall() };
}

function stats(req: StatsReq): WindowStats[] {
  return req.windows.map((w) => {
    const ackLat = new Histogram();
    const e2e = new Histogram();
    let sent = 0;
    let acked = 0;
    let deliveries = 0;
    const errors: Record<string, number> = {};
    for (let k = 0; k < mRoom.length; k++) {
      const f = mFirst.get(k);
      const a = mAck.get(k);
      if (f >= w.from && f < w.to) {
        sent++;
        if (!Number.isNaN(a)) ackLat.add(a - f);
      }
      if (a >= w.from && a < w.to) acked++;
    }
    for (let i = 0; i < dRecv.length; i++) {
      const r = dRecv.get(i);
      const s = dSent.get(i);
      if (r >= w.from && r < w.to) deliveries++;
      if (s >= w.from && s < w.to) e2e.add(r - s);
    }
    for (let i = 0; i < eTime.length; i++) {
      const t = eTime.get(i);
      if (t >= w.from && t < w.to) {
        const c = codes[eCode.get(i)] ?? "?";
        errors[c] = (errors[c] ?? 0) + 1;
      }
    }
    return { name: w.name, from: w.from, to: w.to, sent, acked, errors, ackLatency: ackLat.data(), deliveries, e2e: e2e.data() };
  });
}

function failover(req: FailoverReq): FailoverRes {
  const want = new Map(req.rooms.map((r) => [r, rooms.findIndex((x) => x.room === r)]));
  const first = new Map<number, { t: number; seq: number }>();
  for (let k = 0; k < mRoom.length; k++) {
    const att = mAttempt.get(k);
    if (!(att > req.killAt)) continue;
    const ri = mRoom.get(k);
    const a = mAck.get(k);
    const cur = first.get(ri);
    if (cur === undefined || a < cur.t) first.set(ri, { t: a, seq: mSeq.get(k) });
  }
  const errors: Record<string, number> = {};
  for (let i = 0; i < eTime.length; i++) {
    if (eTime.get(i) > req.killAt) {
      const c = codes[eCode.get(i)] ?? "?";
      errors[c] = (errors[c] ?? 0) + 1;
    }
  }
  return {
    perRoom: [...want.entries()].map(([room, ri]) => {
      const f = first.get(ri);
      return { room, ms: f === undefined ? null : f.t - req.killAt, seq: f?.seq ?? null };
    }),
    errors,
  };
}

async function stop(req: StopReq): Promise<StopRes> {
  running = false;
  draining = true;
  const d0 = performance.now();
  const outstandingDeliveries = (): number => {
    let n = 0;
    for (let k = 0; k < mRoom.length; k++) {
      if (Number.isNaN(mAck.get(k))) continue;
      const ri = mRoom.get(k);
      const full = (1 << rooms[ri]!.memberNodes.length) - 1;
      if (mMask.get(k) !== full) n++;
    }
    return n;
  };
  while (performance.now() - d0 < req.drainMs) {
    if (pending === 0 && outstandingDeliveries() === 0) break;
    await sleep(100);
  }
  draining = false;
  await Promise.race([Promise.all(loops), sleep(2000)]);
  let acked = 0;
  let expected = 0;
  let delivered = 0;
  const ackLat = new Histogram();
  const e2e = new Histogram();
  for (let k = 0; k < mRoom.length; k++) {
    const a = mAck.get(k);
    if (Number.isNaN(a)) continue;
    acked++;
    ackLat.add(a - mFirst.get(k));
    const ri = mRoom.get(k);
    expected += rooms[ri]!.memberNodes.length;
    let mask = mMask.get(k);
    while (mask > 0) {
      delivered += mask & 1;
      mask >>>= 1;
    }
  }
  for (let i = 0; i < dRecv.length; i++) e2e.add(dRecv.get(i) - dSent.get(i));
  const lostSample: StopRes["lostSample"] = [];
  for (let k = 0; k < mRoom.length && lostSample.length < 10; k++) {
    if (Number.isNaN(mAck.get(k))) continue;
    const ri = mRoom.get(k);
    const room = rooms[ri]!;
    const mask = mMask.get(k);
    const missing = room.memberNodes.map((_, mi) => mi).filter((mi) => (mask & (1 << mi)) === 0);
    if (missing.length === 0) continue;
    lostSample.push({
      room: room.room,
      seq: mSeq.get(k),
      ackedAt: new Date(mAck.get(k)).toISOString(),
      missing: missing.map((mi) => room.memberNodes[mi]!),
      lastSeqOfMissing: missing.map((mi) => members[ri]![mi]!.lastSeq),
    });
  }
  return {
    lostSample,
    sent: mRoom.length,
    acked,
    unacked: mRoom.length - acked,
    expected,
    delivered,
    lost: expected - delivered,
    dups,
    outOfOrder,
    seqGaps,
    gapEvents,
    resetEvents,
    disconnects,
    retries,
    ackLatency: ackLat.data(),
    e2e: e2e.data(),
  };
}

async function verify(req: VerifyReq): Promise<VerifyRes> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const out: VerifyRes["rooms"] = [];
  for (const room of req.rooms) {
    const ri = rooms.findIndex((r) => r.room === room);
    const member = members[ri]?.[0];
    const ackedSeq = new Map<string, number>();
    for (let k = 0; k < mRoom.length; k++) if (mRoom.get(k) === ri && !Number.isNaN(mAck.get(k))) ackedSeq.set(`${idPrefix}${k}`, mSeq.get(k));
    const r = { room, acked: ackedSeq.size, history: 0, missing: 0, seqReused: 0, seqMismatch: 0, dupSeqs: 0, error: undefined as string | undefined };
    const idAtSeq = new Map<number, string>();
    const found = new Set<string>();
    /** The last seq history answered (pages are ascending). */
    let lastSeq = 0;
    try {
      if (member === undefined || member.token === "") throw new Error("no member with a token");
      let after = 0;
      const seen = new Set<number>();
      for (let page = 0; page < 100000; page++) {
        const res = await jsonRequest(agent, `${urls[0]}/api/rooms/${encodeURIComponent(room)}/messages?after=${after}&limit=200`, "GET", undefined, member.token, 15000);
        if (res.status !== 200) throw new Error(`history → HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 150)}`);
        const list = (res.body as { messages?: { seq: number; id: string }[] }).messages ?? [];
        if (list.length === 0) break;
        for (const m of list) {
          r.history++;
          if (seen.has(m.seq)) r.dupSeqs++;
          seen.add(m.seq);
          idAtSeq.set(m.seq, m.id);
          const want = ackedSeq.get(m.id);
          if (want !== undefined) {
            found.add(m.id);
            if (want !== 0 && want !== m.seq) r.seqMismatch++;
          }
        }
        const last = list[list.length - 1]!.seq;
        if (!(last > after)) throw new Error("history paging does not advance");
        after = lastSeq = last;
      }
    } catch (e) {
      r.error = errText(e);
    }
    const missing = [...ackedSeq.keys()].filter((id) => !found.has(id));
    r.missing = missing.length;
    r.seqReused = missing.filter((id) => {
      const other = idAtSeq.get(ackedSeq.get(id) ?? -1);
      return other !== undefined && other !== id;
    }).length;
    const where = missing.length === 0 ? {} : { missingSeqs: missing.slice(0, 10).map((id) => ackedSeq.get(id) ?? 0), lastSeq };
    out.push({ ...r, ...where });
  }
  agent.destroy();
  return { rooms: out };
}

async function handle(req: OpsReq): Promise<unknown> {
  switch (req.type) {
    case "load":
      return load(req);
    case "setup":
      return setup(req);
    case "start":
      return start(req);
    case "stats":
      return stats(req);
    case "failover":
      return failover(req);
    case "stop":
      return stop(req);
    case "verify":
      return verify(req);
    case "close":
      running = false;
      for (const m of members.flat()) m.socket?.disconnect();
      setTimeout(() => process.exit(0), 200);
      return { closed: true };
  }
}

process.on("message", (raw) => {
  const env = raw as { reqId: number; req: OpsReq };
  handle(env.req).then(
    (result) => reply({ reqId: env.reqId, ok: true, result }),
    (e: unknown) => reply({ reqId: env.reqId, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
