/**
 * `fractal cluster --nodes N`: a local cluster of N node processes sharing one object-store directory.
 * Each node is a child process running `fractal node`; their log lines are relayed with a node prefix.
 * SIGINT/SIGTERM stop every node gracefully: the nodes run in process groups of their own, so a Ctrl-C in the
 * terminal (which signals the whole foreground group) reaches them once, from here, and not twice (a second
 * signal means "exit now" to a node). If this process dies without stopping them, their standard input closes
 * and they stop by themselves (--stop-with-stdin).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { writeFileSync } from "node:fs";
import { haproxyConfig } from "./haproxy.js";

interface ClusterFlags {
  lbPort?: string;
  nodes: string;
  baseHttpPort: string;
  baseGrpcPort: string;
  dataDir: string;
  host: string;
  logLevel: string;
}

const BIN = fileURLToPath(new URL("../bin/fractal.js", import.meta.url));

export async function clusterCommand(flags: ClusterFlags): Promise<void> {
  const count = parseIntFlag("--nodes", flags.nodes, 1, 64);
  const httpBase = parseIntFlag("--base-http-port", flags.baseHttpPort, 1, 65535 - count);
  const grpcBase = parseIntFlag("--base-grpc-port", flags.baseGrpcPort, 1, 65535 - count);
  const root = resolve(flags.dataDir);
  mkdirSync(root, { recursive: true });
  const ids = Array.from({ length: count }, (_, i) => `n${i + 1}`);
  const peers = ids.map((id, i) => `${id}=${flags.host}:${grpcBase + i}`).join(",");

  const children: ChildProcess[] = ids.map((id, i) => {
    const args = [
      BIN, "node", "--id", id, "--host", flags.host,
      "--http-port", String(httpBase + i), "--grpc-port", String(grpcBase + i),
      "--data-dir", resolve(root, id), "--object-store", resolve(root, "objects"),
      "--peers", peers, "--log-level", flags.logLevel, "--stop-with-stdin", "true",
    ];
    const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"], detached: true });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (line) => process.stdout.write(`[${id}] ${line}\n`));
    }
    child.on("exit", (code, signal) => {
      process.stdout.write(`[${id}] exited (${signal ?? code})\n`);
    });
    return child;
  });
  if (flags.lbPort !== undefined) {
    const lbPort = parseIntFlag("--lb-port", flags.lbPort, 1, 65535);
    const cfg = resolve(root, "haproxy.cfg");
    writeFileSync(cfg, haproxyConfig(ids.map((id, i) => ({ id, host: flags.host, port: httpBase + i })), { host: flags.host, port: lbPort }));
    const lb = spawn("haproxy", ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
    lb.on("error", (err) => process.stdout.write(`[haproxy] cannot start haproxy (apt-get install haproxy): ${err.message}\n`));
    for (const stream of [lb.stdout, lb.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (line) => process.stdout.write(`[haproxy] ${line}\n`));
    }
    children.push(lb);
    process.stdout.write(`Load balancer (HAProxy, ${cfg}): http://${flags.host}:${lbPort}\n`);
  }
  process.stdout.write(
    `Fractal Chat: ${count} nodes starting. Web chat: ${ids.map((_, i) => `http://${flags.host}:${httpBase + i}`).join("  ")}\n`,
  );

  let stopping = false;
  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    for (const c of children) c.kill("SIGTERM");
  };
  process.on("SIGINT", stopAll);
  process.on("SIGTERM", stopAll);
  await Promise.all(
    children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : (c.on("exit", r), c.on("error", r))))),
  );
  process.exit(stopping ? 0 : 1);
}

function parseIntFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be a whole number from ${min} to ${max}`);
  return n;
}
