/**
 * Starting and stopping the two systems under test as real processes on 127.0.0.1:
 *   - Fractal: 3 nodes through the CLI (`node node/bin/fractal.js node ...`), shared object store.
 *   - Peer: a local redis-server plus 3 peer-server.ts processes (socket.io + @socket.io/redis-adapter).
 * Every process is tracked by lib.ts so it is killed when the bench exits, whatever the reason.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
// `ws` is socket.io's own websocket library (a dependency of engine.io); used here only to talk to the
// V8 inspector of a server process to force a full GC before memory readings.
import WebSocket from "ws";
import { freePorts, isAlive, log, stopChild, track, trackTempDir, untrackTempDir, waitHttpOk, waitTcp } from "./lib.js";
import type { SystemName } from "./protocol.js";

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(BENCH_DIR, "..", "..");
export const OUT_DIR = path.join(REPO, "test-output");
/** Server logs (wiped at the start of each run); BENCH_LOG_DIR puts them elsewhere. */
export const LOG_DIR = process.env.BENCH_LOG_DIR ?? path.join(OUT_DIR, "bench-logs");

export interface RunningSystem {
  name: SystemName;
  /** http://127.0.0.1:port of each server node. */
  urls: string[];
  /** Pids of the 3 server processes (CPU is summed over their process trees). */
  serverPids: number[];
  /** Pids of auxiliary processes (redis-server for the peer). */
  auxPids: number[];
  logFiles: string[];
  /** Inspector port of server 1 when started with `inspect` (to force GC before memory readings). */
  inspectPort?: number;
  /** True while every server process is still running. */
  alive(): boolean;
  /** Description of dead processes with the tail of their log. */
  deaths(): string[];
  stop(): Promise<void>;
}

export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export function spawnLogged(name: string, cmd: string, args: string[], logFile: string, opts: { ipc?: boolean; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  mkdirSync(path.dirname(logFile), { recursive: true });
  const fd = openSync(logFile, "w");
  const child = spawn(cmd, args, {
    cwd: REPO,
    // Own process group so a stop reaches any grandchildren too.
    detached: true,
    stdio: opts.ipc === true ? ["ignore", fd, fd, "ipc"] : ["ignore", fd, fd],
    env: opts.env ?? process.env,
  });
  closeSync(fd);
  track(name, child, true);
  child.once("error", (e) => log(`${name}: spawn error ${e.message}`));
  return child;
}

interface Proc {
  name: string;
  child: ChildProcess;
  logFile: string;
}

function makeHandle(name: SystemName, urls: string[], servers: Proc[], aux: Proc[], cleanup: () => void): RunningSystem {
  const all = [...servers, ...aux];
  return {
    name,
    urls,
    serverPids: servers.map((p) => p.child.pid ?? -1).filter((p) => p > 0),
    auxPids: aux.map((p) => p.child.pid ?? -1).filter((p) => p > 0),
    logFiles: all.map((p) => p.logFile),
    alive: () => all.every((p) => isAlive(p.child)),
    deaths: () =>
      all
        .filter((p) => !isAlive(p.child))
        .map((p) => `${p.name} exited (code ${p.child.exitCode}, signal ${p.child.signalCode}); log ${p.logFile}:\n${tail(p.logFile)}`),
    stop: async () => {
      await Promise.all(servers.map((p) => stopChild(p.child, 8000)));
      await Promise.all(aux.map((p) => stopChild(p.child, 3000)));
      cleanup();
    },
  };
}

export interface StartOpts {
  tag: string;
  readyTimeoutMs: number;
  keepData: boolean;
  /** Extra environment for the server processes. */
  env?: NodeJS.ProcessEnv;
  /** Start server 1 with `--inspect=127.0.0.1:<free port>` (memory phase). */
  inspect?: boolean;
}

export async function startFractal(opts: StartOpts): Promise<RunningSystem> {
  const root = mkdtempSync(path.join(tmpdir(), `fractal-bench-${opts.tag}-`));
  if (!opts.keepData) trackTempDir(root);
  const [h1, h2, h3, g1, g2, g3, ip] = await freePorts(7);
  const http = [h1!, h2!, h3!];
  const grpc = [g1!, g2!, g3!];
  const peers = grpc.map((g, i) => `n${i + 1}=127.0.0.1:${g}`).join(",");
  const procs: Proc[] = [];
  for (let i = 0; i < 3; i++) {
    const id = `n${i + 1}`;
    const logFile = path.join(LOG_DIR, `${opts.tag}-fractal-${id}.log`);
    const args = [
      ...(opts.inspect === true && i === 0 ? [`--inspect=127.0.0.1:${ip}`] : []),
      ...(process.env.BENCH_NODE_FLAGS ?? "").split(/\s+/).filter((f) => f !== ""),
      path.join(REPO, "node/bin/fractal.js"),
      "node",
      "--id",
      id,
      "--http-port",
      String(http[i]),
      "--grpc-port",
      String(grpc[i]),
      "--data-dir",
      path.join(root, id),
      "--peers",
      peers,
    ];
    const child = spawnLogged(`fractal-${id}`, process.execPath, args, logFile, { env: { ...process.env, ...opts.env } });
    procs.push({ name: `fractal ${id}`, child, logFile });
  }
  const urls = http.map((p) => `http://127.0.0.1:${p}`);
  const cleanup = (): void => {
    if (!opts.keepData) {
      rmSync(root, { recursive: true, force: true });
      untrackTempDir(root);
    } else log(`fractal data kept in ${root}`);
  };
  const handle = makeHandle("fractal", urls, procs, [], cleanup);
  if (opts.inspect === true) handle.inspectPort = ip;
  try {
    await Promise.all(urls.map((u, i) => waitHttpOk(`${u}/readyz`, opts.readyTimeoutMs, () => isAlive(procs[i]!.child))));
  } catch (e) {
    const deaths = handle.deaths();
    const logs = deaths.length > 0 ? deaths : procs.map((p) => `${p.name} log ${p.logFile}:\n${tail(p.logFile, 8)}`);
    await handle.stop();
    throw new Error(`fractal cluster did not become ready: ${e instanceof Error ? e.message : String(e)}\n${logs.join("\n")}`);
  }
  log(`fractal ready: ${urls.join(" ")} (data ${root}, pids ${handle.serverPids.join(",")})`);
  return handle;
}

export async function startPeer(opts: StartOpts): Promise<RunningSystem> {
  const [rp, p1, p2, p3, ip] = await freePorts(5);
  const redisLog = path.join(LOG_DIR, `${opts.tag}-peer-redis.log`);
  const redis = spawnLogged(
    "redis-server",
    "/usr/bin/redis-server",
    ["--port", String(rp), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
    redisLog,
  );
  const aux: Proc[] = [{ name: "redis-server", child: redis, logFile: redisLog }];
  const servers: Proc[] = [];
  try {
    await waitTcp(rp!, 10000, () => isAlive(redis));
    const ports = [p1!, p2!, p3!];
    for (let i = 0; i < 3; i++) {
      const logFile = path.join(LOG_DIR, `${opts.tag}-peer-p${i + 1}.log`);
      const child = spawnLogged(
        `peer-p${i + 1}`,
        process.execPath,
        [
          ...(opts.inspect === true && i === 0 ? [`--inspect=127.0.0.1:${ip}`] : []),
          ...(process.env.BENCH_NODE_FLAGS ?? "").split(/\s+/).filter((f) => f !== ""),
          "--import",
          "tsx",
          path.join(BENCH_DIR, "peer-server.ts"),
          ...["--id", `p${i + 1}`, "--port", String(ports[i]), "--redis", `redis://127.0.0.1:${rp}`],
        ],
        logFile,
        { ipc: true, env: { ...process.env, ...opts.env } },
      );
      servers.push({ name: `peer p${i + 1}`, child, logFile });
    }
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    await Promise.all(urls.map((u, i) => waitHttpOk(`${u}/readyz`, opts.readyTimeoutMs, () => isAlive(servers[i]!.child))));
    const handle = makeHandle("peer", urls, servers, aux, () => undefined);
    if (opts.inspect === true) handle.inspectPort = ip;
    log(`peer ready: ${urls.join(" ")} redis :${rp} (pids ${handle.serverPids.join(",")}, redis ${handle.auxPids.join(",")})`);
    return handle;
  } catch (e) {
    const handle = makeHandle("peer", [], servers, aux, () => undefined);
    const deaths = handle.deaths();
    await handle.stop();
    throw new Error(`peer cluster did not start: ${e instanceof Error ? e.message : String(e)}\n${deaths.join("\n")}`);
  }
}

export function startSystem(name: SystemName, opts: StartOpts): Promise<RunningSystem> {
  return name === "fractal" ? startFractal(opts) : startPeer(opts);
}

/** `nodejs_heap_size_used_bytes` from GET /metrics, if the node exposes it. */
export async function heapUsedBytes(url: string): Promise<number | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) return undefined;
    const text = await res.text();
    const m = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})?\s+([0-9.eE+-]+)/m.exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** A V8 inspector session on the process listening on 127.0.0.1:port (started with --inspect). */
export class InspectorSession {
  private nextId = 1;
  private pending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message?: string } };
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new Error(m.error.message ?? "inspector error"));
      else p?.resolve(m.result);
    });
  }

  static async open(port: number): Promise<InspectorSession> {
    const res = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(3000) });
    const targets = (await res.json()) as { webSocketDebuggerUrl?: string }[];
    const url = targets[0]?.webSocketDebuggerUrl;
    if (url === undefined) throw new Error(`no inspector target on port ${port}`);
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new InspectorSession(ws);
  }

  call(method: string, params?: unknown, timeoutMs = 30000): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
      setTimeout(() => {
        if (this.pending.delete(id)) reject(new Error(`${method} timed out`));
      }, timeoutMs).unref();
    });
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * Forces two full GCs in the process listening for the inspector on `port` and returns its V8 heap use
 * (Runtime.getHeapUsage) afterwards. Undefined when the inspector cannot be reached.
 */
export async function inspectorGc(port: number): Promise<{ usedBytes: number; totalBytes: number } | undefined> {
  let session: InspectorSession | undefined;
  try {
    session = await InspectorSession.open(port);
    await session.call("HeapProfiler.collectGarbage");
    await session.call("HeapProfiler.collectGarbage");
    const usage = (await session.call("Runtime.getHeapUsage")) as { usedSize?: number; totalSize?: number };
    return { usedBytes: usage.usedSize ?? NaN, totalBytes: usage.totalSize ?? NaN };
  } catch {
    return undefined;
  } finally {
    session?.close();
  }
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Starts a CPU profile; the returned function stops it, writes `file` and returns the top self-time frames. */
export async function startCpuProfile(port: number, file: string): Promise<() => Promise<string[]>> {
  const session = await InspectorSession.open(port);
  await session.call("Profiler.enable");
  await session.call("Profiler.setSamplingInterval", { interval: 500 });
  await session.call("Profiler.start");
  return async () => {
    try {
      const r = (await session.call("Profiler.stop", undefined, 60000)) as { profile: { nodes: ProfileNode[]; samples?: number[] } };
      writeFileSync(file, JSON.stringify(r.profile));
      const total = r.profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0);
      const self = new Map<string, number>();
      for (const n of r.profile.nodes) {
        const f = n.callFrame;
        const where = f.url === "" ? "" : ` ${f.url.replace(/^file:\/\//, "").replace(REPO + "/", "")}:${f.lineNumber + 1}`;
        const key = `${f.functionName === "" ? "(anonymous)" : f.functionName}${where}`;
        self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0));
      }
      return [...self.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 15)
        .map(([k, v]) => `${((v / Math.max(1, total)) * 100).toFixed(1).padStart(5)}% ${k}`);
    } finally {
      session.close();
    }
  };
}

/** Event-loop lag p99 and max (ms) from GET /metrics (prom-client resets them on each scrape). */
export async function eventLoopLag(url: string): Promise<{ p99: number; max: number; metrics: string } | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) return undefined;
    const text = await res.text();
    const get = (name: string): number | undefined => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+([0-9.eE+-]+)`, "m").exec(text);
      return m?.[1] === undefined ? undefined : Number(m[1]) * 1000;
    };
    const p99 = get("nodejs_eventloop_lag_p99_seconds");
    const max = get("nodejs_eventloop_lag_max_seconds");
    return p99 === undefined || max === undefined ? undefined : { p99, max, metrics: text };
  } catch {
    return undefined;
  }
}
