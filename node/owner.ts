/**
 * The owner side of room operations: checks that this node owns the room under its newest map (fencing,
 * DESIGN.md invariant 1), then hands the operation to the room actor. Served to local callers directly and
 * to peers through the gRPC server.
 */
import {
  FractalError,
  RoomUnavailableError,
  type Checkpointer,
  type CheckpointChain,
  type HistoryQuery,
  type OwnedRooms,
  type RestoreProgress,
  type RestoreResult,
  restoreRoom,
  type RoomListener,
  type RoomRebuilder,
  type SendRecord,
  type StoredMessage,
} from "../shards/index.js";
import type { Membership } from "./membership.js";
import type { Caller, JoinResult, OwnerApi, OwnerEvents, RoomInfo } from "./room-api.js";

export class LocalOwner implements OwnerApi, OwnerEvents {
  /** False while the node is stopping: it then refuses new writes with unavailable. */
  accepting = true;
  /** Whether this node's lease is valid (self-fencing: without it, no writes). */
  leaseValid: () => boolean = () => true;
  /** Makes a gained room's local copy complete before it is served (set by the composition root). */
  settle: (room: string) => Promise<void> = async () => {};
  /** Whether `settle` has work to do for the room. */
  needsSettle: (room: string) => boolean = () => false;
  /**
   * Replicated durability: resolves once the room's replica has confirmed the local copy (after a restart or a
   * takeover nothing beyond the checkpoint may be shown before); `needsReplicaSync` says whether it must wait.
   */
  replicaReady: (room: string, timeoutMs: number) => Promise<void> = async () => {};
  needsReplicaSync: (room: string) => boolean = () => false;
  /** Called when a restore replaced the room's rows (its replica's copy is of another history now). */
  restored: (room: string) => void = () => {};

  constructor(
    private readonly self: string,
    private readonly membership: Membership,
    readonly rooms: OwnedRooms,
    private readonly durability: {
      readonly rebuilder: RoomRebuilder;
      readonly chain: CheckpointChain;
      readonly checkpointer: Checkpointer;
    },
    /** How long an operation waits for a room being rebuilt before answering unavailable. */
    private readonly rebuildWaitMs = 2000,
    /** Most messages a room may hold that are acknowledged but not in object storage yet. */
    private readonly backlog = Number.MAX_SAFE_INTEGER,
  ) {}

  async join(caller: Caller, room: string, user: string): Promise<JoinResult> {
    const actor = (await this.owned(room));
    const members = actor.join(user, caller.node);
    return { seq: actor.head, members };
  }

  async leave(caller: Caller, room: string, user: string): Promise<void> {
    (await this.owned(room)).leave(user, caller.node);
    this.rooms.evictIfIdle(room);
  }

  async send(caller: Caller, room: string, user: string, id: string, text: string): Promise<SendRecord> {
    if (!this.accepting) throw new FractalError("unavailable", `node ${this.self} is stopping`);
    const actor = await this.owned(room);
    // Checked after every await: the lease or the map may have changed meanwhile. From here to the enqueue
    // nothing yields, so a write is accepted only by a node that owns the room and holds its lease now.
    if (!this.leaseValid()) throw new FractalError("unavailable", `node ${this.self} cannot renew its lease; refusing writes`);
    this.checkOwner(room);
    // The backlog bound is what makes failover safe: a dead owner can have acknowledged at most `backlog`
    // seqs beyond the chain, so its successor starts after them and no seq is ever given twice.
    const unsaved = actor.assignedSeq - (this.rooms.store.checkpointOf(room)?.seq ?? 0);
    if (unsaved >= this.backlog) {
      void this.durability.checkpointer.flush([room]).catch(() => undefined);
      throw new FractalError("unavailable", `room ${room} has ${unsaved} messages not yet in object storage; retry shortly`);
    }
    return actor.send({ user, id, text });
  }

  async history(caller: Caller, room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    return (await this.owned(room)).history(query);
  }

  async typing(caller: Caller, room: string, user: string): Promise<void> {
    (await this.owned(room)).typing(user);
  }

  async info(caller: Caller, room: string): Promise<RoomInfo> {
    const actor = (await this.owned(room));
    return { room, owner: this.self, seq: actor.head, members: actor.members() };
  }

  subscribe(caller: Caller, room: string, listener: RoomListener): void {
    this.checkOwner(room);
    if (!this.durability.rebuilder.isGated(room) && !this.needsSettle(room) && !this.needsReplicaSync(room)) {
      return this.rooms.get(room).subscribe(caller.node, listener);
    }
    // A room being rebuilt answers its subscribers once it is complete (the head event comes then).
    this.owned(room).then(
      (actor) => actor.subscribe(caller.node, listener),
      (err: unknown) => listener({ room, type: "refused", code: err instanceof FractalError ? err.code : "internal" }),
    );
  }

  unsubscribe(caller: Caller, room: string): void {
    this.rooms.peek(room)?.unsubscribe(caller.node);
    this.rooms.evictIfIdle(room);
  }

  /** A peer's event stream closed: forget its subscriptions and the presence it reported. */
  forgetNode(node: string): void {
    for (const room of [...this.rooms.all()]) {
      room.unsubscribe(node);
      room.dropNode(node);
      this.rooms.evictIfIdle(room.id);
    }
  }

  /** The room's actor, once this node is sure it owns the room and the room's state is complete. */
  private async owned(room: string) {
    this.checkOwner(room);
    await this.settle(room);
    try {
      await this.durability.rebuilder.ready(room, this.rebuildWaitMs);
    } catch (err) {
      if (err instanceof RoomUnavailableError) throw new FractalError("unavailable", err.message);
      throw err;
    }
    await this.replicaReady(room, this.rebuildWaitMs);
    this.checkOwner(room);
    return this.rooms.get(room);
  }

  private checkOwner(room: string): void {
    const owner = this.membership.ownerOf(room);
    if (owner !== this.self) {
      throw new FractalError("wrong_owner", `node ${this.self} does not own room ${room} at epoch ${this.membership.epoch}`, {
        epoch: this.membership.epoch,
      });
    }
  }

  /** Writes the room's (or every dirty room's) new messages to object storage now. */
  async checkpoint(room?: string): Promise<{ rooms: number; messages: number; failed: number }> {
    if (room === undefined) return this.durability.checkpointer.flush();
    await this.owned(room);
    return this.durability.checkpointer.flush([room]);
  }

  /**
   * Point-in-time restore: rebuilds the room from its checkpoint chain up to `toSeq` (default: the chain's
   * head), verifying checksums and contiguity, and cuts the chain there so later checkpoints continue from it.
   * The room is closed to operations meanwhile; its subscribers are re-attached afterwards.
   */
  async restore(room: string, toSeq: number | undefined, onProgress?: (p: RestoreProgress) => void): Promise<RestoreResult> {
    this.checkOwner(room);
    const { rebuilder, chain, checkpointer } = this.durability;
    return rebuilder.exclusive(room, async () => {
      await this.rooms.commits.drained();
      // Whatever SQLite has beyond the chain goes into the chain first, so any seq up to the local head can
      // be restored (and nothing committed is lost when the operator restores to the latest state).
      await checkpointer.flush([room]).catch(() => undefined);
      const current = await chain.read(room);
      if (current === undefined) throw new FractalError("not_found", `room ${room} has no checkpoint`);
      const target = Math.min(toSeq ?? current.manifest.head, current.manifest.head);
      const result = await restoreRoom(this.rooms.store, chain, room, current, { toSeq: target, replace: true, onProgress });
      if (target < current.manifest.head) {
        const straddle = current.manifest.segments.find((s) => s.from <= target && s.to > target);
        const part = straddle === undefined ? [] : this.rooms.store.history(room, { after: straddle.from - 1, limit: target - straddle.from + 1 });
        const cut = await chain.truncate(room, current, target, part, { node: this.self, epoch: this.membership.epoch });
        this.rooms.store.setCheckpoint(room, { seq: cut.manifest.head, version: cut.version, at: Date.now() });
      }
      checkpointer.forget(room);
      this.restored(room);
      this.rooms.peek(room)?.reset();
      return result;
    });
  }

  checkpointStatus(rooms?: readonly string[]) {
    return this.durability.checkpointer.status(rooms);
  }
}
