/**
 * ObjectStore over a local directory, shared by the nodes of a local cluster.
 *
 * Atomicity: bodies are written to a temp file and renamed into place. Conditional writes are serialized
 * across processes by a lock per key (see lock), so compare-and-swap holds between nodes that share the
 * directory. Versions are the SHA-256 of the body, like S3's ETag is an MD5.
 *
 * Cost: conditional writes are the hot path of checkpoints (a manifest per room per interval), which run in a
 * thread of their own (ThreadedObjectStore) with `blocking: true`: every call synchronous, where blocking costs
 * nothing and each asynchronous call would be two more thread switches through libuv's pool. Without it (the
 * event loop's store: leases, the cluster map) every call is asynchronous, metadata calls too: a rename or
 * link waits for the filesystem's journal, which under the checkpoints' fsyncs took 10-15 ms per call and
 * stalled every client of the node once a second (the lease renewal).
 * The version of the current object is known without reading it when the file is still the inode this process
 * renamed into place (every replacement is a rename of a new inode, so an unchanged inode is unchanged content).
 */
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  type Dirent,
  type Stats,
} from "node:fs";
import * as fsAsync from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import {
  checkObjectKey,
  type ObjectStore,
  type ObjectVersion,
  type PutCondition,
  PreconditionFailedError,
  type StoredObject,
} from "./object-store.js";

/** A lock held this long by one holder belongs to a crashed writer and is broken. */
const STALE_LOCK_MS = 10_000;

interface Settlement<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  readonly reject: (reason: unknown) => void;
}

/** A promise with its resolvers (Promise.withResolvers is Node 22). */
function settlement<T>(): Settlement<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** One put of a putMany call. */
export interface PutItem {
  readonly key: string;
  readonly body: Buffer;
  readonly condition?: PutCondition | undefined;
}

/** A put between its staging (condition checked, body written) and its placing. */
interface StagedPut {
  readonly kind: "replace" | "create" | "swap";
  readonly key: string;
  readonly file: string;
  tmp: string;
  readonly version: string;
  /** Makes the temp file durable; undefined once done. */
  sync?: (() => Promise<void>) | undefined;
  /** Releases the key's lock (swap only). */
  release?: () => Promise<void>;
}
/** Lock source files (see lock); not object keys, so listing skips the directory. */
const LOCK_DIR = ".fractal-locks";

interface KnownFile {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly version: string;
}

export class DirectoryObjectStore implements ObjectStore {
  private readonly dirs = new Set<string>();
  /** Files this process wrote last, by path: their version without reading them back. */
  private readonly known = new Map<string, KnownFile>();

  private readonly fs: FsCalls;
  private source: string | undefined;
  private readonly staleLockMs: number;

  constructor(
    readonly root: string,
    options: { blocking?: boolean; staleLockMs?: number } = {},
  ) {
    this.fs = options.blocking === true ? blockingFs : asyncFs;
    this.staleLockMs = options.staleLockMs ?? STALE_LOCK_MS;
  }

  get location(): string {
    return this.root;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    checkObjectKey(key);
    try {
      const body = await this.fs.readFile(this.path(key));
      return { body, version: versionOf(body) };
    } catch (err) {
      if (isCode(err, "ENOENT")) return undefined;
      throw err;
    }
  }

  async put(key: string, body: Buffer, condition?: PutCondition): Promise<ObjectVersion> {
    return this.putMany([{ key, body, condition }])[0]!;
  }

  /**
   * Puts of distinct keys behind one durability barrier: every body is written to its temp file, then all the
   * temp files are fsynced, then each is put in place. On ext4 the first fsync commits the journal for all of
   * them and the others find little left to do: a checkpoint round costs a few journal commits instead of one
   * per object, and the SQLite commits that share the disk stop queueing behind them. Each put keeps its own
   * outcome (one promise per item, settled as soon as it is known) and its own semantics (see put); a put is in
   * place only after its body is durable.
   */
  putMany(items: readonly PutItem[]): Promise<ObjectVersion>[] {
    if (new Set(items.map((i) => i.key)).size !== items.length) throw new Error("putMany: keys must be distinct");
    const outcomes = items.map(() => settlement<ObjectVersion>());
    void this.putGroup(items, outcomes).catch((err: unknown) => {
      for (const o of outcomes) o.reject(err); // settled ones ignore it
    });
    return outcomes.map((o) => o.promise);
  }

  private async putGroup(items: readonly PutItem[], outcomes: readonly Settlement<ObjectVersion>[]): Promise<void> {
    const staged: (StagedPut | undefined)[] = [];
    const fail = async (i: number, reason: unknown) => {
      const s = staged[i];
      staged[i] = undefined;
      outcomes[i]!.reject(reason);
      if (s !== undefined) await this.abandon(s);
    };
    for (let i = 0; i < items.length; i++) {
      try {
        const s = await this.stage(items[i]!, items.length === 1);
        // A key whose lock another writer holds waits on its own: one slow key (or a crashed writer's lock,
        // broken only after STALE_LOCK_MS) must not hold the rest of a round's puts.
        if (s === undefined) this.putMany([items[i]!])[0]!.then(outcomes[i]!.resolve, outcomes[i]!.reject);
        else staged[i] = s;
      } catch (err) {
        await fail(i, err);
      }
    }
    for (let i = 0; i < items.length; i++) {
      const s = staged[i];
      if (s?.sync === undefined) continue;
      try {
        const sync = s.sync;
        s.sync = undefined;
        await sync();
      } catch (err) {
        await fail(i, err);
      }
    }
    for (let i = 0; i < items.length; i++) {
      const s = staged[i];
      if (s === undefined) continue;
      try {
        outcomes[i]!.resolve(await this.place(s));
      } catch (err) {
        outcomes[i]!.reject(err);
      }
    }
  }

  /**
   * Checks a put's condition (taking the key's lock for if-match) and writes its body to a temp file, unsynced.
   * Undefined when the lock is held by another writer and `waitForLock` is false.
   */
  private async stage(item: PutItem, waitForLock: boolean): Promise<StagedPut | undefined> {
    const { key, body, condition } = item;
    checkObjectKey(key);
    const file = this.path(key);
    await this.ensureDir(dirname(file));
    const kind = condition?.ifMatch !== undefined ? "swap" : condition?.ifNoneMatch !== undefined ? "create" : "replace";
    const staged: StagedPut = { kind, key, file, tmp: "", version: versionOf(body) };
    if (kind === "swap") {
      // Compare-and-swap holds the key's lock from the check until the rename.
      staged.release = await this.lock(file, waitForLock);
      if (staged.release === undefined) return undefined;
      try {
        const current = await this.currentVersion(file);
        if (condition!.ifNoneMatch === "*" && current !== undefined) throw new PreconditionFailedError(key);
        if (current !== condition!.ifMatch) throw new PreconditionFailedError(key);
      } catch (err) {
        await staged.release();
        throw err;
      }
    }
    try {
      const { tmp, sync } = await this.writeTemp(file, body);
      staged.tmp = tmp;
      staged.sync = sync;
    } catch (err) {
      await staged.release?.();
      throw err;
    }
    return staged;
  }

  /** Puts a staged (durable) body in place. */
  private async place(s: StagedPut): Promise<ObjectVersion> {
    switch (s.kind) {
      case "replace":
        this.known.delete(s.file);
        await this.fs.rename(s.tmp, s.file);
        break;
      case "create":
        // Create-only needs no lock: link() of a complete temp file fails atomically if the name exists.
        try {
          await this.fs.link(s.tmp, s.file);
        } catch (err) {
          if (isCode(err, "EEXIST")) throw new PreconditionFailedError(s.key);
          throw err;
        } finally {
          await this.fs.unlinkQuietly(s.tmp);
        }
        break;
      case "swap":
        try {
          await this.fs.rename(s.tmp, s.file);
          await this.remember(s.file, s.version);
        } catch (err) {
          await this.fs.unlinkQuietly(s.tmp);
          throw err;
        } finally {
          await s.release!();
        }
    }
    return { version: s.version };
  }

  /** Undoes a staged put that will not be placed: closes and removes its temp file, releases its lock. */
  private async abandon(s: StagedPut): Promise<void> {
    await s.sync?.().catch(() => undefined);
    if (s.tmp !== "") await this.fs.unlinkQuietly(s.tmp);
    await s.release?.();
  }

  /** The version of the file now, or undefined when there is none. */
  private async currentVersion(file: string): Promise<string | undefined> {
    let st;
    try {
      st = await this.fs.stat(file);
    } catch (err) {
      if (isCode(err, "ENOENT")) return undefined;
      throw err;
    }
    const k = this.known.get(file);
    if (k !== undefined && k.ino === st.ino && k.size === st.size && k.mtimeMs === st.mtimeMs && k.ctimeMs === st.ctimeMs) return k.version;
    return versionOf(await this.fs.readFile(file));
  }

  private async remember(file: string, version: string): Promise<void> {
    try {
      const st = await this.fs.stat(file);
      this.known.set(file, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, version });
    } catch {
      this.known.delete(file);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    // Walk only the deepest directory the prefix names (listing one room must not read every room's files).
    const dir = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    const segments = dir === "" ? [] : dir.split("/");
    if (segments.some((p) => !/^[A-Za-z0-9._=-]+$/.test(p) || p === "." || p === "..")) return [];
    await this.walk(join(this.root, ...segments), keys);
    return keys.filter((k) => k.startsWith(prefix)).sort();
  }

  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    this.known.delete(this.path(key));
    await this.fs.rm(this.path(key));
  }

  private path(key: string): string {
    return join(this.root, ...key.split("/"));
  }

  /** Writes `body` to a new temp file beside `file`; `sync` makes it durable (and closes it). */
  private async writeTemp(file: string, body: Buffer): Promise<{ tmp: string; sync: () => Promise<void> }> {
    const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      return { tmp, sync: await this.fs.writeUnsynced(tmp, body) };
    } catch (err) {
      if (!isCode(err, "ENOENT")) throw err;
      // The directory went away under us (someone removed it): make it again.
      this.dirs.delete(dirname(file));
      await this.ensureDir(dirname(file));
      return { tmp, sync: await this.fs.writeUnsynced(tmp, body) };
    }
  }

  /** mkdir once per directory per process (it is the hot path of checkpoints). */
  private async ensureDir(dir: string): Promise<void> {
    if (this.dirs.has(dir)) return;
    await this.fs.mkdirs(dir);
    this.dirs.add(dir);
  }

  /**
   * Cross-process lock of one key: a hard link `<file>.lock` to this process's lock source file. link() fails
   * atomically when the name exists, like O_EXCL, but makes no new inode (on some disks, creating an inode costs a
   * millisecond of CPU, and this runs for every manifest write). A lock held by the same holder for longer than
   * STALE_LOCK_MS, as this process observes it, belongs to a crashed writer and is broken.
   */
  private async lock(file: string, wait = true): Promise<(() => Promise<void>) | undefined> {
    const lock = `${file}.lock`;
    const source = this.lockSource();
    let seen: { ino: number; since: number } | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.fs.link(source, lock);
        break;
      } catch (err) {
        if (!isCode(err, "EEXIST")) throw err;
        if (!wait) return undefined;
        let ino: number | undefined;
        try {
          ino = (await this.fs.stat(lock)).ino;
        } catch {
          // released meanwhile
        }
        const now = Date.now();
        if (ino === undefined || seen?.ino !== ino) seen = ino === undefined ? undefined : { ino, since: now };
        else if (now - seen.since > this.staleLockMs) {
          await this.fs.unlinkQuietly(lock);
          seen = undefined;
        }
        await new Promise((r) => setTimeout(r, Math.min(50, 2 + attempt)));
      }
    }
    return () => this.fs.unlinkQuietly(lock);
  }

  /** This process's lock source, made on first use; sources of gone processes with no lock linked are removed then. */
  private lockSource(): string {
    if (this.source !== undefined) return this.source;
    const dir = join(this.root, LOCK_DIR);
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      try {
        const st = statSync(join(dir, name));
        if (st.nlink === 1 && Date.now() - st.mtimeMs > 24 * 3600_000) unlinkQuietly(join(dir, name));
      } catch {
        // removed by another process meanwhile
      }
    }
    const source = join(dir, `${process.pid}-${randomBytes(6).toString("hex")}`);
    closeSync(openSync(source, "wx"));
    this.source = source;
    return source;
  }

  private async walk(dir: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await this.fs.readdir(dir);
    } catch (err) {
      if (isCode(err, "ENOENT")) return;
      throw err;
    }
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        if (dir !== this.root || e.name !== LOCK_DIR) await this.walk(full, out);
      } else if (!e.name.endsWith(".tmp") && !e.name.endsWith(".lock")) out.push(relative(this.root, full).split(sep).join("/"));
    }
  }
}

/** The file calls of a store, blocking or asynchronous (see the class comment). */
interface FsCalls {
  readFile(file: string): Promise<Buffer>;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, name: string): Promise<void>;
  stat(file: string): Promise<Stats>;
  unlinkQuietly(file: string): Promise<void>;
  /** Writes a new file and leaves it open; the returned call fsyncs and closes it. */
  writeUnsynced(file: string, body: Buffer): Promise<() => Promise<void>>;
  mkdirs(dir: string): Promise<unknown>;
  readdir(dir: string): Promise<Dirent[]>;
  rm(file: string): Promise<void>;
}

const asyncFs: FsCalls = {
  readFile: (file) => fsAsync.readFile(file),
  rename: (from, to) => fsAsync.rename(from, to),
  link: (existing, name) => fsAsync.link(existing, name),
  stat: (file) => fsAsync.stat(file),
  unlinkQuietly: (file) => fsAsync.unlink(file).catch(() => undefined),
  writeUnsynced: async (file, body) => {
    const handle = await fsAsync.open(file, "w");
    try {
      await handle.writeFile(body);
    } catch (err) {
      await handle.close();
      throw err;
    }
    return async () => {
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    };
  },
  mkdirs: (dir) => fsAsync.mkdir(dir, { recursive: true }),
  readdir: (dir) => fsAsync.readdir(dir, { withFileTypes: true }),
  rm: (file) => fsAsync.rm(file, { force: true }),
};

// Thrown errors become rejections, as with the asynchronous calls.
const blockingFs: FsCalls = {
  readFile: async (file) => readFileSync(file),
  rename: async (from, to) => renameSync(from, to),
  link: async (existing, name) => linkSync(existing, name),
  stat: async (file) => statSync(file),
  unlinkQuietly: async (file) => unlinkQuietly(file),
  writeUnsynced: async (file, body) => {
    const fd = openSync(file, "w");
    try {
      writeFileSync(fd, body);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return async () => {
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    };
  },
  mkdirs: async (dir) => mkdirSync(dir, { recursive: true }),
  readdir: async (dir) => readdirSync(dir, { withFileTypes: true }),
  rm: async (file) => rmSync(file, { force: true }),
};

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // already gone
  }
}

function versionOf(body: Buffer): string {
  return createHash("sha256").update(body).digest("hex").slice(0, 32);
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
