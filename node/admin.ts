/**
 * Operator commands behind `fractal admin`: checkpoint, restore and status. LocalAdmin serves them on this
 * node (for peers over gRPC, and in-process); ClusterAdmin runs them across the cluster from whichever node
 * the operator asked, routing room commands to the room's owner.
 */
import { FractalError, homeOf, type CheckpointRoundResult, type RestoreProgress, type RestoreResult, type RoomCheckpointStatus } from "../shards/index.js";
import type { Membership } from "./membership.js";
import type { LocalOwner } from "./owner.js";
import type { Caller, OwnerApi, RoomInfo } from "./room-api.js";
import type { OwnershipTransfer } from "./transfer.js";

export interface NodeStatus {
  readonly node: string;
  readonly http: string;
  readonly region: string;
  readonly epoch: number;
  readonly clients: number;
  readonly roomsOwned: number;
  readonly dirtyRooms: number;
  readonly lagMessages: number;
  readonly lagSeconds: number;
  readonly rooms: RoomCheckpointStatus[];
  readonly gated: string[];
  readonly uptimeSeconds: number;
  /** `local` or `replicated` (--durability). */
  readonly durability: string;
}

export interface StatusQuery {
  readonly rooms: boolean;
  readonly room?: string | undefined;
}

/** Contract: room commands must reach the room's owner (wrong_owner otherwise); node commands any node. */
export interface AdminApi extends Pick<OwnerApi, "info"> {
  checkpoint(caller: Caller, room: string | undefined): Promise<CheckpointRoundResult>;
  restore(caller: Caller, room: string, toSeq: number | undefined, onProgress: (p: RestoreProgress) => void): Promise<RestoreResult>;
  nodeStatus(caller: Caller, query: StatusQuery): Promise<NodeStatus>;
  /** Rooms the node stores, with their heads (for the rebalance planner). */
  listRooms(caller: Caller): Promise<{ room: string; head: number }[]>;
  /** Takes rooms over now (the node must own them under its map); reports each room as it is done. */
  /** With `prepare`: only copy the rooms from the chain ahead of a switch (pauseMs is then the copy's time). */
  takeOver(
    caller: Caller,
    rooms: string[],
    concurrency: number,
    onRoom: (r: { room: string; head: number; pauseMs: number; error: string }) => void,
    options?: { prepare?: boolean },
  ): Promise<void>;
}

export interface LocalAdminDeps {
  readonly owner: LocalOwner;
  readonly transfer: OwnershipTransfer;
  readonly membership: Membership;
  readonly region: string;
  readonly http: string;
  readonly clients: () => number;
  readonly gated: () => string[];
  readonly checkpointLag: () => { rooms: number; seq: number; seconds: number };
  readonly roomsOwned: () => number;
  readonly durability: string;
}

export class LocalAdmin implements AdminApi {
  private readonly started = Date.now();

  constructor(private readonly deps: LocalAdminDeps) {}

  checkpoint(_caller: Caller, room: string | undefined): Promise<CheckpointRoundResult> {
    return this.deps.owner.checkpoint(room);
  }

  restore(_caller: Caller, room: string, toSeq: number | undefined, onProgress: (p: RestoreProgress) => void): Promise<RestoreResult> {
    return this.deps.owner.restore(room, toSeq, onProgress);
  }

  info(caller: Caller, room: string): Promise<RoomInfo> {
    return this.deps.owner.info(caller, room);
  }

  async listRooms(_caller: Caller): Promise<{ room: string; head: number }[]> {
    const store = this.deps.owner.rooms.store;
    return store.rooms().map((room) => ({ room, head: store.head(room) }));
  }

  async takeOver(
    caller: Caller,
    rooms: string[],
    concurrency: number,
    onRoom: (r: { room: string; head: number; pauseMs: number; error: string }) => void,
    options: { prepare?: boolean } = {},
  ): Promise<void> {
    const { membership, transfer, owner } = this.deps;
    if (caller.epoch > membership.epoch) await membership.refresh();
    let next = 0;
    const worker = async () => {
      while (next < rooms.length) {
        const room = rooms[next++]!;
        try {
          if (options.prepare === true) {
            const r = await transfer.prepare(room);
            onRoom({ room, head: r.head, pauseMs: Math.round(r.ms), error: "" });
            continue;
          }
          if (membership.ownerOf(room) !== membership.self) throw new FractalError("wrong_owner", `not the owner of ${room}`);
          const r = transfer.needsTakeOver(room) ? await transfer.takeOver(room) : { head: owner.rooms.store.head(room), pauseMs: 0 };
          onRoom({ room, head: r.head, pauseMs: Math.round(r.pauseMs), error: "" });
        } catch (err) {
          onRoom({ room, head: 0, pauseMs: 0, error: (err as Error).message || "failed" });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, 256, rooms.length)) }, worker));
    // The copies were bulk appends: fold them into the file now, before the switch, not at the first takeovers'
    // commits and reads (which then paid for a WAL of a quarter of a million messages).
    if (options.prepare === true) await owner.rooms.store.compact?.().catch(() => undefined);
  }

  async nodeStatus(_caller: Caller, query: StatusQuery): Promise<NodeStatus> {
    const lag = this.deps.checkpointLag();
    const rooms = query.room !== undefined ? this.deps.owner.checkpointStatus([query.room]) : query.rooms ? this.deps.owner.checkpointStatus() : [];
    return {
      node: this.deps.membership.self,
      http: this.deps.http,
      region: this.deps.region,
      epoch: this.deps.membership.epoch,
      clients: this.deps.clients(),
      roomsOwned: this.deps.roomsOwned(),
      dirtyRooms: lag.rooms,
      lagMessages: lag.seq,
      lagSeconds: lag.seconds,
      rooms,
      gated: this.deps.gated(),
      uptimeSeconds: (Date.now() - this.started) / 1000,
      durability: this.deps.durability,
    };
  }
}

/** What a node's lease says: when it was last renewed (by that node's clock) and for how long it holds. */
export interface LeaseView {
  readonly renewedAt: number;
  readonly ttlMs: number;
}

export class ClusterAdmin {
  constructor(
    private readonly membership: Membership,
    private readonly local: AdminApi,
    private readonly peers: { get(node: string): AdminApi },
    /** Reads a node's lease from the object store (undefined: none, e.g. stopped or failed over). */
    private readonly leaseOf: (node: string) => Promise<LeaseView | undefined> = async () => undefined,
  ) {}

  async status(query: StatusQuery) {
    const map = this.membership.map;
    const nodes = await Promise.all(
      map.nodes.map(async (n) => {
        // The lease is read from the object store, so a node that does not answer still shows how long ago
        // it last renewed (an unreachable node with a fresh lease is slow or cut off from us, not dead).
        const [lease, status] = await Promise.all([
          this.leaseOf(n.id).catch(() => undefined),
          this.apiOf(n.id)
            .nodeStatus(this.caller(), query)
            .then((s) => ({ ...s, reachable: true as const }), (err: unknown) => ({ node: n.id, reachable: false as const, error: (err as Error).message })),
        ]);
        const leaseAgeSeconds = lease === undefined ? null : Math.max(0, (Date.now() - lease.renewedAt) / 1000);
        const leaseTtlSeconds = lease === undefined ? null : lease.ttlMs / 1000;
        return { ...status, state: n.state, leaseAgeSeconds, leaseTtlSeconds };
      }),
    );
    return { self: this.membership.self, epoch: map.epoch, nodes };
  }

  /** Where a room lives: its home region (fractal shape: ring of regions, then ring of nodes) and owner. */
  async room(room: string) {
    const ring = this.membership.ring;
    const info = await this.apiOf(this.ownerOf(room)).info(this.caller(), room);
    return { ...info, region: ring.region(room), pinned: homeOf(this.membership.map, room) !== undefined, epoch: this.membership.epoch };
  }

  async checkpoint(room: string | undefined): Promise<CheckpointRoundResult & { nodes: number }> {
    if (room !== undefined) return { ...(await this.apiOf(this.ownerOf(room)).checkpoint(this.caller(), room)), nodes: 1 };
    const results = await Promise.all(this.membership.ring.nodeIds.map((id) => this.apiOf(id).checkpoint(this.caller(), undefined)));
    const total = { rooms: 0, messages: 0, failed: 0, nodes: results.length };
    for (const r of results) {
      total.rooms += r.rooms;
      total.messages += r.messages;
      total.failed += r.failed;
    }
    return total;
  }

  restore(room: string, toSeq: number | undefined, onProgress: (p: RestoreProgress) => void): Promise<RestoreResult> {
    return this.apiOf(this.ownerOf(room)).restore(this.caller(), room, toSeq, onProgress);
  }

  private ownerOf(room: string): string {
    const owner = this.membership.ownerOf(room);
    if (owner === undefined) throw new FractalError("unavailable", "no node can own rooms right now");
    return owner;
  }

  private apiOf(node: string): AdminApi {
    return node === this.membership.self ? this.local : this.peers.get(node);
  }

  private caller(): Caller {
    return { node: this.membership.self, epoch: this.membership.epoch };
  }
}
