/**
 * ObjectStore over a local directory, shared by the nodes of a local cluster.
 *
 * Atomicity: bodies are written to a temp file and renamed into place. Conditional writes are serialized
 * across processes by a lock per key (see withLock), so compare-and-swap holds between nodes that share the
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
/** Lock source files (see withLock); not object keys, so listing skips the directory. */
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
    checkObjectKey(key);
    const file = this.path(key);
    await this.ensureDir(dirname(file));
    if (condition?.ifMatch === undefined && condition?.ifNoneMatch === undefined) {
      await this.writeAtomically(file, body);
      return { version: versionOf(body) };
    }
    if (condition.ifMatch === undefined) {
      // Create-only needs no lock: link() of a complete temp file fails atomically if the name exists.
      const tmp = await this.writeTemp(file, body);
      try {
        await this.fs.link(tmp, file);
      } catch (err) {
        if (isCode(err, "EEXIST")) throw new PreconditionFailedError(key);
        throw err;
      } finally {
        await this.fs.unlinkQuietly(tmp);
      }
      return { version: versionOf(body) };
    }
    return this.withLock(file, async () => {
      const current = await this.currentVersion(file);
      if (condition.ifNoneMatch === "*" && current !== undefined) throw new PreconditionFailedError(key);
      if (condition.ifMatch !== undefined && current !== condition.ifMatch) throw new PreconditionFailedError(key);
      const version = versionOf(body);
      const tmp = await this.writeTemp(file, body);
      await this.fs.rename(tmp, file);
      await this.remember(file, version);
      return { version };
    });
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

  private async writeAtomically(file: string, body: Buffer): Promise<void> {
    this.known.delete(file);
    await this.fs.rename(await this.writeTemp(file, body), file);
  }

  private async writeTemp(file: string, body: Buffer): Promise<string> {
    const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      await this.fs.writeDurably(tmp, body);
    } catch (err) {
      if (!isCode(err, "ENOENT")) throw err;
      // The directory went away under us (someone removed it): make it again.
      this.dirs.delete(dirname(file));
      await this.ensureDir(dirname(file));
      await this.fs.writeDurably(tmp, body);
    }
    return tmp;
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
  private async withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
    const lock = `${file}.lock`;
    const source = this.lockSource();
    let seen: { ino: number; since: number } | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.fs.link(source, lock);
        break;
      } catch (err) {
        if (!isCode(err, "EEXIST")) throw err;
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
    try {
      return await fn();
    } finally {
      await this.fs.unlinkQuietly(lock);
    }
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
  writeDurably(file: string, body: Buffer): Promise<void>;
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
  writeDurably: (file, body) => fsAsync.writeFile(file, body, { flush: true }),
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
  writeDurably: async (file, body) => writeFileSync(file, body, { flush: true }),
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
