/**
 * Real-process cluster harness for the cluster tests (test/cluster/*.test.ts).
 *
 * `startCluster({nodes: 3})` picks free 127.0.0.1 ports, makes a temporary data root and spawns one real
 * `node node/bin/fractal.js node ...` process per node, all with the same `--peers` list. The object store
 * is left at its default (`<data-dir>/../objects`), so every node shares `<root>/objects`. Each node's
 * stdout/stderr goes to `<root>/logs/<id>.log`; the tails are printed when a node fails to become ready and
 * (through `useCluster`) when a test fails.
 *
 * Every spawned process is tracked globally and SIGKILLed when the test process exits, so an aborted run
 * never leaves nodes behind. Set KEEP_TEST_DATA=1 to keep the data root (logs, SQLite files, objects).
 *
 * Also here: small protocol helpers (session, connect, emitAck, join/send/history), a MessageCollector and
 * an EventLog for server → client events, and ownership helpers (ownerOf, roomOwnedBy).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, readFileSync, rmSync, existsSync, type WriteStream } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";

export type { Socket } from "socket.io-client";

/** Repository root (this file is test/helpers/cluster.ts). */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = "node/bin/fractal.js";
const HOST = "127.0.0.1";

const READY_TIMEOUT_MS = Number(process.env.FRACTAL_TEST_READY_TIMEOUT_MS ?? 20_000);
const STOP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------------------
// Global process tracking: whatever happens to the test run, spawned nodes die with it.
// ---------------------------------------------------------------------------------------------------------

const LIVE_CHILDREN = new Set<ChildProcess>();
const TEMP_ROOTS = new Set<string>();
/** Sockets opened through `connect`, with the node URL each was opened to. */
const OPEN_SOCKETS = new Map<Socket, string>();
let exitHooksInstalled = false;

function killAllChildrenSync(): void {
  for (const child of LIVE_CHILDREN) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  LIVE_CHILDREN.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on("exit", () => {
    killAllChildrenSync();
    if (!process.env.KEEP_TEST_DATA) {
      for (const root of TEMP_ROOTS) {
        try {
          rmSync(root, { recursive: true, force: true });
        } catch {
          // best effort
        }
      }
    }
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      killAllChildrenSync();
      process.exit(sig === "SIGINT" ? 130 : 143);
    });
  }
}

/**
 * Closes the sockets opened through `connect`: all of them (`useCluster`'s after hook), or those opened to the
 * given node URLs (a cluster stopping: clients of another cluster in the same test keep running).
 */
export function closeAllSockets(urls?: readonly string[]): void {
  for (const [s, url] of OPEN_SOCKETS) {
    if (urls !== undefined && !urls.includes(url)) continue;
    s.close();
    OPEN_SOCKETS.delete(s);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond()` is truthy; rejects with `what` after `timeoutMs`. */
export async function waitUntil<T>(
  cond: () => T | Promise<T>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 100,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const detail = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

let uniqueCounter = 0;
/** A fresh valid room id (`^[a-z0-9][a-z0-9._-]{0,63}$`) starting with `prefix`. */
export function uniqueRoom(prefix: string): string {
  uniqueCounter += 1;
  const suffix = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}-${uniqueCounter}`;
  return `${prefix.toLowerCase().slice(0, 40)}-${suffix}`.slice(0, 64);
}

/** A fresh valid user name (1–32 of `A-Z a-z 0-9 _ . -`). */
export function uniqueUser(prefix: string): string {
  uniqueCounter += 1;
  return `${prefix.slice(0, 20)}-${Math.random().toString(36).slice(2, 6)}${uniqueCounter}`.slice(0, 32);
}

async function listenOn(port: number): Promise<{ port: number; server: net.Server } | undefined> {
  const server = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once("error", () => resolve(false));
    server.listen({ port, host: HOST, exclusive: true }, () => resolve(true));
  });
  if (!ok) return undefined;
  const addr = server.address();
  if (addr === null || typeof addr === "string") {
    server.close();
    return undefined;
  }
  return { port: addr.port, server };
}

/** The kernel's ephemeral port range (outgoing connections take their local ports from it). */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (lo !== undefined && hi !== undefined && lo > 0 && hi >= lo) return [lo, hi];
  } catch {
    // not Linux
  }
  return [32768, 60999];
}

/**
 * Picks `n` distinct free ports: each is checked by listening on it (all held open together), then all
 * are released. Ports come from below the kernel's ephemeral range when possible: a node restarted on
 * its old ports must not find one taken as the local port of some outgoing connection in the meantime
 * (that is what a port-0 listener, which draws from the ephemeral range, would risk). Falls back to
 * port 0 when no such port is free.
 */
export async function pickPorts(n: number): Promise<number[]> {
  const held: { port: number; server: net.Server }[] = [];
  const [ephLo] = ephemeralRange();
  const lo = 20_000;
  const hi = Math.min(ephLo - 1, 32_767);
  const tried = new Set<number>();
  try {
    while (held.length < n) {
      let got: { port: number; server: net.Server } | undefined;
      if (hi > lo && tried.size < (hi - lo) / 2) {
        const port = lo + Math.floor(Math.random() * (hi - lo));
        if (tried.has(port)) continue;
        tried.add(port);
        got = await listenOn(port);
      } else {
        got = await listenOn(0);
        if (got === undefined) throw new Error("could not listen on 127.0.0.1:0");
      }
      if (got !== undefined) held.push(got);
    }
  } finally {
    await Promise.all(held.map((h) => new Promise<void>((r) => h.server.close(() => r()))));
  }
  return held.map((h) => h.port);
}

/**
 * A base port whose next `count` ports are all free, below the kernel's ephemeral range like `pickPorts` (for a
 * program that takes consecutive ports, such as `fractal cluster`). Checked, not held: a listener may still win
 * a race for one, but no outgoing connection will.
 */
export async function consecutiveFreePorts(count: number): Promise<number> {
  const [ephLo] = ephemeralRange();
  const lo = 20_000;
  const hi = Math.min(ephLo - 1, 32_767) - count;
  for (let attempt = 0; attempt < 100 && hi > lo; attempt++) {
    const base = lo + Math.floor(Math.random() * (hi - lo));
    const held: net.Server[] = [];
    try {
      for (let p = base; p < base + count; p++) {
        const got = await listenOn(p);
        if (got === undefined) break;
        held.push(got.server);
      }
      if (held.length === count) return base;
    } finally {
      await Promise.all(held.map((server) => new Promise<void>((r) => server.close(() => r()))));
    }
  }
  throw new Error(`no run of ${count} free ports below the ephemeral range`);
}

function tailOf(file: string, lines: number): string {
  if (!existsSync(file)) return "(no log file)";
  const text = readFileSync(file, "utf8");
  const all = text.split("\n");
  return all.slice(Math.max(0, all.length - lines - 1)).join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------------------

export interface ClusterOptions {
  nodes: number;
  /** Data root; a fresh temp directory under os.tmpdir() by default (removed by stopAll). */
  dataDir?: string;
  /** Extra CLI flags given to every node. */
  extraArgs?: string[];
  /** Node ids are `${idPrefix}1`, `${idPrefix}2`, ... (default "n"). */
  idPrefix?: string;
  /** Extra CLI flags for node i only (after extraArgs, so they win). */
  nodeArgs?: (index: number) => string[];
  /** Extra environment for every node. */
  env?: Record<string, string>;
  /** How long to wait for each node's /readyz (default 20 s, env FRACTAL_TEST_READY_TIMEOUT_MS). */
  readyTimeoutMs?: number;
}

export interface TestNode {
  /** Node id: n1, n2, ... */
  readonly id: string;
  readonly index: number;
  /** `http://127.0.0.1:PORT` */
  readonly httpUrl: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** pid of the current process (changes on restart; undefined if it failed to spawn). */
  pid: number | undefined;
}

interface NodeProc {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once we asked it to stop (so its exit is not "unexpected"). */
  stopping: boolean;
  log: WriteStream;
}

export interface TestCluster {
  readonly root: string;
  readonly nodes: TestNode[];
  /** nodes[i], throwing if out of range. */
  node(i: number): TestNode;
  /** Index of the node with this id. */
  indexOf(id: string): number;
  /** True while node i's process runs. */
  isRunning(i: number): boolean;
  /** Nodes that exited without being asked to (crashes), with their exit status. */
  readonly crashes: { id: string; code: number | null; signal: string | null }[];
  kill9(i: number): Promise<void>;
  stop(i: number): Promise<void>;
  restart(i: number, opts?: { wipe?: boolean }): Promise<void>;
  waitReady(i: number, timeoutMs?: number): Promise<void>;
  stopAll(): Promise<void>;
  /** A session token (user "harness") for HTTP API calls made by helpers. */
  token(): Promise<string>;
  /** The last `lines` lines of every node's log, with headers. */
  logTails(lines?: number): string;
  printLogTails(lines?: number): void;
}

export async function startCluster(opts: ClusterOptions): Promise<TestCluster> {
  installExitHooks();
  if (opts.nodes < 1) throw new Error("a cluster needs at least one node");
  const readyTimeout = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;

  const ownRoot = opts.dataDir === undefined;
  const root = opts.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), "fractal-test-")));
  if (ownRoot) TEMP_ROOTS.add(root);
  await mkdir(path.join(root, "logs"), { recursive: true });

  const ports = await pickPorts(opts.nodes * 2);
  const nodes: TestNode[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    const id = `${opts.idPrefix ?? "n"}${i + 1}`;
    const httpPort = ports[2 * i]!;
    const grpcPort = ports[2 * i + 1]!;
    nodes.push({
      id,
      index: i,
      httpUrl: `http://${HOST}:${httpPort}`,
      httpPort,
      grpcPort,
      dataDir: path.join(root, id),
      logFile: path.join(root, "logs", `${id}.log`),
      pid: undefined,
    });
  }
  const peers = nodes.map((n) => `${n.id}=${HOST}:${n.grpcPort}`).join(",");

  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    // Keep the nodes hermetic: no FRACTAL_* settings leak in from the developer's shell.
    if (v !== undefined && !k.startsWith("FRACTAL_")) env[k] = v;
  }
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  Object.assign(env, opts.env ?? {});

  const procs: (NodeProc | undefined)[] = nodes.map(() => undefined);
  const crashes: TestCluster["crashes"] = [];
  let cachedToken: string | undefined;
  let stoppedAll = false;

  const argsFor = (n: TestNode): string[] => [
    CLI,
    "node",
    "--id",
    n.id,
    "--http-port",
    String(n.httpPort),
    "--grpc-port",
    String(n.grpcPort),
    "--data-dir",
    n.dataDir,
    "--peers",
    peers,
    ...(opts.extraArgs ?? []),
    ...(opts.nodeArgs?.(n.index) ?? []),
  ];

  const nodeAt = (i: number): TestNode => {
    const n = nodes[i];
    if (n === undefined) throw new Error(`no node at index ${i} (cluster has ${nodes.length})`);
    return n;
  };

  const launch = (i: number): NodeProc => {
    const n = nodeAt(i);
    // A test that outlived its cluster (timed out, then carried on) must not bring nodes back.
    if (stoppedAll) throw new Error(`cluster ${root} was stopped; not starting ${n.id} again`);
    const log = createWriteStream(n.logFile, { flags: "a" });
    log.write(`\n===== [harness] ${new Date().toISOString()} starting ${n.id}: node ${argsFor(n).join(" ")}\n`);
    const child = spawn(process.execPath, argsFor(n), {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    LIVE_CHILDREN.add(child);
    n.pid = child.pid;
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    const proc: NodeProc = {
      child,
      stopping: false,
      log,
      exited: new Promise((resolve) => {
        child.once("exit", (code, signal) => {
          LIVE_CHILDREN.delete(child);
          if (!proc.stopping) {
            crashes.push({ id: n.id, code, signal });
            process.stderr.write(`[harness] node ${n.id} (pid ${child.pid}) exited unexpectedly: code=${code} signal=${signal}\n`);
          }
          // Let the pipes drain into the log and close it before anyone (a restart) appends to the file.
          setTimeout(() => {
            log.end(`===== [harness] ${n.id} exited: code=${code} signal=${signal}\n`, () => resolve({ code, signal }));
          }, 50);
        });
      }),
    };
    child.once("error", (err) => {
      log.write(`===== [harness] spawn error: ${err.message}\n`);
    });
    procs[i] = proc;
    return proc;
  };

  const isRunning = (i: number): boolean => {
    const p = procs[i];
    return p !== undefined && p.child.exitCode === null && p.child.signalCode === null;
  };

  const logTails = (lines = 40): string =>
    nodes
      .map((n) => `----- ${n.id} (${n.httpUrl}, grpc ${n.grpcPort}) log tail: ${n.logFile}\n${tailOf(n.logFile, lines)}`)
      .join("\n");

  const waitReady = async (i: number, timeoutMs = readyTimeout): Promise<void> => {
    const n = nodeAt(i);
    const p = procs[i];
    const deadline = Date.now() + timeoutMs;
    let last = "no answer yet";
    while (Date.now() < deadline) {
      if (p !== undefined && !isRunning(i)) {
        const st = await p.exited;
        throw new Error(
          `node ${n.id} exited (code=${st.code} signal=${st.signal}) before /readyz returned 200\n${logTails(60)}`,
        );
      }
      try {
        const res = await fetch(`${n.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer().catch(() => undefined);
        if (res.status === 200) return;
        last = `status ${res.status}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      await sleep(150);
    }
    throw new Error(`node ${n.id} not ready after ${timeoutMs} ms (last /readyz: ${last})\n${logTails(60)}`);
  };

  const signalAndWait = async (i: number, sig: NodeJS.Signals, timeoutMs: number): Promise<void> => {
    const p = procs[i];
    if (p === undefined || !isRunning(i)) return;
    p.stopping = true;
    p.child.kill(sig);
    const done = await Promise.race([p.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!done) {
      process.stderr.write(`[harness] node ${nodeAt(i).id} did not exit ${timeoutMs} ms after ${sig}; SIGKILL\n`);
      p.child.kill("SIGKILL");
      await p.exited;
    }
  };

  const cluster: TestCluster = {
    root,
    nodes,
    crashes,
    node: nodeAt,
    indexOf(id) {
      const i = nodes.findIndex((n) => n.id === id);
      if (i < 0) throw new Error(`no node with id ${id}`);
      return i;
    },
    isRunning,
    async kill9(i) {
      await signalAndWait(i, "SIGKILL", 5_000);
    },
    async stop(i) {
      await signalAndWait(i, "SIGTERM", STOP_TIMEOUT_MS);
    },
    async restart(i, ropts = {}) {
      if (isRunning(i)) await cluster.stop(i);
      if (ropts.wipe) await rm(nodeAt(i).dataDir, { recursive: true, force: true });
      launch(i);
      await waitReady(i);
    },
    waitReady,
    async stopAll() {
      if (stoppedAll) return;
      stoppedAll = true;
      closeAllSockets(nodes.map((_, i) => nodeAt(i).httpUrl));
      await Promise.all(nodes.map((_, i) => signalAndWait(i, "SIGTERM", STOP_TIMEOUT_MS)));
      if (ownRoot && !process.env.KEEP_TEST_DATA) {
        await rm(root, { recursive: true, force: true });
        TEMP_ROOTS.delete(root);
      } else if (process.env.KEEP_TEST_DATA) {
        process.stderr.write(`[harness] KEEP_TEST_DATA: cluster data kept in ${root}\n`);
      }
    },
    async token() {
      if (cachedToken === undefined) {
        const i = nodes.findIndex((_, j) => isRunning(j));
        cachedToken = await session(nodeAt(i < 0 ? 0 : i).httpUrl, "harness");
      }
      return cachedToken;
    },
    logTails,
    printLogTails(lines = 40) {
      process.stderr.write(`\n[harness] node logs (${root}):\n${logTails(lines)}\n`);
    },
  };

  for (let i = 0; i < nodes.length; i++) launch(i);
  try {
    await Promise.all(nodes.map((_, i) => waitReady(i)));
  } catch (err) {
    await cluster.stopAll().catch(() => undefined);
    throw err;
  }
  return cluster;
}

/**
 * Mocha glue: starts a cluster in `before`, prints log tails after a failed test, stops it in `after`.
 * Returns a getter for the running cluster.
 */
export function useCluster(opts: ClusterOptions): () => TestCluster {
  let cluster: TestCluster | undefined;
  before(async function () {
    this.timeout((opts.readyTimeoutMs ?? READY_TIMEOUT_MS) + 30_000);
    cluster = await startCluster(opts);
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed" && cluster !== undefined) cluster.printLogTails();
  });
  after(async function () {
    this.timeout(STOP_TIMEOUT_MS + 20_000);
    closeAllSockets();
    // A failed hook (e.g. a describe's own before) is not seen by afterEach: print the logs here.
    if (cluster !== undefined && this.test?.parent !== undefined && hookFailed(this.test.parent)) cluster.printLogTails();
    if (cluster !== undefined) {
      const crashes = cluster.crashes;
      await cluster.stopAll();
      if (crashes.length > 0) process.stderr.write(`[harness] unexpected node exits: ${JSON.stringify(crashes)}\n`);
    }
  });
  return () => {
    if (cluster === undefined) throw new Error("cluster not started (see the before hook's error)");
    return cluster;
  };
}

/** True when a before/after hook anywhere in `suite` (or below) failed. */
function hookFailed(suite: Mocha.Suite): boolean {
  const hooks = suite as unknown as Record<string, { state?: string }[] | undefined>;
  for (const key of ["_beforeAll", "_beforeEach", "_afterEach"]) {
    if ((hooks[key] ?? []).some((h) => h.state === "failed")) return true;
  }
  return suite.suites.some(hookFailed);
}

// ---------------------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------------------

export interface HttpResult<T = any> {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: T;
}

export async function http<T = any>(
  url: string,
  opts: { method?: string; token?: string; body?: unknown; rawBody?: string; contentType?: string; timeoutMs?: number } = {},
): Promise<HttpResult<T>> {
  const headers: Record<string, string> = {};
  let body: string | undefined;
  if (opts.rawBody !== undefined) {
    body = opts.rawBody;
    headers["content-type"] = opts.contentType ?? "application/json";
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] = opts.contentType ?? "application/json";
  }
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(url, {
    method: opts.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
    signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POST /api/session → token. */
export async function session(httpUrl: string, name: string): Promise<string> {
  const res = await http<{ token: string; user: string }>(`${httpUrl}/api/session`, { body: { name } });
  if (res.status !== 200 && res.status !== 201) {
    throw new Error(`POST /api/session ${JSON.stringify(name)} → ${res.status} ${res.text.slice(0, 300)}`);
  }
  if (typeof res.json?.token !== "string") throw new Error(`POST /api/session: no token in ${res.text.slice(0, 300)}`);
  return res.json.token;
}

export interface ChatMessage {
  room: string;
  seq: number;
  id: string;
  user: string;
  text: string;
  ts: number;
}

export const roomPath = (room: string): string => `/api/rooms/${encodeURIComponent(room)}`;

/** GET /api/rooms/:room on the first running node (or `viaIndex`). */
export async function roomInfo(
  cluster: TestCluster,
  room: string,
  viaIndex?: number,
): Promise<{ room: string; owner: string; seq: number; members: string[] }> {
  const i = viaIndex ?? firstRunning(cluster);
  const res = await http(`${cluster.node(i).httpUrl}${roomPath(room)}`, { token: await cluster.token() });
  if (res.status !== 200) throw new Error(`GET ${roomPath(room)} on ${cluster.node(i).id} → ${res.status} ${res.text.slice(0, 300)}`);
  return res.json;
}

/** The id of the node that owns `room`, as reported by GET /api/rooms/:room. */
export async function ownerOf(cluster: TestCluster, room: string, viaIndex?: number): Promise<string> {
  const info = await roomInfo(cluster, room, viaIndex);
  if (typeof info.owner !== "string") throw new Error(`GET ${roomPath(room)}: no owner in ${JSON.stringify(info)}`);
  return info.owner;
}

function firstRunning(cluster: TestCluster): number {
  const i = cluster.nodes.findIndex((_, j) => cluster.isRunning(j));
  if (i < 0) throw new Error("no node is running");
  return i;
}

/** Generates room ids `prefix-...` until one is owned by `nodeId`. */
export async function roomOwnedBy(cluster: TestCluster, nodeId: string, prefix: string): Promise<string> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const room = uniqueRoom(prefix);
    if ((await ownerOf(cluster, room)) === nodeId) return room;
  }
  throw new Error(`no room with prefix ${prefix} owned by ${nodeId} after 200 tries`);
}

/** Every message of a room via GET /api/rooms/:room/messages, paging with after= and limit=200. */
export async function fullHistory(httpUrl: string, token: string, room: string): Promise<ChatMessage[]> {
  const out: ChatMessage[] = [];
  let after = 0;
  for (let page = 0; page < 10_000; page++) {
    const res = await http<{ messages: ChatMessage[] }>(
      `${httpUrl}${roomPath(room)}/messages?after=${after}&limit=200`,
      { token },
    );
    if (res.status !== 200) throw new Error(`GET messages after=${after} → ${res.status} ${res.text.slice(0, 300)}`);
    const msgs = res.json.messages;
    if (!Array.isArray(msgs)) throw new Error(`GET messages: no messages array in ${res.text.slice(0, 300)}`);
    if (msgs.length === 0) return out;
    out.push(...msgs);
    const last = msgs[msgs.length - 1]!;
    if (last.seq <= after) throw new Error(`GET messages after=${after} returned seq ${last.seq} (not advancing)`);
    after = last.seq;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Socket helpers
// ---------------------------------------------------------------------------------------------------------

export type ConnectOptions = Partial<ManagerOptions & SocketOptions>;

/**
 * Opens a socket.io connection (websocket only by default, no reconnection). Resolves on `connect`,
 * rejects with the `connect_error` Error (its message is the server's reason, e.g. "unauthorized").
 * Pass token `null` to connect without auth.
 */
export function connect(httpUrl: string, token: string | null, opts: ConnectOptions = {}): Promise<Socket> {
  const socket = io(httpUrl, {
    ...(token === null ? {} : { auth: { token } }),
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 5000,
    ...opts,
  });
  OPEN_SOCKETS.set(socket, httpUrl);
  socket.on("disconnect", () => undefined);
  return new Promise((resolve, reject) => {
    const onConnect = (): void => {
      socket.off("connect_error", onError);
      resolve(socket);
    };
    const onError = (err: Error): void => {
      socket.off("connect", onConnect);
      socket.close();
      OPEN_SOCKETS.delete(socket);
      reject(err);
    };
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
}

export interface AckError {
  ok: false;
  error: { code: string; message: string };
}
export type Ack<T extends object = object> = ({ ok: true } & T) | AckError;

/** Emits with an ack callback; rejects after `timeoutMs` without an ack. */
export async function emitAck<T = any>(socket: Socket, event: string, payload: unknown, timeoutMs = 5000): Promise<T> {
  return (await socket.timeout(timeoutMs).emitWithAck(event, payload)) as T;
}

/** Throws with the whole ack when it is not `{ok: true}`. */
export function expectOk<T extends object>(ack: Ack<T>, what = "ack"): { ok: true } & T {
  if (ack === null || typeof ack !== "object" || ack.ok !== true) {
    throw new Error(`${what}: expected {ok: true}, got ${JSON.stringify(ack)}`);
  }
  return ack;
}

export interface JoinAck {
  room: string;
  seq: number;
  members: string[];
}
export interface SendAck {
  seq: number;
  ts: number;
}

export async function join(socket: Socket, room: string, since?: number): Promise<{ ok: true } & JoinAck> {
  const ack = await emitAck<Ack<JoinAck>>(socket, "join", since === undefined ? { room } : { room, since });
  return expectOk(ack, `join ${room}`);
}

export async function send(socket: Socket, room: string, text: string, id: string, timeoutMs = 5000): Promise<{ ok: true } & SendAck> {
  const ack = await emitAck<Ack<SendAck>>(socket, "send", { room, text, id }, timeoutMs);
  return expectOk(ack, `send ${room}/${id}`);
}

/** Records every server → client event of the given names, with waiters. */
export class EventLog<T = any> {
  readonly events: { event: string; payload: T; at: number }[] = [];
  private waiters: { event: string; pred: (p: T) => boolean; resolve: (p: T) => void }[] = [];

  constructor(socket: Socket, names: string[]) {
    for (const name of names) {
      socket.on(name, (payload: T) => {
        this.events.push({ event: name, payload, at: Date.now() });
        this.waiters = this.waiters.filter((w) => {
          if (w.event === name && w.pred(payload)) {
            w.resolve(payload);
            return false;
          }
          return true;
        });
      });
    }
  }

  all(event: string, pred: (p: T) => boolean = () => true): T[] {
    return this.events.filter((e) => e.event === event && pred(e.payload)).map((e) => e.payload);
  }

  /** Resolves with the first recorded (past or future) `event` whose payload matches. */
  waitFor(event: string, pred: (p: T) => boolean = () => true, timeoutMs = 5000): Promise<T> {
    const found = this.events.find((e) => e.event === event && pred(e.payload));
    if (found) return Promise.resolve(found.payload);
    return new Promise((resolve, reject) => {
      const waiter = { event, pred, resolve: (p: T) => (clearTimeout(timer), resolve(p)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no "${event}" event matching the predicate within ${timeoutMs} ms; got ${JSON.stringify(this.events.slice(-10))}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

/** Records `message` events per room, in arrival order. */
export class MessageCollector {
  private readonly byRoom = new Map<string, ChatMessage[]>();
  private waiters: { room: string; count: number; resolve: () => void }[] = [];

  constructor(socket?: Socket) {
    if (socket !== undefined) this.attach(socket);
  }

  attach(socket: Socket): this {
    socket.on("message", (m: ChatMessage) => this.record(m));
    return this;
  }

  private record(m: ChatMessage): void {
    const room = typeof m?.room === "string" ? m.room : "(no room)";
    let list = this.byRoom.get(room);
    if (list === undefined) {
      list = [];
      this.byRoom.set(room, list);
    }
    list.push(m);
    const n = list.length;
    this.waiters = this.waiters.filter((w) => {
      if (w.room === room && n >= w.count) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  messages(room: string): ChatMessage[] {
    return [...(this.byRoom.get(room) ?? [])];
  }

  seqs(room: string): number[] {
    return this.messages(room).map((m) => m.seq);
  }

  /** Resolves with the room's messages once at least `count` arrived. */
  async waitFor(room: string, count: number, timeoutMs = 10_000): Promise<ChatMessage[]> {
    if ((this.byRoom.get(room)?.length ?? 0) < count) {
      await new Promise<void>((resolve, reject) => {
        const waiter = { room, count, resolve: () => (clearTimeout(timer), resolve()) };
        const timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(
            new Error(
              `room ${room}: ${this.byRoom.get(room)?.length ?? 0} of ${count} messages after ${timeoutMs} ms; seqs ${JSON.stringify(this.seqs(room))}`,
            ),
          );
        }, timeoutMs);
        this.waiters.push(waiter);
      });
    }
    return this.messages(room);
  }
}

/** [from, from+1, ..., to] */
export function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The admin CLI
// ---------------------------------------------------------------------------------------------------------

export interface AdminRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `fractal admin <args> --node <url>` as a real process; never throws (see `code`). */
const execFileAsync = promisify(execFile);

export async function runAdmin(url: string, args: string[]): Promise<AdminRun> {
  try {
    const r = await execFileAsync(process.execPath, ["node/bin/fractal.js", "admin", ...args, "--node", url], { cwd: REPO_ROOT, maxBuffer: 64 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** Like runAdmin, but a non-zero exit is an error; returns stdout. */
export async function admin(url: string, args: string[]): Promise<string> {
  const r = await runAdmin(url, args);
  if (r.code !== 0) throw new Error(`fractal admin ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}
