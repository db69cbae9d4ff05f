/**
 * The connection to one peer node: unary room operations with deadlines, and the single Subscribe stream
 * that carries the events of every room this node follows on that peer. The stream reconnects with backoff
 * while any room is followed; on every (re)connect each room gets a fresh head event from the owner.
 */
import * as grpc from "@grpc/grpc-js";
import {
  PeerClient,
  type EventBatch,
  type HandoffReply,
  type SendBatchReply,
  type SendBatchRequest,
  type SendResult,
  type SubscribeCommand,
} from "../../proto/gen/fractal.js";
import { FractalError, isErrorCode } from "../../shards/index.js";
import type { CheckpointRoundResult, HistoryQuery, ReplicaItem, RestoreProgress, RestoreResult, RoomListener, SendRecord, StoredMessage } from "../../shards/index.js";
import type { AdminApi, NodeStatus, StatusQuery } from "../admin.js";
import type { Logger } from "../log.js";
import type { Caller, JoinResult, OwnerApi, OwnerEvents, RoomInfo } from "../room-api.js";
import type { ReplicaAnswer, ReplicaPeer } from "../replicator.js";
import type { ReplicaCopy } from "../replica-service.js";
import type { CopyEnd, Handoff } from "../transfer.js";
import { MAX_HANDOFF_ROOMS, MAX_PEER_MESSAGE_BYTES } from "./server.js";
import { fromServiceError } from "./status.js";
import { fromWire } from "./wire.js";

const RECONNECT_MIN_MS = 100;
/** Checkpointing every dirty room of a node can take a while against a slow store. */
const ADMIN_TIMEOUT_MS = 120_000;
const RECONNECT_MAX_MS = 2000;

type Unary<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

interface QueuedSend {
  readonly caller: Caller;
  readonly item: { room: string; user: string; id: string; text: string };
  readonly resolve: (r: SendRecord) => void;
  readonly reject: (err: unknown) => void;
}

interface QueuedHandoff {
  readonly caller: Caller;
  readonly room: string;
  readonly copy: CopyEnd;
  readonly resolve: (h: Handoff) => void;
  readonly reject: (err: unknown) => void;
}

function handoffOf(room: string, r: HandoffReply): Handoff {
  return { head: r.head, tail: r.tailSent ? r.tail.map((m) => ({ ...m, room })) : undefined, checkpointed: r.checkpointed };
}

export class PeerLink implements OwnerApi, OwnerEvents, AdminApi, ReplicaPeer {
  private readonly client: PeerClient;
  private readonly rooms = new Map<string, RoomListener>();
  private sendQueue: QueuedSend[] = [];
  private sends: grpc.ClientDuplexStream<SendBatchRequest, SendBatchReply> | undefined;
  private readonly batches = new Map<number, { queued: QueuedSend[]; timer: NodeJS.Timeout }>();
  private nextBatch = 0;
  private stream: grpc.ClientDuplexStream<SubscribeCommand, EventBatch> | undefined;
  private caller: Caller | undefined;
  private reconnectDelay = RECONNECT_MIN_MS;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private handoffQueue: QueuedHandoff[] = [];
  private handoffManySupported = true;

  constructor(
    readonly peer: string,
    readonly address: string,
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {
    this.client = new PeerClient(address, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_PEER_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_PEER_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
    });
  }

  async join(caller: Caller, room: string, user: string): Promise<JoinResult> {
    const r = await this.call(this.client.join, { caller, room, user });
    return { seq: r.seq, members: r.members };
  }

  async leave(caller: Caller, room: string, user: string): Promise<void> {
    await this.call(this.client.leave, { caller, room, user });
  }

  /**
   * Sends made in the same event-loop turn travel to the owner in one SendBatch call: one gRPC call per
   * turn and owner instead of one per message, which is most of the forwarding cost under load.
   */
  send(caller: Caller, room: string, user: string, id: string, text: string): Promise<SendRecord> {
    return new Promise((resolve, reject) => {
      if (this.sendQueue.length === 0) setImmediate(() => this.flushSends());
      this.sendQueue.push({ caller, item: { room, user, id, text }, resolve, reject });
    });
  }

  private flushSends(): void {
    const queued = this.sendQueue;
    this.sendQueue = [];
    if (queued.length === 0) return;
    const batch = ++this.nextBatch;
    const timer = setTimeout(() => {
      this.settleBatch(batch, new FractalError("unavailable", `node ${this.peer} did not answer in time`));
      // A stream that does not answer is not trusted with more batches: start a fresh one next time.
      const stale = this.sends;
      this.sends = undefined;
      stale?.cancel();
    }, this.timeoutMs);
    this.batches.set(batch, { queued, timer });
    // The newest caller epoch of the batch speaks for all of it (epochs only grow).
    const caller = queued[queued.length - 1]!.caller;
    this.sendStream().write({ caller, sends: queued.map((q) => q.item), batch });
  }

  /** The long-lived stream that carries forwarded sends; reopened on the next send after it breaks. */
  private sendStream(): grpc.ClientDuplexStream<SendBatchRequest, SendBatchReply> {
    if (this.sends !== undefined) return this.sends;
    const stream = this.client.sendStream(new grpc.Metadata({ waitForReady: true }));
    this.sends = stream;
    stream.on("data", (reply: SendBatchReply) => this.settleBatch(reply.batch, reply.results));
    const broken = (why: string) => {
      if (this.sends === stream) this.sends = undefined;
      // Batches in flight on a broken stream may or may not have committed: the client retries with the
      // same id, which is exactly what idempotent sends are for.
      for (const batch of [...this.batches.keys()]) this.settleBatch(batch, new FractalError("unavailable", `node ${this.peer}: ${why}`));
    };
    stream.on("error", (err: grpc.ServiceError) => broken(fromServiceError(err, this.peer).message));
    stream.on("end", () => broken("send stream ended"));
    return stream;
  }

  private settleBatch(batch: number, outcome: SendResult[] | FractalError): void {
    const pending = this.batches.get(batch);
    if (pending === undefined) return;
    this.batches.delete(batch);
    clearTimeout(pending.timer);
    pending.queued.forEach((q, i) => {
      if (outcome instanceof FractalError) return q.reject(outcome);
      const r = outcome[i];
      if (r === undefined) q.reject(new FractalError("internal", `node ${this.peer} answered a short batch`));
      else if (r.errorCode === "") q.resolve({ seq: r.seq, ts: r.ts });
      else q.reject(this.itemError(r, "a send"));
    });
  }

  async history(caller: Caller, room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    const r = await this.call(this.client.history, {
      caller,
      room,
      after: query.after ?? 0,
      before: query.before ?? 0,
      limit: query.limit,
    });
    return r.messages.map((m) => ({ ...m, room }));
  }

  async typing(caller: Caller, room: string, user: string): Promise<void> {
    await this.call(this.client.typing, { caller, room, user });
  }

  async info(caller: Caller, room: string): Promise<RoomInfo> {
    return this.call(this.client.roomInfo, { caller, room });
  }

  async ping(caller: Caller): Promise<{ node: string; epoch: number; http: string }> {
    return this.call(this.client.ping, { caller });
  }

  /**
   * Handoffs asked in the same event-loop turn travel in one HandoffMany call (a rebalance takes rooms over
   * dozens at a time; a call per room made gRPC overhead the new owner's bottleneck and its pause). Deadline:
   * the usual forward timeout (the new owner retries while the old one may still answer).
   */
  handoff(caller: Caller, room: string, copy: CopyEnd): Promise<Handoff> {
    if (!this.handoffManySupported) return this.handoffOne(caller, room, copy);
    return new Promise((resolve, reject) => {
      if (this.handoffQueue.length === 0) setImmediate(() => this.flushHandoffs());
      this.handoffQueue.push({ caller, room, copy, resolve, reject });
    });
  }

  private async handoffOne(caller: Caller, room: string, copy: CopyEnd): Promise<Handoff> {
    return handoffOf(room, await this.call(this.client.handoff, { caller, room, ...copy }));
  }

  private flushHandoffs(): void {
    const queued = this.handoffQueue.splice(0);
    for (let i = 0; i < queued.length; i += MAX_HANDOFF_ROOMS) {
      const part = queued.slice(i, i + MAX_HANDOFF_ROOMS);
      // The newest caller epoch speaks for all (epochs only grow; the old owner adopts that map first).
      const caller = part.reduce((a, q) => (q.caller.epoch > a.epoch ? q.caller : a), part[0]!.caller);
      const request = { caller, rooms: part.map((q) => ({ caller, room: q.room, ...q.copy })) };
      this.callRaw(this.client.handoffMany, request).then(
        (reply) =>
          part.forEach((q, j) => {
            const o = reply.outcomes[j];
            if (o === undefined) q.reject(new FractalError("internal", `node ${this.peer} answered a short handoff batch`));
            else if (o.errorCode === "" && o.reply !== undefined) q.resolve(handoffOf(q.room, o.reply));
            else q.reject(this.itemError(o, `the handoff of ${q.room}`));
          }),
        (err: grpc.ServiceError) => {
          if (err.code !== grpc.status.UNIMPLEMENTED) return part.forEach((q) => q.reject(fromServiceError(err, this.peer)));
          // A node of an older version: one call per room from now on.
          this.handoffManySupported = false;
          for (const q of part) this.handoffOne(q.caller, q.room, q.copy).then(q.resolve, q.reject);
        },
      );
    }
  }

  /** Reads this node's replica copy of a room back (its owner, starting on a lost disk). */
  async replicaCopy(caller: Caller, room: string, after: number, limit: number): Promise<ReplicaCopy> {
    const r = await this.call(this.client.replicaCopy, { caller, room, after, limit });
    return { ...r, messages: r.messages.map((m) => ({ ...m, room })) };
  }

  /** Ships rooms' messages to this node as their replica (replicated durability); one answer per room. */
  async replicate(caller: Caller, items: readonly ReplicaItem[], timeoutMs: number): Promise<ReplicaAnswer[]> {
    const rooms = items.map((i) => ({ ...i, messages: i.messages.map((m) => ({ ...m, room: "" })) }));
    const r = await this.call(this.client.replicate, { caller, rooms }, timeoutMs);
    return r.rooms.map((a) => ({ status: a.status, head: a.head, message: a.errorMessage }));
  }

  async listRooms(caller: Caller): Promise<{ room: string; head: number }[]> {
    return (await this.call(this.client.listRooms, { caller }, ADMIN_TIMEOUT_MS)).rooms;
  }

  /** Asks this (new) owner to take rooms over now; `onRoom` hears each one as it is done. */
  takeOver(
    caller: Caller,
    rooms: string[],
    concurrency: number,
    onRoom: (r: { room: string; head: number; pauseMs: number; error: string }) => void,
    options: { prepare?: boolean } = {},
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = this.client.takeOver({ caller, rooms, concurrency, prepare: options.prepare === true }, new grpc.Metadata({ waitForReady: true }));
      stream.on("data", onRoom);
      stream.on("error", (err: grpc.ServiceError) => reject(fromServiceError(err, this.peer)));
      stream.on("end", () => resolve());
    });
  }

  async checkpoint(caller: Caller, room: string | undefined): Promise<CheckpointRoundResult> {
    return this.call(this.client.checkpoint, { caller, room: room ?? "" }, ADMIN_TIMEOUT_MS);
  }

  async nodeStatus(caller: Caller, query: StatusQuery): Promise<NodeStatus> {
    const r = await this.call(this.client.nodeStatus, { caller, rooms: query.rooms, room: query.room ?? "" });
    return { ...r, rooms: r.rooms.map((x) => ({ ...x, lastCheckpointAt: x.lastCheckpointAt === 0 ? undefined : x.lastCheckpointAt })) };
  }

  /** Streams the owner's progress; no deadline (a large room takes as long as it takes) but keepalives. */
  restore(caller: Caller, room: string, toSeq: number | undefined, onProgress: (p: RestoreProgress) => void): Promise<RestoreResult> {
    return new Promise((resolve, reject) => {
      const stream = this.client.restore({ caller, room, toSeq: toSeq ?? 0 }, new grpc.Metadata({ waitForReady: true }));
      let result: RestoreResult | undefined;
      stream.on("data", (p: { segmentsDone: number; segmentsTotal: number; messages: number; target: number; done: boolean; head: number; phase: string }) => {
        if (p.done) result = { room, restored: p.messages, head: p.head };
        else {
          const phase = p.phase === "verify" ? "verify" : "write";
          onProgress({ room, phase, segmentsDone: p.segmentsDone, segmentsTotal: p.segmentsTotal, messages: p.messages, target: p.target });
        }
      });
      stream.on("error", (err: grpc.ServiceError) => reject(fromServiceError(err, this.peer)));
      stream.on("end", () => (result ? resolve(result) : reject(fromServiceError({ code: grpc.status.UNAVAILABLE, details: "restore stream ended early" } as grpc.ServiceError, this.peer))));
    });
  }

  subscribe(caller: Caller, room: string, listener: RoomListener): void {
    this.caller = caller;
    this.rooms.set(room, listener);
    if (this.stream !== undefined) this.stream.write({ caller, subscribe: [room], unsubscribe: [] });
    else this.connect();
  }

  unsubscribe(caller: Caller, room: string): void {
    if (!this.rooms.delete(room)) return;
    const stream = this.stream;
    stream?.write({ caller, subscribe: [], unsubscribe: [room] });
    if (this.rooms.size > 0 || stream === undefined) return;
    // Nothing followed here any more: close the stream and let go of it at once, so that a room followed right
    // after (a user leaving one room for another) opens a fresh stream instead of writing to this ended one
    // (which failed it and cost a reconnect delay, ~100 ms on that join).
    this.stream = undefined;
    stream.end();
  }

  get following(): number {
    return this.rooms.size;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.stream?.cancel();
    this.sends?.cancel();
    this.client.close();
  }

  private call<Req, Res>(method: Unary<Req, Res>, req: Req, timeoutMs = this.timeoutMs): Promise<Res> {
    return this.callRaw(method, req, timeoutMs).catch((err: grpc.ServiceError) => {
      throw fromServiceError(err, this.peer);
    });
  }

  /** A unary call that rejects with the gRPC error itself (for callers that look at its status code). */
  private callRaw<Req, Res>(method: Unary<Req, Res>, req: Req, timeoutMs = this.timeoutMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      // waitForReady: a peer that is restarting (channel in backoff) serves the call as soon as it is back,
      // within the deadline; a peer that stays down answers unavailable at the deadline, never later.
      method.call(this.client, req, new grpc.Metadata({ waitForReady: true }), { deadline }, (err, res) => {
        if (err) reject(err);
        else resolve(res);
      });
    });
  }

  /** The error of one item of a batched reply (a send, a handoff): its Fractal code, else internal. */
  private itemError(r: { errorCode: string; errorMessage: string; epoch: number }, what: string): FractalError {
    if (isErrorCode(r.errorCode)) return new FractalError(r.errorCode, r.errorMessage, r.epoch ? { epoch: r.epoch } : undefined);
    return new FractalError("internal", r.errorMessage || `node ${this.peer} gave no answer for ${what}`);
  }

  private connect(): void {
    if (this.closed || this.stream !== undefined || this.rooms.size === 0 || this.caller === undefined) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const stream = this.client.subscribe();
    this.stream = stream;
    let gotData = false;
    stream.on("data", (batch: EventBatch) => {
      // A stream let go of (see unsubscribe) may still bring events sent before the owner saw its unsubscribe.
      if (this.stream !== stream) return;
      if (!gotData) {
        gotData = true;
        this.reconnectDelay = RECONNECT_MIN_MS;
      }
      for (const w of batch.events) {
        const event = fromWire(w);
        if (event !== undefined) this.rooms.get(event.room)?.(event);
      }
    });
    const lost = (why: string) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      if (this.closed || this.rooms.size === 0) return;
      this.log.debug({ peer: this.peer, why, retryInMs: this.reconnectDelay }, "event stream to peer lost");
      this.reconnectTimer = setTimeout(() => this.connect(), this.reconnectDelay);
      this.reconnectDelay = Math.min(RECONNECT_MAX_MS, this.reconnectDelay * 2);
    };
    stream.on("error", (err: grpc.ServiceError) => lost(err.details || err.message));
    stream.on("end", () => lost("ended by peer"));
    stream.on("close", () => lost("closed"));
    stream.write({ caller: this.caller, subscribe: [...this.rooms.keys()], unsubscribe: [] });
  }
}
