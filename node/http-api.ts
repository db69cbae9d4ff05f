/**
 * HTTP API (DESIGN.md): sessions, room messages for bots and integrations, room and cluster info, health,
 * metrics and the web chat. Errors are `{error: {code, message}}` with a fitting status.
 */
import express, { type NextFunction, type Request, type Response } from "express";
import { STATUS_CODES, type Server as HttpServer } from "node:http";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { FractalError, toFractalError, type ClientErrorCode } from "../shards/index.js";
import type { Tokens } from "./auth.js";
import { wireMessage } from "./gateway.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { NodeMetrics } from "./metrics.js";
import { checkRoomId, HistoryPayload, historyQuery, parsePayload, parseSend } from "./protocol.js";
import type { Router } from "./router.js";

const HTTP_STATUS: Record<ClientErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_joined: 409,
  not_found: 404,
  too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

export interface HttpApiDeps {
  readonly self: string;
  /** The map's nodes with what this node knows of them (HTTP address, last heard from). */
  readonly clusterNodes: () => object[];
  /** The /api/admin router (guarded on its own). */
  readonly admin: express.Router;
  readonly router: Router;
  readonly membership: Membership;
  readonly tokens: Tokens;
  readonly metrics: NodeMetrics;
  readonly log: Logger;
  readonly maxTextLength: number;
  /** True once the node serves clients and peers, false before and while stopping. */
  readonly ready: () => boolean;
}

const WEB_ROOT = fileURLToPath(new URL("./web/", import.meta.url));

export function createHttpApi(deps: HttpApiDeps): express.Express {
  const { router, tokens } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "64kb" }));

  app.get("/healthz", (_req, res) => {
    res.json({ ok: true, node: deps.self });
  });
  app.get("/readyz", (_req, res) => {
    const ready = deps.ready();
    res.status(ready ? 200 : 503).json({ ready, node: deps.self });
  });
  app.get("/metrics", async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  app.post("/api/session", (req, res) => {
    const name = (req.body as { name?: unknown } | undefined)?.name;
    if (typeof name !== "string") throw new FractalError("bad_request", "name must be a string");
    res.json({ token: tokens.issue(name), user: name });
  });

  const authed = (req: Request): string => {
    const header = req.get("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    return tokens.verify(match?.[1]);
  };

  app.get("/api/cluster", (req, res) => {
    authed(req);
    res.json({ self: deps.self, epoch: deps.membership.epoch, nodes: deps.clusterNodes() });
  });

  app.get("/api/rooms/:room", async (req, res) => {
    authed(req);
    const room = checkRoomId(req.params.room);
    // `region` (the room's home region) extends the v1 answer compatibly.
    res.json({ ...(await router.info(room)), region: deps.membership.ring.region(room) });
  });

  app.get("/api/rooms/:room/messages", async (req, res) => {
    authed(req);
    const q = req.query;
    const p = parsePayload(HistoryPayload, {
      room: req.params.room,
      ...numberParam("after", q.after),
      ...numberParam("before", q.before),
      ...numberParam("limit", q.limit),
    });
    const messages = await router.history(p.room, historyQuery(p));
    res.json({ messages: messages.map(wireMessage) });
  });

  app.post("/api/rooms/:room/messages", async (req, res) => {
    const user = authed(req);
    const room = checkRoomId(req.params.room);
    const { text, id } = parseSend(req.body, deps.maxTextLength, false);
    const { seq, ts } = await router.send(room, user, id, text);
    res.json({ seq, ts });
  });

  app.use("/api/admin", deps.admin);
  app.use("/api", () => {
    throw new FractalError("not_found", "no such API endpoint");
  });
  app.use(express.static(WEB_ROOT, { index: "index.html", maxAge: "1m" }));

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const e = fromHttpError(err);
    if (e.code === "internal") deps.log.error({ err }, "http request failed");
    deps.metrics.clientErrors.inc({ code: e.clientCode });
    res.status(HTTP_STATUS[e.clientCode]).json({ error: { code: e.clientCode, message: e.message } });
  });
  return app;
}

/** The statuses Node itself gives these parser errors, with the protocol's codes. */
const UNPARSABLE: Record<string, [status: number, code: ClientErrorCode, message: string]> = {
  HPE_HEADER_OVERFLOW: [431, "too_large", "request line or headers too large"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "too_large", "chunk extensions too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "bad_request", "request not received in time"],
  default: [400, "bad_request", "malformed HTTP request"],
};

/**
 * Requests that Node's HTTP parser refuses before any handler sees them (a URL or headers over its 16 KB limit,
 * a malformed request line) get the API's error body too, not Node's bare status line. As Node does itself,
 * only when no response on the connection has begun (the one attached to it, if any, has sent no headers):
 * otherwise the error's bytes would land inside that response, so the connection is just closed.
 */
export function answerUnparsableRequests(server: HttpServer, metrics: NodeMetrics): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (err.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent === true) return void socket.destroy();
    const [status, code, message] = UNPARSABLE[err.code ?? ""] ?? UNPARSABLE.default!;
    metrics.clientErrors.inc({ code });
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/** A query parameter as a number, or bad_request. Missing or empty parameters are left out. */
function numberParam(name: string, value: unknown): Record<string, number> {
  if (value === undefined || value === "") return {};
  if (typeof value !== "string" || !/^\d{1,16}$/.test(value)) throw new FractalError("bad_request", `${name} must be a whole number`);
  return { [name]: Number(value) };
}

/** body-parser's errors carry a `type`, the router's undecodable path parameters are URIErrors: protocol codes. */
function fromHttpError(err: unknown): FractalError {
  if (err instanceof URIError) return new FractalError("bad_request", "malformed percent-encoding in the URL path");
  const type = (err as { type?: unknown } | null)?.type;
  if (type === "entity.too.large") return new FractalError("too_large", "request body too large");
  if (typeof type === "string" && type.startsWith("entity.")) return new FractalError("bad_request", "malformed request body");
  if (type === "charset.unsupported" || type === "encoding.unsupported") return new FractalError("bad_request", "unsupported body encoding");
  return toFractalError(err);
}
