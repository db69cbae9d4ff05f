/**
 * `fractal admin <command> --node URL`: operator commands against any running node, human output by default
 * and `--json` for scripts. Never prompts.
 */
import type { Command } from "commander";

interface AdminFlags {
  node: string;
  json?: boolean;
  name: string;
}

export function adminCommand(program: Command): void {
  const admin = program.command("admin").description("operate a running cluster through any node");
  admin
    .command("status")
    .description("cluster map, epoch and per-node readiness")
    .option("--node <url>", "any node's HTTP URL", "http://127.0.0.1:8080")
    .option("--json", "machine-readable output")
    .option("--name <user>", "user name for the admin session", "admin")
    .action(status);
}

async function status(flags: AdminFlags): Promise<void> {
  const base = flags.node.replace(/\/+$/, "");
  const token = await session(base, flags.name);
  const cluster = (await getJson(`${base}/api/cluster`, token)) as {
    self: string;
    epoch: number;
    nodes: { id: string; grpc: string; http: string; region: string; state: string }[];
  };
  const nodes = await Promise.all(
    cluster.nodes.map(async (n) => {
      const url = n.http || (n.id === cluster.self ? base : "");
      const ready = url === "" ? undefined : await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
      return { ...n, ready };
    }),
  );
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ self: cluster.self, epoch: cluster.epoch, nodes }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`cluster epoch ${cluster.epoch} (asked ${cluster.self})\n`);
  const rows = [["NODE", "STATE", "READY", "GRPC", "HTTP", "REGION"]];
  for (const n of nodes) rows.push([n.id, n.state, n.ready === undefined ? "?" : n.ready ? "yes" : "no", n.grpc, n.http || "-", n.region]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join("  ")}\n`);
}

async function session(base: string, name: string): Promise<string> {
  const res = await fetch(`${base}/api/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  }).catch((err: unknown) => {
    throw new Error(`cannot reach ${base}: ${(err as Error).message}`);
  });
  const body = (await res.json()) as { token?: string; error?: { code: string; message: string } };
  if (!res.ok || body.token === undefined) throw new Error(`session refused: ${body.error?.message ?? res.status}`);
  return body.token;
}

async function getJson(url: string, token: string): Promise<unknown> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { error?: { code: string; message: string } };
  if (!res.ok) throw new Error(`${url}: ${body.error?.code ?? res.status} ${body.error?.message ?? ""}`);
  return body;
}
