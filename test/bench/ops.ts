/**
 * Operations phases of the benchmark (see README.md): durability (rebuild of a wiped node from the object store;
 * the checkpoint-cost half lives in run.ts because it reuses the fan-out workload), rebalance (a 4th node joins
 * under load, `fractal admin rebalance`), failover (kill -9 of an owner, time to the first ack on its rooms).
 * Every node and worker is tracked by lib.ts, so it is killed whatever happens; every step has a timeout.
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Histogram } from "./hist.js";
import { seedChains, seededMessage } from "./seed-chains.js";
import { DirectoryObjectStore } from "../../shards/index.js";
import { markCleanStop } from "../../node/clean-stop.js";
import { freePorts, isAlive, log, sleep, stopChild, track, trackTempDir, untrackTempDir, waitHttpOk, withTimeout } from "./lib.js";
import type {
  FailoverRes,
  LoadReq,
  LoadRes,
  OpsReq,
  SetupRes,
  StopRes,
  VerifyRes,
  WindowStats,
} from "./ops-worker.js";
import type { HistData } from "./protocol.js";
import { BENCH_DIR, LOG_DIR, REPO, spawnLogged, tail } from "./systems.js";

const FRACTAL = path.join(REPO, "node/bin/fractal.js");

export function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function histStats(d: HistData): ReturnType<Histogram["stats"]> {
  const h = new Histogram();
  h.merge(d);
  return h.stats();
}

// ---------------------------------------------------------------- worker child

export class OpsWorker {
  readonly child: ChildProcess;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private exitError: Error | undefined;

  constructor(readonly name: string) {
    this.child = fork(path.join(BENCH_DIR, "ops-worker.ts"), [], {
      execArgv: ["--import", "tsx", "--max-old-space-size=4096"],
      stdio: ["ignore", 2, 2, "ipc"],
    });
    track(name, this.child, false);
    this.child.on("message", (raw) => {
      const m = raw as { event?: string; text?: string; reqId?: number; ok?: boolean; result?: unknown; error?: string };
      if (m.event !== undefined) {
        log(m.text ?? "");
        return;
      }
      const p = this.pending.get(m.reqId ?? -1);
      if (p === undefined) return;
      this.pending.delete(m.reqId!);
      if (m.ok === true) p.resolve(m.result);
      else p.reject(new Error(`${name}: ${m.error}`));
    });
    this.child.on("exit", (code, sig) => {
      this.exitError = new Error(`${name} exited (code ${code}, signal ${sig})`);
      for (const p of this.pending.values()) p.reject(this.exitError);
      this.pending.clear();
    });
  }

  request<T>(req: OpsReq, timeoutMs: number): Promise<T> {
    if (this.exitError !== undefined) return Promise.reject(this.exitError);
    const reqId = this.nextId++;
    const p = new Promise<T>((resolve, reject) => this.pending.set(reqId, { resolve: resolve as (v: unknown) => void, reject }));
    this.child.send({ reqId, req });
    return withTimeout(p, timeoutMs, `${this.name} ${req.type}`).finally(() => this.pending.delete(reqId));
  }

  async close(): Promise<void> {
    if (isAlive(this.child)) {
      await this.request({ type: "close" }, 5000).catch(() => undefined);
      await stopChild(this.child, 3000);
    }
  }
}

// ---------------------------------------------------------------- nodes

export interface NodeProc {
  id: string;
  httpPort: number;
  grpcPort: number;
  url: string;
  dataDir: string;
  child: ChildProcess;
  logFile: string;
  /** Date.now() right before the spawn. */
  spawnedAt: number;
}

export function spawnNode(o: { id: string; httpPort: number; grpcPort: number; root: string; tag: string; args: string[]; logSuffix?: string; env?: NodeJS.ProcessEnv }): NodeProc {
  const dataDir = path.join(o.root, o.id);
  const logFile = path.join(LOG_DIR, `${o.tag}-${o.id}${o.logSuffix ?? ""}.log`);
  // BENCH_NODE_FLAGS: Node.js flags for the nodes of phases 3-5 (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof";
  // Node refuses --cpu-prof in NODE_OPTIONS).
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? "").split(/\s+/).filter((f) => f !== "");
  const args = [...nodeFlags, FRACTAL, "node", "--id", o.id, "--http-port", String(o.httpPort), "--grpc-port", String(o.grpcPort), "--data-dir", dataDir, ...o.args];
  const spawnedAt = Date.now();
  const child = spawnLogged(`fractal-${o.tag}-${o.id}`, process.execPath, args, logFile, { env: { ...process.env, ...o.env } });
  return { id: o.id, httpPort: o.httpPort, grpcPort: o.grpcPort, url: `http://127.0.0.1:${o.httpPort}`, dataDir, child, logFile, spawnedAt };
}

export async function waitReady(nodes: NodeProc[], timeoutMs: number): Promise<void> {
  try {
    await Promise.all(nodes.map((n) => waitHttpOk(`${n.url}/readyz`, timeoutMs, () => isAlive(n.child))));
  } catch (e) {
    throw new Error(`${errMsg(e)}\n${nodes.map((n) => `${n.id} log ${n.logFile}:\n${tail(n.logFile, 8)}`).join("\n")}`);
  }
}

/**
 * SIGTERM to every node (SIGKILL after `graceMs`); logs how long the graceful stops took and which nodes had to be
 * killed (returned as notes). Nodes that are already dead (kill -9 in the failover phase) are skipped.
 */
export async function stopNodes(nodes: NodeProc[], graceMs: number, tag: string): Promise<string[]> {
  const t0 = performance.now();
  const live = nodes.filter((n) => isAlive(n.child));
  await Promise.all(live.map((n) => stopChild(n.child, graceMs)));
  const killed = live.filter((n) => n.child.signalCode === "SIGKILL");
  log(
    `${tag}: ${live.length} node(s) stopped in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
      (killed.length > 0 ? `; ${killed.map((n) => n.id).join(",")} did not finish a graceful stop within ${graceMs / 1000} s and got SIGKILL` : ""),
  );
  return killed.map((n) => {
    const lines = logLines(n.logFile).filter((l) => typeof l.time === "number");
    const last = lines.at(-1);
    return `${n.id} did not exit within ${graceMs / 1000} s of SIGTERM (SIGKILL); last log line: ${JSON.stringify(last ?? null).slice(0, 200)}`;
  });
}

/** SIGKILL of the node's whole process group (it was spawned detached). */
export function kill9(n: NodeProc): void {
  try {
    process.kill(-(n.child.pid ?? 0), "SIGKILL");
  } catch {
    n.child.kill("SIGKILL");
  }
}

/** A temporary cluster root, removed at the end (and by lib.ts's exit handler). */
export function tempRoot(tag: string, keep: boolean): { root: string; cleanup: () => void } {
  const root = mkdtempSync(path.join(tmpdir(), `fractal-bench-${tag}-`));
  if (!keep) trackTempDir(root);
  return {
    root,
    cleanup: () => {
      if (keep) log(`data kept in ${root}`);
      else {
        rmSync(root, { recursive: true, force: true });
        untrackTempDir(root);
      }
    },
  };
}

export async function startCluster(o: { tag: string; root: string; n: number; args: string[]; readyTimeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<NodeProc[]> {
  const ports = await freePorts(o.n * 2);
  const peers = Array.from({ length: o.n }, (_, i) => `n${i + 1}=127.0.0.1:${ports[o.n + i]}`).join(",");
  const nodes = Array.from({ length: o.n }, (_, i) =>
    spawnNode({ id: `n${i + 1}`, httpPort: ports[i]!, grpcPort: ports[o.n + i]!, root: o.root, tag: o.tag, args: ["--peers", peers, ...o.args], env: o.env }),
  );
  try {
    await waitReady(nodes, o.readyTimeoutMs);
  } catch (e) {
    await Promise.all(nodes.map((n) => stopChild(n.child, 3000)));
    throw e;
  }
  log(`${o.tag}: ${o.n} node(s) ready: ${nodes.map((n) => `${n.id} ${n.url} pid ${n.child.pid}`).join(", ")}${o.args.length > 0 ? ` (${o.args.join(" ")})` : ""}`);
  return nodes;
}

function timedCleanup(cleanup: () => void, tag: string): void {
  const t0 = performance.now();
  cleanup();
  const ms = performance.now() - t0;
  if (ms > 1000) log(`${tag}: removing the data directory took ${(ms / 1000).toFixed(1)} s`);
}

// ---------------------------------------------------------------- admin CLI and HTTP

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `node node/bin/fractal.js admin ...`, killed after `timeoutMs`. */
export function runAdmin(args: string[], timeoutMs: number): Promise<CliResult> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [FRACTAL, "admin", ...args], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  track(`fractal admin ${args[0]}`, child, false);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

export function jsonLines(s: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of s.split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    try {
      out.push(JSON.parse(t) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  }
  return out;
}

export async function sessionToken(url: string, name: string): Promise<string> {
  const res = await fetch(`${url}/api/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
    signal: AbortSignal.timeout(10000),
  });
  const body = (await res.json()) as { token?: string };
  if (res.status !== 200 || body.token === undefined) throw new Error(`POST /api/session → ${res.status}`);
  return body.token;
}

export async function roomInfo(url: string, token: string, room: string): Promise<{ owner?: string; seq?: number }> {
  const res = await fetch(`${url}/api/rooms/${encodeURIComponent(room)}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(15000) });
  const body = (await res.json()) as { owner?: string; seq?: number; error?: { code: string; message: string } };
  if (res.status !== 200) throw new Error(`GET /api/rooms/${room} → ${res.status} ${JSON.stringify(body.error)}`);
  return body;
}

// ---------------------------------------------------------------- metrics

export async function scrape(url: string): Promise<string> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10000) });
    return res.status === 200 ? await res.text() : "";
  } catch {
    return "";
  }
}

/** Sum of every series of a counter/gauge. */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+([0-9.eE+-]+|NaN|\\+Inf)\\s*$`, "gm");
  for (const m of text.matchAll(re)) {
    const v = Number(m[1]);
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

/** A counter/gauge's series by the value of one label (label value → sum of its series). */
export function metricByLabel(text: string, name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^${name}\\{([^}]*)\\}\\s+([0-9.eE+-]+)\\s*$`, "gm");
  for (const m of text.matchAll(re)) {
    const key = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1];
    const v = Number(m[2]);
    if (key !== undefined && Number.isFinite(v)) out.set(key, (out.get(key) ?? 0) + v);
  }
  return out;
}

/** Cumulative histogram buckets (le → count), summed over series. */
export function histBuckets(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\}\\s+([0-9.eE+-]+)\\s*$`, "gm");
  for (const m of text.matchAll(re)) {
    const le = /le="([^"]+)"/.exec(m[1]!)?.[1];
    if (le === undefined) continue;
    out.set(le, (out.get(le) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Quantile from the difference of two cumulative bucket sets: the upper edge of the bucket that holds it. */
export function bucketQuantile(before: Map<string, number>, after: Map<string, number>, q: number): { value: string; n: number } {
  const les = [...after.keys()].sort((a, b) => (a === "+Inf" ? Infinity : Number(a)) - (b === "+Inf" ? Infinity : Number(b)));
  const delta = les.map((le) => ({ le, c: (after.get(le) ?? 0) - (before.get(le) ?? 0) }));
  const n = delta.find((d) => d.le === "+Inf")?.c ?? 0;
  if (n <= 0) return { value: "-", n: 0 };
  const rank = q * n;
  for (let i = 0; i < delta.length; i++) {
    const d = delta[i]!;
    if (d.c >= rank) return { value: d.le === "+Inf" ? `>${delta[i - 1]?.le ?? "?"}` : `≤${d.le}`, n };
  }
  return { value: "?", n };
}

// ---------------------------------------------------------------- bulk load

/** Loads `total` messages over `rooms` with `procs` worker processes; merges their answers. */
export async function bulkLoad(o: {
  tag: string;
  urls: string[];
  rooms: string[];
  total: number;
  procs: number;
  concurrency: number;
  maxMs: number;
  textBytes: number;
}): Promise<LoadRes & { perRoomByName: Map<string, { acked: number; maxSeq: number }>; ratePerSec: number }> {
  const workers = Array.from({ length: o.procs }, (_, i) => new OpsWorker(`${o.tag}-loader-${i}`));
  try {
    log(`${o.tag}: loading ${o.total} messages into ${o.rooms.length} rooms: ${o.procs} process(es) × ${o.concurrency} parallel POST /api/rooms/:room/messages, cap ${(o.maxMs / 1000).toFixed(0)} s`);
    const parts = await Promise.all(
      workers.map((w, i) =>
        w.request<LoadRes>(
          {
            type: "load",
            urls: o.urls,
            // Worker i takes rooms i, i+procs, ...: every room has one writer process (its ids stay unique).
            rooms: o.rooms.filter((_, r) => r % o.procs === i),
            total: Math.floor(o.total / o.procs) + (i < o.total % o.procs ? 1 : 0),
            concurrency: o.concurrency,
            maxMs: o.maxMs,
            textBytes: o.textBytes,
            user: `loader${i}`,
            idPrefix: `L${i}-`,
          } satisfies LoadReq,
          o.maxMs + 90000,
        ),
      ),
    );
    const errors: Record<string, number> = {};
    const perRoomByName = new Map<string, { acked: number; maxSeq: number }>();
    const lat = new Histogram();
    parts.forEach((p, i) => {
      for (const [k, v] of Object.entries(p.errors)) errors[k] = (errors[k] ?? 0) + v;
      const rs = o.rooms.filter((_, r) => r % o.procs === i);
      rs.forEach((room, j) => perRoomByName.set(room, { acked: p.perRoom[j] ?? 0, maxSeq: p.maxSeq[j] ?? 0 }));
      lat.merge(p.ackLatency);
    });
    const ms = Math.max(...parts.map((p) => p.ms));
    const acked = parts.reduce((a, p) => a + p.acked, 0);
    const res = {
      sent: parts.reduce((a, p) => a + p.sent, 0),
      acked,
      failed: parts.reduce((a, p) => a + p.failed, 0),
      errors,
      ms,
      perRoom: [],
      maxSeq: [],
      stoppedByTime: parts.some((p) => p.stoppedByTime),
      ackLatency: lat.data(),
      perRoomByName,
      ratePerSec: (acked * 1000) / ms,
    };
    const st = lat.stats();
    log(
      `${o.tag}: loaded ${acked}/${o.total} messages in ${(ms / 1000).toFixed(1)} s (${res.ratePerSec.toFixed(0)}/s), failed ${res.failed}` +
        `${Object.keys(errors).length > 0 ? ` errors ${JSON.stringify(errors)}` : ""}, POST latency p50 ${st.p50?.toFixed(1)} p99 ${st.p99?.toFixed(1)} ms` +
        (res.stoppedByTime ? " (stopped by the time cap)" : ""),
    );
    return res;
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
}

// ---------------------------------------------------------------- durability b: rebuild

export interface RebuildResult {
  ok: boolean;
  error?: string;
  rooms: number;
  targetMessages: number;
  loaded: number;
  loadSec: number;
  loadPerSec: number;
  loadStoppedByTime: boolean;
  loadErrors: Record<string, number>;
  checkpoint?: { rooms: number; messages: number; failed: number; ms: number; cliMs: number };
  /** Set when the chains were seeded (seed-chains.ts) instead of loaded through HTTP. */
  seeded?: { batch: number; segments: number };
  stopMs?: number;
  /** Times in ms from the spawn of the restarted process. */
  readyMs?: number;
  rebuildStartMs?: number;
  /** "rebuild finished" log line (its pino `time`) − spawn. */
  rebuildFinishedMs?: number;
  rebuildMessages?: number;
  rebuildRooms?: number;
  /** First `admin status --json` with nodes[0].gated empty: end of that CLI call − spawn. */
  gatedEmptyMs?: number;
  statusPolls: number;
  /** A room answered GET /api/rooms/:room with a seq below its acked head before the node was ready. */
  servedEarly?: { atMs: number; room: string; seq: number; acked: number };
  /** A status poll answered gated=[] before the node was ready (its rooms not gated yet). */
  gatedEmptyBeforeReadyMs?: number;
  /** nodes[0].gated.length from one `fractal admin status --json` after the rebuild. */
  cliGated?: number;
  /** Acked messages / (rebuild finished − spawn): the log's count can be lower (see notes). */
  ackedPerSec?: number;
  /** Messages restored / (rebuild finished − spawn). */
  restoredPerSec?: number;
  /** Messages restored / (rebuild finished − "rooms to check" log line). */
  restoredPerSecPure?: number;
  /** Sample rooms: seq after the rebuild vs the highest acked seq. */
  sample: { room: string; acked: number; ackedMaxSeq: number; seqAfter: number | null; history: number; historyLastSeq: number; error?: string }[];
  notes: string[];
}

function logLines(file: string): Record<string, unknown>[] {
  try {
    return jsonLines(readFileSync(file, "utf8"));
  } catch {
    return [];
  }
}

type RebuildOptions = Parameters<typeof runRebuild>[0];
type PerRoom = Map<string, { acked: number; maxSeq: number }>;

/** Bulk load through the node's HTTP API, then `fractal admin checkpoint`. */
async function loadRebuildRooms(o: RebuildOptions, url: string, rooms: string[], res: RebuildResult): Promise<{ perRoomByName: PerRoom }> {
  const loaded = await bulkLoad({ tag: o.tag, urls: [url], rooms, total: o.messages, procs: o.loadProcs, concurrency: o.concurrency, maxMs: o.loadMaxMs, textBytes: o.textBytes });
    res.loaded = loaded.acked;
    res.loadSec = loaded.ms / 1000;
    res.loadPerSec = loaded.ratePerSec;
    res.loadStoppedByTime = loaded.stoppedByTime;
    res.loadErrors = loaded.errors;
    if (loaded.stoppedByTime) res.notes.push(`load stopped by the ${(o.loadMaxMs / 1000).toFixed(0)} s cap at ${loaded.acked} of ${o.messages} messages`);
    if (loaded.failed > 0) res.notes.push(`${loaded.failed} loads failed: ${JSON.stringify(loaded.errors)}`);

    log(`${o.tag}: fractal admin checkpoint --json`);
    const ck = await runAdmin(["checkpoint", "--node", url, "--json"], 180000);
    const ckJson = jsonLines(ck.stdout).at(-1) as { rooms?: number; messages?: number; failed?: number; ms?: number } | undefined;
    if (ck.code !== 0 || ckJson === undefined) throw new Error(`admin checkpoint failed (exit ${ck.code}): ${ck.stdout.slice(-300)} ${ck.stderr.slice(-500)}`);
    res.checkpoint = { rooms: ckJson.rooms ?? 0, messages: ckJson.messages ?? 0, failed: ckJson.failed ?? 0, ms: ckJson.ms ?? 0, cliMs: ck.ms };
    log(`${o.tag}: checkpoint: ${JSON.stringify(ckJson)} (CLI ${ck.ms.toFixed(0)} ms)`);
  return loaded;
}

/**
 * Writes the rooms' chains straight into the object store as the (still running, idle) node's own, under the
 * map's epoch: the node then stops cleanly, loses its disk and rebuilds them like any chain it wrote itself.
 */
async function seedRebuildRooms(o: RebuildOptions, root: string, rooms: string[], batch: number, res: RebuildResult): Promise<{ perRoomByName: PerRoom }> {
  const perRoom = Math.floor(o.messages / rooms.length);
  log(`${o.tag}: seeding ${rooms.length} chains of ${perRoom} messages (${batch} per checkpoint round) into ${path.join(root, "objects")}`);
  const seeded = await seedChains({ dir: path.join(root, "objects"), rooms, messagesPerRoom: perRoom, batch, textBytes: o.textBytes, node: "n1", epoch: 1 });
  res.loaded = seeded.messages;
  res.loadSec = seeded.ms / 1000;
  res.loadPerSec = seeded.messages / res.loadSec;
  res.seeded = { batch, segments: seeded.segments };
  log(`${o.tag}: seeded ${seeded.messages} messages in ${seeded.segments} segments in ${res.loadSec.toFixed(1)} s`);
  return { perRoomByName: new Map(rooms.map((room) => [room, { acked: perRoom, maxSeq: perRoom }])) };
}

export async function runRebuild(o: {
  tag: string;
  rooms: number;
  messages: number;
  loadMaxMs: number;
  loadProcs: number;
  concurrency: number;
  textBytes: number;
  readyTimeoutMs: number;
  rebuildTimeoutMs: number;
  keepData: boolean;
  /** Seed the chains straight into the object store (see seed-chains.ts) instead of loading through HTTP. */
  seedBatch?: number;
}): Promise<RebuildResult> {
  const res: RebuildResult = {
    ok: false,
    rooms: o.rooms,
    targetMessages: o.messages,
    loaded: 0,
    loadSec: 0,
    loadPerSec: 0,
    loadStoppedByTime: false,
    loadErrors: {},
    statusPolls: 0,
    sample: [],
    notes: [],
  };
  const { root, cleanup } = tempRoot(o.tag, o.keepData);
  const nodes: NodeProc[] = [];
  try {
    const [h, g] = await freePorts(2);
    const args = ["--peers", `n1=127.0.0.1:${g}`];
    const n1 = spawnNode({ id: "n1", httpPort: h!, grpcPort: g!, root, tag: o.tag, args });
    nodes.push(n1);
    await waitReady([n1], o.readyTimeoutMs);
    log(`${o.tag}: 1-node cluster ready at ${n1.url} (data ${root})`);
    const rooms = Array.from({ length: o.rooms }, (_, i) => `rb-${o.tag}-r${i}`.toLowerCase());
    const loaded = o.seedBatch !== undefined ? await seedRebuildRooms(o, root, rooms, o.seedBatch, res) : await loadRebuildRooms(o, n1.url, rooms, res);
    // A token from before the restart (tokens are signed with the cluster secret from the object store).
    const probeToken = await sessionToken(n1.url, "prober");
    const s0 = performance.now();
    await stopChild(n1.child, 60000);
    res.stopMs = performance.now() - s0;
    const finalCk = logLines(n1.logFile).find((l) => l.msg === "final checkpoint");
    log(`${o.tag}: node stopped with SIGTERM in ${res.stopMs.toFixed(0)} ms (exit ${n1.child.exitCode}, ${n1.child.signalCode}); final checkpoint ${JSON.stringify(finalCk ?? null)}`);
    rmSync(n1.dataDir, { recursive: true, force: true });
    log(`${o.tag}: data directory ${n1.dataDir} deleted (objects kept); restarting`);

    const n1b = spawnNode({ id: "n1", httpPort: h!, grpcPort: g!, root, tag: o.tag, args, logSuffix: "-restart" });
    nodes.push(n1b);
    const t0 = n1b.spawnedAt;
    const deadline = t0 + o.rebuildTimeoutMs;
    let finished: Record<string, unknown> | undefined;
    let startLine: Record<string, unknown> | undefined;
    let readyLine: Record<string, unknown> | undefined;
    const watchLog = (): void => {
      const lines = logLines(n1b.logFile);
      startLine ??= lines.find((l) => l.msg === "rooms to check against their checkpoints");
      readyLine ??= lines.find((l) => l.msg === "node ready");
      finished ??= lines.find((l) => l.msg === "rebuild finished");
    };
    // Poll GET /api/admin/status (what `fractal admin status --json` prints) every 200 ms: the CLI takes 1-4 s
    // and a core to start on this machine, which would both blur the reading and slow the rebuild down. The CLI
    // itself is run once at the end to confirm.
    while (Date.now() < deadline && (finished === undefined || res.gatedEmptyMs === undefined)) {
      if (!isAlive(n1b.child)) throw new Error(`restarted node exited:\n${tail(n1b.logFile)}`);
      watchLog();
      if (res.gatedEmptyMs === undefined) {
        try {
          // Rooms are gated only once the node has listed the object store, which is before it turns ready but
          // after its HTTP port opens: a poll before that sees an empty list that means nothing yet.
          const wasReady = readyLine !== undefined;
          const r = await fetch(`${n1b.url}/api/admin/status`, { signal: AbortSignal.timeout(5000) });
          res.statusPolls++;
          const j = (await r.json()) as { nodes?: { reachable?: boolean; gated?: string[] }[] };
          const gated = j.nodes?.[0]?.gated;
          if (r.status === 200 && Array.isArray(gated)) {
            if (gated.length === 0 && !wasReady) {
              if (res.gatedEmptyBeforeReadyMs === undefined) {
                res.gatedEmptyBeforeReadyMs = Date.now() - t0;
                res.notes.push(`GET /api/admin/status answered gated=[] ${res.gatedEmptyBeforeReadyMs} ms after the spawn, before the node had gated its rooms (not ready yet)`);
              }
            } else if (gated.length === 0) res.gatedEmptyMs = Date.now() - t0;
            else if (res.statusPolls % 25 === 1) log(`${o.tag}: admin status: ${gated.length} room(s) gated`);
          }
          // Read-only probe: is a room served before it is rebuilt (seq lower than what was acked)?
          if (!wasReady && res.servedEarly === undefined) {
            const room = rooms[rooms.length - 1]!;
            const want = loaded.perRoomByName.get(room)?.maxSeq ?? 0;
            const info = await roomInfo(n1b.url, probeToken, room).catch(() => undefined);
            if (info !== undefined && (info.seq ?? 0) < want) {
              res.servedEarly = { atMs: Date.now() - t0, room, seq: info.seq ?? 0, acked: want };
              res.notes.push(
                `GET /api/rooms/${room} answered seq ${info.seq} ${res.servedEarly.atMs} ms after the spawn (before ready; ${want} messages were acked): ` +
                  "the room was served before it was rebuilt",
              );
            }
          }
        } catch {
          /* not listening yet */
        }
      }
      await sleep(readyLine === undefined ? 50 : 200);
    }
    const cli = await runAdmin(["status", "--node", n1b.url, "--json"], 30000);
    const cliJson = jsonLines(cli.stdout).at(-1) as { nodes?: { gated?: string[] }[] } | undefined;
    res.cliGated = cliJson?.nodes?.[0]?.gated?.length;
    log(`${o.tag}: fractal admin status --json after the rebuild: exit ${cli.code}, nodes[0].gated has ${res.cliGated} room(s) (CLI took ${cli.ms.toFixed(0)} ms)`);
    watchLog();
    const time = (l: Record<string, unknown> | undefined): number | undefined => (typeof l?.time === "number" ? l.time - t0 : undefined);
    res.readyMs = time(readyLine);
    res.rebuildStartMs = time(startLine);
    res.rebuildFinishedMs = time(finished);
    res.rebuildMessages = typeof finished?.messages === "number" ? finished.messages : undefined;
    res.rebuildRooms = typeof finished?.roomsDone === "number" ? finished.roomsDone : undefined;
    if (finished === undefined) res.notes.push(`no "rebuild finished" log line within ${(o.rebuildTimeoutMs / 1000).toFixed(0)} s`);
    if (res.gatedEmptyMs === undefined) res.notes.push(`admin status still showed gated rooms after ${(o.rebuildTimeoutMs / 1000).toFixed(0)} s`);
    if (res.rebuildMessages !== undefined && res.rebuildFinishedMs !== undefined) {
      res.restoredPerSec = (res.rebuildMessages * 1000) / res.rebuildFinishedMs;
      if (res.rebuildStartMs !== undefined && res.rebuildFinishedMs > res.rebuildStartMs)
        res.restoredPerSecPure = (res.rebuildMessages * 1000) / (res.rebuildFinishedMs - res.rebuildStartMs);
    }
    log(
      `${o.tag}: restart: ready ${res.readyMs} ms, rebuild start ${res.rebuildStartMs} ms, finished ${res.rebuildFinishedMs} ms ` +
        `(${res.rebuildMessages} messages, ${res.rebuildRooms} rooms), admin status gated=[] at ${res.gatedEmptyMs} ms after ${res.statusPolls} poll(s); ` +
        `${res.restoredPerSec?.toFixed(0)} msg/s from spawn, ${res.restoredPerSecPure?.toFixed(0)} msg/s from rebuild start`,
    );
    if (res.rebuildMessages !== undefined && res.rebuildMessages !== res.loaded)
      res.notes.push(`the "rebuild finished" log line counts ${res.rebuildMessages} messages restored, but ${res.loaded} were acked (all rooms were wiped)`);

    if (res.rebuildFinishedMs !== undefined) res.ackedPerSec = (res.loaded * 1000) / res.rebuildFinishedMs;
    // Sample rooms: their whole history must be back (every acked seq, nothing else); the next seq is after
    // head + --checkpoint-backlog (documented: a rebuilt room never reuses a seq).
    await waitReady([n1b], 30000);
    const token = await sessionToken(n1b.url, "verifier");
    const picks = [0, 1, Math.floor(o.rooms / 2), o.rooms - 1].filter((v, i, a) => v >= 0 && v < o.rooms && a.indexOf(v) === i);
    for (const i of picks) {
      const room = rooms[i]!;
      const want = loaded.perRoomByName.get(room) ?? { acked: 0, maxSeq: 0 };
      const s: RebuildResult["sample"][number] = { room, acked: want.acked, ackedMaxSeq: want.maxSeq, seqAfter: null, history: 0, historyLastSeq: 0 };
      try {
        s.seqAfter = (await roomInfo(n1b.url, token, room)).seq ?? null;
        for (let after = 0; ; ) {
          const r = await fetch(`${n1b.url}/api/rooms/${room}/messages?after=${after}&limit=200`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(15000) });
          const list = ((await r.json()) as { messages?: { seq: number; id: string; user: string; text: string; ts: number }[] }).messages ?? [];
          if (r.status !== 200) throw new Error(`history → HTTP ${r.status}`);
          if (list.length === 0) break;
          // Seeded rooms are known message by message: every one must come back exactly as written.
          const wrong = o.seedBatch === undefined ? undefined : list.find((m) => {
            const want = seededMessage(room, m.seq, o.textBytes);
            return m.id !== want.id || m.user !== want.user || m.text !== want.text || m.ts !== want.ts;
          });
          if (wrong !== undefined) throw new Error(`message ${wrong.seq} differs from the seeded one`);
          s.history += list.length;
          after = list[list.length - 1]!.seq;
          s.historyLastSeq = after;
        }
      } catch (e) {
        s.error = errMsg(e);
      }
      res.sample.push(s);
    }
    const bad = res.sample.filter((s) => s.history !== s.acked || s.historyLastSeq !== s.ackedMaxSeq || s.error !== undefined);
    if (bad.length > 0) res.notes.push(`rooms whose history after the rebuild differs from what was acked: ${JSON.stringify(bad)}`);
    log(`${o.tag}: sample rooms after the rebuild: ${res.sample.map((s) => `${s.room} acked ${s.acked} history ${s.history} last ${s.historyLastSeq} seq ${s.seqAfter}`).join("; ")}`);
    res.ok = finished !== undefined && res.gatedEmptyMs !== undefined;
  } catch (e) {
    res.error = errMsg(e);
    log(`${o.tag} FAILED: ${res.error}`);
  } finally {
    res.notes.push(...(await stopNodes(nodes, 20000, o.tag)));
    timedCleanup(cleanup, o.tag);
  }
  return res;
}

// ---------------------------------------------------------------- rebalance

export interface RebalanceResult {
  ok: boolean;
  error?: string;
  rooms: number;
  targetMessages: number;
  loaded: number;
  loadSec: number;
  loadPerSec: number;
  loadStoppedByTime: boolean;
  /** Set when the chains were seeded; rebuildSec: from the cluster's readiness to no room gated. */
  seeded?: { batch: number; segments: number };
  rebuildSec?: number;
  steadyRooms: number;
  steadyMembers: number;
  steadyRate: number;
  plannedMoves?: number;
  steadyRoomsMoved?: number;
  result?: { done: number; total: number; failed: number; messages: number; epoch: number; pauseMs: { p50: number; p99: number; max: number }; ms: number };
  cliMs?: number;
  n4ReadyMs?: number;
  windows: {
    name: string;
    sec: number;
    sentPerSec: number;
    ackedPerSec: number;
    deliveredPerSec: number;
    ackP50: number | null;
    ackP99: number | null;
    ackMax: number | null;
    e2eP50: number | null;
    e2eP99: number | null;
    e2eMax: number | null;
    errors: Record<string, number>;
  }[];
  /** Delivered/s (and acked/s) during the rebalance ÷ steady. */
  deliveredRatio?: number;
  ackedRatio?: number;
  totals?: StopRes;
  verify?: VerifyRes;
  /** Acked messages missing from the history of the moved steady-load rooms. */
  lostAcked?: number;
  notes: string[];
}

/** Waits until no node of the cluster has a room gated for its rebuild (GET /api/admin/status). */
async function waitRebuilt(urls: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gated = await Promise.all(
      urls.map(async (url) => {
        const r = await fetch(`${url}/api/admin/status`, { signal: AbortSignal.timeout(10000) }).catch(() => undefined);
        const j = (await r?.json().catch(() => undefined)) as { nodes?: { gated?: string[] }[] } | undefined;
        return j?.nodes?.reduce((n, x) => n + (x.gated?.length ?? 0), 0) ?? Infinity;
      }),
    );
    if (gated.every((n) => n === 0)) return;
    if (Date.now() > deadline) throw new Error(`rooms still gated after ${timeoutMs} ms: ${gated.join(", ")}`);
    await sleep(500);
  }
}

export async function runRebalance(o: {
  tag: string;
  rooms: number;
  messages: number;
  loadMaxMs: number;
  loadProcs: number;
  concurrency: number;
  textBytes: number;
  steadyRooms: number;
  members: number;
  rate: number;
  steadySec: number;
  afterSec: number;
  maxConcurrent: number;
  readyTimeoutMs: number;
  rebalanceTimeoutMs: number;
  keepData: boolean;
  /** Seed the chains before the nodes start (see seed-chains.ts) instead of loading through HTTP. */
  seedBatch?: number;
}): Promise<RebalanceResult> {
  const res: RebalanceResult = {
    ok: false,
    rooms: o.rooms,
    targetMessages: o.messages,
    loaded: 0,
    loadSec: 0,
    loadPerSec: 0,
    loadStoppedByTime: false,
    steadyRooms: o.steadyRooms,
    steadyMembers: o.members,
    steadyRate: o.rate,
    windows: [],
    notes: [],
  };
  const { root, cleanup } = tempRoot(o.tag, o.keepData);
  const nodes: NodeProc[] = [];
  let worker: OpsWorker | undefined;
  try {
    const rooms = Array.from({ length: o.rooms }, (_, i) => `rl-${o.tag}-r${i}`.toLowerCase());
    if (o.seedBatch !== undefined) {
      // The chains exist before the cluster does: every node starts on an empty disk and rebuilds its share.
      const perRoom = Math.floor(o.messages / rooms.length);
      const seeded = await seedChains({ dir: path.join(root, "objects"), rooms, messagesPerRoom: perRoom, batch: o.seedBatch, textBytes: o.textBytes, node: "n1", epoch: 1 });
      // As if the nodes had stopped cleanly: nothing acknowledged lies beyond the chains, no seqs to skip.
      const objects = new DirectoryObjectStore(path.join(root, "objects"));
      for (const id of ["n1", "n2", "n3"]) await markCleanStop(objects, id);
      res.loaded = seeded.messages;
      res.loadSec = seeded.ms / 1000;
      res.loadPerSec = seeded.messages / res.loadSec;
      res.seeded = { batch: o.seedBatch, segments: seeded.segments };
      log(`${o.tag}: seeded ${seeded.messages} messages in ${seeded.segments} segments of ${rooms.length} rooms in ${res.loadSec.toFixed(1)} s`);
    }
    nodes.push(...(await startCluster({ tag: o.tag, root, n: 3, args: [], readyTimeoutMs: o.readyTimeoutMs })));
    const urls = nodes.map((n) => n.url);
    if (o.seedBatch !== undefined) {
      const t = performance.now();
      await waitRebuilt(urls, o.rebalanceTimeoutMs);
      res.rebuildSec = (performance.now() - t) / 1000;
      log(`${o.tag}: the 3 nodes rebuilt their rooms from the chains ${res.rebuildSec.toFixed(1)} s after ready`);
    } else {
      const loaded = await bulkLoad({ tag: o.tag, urls, rooms, total: o.messages, procs: o.loadProcs, concurrency: o.concurrency, maxMs: o.loadMaxMs, textBytes: o.textBytes });
      res.loaded = loaded.acked;
      res.loadSec = loaded.ms / 1000;
      res.loadPerSec = loaded.ratePerSec;
      res.loadStoppedByTime = loaded.stoppedByTime;
      if (loaded.stoppedByTime) res.notes.push(`load stopped by the ${(o.loadMaxMs / 1000).toFixed(0)} s cap at ${loaded.acked} of ${o.messages} messages`);
      if (loaded.failed > 0) res.notes.push(`${loaded.failed} loads failed: ${JSON.stringify(loaded.errors)}`);
      // Let the checkpointer catch up with the load before measuring the steady state.
      const ck = await runAdmin(["checkpoint", "--node", urls[0]!, "--json"], 180000);
      log(`${o.tag}: admin checkpoint after the load: ${ck.stdout.trim().slice(-200)} (${ck.ms.toFixed(0)} ms)`);
    }

    const steady = rooms.slice(0, o.steadyRooms);
    worker = new OpsWorker(`${o.tag}-steady`);
    const setup = await worker.request<SetupRes>(
      {
        type: "setup",
        urls,
        rooms: steady.map((room, i) => ({ room, memberNodes: Array.from({ length: o.members }, (_, m) => (i + m) % 3) })),
        userPrefix: "st",
        idPrefix: "S",
        textBytes: o.textBytes,
        concurrency: 50,
      },
      120000,
    );
    log(`${o.tag}: steady load: ${setup.joined} clients joined (${setup.failed} failed) in ${(setup.ms / 1000).toFixed(1)} s${setup.errors.length > 0 ? `: ${setup.errors.slice(0, 3).join(" | ")}` : ""}`);
    if (setup.joined === 0) throw new Error("no steady-load client joined");
    await worker.request({ type: "start", mode: "rate", rate: o.rate, retryMs: 100, attemptTimeoutMs: 5000 }, 10000);
    const tStart = Date.now();
    await sleep(2000 + o.steadySec * 1000);
    const tN4 = Date.now();
    const [h4, g4] = await freePorts(2);
    const n4 = spawnNode({ id: "n4", httpPort: h4!, grpcPort: g4!, root, tag: o.tag, args: ["--object-store", path.join(root, "objects"), "--join", urls[0]!] });
    nodes.push(n4);
    await waitReady([n4], o.readyTimeoutMs);
    res.n4ReadyMs = Date.now() - tN4;
    log(`${o.tag}: n4 joined and ready in ${res.n4ReadyMs} ms; fractal admin rebalance --json --max-concurrent ${o.maxConcurrent}`);
    const tReb0 = Date.now();
    const rb = await runAdmin(["rebalance", "--node", urls[1]!, "--json", "--max-concurrent", String(o.maxConcurrent)], o.rebalanceTimeoutMs);
    const tReb1 = Date.now();
    res.cliMs = rb.ms;
    const lines = jsonLines(rb.stdout);
    const plan = lines.find((l) => l.plan !== undefined)?.plan as { moves?: { room: string }[] } | undefined;
    res.plannedMoves = plan?.moves?.length;
    const steadySet = new Set(steady);
    res.steadyRoomsMoved = plan?.moves?.filter((m) => steadySet.has(m.room)).length;
    const result = lines.at(-1)?.result as RebalanceResult["result"] | undefined;
    res.result = result;
    log(`${o.tag}: rebalance exit ${rb.code} in ${rb.ms.toFixed(0)} ms: ${JSON.stringify(result ?? null)}; ${res.plannedMoves} planned moves, ${res.steadyRoomsMoved} of them under the steady load`);
    if (rb.code !== 0 || result === undefined) res.notes.push(`admin rebalance exit ${rb.code}: ${rb.stdout.slice(-300)} ${rb.stderr.slice(-500)}`);
    await sleep(o.afterSec * 1000);
    const tEnd = Date.now();
    const windows = await worker.request<WindowStats[]>(
      {
        type: "stats",
        windows: [
          { name: "steady", from: tStart + 2000, to: tN4 },
          { name: "n4 joining", from: tN4, to: tReb0 },
          { name: "rebalance", from: tReb0, to: tReb1 },
          { name: "after", from: tReb1, to: tEnd },
        ],
      },
      60000,
    );
    res.totals = await worker.request<StopRes>({ type: "stop", drainMs: 8000 }, 60000);
    for (const w of windows) {
      const sec = (w.to - w.from) / 1000;
      const a = histStats(w.ackLatency);
      const e = histStats(w.e2e);
      res.windows.push({
        name: w.name,
        sec,
        sentPerSec: w.sent / sec,
        ackedPerSec: w.acked / sec,
        deliveredPerSec: w.deliveries / sec,
        ackP50: a.p50,
        ackP99: a.p99,
        ackMax: a.max,
        e2eP50: e.p50,
        e2eP99: e.p99,
        e2eMax: e.max,
        errors: w.errors,
      });
    }
    const st = res.windows.find((w) => w.name === "steady");
    const dr = res.windows.find((w) => w.name === "rebalance");
    if (st !== undefined && dr !== undefined && st.deliveredPerSec > 0) {
      res.deliveredRatio = dr.deliveredPerSec / st.deliveredPerSec;
      res.ackedRatio = dr.ackedPerSec / st.ackedPerSec;
    }
    const t = res.totals;
    log(
      `${o.tag}: steady load totals: sent ${t.sent}, acked ${t.acked}, unacked ${t.unacked}, lost ${t.lost}, dup ${t.dups}, out of order ${t.outOfOrder}, ` +
        `seq gaps ${t.seqGaps}, gap events ${t.gapEvents}, resets ${t.resetEvents}, retries ${t.retries}, disconnects ${JSON.stringify(t.disconnects)}`,
    );
    if (t.lostSample.length > 0) log(`${o.tag}: undelivered acked messages (member = url index n1..n4 → 0..3): ${JSON.stringify(t.lostSample)}`);
    const moved = (plan?.moves ?? []).map((m) => m.room).filter((r) => steadySet.has(r));
    if (moved.length > 0) {
      res.verify = await worker.request<VerifyRes>({ type: "verify", rooms: moved }, 60000);
      res.lostAcked = res.verify.rooms.reduce((a, r) => a + r.missing, 0);
      if (res.lostAcked > 0) res.notes.push(`${res.lostAcked} acked messages are missing from the history of moved rooms: ${res.verify.rooms.filter((r) => r.missing > 0).map((r) => `${r.room} (${r.missing} of ${r.acked}; ${r.seqReused} of their seqs now hold another message)`).join(", ")}`);
      log(`${o.tag}: history of ${res.verify.rooms.length} moved steady rooms checked: ${res.lostAcked} acked messages missing`);
      for (const r of res.verify.rooms) if (r.missing > 0 || r.error !== undefined || r.dupSeqs > 0 || r.seqMismatch > 0) log(`${o.tag}: history of moved room ${r.room}: acked ${r.acked}, in history ${r.history}, missing ${r.missing}${r.missingSeqs ? ` (acked seqs ${r.missingSeqs.join(", ")}; history ends at ${r.lastSeq})` : ""}, seq mismatch ${r.seqMismatch}, dup seqs ${r.dupSeqs}${r.error ? `, error ${r.error}` : ""}`);
    }
    if (t.resetEvents > 0 || t.outOfOrder > 0) res.notes.push(`clients saw ${t.resetEvents} reset events and ${t.outOfOrder} out-of-order deliveries (seq going back)`);
    if (t.lost > 0) res.notes.push(`${t.lost} deliveries of acked messages never arrived; first: ${JSON.stringify(t.lostSample.slice(0, 3))}`);
    if (!nodes.every((n) => isAlive(n.child))) res.notes.push(`a node died: ${nodes.filter((n) => !isAlive(n.child)).map((n) => `${n.id}:\n${tail(n.logFile)}`).join("\n")}`);
    res.ok = result !== undefined && rb.code === 0;
  } catch (e) {
    res.error = errMsg(e);
    log(`${o.tag} FAILED: ${res.error}`);
  } finally {
    await worker?.close();
    res.notes.push(...(await stopNodes(nodes, 15000, o.tag)));
    timedCleanup(cleanup, o.tag);
  }
  return res;
}

// ---------------------------------------------------------------- failover

export interface FailoverResult {
  ok: boolean;
  error?: string;
  leaseTtl: string;
  victim: string;
  victimRooms: number;
  controlRooms: number;
  /** ms from the kill to the first ok ack on any of the victim's rooms / median / last room. */
  firstMs?: number | null;
  medianMs?: number | null;
  lastMs?: number | null;
  recovered: number;
  controlMaxMs?: number | null;
  errorsAfterKill: Record<string, number>;
  perRoom: FailoverRes["perRoom"];
  mapChangeMs?: number;
  totals?: StopRes;
  verify?: VerifyRes;
  lostAcked?: number;
  notes: string[];
}

export async function runFailover(o: {
  tag: string;
  leaseTtl: string;
  victimRooms: number;
  controlRooms: number;
  intervalMs: number;
  preKillSec: number;
  waitMs: number;
  readyTimeoutMs: number;
  textBytes: number;
  keepData: boolean;
}): Promise<FailoverResult> {
  const res: FailoverResult = {
    ok: false,
    leaseTtl: o.leaseTtl,
    victim: "n3",
    victimRooms: 0,
    controlRooms: 0,
    recovered: 0,
    errorsAfterKill: {},
    perRoom: [],
    notes: [],
  };
  const { root, cleanup } = tempRoot(o.tag, o.keepData);
  const nodes: NodeProc[] = [];
  let worker: OpsWorker | undefined;
  try {
    nodes.push(...(await startCluster({ tag: o.tag, root, n: 3, args: ["--lease-ttl", o.leaseTtl], readyTimeoutMs: o.readyTimeoutMs })));
    const victim = nodes[2]!;
    const urls = nodes.map((n) => n.url);
    const token = await sessionToken(urls[0]!, "prober");
    const victimRooms: string[] = [];
    const controlRooms: string[] = [];
    for (let i = 0; i < 2000 && (victimRooms.length < o.victimRooms || controlRooms.length < o.controlRooms); i++) {
      const room = `fo-${o.tag}-r${i}`.toLowerCase();
      const info = await roomInfo(urls[0]!, token, room);
      if (info.owner === victim.id && victimRooms.length < o.victimRooms) victimRooms.push(room);
      else if (info.owner !== victim.id && controlRooms.length < o.controlRooms) controlRooms.push(room);
    }
    res.victimRooms = victimRooms.length;
    res.controlRooms = controlRooms.length;
    worker = new OpsWorker(`${o.tag}-senders`);
    // Members only on the two survivors: the kill must not cut the senders' own connections.
    const all = [...victimRooms, ...controlRooms];
    const setup = await worker.request<SetupRes>(
      { type: "setup", urls, rooms: all.map((room, i) => ({ room, memberNodes: [i % 2, (i + 1) % 2] })), userPrefix: "fo", idPrefix: "F", textBytes: o.textBytes, concurrency: 20 },
      60000,
    );
    if (setup.joined < all.length * 2) res.notes.push(`${setup.failed} of ${all.length * 2} clients failed to join: ${setup.errors.slice(0, 3).join(" | ")}`);
    await worker.request({ type: "start", mode: "serial", intervalMs: o.intervalMs, retryMs: 100, attemptTimeoutMs: 2000 }, 10000);
    log(`${o.tag}: ${victimRooms.length} rooms owned by ${victim.id} and ${controlRooms.length} others, one sender each on n1/n2 (next send ${o.intervalMs} ms after the ack, retry every 100 ms); kill -9 ${victim.id} in ${o.preKillSec} s`);
    await sleep(o.preKillSec * 1000);
    const killAt = Date.now();
    kill9(victim);
    log(`${o.tag}: kill -9 ${victim.id} (pid ${victim.child.pid})`);
    let fo: FailoverRes | undefined;
    const waitUntil = killAt + o.waitMs;
    while (Date.now() < waitUntil) {
      await sleep(250);
      fo = await worker.request<FailoverRes>({ type: "failover", killAt, rooms: victimRooms }, 20000);
      if (fo.perRoom.every((r) => r.ms !== null)) break;
    }
    await sleep(1000);
    fo = await worker.request<FailoverRes>({ type: "failover", killAt, rooms: all }, 20000);
    const victimSet = new Set(victimRooms);
    res.perRoom = fo.perRoom.filter((r) => victimSet.has(r.room));
    res.errorsAfterKill = fo.errors;
    const times = res.perRoom.map((r) => r.ms).filter((x): x is number => x !== null).sort((a, b) => a - b);
    res.recovered = times.length;
    res.firstMs = times[0] ?? null;
    res.medianMs = times.length > 0 ? times[Math.floor(times.length / 2)]! : null;
    res.lastMs = times.length === res.perRoom.length && times.length > 0 ? times[times.length - 1]! : null;
    const ctl = fo.perRoom.filter((r) => !victimSet.has(r.room)).map((r) => r.ms ?? Infinity);
    res.controlMaxMs = ctl.length > 0 ? Math.max(...ctl) : null;
    // When did the survivors see the map change (n3 down)?
    for (const n of nodes.slice(0, 2)) {
      const line = logLines(n.logFile).find((l) => l.msg === "cluster map changed" && typeof l.time === "number" && l.time > killAt);
      if (line !== undefined) res.mapChangeMs = Math.min(res.mapChangeMs ?? Infinity, (line.time as number) - killAt);
    }
    log(
      `${o.tag}: lease ${o.leaseTtl}: first ack on a ${victim.id} room ${res.firstMs?.toFixed(0)} ms after the kill, median ${res.medianMs?.toFixed(0)}, last ${res.lastMs?.toFixed(0)} ms ` +
        `(${res.recovered}/${res.perRoom.length} rooms); map changed after ${res.mapChangeMs} ms; errors after the kill ${JSON.stringify(res.errorsAfterKill)}`,
    );
    res.totals = await worker.request<StopRes>({ type: "stop", drainMs: 5000 }, 60000);
    res.verify = await worker.request<VerifyRes>({ type: "verify", rooms: victimRooms }, 60000);
    res.lostAcked = res.verify.rooms.reduce((a, r) => a + r.missing, 0);
    const t = res.totals;
    log(
      `${o.tag}: totals: sent ${t.sent}, acked ${t.acked}, unacked ${t.unacked}, lost deliveries ${t.lost}, dup ${t.dups}, out of order ${t.outOfOrder}, seq gaps ${t.seqGaps}, ` +
        `gap events ${t.gapEvents}, retries ${t.retries}, disconnects ${JSON.stringify(t.disconnects)}; acked messages missing from history: ${res.lostAcked}`,
    );
    if (t.lostSample.length > 0) log(`${o.tag}: undelivered acked messages: ${JSON.stringify(t.lostSample)}`);
    for (const r of res.verify.rooms) if (r.missing > 0 || r.error !== undefined || r.dupSeqs > 0) log(`${o.tag}: ${r.room}: ${JSON.stringify(r)}`);
    res.ok = res.recovered === res.perRoom.length && res.perRoom.length > 0;
    if (!res.ok) res.notes.push(`${res.perRoom.length - res.recovered} of the victim's rooms got no ack within ${(o.waitMs / 1000).toFixed(0)} s of the kill`);
  } catch (e) {
    res.error = errMsg(e);
    log(`${o.tag} FAILED: ${res.error}`);
  } finally {
    await worker?.close();
    res.notes.push(...(await stopNodes(nodes, 15000, o.tag)));
    timedCleanup(cleanup, o.tag);
  }
  return res;
}
