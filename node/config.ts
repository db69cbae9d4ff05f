/**
 * Node configuration: one typed object, parsed once from flags, `FRACTAL_*` environment variables and
 * defaults (in that order of precedence). This is the only module that reads `process.env`.
 */
import { resolve, dirname } from "node:path";
import { z } from "zod";
import { DEFAULT_CHECKPOINT_CONCURRENCY, mapFromPeers, NODE_ID_PATTERN, type ClusterMap } from "../shards/index.js";
import { FractalError } from "../shards/index.js";

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration like `1s`, `500ms`, `24h` (a bare number is milliseconds), as milliseconds. */
export const duration = z.string().transform((value, ctx) => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (m === null) {
    ctx.addIssue({ code: "custom", message: "must be a duration like 500ms, 1s, 5m, 24h" });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? "ms"]!);
});

const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** A size like `4MiB`, `512KiB` (a bare number is bytes), as bytes. */
export const byteSize = z.string().transform((value, ctx) => {
  const m = /^(\d+)(B|KiB|MiB|GiB)?$/.exec(value.trim());
  if (m === null) {
    ctx.addIssue({ code: "custom", message: "must be a size like 65536, 512KiB, 4MiB" });
    return z.NEVER;
  }
  return Number(m[1]) * SIZE_UNITS[m[2] ?? "B"]!;
});

/** Every node flag: its name on the command line (the env variable is FRACTAL_<FLAG>), help and default. */
export const NODE_FLAGS = {
  id: { help: "node id, unique in the cluster (e.g. n1)" },
  host: { help: "address to bind HTTP and gRPC on", default: "127.0.0.1" },
  "advertise-host": { help: "address peers and clients reach this node at (default: --host)" },
  "http-port": { help: "HTTP / socket.io port", default: "8080" },
  "grpc-port": { help: "gRPC port for peers", default: "9080" },
  "data-dir": { help: "directory for this node's SQLite file", default: "./data/n1" },
  peers: { help: "first members: id=host:grpcPort,... (itself included); seeds the cluster map if there is none" },
  join: { help: "join a running cluster (the map in the shared object store) instead of --peers; URL of any node" },
  region: { help: "region name of this node", default: "local" },
  "object-store": { help: "object store: a directory path or s3://bucket/prefix (default <data-dir>/../objects)" },
  "s3-endpoint": { help: "endpoint URL of an S3-compatible server" },
  "auth-secret": { help: "secret that signs session tokens (default: generated once, kept in the object store)" },
  "admin-token": { help: "bearer token for /api/admin (default: admin API from loopback only)" },
  "max-text-length": { help: "longest message text, in characters", default: "4000" },
  "forward-timeout-ms": { help: "deadline of a forwarded room operation, ms", default: "3000" },
  "rate-limit": { help: "sends per second per connection (burst: twice as many)", default: "50" },
  "max-rooms-per-connection": { help: "most rooms one connection may be in at once (join beyond it: forbidden)", default: "1000" },
  "client-backlog": {
    help: "most a connection may have waiting to be sent (e.g. 4MiB); a client that reads slower is disconnected and resumes from history when it reconnects",
    default: "4MiB",
  },
  "checkpoint-interval": { help: "how often rooms with new messages are checkpointed (e.g. 1s, 500ms)", default: "1s" },
  "checkpoint-concurrency": { help: "rooms checkpointed at once", default: String(DEFAULT_CHECKPOINT_CONCURRENCY) },
  "checkpoint-retention": { help: "how long replaced checkpoint segments are kept (e.g. 24h, 0s)", default: "24h" },
  "checkpoint-backlog": {
    help: "most messages a room may have acknowledged but not yet checkpointed (writes wait beyond it); a failover skips this many seqs",
    default: "10000",
  },
  "lease-ttl": { help: "how long a node may go without renewing its lease before peers fail it over", default: "5s" },
  durability: {
    help: "local: ack after the owner's commit; replicated: ack once the room's next node on the ring holds it too",
    default: "local",
  },
  "log-level": { help: "pino log level: fatal, error, warn, info, debug, trace, silent", default: "info" },
  "stop-with-stdin": {
    help: "true: stop gracefully when standard input closes (fractal cluster sets it, so its nodes never outlive it)",
    default: "false",
  },
} as const satisfies Record<string, { help: string; default?: string }>;

export type NodeFlag = keyof typeof NODE_FLAGS;
export type RawFlags = Partial<Record<NodeFlag, string | undefined>>;

const schema = z.object({
  id: z.string().regex(NODE_ID_PATTERN, "must be 1-32 of A-Z a-z 0-9 _ . - starting with a letter or digit"),
  host: z.string().min(1),
  "advertise-host": z.string().min(1).optional(),
  "http-port": port,
  "grpc-port": port,
  "data-dir": z.string().min(1),
  peers: z.string().min(1).optional(),
  join: z.url().optional(),
  region: z.string().regex(/^[a-z0-9-]{1,32}$/, "must be 1-32 of a-z 0-9 -"),
  "object-store": z.string().min(1).optional(),
  "s3-endpoint": z.url().optional(),
  "auth-secret": z.string().min(16, "must be at least 16 characters").optional(),
  "admin-token": z.string().min(16, "must be at least 16 characters").optional(),
  "max-text-length": positiveInt.max(1_000_000),
  "forward-timeout-ms": positiveInt.max(600_000),
  "rate-limit": positiveInt.max(1_000_000),
  "max-rooms-per-connection": positiveInt.max(1_000_000),
  "client-backlog": byteSize.refine((b) => b >= 64 * 1024 && b <= 1024 ** 3, "must be between 64KiB and 1GiB"),
  "checkpoint-interval": duration.refine((ms) => ms >= 10, "must be at least 10ms"),
  "checkpoint-concurrency": positiveInt.max(256),
  "checkpoint-retention": duration,
  "checkpoint-backlog": positiveInt.max(100_000_000),
  "lease-ttl": duration.refine((ms) => ms >= 1000, "must be at least 1s"),
  durability: z.enum(["local", "replicated"], "must be local or replicated"),
  "log-level": z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
  "stop-with-stdin": z.enum(["true", "false"], "must be true or false"),
});

export interface NodeConfig {
  readonly id: string;
  readonly host: string;
  readonly advertiseHost: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly dataDir: string;
  /** The map --peers describes (seeds the stored map on a cluster's first start); undefined with --join. */
  readonly map: ClusterMap | undefined;
  /** URL of a running node, when joining (the map is then read from the object store). */
  readonly join: string | undefined;
  readonly leaseTtlMs: number;
  readonly region: string;
  /** A directory path or an s3:// URL. */
  readonly objectStore: string;
  readonly s3Endpoint: string | undefined;
  readonly authSecret: string | undefined;
  readonly adminToken: string | undefined;
  readonly maxTextLength: number;
  readonly forwardTimeoutMs: number;
  readonly rateLimit: number;
  /** Rooms one connection may be in at once. */
  readonly maxRoomsPerConnection: number;
  /** Bytes a connection may have waiting to be sent before the node drops it as too slow. */
  readonly clientBacklogBytes: number;
  readonly checkpointIntervalMs: number;
  readonly checkpointConcurrency: number;
  readonly checkpointRetentionMs: number;
  readonly checkpointBacklog: number;
  /** `local`: acks after the owner's commit; `replicated`: also after the room's replica holds it (DESIGN.md). */
  readonly durability: Durability;
  readonly logLevel: string;
  /** Stop gracefully when standard input closes (the parent that started the node is gone). */
  readonly stopWithStdin: boolean;
}

export type Durability = "local" | "replicated";

export function envName(flag: string): string {
  return `FRACTAL_${flag.toUpperCase().replace(/-/g, "_")}`;
}

/**
 * Builds the node config. Throws FractalError(bad_request) naming every bad value, so the CLI can print one
 * clear line.
 */
export function parseNodeConfig(flags: RawFlags, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const raw: Record<string, string | undefined> = {};
  for (const [flag, spec] of Object.entries(NODE_FLAGS) as [NodeFlag, { default?: string }][]) {
    raw[flag] = flags[flag] ?? env[envName(flag)] ?? spec.default;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `--${i.path.join(".")} ${i.message}`);
    throw new FractalError("bad_request", `bad configuration: ${problems.join("; ")}`);
  }
  const c = parsed.data;
  if (c.peers === undefined && c.join === undefined) {
    throw new FractalError("bad_request", "bad configuration: --peers (e.g. n1=127.0.0.1:9080,n2=127.0.0.1:9081) or --join URL is required");
  }
  const map = c.peers === undefined ? undefined : mapFromPeers(c.peers, c.region);
  if (map !== undefined && c.join === undefined && !map.nodes.some((n) => n.id === c.id)) {
    throw new FractalError("bad_request", `bad configuration: --peers does not list this node's id "${c.id}" (use --join to add a node)`);
  }
  const dataDir = resolve(c["data-dir"]);
  const objectStore = c["object-store"] ?? resolve(dirname(dataDir), "objects");
  if (objectStore.startsWith("s3://") && !/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(objectStore)) {
    throw new FractalError("bad_request", `bad configuration: --object-store "${objectStore}" is not s3://bucket/prefix`);
  }
  return {
    id: c.id,
    host: c.host,
    advertiseHost: c["advertise-host"] ?? c.host,
    httpPort: c["http-port"],
    grpcPort: c["grpc-port"],
    dataDir,
    map,
    join: c.join,
    leaseTtlMs: c["lease-ttl"],
    region: c.region,
    objectStore: objectStore.startsWith("s3://") ? objectStore : resolve(objectStore),
    s3Endpoint: c["s3-endpoint"],
    authSecret: c["auth-secret"],
    adminToken: c["admin-token"],
    maxTextLength: c["max-text-length"],
    forwardTimeoutMs: c["forward-timeout-ms"],
    rateLimit: c["rate-limit"],
    maxRoomsPerConnection: c["max-rooms-per-connection"],
    clientBacklogBytes: c["client-backlog"],
    checkpointIntervalMs: c["checkpoint-interval"],
    checkpointConcurrency: c["checkpoint-concurrency"],
    checkpointRetentionMs: c["checkpoint-retention"],
    checkpointBacklog: c["checkpoint-backlog"],
    durability: c.durability,
    logLevel: c["log-level"],
    stopWithStdin: c["stop-with-stdin"] === "true",
  };
}
