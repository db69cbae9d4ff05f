/**
 * Room ownership: an immutable value built from one cluster map. Every node computes the same owner for a
 * room from the same map, because it depends only on the owner nodes' ids and regions and the map's homes.
 *
 * The fractal shape: a ring of regions picks a room's home region (unless the map pins it), then that region's
 * ring of nodes picks its home node. With one region this is a plain ring of nodes.
 */
import HashRing from "hashring";
import { type ClusterMap, homeOf, ownerNodes } from "./cluster-map.js";

/** Virtual nodes per node: 160 gives a spread within a few percent of even for 3-10 nodes. */
const VNODES = 160;
/** Bound of each ring's owner cache (rooms); past it the cache starts over. */
const MAX_CACHED_OWNERS = 50_000;

/**
 * Stands in for hashring's own LRU cache (simple-lru-cache), which keeps its entries in a plain object: a room
 * named "constructor" found Object there, wrote to the global Object and corrupted the cache's list, and from
 * then on a lookup of any new room threw, so the node could route no new room until restarted (found by
 * test/cluster/fuzz.test.ts). Owners are cached in a Map in front of the rings (see owner), so this one caches
 * nothing.
 */
const NO_CACHE = { get: () => undefined, set: () => undefined, del: () => undefined, reset: () => undefined, forEach: () => undefined };

const NO_PINS: Readonly<Record<string, string>> = Object.freeze({});

function hashRing(servers: string[]): HashRing {
  const ring = new HashRing(servers, "md5", { "vnode count": VNODES });
  (ring as unknown as { cache: typeof NO_CACHE }).cache = NO_CACHE;
  return ring;
}

export class Ring {
  readonly epoch: number;
  readonly nodeIds: readonly string[];
  readonly regions: readonly string[];
  private readonly regionRing: HashRing | undefined;
  private readonly nodeRings = new Map<string, { ring: HashRing; size: number }>();
  private readonly owners = new Map<string, string | undefined>();

  constructor(private readonly map: ClusterMap) {
    this.epoch = map.epoch;
    const owners = ownerNodes(map);
    this.nodeIds = owners.map((n) => n.id).sort();
    this.regions = [...new Set(owners.map((n) => n.region))].sort();
    this.regionRing = this.regions.length === 0 ? undefined : hashRing([...this.regions]);
    for (const region of this.regions) {
      const ids = owners.filter((n) => n.region === region).map((n) => n.id).sort();
      this.nodeRings.set(region, { ring: hashRing(ids), size: ids.length });
    }
  }

  /** Rooms pinned to a home region by the map (`fractal admin move-room`). */
  get pins(): Readonly<Record<string, string>> {
    return this.map.homes ?? NO_PINS;
  }

  /** The room's home region: pinned by the map, or picked by the ring of regions. */
  region(room: string): string | undefined {
    const pinned = homeOf(this.map, room);
    if (pinned !== undefined && this.nodeRings.has(pinned)) return pinned;
    // One region needs no hashing (an md5 per lookup: a new map's first pass over 10,000 rooms took 300 ms).
    if (this.regions.length === 1) return this.regions[0];
    return this.regionRing?.get(room);
  }

  /** The node that owns `room`, or undefined when no node can own rooms. */
  owner(room: string): string | undefined {
    // Asked several times per room operation and for every room on a map change; hashring's own LRU cache
    // costs microseconds per hit, a Map nanoseconds (the ring never changes, so entries never go stale).
    const cached = this.owners.get(room);
    if (cached !== undefined || this.owners.has(room)) return cached;
    const region = this.region(room);
    const owner = region === undefined ? undefined : this.nodeRings.get(region)?.ring.get(room);
    if (this.owners.size >= MAX_CACHED_OWNERS) this.owners.clear();
    this.owners.set(room, owner);
    return owner;
  }

  /** The owner followed by the next distinct nodes of its region's ring (replicas, next owners). */
  successors(room: string, count: number): string[] {
    const region = this.region(room);
    const r = region === undefined ? undefined : this.nodeRings.get(region);
    if (r === undefined) return [];
    return r.ring.range(room, Math.min(count, r.size));
  }
}
