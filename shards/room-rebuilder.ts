/**
 * Rebuild on start (DESIGN.md invariant 6): rooms this node owns whose checkpoint chain is ahead of the local
 * store (a wiped or lost disk, a corrupt file set aside) are restored from object storage before they are
 * served. While a room is being rebuilt, operations on it wait (`ready`) and then get `unavailable`; they
 * never see an empty room. A rebuild that fails because the store is unreachable is retried with backoff; one
 * that finds the chain corrupt leaves the room unavailable until an operator restores it (admin restore).
 */
import { CheckpointCorruptError } from "./checkpoint-format.js";
import type { CheckpointChain } from "./checkpoint-chain.js";
import { restoreRoom } from "./room-restore.js";
import type { RoomStore } from "./room-store.js";

export interface RebuildProgress {
  readonly roomsDone: number;
  readonly roomsTotal: number;
  readonly messages: number;
}

interface Gate {
  readonly done: Promise<void>;
  release(): void;
  /** Set while the room cannot be served and waiting will not help (corrupt chain). */
  failure: unknown;
}

const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 10_000;

export class RoomUnavailableError extends Error {
  constructor(
    readonly room: string,
    reason: string,
  ) {
    super(`room ${room} is unavailable: ${reason}`);
    this.name = "RoomUnavailableError";
  }
}

export class RoomRebuilder {
  private readonly gates = new Map<string, Gate>();
  private stopped = false;
  /** Until `start` has gated the rooms to rebuild, no room may be served (it might be one of them). */
  private listed: Promise<void> = Promise.resolve();
  /** Whether `listed` has resolved: then `ready` answers without a timer (it runs for every room operation). */
  private isListed = true;
  private releaseListed: () => void = () => {};
  private starting = false;

  constructor(
    private readonly store: RoomStore,
    private readonly chain: CheckpointChain,
    /** Seqs this node may have acknowledged beyond the chain before it lost its disk (checkpoint backlog). */
    private readonly backlog = 0,
    /** Records a skip in the chain before the room opens (so the backlog bound starts from zero again). */
    private readonly saveSkip: (room: string) => Promise<unknown> = async () => {},
    /**
     * Replicated durability: continues a restored room from its replica's copy of what this node acknowledged
     * after the chain. Returns the new head, or undefined when the backlog must be skipped; throws to retry.
     */
    private readonly continueFromReplica?: (room: string, chainHead: number) => Promise<number | undefined>,
  ) {}

  /**
   * Finds the rooms to rebuild (one listing of the object store) and rebuilds them in the background,
   * `concurrency` at a time. Resolves once every such room is gated, so no request reaches a room before its
   * rebuild; `done` resolves when all are rebuilt or given up on.
   */
  /**
   * Holds every room until `start` has found the rooms to rebuild. A node calls this before it can receive
   * requests, so a wiped node never answers for a room it is about to rebuild.
   */
  holdUntilStarted(): void {
    this.starting = true;
    this.isListed = false;
    this.listed = new Promise((resolve) => (this.releaseListed = resolve));
    void this.listed.then(() => (this.isListed = true));
  }

  async start(
    owns: (room: string) => boolean,
    options: { concurrency?: number; onProgress?: (p: RebuildProgress) => void; onError?: (room: string, err: unknown) => void } = {},
  ): Promise<{ rooms: number; done: Promise<RebuildProgress> }> {
    const rooms = (await this.chain.rooms()).filter(owns);
    const queue = rooms.map((room) => ({ room, gate: this.gate(room), restored: false }));
    this.starting = false;
    this.releaseListed();
    let roomsDone = 0;
    let messages = 0;
    const worker = async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
        for (let delay = RETRY_MIN_MS; !this.stopped; delay = Math.min(RETRY_MAX_MS, delay * 2)) {
          try {
            const manifest = await this.chain.read(item.room);
            // `restored`: an attempt restored the rows and then failed (asking the replica): finish it.
            if (manifest !== undefined && (item.restored || manifest.manifest.head > this.store.head(item.room))) {
              if (!item.restored) {
                const { restored } = await restoreRoom(this.store, this.chain, item.room, manifest);
                messages += restored;
                item.restored = true;
              }
              // The lost disk may have held acknowledged seqs beyond the chain: take them from the room's replica,
              // or never give them out again.
              if (this.backlog > 0 && (await this.continueFromReplica?.(item.room, manifest.manifest.head)) === undefined) {
                await this.store.skipTo(item.room, manifest.manifest.head + this.backlog);
                await this.saveSkip(item.room);
              }
            }
            this.open(item.room, item.gate);
            break;
          } catch (err) {
            options.onError?.(item.room, err);
            if (err instanceof CheckpointCorruptError) {
              item.gate.failure = err;
              break;
            }
            await new Promise((r) => setTimeout(r, delay).unref());
          }
        }
        roomsDone++;
        options.onProgress?.({ roomsDone, roomsTotal: rooms.length, messages });
      }
    };
    const workers = Array.from({ length: Math.min(options.concurrency ?? 16, Math.max(1, rooms.length)) }, worker);
    const done = Promise.all(workers).then(() => ({ roomsDone, roomsTotal: rooms.length, messages }));
    return { rooms: rooms.length, done };
  }

  stop(): void {
    this.stopped = true;
  }

  /** Resolves when the room may be served; throws RoomUnavailableError after `timeoutMs` or at once if failed. */
  async ready(room: string, timeoutMs: number): Promise<void> {
    if (this.isListed && !this.gates.has(room)) return;
    let startTimer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.listed,
        new Promise((_, reject) => {
          startTimer = setTimeout(() => reject(new RoomUnavailableError(room, "the node is still starting")), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(startTimer);
    }
    const gate = this.gates.get(room);
    if (gate === undefined) return;
    if (gate.failure !== undefined) throw new RoomUnavailableError(room, String((gate.failure as Error).message ?? gate.failure));
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        gate.done,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new RoomUnavailableError(room, "it is being rebuilt from object storage")), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  isGated(room: string): boolean {
    return this.gates.has(room) || this.starting;
  }

  /** Rooms gated now, with why: "rebuilding" or the failure. */
  gated(): { room: string; state: string }[] {
    return [...this.gates].map(([room, g]) => ({ room, state: g.failure === undefined ? "rebuilding" : `failed: ${(g.failure as Error).message}` }));
  }

  /**
   * Runs `work` with the room gated (operations on it wait until it is done): an operator's point-in-time
   * restore. Takes over a room whose rebuild failed; waits for a rebuild in progress.
   */
  async exclusive<T>(room: string, work: () => Promise<T>): Promise<T> {
    for (let g = this.gates.get(room); g !== undefined && g.failure === undefined; g = this.gates.get(room)) await g.done;
    const gate = this.gate(room);
    try {
      return await work();
    } finally {
      this.open(room, gate);
    }
  }

  private gate(room: string): Gate {
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const gate: Gate = { done, release, failure: undefined };
    this.gates.set(room, gate);
    return gate;
  }

  private open(room: string, gate: Gate): void {
    if (this.gates.get(room) === gate) this.gates.delete(room);
    gate.release();
  }
}
