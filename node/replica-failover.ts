/**
 * Failover with replicated durability: the node that takes a room over from a dead owner (no handoff possible)
 * restores the checkpoint chain as always, then continues the room from its own replica copy — the messages
 * the dead owner acknowledged after its last checkpoint — instead of skipping the checkpoint backlog. Only a
 * copy that is sure to hold everything the dead owner acknowledged is used (shards/replica-trust.ts), and only
 * when it continues the restored chain without a hole; otherwise the caller skips the backlog as in `local`
 * durability, which is always safe (a gap, never a seq given twice).
 *
 * Messages the dead owner committed but never got confirmed by this node were never acknowledged nor
 * published: the room continues without them, and their seqs go to new messages. If that node comes back, it
 * owns nothing (it rejoins as `joining`), and a later move of the room to it replaces its diverged local copy
 * (the handoff matches copies by seq, id and ts).
 */
import { contiguous, messageAt, replicaDistrust, type ReplicaStore, type RoomStore } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";

/** Rows read from the copy per transaction. */
const APPLY_PAGE = 5000;

export class ReplicaFailover {
  constructor(
    private readonly d: {
      readonly self: string;
      readonly membership: Membership;
      readonly replicas: ReplicaStore;
      readonly store: RoomStore;
      readonly log: Logger;
      /**
       * Whether the dead node acknowledged through its replicas in its last run (its lease says so): a node
       * restarted with `--durability local` acknowledges alone, and copies it synced before say nothing.
       */
      readonly replicatedOwner?: (node: string) => Promise<boolean>;
    },
  ) {}

  /**
   * Called by the takeover after the chain is restored (the local copy ends at the chain's head). Returns the
   * room's new head when the replica copy was trusted and applied, undefined when the caller must skip the
   * backlog. The copy is dropped either way: this node owns the room now.
   */
  async continueFromCopy(room: string, dead: string, lostAt: number): Promise<number | undefined> {
    const { replicas, store, membership, log } = this.d;
    // A Replicate call decided before this node saw the map that made it owner may still be writing.
    await replicas.settled();
    const record = replicas.record(room);
    try {
      let distrust = replicaDistrust({ room, dead, self: this.d.self, record, lostAt, ringAt: (epoch) => membership.ringAt(epoch) });
      if (distrust === undefined && this.d.replicatedOwner !== undefined && !(await this.d.replicatedOwner(dead))) {
        distrust = `${dead} did not run with --durability replicated last (or its lease is unreadable)`;
      }
      if (distrust !== undefined) {
        log.info({ room, dead, reason: distrust }, "replica copy not used for the failover; skipping the checkpoint backlog");
        return undefined;
      }
      const base = store.head(room);
      // The junction: where the copy and the chain overlap, they must be the same history.
      const mine = messageAt(store, room, base);
      const theirs = replicas.messages(room, base - 1, 1)[0];
      if (mine !== undefined && theirs?.seq === base && (theirs.id !== mine.id || theirs.ts !== mine.ts)) {
        log.warn({ room, dead, seq: base }, "replica copy differs from the checkpoint chain; skipping the checkpoint backlog");
        return undefined;
      }
      const target = record!.head;
      for (let after = base; after < target; ) {
        const rows = replicas.messages(room, after, Math.min(APPLY_PAGE, target - after));
        if (rows.length === 0 || rows[0]!.seq !== after + 1 || !contiguous(rows)) {
          log.warn({ room, dead, after, copyHead: target }, "replica copy has a hole above the checkpoint chain; skipping the checkpoint backlog");
          return undefined;
        }
        // Durably (not a bulk restore): the copy is the only other place these acknowledged messages live.
        await (store.appendAsync ? store.appendAsync(rows) : store.append(rows));
        after = rows[rows.length - 1]!.seq;
      }
      const head = store.head(room);
      log.info({ room, dead, chainHead: base, head, fromCopy: head - base }, "room continued from its replica copy: nothing acknowledged lost");
      return head;
    } finally {
      await replicas.drop(room).catch((err: unknown) => log.warn({ room, err: (err as Error).message }, "could not drop a used replica copy"));
    }
  }
}
