import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryReplicaStore, SqliteReplicaStore, SqliteRoomStore } from "../../shards/index.js";
import { replicaStoreContract } from "./replica-store.contract.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

replicaStoreContract("memory", () => ({ store: new MemoryReplicaStore() }));
replicaStoreContract("sqlite file (the node's rooms.db, written on its connection, synced with its commits)", () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-replica-"));
  dirs.push(dir);
  const file = join(dir, "rooms.db");
  let rooms = new SqliteRoomStore(file);
  return {
    store: new SqliteReplicaStore(rooms),
    reopen: () => {
      rooms = new SqliteRoomStore(file);
      return new SqliteReplicaStore(rooms);
    },
    close: () => void rooms.closeAsync(),
  };
});
replicaStoreContract("sqlite in memory", () => {
  const rooms = new SqliteRoomStore(":memory:");
  return { store: new SqliteReplicaStore(rooms), close: () => rooms.close() };
});
