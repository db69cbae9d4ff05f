/**
 * The replica copy of rooms (durability `replicated`, DESIGN.md): kept by the node after a room's owner on the
 * room's ring, it holds the owner's messages above the owner's checkpointed seq, so that a failover loses
 * nothing the owner acknowledged. The owner ships every commit here before acknowledging it
 * (node/replicator.ts); the replica becomes the owner when the owner dies (node/replica-failover.ts).
 *
 * Contract (every implementation, checked by test/unit/replica-store.contract.ts):
 * - `apply` decides every item against the copy as it stands (after the items before it in the same call and
 *   every earlier call) and resolves once the accepted items are durable (a process crash keeps them). Calls
 *   are applied in the order they are made; a failed call changes nothing.
 * - A copy only grows by contiguous data: an item is accepted when its `after` is where the copy ends (with
 *   the owner's checkpointed seq as a floor: rows up to it are in object storage, so a copy behind it ends
 *   there). Anything else is answered with where the copy ends, and nothing changes.
 * - Accepting an item records the owner and epoch it came with; an item from an older epoch than the record's
 *   (or from another owner at the same epoch) is refused as `stale`: a deposed owner cannot touch the copy.
 * - Rows at or below the owner's checkpointed seq are dropped when an item is accepted.
 */
import type { StoredMessage } from "./room-store.js";

export interface ReplicaRecord {
  readonly room: string;
  /** The owner that last brought the copy in sync, and the map epoch it did so under. */
  readonly owner: string;
  readonly epoch: number;
  /** The copy holds the owner's history up to here (the rows above `checkpointed`). */
  readonly head: number;
  /** The owner's checkpointed seq as last told: rows up to it were dropped. */
  readonly checkpointed: number;
  /** Id and ts of the message at `head`; empty when the copy holds none there (head ≤ checkpointed). */
  readonly headId: string;
  readonly headTs: number;
}

/** One room's part of a replication call (see ReplicaRoom in proto/fractal.proto). */
export interface ReplicaItem {
  readonly room: string;
  readonly checkpointed: number;
  readonly after: number;
  /** Id and ts of the owner's message at `after`; "" when there is none to compare. */
  readonly afterId: string;
  readonly afterTs: number;
  /** Seqs after+1, after+2, ... */
  readonly messages: readonly StoredMessage[];
  readonly reset: boolean;
}

export const ReplicaStatus = { ok: "ok", behind: "behind", ahead: "ahead", diverged: "diverged", stale: "stale" } as const;
export type ReplicaStatus = (typeof ReplicaStatus)[keyof typeof ReplicaStatus];

export interface ReplicaOutcome {
  readonly status: ReplicaStatus;
  /** Where the copy ends after the item (or still ends, when it was not accepted). */
  readonly head: number;
}

export interface ReplicaStore {
  /** Applies the items of one call from `owner` at map `epoch`; one outcome per item, in order. */
  apply(owner: string, epoch: number, items: readonly ReplicaItem[]): Promise<ReplicaOutcome[]>;
  /** The copy's record, as of every `apply` made so far (durable or on its way). */
  record(room: string): ReplicaRecord | undefined;
  /** Rows of the copy above `after`, ascending, at most `limit`; call after `settled()` to see every apply. */
  messages(room: string, after: number, limit: number): StoredMessage[];
  /** Resolves once every apply made so far is durable and readable through `messages`. */
  settled(): Promise<void>;
  /** Forgets the copy of a room (its record and rows). */
  drop(room: string): Promise<void>;
  /** Rooms with a copy. */
  rooms(): string[];
}

/** What accepting an item changes: the new record, and whether rows are dropped first. */
export interface ReplicaDecision {
  readonly outcome: ReplicaOutcome;
  /** Set when the item is accepted. */
  readonly next?: ReplicaRecord;
  /** Accepted with reset: every row of the room goes before the item's rows land. */
  readonly dropAll?: boolean;
}

/**
 * The acceptance rule of the contract, shared by the implementations. `item` must be well-formed (seqs after+1,
 * after+2, ...; the replica service validates peer input before it gets here).
 */
export function decide(current: ReplicaRecord | undefined, owner: string, epoch: number, item: ReplicaItem): ReplicaDecision {
  if (current !== undefined && (epoch < current.epoch || (epoch === current.epoch && owner !== current.owner))) {
    return { outcome: { status: ReplicaStatus.stale, head: current.head } };
  }
  const floor = item.checkpointed;
  const held = item.reset || current === undefined ? { head: 0, headId: "", headTs: 0 } : current;
  // Rows up to the owner's checkpointed seq are in object storage: a copy behind it is as good as ending there.
  const end = Math.max(held.head, floor);
  const endId = held.head > floor ? held.headId : "";
  if (item.after > end) return { outcome: { status: ReplicaStatus.behind, head: end } };
  if (item.after < end) return { outcome: { status: ReplicaStatus.ahead, head: end } };
  if (item.afterId !== "" && endId !== "" && (endId !== item.afterId || held.headTs !== item.afterTs)) {
    return { outcome: { status: ReplicaStatus.diverged, head: end } };
  }
  const last = item.messages[item.messages.length - 1];
  const head = item.after + item.messages.length;
  const next: ReplicaRecord = {
    room: item.room,
    owner,
    epoch,
    head,
    checkpointed: floor,
    headId: last !== undefined ? last.id : endId,
    headTs: last !== undefined ? last.ts : endId !== "" ? held.headTs : 0,
  };
  return { outcome: { status: ReplicaStatus.ok, head }, next, dropAll: item.reset };
}

/** Throws unless the item's messages are seqs after+1, after+2, ... of its room (a defect, never peer input). */
export function checkItem(item: ReplicaItem): void {
  item.messages.forEach((m, i) => {
    if (m.seq !== item.after + i + 1 || m.room !== item.room) {
      throw new Error(`replica item for ${item.room}: message ${i} is ${m.room}/${m.seq}, expected seq ${item.after + i + 1}`);
    }
  });
}
