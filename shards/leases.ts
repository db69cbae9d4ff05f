/**
 * Liveness by leases in the object store (`leases/<node>.json`), renewed every second.
 *
 * Clock-safe by construction: nobody compares wall clocks. The holder measures from the moment it *sent* its
 * last successful renewal and stops accepting writes once `ttl - margin` has passed without another
 * (self-fencing). An observer measures from the moment it first *saw* the current version of a lease and
 * declares it expired only after `ttl` more without a change. Since the observer saw the write after it was
 * sent, the holder always fences itself before any observer can declare it dead.
 */
import type { ObjectStore } from "./object-store.js";

export function leaseKey(node: string): string {
  return `leases/${node}.json`;
}

export interface LeaseOptions {
  readonly ttlMs: number;
  /** The holder fences itself this long before an observer could declare the lease expired. */
  readonly marginMs: number;
  readonly renewEveryMs: number;
  readonly clock?: () => number;
  /** Written into the lease with every renewal, for peers that outlive the holder (e.g. its durability mode). */
  readonly details?: Readonly<Record<string, string>>;
}

export class LeaseKeeper {
  private lastRenewalSentAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;
  private readonly clock: () => number;
  private failures = 0;

  constructor(
    private readonly objects: ObjectStore,
    private readonly node: string,
    private readonly options: LeaseOptions,
    private readonly onChange: (valid: boolean) => void = () => {},
  ) {
    this.clock = options.clock ?? (() => performance.now());
  }

  /** True while this node may accept writes. */
  get valid(): boolean {
    return this.clock() - this.lastRenewalSentAt < this.options.ttlMs - this.options.marginMs;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  async renew(): Promise<boolean> {
    if (this.renewing) return this.valid;
    this.renewing = true;
    const wasValid = this.valid;
    const sentAt = this.clock();
    try {
      const lease = { ...this.options.details, node: this.node, renewedAt: Date.now(), ttlMs: this.options.ttlMs };
      await this.objects.put(leaseKey(this.node), Buffer.from(JSON.stringify(lease)));
      this.lastRenewalSentAt = sentAt;
      this.failures = 0;
    } catch {
      this.failures++;
    } finally {
      this.renewing = false;
    }
    if (wasValid !== this.valid) this.onChange(this.valid);
    return this.valid;
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => {
      const before = this.valid;
      void this.renew();
      // Notice the fence moment even when a renewal hangs.
      if (before && !this.valid) this.onChange(false);
    }, this.options.renewEveryMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Deletes the lease (graceful stop), so peers need not wait for it to expire... they still wait the TTL. */
  async release(): Promise<void> {
    this.stop();
    await this.objects.delete(leaseKey(this.node)).catch(() => {});
  }
}

/** What a node last wrote in its lease (its `details` included), or undefined when there is none or it is unreadable. */
export async function readLease(objects: ObjectStore, node: string): Promise<Record<string, unknown> | undefined> {
  const obj = await objects.get(leaseKey(node));
  if (obj === undefined) return undefined;
  try {
    const lease: unknown = JSON.parse(obj.body.toString("utf8"));
    return typeof lease === "object" && lease !== null ? (lease as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Watches other nodes' leases. `expired(nodes)` reads each lease and returns the nodes whose lease has not
 * changed for `ttlMs` of this observer's own time (a missing lease counts as unchanged since the watcher
 * started, so a node that never comes up is declared dead after one TTL too).
 */
export class LeaseWatcher {
  private readonly seen = new Map<string, { version: string; since: number }>();
  private readonly clock: () => number;

  constructor(
    private readonly objects: ObjectStore,
    private readonly ttlMs: number,
    clock?: () => number,
  ) {
    this.clock = clock ?? (() => performance.now());
  }

  async expired(nodes: readonly string[]): Promise<string[]> {
    const now = this.clock();
    const results = await Promise.all(
      nodes.map(async (node) => {
        const obj = await this.objects.get(leaseKey(node));
        const version = obj?.version ?? "missing";
        const prev = this.seen.get(node);
        if (prev === undefined || prev.version !== version) {
          this.seen.set(node, { version, since: now });
          return undefined;
        }
        return now - prev.since >= this.ttlMs ? node : undefined;
      }),
    );
    return results.filter((n): n is string => n !== undefined);
  }

  /** Forgets what was seen of a node (it was removed, or came back). */
  forget(node: string): void {
    this.seen.delete(node);
  }
}
