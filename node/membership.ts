/**
 * This node's view of the cluster: the newest cluster map it knows and the ring derived from it. Maps only
 * move forward (higher epoch); listeners hear about every change so routes and subscriptions can follow.
 */
import { type ClusterMap, findNode, type NodeDescriptor, Ring } from "../shards/index.js";

export type MapListener = (map: ClusterMap, previous: ClusterMap) => void;

export class Membership {
  private current: ClusterMap;
  private currentRing: Ring;
  private readonly listeners: MapListener[] = [];

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
    this.current = map;
    this.currentRing = new Ring(map);
    for (const listener of this.listeners) listener(map, previous);
    return true;
  }

  /** Asks the source of truth for a newer map (after a wrong_owner answer, for instance). */
  async refresh(): Promise<void> {
    this.update(await this.source());
  }

  onChange(listener: MapListener): void {
    this.listeners.push(listener);
  }
}
