/**
 * A rebalance that stops half way (its coordinator died, or takeovers failed after the switch) is finished by
 * running it again, from any node: the saved plan is resumed, not re-planned against the already switched map
 * (which would find nothing to move and leave the failed rooms unsettled), the map is not switched twice, and
 * once everything is done the next run has nothing to do. (Asking a node again for a room it already took
 * over is harmless: it answers at once with pause 0, see OwnershipTransfer.takeOver.)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { AdminApi } from "../../node/admin.js";
import { Membership } from "../../node/membership.js";
import { Rebalancer } from "../../node/rebalance.js";
import { ClusterMapStore, DirectoryObjectStore, Ring, type ClusterMap } from "../../shards/index.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ROOMS = Array.from({ length: 200 }, (_, i) => `room-${i}`);

function node(id: string, i: number, state: "active" | "joining") {
  return { id, grpc: `127.0.0.1:${9080 + i}`, http: `http://127.0.0.1:${8080 + i}`, region: "local", state };
}

/** Nodes as the rebalancer sees them through AdminApi: they store rooms, and take rooms over when told. */
class FakeNodes {
  readonly takenOver = new Map<string, number>();
  /** Takeovers on this node fail (its rooms stay to be finished by a later run). */
  failing = new Set<string>();
  constructor(private readonly owners: () => Ring) {}

  api(id: string): AdminApi {
    const nodes = this;
    const refuse = () => Promise.reject(new Error("not used here"));
    return {
      info: refuse,
      restore: refuse,
      nodeStatus: refuse,
      checkpoint: async () => ({ rooms: 0, messages: 0, failed: 0 }),
      listRooms: async () => ROOMS.filter((r) => nodes.owners().owner(r) === id).map((room) => ({ room, head: 10 })),
      async takeOver(_caller, rooms, _concurrency, onRoom, options) {
        for (const room of rooms) {
          if (options?.prepare === true) {
            onRoom({ room, head: 10, pauseMs: 0, error: "" });
          } else if (nodes.failing.has(id)) {
            onRoom({ room, head: 0, pauseMs: 0, error: "node stopped" });
          } else {
            nodes.takenOver.set(room, (nodes.takenOver.get(room) ?? 0) + 1);
            onRoom({ room, head: 10, pauseMs: 1, error: "" });
          }
        }
      },
    };
  }
}

/** A fresh object store in a temp directory with `initial` as its cluster map. */
async function bootstrapped(initial: ClusterMap): Promise<{ objects: DirectoryObjectStore; mapStore: ClusterMapStore }> {
  const dir = mkdtempSync(join(tmpdir(), "fractal-rebalance-"));
  dirs.push(dir);
  const objects = new DirectoryObjectStore(dir);
  const mapStore = new ClusterMapStore(objects);
  await mapStore.bootstrap(initial);
  return { objects, mapStore };
}

describe("rebalance: interrupted and run again", () => {
  it("resumes the saved plan after the switch, finishes the rooms left, and then has nothing left to do", async () => {
    const initial: ClusterMap = { epoch: 1, nodes: [node("n1", 0, "active"), node("n2", 1, "active"), node("n3", 2, "joining"), node("n4", 3, "joining")] };
    const { objects, mapStore } = await bootstrapped(initial);
    const source = async () => (await mapStore.read())!.map;
    const m1 = new Membership("n1", initial, source);
    const nodes = new FakeNodes(() => m1.ring);
    const rebalancer = (m: Membership) => new Rebalancer(m, mapStore, objects, (id) => nodes.api(id), async () => ROOMS);

    // First run, coordinated by n1: the map switches, then n4's takeovers fail (as if it had stopped).
    const plan = await rebalancer(m1).plan({ kind: "rebalance" });
    expect(plan.resumed).to.equal(false);
    const movesTo = (to: string) => plan.moves.filter((m) => m.to === to).map((m) => m.room);
    expect(movesTo("n3").length).to.be.greaterThan(0);
    expect(movesTo("n4").length).to.be.greaterThan(0);
    nodes.failing.add("n4");
    const first = await rebalancer(m1).execute(plan, { kind: "rebalance" }, 8, () => {});
    expect(first.failed).to.equal(movesTo("n4").length);
    expect((await mapStore.read())!.map.epoch).to.equal(2);

    // Run again from another node (n2 knows only the old map): the same moves, resumed, not planned anew.
    nodes.failing.clear();
    const m2 = new Membership("n2", initial, source);
    const again = await rebalancer(m2).plan({ kind: "rebalance" });
    expect(again.resumed).to.equal(true);
    expect(again.moves.map((m) => m.room).sort()).to.deep.equal(plan.moves.map((m) => m.room).sort());
    const second = await rebalancer(m2).execute(again, { kind: "rebalance" }, 8, () => {});
    expect(second).to.include({ failed: 0, done: plan.moves.length, epoch: 2 });
    expect((await mapStore.read())!.map.epoch, "no second switch").to.equal(2);
    for (const room of movesTo("n4")) expect(nodes.takenOver.get(room), room).to.equal(1);

    // Finished: the saved plan is gone and a third run finds nothing to move.
    const third = await rebalancer(m2).plan({ kind: "rebalance" });
    expect(third).to.include({ resumed: false });
    expect(third.moves).to.deep.equal([]);
  });
});

describe("rebalance plan: the share per node", () => {
  it("counts every node, whatever its id (one called constructor or tostring too)", async () => {
    const initial: ClusterMap = { epoch: 1, nodes: [node("constructor", 0, "active"), node("tostring", 1, "active"), node("n3", 2, "joining")] };
    const { objects, mapStore } = await bootstrapped(initial);
    const m = new Membership("constructor", initial, async () => (await mapStore.read())!.map);
    const nodes = new FakeNodes(() => m.ring);
    const plan = await new Rebalancer(m, mapStore, objects, (id) => nodes.api(id), async () => ROOMS).plan({ kind: "rebalance" });
    const share = JSON.parse(JSON.stringify(plan.share)) as Record<string, { before: number; after: number }>;
    expect(Object.keys(share).sort()).to.deep.equal(["constructor", "n3", "tostring"]);
    expect(Object.values(share).reduce((n, s) => n + s.before, 0)).to.equal(ROOMS.length);
    expect(Object.values(share).reduce((n, s) => n + s.after, 0)).to.equal(ROOMS.length);
    expect(new Map(Object.entries(share)).get("constructor")!.before).to.be.greaterThan(0);
  });
});
