/**
 * The clean-stop marker (`nodes/<id>/clean-stop.json`): written by a node at the end of a graceful stop when
 * every room it owned was checkpointed completely. Whoever rebuilds its rooms (itself on its next start, or
 * their new owners after a failover) then knows that nothing acknowledged lies beyond the chains, and need not
 * skip seqs. The node removes it when it starts again.
 */
import type { ObjectStore } from "../shards/index.js";

const key = (node: string) => `nodes/${node}/clean-stop.json`;

export async function markCleanStop(objects: ObjectStore, node: string): Promise<void> {
  await objects.put(key(node), Buffer.from(JSON.stringify({ node, at: Date.now() })));
}

export async function stoppedCleanly(objects: ObjectStore, node: string): Promise<boolean> {
  return (await objects.get(key(node)).catch(() => undefined)) !== undefined;
}

/** Reads and removes this node's marker: true when its last stop was clean. */
export async function takeCleanStop(objects: ObjectStore, node: string): Promise<boolean> {
  const clean = await stoppedCleanly(objects, node);
  if (clean) await objects.delete(key(node)).catch(() => undefined);
  return clean;
}
