/**
 * When a replica copy may stand in for a dead owner (durability `replicated`): the node taking a room over
 * from an owner that died continues after the copy's head instead of skipping the checkpoint backlog only if
 * the copy holds everything that owner acknowledged. The owner acknowledges a message only once the room's
 * replica under its current map has confirmed it at that map's epoch, and after every map change it brings
 * the replica in sync before acknowledging more; so the copy is complete when:
 *
 * - it was last brought in sync by the dead owner, at epoch `e` (the record), and
 * - in every map after `e` until the one that took the room from the dead owner, the room's successors
 *   (owner, replica) were still (dead owner, this node): the owner never had another replica to acknowledge
 *   through. Every one of those maps must be known to this node; an unknown map might have named another
 *   replica (a replica that changed and changed back, for instance), so the answer is then no.
 *
 * "No" is always safe: the caller falls back to skipping the backlog (clients see a gap, no seq is reused).
 */
import type { Ring } from "./ring.js";

export interface ReplicaTrustQuestion {
  readonly room: string;
  /** The owner that died. */
  readonly dead: string;
  /** This node, which takes the room over and holds the copy. */
  readonly self: string;
  /** The copy's record: who last brought it in sync, under which epoch (undefined: no copy). */
  readonly record: { readonly owner: string; readonly epoch: number } | undefined;
  /** Epoch of the first map (known here) in which the dead node no longer owns the room. */
  readonly lostAt: number;
  /** The ring of a map epoch this node has seen, if it remembers it. */
  readonly ringAt: (epoch: number) => Ring | undefined;
}

/** Why a copy is not trusted, or undefined when it is. */
export function replicaDistrust(q: ReplicaTrustQuestion): string | undefined {
  const { record } = q;
  if (record === undefined) return "no replica copy of the room here";
  if (record.owner !== q.dead) return `the copy was last synced by ${record.owner}, not by ${q.dead}`;
  if (record.epoch >= q.lostAt) return `the copy was synced at epoch ${record.epoch}, not before epoch ${q.lostAt}`;
  for (let epoch = record.epoch + 1; epoch < q.lostAt; epoch++) {
    const ring = q.ringAt(epoch);
    if (ring === undefined) return `map epoch ${epoch} (after the copy's epoch ${record.epoch}) is not known here`;
    const [owner, replica] = ring.successors(q.room, 2);
    if (owner !== q.dead || replica !== q.self) {
      return `at epoch ${epoch} the room's owner and replica were ${owner ?? "none"} and ${replica ?? "none"}`;
    }
  }
  return undefined;
}

export function replicaTrusted(q: ReplicaTrustQuestion): boolean {
  return replicaDistrust(q) === undefined;
}
