import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, type Dirent } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
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

/** Every file under `dir`, temp and lock files included (they must not be left behind). */
function filesUnder(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[])
    .filter((e) => e.isFile() && !e.parentPath.includes(".fractal-locks"))
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

for (const blocking of [true, false]) {
  describe(`local directory putMany (${blocking ? "blocking, as on the store's thread" : "asynchronous"})`, () => {
    it("puts of distinct keys share one fsync barrier and keep their own outcomes", async () => {
      const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
      dirs.push(dir);
      const store = new DirectoryObjectStore(dir, { blocking });
      await store.put("r/exists", Buffer.from("old"));
      const cas = await store.put("r/cas", Buffer.from("v1"));
      const results = await Promise.allSettled(store.putMany([
        { key: "r/new", body: Buffer.from("new") },
        { key: "r/exists", body: Buffer.from("x"), condition: { ifNoneMatch: "*" } },
        { key: "r/cas", body: Buffer.from("v2"), condition: { ifMatch: cas.version } },
        { key: "r/created", body: Buffer.from("c"), condition: { ifNoneMatch: "*" } },
        { key: "r/stale", body: Buffer.from("s"), condition: { ifMatch: "not-a-version" } },
        { key: "../escape", body: Buffer.from("e") },
      ]));
      expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "rejected", "fulfilled", "fulfilled", "rejected", "rejected"]);
      expect((results[1] as PromiseRejectedResult).reason).to.be.instanceOf(PreconditionFailedError);
      expect((results[4] as PromiseRejectedResult).reason).to.be.instanceOf(PreconditionFailedError);
      for (const [i, key, body] of [[0, "r/new", "new"], [2, "r/cas", "v2"], [3, "r/created", "c"]] as const) {
        const got = (await store.get(key))!;
        expect(got.body.toString()).to.equal(body);
        expect((results[i] as PromiseFulfilledResult<{ version: string }>).value.version).to.equal(got.version);
      }
      expect((await store.get("r/exists"))!.body.toString()).to.equal("old");
      expect(await store.get("r/stale")).to.equal(undefined);
      // No temp file or lock is left by the failed puts or the placed ones.
      expect(filesUnder(dir)).to.deep.equal(["r/cas", "r/created", "r/exists", "r/new"]);
      expect(() => store.putMany([{ key: "r/a", body: Buffer.alloc(1) }, { key: "r/a", body: Buffer.alloc(2) }])).to.throw(/distinct/);
    });

    it("a key whose lock another writer holds does not hold the other puts of its group", async () => {
      const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
      dirs.push(dir);
      const store = new DirectoryObjectStore(dir, { blocking, staleLockMs: 1500 });
      const v = await store.put("r/locked", Buffer.from("one"));
      writeFileSync(join(dir, "r", "locked.lock"), ""); // a crashed writer's lock: broken after 1.5 s
      const started = Date.now();
      const [locked, free] = store.putMany([
        { key: "r/locked", body: Buffer.from("two"), condition: { ifMatch: v.version } },
        { key: "r/free", body: Buffer.from("f"), condition: { ifNoneMatch: "*" } },
      ]);
      let lockedDone = false;
      void locked!.then(() => (lockedDone = true));
      await free;
      expect(lockedDone).to.equal(false); // the free key did not wait for the lock to be broken
      expect((await store.get("r/locked"))!.body.toString()).to.equal("one");
      await locked;
      expect(Date.now() - started).to.be.at.least(1500);
      expect((await store.get("r/locked"))!.body.toString()).to.equal("two");
      expect(filesUnder(dir)).to.deep.equal(["r/free", "r/locked"]);
    });
  });
}

describe("object store thread", () => {
  it("answers puts that arrive together (one barrier) each with its own outcome", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
    dirs.push(dir);
    const store = new ThreadedObjectStore({ location: dir });
    threaded.push(store);
    const versions = await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`m/${i}`, Buffer.from(`one ${i}`))));
    // One turn: 20 compare-and-swaps (every other one with a stale version) and 20 create-only puts, half existing.
    const results = await Promise.allSettled([
      ...versions.map((v, i) => store.put(`m/${i}`, Buffer.from(`two ${i}`), { ifMatch: i % 2 === 0 ? v.version : "stale" })),
      ...Array.from({ length: 20 }, (_, i) => store.put(`m/${i < 10 ? i : `c${i}`}`, Buffer.from("c"), { ifNoneMatch: "*" })),
    ]);
    expect(results.slice(0, 20).map((r) => r.status)).to.deep.equal(versions.map((_, i) => (i % 2 === 0 ? "fulfilled" : "rejected")));
    expect(results.slice(20).map((r) => r.status)).to.deep.equal(Array.from({ length: 20 }, (_, i) => (i < 10 ? "rejected" : "fulfilled")));
    for (const r of results) if (r.status === "rejected") expect(r.reason).to.be.instanceOf(PreconditionFailedError);
    for (let i = 0; i < 20; i++) expect((await store.get(`m/${i}`))!.body.toString()).to.equal(i % 2 === 0 ? `two ${i}` : `one ${i}`);
    expect(filesUnder(dir).filter((f) => f.endsWith(".tmp") || f.endsWith(".lock"))).to.deep.equal([]);
  });
});
