/**
 * A draining node (`fractal admin drain <id>`) sends its clients elsewhere once its rooms have moved:
 * - readiness turns 503 as soon as the map says `draining`, so load balancers send no new clients here;
 * - when every room it lost has been handed off to its new owner (or after DRAIN_WAIT_MS, if some new owner
 *   never asks), it closes its clients' connections a batch at a time. socket.io clients reconnect by
 *   themselves (through the load balancer: to another node) and resume their rooms with `since`, so they see a
 *   pause and no gap. Closing them only after the handoffs keeps a reconnect storm out of the move's pauses.
 * Clients that come back here directly (no load balancer) are served as before, until the node is stopped.
 */
import type { ClusterMap } from "../shards/index.js";
import type { Logger } from "./log.js";

/** Longest wait for the drain's handoffs before the clients are sent away anyway. */
const DRAIN_WAIT_MS = 30_000;
/** Clients are closed over this long, in batches, not all at once. */
const RELEASE_SPREAD_MS = 2_000;
const POLL_MS = 200;

export interface DrainDeps {
  readonly self: string;
  /** Rooms this node lost that their new owners have not taken over yet. */
  readonly awaitingHandoff: () => number;
  /** Closes every client connection, spread over `spreadMs`; resolves with how many were closed. */
  readonly releaseClients: (spreadMs: number) => Promise<number>;
  readonly log: Logger;
  readonly waitMs?: number;
}

export class DrainWatch {
  private isDraining = false;
  /** Bumped at every start of a drain: a release loop of an earlier, undone drain stops. */
  private drains = 0;

  constructor(private readonly d: DrainDeps) {}

  /** True while the cluster map says this node is draining. */
  get draining(): boolean {
    return this.isDraining;
  }

  onMapChange(map: ClusterMap): void {
    const draining = map.nodes.find((n) => n.id === this.d.self)?.state === "draining";
    if (draining === this.isDraining) return;
    this.isDraining = draining;
    if (draining) void this.release(++this.drains).catch((err: unknown) => this.d.log.warn({ err: (err as Error).message }, "could not release clients"));
  }

  private async release(drain: number): Promise<void> {
    const started = Date.now();
    const waitMs = this.d.waitMs ?? DRAIN_WAIT_MS;
    const current = () => this.isDraining && this.drains === drain;
    this.d.log.info("draining: not ready for new clients; clients are sent elsewhere once the rooms have moved");
    while (current() && this.d.awaitingHandoff() > 0 && Date.now() - started < waitMs) {
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    if (!current()) return;
    const left = this.d.awaitingHandoff();
    const clients = await this.d.releaseClients(RELEASE_SPREAD_MS);
    this.d.log.info({ clients, waitedMs: Date.now() - started, roomsNotHandedOff: left }, "draining: clients told to reconnect elsewhere");
  }
}
