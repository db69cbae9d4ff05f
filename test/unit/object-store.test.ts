import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { DirectoryObjectStore, PreconditionFailedError, ThreadedObjectStore } from "../../shards/index.js";
import { objectStoreContract } from "./object-store.contract.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

objectStoreContract("local directory", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
  dirs.push(dir);
  return new DirectoryObjectStore(dir);
});

describe("local directory object store shared by processes", () => {
  it("sees another writer's compare-and-swap although it remembers the version it wrote", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
    dirs.push(dir);
    const a = new DirectoryObjectStore(dir);
    const b = new DirectoryObjectStore(dir);
    const v1 = await a.put("rooms/r/manifest.json", Buffer.from("one"), { ifNoneMatch: "*" });
    const v2 = await b.put("rooms/r/manifest.json", Buffer.from("two"), { ifMatch: v1.version });
    // Same length as before: only the replaced inode tells a's cache that the content changed.
    let err: unknown;
    await a.put("rooms/r/manifest.json", Buffer.from("xyz"), { ifMatch: v1.version }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(PreconditionFailedError);
    const v3 = await a.put("rooms/r/manifest.json", Buffer.from("three"), { ifMatch: v2.version });
    expect((await b.get("rooms/r/manifest.json"))!.version).to.equal(v3.version);
    // b's own remembered version is stale now: it must be refused too.
    err = undefined;
    await b.put("rooms/r/manifest.json", Buffer.from("four"), { ifMatch: v2.version }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(PreconditionFailedError);
  });

  it("breaks the lock of a writer that crashed holding it, and only then writes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
    dirs.push(dir);
    const store = new DirectoryObjectStore(dir, { staleLockMs: 300 });
    const v1 = await store.put("cluster/map.json", Buffer.from("one"));
    // A crashed writer's lock: a name nobody will remove.
    writeFileSync(join(dir, "cluster", "map.json.lock"), "");
    const started = Date.now();
    const v2 = await store.put("cluster/map.json", Buffer.from("two"), { ifMatch: v1.version });
    expect(Date.now() - started).to.be.at.least(300);
    expect((await store.get("cluster/map.json"))!.version).to.equal(v2.version);
    expect(existsSync(join(dir, "cluster", "map.json.lock"))).to.equal(false);
    expect(await store.list("")).to.deep.equal(["cluster/map.json"]);
  });
});

const threaded: ThreadedObjectStore[] = [];
after(async () => {
  for (const t of threaded) await t.close();
});

// The node runs its store on a worker thread: the same contract must hold across the thread boundary
// (bodies byte for byte, PreconditionFailedError as the same class, bad keys refused).
objectStoreContract("local directory on a worker thread", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
  dirs.push(dir);
  const store = new ThreadedObjectStore({ location: dir });
  threaded.push(store);
  return store;
});
