/**
 * Small helpers shared by the benchmark's orchestrator: ports, /proc readings, child-process bookkeeping
 * (everything the bench starts is killed on exit, on error and on SIGINT/SIGTERM), timeouts, percentiles.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync, readdirSync, rmSync } from "node:fs";
import net from "node:net";
import { statCpuSeconds } from "../../node/thread-cpu.js";

const T0 = Date.now();

/** Progress line on stderr (stdout is reserved for the final table). */
export function log(...parts: unknown[]): void {
  const t = ((Date.now() - T0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${t}s] ${parts.map(String).join(" ")}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class TimeoutError extends Error {}

/** Rejects with TimeoutError when `p` has not settled after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what}: timed out after ${(ms / 1000).toFixed(0)} s`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** `n` distinct free TCP ports on 127.0.0.1 (all held open at once, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(0, "127.0.0.1", () => resolve());
      });
      const addr = srv.address();
      if (addr === null || typeof addr === "string") throw new Error("no port");
      ports.push(addr.port);
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
  return ports;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitTcp(port: number, timeoutMs: number, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`process for port ${port} exited`);
    if (Date.now() > deadline) throw new TimeoutError(`port ${port} not listening after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Polls `url` until it answers 200. `alive` lets the caller abort early when the server process died. */
export async function waitHttpOk(url: string, timeoutMs: number, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer().catch(() => undefined);
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e);
    }
    if (!alive()) throw new Error(`${url}: server process exited (last: ${last})`);
    if (Date.now() > deadline) throw new TimeoutError(`${url}: not 200 after ${timeoutMs} ms (last: ${last})`);
    await sleep(250);
  }
}

// ---------------------------------------------------------------- /proc

let clkTck = 100;
try {
  // _SC_CLK_TCK is 100 on every Linux we run on; /proc/self/auxv would tell for sure but is overkill.
  clkTck = Number(process.env.BENCH_CLK_TCK ?? 100) || 100;
} catch {
  clkTck = 100;
}

/** utime+stime of one process in seconds, or undefined when it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  return statCpuSeconds(`/proc/${pid}/stat`, clkTck);
}

function ppidOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** The given pids plus all their live descendants. */
export function withDescendants(roots: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const pp = ppidOf(pid);
    if (pp === undefined) continue;
    const list = children.get(pp) ?? [];
    list.push(pid);
    children.set(pp, list);
  }
  const out = new Set<number>();
  const stack = [...roots];
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (out.has(p)) continue;
    out.add(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return [...out];
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] === undefined ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** CPU seconds of each process of a set of process trees. */
function cpuByPid(roots: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of withDescendants(roots)) {
    const s = cpuSeconds(pid);
    if (s !== undefined) out.set(pid, s);
  }
  return out;
}

/** Samples CPU of a set of process trees between start() and stop(). */
export class CpuMeter {
  private c0 = new Map<number, number>();
  private t0 = 0;
  constructor(private readonly roots: () => readonly number[]) {}
  start(): void {
    this.c0 = cpuByPid(this.roots());
    this.t0 = performance.now();
  }
  /**
   * CPU time / wall time, in percent of one core. Counted per process: one that exited during the window
   * (a crashed server) drops out instead of taking its whole lifetime's CPU off the sum.
   */
  stop(): number {
    let used = 0;
    for (const [pid, s] of cpuByPid(this.roots())) used += s - (this.c0.get(pid) ?? 0);
    const wall = (performance.now() - this.t0) / 1000;
    return wall > 0 ? (used / wall) * 100 : 0;
  }
}

/** Whole-machine busy CPU (all cores, from /proc/stat) in seconds. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return (total - idle) / clkTck;
  } catch {
    return 0;
  }
}

/** Machine-wide busy CPU between start() and stop(), percent of one core (2 cores → max 200). */
export class MachineCpuMeter {
  private c0 = 0;
  private t0 = 0;
  start(): void {
    this.c0 = machineBusySeconds();
    this.t0 = performance.now();
  }
  stop(): number {
    const wall = (performance.now() - this.t0) / 1000;
    return wall > 0 ? ((machineBusySeconds() - this.c0) / wall) * 100 : 0;
  }
}

// ---------------------------------------------------------------- child-process bookkeeping

interface Tracked {
  name: string;
  child: ChildProcess;
  /** Started with detached: true, so -pid addresses its whole process group. */
  group: boolean;
}

const tracked = new Set<Tracked>();

export function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

export function track(name: string, child: ChildProcess, group: boolean): void {
  const t: Tracked = { name, child, group };
  tracked.add(t);
  child.once("exit", () => tracked.delete(t));
}

function signal(t: Tracked, sig: NodeJS.Signals): void {
  const pid = t.child.pid;
  if (pid === undefined || !isAlive(t.child)) return;
  try {
    if (t.group) process.kill(-pid, sig);
    else t.child.kill(sig);
  } catch {
    try {
      t.child.kill(sig);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves when the process has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  const t = [...tracked].find((x) => x.child === child) ?? { name: "?", child, group: false };
  if (!isAlive(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  signal(t, "SIGTERM");
  const timer = setTimeout(() => signal(t, "SIGKILL"), graceMs);
  await Promise.race([exited, sleep(graceMs + 2000)]);
  clearTimeout(timer);
  if (isAlive(child)) signal(t, "SIGKILL");
}

const tempDirs = new Set<string>();
/** A directory removed when the bench exits (unless the caller untracks it to keep it). */
export function trackTempDir(dir: string): void {
  tempDirs.add(dir);
}
export function untrackTempDir(dir: string): void {
  tempDirs.delete(dir);
}

/** Synchronous last resort: SIGKILL everything still tracked, remove tracked temp dirs. */
export function killAllNow(): void {
  for (const t of tracked) signal(t, "SIGKILL");
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  tempDirs.clear();
}

export function trackedCount(): number {
  return [...tracked].filter((t) => isAlive(t.child)).length;
}

let handlersInstalled = false;
/** Kills every tracked child when the bench exits for any reason. */
export function installCleanupHandlers(onSignal: (sig: string) => void): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", () => killAllNow());
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      log(`got ${sig}, killing ${trackedCount()} child process(es)`);
      killAllNow();
      onSignal(sig);
      process.exit(130);
    });
  }
  process.on("uncaughtException", (e) => {
    log(`uncaught exception: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    killAllNow();
    process.exit(1);
  });
}

// ---------------------------------------------------------------- statistics

/** Quantile (0..1) of an ascending-sorted array, nearest-rank. */
export function quantile(sorted: ArrayLike<number>, q: number): number | null {
  const n = sorted.length;
  if (n === 0) return null;
  const idx = Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1));
  return sorted[idx] ?? null;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}
