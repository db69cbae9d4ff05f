/**
 * Keeping the map current and failing dead nodes over: every second this node polls the map (the safety net
 * behind the pushes that map changers send) and, while its own lease is valid, checks the other nodes'
 * leases; a node whose lease has expired is marked `down` by compare-and-swap (so exactly one change
 * happens however many peers notice), which moves its rooms to their next owners on the ring.
 */
import type { ClusterMapStore, LeaseKeeper, LeaseOptions, LeaseWatcher } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";

export function leaseOptions(ttlMs: number): LeaseOptions {
  // Renew four times per TTL; fence a quarter TTL (at least 1 s) before anyone may declare us dead.
  return { ttlMs, marginMs: Math.max(1000, ttlMs / 4), renewEveryMs: Math.min(1000, ttlMs / 4) };
}

export interface LivenessDeps {
  readonly self: string;
  readonly membership: Membership;
  readonly mapStore: ClusterMapStore;
  readonly lease: LeaseKeeper;
  readonly watcher: LeaseWatcher;
  readonly peers: { get(node: string): { ping(caller: { node: string; epoch: number }): Promise<unknown> } };
  readonly log: Logger;
  readonly pollMs?: number;
}

export class Liveness {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(private readonly d: LivenessDeps) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.d.pollMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Tells every peer about a new map (they refresh when a caller's epoch is ahead of theirs). */
  announce(): void {
    const { membership } = this.d;
    for (const n of membership.map.nodes) {
      if (n.id === this.d.self || n.state === "down") continue;
      void this.d.peers
        .get(n.id)
        .ping({ node: this.d.self, epoch: membership.epoch })
        .catch(() => {});
    }
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const { membership, watcher, mapStore, log } = this.d;
      await membership.refresh().catch((err: unknown) => log.debug({ err: (err as Error).message }, "map poll failed"));
      if (!this.d.lease.valid) return; // a fenced node must not judge others
      // Failed over while cut off, and now back: rejoin (owning nothing until a rebalance).
      if (membership.node(this.d.self)?.state === "down") {
        const { map } = await mapStore.change((m) =>
          m.nodes.some((n) => n.id === this.d.self && n.state === "down")
            ? { nodes: m.nodes.map((n) => (n.id === this.d.self ? { ...n, state: "joining" as const } : n)) }
            : undefined,
        );
        membership.update(map.map);
        log.info({ epoch: map.map.epoch }, "back after being failed over: rejoined as joining");
        this.announce();
      }
      const watched = membership.map.nodes.filter((n) => n.id !== this.d.self && n.state !== "down").map((n) => n.id);
      const expired = await watcher.expired(watched).catch(() => []);
      for (const node of expired) {
        const { map, changed } = await mapStore.change((m) => {
          const target = m.nodes.find((n) => n.id === node);
          if (target === undefined || target.state === "down") return undefined;
          return { nodes: m.nodes.map((n) => (n.id === node ? { ...n, state: "down" as const } : n)) };
        });
        watcher.forget(node);
        if (changed) log.warn({ node, epoch: map.map.epoch }, "lease expired: node marked down, its rooms fail over");
        membership.update(map.map);
        if (changed) this.announce();
      }
    } finally {
      this.running = false;
    }
  }
}
