/**
 * The cluster map: the single source of truth for membership (DESIGN.md). It is an immutable, versioned
 * snapshot; every change produces a new map with a higher epoch. The ring is derived from it.
 */
import { FractalError } from "./errors.js";

export const NodeState = { active: "active", joining: "joining", draining: "draining", down: "down" } as const;
export type NodeState = (typeof NodeState)[keyof typeof NodeState];

export interface NodeDescriptor {
  /** Stable node id, e.g. "n1". */
  readonly id: string;
  /** host:port of the node's gRPC server. */
  readonly grpc: string;
  /** Base URL of the node's HTTP server ("" when not known yet). */
  readonly http: string;
  readonly region: string;
  readonly state: NodeState;
}

export interface ClusterMap {
  readonly epoch: number;
  readonly nodes: readonly NodeDescriptor[];
  /**
   * Rooms pinned to a home region (`fractal admin move-room`); other rooms get theirs from the ring of
   * regions. Optional: maps written before regions existed have none.
   */
  readonly homes?: Readonly<Record<string, string>>;
}

export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const HOST_PORT_PATTERN = /^[A-Za-z0-9.:\[\]-]+:(\d{1,5})$/;

export function isHostPort(value: string): boolean {
  const m = HOST_PORT_PATTERN.exec(value);
  return m !== null && Number(m[1]) > 0 && Number(m[1]) < 65536;
}

/**
 * Parses `n1=127.0.0.1:9080,n2=127.0.0.1:9081` into a map at epoch 1: the static membership that the
 * `--peers` flag describes. Rejects duplicates and malformed entries with bad_request.
 */
export function mapFromPeers(peers: string, region = "local"): ClusterMap {
  const nodes: NodeDescriptor[] = [];
  const seen = new Set<string>();
  for (const raw of peers.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    const eq = raw.indexOf("=");
    if (eq <= 0) throw new FractalError("bad_request", `peer "${raw}" must look like id=host:port`);
    const id = raw.slice(0, eq);
    const grpc = raw.slice(eq + 1);
    if (!NODE_ID_PATTERN.test(id)) throw new FractalError("bad_request", `peer id "${id}" is not a valid node id`);
    if (!isHostPort(grpc)) throw new FractalError("bad_request", `peer "${id}" address "${grpc}" is not host:port`);
    if (seen.has(id)) throw new FractalError("bad_request", `peer id "${id}" appears twice`);
    seen.add(id);
    nodes.push({ id, grpc, http: "", region, state: "active" });
  }
  if (nodes.length === 0) throw new FractalError("bad_request", "the peer list is empty");
  return { epoch: 1, nodes };
}

/**
 * Nodes that own rooms: the ring is built from these. `joining` nodes serve clients but own nothing until a
 * rebalance makes them active; `draining` nodes hand their rooms to the others; `down` nodes lost their lease.
 */
export function ownerNodes(map: ClusterMap): NodeDescriptor[] {
  return map.nodes.filter((n) => n.state === "active");
}

/**
 * The region a room is pinned to, if any. An own property only: a room may be called "constructor", and a
 * plain lookup would find Object.prototype's.
 */
export function homeOf(map: ClusterMap, room: string): string | undefined {
  return map.homes !== undefined && Object.hasOwn(map.homes, room) ? map.homes[room] : undefined;
}

export function findNode(map: ClusterMap, id: string): NodeDescriptor | undefined {
  return map.nodes.find((n) => n.id === id);
}

/** Returns a copy of the map with one node's descriptor changed (same epoch: a local annotation). */
export function withNode(map: ClusterMap, node: NodeDescriptor): ClusterMap {
  return { ...map, nodes: map.nodes.map((n) => (n.id === node.id ? node : n)) };
}
