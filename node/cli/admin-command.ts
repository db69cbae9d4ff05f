/**
 * `fractal admin <command> --node URL`: operator commands against any running node. Human output by
 * default, `--json` for scripts; never prompts; exit code 0 on success, non-zero otherwise.
 */
import { Option, type Command } from "commander";
import { SingleBar, Presets } from "cli-progress";
import { DEFAULT_MAX_CONCURRENT } from "../rebalance.js";
import { adminJson, adminRequest, adminTarget, ndjson, table, type AdminTarget } from "./admin-client.js";

interface CommonFlags {
  node: string;
  json?: boolean;
  adminToken?: string;
}

export function adminCommand(program: Command): void {
  const admin = program.command("admin").description("operate a running cluster through any node");
  const common = (cmd: Command) =>
    cmd
      .option("--node <url>", "any node's HTTP URL", "http://127.0.0.1:8080")
      .option("--json", "machine-readable output")
      .addOption(new Option("--admin-token <token>", "admin bearer token, if the nodes require one").env("FRACTAL_ADMIN_TOKEN"));

  common(admin.command("status").description("nodes, epoch, clients, rooms and checkpoint lag"))
    .option("--rooms", "per-room checkpoint status")
    .option("--room <room>", "one room's checkpoint status")
    .action(status);
  common(admin.command("checkpoint").description("checkpoint now: one room, or every room with new messages"))
    .option("--room <room>", "only this room")
    .action(checkpoint);
  common(admin.command("rebalance").description("move rooms so joining nodes take their share (minimal movement)"))
    .option("--dry-run", "print the plan and change nothing")
    .option("--max-concurrent <n>", "rooms taken over at once per node", String(DEFAULT_MAX_CONCURRENT))
    .action((flags: CommonFlags & MoveFlags) => move(flags, undefined));
  common(admin.command("drain").description("move every room off a node so it can be stopped"))
    .argument("<id>", "the node to drain")
    .option("--dry-run", "print the plan and change nothing")
    .option("--max-concurrent <n>", "rooms taken over at once per node", String(DEFAULT_MAX_CONCURRENT))
    .action((id: string, flags: CommonFlags & MoveFlags) => move(flags, id));
  common(admin.command("room").description("a room's home region, owner, head and members"))
    .argument("<room>", "the room")
    .action(roomInfo);
  common(admin.command("move-room").description("move a room's home to another region (and an owner there)"))
    .argument("<room>", "the room")
    .requiredOption("--region <region>", "the new home region")
    .action((room: string, flags: CommonFlags & { region: string }) => move({ ...flags, maxConcurrent: "1" }, undefined, { room, region: flags.region }));
  common(admin.command("restore").description("rebuild a room from object storage, optionally up to a seq"))
    .requiredOption("--room <room>", "the room to restore")
    .option("--to-seq <n>", "restore up to this seq (default: the newest checkpoint)")
    .action(restore);
}

interface NodeRow {
  node: string;
  state: string;
  reachable: boolean;
  error?: string;
  http?: string;
  region?: string;
  /** Seconds since the node last renewed its lease (by its clock), and the lease's TTL; null without a lease. */
  leaseAgeSeconds?: number | null;
  leaseTtlSeconds?: number | null;
  clients?: number;
  roomsOwned?: number;
  dirtyRooms?: number;
  lagMessages?: number;
  lagSeconds?: number;
  gated?: string[];
  durability?: string;
  rooms?: { room: string; head: number; checkpointed: number; lagSeq: number; lagSeconds: number; lastCheckpointAt?: number }[];
}

async function status(flags: CommonFlags & { rooms?: boolean; room?: string }): Promise<void> {
  const t = adminTarget(flags.node, flags.adminToken);
  const q = new URLSearchParams();
  if (flags.rooms) q.set("rooms", "1");
  if (flags.room) q.set("room", flags.room);
  const s = await adminJson<{ self: string; epoch: number; nodes: NodeRow[] }>(t, "GET", `/status?${q}`);
  if (flags.json) return print(s);
  let out = `cluster epoch ${s.epoch} (asked ${s.self})\n\n`;
  const rows = [["NODE", "STATE", "UP", "LEASE AGE", "DURABILITY", "CLIENTS", "ROOMS", "CKPT LAG (rooms/msgs/s)", "REBUILDING", "HTTP"]];
  for (const n of s.nodes) {
    const lease = n.leaseAgeSeconds == null ? "none" : `${n.leaseAgeSeconds.toFixed(1)}s/${n.leaseTtlSeconds}s`;
    rows.push(
      n.reachable
        ? [n.node, n.state, "yes", lease, n.durability || "local", String(n.clients), String(n.roomsOwned), `${n.dirtyRooms}/${n.lagMessages}/${n.lagSeconds!.toFixed(1)}`, String(n.gated!.length), n.http ?? ""]
        : [n.node, n.state, "NO", lease, "-", "-", "-", "-", "-", n.error ?? ""],
    );
  }
  out += table(rows);
  const rooms = s.nodes.flatMap((n) => (n.rooms ?? []).map((r) => ({ ...r, node: n.node })));
  if (rooms.length > 0) {
    const rr = [["ROOM", "OWNER", "HEAD", "CHECKPOINTED", "LAG SEQ", "LAG S", "LAST CHECKPOINT"]];
    for (const r of rooms) {
      rr.push([r.room, r.node, String(r.head), String(r.checkpointed), String(r.lagSeq), r.lagSeconds.toFixed(1), r.lastCheckpointAt ? new Date(r.lastCheckpointAt).toISOString() : "never"]);
    }
    out += `\n${table(rr)}`;
  }
  for (const n of s.nodes) for (const g of n.gated ?? []) out += `${n.node}: ${g}\n`;
  process.stdout.write(out);
  if (s.nodes.some((n) => !n.reachable)) process.exitCode = 3;
}

async function checkpoint(flags: CommonFlags & { room?: string }): Promise<void> {
  const t = adminTarget(flags.node, flags.adminToken);
  const started = Date.now();
  const r = await adminJson<{ rooms: number; messages: number; failed: number; nodes: number }>(t, "POST", "/checkpoint", flags.room ? { room: flags.room } : {});
  if (flags.json) print({ ...r, ms: Date.now() - started });
  else process.stdout.write(`checkpointed ${r.messages} messages in ${r.rooms} rooms on ${r.nodes} node(s) in ${Date.now() - started} ms${r.failed ? `; ${r.failed} rooms FAILED` : ""}\n`);
  if (r.failed > 0) process.exitCode = 1;
}

async function restore(flags: CommonFlags & { room: string; toSeq?: string }): Promise<void> {
  const t: AdminTarget = adminTarget(flags.node, flags.adminToken);
  let toSeq: number | undefined;
  if (flags.toSeq !== undefined) {
    toSeq = Number(flags.toSeq);
    if (!Number.isInteger(toSeq) || toSeq < 0) throw new Error("--to-seq must be a whole number");
  }
  const res = await adminRequest(t, "POST", "/restore", { room: flags.room, ...(toSeq !== undefined ? { toSeq } : {}) });
  const started = Date.now();
  const bar = !flags.json && process.stderr.isTTY ? new SingleBar({ format: "{phase} {room} [{bar}] {value}/{total} segments | {messages} messages | {duration}s", hideCursor: true }, Presets.shades_classic) : undefined;
  let barStarted = "";
  for await (const line of ndjson(res)) {
    const l = line as {
      progress?: { phase: string; segmentsDone: number; segmentsTotal: number; messages: number; target: number };
      result?: unknown;
      error?: { code: string; message: string };
    };
    if (l.progress) {
      const p = l.progress;
      if (flags.json) print({ progress: p });
      else if (bar) {
        if (barStarted !== p.phase) {
          if (barStarted) bar.stop();
          bar.start(p.segmentsTotal, 0, { room: flags.room, messages: 0, phase: p.phase });
          barStarted = p.phase;
        }
        bar.update(p.segmentsDone, { messages: p.messages, phase: p.phase });
      } else process.stderr.write(`${p.phase} segment ${p.segmentsDone}/${p.segmentsTotal}: ${p.messages} messages\n`);
    } else if (l.result) {
      bar?.stop();
      const r = l.result as { room: string; restored: number; head: number };
      if (flags.json) print({ result: { ...r, ms: Date.now() - started } });
      else process.stdout.write(`restored room ${r.room}: ${r.restored} messages, head is now ${r.head} (${Date.now() - started} ms)\n`);
      return;
    } else if (l.error) {
      bar?.stop();
      throw new Error(`${l.error.code}: ${l.error.message}`);
    }
  }
  bar?.stop();
  throw new Error("the node ended the restore without a result");
}

interface MoveFlags {
  dryRun?: boolean;
  maxConcurrent: string;
}

interface Plan {
  fromEpoch: number;
  target: { epoch: number; nodes: { id: string; state: string }[] };
  moves: { room: string; from?: string; to: string; messages: number }[];
  rooms: number;
  share: Record<string, { before: number; after: number }>;
  resumed: boolean;
}

async function roomInfo(room: string, flags: CommonFlags): Promise<void> {
  const t = adminTarget(flags.node, flags.adminToken);
  const r = await adminJson<{ room: string; region: string; pinned: boolean; owner: string; seq: number; members: string[]; epoch: number }>(
    t,
    "GET",
    `/room?room=${encodeURIComponent(room)}`,
  );
  if (flags.json) return print(r);
  process.stdout.write(
    `room ${r.room}: home region ${r.region}${r.pinned ? " (pinned)" : ""}, owner ${r.owner}, head ${r.seq}, ${r.members.length} present${r.members.length ? `: ${r.members.join(", ")}` : ""} (epoch ${r.epoch})\n`,
  );
}

async function move(flags: CommonFlags & MoveFlags, drain: string | undefined, moveRoom?: { room: string; region: string }): Promise<void> {
  const t = adminTarget(flags.node, flags.adminToken);
  const maxConcurrent = Number(flags.maxConcurrent);
  if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1 || maxConcurrent > 256) throw new Error("--max-concurrent must be a whole number from 1 to 256");
  const res = await adminRequest(t, "POST", "/rebalance", {
    dryRun: flags.dryRun === true,
    maxConcurrent,
    ...(drain !== undefined ? { drain } : {}),
    ...(moveRoom !== undefined ? { moveRoom } : {}),
  });
  const started = Date.now();
  let bar: SingleBar | undefined;
  for await (const line of ndjson(res)) {
    const l = line as { plan?: Plan; progress?: { phase?: string; done: number; total: number; messages: number; failed: number; elapsedMs: number }; result?: Record<string, unknown>; error?: { code: string; message: string } };
    if (l.plan) {
      if (flags.json) print({ plan: l.plan });
      else process.stdout.write(describePlan(l.plan, drain));
      if (!flags.json && !flags.dryRun && l.plan.moves.length > 0 && process.stderr.isTTY) {
        bar = new SingleBar({ format: "{phase} [{bar}] {value}/{total} rooms | {messages} messages | {duration}s | ETA {eta}s", hideCursor: true }, Presets.shades_classic);
        bar.start(l.plan.moves.length, 0, { messages: 0, phase: "copying" });
      }
    } else if (l.progress) {
      if (flags.json) print({ progress: l.progress });
      else if (bar) bar.update(l.progress.done, { messages: l.progress.messages, phase: l.progress.phase === "prepare" ? "copying" : "moving" });
      else if (l.progress.done === l.progress.total || l.progress.done % 100 === 0) {
        process.stderr.write(`${l.progress.phase === "prepare" ? "copied" : "moved"} ${l.progress.done}/${l.progress.total} rooms\n`);
      }
    } else if (l.result) {
      bar?.stop();
      const r = l.result as { done: number; total: number; failed: number; messages: number; epoch: number; pauseMs: { p50: number; p99: number; max: number } };
      if (flags.json) print({ result: { ...r, ms: Date.now() - started } });
      else {
        process.stdout.write(
          `moved ${r.done - r.failed}/${r.total} rooms (${r.messages} messages) at epoch ${r.epoch} in ${Date.now() - started} ms; write pause per room p50 ${r.pauseMs.p50} ms, p99 ${r.pauseMs.p99} ms, max ${r.pauseMs.max} ms\n`,
        );
        if (drain !== undefined && r.failed === 0) process.stdout.write(`node ${drain} owns no rooms now; stop it with SIGTERM\n`);
      }
      if (r.failed > 0) {
        process.stderr.write(`${r.failed} rooms could not be moved; run the command again to finish\n`);
        process.exitCode = 1;
      }
      return;
    } else if (l.error) {
      bar?.stop();
      throw new Error(`${l.error.code}: ${l.error.message}`);
    }
  }
  bar?.stop();
  if (!flags.dryRun) throw new Error("the node ended the rebalance without a result");
}

function describePlan(p: Plan, drain: string | undefined): string {
  let out = p.resumed
    ? `resuming: the map already is at epoch ${p.fromEpoch}; finishing ${p.moves.length} takeovers\n`
    : p.moves.length === 0 && p.target.epoch === p.fromEpoch
      ? `nothing to do: ${drain ? `node ${drain} is already draining` : "no joining nodes"}\n`
      : `plan: epoch ${p.fromEpoch} -> ${p.target.epoch}; ${p.moves.length} of ${p.rooms} rooms move (${p.moves.reduce((a, m) => a + m.messages, 0)} messages)\n`;
  const rows = [["NODE", "STATE AFTER", "ROOMS BEFORE", "ROOMS AFTER", "SHARE AFTER"]];
  const total = Math.max(1, Object.values(p.share).reduce((a, s) => a + s.after, 0));
  for (const n of p.target.nodes) {
    const s = (Object.hasOwn(p.share, n.id) ? p.share[n.id] : undefined) ?? { before: 0, after: 0 };
    rows.push([n.id, n.state, String(s.before), String(s.after), `${((s.after / total) * 100).toFixed(1)}%`]);
  }
  out += table(rows);
  if (p.moves.length > 0) {
    const shown = p.moves.slice(0, 20);
    const mr = [["ROOM", "FROM", "TO", "MESSAGES"], ...shown.map((m) => [m.room, m.from ?? "-", m.to, String(m.messages)])];
    out += `\n${table(mr)}`;
    if (p.moves.length > shown.length) out += `... and ${p.moves.length - shown.length} more (--json lists all)\n`;
  }
  return out;
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}
