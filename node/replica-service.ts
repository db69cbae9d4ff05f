/**
 * The replica's side of replicated durability: serves the Replicate calls of the owners whose rooms this node
 * is the replica of. Peer input is validated like client input (invariant 7): a malformed room item gets
 * bad_request for that room and changes nothing, the others of the call still apply.
 *
 * Fencing: a room's copy is only written for the room's owner under this node's map, when this node is the
 * room's replica (the next node on the ring); a deposed owner gets wrong_owner and learns the new map. The
 * copy itself refuses an older epoch than the one that last wrote it (shards/replica-store.ts).
 */
import { FractalError, NODE_ID_PATTERN, ReplicaStatus, type ReplicaItem, type ReplicaStore, type StoredMessage } from "../shards/index.js";
import { USER_NAME_PATTERN } from "./auth.js";
import type { Membership } from "./membership.js";
import { checkRoomId, isSendId, MAX_SEND_ID_LENGTH } from "./protocol.js";
import type { Caller } from "./room-api.js";
import type { ReplicaAnswer } from "./replicator.js";

/** The wire form of one room of a call (ReplicaRoom in proto/fractal.proto). */
export interface ReplicaRoomRequest {
  readonly room: string;
  readonly checkpointed: number;
  readonly after: number;
  readonly afterId: string;
  readonly afterTs: number;
  readonly messages: readonly { readonly seq: number; readonly id: string; readonly user: string; readonly text: string; readonly ts: number }[];
  readonly reset: boolean;
}

/** Bounds of one call; an owner's calls stay far below them (node/replicator.ts). */
export const MAX_REPLICA_ROOMS = 5000;
export const MAX_REPLICA_MESSAGES = 20_000;

export interface ReplicaAnswerWithEpoch extends ReplicaAnswer {
  /** With wrong_owner or stale: this node's map epoch. */
  readonly epoch: number;
}

export class ReplicaService {
  constructor(
    private readonly d: {
      readonly self: string;
      readonly membership: Membership;
      /**
       * The copies. Kept whatever this node's own mode: a cluster switched to `replicated` one node at a time
       * keeps acknowledging (a node in `local` mode does not use them at a failover, it skips the backlog).
       */
      readonly store: ReplicaStore;
    },
  ) {}

  async replicate(caller: Caller, rooms: readonly ReplicaRoomRequest[]): Promise<ReplicaAnswerWithEpoch[]> {
    const { store, membership, self } = this.d;
    if (!NODE_ID_PATTERN.test(caller.node) || !Number.isSafeInteger(caller.epoch) || caller.epoch < 1) {
      throw new FractalError("bad_request", "bad caller");
    }
    if (rooms.length > MAX_REPLICA_ROOMS) throw new FractalError("bad_request", `at most ${MAX_REPLICA_ROOMS} rooms per call`);
    const total = rooms.reduce((n, r) => n + (Array.isArray(r.messages) ? r.messages.length : 0), 0);
    if (total > MAX_REPLICA_MESSAGES) throw new FractalError("bad_request", `at most ${MAX_REPLICA_MESSAGES} messages per call`);

    const answers: ReplicaAnswerWithEpoch[] = new Array(rooms.length);
    const accepted: { index: number; item: ReplicaItem }[] = [];
    rooms.forEach((r, index) => {
      try {
        const item = toItem(r);
        const [owner, replica] = membership.ring.successors(item.room, 2);
        if (owner !== caller.node || replica !== self) {
          throw new FractalError(
            "wrong_owner",
            `at epoch ${membership.epoch} room ${item.room} is owned by ${owner ?? "no node"} with replica ${replica ?? "none"}`,
            { epoch: membership.epoch },
          );
        }
        accepted.push({ index, item });
      } catch (err) {
        const e = err instanceof FractalError ? err : new FractalError("bad_request", String(err));
        answers[index] = { status: e.code, head: 0, message: e.message, epoch: e.epoch ?? 0 };
      }
    });
    const outcomes = await store.apply(
      caller.node,
      caller.epoch,
      accepted.map((a) => a.item),
    );
    outcomes.forEach((o, k) => {
      answers[accepted[k]!.index] = { status: o.status, head: o.head, message: "", epoch: o.status === ReplicaStatus.stale ? membership.epoch : 0 };
    });
    return answers;
  }

  /**
   * The copy of a room for its owner, which starts on a lost disk (node/replica-recovery.ts): the record and
   * up to `limit` rows after `after`. Only the room's owner under this node's map may read it, and only while
   * this node is the room's replica: anyone else gets wrong_owner.
   */
  async copy(caller: Caller, room: string, after: number, limit: number): Promise<ReplicaCopy> {
    const { store, membership, self } = this.d;
    if (!NODE_ID_PATTERN.test(caller.node) || !Number.isSafeInteger(caller.epoch) || caller.epoch < 1) throw new FractalError("bad_request", "bad caller");
    checkRoomId(room);
    if (!Number.isSafeInteger(after) || after < 0) throw new FractalError("bad_request", "bad after");
    if (caller.epoch > membership.epoch) await membership.refresh().catch(() => undefined);
    const [owner, replica] = membership.ring.successors(room, 2);
    if (owner !== caller.node || replica !== self) {
      throw new FractalError("wrong_owner", `at epoch ${membership.epoch} room ${room} is owned by ${owner ?? "no node"} with replica ${replica ?? "none"}`, {
        epoch: membership.epoch,
      });
    }
    // Every Replicate call accepted so far is in the rows.
    await store.settled();
    const record = store.record(room);
    if (record === undefined) return { found: false, owner: "", epoch: 0, head: 0, checkpointed: 0, messages: [] };
    const rows = store.messages(room, after, Math.max(1, Math.min(MAX_COPY_MESSAGES, Math.floor(limit) || MAX_COPY_MESSAGES)));
    return { found: true, owner: record.owner, epoch: record.epoch, head: record.head, checkpointed: record.checkpointed, messages: rows };
  }
}

/** A room's replica copy as its owner reads it back (ReplicaCopyReply in proto/fractal.proto). */
export interface ReplicaCopy {
  readonly found: boolean;
  readonly owner: string;
  readonly epoch: number;
  readonly head: number;
  readonly checkpointed: number;
  readonly messages: readonly StoredMessage[];
}

/** Rows per ReplicaCopy reply: well inside the peer message limit with the longest texts. */
export const MAX_COPY_MESSAGES = 2000;

/**
 * Drops the copies this node no longer needs after a map change: rooms it neither owns nor is the replica of.
 * (A copy is only ever used by a takeover on this node, and only if this node was the replica up to the
 * owner's last map: shards/replica-trust.ts.) Returns how many were dropped.
 */
export async function dropUnneededCopies(d: { readonly self: string; readonly membership: Membership; readonly store: ReplicaStore }): Promise<number> {
  let dropped = 0;
  for (const room of d.store.rooms()) {
    const [owner, replica] = d.membership.ring.successors(room, 2);
    if (owner === d.self || replica === d.self) continue;
    await d.store.drop(room);
    dropped++;
  }
  return dropped;
}

/** Checks one room of a call; throws bad_request naming the problem. */
export function toItem(r: ReplicaRoomRequest): ReplicaItem {
  const room = checkRoomId(r.room);
  for (const [name, value] of [
    ["checkpointed", r.checkpointed],
    ["after", r.after],
    ["after_ts", r.afterTs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw new FractalError("bad_request", `${room}: bad ${name}`);
  }
  if (typeof r.afterId !== "string" || r.afterId.length > MAX_SEND_ID_LENGTH) throw new FractalError("bad_request", `${room}: bad after_id`);
  if (!Array.isArray(r.messages)) throw new FractalError("bad_request", `${room}: bad messages`);
  if (r.after + r.messages.length > Number.MAX_SAFE_INTEGER) throw new FractalError("bad_request", `${room}: seqs out of range`);
  const messages = r.messages.map((m, i) => {
    if (m.seq !== r.after + i + 1) throw new FractalError("bad_request", `${room}: message ${i} has seq ${m.seq}, expected ${r.after + i + 1}`);
    if (!isSendId(m.id)) throw new FractalError("bad_request", `${room}: bad id at seq ${m.seq}`);
    if (typeof m.user !== "string" || !USER_NAME_PATTERN.test(m.user)) throw new FractalError("bad_request", `${room}: bad user at seq ${m.seq}`);
    // The owner already applied its text limit; the call's size is bounded by the gRPC message limit.
    if (typeof m.text !== "string" || m.text.length === 0) throw new FractalError("bad_request", `${room}: bad text at seq ${m.seq}`);
    if (!Number.isSafeInteger(m.ts) || m.ts <= 0) throw new FractalError("bad_request", `${room}: bad ts at seq ${m.seq}`);
    return { room, seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts };
  });
  return { room, checkpointed: r.checkpointed, after: r.after, afterId: r.afterId, afterTs: r.afterTs, messages, reset: r.reset === true };
}
