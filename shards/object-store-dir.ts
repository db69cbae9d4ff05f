/**
 * ObjectStore over a local directory, shared by the nodes of a local cluster.
 *
 * Atomicity: bodies are written to a temp file and renamed into place. Conditional writes are serialized
 * across processes by an exclusive lock file per key (O_EXCL), so compare-and-swap holds between nodes that
 * share the directory. Versions are the SHA-256 of the body, like S3's ETag is an MD5.
 */
import { createHash, randomBytes } from "node:crypto";
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import {
  checkObjectKey,
  type ObjectStore,
  type ObjectVersion,
  type PutCondition,
  PreconditionFailedError,
  type StoredObject,
} from "./object-store.js";

/** A lock older than this belongs to a crashed writer and is broken. */
const STALE_LOCK_MS = 10_000;

export class DirectoryObjectStore implements ObjectStore {
  private readonly dirs = new Set<string>();

  constructor(readonly root: string) {}

  get location(): string {
    return this.root;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    checkObjectKey(key);
    try {
      const body = await readFile(this.path(key));
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
        await link(tmp, file);
      } catch (err) {
        if (isCode(err, "EEXIST")) throw new PreconditionFailedError(key);
        throw err;
      } finally {
        await unlink(tmp).catch(() => {});
      }
      return { version: versionOf(body) };
    }
    return this.withLock(file, async () => {
      const current = await readFile(file).catch((err: unknown) => {
        if (isCode(err, "ENOENT")) return undefined;
        throw err;
      });
      if (condition.ifNoneMatch === "*" && current !== undefined) throw new PreconditionFailedError(key);
      if (condition.ifMatch !== undefined && (current === undefined || versionOf(current) !== condition.ifMatch)) {
        throw new PreconditionFailedError(key);
      }
      await this.writeAtomically(file, body);
      return { version: versionOf(body) };
    });
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    await this.walk(this.root, keys);
    return keys.filter((k) => k.startsWith(prefix)).sort();
  }

  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    await rm(this.path(key), { force: true });
  }

  private path(key: string): string {
    return join(this.root, ...key.split("/"));
  }

  private async writeAtomically(file: string, body: Buffer): Promise<void> {
    await rename(await this.writeTemp(file, body), file);
  }

  private async writeTemp(file: string, body: Buffer): Promise<string> {
    const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      await writeFile(tmp, body, { flush: true });
    } catch (err) {
      if (!isCode(err, "ENOENT")) throw err;
      // The directory went away under us (someone removed it): make it again.
      this.dirs.delete(dirname(file));
      await this.ensureDir(dirname(file));
      await writeFile(tmp, body, { flush: true });
    }
    return tmp;
  }

  /** mkdir once per directory per process (it is the hot path of checkpoints). */
  private async ensureDir(dir: string): Promise<void> {
    if (this.dirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.dirs.add(dir);
  }

  private async withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
    const lock = `${file}.lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(lock, "wx");
        await handle.close();
        break;
      } catch (err) {
        if (!isCode(err, "EEXIST")) throw err;
        const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
        if (age > STALE_LOCK_MS) await unlink(lock).catch(() => {});
        await new Promise((r) => setTimeout(r, Math.min(50, 2 + attempt)));
      }
    }
    try {
      return await fn();
    } finally {
      await unlink(lock).catch(() => {});
    }
  }

  private async walk(dir: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isCode(err, "ENOENT")) return;
      throw err;
    }
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) await this.walk(full, out);
      else if (!e.name.endsWith(".tmp") && !e.name.endsWith(".lock")) out.push(relative(this.root, full).split(sep).join("/"));
    }
  }
}

function versionOf(body: Buffer): string {
  return createHash("sha256").update(body).digest("hex").slice(0, 32);
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
