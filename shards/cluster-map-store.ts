/**
 * The cluster map's home: one object in the object store (`cluster/map.json`), changed only by
 * compare-and-swap, every change bumping the epoch (DESIGN.md "Cluster map, ownership and fencing").
 *
 * Contract: `change` applies a pure function to the newest map and publishes the result with If-Match; when
 * another writer got there first it re-reads and re-applies (bounded retries), so concurrent changes never
 * overwrite each other and each change happens once. The function returns undefined for "nothing to do".
 */
import { FractalError } from "./errors.js";
import { NODE_ID_PATTERN, isHostPort, NodeState, type ClusterMap, type NodeDescriptor } from "./cluster-map.js";
import { PreconditionFailedError, type ObjectStore } from "./object-store.js";

export const MAP_KEY = "cluster/map.json";
const MAX_CAS_RETRIES = 20;

export interface VersionedMap {
  readonly map: ClusterMap;
  readonly version: string;
}

export class MapConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MapConflictError";
  }
}

export class ClusterMapStore {
  constructor(private readonly objects: ObjectStore) {}

  async read(): Promise<VersionedMap | undefined> {
    const obj = await this.objects.get(MAP_KEY);
    if (obj === undefined) return undefined;
    return { map: parseClusterMap(obj.body), version: obj.version };
  }

  /** Creates the map if there is none (first start of a cluster); returns the map that is stored. */
  async bootstrap(initial: ClusterMap): Promise<VersionedMap> {
    for (let attempt = 0; attempt < MAX_CAS_RETRIES; attempt++) {
      const existing = await this.read();
      if (existing !== undefined) return existing;
      try {
        const { version } = await this.objects.put(MAP_KEY, encodeClusterMap(initial), { ifNoneMatch: "*" });
        return { map: initial, version };
      } catch (err) {
        if (!(err instanceof PreconditionFailedError)) throw err;
      }
    }
    throw new MapConflictError("could not create the cluster map: too much contention");
  }

  /**
   * Applies `change` to the newest map and stores the result at epoch + 1. Resolves with the stored map and
   * whether this call changed it.
   */
  async change(change: (map: ClusterMap) => Omit<ClusterMap, "epoch"> | undefined): Promise<{ map: VersionedMap; changed: boolean }> {
    for (let attempt = 0; attempt < MAX_CAS_RETRIES; attempt++) {
      const current = await this.read();
      if (current === undefined) throw new FractalError("unavailable", "there is no cluster map yet");
      const next = change(current.map);
      if (next === undefined) return { map: current, changed: false };
      const homes = next.homes ?? current.map.homes;
      const map: ClusterMap = { epoch: current.map.epoch + 1, nodes: next.nodes, ...(homes !== undefined ? { homes } : {}) };
      validateClusterMap(map);
      try {
        const { version } = await this.objects.put(MAP_KEY, encodeClusterMap(map), { ifMatch: current.version });
        return { map: { map, version }, changed: true };
      } catch (err) {
        if (!(err instanceof PreconditionFailedError)) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 20 * (attempt + 1)));
      }
    }
    throw new MapConflictError("the cluster map kept changing under this update; try again");
  }
}

export function encodeClusterMap(map: ClusterMap): Buffer {
  return Buffer.from(JSON.stringify(map, null, 1));
}

export function parseClusterMap(body: Buffer): ClusterMap {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new FractalError("internal", "the stored cluster map is not JSON");
  }
  const m = value as ClusterMap;
  validateClusterMap(m);
  return m;
}

const STATES = new Set<string>(Object.values(NodeState));

export function validateClusterMap(m: ClusterMap): void {
  const bad = (why: string) => new FractalError("internal", `invalid cluster map: ${why}`);
  if (typeof m !== "object" || m === null || !Number.isInteger(m.epoch) || m.epoch < 1 || !Array.isArray(m.nodes)) throw bad("header");
  const ids = new Set<string>();
  for (const n of m.nodes as NodeDescriptor[]) {
    if (!NODE_ID_PATTERN.test(n.id) || ids.has(n.id)) throw bad(`node id ${String(n.id)}`);
    ids.add(n.id);
    if (!isHostPort(n.grpc)) throw bad(`grpc address of ${n.id}`);
    if (typeof n.http !== "string" || typeof n.region !== "string" || !STATES.has(n.state)) throw bad(`descriptor of ${n.id}`);
  }
  if (m.homes !== undefined) {
    if (typeof m.homes !== "object" || m.homes === null || Array.isArray(m.homes)) throw bad("homes");
    for (const [room, region] of Object.entries(m.homes)) if (typeof region !== "string" || room.length > 64) throw bad(`home of ${room}`);
  }
}
