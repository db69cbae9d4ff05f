/**
 * Getting this node into the cluster map at start: the first nodes of a cluster seed the stored map from
 * --peers (whoever writes first wins; the rest read it); every node then registers itself by compare-and-swap:
 * a new node joins as `joining` (serving clients, owning nothing until a rebalance), a node whose address
 * changed updates it, and a node that was failed over while away comes back as `joining`.
 */
import { FractalError, findNode, type ClusterMap, type ClusterMapStore, type NodeDescriptor } from "../shards/index.js";
import type { NodeConfig } from "./config.js";

/** establishMap, retried while the object store is unreachable or busy (up to `patienceMs`). */
export async function establishMapPatiently(
  store: ClusterMapStore,
  config: NodeConfig,
  http: string,
  onRetry: (err: unknown, delayMs: number) => void,
  patienceMs = 60_000,
): Promise<ClusterMap> {
  const deadline = Date.now() + patienceMs;
  for (let delay = 200; ; delay = Math.min(5000, delay * 2)) {
    try {
      return await establishMap(store, config, http);
    } catch (err) {
      const permanent = err instanceof FractalError && err.code === "bad_request";
      if (permanent || Date.now() + delay > deadline) throw err;
      onRetry(err, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export async function establishMap(store: ClusterMapStore, config: NodeConfig, http: string): Promise<ClusterMap> {
  if (config.map !== undefined) {
    await store.bootstrap(config.map);
  } else if ((await store.read()) === undefined) {
    throw new FractalError(
      "unavailable",
      `there is no cluster map in ${config.objectStore}: start the first nodes with --peers, and give this node the same --object-store`,
    );
  }
  const self: Omit<NodeDescriptor, "state"> = {
    id: config.id,
    grpc: `${config.advertiseHost}:${config.grpcPort}`,
    http,
    region: config.region,
  };
  const { map } = await store.change((m) => {
    const me = findNode(m, config.id);
    if (me === undefined) return { nodes: [...m.nodes, { ...self, state: "joining" }] };
    // Back after a failover or a drain: ready to own rooms again once a rebalance says so.
    const state = me.state === "down" || me.state === "draining" ? "joining" : me.state;
    if (me.grpc === self.grpc && me.http === self.http && me.region === self.region && state === me.state) return undefined;
    return { nodes: m.nodes.map((n) => (n.id === config.id ? { ...self, state } : n)) };
  });
  return map.map;
}
