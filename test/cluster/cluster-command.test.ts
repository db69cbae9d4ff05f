/**
 * `fractal cluster` (what `npm start` runs): its nodes come up on consecutive ports and chat with each other;
 * a Ctrl-C in the terminal (SIGINT to the whole foreground process group) stops every node once, gracefully
 * (a node takes a second signal as "exit now"); and no node outlives a cluster process killed outright.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { REPO_ROOT, consecutiveFreePorts, http, session, uniqueRoom, waitUntil } from "../helpers/cluster.js";

const BIN = join(REPO_ROOT, "node", "bin", "fractal.js");
const NODES = 3;

/** Pids of node processes started for this data root (they run in process groups of their own). */
function nodePids(root: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (cmdline.includes("node") && cmdline.some((a) => a.startsWith(root))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

interface RunningCluster {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
  urls: string[];
}

async function startClusterCommand(root: string): Promise<RunningCluster> {
  // One run for both kinds, so the HTTP and gRPC ports cannot overlap.
  const httpBase = await consecutiveFreePorts(2 * NODES);
  const grpcBase = httpBase + NODES;
  // Its own process group, as a shell gives a foreground job: signalling the group is what Ctrl-C does.
  const child = spawn(
    process.execPath,
    [BIN, "cluster", "--nodes", String(NODES), "--base-http-port", String(httpBase), "--base-grpc-port", String(grpcBase), "--data-dir", root],
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  const output: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) s.on("data", (d: Buffer) => output.push(...d.toString("utf8").split("\n")));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const urls = Array.from({ length: NODES }, (_, i) => `http://127.0.0.1:${httpBase + i}`);
  try {
    await waitUntil(
      async () => (await Promise.all(urls.map((u) => http(`${u}/readyz`, { timeoutMs: 1000 }).then((r) => r.status === 200, () => false)))).every(Boolean),
      "every node of `fractal cluster` ready",
      45_000,
      250,
    );
  } catch (err) {
    // What the nodes said is the diagnosis (a port taken, a crash): keep it with the failure.
    throw new Error(`${(err as Error).message}; the command's last output:\n${output.slice(-40).join("\n")}`);
  }
  return { child, output, exited, urls };
}

describe("cluster: the `fractal cluster` command (npm start)", function () {
  this.timeout(120_000);
  const roots: string[] = [];
  after(() => {
    for (const root of roots) {
      for (const pid of nodePids(root)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("runs nodes that chat with each other; one Ctrl-C stops every node once, gracefully", async () => {
    const root = mkdtempSync(join(tmpdir(), "fractal-cluster-cmd-"));
    roots.push(root);
    const c = await startClusterCommand(root);
    const room = uniqueRoom("npm-start");
    const token = await session(c.urls[0]!, "alice");
    const sent = await http<{ seq: number }>(`${c.urls[0]}/api/rooms/${room}/messages`, { token, body: { text: "hello from n1", id: "m1" } });
    expect(sent.status).to.equal(200);
    const read = await http<{ messages: { text: string }[] }>(`${c.urls[NODES - 1]}/api/rooms/${room}/messages`, { token });
    expect(read.json.messages.map((m) => m.text)).to.deep.equal(["hello from n1"]);

    process.kill(-c.child.pid!, "SIGINT");
    expect(await c.exited, "the cluster command's exit code").to.equal(0);
    const out = c.output.join("\n");
    expect(out.match(/stopping gracefully/g) ?? [], "nodes that began a graceful stop").to.have.length(NODES);
    expect(out, "a node that took a second signal").not.to.include("second signal");
    for (let i = 1; i <= NODES; i++) expect(out).to.include(`[n${i}] exited (0)`);
    for (let i = 1; i <= NODES; i++) expect(existsSync(join(root, "objects", "nodes", `n${i}`, "clean-stop.json")), `n${i} stopped cleanly`).to.equal(true);
    expect(nodePids(root)).to.deep.equal([]);
  });

  it("leaves no node running when the cluster process itself is killed (SIGKILL): they stop by themselves", async () => {
    const root = mkdtempSync(join(tmpdir(), "fractal-cluster-cmd-"));
    roots.push(root);
    const c = await startClusterCommand(root);
    expect(nodePids(root)).to.have.length(NODES);
    c.child.kill("SIGKILL");
    await c.exited;
    await waitUntil(() => nodePids(root).length === 0, "the orphaned nodes to stop", 30_000, 200);
    for (const u of c.urls) expect(await http(`${u}/healthz`, { timeoutMs: 1000 }).then(() => "answering", () => "gone")).to.equal("gone");
    // Stopped, not died: each wrote the clean-stop marker that only a graceful stop writes.
    for (let i = 1; i <= NODES; i++) expect(existsSync(join(root, "objects", "nodes", `n${i}`, "clean-stop.json")), `n${i} stopped cleanly`).to.equal(true);
  });
});
