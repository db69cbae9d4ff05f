import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UnsyncedHeads } from "../../shards/unsynced-heads.js";
import { type SyncFile, WalSync } from "../../shards/wal-sync.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A log file and a sync function the test finishes by hand. */
function fixture() {
  const dir = mkdtempSync(join(tmpdir(), "fractal-wal-"));
  dirs.push(dir);
  const path = join(dir, "rooms.db-wal");
  writeFileSync(path, "frames");
  const calls: ((err: NodeJS.ErrnoException | null) => void)[] = [];
  const sync: SyncFile = (_fd, done) => void calls.push(done);
  return { wal: new WalSync(path, sync), calls, path };
}

const turn = () => new Promise((r) => setImmediate(r));

describe("WalSync (group fsync of the SQLite log)", () => {
  it("runs one sync at a time; the flushes made while it runs share the next one, and each resolves only after a sync that started after it", async () => {
    const { wal, calls } = fixture();
    const done: string[] = [];
    void wal.flush().then(() => done.push("a"));
    expect(calls).to.have.length(1);
    // Made while the first sync runs: their frames may have been written after it started.
    void wal.flush().then(() => done.push("b"));
    void wal.flush().then(() => done.push("c"));
    expect(calls).to.have.length(1);
    calls[0]!(null);
    await turn();
    expect(done).to.deep.equal(["a"]);
    expect(calls).to.have.length(2); // b and c share one sync
    calls[1]!(null);
    await turn();
    expect(done).to.deep.equal(["a", "b", "c"]);
    expect(calls).to.have.length(2); // nothing waits: no sync runs
    wal.close();
  });

  it("a failed sync is final: it fails the flushes it covered and the waiting ones, and every later flush", async () => {
    const { wal, calls } = fixture();
    const outcomes: string[] = [];
    const track = (name: string, p: Promise<void>) => p.then(() => outcomes.push(`${name} ok`), (e: Error) => outcomes.push(`${name} ${e.message}`));
    const a = track("a", wal.flush());
    const b = track("b", wal.flush());
    calls[0]!(Object.assign(new Error("EIO: i/o error"), { code: "EIO" }));
    await Promise.all([a, b]);
    expect(outcomes).to.have.length(2);
    for (const o of outcomes) expect(o).to.match(/^[ab] the SQLite write-ahead log could not be synced \(EIO: i\/o error\)/);
    expect(wal.failed?.message).to.match(/restart the node/);
    await track("c", wal.flush());
    expect(outcomes[2]).to.match(/^c the SQLite write-ahead log could not be synced/);
    expect(calls).to.have.length(1); // nothing more was even tried
    expect(() => wal.flushSync()).to.throw(/could not be synced/);
    wal.close();
  });

  it("syncs for real; a missing log (nothing written yet) is nothing to sync", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fractal-wal-"));
    dirs.push(dir);
    const missing = new WalSync(join(dir, "none-wal"));
    await missing.flush();
    missing.flushSync();
    expect(missing.failed).to.equal(undefined);
    const path = join(dir, "rooms.db-wal");
    writeFileSync(path, "frames");
    const wal = new WalSync(path);
    await wal.flush();
    wal.flushSync();
    wal.close();
  });

  it("closing under a running sync keeps the descriptor until it is done, and reports no failure (a graceful stop)", async () => {
    const { wal, calls } = fixture();
    const failures: Error[] = [];
    const closing = new WalSync(wal["path"], (fd, done) => void calls.push((err) => done(err ?? null)), (err) => failures.push(err));
    const first = closing.flush();
    const waiting = closing.flush().then(() => "synced", (e: Error) => e.message);
    closing.close();
    expect(closing["fd"], "still open for the running sync").to.be.a("number");
    calls[0]!(null);
    await first;
    expect(await waiting).to.equal("the SQLite log is closed");
    expect(closing["fd"]).to.equal(undefined);
    expect(await closing.flush().then(() => "synced", (e: Error) => e.message)).to.equal("the SQLite log is closed");
    expect(failures).to.deep.equal([]);
    wal.close();
  });
});

describe("UnsyncedHeads (what readers see before a commit is synced)", () => {
  it("shows the durable head until each write's sync; later writes stay hidden until theirs", () => {
    const heads = new UnsyncedHeads();
    expect(heads.visible("r")).to.equal(undefined);
    const first = heads.wrote("r", 4, 6);
    const second = heads.wrote("r", 6, 9); // before: ignored, the room is unsynced from 4
    expect(heads.visible("r")).to.equal(4);
    heads.synced(first, 6);
    expect(heads.visible("r")).to.equal(6);
    heads.synced(second, 9);
    expect(heads.visible("r")).to.equal(undefined);
  });

  it("a sync of writes made before the room was forgotten (deleted, replaced) does not reveal its new writes", () => {
    const heads = new UnsyncedHeads();
    const old = heads.wrote("r", 10, 12);
    heads.forget("r");
    heads.wrote("r", 0, 3); // the room restored from 1 after a delete
    heads.synced(old, 12);
    expect(heads.visible("r")).to.equal(0);
  });
});
