/**
 * System B of the fan-out benchmark: a plain socket.io 4 server with @socket.io/redis-adapter. Three of these
 * processes on one local redis-server form the "peer" cluster the bench compares Fractal with.
 *
 * It speaks the subset of client protocol v1 the bench uses (DESIGN.md):
 *   POST /api/session {name} → {token, user}   (token = name; there is no real auth)
 *   socket auth {token}; `join {room}` → ack {ok, room, seq, members}; `send {room, text, id}` broadcasts
 *   `message {room, seq, id, user, text, ts}` to the room (cluster-wide through redis) and acks {ok, seq, ts};
 *   `leave {room}` → {ok}. `seq` is a per-room counter local to the server that handled the send (no
 *   persistence, no cross-server ordering): that is exactly what a plain socket.io + redis setup gives you.
 *   GET /readyz, /healthz, /metrics (process heap/RSS in Prometheus text).
 *
 * Usage: node --import tsx test/bench/peer-server.ts --id p1 --port 3101 --redis redis://127.0.0.1:16379
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server, type Socket } from "socket.io";

const { values } = parseArgs({
  options: {
    id: { type: "string", default: "p1" },
    port: { type: "string" },
    redis: { type: "string", default: "redis://127.0.0.1:6379" },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write("peer-server: --port is required\n");
  process.exit(2);
}

// Exit with the bench: when the IPC channel to the parent closes (parent died), stop.
if (process.send !== undefined) process.on("disconnect", () => process.exit(0));

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const MAX_TEXT = 4000;

let ready = false;
// Same event-loop lag gauges as prom-client's defaults (reset on every scrape), so the bench reads both alike.
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
const seqs = new Map<string, number>();

function json(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(s) });
  res.end(s);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const b = c as Buffer;
    size += b.length;
    if (size > 65536) throw new Error("too large");
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const http = createServer((req, res) => {
  const url = req.url ?? "/";
  if (req.method === "GET" && url === "/healthz") return json(res, 200, { ok: true });
  if (req.method === "GET" && url === "/readyz") return json(res, ready ? 200 : 503, { ready });
  if (req.method === "GET" && url === "/metrics") {
    const m = process.memoryUsage();
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
    res.end(
      `nodejs_heap_size_used_bytes ${m.heapUsed}\nnodejs_heap_size_total_bytes ${m.heapTotal}\n` +
        `process_resident_memory_bytes ${m.rss}\npeer_sockets ${io.engine.clientsCount}\n` +
        `nodejs_eventloop_lag_p99_seconds ${loopDelay.percentile(99) / 1e9}\n` +
        `nodejs_eventloop_lag_max_seconds ${loopDelay.max / 1e9}\n`,
    );
    loopDelay.reset();
    return;
  }
  if (req.method === "POST" && url === "/api/session") {
    readBody(req)
      .then((body) => {
        let name: unknown;
        try {
          name = (JSON.parse(body) as { name?: unknown }).name;
        } catch {
          name = undefined;
        }
        if (typeof name !== "string" || !NAME_RE.test(name)) {
          return json(res, 400, { error: { code: "bad_request", message: "bad name" } });
        }
        json(res, 200, { token: name, user: name });
      })
      .catch(() => json(res, 413, { error: { code: "too_large", message: "body too large" } }));
    return;
  }
  // socket.io handles its own path; anything else is a 404.
  if (!url.startsWith("/socket.io/")) json(res, 404, { error: { code: "not_found", message: "not found" } });
});

const io = new Server(http, { serveClient: false });

type Ack = (res: unknown) => void;
const err = (code: string, message: string) => ({ ok: false, error: { code, message } });

io.use((socket, next) => {
  const token = (socket.handshake.auth as { token?: unknown } | undefined)?.token;
  if (typeof token !== "string" || !NAME_RE.test(token)) return next(new Error("unauthorized"));
  socket.data.user = token;
  next();
});

function ackOf(a: unknown): Ack {
  return typeof a === "function" ? (a as Ack) : () => undefined;
}

io.on("connection", (socket: Socket) => {
  const user = socket.data.user as string;

  socket.on("join", (p: unknown, a: unknown) => {
    const ack = ackOf(a);
    const room = (p as { room?: unknown } | null)?.room;
    if (typeof room !== "string" || !ROOM_RE.test(room)) return ack(err("bad_request", "bad room"));
    void socket.join(room);
    const local = io.sockets.adapter.rooms.get(room);
    const members = new Set<string>();
    for (const sid of local ?? []) {
      const s = io.sockets.sockets.get(sid);
      if (s !== undefined) members.add(s.data.user as string);
    }
    ack({ ok: true, room, seq: seqs.get(room) ?? 0, members: [...members] });
  });

  socket.on("leave", (p: unknown, a: unknown) => {
    const ack = ackOf(a);
    const room = (p as { room?: unknown } | null)?.room;
    if (typeof room !== "string" || !ROOM_RE.test(room)) return ack(err("bad_request", "bad room"));
    void socket.leave(room);
    ack({ ok: true });
  });

  socket.on("send", (p: unknown, a: unknown) => {
    const ack = ackOf(a);
    const msg = p as { room?: unknown; text?: unknown; id?: unknown } | null;
    const room = msg?.room;
    const text = msg?.text;
    const id = msg?.id;
    if (typeof room !== "string" || !ROOM_RE.test(room)) return ack(err("bad_request", "bad room"));
    if (typeof text !== "string" || text.length === 0) return ack(err("bad_request", "bad text"));
    if (text.length > MAX_TEXT) return ack(err("too_large", "text too long"));
    if (typeof id !== "string" || id.length === 0 || id.length > 64) return ack(err("bad_request", "bad id"));
    if (!socket.rooms.has(room)) return ack(err("not_joined", "join first"));
    const seq = (seqs.get(room) ?? 0) + 1;
    seqs.set(room, seq);
    const ts = Date.now();
    io.to(room).emit("message", { room, seq, id, user, text, ts });
    ack({ ok: true, seq, ts });
  });
});

async function main(): Promise<void> {
  const pub = createClient({ url: values.redis });
  const sub = pub.duplicate();
  pub.on("error", (e: unknown) => process.stderr.write(`redis pub error: ${String(e)}\n`));
  sub.on("error", (e: unknown) => process.stderr.write(`redis sub error: ${String(e)}\n`));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(port, "127.0.0.1", () => resolve());
  });
  ready = true;
  process.stdout.write(`peer ${values.id} listening on 127.0.0.1:${port}\n`);

  const stop = (): void => {
    ready = false;
    io.close();
    void Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`peer-server failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
