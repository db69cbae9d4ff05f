/**
 * This node's view of the cluster: the newest cluster map it knows and the ring derived from it. Maps only
 * move forward (higher epoch); listeners hear about every change so routes and subscriptions can follow.
 */
import { type ClusterMap, findNode, type NodeDescriptor, Ring } from "../shards/index.js";

export type MapListener = (map: ClusterMap, previous: ClusterMap) => void;

/** One change of the map, kept so a node can tell which rooms it gained and from whom. */
export interface Transition {
  readonly epoch: number;
  readonly previous: Ring;
  readonly next: Ring;
}

const HISTORY = 32;
/** Bound of the lastOwnerChange cache (rooms); past it the cache starts over. */
const MAX_CACHED_CHANGES = 200_000;

export class Membership {
  private current: ClusterMap;
  private currentRing: Ring;
  private readonly listeners: MapListener[] = [];
  private readonly history: Transition[] = [];
  private historyTruncated = false;
  /**
   * lastOwnerChange answers of the current map, by room: it is asked for every room operation (is a takeover
   * due?), and a room that never moved walks every remembered change. Cleared when the map changes.
   */
  private readonly changes = new Map<string, ReturnType<Membership["lastOwnerChange"]>>();
  private refreshing: Promise<void> | undefined;
  private nextRefresh: Promise<void> | undefined;

  constructor(
    readonly self: string,
    initial: ClusterMap,
    /** Fetches the newest map from its source of truth; static membership returns the same map. */
    private readonly source: () => Promise<ClusterMap> = async () => initial,
  ) {
    this.current = initial;
    this.currentRing = new Ring(initial);
  }

  get map(): ClusterMap {
    return this.current;
  }

  get ring(): Ring {
    return this.currentRing;
  }

  get epoch(): number {
    return this.current.epoch;
  }

  ownerOf(room: string): string | undefined {
    return this.currentRing.owner(room);
  }

  node(id: string): NodeDescriptor | undefined {
    return findNode(this.current, id);
  }

  /** Adopts `map` if it is newer than the current one. */
  update(map: ClusterMap): boolean {
    if (map.epoch <= this.current.epoch) return false;
    const previous = this.current;
    const previousRing = this.currentRing;
    this.current = map;
    this.currentRing = new Ring(map);
    this.history.push({ epoch: map.epoch, previous: previousRing, next: this.currentRing });
    this.changes.clear();
    if (this.history.length > HISTORY) {
      this.history.shift();
      this.historyTruncated = true;
    }
    for (const listener of this.listeners) listener(map, previous);
    return true;
  }

  /**
   * Asks the source of truth for a newer map (after a wrong_owner answer, for instance). Callers that come while
   * a read runs share the next one: its answer may predate their reason to ask, but during a room move hundreds
   * of requests a second ask at once, and each read the map from the object store.
   */
  refresh(): Promise<void> {
    if (this.refreshing === undefined) {
      this.refreshing = this.source()
        .then((map) => void this.update(map))
        .finally(() => (this.refreshing = undefined));
      return this.refreshing;
    }
    this.nextRefresh ??= this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.nextRefresh = undefined;
        return this.refresh();
      });
    return this.nextRefresh;
  }

  /**
   * The newest map change (since this process started) that moved `room` to another owner, or undefined if
   * none did. `uncertain` is set when older changes were forgotten, so the answer may be incomplete.
   */
  lastOwnerChange(room: string): { epoch: number; from: string | undefined; to: string | undefined; uncertain: boolean } | undefined {
    if (this.history.length === 0) return undefined;
    if (this.changes.has(room)) return this.changes.get(room);
    const change = this.findOwnerChange(room);
    if (this.changes.size >= MAX_CACHED_CHANGES) this.changes.clear();
    this.changes.set(room, change);
    return change;
  }

  private findOwnerChange(room: string): ReturnType<Membership["lastOwnerChange"]> {
    for (let i = this.history.length - 1; i >= 0; i--) {
      const t = this.history[i]!;
      const from = t.previous.owner(room);
      const to = t.next.owner(room);
      if (from !== to) return { epoch: t.epoch, from, to, uncertain: false };
    }
    return this.historyTruncated ? { epoch: this.history[0]?.epoch ?? 0, from: undefined, to: this.ownerOf(room), uncertain: true } : undefined;
  }

  /**
   * The ring of map `epoch`, if this node saw that map (since it started, within the remembered changes).
   * Maps it skipped (two changes between polls) are unknown: callers must not assume anything about them.
   */
  ringAt(epoch: number): Ring | undefined {
    if (this.currentRing.epoch === epoch) return this.currentRing;
    for (const t of this.history) {
      if (t.previous.epoch === epoch) return t.previous;
      if (t.next.epoch === epoch) return t.next;
    }
    return undefined;
  }

  /**
   * Whether the newest map change can have given `node` rooms. Consistent hashing only ever moves rooms to nodes
   * that joined a ring: unless `node` itself became an owner, an owner or region left, or a room's home was
   * pinned elsewhere, `node` only lost rooms (a rebalance that adds nodes), and nothing needs listing.
   */
  mayHaveGained(node: string): boolean {
    const t = this.history[this.history.length - 1];
    if (t === undefined) return false;
    const before = new Set(t.previous.nodeIds);
    if (!before.has(node) && t.next.nodeIds.includes(node)) return true;
    const after = new Set(t.next.nodeIds);
    if ([...before].some((n) => !after.has(n))) return true;
    if (t.previous.regions.some((r) => !t.next.regions.includes(r))) return true;
    return JSON.stringify(t.previous.pins) !== JSON.stringify(t.next.pins);
  }

  onChange(listener: MapListener): void {
    this.listeners.push(listener);
  }
}
