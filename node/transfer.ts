/**
 * Moving room ownership between nodes (rebalance, drain, failover), on the new owner's side and the old's.
 *
 * The map decides who owns a room; this module makes the new owner's copy complete before it serves:
 * - Prepare (new owner, before a planned switch): copy the room from the chain while the old owner still serves.
 * - Take over (new owner, on the first use of a gained room or eagerly after a map change): close the room,
 *   ask the previous owner for a handoff if it is alive, then bring the local copy up to date and open the
 *   room. When the local copy is a prefix of the old owner's history (prepared, or from an earlier time of
 *   ownership) the handoff reply carries the missing tail itself: the room is closed for one round trip and
 *   one local commit, not for a checkpoint write and a restore. Otherwise the old owner checkpoints and the new
 *   one syncs from the chain. Seqs continue from the old owner's head.
 * - Hand off (old owner, asked by the new one): adopt the newer map, so every further write to the room is
 *   refused with wrong_owner; let in-flight sends commit; checkpoint the room completely. Nothing
 *   acknowledged is left behind. If the old owner is dead (failover), the chain is all there is: loss is
 *   bounded by the checkpoint interval — unless, with replicated durability, this node holds a trusted replica
 *   copy of the room (node/replica-failover.ts): then nothing acknowledged is lost and no seq is skipped.
 */
import { FractalError, messageAt, restoreRoom, type CheckpointChain, type Checkpointer, type OwnedRooms, type RoomRebuilder, type StoredMessage } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import type { Caller } from "./room-api.js";

/** Where the new owner's copy of a room ends: the seq and, to tell histories apart, that message's id and ts. */
export interface CopyEnd {
  readonly since: number;
  readonly sinceId: string;
  readonly sinceTs: number;
}

export interface Handoff {
  readonly head: number;
  /** Every message after the asker's `since` up to head, when the old owner sent them (else undefined). */
  readonly tail?: readonly StoredMessage[] | undefined;
  /** With a tail: the chain's head as the old owner last wrote it. */
  readonly checkpointed?: number;
}

export interface HandoffPeer {
  handoff(caller: Caller, room: string, copy: CopyEnd): Promise<Handoff>;
}

/**
 * Largest tail a handoff carries. Above it the old owner checkpoints instead (a bigger reply would not be faster
 * than the chain). The checkpoint backlog bound usually keeps tails far below this.
 */
const MAX_TAIL_MESSAGES = 5_000;
/** How long after a map change the save of lost rooms and the eager takeover pass wait (see afterMapChange). */
const AFTER_SWITCH_DELAY_MS = 2_000;
const MAX_TAIL_BYTES = 2 * 1024 * 1024;
/** Retry of saving lost rooms (see saveLost) after the object store failed. */
const SAVE_LOST_RETRY_MS = 5_000;

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
  /**
   * Replicated durability: continues a room from this node's replica copy after its owner died (the new head,
   * or undefined when the copy cannot be trusted and the backlog must be skipped). See node/replica-failover.ts.
   */
  readonly replicas?: { continueFromCopy(room: string, dead: string, lostAt: number): Promise<number | undefined> };
  /** Called when a takeover has replaced the room's local copy, before the room opens. */
  readonly afterTakeOver?: (room: string) => void;
  /** Delay after a map change before lost rooms are saved and gained ones taken over eagerly (default 2 s). */
  readonly eagerDelayMs?: number;
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
  /** See afterMapChange and saveLost. */
  private readonly unsavedLost = new Set<string>();
  /** Rooms lost at map changes whose new owner has not asked for them yet (see awaitingHandoff). */
  private readonly lostNotHandedOff = new Set<string>();

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
    // Callers decide early (an eager pass lists its rooms up front): a room settled since must not be taken
    // over again. A second takeover would sync an owner's newer local copy back to the chain's older head.
    if (!this.needsTakeOver(room)) return Promise.resolve({ room, head: this.d.rooms.store.head(room), pauseMs: 0 });
    const work = this.run(room).finally(() => this.inflight.delete(room));
    this.inflight.set(room, work);
    return work;
  }

  private async run(room: string): Promise<TakeOverResult> {
    const change = this.d.membership.lastOwnerChange(room);
    const epoch = change?.epoch ?? this.d.membership.epoch;
    const started = performance.now();
    const { head, handoffMs, gateMs, tail, settledAt } = await this.d.rebuilder.exclusive(room, async () => {
      const from = change?.from;
      const asked = performance.now();
      const handoff = from !== undefined && from !== this.d.self && this.isAlive(from) ? await this.askHandoff(from, room) : undefined;
      const handoffMs = performance.now() - asked;
      const gateMs = asked - started;
      const handedOff = handoff !== undefined;
      let head = handoff?.tail !== undefined ? await this.appendTail(room, handoff) : await this.syncWithChain(room);
      let fromCopy = false;
      // Even with no checkpoint at all (head 0): the dead owner may have acknowledged messages in the room's
      // first checkpoint interval. Starting after the backlog is the only way to be sure of no reuse. (The
      // clean-stop marker is an object store read: asked only without a handoff, never inside a planned move's pause.)
      if (!handedOff && from !== undefined && from !== this.d.self && (await this.d.stoppedCleanly?.(from)) !== true) {
        // Replicated durability: this node's replica copy may hold everything the dead owner acknowledged.
        const continued = change === undefined ? undefined : await this.d.replicas?.continueFromCopy(room, from, change.epoch);
        if (continued !== undefined) {
          fromCopy = continued > head;
          head = continued;
        } else {
          // No handoff: the previous owner may have acknowledged up to `backlog` seqs the chain does not have.
          // Start after them; clients see the hole as a gap instead of two messages with one seq.
          head += this.d.backlog;
          await this.d.rooms.store.skipTo(room, head);
          this.d.checkpointer.forget(room);
          // Record the skip in the chain now, so the backlog bound counts from here (and survives us).
          await this.d.checkpointer.flush([room], { force: true });
        }
      }
      this.d.checkpointer.forget(room);
      // A tail came from the old owner (or the replica copy), not from the chain: this node checkpoints it next.
      if ((handoff?.tail !== undefined && handoff.tail.length > 0) || fromCopy) this.d.checkpointer.markDirty(room);
      this.d.rooms.peek(room)?.reset();
      // Before the room opens: whatever was released of the room before says nothing about this copy.
      this.d.afterTakeOver?.(room);
      return { head, handoffMs, gateMs, tail: handoff?.tail?.length, settledAt: performance.now() };
    });
    this.settled.set(room, epoch);
    const pauseMs = performance.now() - started;
    // Where a pause went: waiting for the room's gate, the handoff call, and the rest (local commit, reopening).
    this.d.log.debug({ room, head, pauseMs, gateMs, handoffMs, resumeMs: performance.now() - settledAt, from: change?.from, tail }, "room taken over");
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
  private async askHandoff(from: string, room: string): Promise<Handoff | undefined> {
    for (let delay = 100; ; delay = Math.min(1000, delay * 2)) {
      try {
        return await this.d.peers.get(from).handoff({ node: this.d.self, epoch: this.d.membership.epoch }, room, this.copyEnd(room));
      } catch (err) {
        if (!this.isAlive(from)) {
          this.d.log.warn({ room, from, err: (err as Error).message }, "previous owner is down; taking the room over from its checkpoints");
          return undefined;
        }
        this.d.log.debug({ room, from, err: (err as Error).message }, "handoff not answered yet; retrying");
        await new Promise((r) => setTimeout(r, delay));
        await this.d.membership.refresh().catch(() => undefined);
      }
    }
  }

  private copyEnd(room: string): CopyEnd {
    const store = this.d.rooms.store;
    const since = store.head(room);
    const last = messageAt(store, room, since);
    // A head without its message (a skip) cannot be matched: an empty id never matches, the old owner checkpoints.
    return last !== undefined ? { since, sinceId: last.id, sinceTs: last.ts } : { since, sinceId: "", sinceTs: 0 };
  }

  /** Commits the handoff's tail after the local copy (durably: these messages were acknowledged). */
  private async appendTail(room: string, { head, tail = [], checkpointed = 0 }: Handoff): Promise<number> {
    const store = this.d.rooms.store;
    if (tail.length > 0 && tail[0]!.seq !== store.head(room) + 1) {
      throw new FractalError("internal", `room ${room}: handoff tail starts at ${tail[0]!.seq}, the local copy ends at ${store.head(room)}`);
    }
    // Tails of takeovers running at once (a rebalance moves hundreds of rooms) share one transaction, like sends.
    if (tail.length > 0) await (store.appendAsync ? store.appendAsync(tail, { grouped: true }) : store.append(tail));
    if (head > store.head(room)) {
      // The old owner sends a tail only when it reaches its head without a hole, so this skip should never hide
      // a message; if it does happen, it must be visible in the log.
      if (tail.length > 0) this.d.log.warn({ room, head, local: store.head(room), tail: tail.length }, "handoff head beyond its tail: skipping seqs");
      await store.skipTo(room, head);
    }
    // The checkpoint backlog counts from what the chain holds, which the old owner knows best.
    if (checkpointed > (store.checkpointOf(room)?.seq ?? 0)) store.setCheckpoint(room, { seq: checkpointed, version: "", at: Date.now() });
    return store.head(room);
  }

  /**
   * Before a planned switch: makes the local copy equal the chain while the old owner still serves, so the
   * handoff needs only the tail. Nothing changes hands; a room this node already owns is left alone.
   */
  async prepare(room: string): Promise<{ head: number; ms: number }> {
    const started = performance.now();
    if (this.d.membership.ownerOf(room) === this.d.self) return { head: this.d.rooms.store.head(room), ms: 0 };
    const head = await this.d.rebuilder.exclusive(room, () => this.syncWithChain(room));
    return { head, ms: performance.now() - started };
  }

  /** Makes the local copy equal the chain (which the handoff made complete); returns the head. */
  private async syncWithChain(room: string): Promise<number> {
    const store = this.d.rooms.store;
    const manifest = await this.d.chain.read(room);
    if (manifest === undefined) return store.head(room);
    const localHead = store.head(room);
    const m = manifest.manifest;
    const last = messageAt(store, room, localHead);
    if (localHead === m.head && (m.head === 0 || last?.ts === m.headTs)) return localHead;
    // A copy from an earlier time of ownership may have diverged: replace it (after verifying the chain).
    const result = await restoreRoom(store, this.d.chain, room, manifest, { replace: localHead > 0 });
    return result.head;
  }

  /**
   * Old owner's side: called by the new owner. Adopts the caller's map first, so that this node refuses
   * further writes to the room, then lets in-flight sends commit and checkpoints the room completely.
   */
  async handOff(caller: Caller, room: string, copy: CopyEnd = { since: 0, sinceId: "", sinceTs: 0 }): Promise<Handoff> {
    const { membership, rooms, checkpointer } = this.d;
    if (caller.epoch > membership.epoch) await membership.refresh();
    if (caller.epoch > membership.epoch) throw new FractalError("unavailable", `map epoch ${caller.epoch} is not visible here yet`);
    if (membership.ownerOf(room) === this.d.self) {
      throw new FractalError("wrong_owner", `node ${this.d.self} still owns room ${room} at epoch ${membership.epoch}`, { epoch: membership.epoch });
    }
    // Sends to the room already accepted land first (later ones are refused: this node has the new map).
    await rooms.commits.roomDrained(room);
    const head = rooms.store.head(room);
    const tail = this.tailAfter(room, head, copy);
    if (tail !== undefined) {
      // The new owner commits the tail before it serves the room, and checkpoints it from there.
      this.handedOff(room);
      return { head, tail, checkpointed: rooms.store.checkpointOf(room)?.seq ?? 0 };
    }
    if (head > 0) {
      const result = await checkpointer.flush([room], { force: true });
      if (result.failed > 0) throw new FractalError("unavailable", `could not checkpoint room ${room} for the handoff`);
    }
    this.handedOff(room);
    return { head };
  }

  /** The room is its new owner's now: nothing of it is left to save or to wait for here. */
  private handedOff(room: string): void {
    this.unsavedLost.delete(room);
    this.lostNotHandedOff.delete(room);
    this.d.rooms.peek(room)?.reset();
  }

  /**
   * The messages after the asker's copy, when they can stand in for a checkpoint: its copy ends at a message
   * this node has too (same seq, id and ts: the same history), and everything after it is here without a hole
   * and small enough for one reply.
   */
  private tailAfter(room: string, head: number, copy: CopyEnd): StoredMessage[] | undefined {
    const store = this.d.rooms.store;
    if (copy.since > head || head - copy.since > MAX_TAIL_MESSAGES) return undefined;
    if (copy.since > 0 || copy.sinceId !== "") {
      const mine = messageAt(store, room, copy.since);
      if (mine === undefined || mine.id !== copy.sinceId || mine.ts !== copy.sinceTs) return undefined;
    }
    const tail = head === copy.since ? [] : store.history(room, { after: copy.since, limit: head - copy.since });
    if (tail.length !== head - copy.since || (tail.length > 0 && tail[0]!.seq !== copy.since + 1)) return undefined;
    let bytes = 0;
    for (const m of tail) bytes += m.text.length * 3 + m.id.length + m.user.length + 32;
    return bytes > MAX_TAIL_BYTES ? undefined : tail;
  }

  /**
   * After a map change: rooms this node lost with commits beyond their checkpoint are checkpointed completely
   * (so their new owners find them in the chain even if nobody asks for a handoff), and rooms it gained that
   * have checkpoints are taken over eagerly. Both wait a moment (see below).
   */
  async afterMapChange(concurrency = 8): Promise<{ lost: number; gained: number }> {
    const { membership, rooms } = this.d;
    const lost = rooms.store.rooms().filter((room) => {
      // A room this node owns now was not lost (one lookup in the new ring; most rooms stay).
      if (membership.ownerOf(room) === this.d.self) return false;
      const change = membership.lastOwnerChange(room);
      return change !== undefined && change.from === this.d.self && change.to !== this.d.self;
    });
    for (const room of lost) {
      rooms.peek(room)?.reset();
      this.lostNotHandedOff.add(room);
      // Only rooms with commits beyond their checkpoint need saving: flushing a clean room still reads its
      // manifest, and a rebalance that moves thousands of rooms did that for each of them in the first seconds
      // after the switch, while their takeovers were waiting on this node (pause p50 160-250 ms then, 50-80 after).
      if (this.unsaved(room)) this.unsavedLost.add(room);
    }
    // Listing every chain costs a walk of the whole store: only when this change can have given us rooms (a
    // rebalance that adds a node gives the others none, and all of them listed 10,000 rooms at its busiest moment).
    const mayHaveGained = membership.mayHaveGained(this.d.self);
    if (this.unsavedLost.size === 0 && !mayHaveGained) return { lost: lost.length, gained: 0 };
    // Both wait past the first moments after the switch. Lost rooms: in a planned move the new owners ask for their
    // handoffs in the next seconds (and a handed-off room needs no save here), while the saves' object writes
    // and fsyncs were queueing beside those handoffs and the new owners' first commits; a node that stops
    // meanwhile saves them first (saveLost). Gained rooms: those with traffic are taken over on their first
    // request and a rebalance's own takeovers start at once; the eager pass is for the idle rest, and listing
    // 10,000 chains then competed with both on the new owner's busiest second.
    await new Promise((r) => setTimeout(r, this.d.eagerDelayMs ?? AFTER_SWITCH_DELAY_MS));
    const [gained] = await Promise.all([mayHaveGained ? this.takeOverIdle(concurrency) : 0, this.saveLost()]);
    return { lost: lost.length, gained };
  }

  /**
   * Rooms this node lost at map changes that their new owners have not taken over from it yet (rooms it owns
   * again, e.g. after a drain was undone, are not counted). A draining node tells its clients to go once this
   * is zero: until then their rooms are still moving.
   */
  awaitingHandoff(): number {
    for (const room of this.lostNotHandedOff) if (this.d.membership.ownerOf(room) === this.d.self) this.lostNotHandedOff.delete(room);
    return this.lostNotHandedOff.size;
  }

  /** Rooms lost at a map change with commits beyond their checkpoint, neither handed off nor saved yet. */
  get unsavedLostRooms(): number {
    return this.unsavedLost.size;
  }

  /**
   * Checkpoints the lost rooms not handed off since (completely: their new owner may rebuild them from the
   * chain alone). Also called on a graceful stop, before the final checkpoint (which skips rooms not owned).
   */
  async saveLost(): Promise<void> {
    const rooms = [...this.unsavedLost].filter((room) => this.d.membership.ownerOf(room) !== this.d.self && this.unsaved(room));
    this.unsavedLost.clear();
    if (rooms.length === 0) return;
    const result = await this.d.checkpointer.flush(rooms, { force: true }).catch(() => ({ failed: rooms.length }));
    if (result.failed === 0) return;
    // The object store failed: kept for the next try (a timer's, or the stop's).
    for (const room of rooms) if (this.unsaved(room)) this.unsavedLost.add(room);
    if (this.unsavedLost.size > 0) setTimeout(() => void this.saveLost(), SAVE_LOST_RETRY_MS).unref();
  }

  private unsaved(room: string): boolean {
    const store = this.d.rooms.store;
    return store.head(room) > (store.checkpointOf(room)?.seq ?? 0);
  }

  /** The eager takeover pass over rooms this node gained; returns how many it found. */
  private async takeOverIdle(concurrency: number): Promise<number> {
    const { membership, chain } = this.d;
    // Judged under the newest map: a room taken over meanwhile (or no longer ours) is skipped.
    const gained = (await chain.rooms()).filter((room) => membership.ownerOf(room) === this.d.self && this.needsTakeOver(room));
    let next = 0;
    const worker = async () => {
      while (next < gained.length) {
        const room = gained[next++]!;
        await this.takeOver(room).catch((err: unknown) => this.d.log.warn({ room, err: (err as Error).message }, "eager takeover failed"));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, gained.length) }, worker));
    return gained.length;
  }
}
