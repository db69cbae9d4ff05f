/**
 * The gRPC Peer service: what other nodes call when they forward room operations to this node as owner.
 * Peer input is validated like client input (invariant 7): a malformed request gets bad_request, never a crash.
 */
import * as grpc from "@grpc/grpc-js";
import { PeerService, type PeerServer, type EventBatch, type SendBatchRequest, type SubscribeCommand } from "../../proto/gen/fractal.js";
import { FractalError, NODE_ID_PATTERN, type RoomEvent } from "../../shards/index.js";
import { USER_NAME_PATTERN } from "../auth.js";
import type { Logger } from "../log.js";
import type { Membership } from "../membership.js";
import type { LocalOwner } from "../owner.js";
import { checkRoomId, checkText, isSendId, MAX_HISTORY_LIMIT } from "../protocol.js";
import type { Caller } from "../room-api.js";
import type { AdminApi } from "../admin.js";
import type { Handoff, OwnershipTransfer } from "../transfer.js";
import type { ReplicaService } from "../replica-service.js";
import { toServiceError } from "./status.js";
import { encodeEventBatch, type EventBatchFrame } from "./wire.js";

export interface PeerServerDeps {
  readonly owner: LocalOwner;
  readonly transfer: OwnershipTransfer;
  readonly admin: AdminApi;
  /** Keeps the replica copies of other owners' rooms (replicated durability). */
  readonly replicas: ReplicaService;
  /** This node's HTTP base URL (told to peers in Ping). */
  readonly http: string;
  readonly membership: Membership;
  readonly log: Logger;
  readonly maxTextLength: number;
  /** Observes each served call (for metrics). */
  readonly observe?: (method: string, seconds: number, code: string) => void;
}

/** Most rooms one HandoffMany call may name. */
export const MAX_HANDOFF_ROOMS = 1000;

function handoffReply(r: Handoff) {
  return { head: r.head, tailSent: r.tail !== undefined, tail: (r.tail ?? []).map((m) => ({ ...m, room: "" })), checkpointed: r.checkpointed ?? 0 };
}

/** Largest gRPC message accepted from peers: a history page of 200 maximal messages fits easily. */
export const MAX_PEER_MESSAGE_BYTES = 8 * 1024 * 1024;

export function createPeerServer(deps: PeerServerDeps): grpc.Server {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_PEER_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_PEER_MESSAGE_BYTES,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(servedPeerService, peerImplementation(deps));
  return server;
}

/** The Peer service as served: Subscribe frames may come already encoded (see encodeEventBatch). */
const servedPeerService: typeof PeerService = {
  ...PeerService,
  subscribe: {
    ...PeerService.subscribe,
    responseSerialize: (frame: EventBatchFrame): Buffer => (Buffer.isBuffer(frame) ? frame : PeerService.subscribe.responseSerialize(frame)),
  },
};

export function peerImplementation(deps: PeerServerDeps): PeerServer {
  const { owner, membership, log } = deps;
  /** The newest Subscribe stream of each peer node: a stale stream closing late must not undo a newer one. */
  const currentStream = new Map<string, object>();

  /** A caller with a newer map than ours: fetch it before judging ownership (the push half of map updates). */
  const seeEpoch = async (c: Caller | undefined): Promise<void> => {
    if (c !== undefined && Number.isInteger(c.epoch) && c.epoch > membership.epoch) {
      await membership.refresh().catch((err: unknown) => log.debug({ err }, "map refresh failed"));
    }
  };

  /** One failed item of a batched call, as its reply carries it (unexpected errors are logged and internal). */
  const itemFailure = (err: unknown, context: { what: string; room?: string }) => {
    const e = err instanceof FractalError ? err : new FractalError("internal", String(err));
    if (e.code === "internal") log.error({ err, room: context.room }, `${context.what} failed`);
    return { errorCode: e.code, errorMessage: e.message, epoch: e.epoch ?? 0 };
  };

  /** Runs the sends of one batch concurrently (they enqueue in order, so seqs follow the batch's order). */
  const sendBatch = async (req: SendBatchRequest) => {
    const c = caller(req.caller);
    await seeEpoch(c);
    if (req.sends.length > 1000) throw new FractalError("bad_request", "at most 1000 sends per batch");
    return Promise.all(
      req.sends.map(async (item) => {
        try {
          if (!isSendId(item.id)) throw new FractalError("bad_request", "bad send id");
          const text = checkText(item.text, deps.maxTextLength);
          const r = await owner.send(c, checkRoomId(item.room), user(item.user), item.id, text);
          return { seq: r.seq, ts: r.ts, errorCode: "", errorMessage: "", epoch: 0 };
        } catch (err) {
          return { seq: 0, ts: 0, ...itemFailure(err, { what: "batched send" }) };
        }
      }),
    );
  };

  /** Runs a unary handler: validation errors and owner errors become Fractal status trailers. */
  function unary<Req, Res>(method: string, handler: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const started = performance.now();
      seeEpoch((call.request as { caller?: Caller }).caller)
        .then(() => handler(call.request))
        .then(
        (res) => {
          deps.observe?.(method, (performance.now() - started) / 1000, "ok");
          callback(null, res);
        },
        (err: unknown) => {
          const e = err instanceof FractalError ? err : new FractalError("internal", String(err));
          if (e.code === "internal") log.error({ err, method }, "peer call failed");
          deps.observe?.(method, (performance.now() - started) / 1000, e.code);
          callback(toServiceError(e));
        },
      );
    };
  }

  return {
    join: unary("join", async (req) => {
      const r = await owner.join(caller(req.caller), checkRoomId(req.room), user(req.user));
      return { seq: r.seq, members: r.members };
    }),
    leave: unary("leave", async (req) => {
      await owner.leave(caller(req.caller), checkRoomId(req.room), user(req.user));
      return {};
    }),
    send: unary("send", async (req) => {
      if (!isSendId(req.id)) throw new FractalError("bad_request", "bad send id");
      const text = checkText(req.text, deps.maxTextLength);
      return owner.send(caller(req.caller), checkRoomId(req.room), user(req.user), req.id, text);
    }),
    sendStream: (stream) => {
      stream.on("data", (req: SendBatchRequest) => {
        void (async () => {
          const results = await sendBatch(req);
          stream.write({ batch: req.batch, results });
        })().catch((err: unknown) => {
          const e = err instanceof FractalError ? err : new FractalError("internal", String(err));
          const failed = { seq: 0, ts: 0, errorCode: e.code, errorMessage: e.message, epoch: e.epoch ?? 0 };
          stream.write({ batch: req.batch, results: req.sends.map(() => failed) });
        });
      });
      stream.on("end", () => stream.end());
      stream.on("error", () => {});
    },
    history: unary("history", async (req) => {
      if (req.limit < 1 || req.limit > MAX_HISTORY_LIMIT) throw new FractalError("bad_request", "bad history limit");
      const messages = await owner.history(caller(req.caller), checkRoomId(req.room), {
        ...(req.after > 0 || req.before === 0 ? { after: req.after } : {}),
        ...(req.before > 0 ? { before: req.before } : {}),
        limit: req.limit,
      });
      return { messages };
    }),
    typing: unary("typing", async (req) => {
      await owner.typing(caller(req.caller), checkRoomId(req.room), user(req.user));
      return {};
    }),
    roomInfo: unary("roomInfo", async (req) => owner.info(caller(req.caller), checkRoomId(req.room))),
    ping: unary("ping", async () => ({ node: membership.self, epoch: membership.epoch, http: deps.http })),
    checkpoint: unary("checkpoint", async (req) =>
      deps.admin.checkpoint(caller(req.caller), req.room === "" ? undefined : checkRoomId(req.room)),
    ),
    nodeStatus: unary("nodeStatus", async (req) => {
      const s = await deps.admin.nodeStatus(caller(req.caller), {
        rooms: req.rooms,
        ...(req.room === "" ? {} : { room: checkRoomId(req.room) }),
      });
      return {
        ...s,
        rooms: s.rooms.map((r) => ({ ...r, lastCheckpointAt: r.lastCheckpointAt ?? 0 })),
      };
    }),
    handoff: unary("handoff", async (req) => {
      const room = checkRoomId(req.room);
      return handoffReply(await deps.transfer.handOff(caller(req.caller), room, { since: req.since, sinceId: req.sinceId, sinceTs: req.sinceTs }));
    }),
    handoffMany: unary("handoffMany", async (req) => {
      const c = caller(req.caller);
      if (req.rooms.length > MAX_HANDOFF_ROOMS) throw new FractalError("bad_request", `at most ${MAX_HANDOFF_ROOMS} rooms per handoff`);
      // Concurrently: each room waits only for its own in-flight sends (and its own checkpoint, if any).
      return {
        outcomes: await Promise.all(
          req.rooms.map(async (item) => {
            try {
              const r = await deps.transfer.handOff(c, checkRoomId(item.room), { since: item.since, sinceId: item.sinceId, sinceTs: item.sinceTs });
              return { reply: handoffReply(r), errorCode: "", errorMessage: "", epoch: 0 };
            } catch (err) {
              return { reply: undefined, ...itemFailure(err, { what: "handoff", room: item.room }) };
            }
          }),
        ),
      };
    }),
    replicate: unary("replicate", async (req) => {
      const answers = await deps.replicas.replicate(caller(req.caller), req.rooms);
      return { rooms: answers.map((a) => ({ status: a.status, head: a.head, errorMessage: a.message, epoch: a.epoch })) };
    }),
    replicaCopy: unary("replicaCopy", async (req) => {
      const c = await deps.replicas.copy(caller(req.caller), req.room, req.after, req.limit);
      return { ...c, messages: c.messages.map((m) => ({ ...m, room: "" })) };
    }),
    listRooms: unary("listRooms", async (req) => ({ rooms: await deps.admin.listRooms(caller(req.caller)) })),
    takeOver: (call) => {
      const req = call.request;
      (async () => {
        const c = caller(req.caller);
        await deps.admin.takeOver(c, req.rooms.map(checkRoomId), req.concurrency || 8, (r) => call.write(r), { prepare: req.prepare });
        call.end();
      })().catch((err: unknown) => call.emit("error", toServiceError(err)));
    },
    restore: (call) => {
      const req = call.request;
      (async () => {
        const result = await deps.admin.restore(caller(req.caller), checkRoomId(req.room), req.toSeq === 0 ? undefined : req.toSeq, (p) =>
          call.write({ ...p, done: false, head: 0 }),
        );
        call.write({ segmentsDone: 0, segmentsTotal: 0, messages: result.restored, target: result.head, done: true, head: result.head, phase: "write" });
        call.end();
      })().catch((err: unknown) => {
        if (!(err instanceof FractalError) || err.code === "internal") log.error({ err }, "restore failed");
        call.emit("error", toServiceError(err));
      });
    },
    subscribe: (stream) => serveSubscriptions(stream, deps, currentStream),
  };
}

/**
 * One Subscribe stream per peer node. Events of all the rooms that peer follows are queued and written as one
 * EventBatch per event-loop turn, so a burst of commits costs one frame per peer, not one per message.
 */
function serveSubscriptions(
  stream: grpc.ServerDuplexStream<SubscribeCommand, EventBatch>,
  deps: PeerServerDeps,
  currentStream: Map<string, object>,
): void {
  const { owner, log } = deps;
  let peer: Caller | undefined;
  const rooms = new Set<string>();
  let queue: RoomEvent[] = [];
  let closed = false;

  const flush = () => {
    const events = queue;
    queue = [];
    // Already encoded: the serializer above passes the bytes through (the stream's type says EventBatch).
    if (!closed && events.length > 0) stream.write(encodeEventBatch(events) as unknown as EventBatch);
  };
  const listener = (event: RoomEvent) => {
    if (queue.length === 0) setImmediate(flush);
    queue.push(event);
  };
  const close = () => {
    if (closed) return;
    closed = true;
    if (peer !== undefined && currentStream.get(peer.node) === stream) {
      currentStream.delete(peer.node);
      owner.forgetNode(peer.node);
    }
    log.debug({ peer: peer?.node, rooms: rooms.size }, "subscription stream closed");
  };

  stream.on("data", (cmd: SubscribeCommand) => {
    try {
      if (peer === undefined) {
        peer = caller(cmd.caller);
        currentStream.set(peer.node, stream);
        log.debug({ peer: peer.node }, "subscription stream opened");
      }
      for (const room of cmd.subscribe) {
        try {
          owner.subscribe(peer, checkRoomId(room), listener);
          rooms.add(room);
        } catch (err) {
          const code = err instanceof FractalError ? err.code : "internal";
          listener({ room: String(room).slice(0, 64), type: "refused", code });
        }
      }
      for (const room of cmd.unsubscribe) {
        if (!rooms.delete(room)) continue;
        owner.unsubscribe(peer, room);
      }
    } catch (err) {
      stream.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  });
  stream.on("end", () => {
    close();
    stream.end();
  });
  stream.on("error", close);
  stream.on("close", close);
  stream.on("cancelled", close);
}

function caller(c: { node: string; epoch: number } | undefined): Caller {
  if (c === undefined || !NODE_ID_PATTERN.test(c.node)) throw new FractalError("bad_request", "missing or bad caller");
  return { node: c.node, epoch: c.epoch };
}

function user(u: string): string {
  if (!USER_NAME_PATTERN.test(u)) throw new FractalError("bad_request", "bad user name");
  return u;
}
