/**
 * HTTP side of `fractal admin`: `/api/admin/*` on every node.
 *
 * Access: with `--admin-token` set, requests must carry `Authorization: Bearer <admin token>`; without it,
 * only requests from loopback are served (a local cluster's operator), and everything else is `forbidden`.
 * Restore streams its progress as NDJSON lines (`{"progress": ...}` then `{"result": ...}` or `{"error": ...}`).
 */
import express, { type Request, type Response } from "express";
import { timingSafeEqual } from "node:crypto";
import { FractalError, toFractalError } from "../shards/index.js";
import type { ClusterAdmin } from "./admin.js";
import { DEFAULT_MAX_CONCURRENT, type Rebalancer, type TargetKind } from "./rebalance.js";
import { NODE_ID_PATTERN } from "../shards/index.js";
import { checkRoomId } from "./protocol.js";

export function createAdminApi(admin: ClusterAdmin, rebalancer: Rebalancer, adminToken: string | undefined): express.Router {
  const router = express.Router();
  router.use((req, _res, next) => {
    authorize(req, adminToken);
    next();
  });

  router.get("/status", async (req, res) => {
    const room = typeof req.query.room === "string" && req.query.room !== "" ? checkRoomId(req.query.room) : undefined;
    res.json(await admin.status({ rooms: req.query.rooms === "1" || req.query.rooms === "true", room }));
  });

  /** A room's placement: home region, owner, head, members. */
  router.get("/room", async (req, res) => {
    res.json(await admin.room(checkRoomId(req.query.room)));
  });

  router.post("/checkpoint", async (req, res) => {
    const room = (req.body as { room?: unknown } | undefined)?.room;
    res.json(await admin.checkpoint(room === undefined || room === null ? undefined : checkRoomId(room)));
  });

  router.post("/restore", async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as { room?: unknown; toSeq?: unknown };
    const room = checkRoomId(body.room);
    if (body.toSeq !== undefined && (typeof body.toSeq !== "number" || !Number.isInteger(body.toSeq) || body.toSeq < 0)) {
      throw new FractalError("bad_request", "toSeq must be a whole number");
    }
    res.status(200).type("application/x-ndjson");
    const line = (o: unknown) => res.write(`${JSON.stringify(o)}\n`);
    try {
      const result = await admin.restore(room, body.toSeq as number | undefined, (progress) => line({ progress }));
      line({ result });
    } catch (err) {
      const e = toFractalError(err);
      line({ error: { code: e.clientCode, message: e.message } });
    }
    res.end();
  });
  /**
   * Rebalance (or drain, with `drain: id`): `{dryRun, maxConcurrent}`. Streams NDJSON: `{plan}` first, then
   * `{progress}` lines and `{result}` (or `{error}`).
   */
  router.post("/rebalance", async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as { dryRun?: unknown; maxConcurrent?: unknown; drain?: unknown; moveRoom?: { room?: unknown; region?: unknown } };
    const maxConcurrent = body.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
    if (typeof maxConcurrent !== "number" || !Number.isInteger(maxConcurrent) || maxConcurrent < 1 || maxConcurrent > 256) {
      throw new FractalError("bad_request", "maxConcurrent must be a whole number from 1 to 256");
    }
    if (body.drain !== undefined && (typeof body.drain !== "string" || !NODE_ID_PATTERN.test(body.drain))) {
      throw new FractalError("bad_request", "drain must be a node id");
    }
    let target: TargetKind = body.drain === undefined ? { kind: "rebalance" } : { kind: "drain", node: body.drain };
    if (body.moveRoom !== undefined) {
      const region = body.moveRoom?.region;
      if (typeof region !== "string" || !/^[a-z0-9-]{1,32}$/.test(region)) throw new FractalError("bad_request", "region must be 1-32 of a-z 0-9 -");
      target = { kind: "home", room: checkRoomId(body.moveRoom?.room), region };
    }
    const plan = await rebalancer.plan(target);
    res.status(200).type("application/x-ndjson");
    const line = (o: unknown) => res.write(`${JSON.stringify(o)}\n`);
    line({ plan });
    if (body.dryRun === true) return void res.end();
    try {
      line({ result: await rebalancer.execute(plan, target, maxConcurrent, (progress) => line({ progress })) });
    } catch (err) {
      const e = toFractalError(err);
      line({ error: { code: e.clientCode, message: e.message } });
    }
    res.end();
  });
  return router;
}

function authorize(req: Request, adminToken: string | undefined): void {
  if (adminToken !== undefined) {
    const given = Buffer.from(/^Bearer\s+(\S+)$/i.exec(req.get("authorization") ?? "")?.[1] ?? "");
    const expected = Buffer.from(adminToken);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new FractalError("unauthorized", "admin token required");
    return;
  }
  const address = req.socket.remoteAddress ?? "";
  const loopback = address === "::1" || /^(::ffff:)?127\./.test(address);
  if (!loopback) throw new FractalError("forbidden", "admin API is served to loopback only unless --admin-token is set");
}
