/**
 * The old owner's side of a map change: rooms it lost with commits beyond their checkpoint are saved to the
 * chain a moment after the switch (not during it), except those handed off meanwhile; a node that stops first
 * saves them before its final checkpoint, and an object store failure keeps them for another try.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { Membership } from "../../node/membership.js";
import { OwnershipTransfer } from "../../node/transfer.js";
import {
  CheckpointChain,
  Checkpointer,
  DirectoryObjectStore,
  MemoryRoomStore,
  OwnedRooms,
  RoomRebuilder,
  type ClusterMap,
  type ObjectStore,
} from "../../shards/index.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function mapOf(ids: string[], epoch: number): ClusterMap {
  return { epoch, nodes: ids.map((id, i) => ({ id, grpc: `127.0.0.1:${9080 + i}`, http: "", region: "local", state: "active" })) };
}

/** n1 owns 40 rooms with 3 unsaved messages each, then n2 joins and takes some of them. */
function oldOwner(delayMs: number) {
  const dir = mkdtempSync(join(tmpdir(), "fractal-lost-"));
  dirs.push(dir);
  const real = new DirectoryObjectStore(dir);
  let failing = false;
  const objects: ObjectStore = {
    location: real.location,
    get: (key) => real.get(key),
    put: (key, body, condition) => (failing ? Promise.reject(new Error("object store down")) : real.put(key, body, condition)),
    list: (prefix) => real.list(prefix),
    delete: (key) => real.delete(key),
  };
  const chain = new CheckpointChain(objects, 60_000);
  const store = new MemoryRoomStore();
  const rooms = new OwnedRooms(store);
  const membership = new Membership("n1", mapOf(["n1"], 1));
  const names = Array.from({ length: 40 }, (_, i) => `room-${i}`);
  for (const room of names) {
    store.append([1, 2, 3].map((seq) => ({ room, seq, id: `m${seq}`, user: "ann", text: `hello ${seq}`, ts: 1000 + seq })));
  }
  const checkpointer = new Checkpointer({ store, chain, node: "n1", epoch: () => membership.epoch, owns: (r) => membership.ownerOf(r) === "n1", intervalMs: 3_600_000 });
  const transfer = new OwnershipTransfer({
    self: "n1",
    membership,
    rooms,
    chain,
    checkpointer,
    rebuilder: new RoomRebuilder(store, chain),
    peers: {
      get: () => {
        throw new Error("n1 asks nobody for a handoff here");
      },
    },
    log: pino({ level: "silent" }),
    backlog: 100,
    eagerDelayMs: delayMs,
  });
  membership.update(mapOf(["n1", "n2"], 2));
  const lost = names.filter((r) => membership.ownerOf(r) === "n2");
  const saved = async (room: string) => (await chain.read(room))?.manifest.head ?? 0;
  return { transfer, lost, saved, checkpointer, setFailing: (f: boolean) => (failing = f) };
}

describe("rooms lost at a map change", () => {
  it("are saved to the chain after the switch's first moments, except the ones handed off meanwhile", async () => {
    const { transfer, lost, saved } = oldOwner(300);
    expect(lost.length).to.be.greaterThan(5);
    const after = transfer.afterMapChange();
    await new Promise((r) => setTimeout(r, 50));
    expect(transfer.unsavedLostRooms).to.equal(lost.length);
    expect(await saved(lost[1]!), "nothing written at the switch").to.equal(0);
    // The new owner asks for one room: it gets the tail and checkpoints it itself.
    const handoff = await transfer.handOff({ node: "n2", epoch: 2 }, lost[0]!);
    expect(handoff.tail?.map((m) => m.seq)).to.deep.equal([1, 2, 3]);
    expect(transfer.unsavedLostRooms).to.equal(lost.length - 1);
    expect(await after).to.deep.equal({ lost: lost.length, gained: 0 });
    expect(transfer.unsavedLostRooms).to.equal(0);
    expect(await saved(lost[0]!), "handed off: its new owner writes it").to.equal(0);
    for (const room of lost.slice(1)) expect(await saved(room), room).to.equal(3);
  });

  it("a node stopping before then saves them first; a failing object store keeps them for the next try", async () => {
    const { transfer, lost, saved, setFailing } = oldOwner(400);
    const after = transfer.afterMapChange();
    await new Promise((r) => setTimeout(r, 20));
    setFailing(true);
    await transfer.saveLost();
    expect(transfer.unsavedLostRooms, "kept after the failure").to.equal(lost.length);
    setFailing(false);
    await transfer.saveLost(); // what a graceful stop does before its final checkpoint
    expect(transfer.unsavedLostRooms).to.equal(0);
    for (const room of lost) expect(await saved(room), room).to.equal(3);
    await after;
  });
});
