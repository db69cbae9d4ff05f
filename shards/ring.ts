/**
 * Room ownership: an immutable ring built from one cluster map. Every node computes the same owner for a
 * room from the same map, because the ring depends only on the set of owner node ids.
 */
import HashRing from "hashring";
import { type ClusterMap, ownerNodes } from "./cluster-map.js";

/** Virtual nodes per node: 160 gives a spread within a few percent of even for 3-10 nodes. */
const VNODES = 160;

export class Ring {
  readonly epoch: number;
  readonly nodeIds: readonly string[];
  private readonly ring: HashRing | undefined;

  constructor(map: ClusterMap) {
    this.epoch = map.epoch;
    this.nodeIds = ownerNodes(map)
      .map((n) => n.id)
      .sort();
    // hashring's cache makes repeated lookups of hot rooms cheap; the ring itself never changes.
    this.ring =
      this.nodeIds.length === 0
        ? undefined
        : new HashRing([...this.nodeIds], "md5", { "vnode count": VNODES, "max cache size": 50_000 });
  }

  /** The node that owns `room`, or undefined when no node can own rooms. */
  owner(room: string): string | undefined {
    return this.ring?.get(room);
  }

  /** The owner followed by the next distinct nodes on the ring (replicas, next owners). */
  successors(room: string, count: number): string[] {
    if (this.ring === undefined) return [];
    return this.ring.range(room, Math.min(count, this.nodeIds.length));
  }
}
