/**
 * The rebalance procedure behind `fractal admin rebalance` and `fractal admin drain`.
 *
 * 1. Plan: the target map makes joining nodes active (rebalance) or one node draining (drain). Only rooms
 *    whose owner differs between the ring of the current map and the ring of the target move (consistent
 *    hashing keeps that minimal). Rooms are found on every node's disk and in the checkpoint chains.
 * 2. Pre-copy: old owners checkpoint their dirty rooms, and new owners copy their incoming rooms from the chain
 *    (phase "prepare"), so the handoff after the switch ships only the messages written since.
 * 3. Switch: the target map is published by compare-and-swap against the planned epoch; if anybody changed
 *    the map since the plan (another rebalance, a failover), this run stops and says so.
 * 4. Take over: each new owner takes its rooms over (handoff from the old owner, then sync from the chain),
 *    `maxConcurrent` at a time, reporting each room's write pause.
 * The plan is saved in the object store before the switch, so an interrupted run is resumed by running the
 * command again: takeovers are idempotent.
 */
import { FractalError, homeOf, Ring, type ClusterMap, type ClusterMapStore, type ObjectStore } from "../shards/index.js";
import type { AdminApi } from "./admin.js";
import type { Membership } from "./membership.js";
import type { Caller } from "./room-api.js";

const PLAN_KEY = "cluster/rebalance.json";

/**
 * Rooms each new owner takes over at once unless told otherwise. A stall of the machine (these run beside the
 * serving load) lengthens the pause of every room in flight, so fewer in flight means fewer long pauses: at
 * 10,000 rooms / 1M messages, 8 gave pause p99 115-137 ms in three runs against 151-261 ms with 16 in four
 * (the move took ~12 s instead of ~8).
 */
export const DEFAULT_MAX_CONCURRENT = 8;

export interface RoomMove {
  readonly room: string;
  readonly from: string | undefined;
  readonly to: string;
  /** Messages in the room (its head). */
  readonly messages: number;
}

export interface RebalancePlan {
  readonly fromEpoch: number;
  readonly target: ClusterMap;
  readonly moves: RoomMove[];
  readonly rooms: number;
  /** Rooms per node before and after. */
  readonly share: Record<string, { before: number; after: number }>;
  /** Set when the map already is the target (a resumed run finishes takeovers). */
  readonly resumed: boolean;
}

export interface RebalanceProgress {
  /** "prepare": rooms copied to their new owners before the switch; "move": rooms taken over after it. */
  readonly phase: "prepare" | "move";
  readonly done: number;
  readonly total: number;
  readonly messages: number;
  readonly failed: number;
  readonly elapsedMs: number;
}

export interface RebalanceResult extends Omit<RebalanceProgress, "phase"> {
  readonly epoch: number;
  readonly pauseMs: { p50: number; p99: number; max: number };
}

export type TargetKind = { kind: "rebalance" } | { kind: "drain"; node: string } | { kind: "home"; room: string; region: string };

interface SavedPlan {
  readonly toEpoch: number;
  readonly target: TargetKind;
  readonly moves: RoomMove[];
}

export class Rebalancer {
  constructor(
    private readonly membership: Membership,
    private readonly mapStore: ClusterMapStore,
    private readonly objects: ObjectStore,
    private readonly apiOf: (node: string) => AdminApi,
    private readonly chainRooms: () => Promise<string[]>,
  ) {}

  async plan(target: TargetKind): Promise<RebalancePlan> {
    await this.membership.refresh();
    const current = this.membership.map;
    if (target.kind === "drain" && !current.nodes.some((n) => n.id === target.node)) {
      throw new FractalError("not_found", `there is no node ${target.node} in the cluster map`);
    }
    const saved = await this.saved();
    if (saved !== undefined && saved.toEpoch === current.epoch && sameTarget(saved.target, target)) {
      // The switch happened in an earlier run: finish its takeovers.
      return this.describe(current, current, saved.moves, true);
    }
    const next = targetMap(current, target);
    if (next === undefined) return this.describe(current, current, [], false);
    const sizes = await this.roomSizes(current);
    const before = new Ring(current);
    const after = new Ring(next);
    const moves: RoomMove[] = [];
    for (const [room, messages] of sizes) {
      const from = before.owner(room);
      const to = after.owner(room);
      if (to !== undefined && from !== to) moves.push({ room, from, to, messages });
    }
    moves.sort((a, b) => a.room.localeCompare(b.room));
    return this.describe(current, next, moves, false, sizes);
  }

  async execute(plan: RebalancePlan, target: TargetKind, maxConcurrent: number, onProgress: (p: RebalanceProgress) => void): Promise<RebalanceResult> {
    const started = Date.now();
    const caller = (): Caller => ({ node: this.membership.self, epoch: this.membership.epoch });
    let epoch = this.membership.epoch;
    if (!plan.resumed) {
      if (plan.target.epoch === plan.fromEpoch) return { done: 0, total: 0, messages: 0, failed: 0, elapsedMs: 0, epoch, pauseMs: { p50: 0, p99: 0, max: 0 } };
      // Pre-copy: old owners write what they have, so the handoffs after the switch are short.
      const oldOwners = [...new Set(plan.moves.map((m) => m.from).filter((n): n is string => n !== undefined))];
      await Promise.all(oldOwners.map((n) => this.apiOf(n).checkpoint(caller(), undefined).catch(() => undefined)));
      await this.prepare(plan, maxConcurrent, caller, onProgress);
      const { map, changed } = await this.mapStore.change((m) => {
        if (m.epoch !== plan.fromEpoch) {
          throw new FractalError("unavailable", `the cluster map changed since the plan (epoch ${plan.fromEpoch} -> ${m.epoch}); run the command again`);
        }
        return { nodes: plan.target.nodes, ...(plan.target.homes !== undefined ? { homes: plan.target.homes } : {}) };
      });
      if (!changed) throw new FractalError("internal", "the map did not change");
      epoch = map.map.epoch;
      await this.objects.put(PLAN_KEY, Buffer.from(JSON.stringify({ toEpoch: epoch, target, moves: plan.moves } satisfies SavedPlan)));
      this.membership.update(map.map);
      // Tell every node now rather than at its next poll.
      await Promise.all(
        map.map.nodes
          .filter((n) => n.state !== "down" && n.id !== this.membership.self)
          .map((n) => this.apiOf(n.id).nodeStatus(caller(), { rooms: false }).catch(() => undefined)),
      );
    }
    const { done, failed, messages, pauses } = await this.onNewOwners("move", plan, maxConcurrent, caller, started, onProgress);
    // Done: the next run plans afresh (an unfinished one is resumed from the saved plan instead).
    if (failed === 0) await this.objects.delete(PLAN_KEY).catch(() => undefined);
    pauses.sort((a, b) => a - b);
    const q = (p: number) => pauses[Math.min(pauses.length - 1, Math.floor(p * pauses.length))] ?? 0;
    return { done, total: plan.moves.length, messages, failed, elapsedMs: Date.now() - started, epoch, pauseMs: { p50: q(0.5), p99: q(0.99), max: pauses[pauses.length - 1] ?? 0 } };
  }

  /**
   * New owners copy their incoming rooms from the chain while the old owners still serve them: the bulk of
   * the data moves before the switch, outside the rooms' write pause. Best effort: a room not copied is
   * synced at its takeover instead.
   */
  private async prepare(plan: RebalancePlan, maxConcurrent: number, caller: () => Caller, onProgress: (p: RebalanceProgress) => void): Promise<void> {
    await this.onNewOwners("prepare", plan, maxConcurrent, caller, Date.now(), onProgress);
  }

  /** Has every new owner prepare or take over its rooms, `maxConcurrent` at a time, reporting each room. */
  private async onNewOwners(
    phase: RebalanceProgress["phase"],
    plan: RebalancePlan,
    maxConcurrent: number,
    caller: () => Caller,
    started: number,
    onProgress: (p: RebalanceProgress) => void,
  ): Promise<{ done: number; failed: number; messages: number; pauses: number[] }> {
    const byOwner = new Map<string, string[]>();
    for (const m of plan.moves) byOwner.set(m.to, [...(byOwner.get(m.to) ?? []), m.room]);
    const sizes = new Map(plan.moves.map((m) => [m.room, m.messages]));
    const pauses: number[] = [];
    let done = 0;
    let failed = 0;
    let messages = 0;
    const report = () => onProgress({ phase, done, total: plan.moves.length, messages, failed, elapsedMs: Date.now() - started });
    await Promise.all(
      [...byOwner].map(([owner, rooms]) =>
        this.apiOf(owner)
          .takeOver(
            caller(),
            rooms,
            maxConcurrent,
            (r) => {
              done++;
              if (r.error !== "") failed++;
              else {
                pauses.push(r.pauseMs);
                messages += sizes.get(r.room) ?? 0;
              }
              report();
            },
            { prepare: phase === "prepare" },
          )
          .catch(() => {
            failed += rooms.length;
          }),
      ),
    );
    report();
    return { done, failed, messages, pauses };
  }

  private async saved(): Promise<SavedPlan | undefined> {
    const obj = await this.objects.get(PLAN_KEY);
    if (obj === undefined) return undefined;
    try {
      return JSON.parse(obj.body.toString("utf8")) as SavedPlan;
    } catch {
      return undefined;
    }
  }

  /** Every room any live node stores or any chain holds, with its size (the largest head seen). */
  private async roomSizes(map: ClusterMap): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    const caller: Caller = { node: this.membership.self, epoch: map.epoch };
    const lists = await Promise.all(
      map.nodes.filter((n) => n.state !== "down").map((n) => this.apiOf(n.id).listRooms(caller).catch(() => [])),
    );
    for (const list of lists) for (const r of list) sizes.set(r.room, Math.max(sizes.get(r.room) ?? 0, r.head));
    for (const room of await this.chainRooms()) if (!sizes.has(room)) sizes.set(room, 0);
    return sizes;
  }

  private describe(current: ClusterMap, target: ClusterMap, moves: RoomMove[], resumed: boolean, sizes?: Map<string, number>): RebalancePlan {
    // A Map, not an object: a node may be called "constructor" (a valid id), which an object already "has".
    const shares = new Map<string, { before: number; after: number }>();
    for (const n of [...current.nodes, ...target.nodes]) if (!shares.has(n.id)) shares.set(n.id, { before: 0, after: 0 });
    if (sizes !== undefined) {
      const before = new Ring(current);
      const after = new Ring(target);
      for (const room of sizes.keys()) {
        const b = before.owner(room);
        const a = after.owner(room);
        if (b !== undefined) shares.get(b)!.before++;
        if (a !== undefined) shares.get(a)!.after++;
      }
    }
    const share = Object.fromEntries(shares);
    return {
      fromEpoch: current.epoch,
      target: { ...target, epoch: resumed || target === current ? current.epoch : current.epoch + 1 },
      moves,
      rooms: sizes?.size ?? moves.length,
      share,
      resumed,
    };
  }
}

function sameTarget(a: TargetKind, b: TargetKind): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The map a rebalance or drain aims at, or undefined when there is nothing to change. */
export function targetMap(current: ClusterMap, target: TargetKind): ClusterMap | undefined {
  if (target.kind === "home") {
    if (!current.nodes.some((n) => n.region === target.region && n.state === "active")) {
      throw new FractalError("bad_request", `region ${target.region} has no active node`);
    }
    if (homeOf(current, target.room) === target.region) return undefined;
    return { epoch: current.epoch + 1, nodes: current.nodes, homes: { ...(current.homes ?? {}), [target.room]: target.region } };
  }
  let changed = false;
  const nodes = current.nodes.map((n) => {
    if (target.kind === "rebalance" && n.state === "joining") {
      changed = true;
      return { ...n, state: "active" as const };
    }
    if (target.kind === "drain" && n.id === target.node && n.state !== "draining") {
      changed = true;
      return { ...n, state: "draining" as const };
    }
    return n;
  });
  if (target.kind === "drain" && !current.nodes.some((n) => n.id === target.node)) {
    throw new FractalError("not_found", `there is no node ${target.node} in the cluster map`);
  }
  if (changed && !nodes.some((n) => n.state === "active")) throw new FractalError("bad_request", "that would leave no active node to own rooms");
  return changed ? { ...current, epoch: current.epoch + 1, nodes } : undefined;
}
