/**
 * Replicated durability when the owner itself comes back on a lost disk (DESIGN.md: "Losing one node loses
 * nothing acknowledged"). A node that restarts before its lease expired keeps its rooms (nobody failed it over)
 * and rebuilds them from the checkpoint chain; what it acknowledged after the last checkpoint lives only on each
 * room's replica. This reads it back while the room is still gated, so the room continues after it instead of
 * skipping the checkpoint backlog.
 *
 * The copy stands in for the lost disk only when it must hold everything this node acknowledged:
 * - this node ran `replicated` before the restart (its previous lease says so: in `local` mode it acknowledged
 *   without the replica);
 * - the copy's record says this node brought it in sync at the current map epoch (an owner re-syncs its replicas
 *   after every map change before acknowledging more, so a record from an older epoch may miss acknowledgements
 *   made through another replica);
 * - it continues the chain: its rows start at or below the chain's head + 1, and where copy and chain overlap
 *   they hold the same message.
 * Otherwise the caller skips the backlog as without a replica (a gap, never a seq given twice). A replica that
 * cannot be asked right now makes the rebuild retry (the room stays gated), so a short blip does not turn
 * acknowledged messages into a gap.
 */
import { contiguous, FractalError, messageAt, type RoomStore } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { ReplicaCopy } from "./replica-service.js";
import type { Caller } from "./room-api.js";

export interface ReplicaCopyPeer {
  replicaCopy(caller: Caller, room: string, after: number, limit: number): Promise<ReplicaCopy>;
}

/** Rows asked per call (the replica caps its replies too). */
const PAGE = 2000;

export class ReplicaRecovery {
  constructor(
    private readonly d: {
      readonly self: string;
      readonly membership: Membership;
      readonly store: RoomStore;
      readonly peers: { get(node: string): ReplicaCopyPeer };
      readonly log: Logger;
      /** This node's durability mode before the restart, from its previous lease. */
      readonly wasReplicated: boolean;
    },
  ) {}

  /**
   * Called by the rebuild after the room was restored from its chain (the local copy ends at `chainHead`).
   * Returns the room's head after applying the replica's rows when the copy is trusted, undefined when the
   * backlog must be skipped; throws when the replica cannot be asked now (the rebuild retries).
   */
  async continueAfterRestore(room: string, chainHead: number): Promise<number | undefined> {
    const { self, membership, store, log } = this.d;
    if (!this.d.wasReplicated) return undefined;
    const [owner, replica] = membership.ring.successors(room, 2);
    if (owner !== self || replica === undefined || replica === self) return undefined;
    const caller = (): Caller => ({ node: self, epoch: membership.epoch });
    const peer = this.d.peers.get(replica);
    // From the seq before the chain's head: the copy's first row, when it still holds it, is the junction.
    let page = await peer.replicaCopy(caller(), room, Math.max(0, chainHead - 1), PAGE);
    const distrust = this.distrust(room, chainHead, page);
    if (distrust !== undefined) {
      log.info({ room, replica, reason: distrust }, "replica copy not used after the lost disk; skipping the checkpoint backlog");
      return undefined;
    }
    const target = page.head;
    // From the local head: an earlier attempt may have applied some pages before it failed.
    for (let after = Math.max(chainHead, store.head(room)); after < target; ) {
      const rows = page.messages.filter((m) => m.seq > after);
      if (rows.length === 0) {
        page = await peer.replicaCopy(caller(), room, after, PAGE);
        if (page.messages.length === 0) throw new FractalError("unavailable", `replica ${replica} of room ${room} ended its copy at ${after}, before ${target}`);
        continue;
      }
      if (rows[0]!.seq !== after + 1 || !contiguous(rows)) {
        log.warn({ room, replica, after }, "replica copy has a hole above the checkpoint chain; skipping the checkpoint backlog");
        return undefined;
      }
      // Durably (not a bulk restore): until the next checkpoint the copy is the only other place they live.
      await (store.appendAsync ? store.appendAsync(rows) : store.append(rows));
      after = rows[rows.length - 1]!.seq;
    }
    const head = store.head(room);
    log.info({ room, replica, chainHead, head, fromCopy: head - chainHead }, "room continued from its replica's copy after the lost disk: nothing acknowledged lost");
    return head;
  }

  /** Why the copy cannot stand in for the lost disk, or undefined when it can. */
  private distrust(room: string, chainHead: number, copy: ReplicaCopy): string | undefined {
    if (!copy.found) return "the replica holds no copy of the room";
    if (copy.owner !== this.d.self) return `the copy was last synced by ${copy.owner}`;
    if (copy.epoch !== this.d.membership.epoch) return `the copy was synced at epoch ${copy.epoch}, the map is at ${this.d.membership.epoch}`;
    if (copy.checkpointed > chainHead) return `the copy starts after seq ${copy.checkpointed}, the chain ends at ${chainHead}`;
    const junction = copy.messages.find((m) => m.seq === chainHead);
    const mine = messageAt(this.d.store, room, chainHead);
    if (junction !== undefined && mine !== undefined && (junction.id !== mine.id || junction.ts !== mine.ts)) {
      return `the copy's message at seq ${chainHead} is not the chain's`;
    }
    return undefined;
  }
}
