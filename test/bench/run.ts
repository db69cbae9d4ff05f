/**
 * Fractal Chat benchmark (`npm run bench`).
 *
 * Phase 1, fan-out: the same workload against Fractal (3 real nodes via the CLI) and a peer system (3 plain
 * socket.io servers on @socket.io/redis-adapter + a local redis-server). N socket.io clients spread evenly
 * over the 3 nodes, rooms of 10 whose members sit on all 3 nodes, rising offered send rates. Per rate and
 * system: offered and delivered rates, end-to-end latency p50/p99, acked sends, lost and duplicated
 * deliveries, server CPU. Fractal additionally gets a persistence check through the HTTP history API.
 * Phase 2, idle memory: N idle websocket clients (each joined to one room) on ONE node; RSS (and heap, if
 * /metrics has it) per connected socket.
 * Phase 3, durability: the fan-out workload at one rate with checkpoints every 1 s and (effectively) never,
 * checkpoint throughput and lag from /metrics; then a 1-node cluster is loaded, checkpointed, stopped, wiped
 * and restarted, and the rebuild from the object store is timed (ops.ts).
 * Phase 4, rebalance: a 4th node joins a loaded 3-node cluster under a steady load; `fractal admin rebalance`.
 * Phase 5, failover: kill -9 of a room owner, time to the first ack on its rooms, per lease TTL.
 *
 * Options (argv `--name=value` or env `BENCH_NAME`): --quick (BENCH_QUICK=1), --systems=fractal,peer,
 * --phases=fanout,memory,durability,rebalance,failover, (see README.md for the phase options) --rates=500,1000, --step-sec, --warmup-sec, --drain-sec, --clients, --room-size,
 * --idle-clients, --mem-systems=fractal,peer, --load-procs, --text-bytes, --no-skip, --keep-data, --out.
 * Progress goes to stderr, the table to stdout, JSON to test-output/bench.json, server logs to
 * test-output/bench-logs/.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { DEFAULT_MAX_CONCURRENT } from "../../node/rebalance.js";
import { Histogram } from "./hist.js";
import {
  CpuMeter,
  MachineCpuMeter,
  TimeoutError,
  installCleanupHandlers,
  isAlive,
  killAllNow,
  log,
  median,
  rssKiB,
  sleep,
  stopChild,
  track,
  withTimeout,
} from "./lib.js";
import type {
  ClientSpec,
  FinishRes,
  Req,
  ResEnvelope,
  SetupReq,
  SetupRes,
  StepRes,
  StepSummary,
  SystemName,
  VerifyRes,
  VerifyRoom,
} from "./protocol.js";
import {
  bucketQuantile,
  histBuckets,
  metricByLabel,
  metricSum,
  runFailover,
  runRebalance,
  runRebuild,
  scrape,
  type FailoverResult,
  type RebalanceResult,
  type RebuildResult,
} from "./ops.js";
import { BENCH_DIR, LOG_DIR, OUT_DIR, eventLoopLag, heapUsedBytes, inspectorGc, startCpuProfile, startSystem, type RunningSystem } from "./systems.js";

// ---------------------------------------------------------------- options

function argvOptions(): Map<string, string> {
  const m = new Map<string, string>();
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) continue;
    const eq = a.indexOf("=");
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith("--") && !["quick", "full", "no-skip", "keep-data"].includes(a.slice(2))) {
        m.set(a.slice(2), next);
        i++;
      } else m.set(a.slice(2), "1");
    }
  }
  return m;
}
const argv = argvOptions();
function opt(name: string): string | undefined {
  return argv.get(name) ?? process.env[`BENCH_${name.toUpperCase().replace(/-/g, "_")}`];
}
function flag(name: string): boolean {
  const v = opt(name);
  return v !== undefined && v !== "" && v !== "0" && v !== "false";
}
function num(name: string, dflt: number): number {
  const v = opt(name);
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`option ${name}: not a number: ${v}`);
  return n;
}
function list(name: string, dflt: string[]): string[] {
  const v = opt(name);
  return v === undefined || v === "" ? dflt : v.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

const QUICK = flag("quick") && !flag("full");
const cfg = {
  mode: QUICK ? "quick" : "full",
  systems: list("systems", ["fractal", "peer"]) as SystemName[],
  phases: list("phases", ["fanout", "memory", "durability", "rebalance", "failover"]),
  // The peer's idle memory is a reference point only; quick mode skips it to stay near one minute.
  memSystems: list("mem-systems", QUICK ? ["fractal"] : ["fractal", "peer"]) as SystemName[],
  rates: list("rates", QUICK ? ["200", "500", "1000"] : ["500", "1000", "2000", "4000", "8000"]).map(Number),
  stepMs: num("step-sec", QUICK ? 4 : 10) * 1000,
  // Long enough for the JIT to settle: 3 s left TurboFan compiling ~50 functions/s into the first steps (V8's
  // helper threads 5.5 % CPU per node instead of 2.8 %), so a short warm-up measured start-up, not serving.
  warmupMs: num("warmup-sec", QUICK ? 2 : 20) * 1000,
  drainMs: num("drain-sec", QUICK ? 2 : 3) * 1000,
  clients: num("clients", QUICK ? 300 : 1000),
  roomSize: num("room-size", 10),
  idleClients: num("idle-clients", QUICK ? 2000 : 10000),
  loadProcs: num("load-procs", 2),
  idlePerProc: num("idle-per-proc", 5000),
  textBytes: num("text-bytes", 64),
  verifyRooms: num("verify-rooms", QUICK ? 3 : 5),
  noSkip: flag("no-skip"),
  /** Record a CPU profile of server 1 during every fan-out step (written next to the server logs). */
  profile: flag("profile"),
  keepData: flag("keep-data"),
  out: opt("out") ?? path.join(OUT_DIR, "bench.json"),
  totalTimeoutMs: num("timeout-sec", QUICK ? 300 : 840) * 1000,
  readyTimeoutMs: num("ready-sec", 45) * 1000,
  /** Pass criteria for "sustained". */
  p99LimitMs: num("p99-limit-ms", 50),
  memTargetKiB: 12,
  // Durability (a): the fan-out workload at one rate with --checkpoint-interval 1s and 3600s.
  ckptRate: num("ckpt-rate", QUICK ? 500 : 1000),
  ckptIntervals: list("ckpt-intervals", ["1s", "3600s"]),
  // Durability (b): rebuild of a wiped 1-node cluster from the object store.
  rebuildRooms: num("rebuild-rooms", QUICK ? 100 : 1000),
  rebuildMessages: num("rebuild-messages", QUICK ? 100_000 : 1_000_000),
  /** Cap of each bulk load (rebuild and rebalance phases). */
  loadCapMs: num("load-cap-sec", QUICK ? 45 : 120) * 1000,
  loadConcurrency: num("load-concurrency", 64),
  loadWorkers: num("load-workers", 1),
  /**
   * How phases 3 and 4 get their rooms: "seed" writes the chains into the object store (seed-chains.ts: the
   * sizes the issues name, in seconds), "http" sends every message through the nodes (capped by load-cap-sec).
   */
  bulkLoad: opt("bulk-load") === "http" ? ("http" as const) : ("seed" as const),
  /** Seeded chains: new messages per checkpoint round (1: the most segments per room, the slowest rebuild). */
  seedBatch: num("seed-batch", 1),
  rebuildTargetPerSec: 100_000,
  // Rebalance: 3 nodes, N rooms / M messages, steady load on a subset, a 4th node joins, admin rebalance.
  rebRooms: num("reb-rooms", QUICK ? 1000 : 10_000),
  rebMessages: num("reb-messages", QUICK ? 50_000 : 1_000_000),
  rebSteadyRooms: num("reb-steady-rooms", QUICK ? 30 : 100),
  rebMembers: num("reb-members", QUICK ? 3 : 5),
  rebRate: num("reb-rate", QUICK ? 300 : 1000),
  rebSteadySec: num("reb-steady-sec", QUICK ? 5 : 10),
  rebAfterSec: num("reb-after-sec", QUICK ? 3 : 5),
  // The CLI default: what an operator runs.
  rebMaxConcurrent: num("reb-max-concurrent", DEFAULT_MAX_CONCURRENT),
  rebPauseTargetMs: 200,
  rebThroughputTarget: 0.7,
  // Failover: kill -9 of an owner under a send load, per lease TTL.
  foTtls: list("fo-ttls", ["5s", "2s"]),
  foVictimRooms: num("fo-rooms", QUICK ? 6 : 12),
  foControlRooms: num("fo-control-rooms", QUICK ? 2 : 4),
  foIntervalMs: num("fo-interval-ms", 50),
  foPreKillSec: num("fo-pre-kill-sec", QUICK ? 2 : 4),
  foWaitSec: num("fo-wait-sec", 30),
  foTargetMs: 10_000,
};
{
  // The overall limit grows with the phases chosen (unless --timeout-sec is given).
  if (opt("timeout-sec") === undefined) {
    const perPhase: Record<string, number> = QUICK
      ? { fanout: 150, memory: 120, durability: 240, rebalance: 240, failover: 150 }
      : { fanout: 480, memory: 300, durability: 420, rebalance: 420, failover: 180 };
    cfg.totalTimeoutMs = cfg.phases.reduce((a, ph) => a + (perPhase[ph] ?? 300), 0) * 1000;
  }
}
for (const s of [...cfg.systems, ...cfg.memSystems]) {
  if (s !== "fractal" && s !== "peer") throw new Error(`unknown system ${s}`);
}
if (cfg.roomSize < 1 || cfg.roomSize > 31) throw new Error("room-size must be 1..31");

const TAG = Math.random().toString(36).slice(2, 7).replace(/[^a-z0-9]/g, "x");

// ---------------------------------------------------------------- load-generator children

class LoadProc {
  readonly child: ChildProcess;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private exitError: Error | undefined;

  constructor(readonly name: string) {
    this.child = fork(path.join(BENCH_DIR, "load-client.ts"), [], {
      execArgv: ["--import", "tsx", "--max-old-space-size=4096", ...(process.env.BENCH_LOAD_FLAGS ?? "").split(/\s+/).filter((f) => f !== "")],
      // The child's stdout goes to our stderr: stdout is reserved for the table.
      stdio: ["ignore", 2, 2, "ipc"],
    });
    track(name, this.child, false);
    this.child.on("message", (raw) => {
      const m = raw as ResEnvelope;
      if ("event" in m) {
        log(m.text);
        return;
      }
      const p = this.pending.get(m.reqId);
      if (p === undefined) return;
      this.pending.delete(m.reqId);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${name}: ${m.error}`));
    });
    this.child.on("exit", (code, sig) => {
      this.exitError = new Error(`${name} exited (code ${code}, signal ${sig})`);
      for (const p of this.pending.values()) p.reject(this.exitError);
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  request<T>(req: Req, timeoutMs: number): Promise<T> {
    if (this.exitError !== undefined) return Promise.reject(this.exitError);
    const reqId = this.nextId++;
    const p = new Promise<T>((resolve, reject) => {
      this.pending.set(reqId, { resolve: resolve as (v: unknown) => void, reject });
    });
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

// ---------------------------------------------------------------- result types

interface StepRow {
  system: SystemName;
  step: number;
  offered: number;
  sentPerSec: number;
  deliveredPerSec: number;
  acked: number;
  sent: number;
  ackErrors: Record<string, number>;
  unacked: number;
  expected: number;
  received: number;
  lost: number;
  lostSelf: number;
  dups: number;
  late: number;
  outOfOrder: number;
  seqConflicts: number;
  seqMismatch: number;
  latency: ReturnType<Histogram["stats"]>;
  ackLatency: ReturnType<Histogram["stats"]>;
  serverCpuPct: number;
  auxCpuPct: number;
  loadCpuPct: number;
  /** Busy CPU of processes that are not part of the bench (the machine is shared), percent of one core. */
  otherCpuPct: number;
  perServerCpuPct: number[];
  /** Runs of 100 ms send-time slots whose slowest delivery exceeded the p99 limit. */
  stalls: { atMs: number; lenMs: number; maxMs: number }[];
  /** Per server node, p99 and max event-loop lag over the step and its drain (from /metrics). */
  eventLoopLagMs: ({ p99: number; max: number } | null)[];
  /** Fractal: e2e latency by sender/receiver node relative to the room's owner. */
  latencyByPath: Record<string, ReturnType<Histogram["stats"]>>;
  drained: boolean;
  pass: boolean;
}

interface FanoutResult {
  system: SystemName;
  ok: boolean;
  error?: string;
  setup?: { connected: number; joined: number; failed: number; errors: string[]; sessionMs: number; connectMs: number };
  rows: StepRow[];
  skippedRates: number[];
  sustained: number | null;
  disconnects: Record<string, number>;
  unknownMessages: number;
  misrouted: number;
  seqGaps: number;
  persistence?: { rooms: VerifyRoom[]; ok: boolean };
  notes: string[];
}

interface MemoryResult {
  system: SystemName;
  ok: boolean;
  error?: string;
  requested: number;
  connected: number;
  joined: number;
  failed: number;
  rssBeforeKiB?: number;
  rssAfterKiB?: number;
  heapBeforeBytes?: number;
  heapAfterBytes?: number;
  v8HeapBeforeBytes?: number;
  v8HeapAfterBytes?: number;
  /** Both readings were taken right after two full GCs forced through server 1's V8 inspector. */
  forcedGc: boolean;
  /** (RSS after − RSS before) / joined sockets. */
  kibPerSocketRss?: number;
  /** /metrics nodejs_heap_size_used_bytes delta / joined sockets (when /metrics has it). */
  kibPerSocketHeap?: number;
  /** V8 used heap (inspector Runtime.getHeapUsage) delta / joined sockets. */
  kibPerSocketV8Heap?: number;
  connectMs?: number;
  errors: string[];
}

const results: {
  startedAt: string;
  config: typeof cfg;
  machine: { cpus: number; node: string; totalMemMiB: number };
  fanout: FanoutResult[];
  memory: MemoryResult[];
  durability?: { checkpointCost: CkptCostRow[]; rebuild?: RebuildResult; tookSec?: number };
  rebalance?: RebalanceResult & { tookSec?: number };
  failover?: (FailoverResult & { tookSec?: number })[];
  ratioFractalToPeer: number | null;
  errors: string[];
  finishedAt?: string;
} = {
  startedAt: new Date().toISOString(),
  config: cfg,
  machine: { cpus: os.cpus().length, node: process.version, totalMemMiB: Math.round(os.totalmem() / 1048576) },
  fanout: [],
  memory: [],
  ratioFractalToPeer: null,
  errors: [],
};

// ---------------------------------------------------------------- helpers

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function mergeSummaries(parts: StepSummary[]): { s: StepSummary; lat: Histogram; ackLat: Histogram; paths: Histogram[] } {
  const lat = new Histogram();
  const ackLat = new Histogram();
  const s: StepSummary = {
    step: parts[0]?.step ?? 0,
    sent: 0,
    acked: 0,
    ackErrors: {},
    unacked: 0,
    expected: 0,
    received: 0,
    receivedAll: 0,
    lost: 0,
    lostSelf: 0,
    dups: 0,
    late: 0,
    outOfOrder: 0,
    seqConflicts: 0,
    seqMismatch: 0,
    latency: lat.data(),
    ackLatency: ackLat.data(),
    slotMaxMs: [],
    latByPath: [],
  };
  const paths = [new Histogram(), new Histogram(), new Histogram(), new Histogram()];
  for (const p of parts) {
    p.latByPath.forEach((h, i) => paths[i]?.merge(h));
    p.slotMaxMs.forEach((v, i) => {
      s.slotMaxMs[i] = Math.max(s.slotMaxMs[i] ?? 0, v);
    });
    s.sent += p.sent;
    s.acked += p.acked;
    s.unacked += p.unacked;
    s.expected += p.expected;
    s.received += p.received;
    s.receivedAll += p.receivedAll;
    s.lost += p.lost;
    s.lostSelf += p.lostSelf;
    s.dups += p.dups;
    s.late += p.late;
    s.outOfOrder += p.outOfOrder;
    s.seqConflicts += p.seqConflicts;
    s.seqMismatch += p.seqMismatch;
    for (const [k, v] of Object.entries(p.ackErrors)) s.ackErrors[k] = (s.ackErrors[k] ?? 0) + v;
    lat.merge(p.latency);
    ackLat.merge(p.ackLatency);
  }
  s.latByPath = paths.map((h) => h.data());
  return { s, lat, ackLat, paths };
}

const PATH_NAMES = ["owner→owner", "owner→other", "other→owner", "other→other"];

/**
 * Stalls: runs of 100 ms send-time slots whose worst delivery took longer than `limitMs`, as
 * "t=1.8s+0.3s max 240ms" (start of the run within the step, its length, its worst latency).
 */
function stalls(slotMaxMs: number[], limitMs: number): { atMs: number; lenMs: number; maxMs: number }[] {
  const out: { atMs: number; lenMs: number; maxMs: number }[] = [];
  let cur: { atMs: number; lenMs: number; maxMs: number } | undefined;
  slotMaxMs.forEach((v, i) => {
    if (v > limitMs) {
      if (cur === undefined) {
        cur = { atMs: i * 100, lenMs: 0, maxMs: 0 };
        out.push(cur);
      }
      cur.lenMs += 100;
      cur.maxMs = Math.max(cur.maxMs, v);
    } else cur = undefined;
  });
  return out;
}

function fmtStalls(st: { atMs: number; lenMs: number; maxMs: number }[]): string {
  if (st.length === 0) return "none";
  const shown = st.slice(0, 10).map((x) => `${(x.atMs / 1000).toFixed(1)}s+${(x.lenMs / 1000).toFixed(1)}s max ${x.maxMs.toFixed(0)}ms`);
  return shown.join(", ") + (st.length > 10 ? ` … (${st.length} in all)` : "");
}

function fmt(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  return n.toFixed(digits);
}

function sumErrors(e: Record<string, number>): number {
  return Object.values(e).reduce((a, b) => a + b, 0);
}

function layout(clients: number, roomSize: number, prefix: string): ClientSpec[] {
  const specs: ClientSpec[] = [];
  for (let g = 0; g < clients; g++) {
    const roomIdx = Math.floor(g / roomSize);
    specs.push({
      user: `${prefix}${g}`,
      // Consecutive members of a room land on nodes 0,1,2,0,... so every room spans all 3 nodes.
      node: g % 3,
      room: `bench-${TAG}-${prefix}-r${roomIdx}`,
      roomIdx,
      memberIdx: g % roomSize,
    });
  }
  return specs;
}

// ---------------------------------------------------------------- phase 1: fan-out

/** A fan-out run with other settings (the durability phase runs it with and without checkpoints). */
interface FanoutVariant {
  rates?: number[];
  env?: NodeJS.ProcessEnv;
  tag?: string;
  /** Called before the meters start and after the step (and its drain) of every measured step. */
  onStep?: (when: "before" | "after", step: number, running: RunningSystem) => Promise<void>;
}

async function runFanout(name: SystemName, deadline: number, variant: FanoutVariant = {}): Promise<FanoutResult> {
  const rates = variant.rates ?? cfg.rates;
  const res: FanoutResult = {
    system: name,
    ok: false,
    rows: [],
    skippedRates: [],
    sustained: null,
    disconnects: {},
    unknownMessages: 0,
    misrouted: 0,
    seqGaps: 0,
    notes: [],
  };
  let sys: RunningSystem | undefined;
  const procs: LoadProc[] = [];
  const remaining = (): number => Math.max(1000, deadline - Date.now());
  try {
    log(`== fan-out: ${name}: starting 3 servers`);
    sys = await withTimeout(
      startSystem(name, { tag: variant.tag ?? `${TAG}-fanout`, readyTimeoutMs: cfg.readyTimeoutMs, keepData: cfg.keepData, inspect: cfg.profile, env: variant.env }),
      cfg.readyTimeoutMs + 20000,
      `${name} start`,
    );
    const running = sys;
    const specs = layout(cfg.clients, cfg.roomSize, `f${name[0]}`);
    const nRooms = Math.ceil(cfg.clients / cfg.roomSize);
    const nProcs = Math.max(1, Math.min(cfg.loadProcs, nRooms));
    for (let i = 0; i < nProcs; i++) procs.push(new LoadProc(`load-${name}-${i}`));
    const roomProc = (roomIdx: number): number => roomIdx % nProcs;

    log(`fan-out ${name}: ${cfg.clients} clients, ${nRooms} rooms of ${cfg.roomSize}, ${nProcs} load process(es): sessions + connect + join`);
    const setupTimeout = Math.min(remaining(), 60000 + cfg.clients * 30);
    const setups = await Promise.all(
      procs.map((p, i) =>
        p.request<SetupRes>(
          {
            type: "setup",
            system: name,
            procIdx: i,
            urls: running.urls,
            clients: specs.filter((s) => roomProc(s.roomIdx) === i),
            concurrency: 50,
            checkOrder: name === "fractal",
            textBytes: cfg.textBytes,
            track: true,
            ...(name === "fractal" ? { nodeIds: ["n1", "n2", "n3"] } : {}),
          } satisfies SetupReq,
          setupTimeout,
        ),
      ),
    );
    res.setup = {
      connected: setups.reduce((a, s) => a + s.connected, 0),
      joined: setups.reduce((a, s) => a + s.joined, 0),
      failed: setups.reduce((a, s) => a + s.failed, 0),
      errors: setups.flatMap((s) => s.errors).slice(0, 10),
      sessionMs: Math.max(...setups.map((s) => s.sessionMs)),
      connectMs: Math.max(...setups.map((s) => s.connectMs)),
    };
    log(
      `fan-out ${name}: ${res.setup.joined}/${cfg.clients} joined (${res.setup.failed} failed) in ` +
        `${(res.setup.connectMs / 1000).toFixed(1)} s (mean POST /api/session ${res.setup.sessionMs.toFixed(1)} ms)` +
        (res.setup.errors.length > 0 ? `; first errors: ${res.setup.errors.slice(0, 3).join(" | ")}` : ""),
    );
    if (res.setup.joined === 0) throw new Error(`no client could join: ${res.setup.errors.join(" | ")}`);
    if (res.setup.failed > 0) res.notes.push(`${res.setup.failed} of ${cfg.clients} clients failed to connect/join: ${res.setup.errors.slice(0, 3).join(" | ")}`);

    // Each process gets a share of the rate proportional to its joined senders.
    const share = procs.map((_, i) => specs.filter((s) => roomProc(s.roomIdx) === i).length / specs.length);
    const serverCpu = new CpuMeter(() => running.serverPids);
    const auxCpu = new CpuMeter(() => running.auxPids);
    const loadCpu = new CpuMeter(() => procs.map((p) => p.pid));
    const benchCpu = new CpuMeter(() => [process.pid]);
    const machineCpu = new MachineCpuMeter();
    const perServer = running.serverPids.map((pid) => new CpuMeter(() => [pid]));

    const stepRes = new Map<
      number,
      {
        offered: number;
        windowMs: number;
        sent: number;
        windowDeliveries: number;
        cpu: [number, number, number];
        otherCpu: number;
        perServerCpu: number[];
        lags: ({ p99: number; max: number } | undefined)[];
        drained: boolean;
      }
    >();
    const plan = [{ step: 0, rate: rates[0] ?? 100, durationMs: cfg.warmupMs }, ...rates.map((rate, i) => ({ step: i + 1, rate, durationMs: cfg.stepMs }))];
    let saturatedAt: number | undefined;
    for (const p of plan) {
      if (saturatedAt !== undefined) {
        res.skippedRates.push(p.rate);
        continue;
      }
      if (Date.now() + p.durationMs + cfg.drainMs > deadline) {
        res.notes.push(`stopped before rate ${p.rate}: overall time budget exhausted`);
        res.skippedRates.push(p.rate);
        continue;
      }
      if (!running.alive()) throw new Error(`server process died:\n${running.deaths().join("\n")}`);
      const label = p.step === 0 ? `warm-up at ${p.rate} msg/s` : `rate ${p.rate} msg/s`;
      log(`fan-out ${name}: ${label} for ${p.durationMs / 1000} s`);
      const lagsBefore = await Promise.all(running.urls.map((u) => eventLoopLag(u))); // resets the lag histograms
      const scrapedBefore = performance.now();
      let stopProfile: (() => Promise<string[]>) | undefined;
      const profileFile = path.join(LOG_DIR, `${TAG}-${name}-n1-step${p.step}-rate${p.rate}.cpuprofile`);
      if (cfg.profile && running.inspectPort !== undefined && p.step > 0) {
        stopProfile = await startCpuProfile(running.inspectPort, profileFile).catch((e: unknown) => {
          log(`cpu profile: ${errMsg(e)}`);
          return undefined;
        });
      }
      if (p.step > 0) await variant.onStep?.("before", p.step, running);
      const meters = [serverCpu, auxCpu, loadCpu, benchCpu, machineCpu, ...perServer];
      for (const m of meters) m.start();
      let cpu: [number, number, number] = [0, 0, 0];
      let otherCpu = 0;
      let perServerCpu: number[] = [];
      const readCpu = (): void => {
        cpu = [serverCpu.stop(), auxCpu.stop(), loadCpu.stop()];
        const own = benchCpu.stop();
        otherCpu = Math.max(0, machineCpu.stop() - cpu[0] - cpu[1] - cpu[2] - own);
        perServerCpu = perServer.map((m) => m.stop());
      };
      const cpuTimer = setTimeout(readCpu, p.durationMs);
      const parts = await Promise.all(
        procs.map((lp, i) =>
          lp.request<StepRes>(
            { type: "step", step: p.step, rate: p.rate * (share[i] ?? 0), durationMs: p.durationMs, drainMs: cfg.drainMs },
            p.durationMs + cfg.drainMs + 30000,
          ),
        ),
      );
      clearTimeout(cpuTimer);
      const lags = await Promise.all(running.urls.map((u) => eventLoopLag(u)));
      const scrapedSec = (performance.now() - scrapedBefore) / 1000;
      if (p.step > 0) await variant.onStep?.("after", p.step, running);
      if (stopProfile !== undefined) {
        const top = await stopProfile().catch((e: unknown) => [`failed: ${errMsg(e)}`]);
        log(`fan-out ${name}: ${p.step === 0 ? "warm-up" : `rate ${p.rate}`}: CPU profile of server 1 written to ${profileFile}; top self time:\n    ${top.join("\n    ")}`);
      }
      if (cpu[0] === 0 && cpu[2] === 0) readCpu();
      const windowMs = Math.max(...parts.map((x) => x.windowMs));
      const sent = parts.reduce((a, x) => a + x.sent, 0);
      const windowDeliveries = parts.reduce((a, x) => a + x.windowDeliveries, 0);
      const drained = parts.every((x) => x.drained);
      stepRes.set(p.step, { offered: p.rate, windowMs, sent, windowDeliveries, cpu, otherCpu, perServerCpu, lags, drained });
      const { s, lat, ackLat, paths } = mergeSummaries(parts.map((x) => x.summary));
      const st = lat.stats();
      const ackSt = ackLat.stats();
      const errs = sumErrors(s.ackErrors);
      log(
        `fan-out ${name}: ${label}: sent ${sent} (${((sent * 1000) / windowMs).toFixed(0)}/s), acked ${s.acked}, ` +
          `errors ${errs}${errs > 0 ? " " + JSON.stringify(s.ackErrors) : ""}, unacked ${s.unacked}, ` +
          `delivered ${((windowDeliveries * 1000) / windowMs).toFixed(0)}/s, lost ${s.lost}, dup ${s.dups}, ` +
          `p50 ${fmt(st.p50)} p99 ${fmt(st.p99)} max ${fmt(st.max)} ms, server CPU ${cpu[0].toFixed(0)}%` +
          (name === "peer" ? ` redis ${cpu[1].toFixed(0)}%` : "") +
          ` (per server ${perServerCpu.map((c) => c.toFixed(0)).join("/")}), load CPU ${cpu[2].toFixed(0)}%, ` +
          `other processes on the machine ${otherCpu.toFixed(0)}%${drained ? "" : ", NOT drained"}`,
      );
      const pathInfo = paths
        .map((h, i) => ({ name: PATH_NAMES[i]!, st: h.stats() }))
        .filter((x) => x.st.n > 0)
        .map((x) => `${x.name} p50 ${fmt(x.st.p50)} p99 ${fmt(x.st.p99)}`)
        .join("; ");
      const lagInfo = lags.map((l) => (l === undefined ? "n/a" : `${l.p99.toFixed(0)}/${l.max.toFixed(0)}`)).join(", ");
      // Fractal's group commits (acks and fan-out wait for them): where disk contention shows first.
      const commitBuckets = (ls: typeof lags) => {
        const m = new Map<string, number>();
        for (const l of ls) if (l !== undefined) for (const [k, v] of histBuckets(l.metrics, "fractal_commit_duration_seconds")) m.set(k, (m.get(k) ?? 0) + v);
        return m;
      };
      const commitQ = (q: number) => bucketQuantile(commitBuckets(lagsBefore), commitBuckets(lags), q);
      const commitSum = (ls: typeof lags) => ls.reduce((a, l) => a + (l === undefined ? 0 : metricSum(l.metrics, "fractal_commit_duration_seconds_sum")), 0);
      const commitMeanMs = ((commitSum(lags) - commitSum(lagsBefore)) * 1000) / Math.max(1, commitQ(0.5).n);
      const commitInfo =
        commitQ(0.5).n > 0 ? `; commit mean ${commitMeanMs.toFixed(1)} ms, p50 ${commitQ(0.5).value} p99 ${commitQ(0.99).value} s (${commitQ(0.5).n} commits)` : "";
      log(`fan-out ${name}: ${label}: server event-loop lag p99/max ms (step + drain, per node): ${lagInfo}${commitInfo}`);
      // Fractal's CPU per thread (fractal_thread_cpu_seconds_total): where a node's share of the cores goes.
      const threads = ["main", "sqlite-bulk", "object-store", "other"];
      const threadCpu = lags.map((l, i) => {
        const before = lagsBefore[i]?.metrics;
        if (l === undefined || before === undefined) return undefined;
        const [a, b] = [metricByLabel(before, "fractal_thread_cpu_seconds_total", "thread"), metricByLabel(l.metrics, "fractal_thread_cpu_seconds_total", "thread")];
        return b.size === 0 ? undefined : threads.map((t) => ((100 * ((b.get(t) ?? 0) - (a.get(t) ?? 0))) / scrapedSec).toFixed(0)).join("/");
      });
      if (threadCpu.some((t) => t !== undefined)) {
        log(`fan-out ${name}: ${label}: CPU % per thread (step + drain, per node, ${threads.join("/")}): ${threadCpu.map((t) => t ?? "n/a").join(", ")}`);
      }
      log(`fan-out ${name}: ${label}: ack latency p50 ${fmt(ackSt.p50)} p99 ${fmt(ackSt.p99)} ms${pathInfo !== "" ? `; e2e by path (sender node→receiver node vs room owner): ${pathInfo}` : ""}`);
      const stl = stalls(s.slotMaxMs, cfg.p99LimitMs);
      if (stl.length > 0) log(`fan-out ${name}: ${label}: send-time windows with deliveries slower than ${cfg.p99LimitMs} ms: ${fmtStalls(stl)}`);
      if (p.step > 0 && !cfg.noSkip) {
        const lossFrac = s.expected > 0 ? s.lost / s.expected : 0;
        const ackFrac = s.sent > 0 ? s.acked / s.sent : 1;
        if ((st.p99 ?? 0) > 1000 || lossFrac > 0.05 || ackFrac < 0.8) {
          saturatedAt = p.rate;
          log(`fan-out ${name}: saturated at ${p.rate} msg/s (p99 ${fmt(st.p99)} ms, loss ${(lossFrac * 100).toFixed(1)}%, acked ${(ackFrac * 100).toFixed(1)}%); skipping higher rates`);
          // Give the backlog a moment so it does not spill into the final accounting more than needed.
          await sleep(Math.min(5000, cfg.drainMs * 2));
        }
      }
    }
    if (saturatedAt !== undefined) res.notes.push(`saturated at ${saturatedAt} msg/s; higher rates skipped (--no-skip runs them)`);

    // Final accounting: deliveries that arrived after a step's drain window are counted (as "late").
    await sleep(500);
    const finals = await Promise.all(procs.map((p) => p.request<FinishRes>({ type: "finish" }, 30000)));
    for (const f of finals) {
      for (const [k, v] of Object.entries(f.disconnects)) res.disconnects[k] = (res.disconnects[k] ?? 0) + v;
      res.unknownMessages += f.unknownMessages;
      res.misrouted += f.misrouted;
      res.seqGaps += f.seqGaps;
    }
    for (const [step, info] of [...stepRes.entries()].sort((a, b) => a[0] - b[0])) {
      if (step === 0) continue;
      const { s, lat, ackLat, paths } = mergeSummaries(finals.flatMap((f) => f.steps.filter((x) => x.step === step)));
      const latency = lat.stats();
      const row: StepRow = {
        system: name,
        step,
        offered: info.offered,
        sentPerSec: (info.sent * 1000) / info.windowMs,
        deliveredPerSec: (info.windowDeliveries * 1000) / info.windowMs,
        acked: s.acked,
        sent: s.sent,
        ackErrors: s.ackErrors,
        unacked: s.unacked,
        expected: s.expected,
        received: s.received,
        lost: s.lost,
        lostSelf: s.lostSelf,
        dups: s.dups,
        late: s.late,
        outOfOrder: s.outOfOrder,
        seqConflicts: s.seqConflicts,
        seqMismatch: s.seqMismatch,
        latency,
        ackLatency: ackLat.stats(),
        serverCpuPct: info.cpu[0],
        auxCpuPct: info.cpu[1],
        loadCpuPct: info.cpu[2],
        otherCpuPct: info.otherCpu,
        perServerCpuPct: info.perServerCpu,
        stalls: stalls(s.slotMaxMs, cfg.p99LimitMs),
        eventLoopLagMs: info.lags.map((l) => l ?? null),
        latencyByPath: Object.fromEntries(paths.map((h, i) => [PATH_NAMES[i]!, h.stats()]).filter(([, st]) => (st as { n: number }).n > 0)),
        drained: info.drained,
        pass: false,
      };
      row.pass =
        row.sent > 0 &&
        (row.latency.p99 ?? Infinity) < cfg.p99LimitMs &&
        row.lost === 0 &&
        row.dups === 0 &&
        row.acked === row.sent &&
        row.outOfOrder === 0 &&
        row.seqConflicts === 0 &&
        row.sentPerSec >= 0.9 * row.offered;
      res.rows.push(row);
    }
    const passing = res.rows.filter((r) => r.pass).map((r) => r.offered);
    res.sustained = passing.length > 0 ? Math.max(...passing) : null;
    const totalAcked = res.rows.reduce((a, r) => a + r.acked, 0);
    const totalLostSelf = res.rows.reduce((a, r) => a + r.lostSelf, 0);
    if (totalAcked > 0 && totalLostSelf === totalAcked) {
      res.notes.push("the sender never receives its own message: expected deliveries assume it does (members × acked), so 'lost' includes one per message");
    }
    if (Object.keys(res.disconnects).length > 0) res.notes.push(`client disconnects during the run: ${JSON.stringify(res.disconnects)}`);
    if (res.unknownMessages > 0) res.notes.push(`${res.unknownMessages} message events with an id this load generator never sent`);
    if (res.misrouted > 0) res.notes.push(`${res.misrouted} message events delivered to a client not in that room`);
    if (name === "fractal" && res.seqGaps > 0) res.notes.push(`${res.seqGaps} seq gaps seen by clients (seq jumped by more than 1 in a room's live stream)`);

    // Persistence (Fractal): every acked message must be in the room's history.
    if (name === "fractal") {
      const k = Math.min(cfg.verifyRooms, nRooms);
      const picks = [...new Set(Array.from({ length: k }, (_, i) => Math.floor((i * nRooms) / k)))];
      log(`fan-out ${name}: persistence check of ${picks.length} room(s) through GET /api/rooms/:room/messages`);
      const verified = await Promise.all(
        procs.map((p, i) =>
          p.request<VerifyRes>({ type: "verify", roomIdxs: picks.filter((r) => roomProc(r) === i), pageLimit: 200 }, Math.min(remaining(), 60000)),
        ),
      );
      const rooms = verified.flatMap((v) => v.rooms);
      const ok = rooms.length > 0 && rooms.every((r) => r.missing === 0 && r.seqMismatch === 0 && r.error === undefined && r.historyDupSeqs === 0);
      res.persistence = { rooms, ok };
      for (const r of rooms) {
        log(
          `persistence ${r.room}: acked ${r.acked}, history ${r.historyMessages} in ${r.pages} page(s), missing ${r.missing}, ` +
            `seq mismatch ${r.seqMismatch}, gaps ${r.historyGaps}, dup seqs ${r.historyDupSeqs}${r.error !== undefined ? `, ERROR ${r.error}` : ""}`,
        );
      }
    }
    if (!running.alive()) res.notes.push(`server process died during the run:\n${running.deaths().join("\n")}`);
    res.ok = true;
  } catch (e) {
    res.error = errMsg(e);
    if (sys !== undefined && !sys.alive()) res.error += `\n${sys.deaths().join("\n")}`;
    log(`fan-out ${name} FAILED: ${res.error}`);
  } finally {
    await Promise.all(procs.map((p) => p.close()));
    if (sys !== undefined) await sys.stop();
  }
  return res;
}

// ---------------------------------------------------------------- phase 2: idle memory

async function sampleRss(pid: number, n = 5, gapMs = 400): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = rssKiB(pid);
    if (v !== undefined) xs.push(v);
    if (i < n - 1) await sleep(gapMs);
  }
  if (xs.length === 0) throw new Error(`cannot read /proc/${pid}/status`);
  return median(xs);
}

function mib(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? "n/a" : `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** One memory reading of server 1: forced full GC (if the inspector is there), then RSS and heaps. */
async function memReading(
  running: RunningSystem,
  pid: number,
  url: string,
): Promise<{ forcedGc: boolean; rssKiB: number; metricsHeap: number | undefined; v8Heap: number | undefined }> {
  const gc = running.inspectPort !== undefined ? await inspectorGc(running.inspectPort) : undefined;
  await sleep(300);
  const rssKiB = await sampleRss(pid, 3, 200);
  const metricsHeap = await heapUsedBytes(url);
  return { forcedGc: gc !== undefined, rssKiB, metricsHeap, v8Heap: gc?.usedBytes };
}

async function runMemory(name: SystemName, deadline: number): Promise<MemoryResult> {
  const res: MemoryResult = { system: name, ok: false, requested: cfg.idleClients, connected: 0, joined: 0, failed: 0, errors: [], forcedGc: false };
  let sys: RunningSystem | undefined;
  const procs: LoadProc[] = [];
  try {
    log(`== idle memory: ${name}: starting 3 servers`);
    sys = await withTimeout(
      startSystem(name, { tag: `${TAG}-mem`, readyTimeoutMs: cfg.readyTimeoutMs, keepData: cfg.keepData, inspect: true }),
      cfg.readyTimeoutMs + 20000,
      `${name} start`,
    );
    const running = sys;
    const pid = running.serverPids[0]!;
    const url = running.urls[0]!;
    await sleep(QUICK ? 1500 : 3000);
    const before = await memReading(running, pid, url);
    res.forcedGc = before.forcedGc;
    res.rssBeforeKiB = before.rssKiB;
    res.heapBeforeBytes = before.metricsHeap;
    res.v8HeapBeforeBytes = before.v8Heap;
    log(
      `idle memory ${name}: node 1 (pid ${pid}) before: RSS ${(before.rssKiB / 1024).toFixed(1)} MiB, heap /metrics ${mib(before.metricsHeap)}, ` +
        `V8 heap ${mib(before.v8Heap)}${before.forcedGc ? " (after forced full GC)" : " (no forced GC: inspector unavailable)"}`,
    );

    const specs = layout(cfg.idleClients, cfg.roomSize, `i${name[0]}`).map((s) => ({ ...s, node: 0 }));
    const nProcs = Math.max(1, Math.ceil(cfg.idleClients / cfg.idlePerProc));
    const per = Math.ceil(specs.length / nProcs);
    for (let i = 0; i < nProcs; i++) procs.push(new LoadProc(`idle-${name}-${i}`));
    log(`idle memory ${name}: connecting ${cfg.idleClients} idle websocket clients to node 1 from ${nProcs} process(es)`);
    const t0 = performance.now();
    const setupTimeout = Math.min(Math.max(1000, deadline - Date.now()), 60000 + cfg.idleClients * 30);
    const setups = await Promise.all(
      procs.map((p, i) =>
        p.request<SetupRes>(
          {
            type: "setup",
            system: name,
            procIdx: i,
            urls: running.urls,
            clients: specs.slice(i * per, (i + 1) * per),
            concurrency: 100,
            checkOrder: false,
            textBytes: cfg.textBytes,
            track: false,
          } satisfies SetupReq,
          setupTimeout,
        ),
      ),
    );
    res.connectMs = performance.now() - t0;
    res.connected = setups.reduce((a, s) => a + s.connected, 0);
    res.joined = setups.reduce((a, s) => a + s.joined, 0);
    res.failed = setups.reduce((a, s) => a + s.failed, 0);
    res.errors = setups.flatMap((s) => s.errors).slice(0, 10);
    log(`idle memory ${name}: ${res.connected} connected, ${res.joined} joined, ${res.failed} failed in ${(res.connectMs / 1000).toFixed(1)} s${res.errors.length > 0 ? `; first errors: ${res.errors.slice(0, 3).join(" | ")}` : ""}`);
    if (!running.alive()) throw new Error(`server died while connecting:\n${running.deaths().join("\n")}`);
    await sleep(QUICK ? 3000 : 5000);
    const after = await memReading(running, pid, url);
    res.forcedGc = res.forcedGc && after.forcedGc;
    res.rssAfterKiB = after.rssKiB;
    res.heapAfterBytes = after.metricsHeap;
    res.v8HeapAfterBytes = after.v8Heap;
    const nSock = res.joined > 0 ? res.joined : res.connected;
    if (nSock > 0) {
      res.kibPerSocketRss = (after.rssKiB - before.rssKiB) / nSock;
      if (after.metricsHeap !== undefined && before.metricsHeap !== undefined) res.kibPerSocketHeap = (after.metricsHeap - before.metricsHeap) / 1024 / nSock;
      if (after.v8Heap !== undefined && before.v8Heap !== undefined) res.kibPerSocketV8Heap = (after.v8Heap - before.v8Heap) / 1024 / nSock;
    }
    log(
      `idle memory ${name}: after: RSS ${(after.rssKiB / 1024).toFixed(1)} MiB, heap /metrics ${mib(after.metricsHeap)}, V8 heap ${mib(after.v8Heap)} → ` +
        `${fmt(res.kibPerSocketRss, 2)} KiB RSS, ${fmt(res.kibPerSocketHeap, 2)} KiB /metrics heap, ${fmt(res.kibPerSocketV8Heap, 2)} KiB V8 heap per socket`,
    );
    res.ok = res.joined > 0;
    if (!res.ok) res.error = `no socket joined: ${res.errors.join(" | ")}`;
  } catch (e) {
    res.error = errMsg(e);
    log(`idle memory ${name} FAILED: ${res.error}`);
  } finally {
    await Promise.all(procs.map((p) => p.close()));
    if (sys !== undefined) await sys.stop();
  }
  return res;
}

// ---------------------------------------------------------------- phase 3: durability

interface CkptCostRow {
  interval: string;
  ok: boolean;
  error?: string;
  offered: number;
  sentPerSec: number | null;
  deliveredPerSec: number | null;
  p50: number | null;
  p99: number | null;
  ackP99: number | null;
  acked: string;
  lost: number | null;
  serverCpuPct: number | null;
  otherCpuPct: number | null;
  /** fractal_checkpointed_messages_total delta over the step (3 nodes) / step time. */
  checkpointedPerSec: number | null;
  /** p99 of fractal_checkpoint_lag_seconds from the bucket deltas over the step, and how many checkpoints. */
  lagP99: string;
  checkpoints: number;
}

async function runCheckpointCost(deadline: number): Promise<CkptCostRow[]> {
  const rows: CkptCostRow[] = [];
  for (const interval of cfg.ckptIntervals) {
    const row: CkptCostRow = {
      interval,
      ok: false,
      offered: cfg.ckptRate,
      sentPerSec: null,
      deliveredPerSec: null,
      p50: null,
      p99: null,
      ackP99: null,
      acked: "-",
      lost: null,
      serverCpuPct: null,
      otherCpuPct: null,
      checkpointedPerSec: null,
      lagP99: "-",
      checkpoints: 0,
    };
    rows.push(row);
    if (Date.now() > deadline) {
      row.error = "time budget exhausted";
      continue;
    }
    log(`== durability: checkpoint cost: fan-out at ${cfg.ckptRate} msg/s with --checkpoint-interval ${interval}`);
    let before: { t: number; texts: string[] } | undefined;
    let after: { t: number; texts: string[] } | undefined;
    const f = await runFanout("fractal", deadline, {
      rates: [cfg.ckptRate],
      env: { FRACTAL_CHECKPOINT_INTERVAL: interval },
      tag: `${TAG}-ckpt-${interval}`,
      onStep: async (when, _step, running) => {
        const snap = { t: performance.now(), texts: await Promise.all(running.urls.map((u) => scrape(u))) };
        if (when === "before") before = snap;
        else after = snap;
      },
    });
    const r = f.rows[0];
    if (r !== undefined) {
      row.sentPerSec = r.sentPerSec;
      row.deliveredPerSec = r.deliveredPerSec;
      row.p50 = r.latency.p50;
      row.p99 = r.latency.p99;
      row.ackP99 = r.ackLatency.p99;
      row.acked = `${r.acked}/${r.sent}`;
      row.lost = r.lost;
      row.serverCpuPct = r.serverCpuPct;
      row.otherCpuPct = r.otherCpuPct;
    }
    if (before !== undefined && after !== undefined) {
      const sec = (after.t - before.t) / 1000;
      const sum = (x: { texts: string[] }): number => x.texts.reduce((a, t) => a + metricSum(t, "fractal_checkpointed_messages_total"), 0);
      row.checkpointedPerSec = (sum(after) - sum(before)) / sec;
      const merge = (x: { texts: string[] }): Map<string, number> => {
        const m = new Map<string, number>();
        for (const t of x.texts) for (const [k, v] of histBuckets(t, "fractal_checkpoint_lag_seconds")) m.set(k, (m.get(k) ?? 0) + v);
        return m;
      };
      const q = bucketQuantile(merge(before), merge(after), 0.99);
      row.lagP99 = q.value === "-" ? "-" : `${q.value} s`;
      row.checkpoints = q.n;
      log(`durability: --checkpoint-interval ${interval}: ${row.checkpointedPerSec.toFixed(0)} messages checkpointed/s over ${sec.toFixed(1)} s, ${q.n} room checkpoints, lag p99 ${row.lagP99}`);
    }
    row.ok = f.ok && r !== undefined;
    if (f.error !== undefined) row.error = f.error.split("\n")[0];
  }
  return rows;
}

async function runDurability(deadline: number): Promise<void> {
  const t0 = performance.now();
  const d: NonNullable<typeof results.durability> = { checkpointCost: [] };
  results.durability = d;
  d.checkpointCost = await runCheckpointCost(deadline);
  if (Date.now() > deadline) results.errors.push("durability rebuild not run: time budget exhausted");
  else {
    log(`== durability: rebuild of a wiped node: ${cfg.rebuildRooms} rooms, ${cfg.rebuildMessages} messages (load cap ${cfg.loadCapMs / 1000} s)`);
    d.rebuild = await withTimeout(
      runRebuild({
        tag: `${TAG}-rebuild`,
        rooms: cfg.rebuildRooms,
        messages: cfg.rebuildMessages,
        loadMaxMs: cfg.loadCapMs,
        loadProcs: cfg.loadWorkers,
        concurrency: cfg.loadConcurrency,
        textBytes: cfg.textBytes,
        readyTimeoutMs: cfg.readyTimeoutMs,
        rebuildTimeoutMs: 120_000,
        keepData: cfg.keepData,
        seedBatch: cfg.bulkLoad === "seed" ? cfg.seedBatch : undefined,
      }),
      cfg.loadCapMs + 360_000,
      "durability rebuild",
    ).catch((e: unknown) => ({ ok: false, error: errMsg(e) }) as RebuildResult);
  }
  d.tookSec = (performance.now() - t0) / 1000;
  log(`durability phase took ${d.tookSec.toFixed(0)} s`);
}

async function runRebalancePhase(): Promise<void> {
  const t0 = performance.now();
  log(`== rebalance: 3 nodes, ${cfg.rebRooms} rooms, ${cfg.rebMessages} messages (load cap ${cfg.loadCapMs / 1000} s); steady ${cfg.rebRate} msg/s on ${cfg.rebSteadyRooms} rooms of ${cfg.rebMembers}; n4 joins; admin rebalance`);
  const r = await withTimeout(
    runRebalance({
      tag: `${TAG}-rebalance`,
      rooms: cfg.rebRooms,
      messages: cfg.rebMessages,
      loadMaxMs: cfg.loadCapMs,
      loadProcs: cfg.loadWorkers,
      concurrency: cfg.loadConcurrency,
      textBytes: cfg.textBytes,
      steadyRooms: cfg.rebSteadyRooms,
      members: cfg.rebMembers,
      rate: cfg.rebRate,
      steadySec: cfg.rebSteadySec,
      afterSec: cfg.rebAfterSec,
      maxConcurrent: cfg.rebMaxConcurrent,
      readyTimeoutMs: cfg.readyTimeoutMs,
      rebalanceTimeoutMs: 240_000,
      keepData: cfg.keepData,
        seedBatch: cfg.bulkLoad === "seed" ? cfg.seedBatch : undefined,
    }),
    cfg.loadCapMs + 420_000,
    "rebalance",
  ).catch((e: unknown) => ({ ok: false, error: errMsg(e), windows: [], notes: [] }) as unknown as RebalanceResult);
  results.rebalance = { ...r, tookSec: (performance.now() - t0) / 1000 };
  log(`rebalance phase took ${results.rebalance.tookSec!.toFixed(0)} s`);
}

async function runFailoverPhase(deadline: number): Promise<void> {
  results.failover = [];
  for (const ttl of cfg.foTtls) {
    if (Date.now() > deadline) {
      results.errors.push(`failover with --lease-ttl ${ttl} not run: time budget exhausted`);
      continue;
    }
    const t0 = performance.now();
    log(`== failover: --lease-ttl ${ttl}`);
    const r = await withTimeout(
      runFailover({
        tag: `${TAG}-failover-${ttl}`,
        leaseTtl: ttl,
        victimRooms: cfg.foVictimRooms,
        controlRooms: cfg.foControlRooms,
        intervalMs: cfg.foIntervalMs,
        preKillSec: cfg.foPreKillSec,
        waitMs: cfg.foWaitSec * 1000,
        readyTimeoutMs: cfg.readyTimeoutMs,
        textBytes: cfg.textBytes,
        keepData: cfg.keepData,
      }),
      cfg.foWaitSec * 1000 + 150_000,
      `failover ${ttl}`,
    ).catch((e: unknown) => ({ ok: false, error: errMsg(e), leaseTtl: ttl, perRoom: [], notes: [], errorsAfterKill: {} }) as unknown as FailoverResult);
    results.failover.push({ ...r, tookSec: (performance.now() - t0) / 1000 });
  }
}

function reportOps(out: string[]): void {
  const d = results.durability;
  if (d !== undefined) {
    out.push("");
    out.push(
      `Durability (a), checkpoint cost on the serving path: the fan-out workload (${cfg.clients} clients, rooms of ${cfg.roomSize}, 3 nodes) at ${cfg.ckptRate} msg/s for ` +
        `${cfg.stepMs / 1000} s, with each --checkpoint-interval. ckpt msg/s = fractal_checkpointed_messages_total delta (3 nodes) over the step; ` +
        "lag p99 = fractal_checkpoint_lag_seconds p99 from the bucket deltas over the step (upper bucket edge); ckpts = room checkpoints in the step.",
    );
    out.push(
      table(
        ["interval", "sent/s", "deliv/s", "p50 ms", "p99 ms", "ack p99", "acked/sent", "lost", "srv CPU%", "other%", "ckpt msg/s", "lag p99", "ckpts", "error"],
        d.checkpointCost.map((r) => [
          r.interval,
          fmt(r.sentPerSec, 0),
          fmt(r.deliveredPerSec, 0),
          fmt(r.p50),
          fmt(r.p99),
          fmt(r.ackP99),
          r.acked,
          r.lost === null ? "-" : String(r.lost),
          fmt(r.serverCpuPct, 0),
          fmt(r.otherCpuPct, 0),
          fmt(r.checkpointedPerSec, 0),
          r.lagP99,
          String(r.checkpoints),
          r.error ?? "",
        ]),
      ),
    );
    const [w, wo] = d.checkpointCost;
    if (w?.deliveredPerSec != null && wo?.deliveredPerSec != null && wo.deliveredPerSec > 0) {
      out.push(
        `  ratio with/without checkpoints (${w.interval} vs ${wo.interval}): delivered/s ${(w.deliveredPerSec / wo.deliveredPerSec).toFixed(2)}, ` +
          `e2e p50 ${w.p50 != null && wo.p50 != null ? (w.p50 / wo.p50).toFixed(2) : "-"}, p99 ${w.p99 != null && wo.p99 != null ? (w.p99 / wo.p99).toFixed(2) : "-"}`,
      );
    }
    const b = d.rebuild;
    if (b !== undefined) {
      out.push("");
      out.push(
        `Durability (b), rebuild of a wiped node: 1-node cluster ` +
          (b.seeded !== undefined
            ? `whose object store was seeded with ${b.targetMessages} messages in ${b.rooms} rooms (chains as left by checkpoints of ${b.seeded.batch} message(s) per round: ` +
              `${b.seeded.segments} segments), SIGTERM, `
            : `loaded with ${b.targetMessages} messages in ${b.rooms} rooms (parallel POST /api/rooms/:room/messages, cap ${cfg.loadCapMs / 1000} s), admin checkpoint, SIGTERM, `) +
          `data dir deleted (objects kept), restart. Times from the spawn of the new process: ` +
          `ready and "rebuild finished" from the node's log, gated=[] from polling GET /api/admin/status (= admin status --json) every 200 ms. ` +
          `restored/s = messages of the "rebuild finished" line / its time; acked/s = acked messages / the same time. Target: >= ${cfg.rebuildTargetPerSec} msg/s.`,
      );
      out.push(
        table(
          ["rooms", "loaded", "load s", "load msg/s", "ckpt ms", "stop ms", "ready ms", "rebuilt ms", "gated=[] ms", "log msgs", "restored/s", "acked/s", ">= target", "error"],
          [
            [
              String(b.rooms),
              `${b.loaded}/${b.targetMessages}`,
              fmt(b.loadSec),
              fmt(b.loadPerSec, 0),
              b.checkpoint !== undefined ? String(b.checkpoint.ms) : "-",
              fmt(b.stopMs, 0),
              fmt(b.readyMs, 0),
              fmt(b.rebuildFinishedMs, 0),
              fmt(b.gatedEmptyMs, 0),
              b.rebuildMessages !== undefined ? String(b.rebuildMessages) : "-",
              fmt(b.restoredPerSec, 0),
              fmt(b.ackedPerSec, 0),
              b.ackedPerSec !== undefined ? (b.ackedPerSec >= cfg.rebuildTargetPerSec ? "yes" : "NO") : "-",
              b.error?.split("\n")[0]?.slice(0, 80) ?? "",
            ],
          ],
        ),
      );
      for (const n of b.notes ?? []) out.push(`  note: ${n}`);
    }
  }
  const rb = results.rebalance;
  if (rb !== undefined) {
    out.push("");
    out.push(
      `Rebalance: 3 nodes ` +
        (rb.seeded !== undefined
          ? `started on an object store seeded with ${rb.loaded} messages in ${rb.rooms} rooms (${rb.seeded.segments} segments; rebuilt ${fmt(rb.rebuildSec)} s after ready), `
          : `loaded with ${rb.targetMessages} messages in ${rb.rooms} rooms (reached ${rb.loaded} in ${fmt(rb.loadSec)} s), `) +
        `steady load ${rb.steadyRate} msg/s ` +
        `on ${rb.steadyRooms} of them (rooms of ${rb.steadyMembers} socket.io clients on n1-n3, sends retried with the same id after an error), ` +
        `then n4 joins (--join) and \`fractal admin rebalance --json --max-concurrent ${cfg.rebMaxConcurrent}\` runs. Pause = per-room write pause from the command's result. ` +
        `Targets: pause p99 <= ${cfg.rebPauseTargetMs} ms, throughput during the move >= ${cfg.rebThroughputTarget * 100}% of steady.`,
    );
    const res = rb.result;
    out.push(
      table(
        ["moved", "planned", "failed", "messages", "epoch", "result ms", "CLI ms", "pause p50", "pause p99", "pause max", "steady rooms moved", "lost acked", "deliv ratio", "acked ratio", "pause ok", "tput ok", "error"],
        [
          [
            res !== undefined ? String(res.done - res.failed) : "-",
            rb.plannedMoves !== undefined ? String(rb.plannedMoves) : "-",
            res !== undefined ? String(res.failed) : "-",
            res !== undefined ? String(res.messages) : "-",
            res !== undefined ? String(res.epoch) : "-",
            res !== undefined ? String(res.ms) : "-",
            fmt(rb.cliMs, 0),
            res !== undefined ? String(res.pauseMs.p50) : "-",
            res !== undefined ? String(res.pauseMs.p99) : "-",
            res !== undefined ? String(res.pauseMs.max) : "-",
            rb.steadyRoomsMoved !== undefined ? `${rb.steadyRoomsMoved}/${rb.steadyRooms}` : "-",
            rb.lostAcked !== undefined ? String(rb.lostAcked) : "-",
            fmt(rb.deliveredRatio, 2),
            fmt(rb.ackedRatio, 2),
            res !== undefined ? (res.pauseMs.p99 <= cfg.rebPauseTargetMs ? "yes" : "NO") : "-",
            rb.deliveredRatio !== undefined ? (rb.deliveredRatio >= cfg.rebThroughputTarget ? "yes" : "NO") : "-",
            rb.error?.split("\n")[0]?.slice(0, 80) ?? "",
          ],
        ],
      ),
    );
    out.push("  client view per window (ack = first send → ok ack incl. retries, of sends started in the window; e2e = send → each member's receive):");
    out.push(
      table(
        ["window", "sec", "sent/s", "acked/s", "deliv/s", "ack p50", "ack p99", "ack max", "e2e p50", "e2e p99", "e2e max", "error acks"],
        rb.windows.map((w) => [
          w.name,
          fmt(w.sec),
          fmt(w.sentPerSec, 0),
          fmt(w.ackedPerSec, 0),
          fmt(w.deliveredPerSec, 0),
          fmt(w.ackP50),
          fmt(w.ackP99),
          fmt(w.ackMax, 0),
          fmt(w.e2eP50),
          fmt(w.e2eP99),
          fmt(w.e2eMax, 0),
          Object.keys(w.errors).length > 0 ? JSON.stringify(w.errors) : "0",
        ]),
      ),
    );
    const t = rb.totals;
    if (t !== undefined) {
      out.push(
        `  steady load totals: acked ${t.acked}/${t.sent}, lost deliveries ${t.lost}, dup ${t.dups}, out of order ${t.outOfOrder}, seq gaps ${t.seqGaps}, ` +
          `gap events ${t.gapEvents}, resets ${t.resetEvents}, retries ${t.retries}, disconnects ${JSON.stringify(t.disconnects)}`,
      );
    }
    if (rb.verify !== undefined) {
      const bad = rb.verify.rooms.filter((r) => r.missing > 0 || r.seqMismatch > 0 || r.dupSeqs > 0 || r.error !== undefined);
      out.push(
        `  history of the ${rb.verify.rooms.length} moved steady rooms: ${bad.length === 0 ? "every acked message there with its seq" : bad.map((r) => `${r.room} acked ${r.acked} missing ${r.missing} (seq reused ${r.seqReused})${r.seqMismatch ? ` seq mismatch ${r.seqMismatch}` : ""}${r.dupSeqs ? ` dup seqs ${r.dupSeqs}` : ""}${r.error ? ` error ${r.error}` : ""}`).join("; ")}`,
      );
    }
    for (const n of rb.notes ?? []) out.push(`  note: ${n}`);
  }
  if (results.failover !== undefined) {
    out.push("");
    out.push(
      `Failover: 3 nodes; one sender per room on n1/n2 (next send ${cfg.foIntervalMs} ms after its ack; after an error ack or 2 s without one, the same id again ` +
        `after 100 ms) on rooms owned by n3 and control rooms owned by n1/n2; kill -9 n3. Recovery = kill → first ok ack of an attempt started after the kill, ` +
        `per n3 room (first / median / last room). Target: <= ${cfg.foTargetMs / 1000} s. Lost = acked messages missing from the history of n3's rooms afterwards.`,
    );
    out.push(
      table(
        ["lease", "rooms", "first ms", "median ms", "last ms", "map change ms", "control max ms", "errors after kill", "lost acked", "gap events", "<= target", "error"],
        results.failover.map((f) => [
          f.leaseTtl,
          `${f.recovered ?? 0}/${f.perRoom.length}`,
          fmt(f.firstMs, 0),
          fmt(f.medianMs, 0),
          fmt(f.lastMs, 0),
          fmt(f.mapChangeMs, 0),
          fmt(f.controlMaxMs, 0),
          Object.keys(f.errorsAfterKill).length > 0 ? JSON.stringify(f.errorsAfterKill) : "0",
          f.lostAcked !== undefined ? String(f.lostAcked) : "-",
          f.totals !== undefined ? String(f.totals.gapEvents) : "-",
          f.lastMs !== undefined && f.lastMs !== null ? (f.lastMs <= cfg.foTargetMs ? "yes" : "NO") : "-",
          f.error?.split("\n")[0]?.slice(0, 80) ?? "",
        ]),
      ),
    );
    for (const f of results.failover) for (const n of f.notes ?? []) out.push(`  note (${f.leaseTtl}): ${n}`);
  }
}

// ---------------------------------------------------------------- report

function pad(s: string, w: number, right = true): string {
  return right ? s.padStart(w) : s.padEnd(w);
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string => cells.map((c, i) => pad(c, widths[i]!, i > 0)).join("  ");
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function report(): string {
  const out: string[] = [];
  out.push(`Fractal Chat benchmark (${cfg.mode} mode) ${results.startedAt}  node ${process.version}, ${os.cpus().length} cores`);
  if (cfg.phases.includes("fanout")) {
    out.push("");
    out.push(
      `Fan-out: ${cfg.clients} clients over 3 nodes, rooms of ${cfg.roomSize}, ${cfg.stepMs / 1000} s per rate after ${cfg.warmupMs / 1000} s warm-up, ` +
        `drain ${cfg.drainMs / 1000} s. Latency = send → receive of each delivery (same process clock).`,
    );
    out.push(
      "deliv/s: message events received by all clients per second during the send window; lost = acked×members − unique deliveries (counted at the end of the system's run); " +
        "late = deliveries after the step's drain window; srv CPU = 3 server processes (100% = one core, the machine has " +
        `${os.cpus().length}); other% = busy CPU of processes outside the bench (shared machine).`,
    );
    const rows: string[][] = [];
    for (const f of results.fanout) {
      if (!f.ok && f.rows.length === 0) {
        rows.push([f.system, "FAILED", ...Array(14).fill("")]);
        continue;
      }
      for (const r of f.rows) {
        const errs = sumErrors(r.ackErrors);
        rows.push([
          r.system,
          String(r.offered),
          r.sentPerSec.toFixed(0),
          r.deliveredPerSec.toFixed(0),
          fmt(r.latency.p50),
          fmt(r.latency.p99),
          fmt(r.latency.max, 0),
          `${r.acked}/${r.sent}`,
          String(errs + r.unacked),
          String(r.lost),
          String(r.dups),
          String(r.late),
          r.system === "fractal" ? String(r.outOfOrder + r.seqConflicts + r.seqMismatch) : "n/a",
          r.serverCpuPct.toFixed(0),
          r.system === "peer" ? r.auxCpuPct.toFixed(0) : "-",
          r.loadCpuPct.toFixed(0),
          r.otherCpuPct.toFixed(0),
          r.pass ? "yes" : "no",
        ]);
      }
      for (const skipped of f.skippedRates) rows.push([f.system, String(skipped), "skipped", ...Array(14).fill("")]);
    }
    out.push(
      table(
        ["system", "rate/s", "sent/s", "deliv/s", "p50 ms", "p99 ms", "max ms", "acked/sent", "failed", "lost", "dup", "late", "order err", "srv CPU%", "redis%", "load CPU%", "other%", "ok"],
        rows,
      ),
    );
    out.push("");
    out.push(`Sustained (p99 < ${cfg.p99LimitMs} ms, zero loss, zero duplicates, every send acked, in order):`);
    const sus = new Map<SystemName, number | null>();
    for (const f of results.fanout) {
      sus.set(f.system, f.sustained);
      out.push(`  ${pad(f.system, 8, false)} ${f.ok ? (f.sustained !== null ? `${f.sustained} msg/s (${f.sustained * cfg.roomSize} deliveries/s)` : "none of the rates passed") : `FAILED: ${f.error?.split("\n")[0] ?? "?"}`}`);
    }
    const fr = sus.get("fractal");
    const pe = sus.get("peer");
    results.ratioFractalToPeer = fr !== undefined && fr !== null && pe !== undefined && pe !== null && pe > 0 ? fr / pe : null;
    out.push(`  ratio fractal/peer: ${results.ratioFractalToPeer !== null ? results.ratioFractalToPeer.toFixed(2) : "n/a"}`);
    for (const f of results.fanout) {
      if (f.persistence !== undefined) {
        const p = f.persistence;
        out.push("");
        out.push(`Persistence (${f.system}): ${p.ok ? "OK" : "FAILED"}, ${p.rooms.length} room(s) paged with GET /api/rooms/:room/messages?after=..&limit=200`);
        for (const r of p.rooms) {
          out.push(
            `  ${r.room}: acked ${r.acked}, in history ${r.historyMessages} (${r.pages} pages), missing ${r.missing}, seq mismatch ${r.seqMismatch}, ` +
              `seq gaps ${r.historyGaps}, dup seqs ${r.historyDupSeqs}${r.error !== undefined ? `, error: ${r.error}` : ""}` +
              (r.missingSample.length > 0 ? `, e.g. ${r.missingSample.join(" ")}` : ""),
          );
        }
      }
      if (f.error !== undefined) out.push(`\n${f.system} error: ${f.error}`);
      for (const n of f.notes) out.push(`note (${f.system}): ${n}`);
    }
  }
  if (cfg.phases.includes("memory")) {
    out.push("");
    out.push(
      `Idle memory: ${cfg.idleClients} idle websocket clients on ONE node (node 1 of 3), each joined to one room of ${cfg.roomSize}. ` +
        "Readings right after two full GCs forced through the node's V8 inspector (started with --inspect=127.0.0.1:<port>): " +
        "RSS from /proc/<pid>/status VmRSS, heap from /metrics nodejs_heap_size_used_bytes and from V8 Runtime.getHeapUsage. " +
        `Target for Fractal: <= ${cfg.memTargetKiB} KiB RSS per socket.`,
    );
    const rows = results.memory.map((m) => [
      m.system,
      `${m.joined}/${m.requested}`,
      m.rssBeforeKiB !== undefined ? (m.rssBeforeKiB / 1024).toFixed(1) : "-",
      m.rssAfterKiB !== undefined ? (m.rssAfterKiB / 1024).toFixed(1) : "-",
      fmt(m.kibPerSocketRss, 2),
      fmt(m.kibPerSocketHeap, 2),
      fmt(m.kibPerSocketV8Heap, 2),
      m.forcedGc ? "yes" : "no",
      m.system === "fractal" && m.kibPerSocketRss !== undefined ? (m.kibPerSocketRss <= cfg.memTargetKiB ? "yes" : "NO") : "-",
      m.error !== undefined ? m.error.split("\n")[0]!.slice(0, 80) : "",
    ]);
    out.push(
      table(
        ["system", "joined", "RSS before MiB", "RSS after MiB", "KiB/socket RSS", "KiB/socket heap (/metrics)", "KiB/socket V8 heap", "forced GC", `<= ${cfg.memTargetKiB} KiB`, "error"],
        rows,
      ),
    );
  }
  reportOps(out);
  if (results.errors.length > 0) {
    out.push("");
    for (const e of results.errors) out.push(`error: ${e}`);
  }
  return out.join("\n");
}

function writeJson(): void {
  results.finishedAt = new Date().toISOString();
  mkdirSync(path.dirname(cfg.out), { recursive: true });
  writeFileSync(cfg.out, JSON.stringify(results, null, 2) + "\n");
  log(`results written to ${cfg.out}; server logs in ${LOG_DIR}`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  installCleanupHandlers(() => {
    try {
      writeJson();
    } catch {
      /* best effort */
    }
  });
  // The log directory belongs to the bench: start each run with an empty one.
  rmSync(LOG_DIR, { recursive: true, force: true });
  mkdirSync(LOG_DIR, { recursive: true });
  const deadline = Date.now() + cfg.totalTimeoutMs;
  log(`mode ${cfg.mode}: systems ${cfg.systems.join(",")}, phases ${cfg.phases.join(",")}, rates ${cfg.rates.join(",")}, tag ${TAG}`);
  const hardStop = setTimeout(() => {
    log(`overall time limit of ${cfg.totalTimeoutMs / 1000} s reached: killing everything`);
    results.errors.push(`overall time limit of ${cfg.totalTimeoutMs / 1000} s reached`);
    killAllNow();
    process.stdout.write(report() + "\n");
    writeJson();
    process.exit(3);
  }, cfg.totalTimeoutMs + 60000);
  hardStop.unref();

  if (cfg.phases.includes("fanout")) {
    for (const s of cfg.systems) {
      if (Date.now() > deadline) {
        results.errors.push(`fan-out ${s} not run: time budget exhausted`);
        continue;
      }
      results.fanout.push(await runFanout(s, deadline));
    }
  }
  if (cfg.phases.includes("memory")) {
    for (const s of cfg.memSystems) {
      if (Date.now() > deadline) {
        results.errors.push(`idle memory ${s} not run: time budget exhausted`);
        continue;
      }
      results.memory.push(await runMemory(s, deadline + 60000));
    }
  }
  if (cfg.phases.includes("durability")) {
    if (Date.now() > deadline) results.errors.push("durability not run: time budget exhausted");
    else await runDurability(deadline + 60000);
  }
  if (cfg.phases.includes("rebalance")) {
    if (Date.now() > deadline) results.errors.push("rebalance not run: time budget exhausted");
    else await runRebalancePhase();
  }
  if (cfg.phases.includes("failover")) {
    if (Date.now() > deadline) results.errors.push("failover not run: time budget exhausted");
    else await runFailoverPhase(deadline + 60000);
  }
  process.stdout.write(report() + "\n");
  writeJson();
  clearTimeout(hardStop);
  const failed =
    results.fanout.some((f) => !f.ok) ||
    results.memory.some((m) => !m.ok) ||
    (results.durability?.checkpointCost.some((r) => !r.ok) ?? false) ||
    results.durability?.rebuild?.ok === false ||
    results.rebalance?.ok === false ||
    (results.failover?.some((f) => !f.ok) ?? false);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    killAllNow();
    process.exit(code);
  },
  (e: unknown) => {
    log(`bench failed: ${e instanceof TimeoutError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    killAllNow();
    try {
      writeJson();
    } catch {
      /* ignore */
    }
    process.exit(1);
  },
);
