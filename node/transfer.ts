/**
 * Moving room ownership between nodes (rebalance, drain, failover), on the new owner's side and the old's.
 *
 * The map decides who owns a room; this module makes the new owner's copy complete before it serves:
 * - Take over (new owner, on the first use of a gained room or eagerly after a map change): close the room,
 *   ask the previous owner for a handoff if it is alive, then bring the local copy up to the checkpoint chain
 *   and open the room. Seqs continue from the chain's head.
 * - Hand off (old owner, asked by the new one): adopt the newer map, so every further write to the room is
 *   refused with wrong_owner; let in-flight sends commit; checkpoint the room completely. Nothing
 *   acknowledged is left behind. If the old owner is dead (failover), the chain is all there is: loss is
 *   bounded by the checkpoint interval.
 */
import { FractalError, restoreRoom, type CheckpointChain, type Checkpointer, type OwnedRooms, type RoomRebuilder } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { Caller } from "./room-api.js";

export interface HandoffPeer {
  handoff(caller: Caller, room: string): Promise<{ head: number }>;
}

export interface TransferDeps {
  readonly self: string;
  readonly membership: Membership;
  readonly rooms: OwnedRooms;
  readonly chain: CheckpointChain;
  readonly checkpointer: Checkpointer;
  readonly rebuilder: RoomRebuilder;
  readonly peers: { get(node: string): HandoffPeer };
  readonly log: Logger;
  /** Seqs a dead owner may have acknowledged beyond its chain (the checkpoint backlog bound). */
  readonly backlog: number;
  /** Whether a node's last stop was graceful with everything checkpointed (then nothing needs skipping). */
  readonly stoppedCleanly?: (node: string) => Promise<boolean>;
}

export interface TakeOverResult {
  readonly room: string;
  readonly head: number;
  readonly pauseMs: number;
}

export class OwnershipTransfer {
  /** Room -> epoch of the map change this node last completed a takeover for. */
  private readonly settled = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<TakeOverResult>>();

  constructor(private readonly d: TransferDeps) {}

  /** True when this node must take `room` over before serving it. */
  needsTakeOver(room: string): boolean {
    const change = this.d.membership.lastOwnerChange(room);
    if (change === undefined || change.to !== this.d.self) return false;
    return (this.settled.get(room) ?? -1) < change.epoch;
  }

  /** Takes the room over if this node gained it and has not yet; concurrent callers share one takeover. */
  async ensureSettled(room: string): Promise<void> {
    if (this.needsTakeOver(room)) await this.takeOver(room);
  }

  takeOver(room: string): Promise<TakeOverResult> {
    const running = this.inflight.get(room);
    if (running !== undefined) return running;
    const work = this.run(room).finally(() => this.inflight.delete(room));
    this.inflight.set(room, work);
    return work;
  }

  private async run(room: string): Promise<TakeOverResult> {
    const change = this.d.membership.lastOwnerChange(room);
    const epoch = change?.epoch ?? this.d.membership.epoch;
    const started = performance.now();
    const head = await this.d.rebuilder.exclusive(room, async () => {
      const from = change?.from;
      const handedOff = from !== undefined && from !== this.d.self && this.isAlive(from) && (await this.askHandoff(from, room));
      let head = await this.syncWithChain(room);
      const clean = from !== undefined && (await this.d.stoppedCleanly?.(from)) === true;
      // Even with no checkpoint at all (head 0): the dead owner may have acknowledged messages in the room's
      // first checkpoint interval. Starting after the backlog is the only way to be sure of no reuse.
      if (!handedOff && !clean && from !== undefined && from !== this.d.self) {
        // No handoff: the previous owner may have acknowledged up to `backlog` seqs the chain does not have.
        // Start after them; clients see the hole as a gap instead of two messages with one seq.
        head += this.d.backlog;
        await this.d.rooms.store.skipTo(room, head);
        this.d.checkpointer.forget(room);
        // Record the skip in the chain now, so the backlog bound counts from here (and survives us).
        await this.d.checkpointer.flush([room], { force: true });
      }
      this.d.checkpointer.forget(room);
      this.d.rooms.peek(room)?.reset();
      return head;
    });
    this.settled.set(room, epoch);
    const pauseMs = performance.now() - started;
    this.d.log.debug({ room, head, pauseMs, from: change?.from }, "room taken over");
    return { room, head, pauseMs };
  }

  private isAlive(node: string): boolean {
    const n = this.d.membership.node(node);
    return n !== undefined && n.state !== "down";
  }

  /**
   * True when the previous owner handed the room off (everything it acknowledged is in the chain). While
   * that node is alive (not marked down) it may still accept writes until it sees the new map, so there is no
   * falling back to the chain: keep asking (the room stays closed, clients retry) until it answers or its lease
   * expires and it is marked down (it has fenced itself by then).
   */
  private async askHandoff(from: string, room: string): Promise<boolean> {
    for (let delay = 100; ; delay = Math.min(1000, delay * 2)) {
      try {
        await this.d.peers.get(from).handoff({ node: this.d.self, epoch: this.d.membership.epoch }, room);
        return true;
      } catch (err) {
        if (!this.isAlive(from)) {
          this.d.log.warn({ room, from, err: (err as Error).message }, "previous owner is down; taking the room over from its checkpoints");
          return false;
        }
        this.d.log.debug({ room, from, err: (err as Error).message }, "handoff not answered yet; retrying");
        await new Promise((r) => setTimeout(r, delay));
        await this.d.membership.refresh().catch(() => undefined);
      }
    }
  }

  /** Makes the local copy equal the chain (which the handoff made complete); returns the head. */
  private async syncWithChain(room: string): Promise<number> {
    const store = this.d.rooms.store;
    const manifest = await this.d.chain.read(room);
    if (manifest === undefined) return store.head(room);
    const localHead = store.head(room);
    const m = manifest.manifest;
    const last = localHead > 0 ? store.history(room, { after: localHead - 1, limit: 1 })[0] : undefined;
    if (localHead === m.head && (m.head === 0 || last?.ts === m.headTs)) return localHead;
    // A copy from an earlier time of ownership may have diverged: replace it (after verifying the chain).
    const result = await restoreRoom(store, this.d.chain, room, manifest, { replace: localHead > 0 });
    return result.head;
  }

  /**
   * Old owner's side: called by the new owner. Adopts the caller's map first, so that this node refuses
   * further writes to the room, then lets in-flight sends commit and checkpoints the room completely.
   */
  async handOff(caller: Caller, room: string): Promise<{ head: number }> {
    const { membership, rooms, checkpointer } = this.d;
    if (caller.epoch > membership.epoch) await membership.refresh();
    if (caller.epoch > membership.epoch) throw new FractalError("unavailable", `map epoch ${caller.epoch} is not visible here yet`);
    if (membership.ownerOf(room) === this.d.self) {
      throw new FractalError("wrong_owner", `node ${this.d.self} still owns room ${room} at epoch ${membership.epoch}`, { epoch: membership.epoch });
    }
    await rooms.commits.drained();
    const head = rooms.store.head(room);
    if (head > 0) {
      const result = await checkpointer.flush([room], { force: true });
      if (result.failed > 0) throw new FractalError("unavailable", `could not checkpoint room ${room} for the handoff`);
    }
    rooms.peek(room)?.reset();
    return { head };
  }

  /**
   * After a map change: rooms this node lost are checkpointed completely (so their new owners find them in the
   * chain even if nobody asks for a handoff), and rooms it gained that have checkpoints are taken over eagerly.
   */
  async afterMapChange(concurrency = 8): Promise<{ lost: number; gained: number }> {
    const { membership, rooms, checkpointer, chain } = this.d;
    const lost = rooms.store.rooms().filter((room) => {
      const change = membership.lastOwnerChange(room);
      return change !== undefined && change.from === this.d.self && change.to !== this.d.self;
    });
    for (const room of lost) rooms.peek(room)?.reset();
    if (lost.length > 0) await checkpointer.flush(lost, { force: true }).catch(() => undefined);
    const gained = (await chain.rooms()).filter((room) => membership.ownerOf(room) === this.d.self && this.needsTakeOver(room));
    let next = 0;
    const worker = async () => {
      while (next < gained.length) {
        const room = gained[next++]!;
        await this.takeOver(room).catch((err: unknown) => this.d.log.warn({ room, err: (err as Error).message }, "eager takeover failed"));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, gained.length) }, worker));
    return { lost: lost.length, gained: gained.length };
  }
}
