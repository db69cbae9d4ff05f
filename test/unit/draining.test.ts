/**
 * A draining node: not ready at once, clients released only after the rooms it lost were handed off (or
 * after the wait bound), and not at all when the drain is undone first.
 */
import { expect } from "chai";
import { pino } from "pino";
import { DrainWatch } from "../../node/draining.js";
import type { ClusterMap } from "../../shards/index.js";

const mapWith = (state: "active" | "draining", epoch: number): ClusterMap => ({
  epoch,
  nodes: [
    { id: "n1", grpc: "127.0.0.1:9080", http: "", region: "local", state: "active" },
    { id: "n2", grpc: "127.0.0.1:9081", http: "", region: "local", state },
  ],
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function watch(waitMs = 5_000) {
  const calls: { at: number; spreadMs: number }[] = [];
  let awaiting = 3;
  const w = new DrainWatch({
    self: "n2",
    awaitingHandoff: () => awaiting,
    releaseClients: async (spreadMs) => {
      calls.push({ at: Date.now(), spreadMs });
      return 7;
    },
    log: pino({ level: "silent" }),
    waitMs,
  });
  return { w, calls, handOff: () => (awaiting = Math.max(0, awaiting - 1)) };
}

describe("draining node", () => {
  it("is not ready at once and releases its clients once every lost room was handed off", async () => {
    const { w, calls, handOff } = watch();
    w.onMapChange(mapWith("draining", 2));
    expect(w.draining).to.equal(true);
    await sleep(450);
    expect(calls, "rooms still moving").to.deep.equal([]);
    handOff();
    handOff();
    handOff();
    await sleep(450);
    expect(calls.length).to.equal(1);
    expect(calls[0]!.spreadMs).to.be.greaterThan(0);
    w.onMapChange(mapWith("draining", 3));
    await sleep(300);
    expect(calls.length, "once per drain").to.equal(1);
  });

  it("releases them after the wait bound even if a new owner never asks", async () => {
    const { w, calls } = watch(300);
    w.onMapChange(mapWith("draining", 2));
    await sleep(700);
    expect(calls.length).to.equal(1);
  });

  it("keeps its clients when the drain is undone before the rooms moved", async () => {
    const { w, calls } = watch(400);
    w.onMapChange(mapWith("draining", 2));
    await sleep(100);
    w.onMapChange(mapWith("active", 3));
    expect(w.draining).to.equal(false);
    await sleep(600);
    expect(calls).to.deep.equal([]);
    // Drained again at once: one release, not one per drain started.
    w.onMapChange(mapWith("draining", 4));
    w.onMapChange(mapWith("active", 5));
    w.onMapChange(mapWith("draining", 6));
    await sleep(700);
    expect(calls.length).to.equal(1);
  });
});
