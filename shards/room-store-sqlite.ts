/**
 * RoomStore on one SQLite file per node (`<data-dir>/rooms.db`), WAL with synchronous=FULL.
 *
 * Why one file per node and not one per room:
 * - Group commit: one transaction (one fsync) carries the sends of every room that arrived in the same tick.
 *   With a file per room, each room would pay its own fsync per commit.
 * - Open files: a node may own tens of thousands of rooms; a WAL database holds three descriptors (db, -wal,
 *   -shm), so a file per room would need an LRU of open handles under the 20,000 descriptor limit.
 * - Checkpointing and moving a room are row-based anyway (the messages since the last checkpoint, the
 *   messages of one room), which `(room, seq)` primary keys make a range scan.
 */
import Database from "better-sqlite3";
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { dirname } from "node:path";
import {
  checkContiguous,
  type CheckpointRecord,
  type HistoryQuery,
  type RoomHeads,
  type RoomStore,
  type SendRecord,
  type StoredMessage,
} from "./room-store.js";
import { RoomTails } from "./room-tails.js";
import { SendKeys } from "./send-keys.js";
import { threadIdIn, threadIdSlot } from "./thread-id.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  room TEXT PRIMARY KEY,
  head INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
  room TEXT NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  user TEXT NOT NULL,
  text TEXT NOT NULL,
  ts INTEGER NOT NULL,
  PRIMARY KEY (room, seq)
) WITHOUT ROWID;
-- The idempotency record of DESIGN.md invariant 4: it lives with the room's rows and moves with them.
CREATE UNIQUE INDEX IF NOT EXISTS messages_send ON messages (room, user, id);
-- What the object store holds of each room, so a restart knows which rooms still need a checkpoint.
CREATE TABLE IF NOT EXISTS checkpoints (
  room TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  version TEXT NOT NULL,
  at INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** One SQL statement with positional parameters, for a companion's writes (see `companion`). */
export type SqlStatement = readonly [sql: string, params: readonly (string | number | null)[]];

/** A companion table set in the node's one SQLite file (the replica copy): reads here, writes on the writer thread. */
export interface SqliteCompanion {
  /** The read connection (WAL: reads never wait for the writer). */
  readonly db: Database.Database;
  /** Runs the statements in one transaction; resolves once it is durable (fsync), rejects if it rolled back. */
  write(statements: readonly SqlStatement[]): Promise<void>;
}

/** The rooms' own tables, which companions leave alone (the send keys must see every write of messages). */
const ROOM_TABLES = /\b(messages|rooms|checkpoints)\b/i;

interface MessageRow {
  room: string;
  seq: number;
  id: string;
  user: string;
  text: string;
  ts: number;
}

export class SqliteRoomStore implements RoomStore {
  private readonly db: Database.Database;
  private readonly stmt;
  private readonly appendTx: (messages: readonly StoredMessage[]) => void;
  private readonly deleteTx: (room: string) => void;
  private readonly checkpointTx: (records: [string, CheckpointRecord][]) => void;
  private readonly pendingCheckpoints = new Map<string, CheckpointRecord>();
  /**
   * The checkpoint record the file holds per room (null: none), as far as read or written here: the owner checks
   * a room's unsaved backlog on every send, and that read was 3 % of the event loop under load. Only this class
   * writes the table; a delete forgets the room until it lands.
   */
  private readonly checkpointsInFile = new Map<string, CheckpointRecord | null>();
  /** The latest committed messages per room, for history reads (see room-tails.ts). */
  private readonly tails = new RoomTails();
  private readonly prepared = new Map<string, Database.Statement>();
  /** The idempotency keys the file holds, for dedupe lookups that skip SQLite (see send-keys.ts). */
  private readonly keys: SendKeys;
  /** Where the writer thread tells its OS thread id (for per-thread CPU in /metrics). */
  private readonly writerThread = threadIdSlot();
  /** Companion statements checked to leave the rooms' tables alone (a handful of constant strings). */
  private readonly companionSql = new Set<string>();

  /** Set when the file was unreadable and was moved aside (its rooms are then rebuilt from checkpoints). */
  readonly setAside: string | undefined;
  /** The writer thread (file databases only): commits run there, reads stay here (WAL allows both). */
  private readonly writer: Worker | undefined;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private nextRequest = 0;
  /** Grouped appends of this event-loop turn, sent as one transaction per kind (see appendAsync). */
  private groupParts: { messages: readonly StoredMessage[]; bulk: boolean; resolve: () => void; reject: (err: unknown) => void }[] = [];

  constructor(file: string) {
    if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
    let db: Database.Database;
    try {
      db = openDatabase(file);
    } catch (err) {
      if (file === ":memory:" || !isCorruption(err)) throw err;
      // A corrupt file must not take the node down: keep it for inspection and start empty; the rebuild on
      // start restores every room from object storage.
      this.setAside = `${file}.corrupt-${Date.now()}`;
      for (const suffix of ["", "-wal", "-shm"]) {
        if (existsSync(file + suffix)) renameSync(file + suffix, this.setAside + suffix);
      }
      db = openDatabase(file);
    }
    this.db = db;
    this.stmt = {
      head: this.db.prepare<[string], { head: number }>("SELECT head FROM rooms WHERE room = ?"),
      setHead: this.db.prepare(
        "INSERT INTO rooms (room, head) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET head = excluded.head",
      ),
      insert: this.db.prepare(
        "INSERT INTO messages (room, seq, id, user, text, ts) VALUES (@room, @seq, @id, @user, @text, @ts)",
      ),
      findSend: this.db.prepare<[string, string, string], SendRecord>(
        "SELECT seq, ts FROM messages WHERE room = ? AND user = ? AND id = ?",
      ),
      after: this.db.prepare<[string, number, number, number], MessageRow>(
        "SELECT room, seq, id, user, text, ts FROM messages WHERE room = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?",
      ),
      before: this.db.prepare<[string, number, number], MessageRow>(
        "SELECT room, seq, id, user, text, ts FROM messages WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
      ),
      rooms: this.db.prepare<[], { room: string }>("SELECT room FROM rooms WHERE head > 0 ORDER BY room"),
      roomCount: this.db.prepare<[], { n: number }>("SELECT count(*) AS n FROM rooms WHERE head > 0"),
      deleteMessages: this.db.prepare("DELETE FROM messages WHERE room = ?"),
      deleteRoom: this.db.prepare("DELETE FROM rooms WHERE room = ?"),
      deleteCheckpoint: this.db.prepare("DELETE FROM checkpoints WHERE room = ?"),
      checkpointOf: this.db.prepare<[string], CheckpointRecord>("SELECT seq, version, at FROM checkpoints WHERE room = ?"),
      setCheckpoint: this.db.prepare(
        "INSERT INTO checkpoints (room, seq, version, at) VALUES (@room, @seq, @version, @at) ON CONFLICT(room) DO UPDATE SET seq = excluded.seq, version = excluded.version, at = excluded.at",
      ),
      uncheckpointed: this.db.prepare<[], RoomHeads>(
        "SELECT r.room AS room, r.head AS head, coalesce(c.seq, 0) AS checkpointed FROM rooms r LEFT JOIN checkpoints c ON c.room = r.room WHERE r.head > coalesce(c.seq, 0)",
      ),
    };
    this.checkpointTx = this.db.transaction((records: [string, CheckpointRecord][]) => {
      for (const [room, record] of records) this.stmt.setCheckpoint.run({ room, ...record });
    });
    this.deleteTx = this.db.transaction((room: string) => {
      this.pendingCheckpoints.delete(room);
      this.stmt.deleteMessages.run(room);
      this.stmt.deleteRoom.run(room);
      this.stmt.deleteCheckpoint.run(room);
    });
    if (file !== ":memory:") {
      this.writer = new Worker(new URL("./sqlite-writer.worker.js", import.meta.url), { workerData: { file, threadId: this.writerThread } });
      // A group commit answers all of its requests in one message (`ids`); everything else answers alone.
      this.writer.on("message", (m: { id?: number; ids?: number[]; ok: boolean; message?: string; code?: string }) => {
        for (const id of m.ids ?? [m.id!]) {
          const w = this.waiting.get(id);
          if (w === undefined) continue;
          this.waiting.delete(id);
          if (m.ok) w.resolve();
          else w.reject(Object.assign(new Error(m.message ?? "SQLite write failed"), { code: m.code }));
        }
      });
      this.writer.on("error", (err) => {
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
      });
      this.writer.unref();
    }
    this.appendTx = this.db.transaction((messages: readonly StoredMessage[]) => {
      checkContiguous(messages, (room) => this.head(room));
      const heads = new Map<string, number>();
      for (const m of messages) {
        this.stmt.insert.run(m);
        heads.set(m.room, m.seq);
      }
      for (const [room, head] of heads) this.stmt.setHead.run(room, head);
    });
    const keysAfter = this.db
      .prepare<[string, string, string, number], [string, string, string]>(
        "SELECT room, user, id FROM messages WHERE (room, user, id) > (?, ?, ?) ORDER BY room, user, id LIMIT ?",
      )
      .raw();
    this.keys = new SendKeys(
      ([room, user, id], limit) => keysAfter.all(room, user, id, limit),
      () => this.db.open,
    );
  }

  /** The writer thread's OS thread id, once it has started (file databases on Linux). */
  get writerThreadId(): number | undefined {
    return threadIdIn(this.writerThread);
  }

  /** True once every key of the file is known in memory (for tests and status). */
  get sendKeysLoaded(): boolean {
    return this.keys.complete;
  }

  /** Keys in the send filter, deleted rows' included (for tests and status). */
  get sendKeys(): number {
    return this.keys.size;
  }

  head(room: string): number {
    return this.stmt.head.get(room)?.head ?? 0;
  }

  findSend(room: string, user: string, id: string): SendRecord | undefined {
    if (!this.keys.mayHold(room, user, id)) return undefined;
    return this.stmt.findSend.get(room, user, id);
  }

  append(messages: readonly StoredMessage[]): void {
    if (messages.length === 0) return;
    this.keys.added(messages);
    this.appendTx(messages);
    this.tails.committed(messages);
  }

  skipTo(room: string, seq: number): void | Promise<void> {
    if (seq <= this.head(room)) return;
    if (this.writer !== undefined) return this.forgetting([room], this.request({ op: "skip", room, seq }));
    this.tails.forget(room);
    this.stmt.setHead.run(room, seq);
  }

  appendAsync(messages: readonly StoredMessage[], options?: { bulk?: boolean; grouped?: boolean }): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    if (options?.bulk !== true && options?.grouped !== true) {
      if (this.writer === undefined) return Promise.resolve(this.append(messages));
      return this.keys.writing(messages, this.request({ op: "append", messages, bulk: false })).then(() => this.tails.committed(messages));
    }
    const rooms = [...new Set(messages.map((m) => m.room))];
    if (this.writer === undefined) {
      this.append(messages);
      for (const room of rooms) this.tails.forget(room);
      return Promise.resolve();
    }
    // Many rooms restored or taken over at once, a segment or a tail per call: the calls of one turn share one
    // transaction (a rebuild's bottleneck is the writer thread; a takeover's, one fsync per room).
    const bulk = options?.bulk === true;
    return this.forgetting(
      rooms,
      this.keys.writing(
        messages,
        new Promise((resolve, reject) => {
          if (this.groupParts.length === 0) setImmediate(() => this.flushGroups());
          this.groupParts.push({ messages, bulk, resolve, reject });
        }),
      ),
    );
  }

  /**
   * A write on its way to the writer that is not a plain commit: the rooms' tails (and a delete's checkpoint
   * records) are unknown from now until it has landed or failed.
   */
  private forgetting(rooms: readonly string[], write: Promise<void>, deletes = false): Promise<void> {
    const forget = () => {
      for (const room of rooms) this.tails.forget(room);
      if (deletes) for (const room of rooms) this.checkpointsInFile.delete(room);
    };
    forget();
    return write.then(forget, (err: unknown) => {
      forget();
      throw err;
    });
  }

  /** Sends the pending grouped appends, one transaction per kind; a failed one is retried part by part. */
  private flushGroups(): void {
    const parts = this.groupParts.splice(0);
    if (parts.length === 0) return;
    const send = (group: typeof parts, bulk: boolean) =>
      this.post({ op: "append", messages: group.length === 1 ? group[0]!.messages : group.flatMap((p) => p.messages), bulk });
    for (const bulk of [true, false]) {
      const group = parts.filter((p) => p.bulk === bulk);
      if (group.length === 0) continue;
      send(group, bulk).then(
        () => group.forEach((p) => p.resolve()),
        (err: unknown) => {
          if (group.length === 1) return group[0]!.reject(err);
          for (const p of group) send([p], bulk).then(p.resolve, p.reject);
        },
      );
    }
  }

  compact(): Promise<void> {
    if (this.writer !== undefined) return this.request({ op: "compact" });
    this.db.pragma("wal_checkpoint(TRUNCATE)");
    return Promise.resolve();
  }

  /**
   * A companion set of tables in the same file (the replica copy, shards/replica-store-sqlite.ts): its schema
   * is created on this connection, which it reads through; its writes run in the writer thread like every
   * other write here, in order with them (a second writing connection would wait on the file's lock with the
   * event loop blocked).
   */
  companion(schema: string): SqliteCompanion {
    this.db.exec(schema);
    return {
      db: this.db,
      write: (statements) => {
        const trespass = statements.find(([sql]) => this.touchesRoomTables(sql));
        if (trespass !== undefined) return Promise.reject(new Error(`a companion may not write the rooms' tables: ${trespass[0]}`));
        if (this.writer !== undefined) return this.request({ op: "tx", statements });
        try {
          this.db.transaction(() => {
            for (const [sql, params] of statements) this.statement(sql).run(...params);
          })();
          return Promise.resolve();
        } catch (err) {
          return Promise.reject(err);
        }
      },
    };
  }

  private touchesRoomTables(sql: string): boolean {
    if (this.companionSql.has(sql)) return false;
    if (ROOM_TABLES.test(sql)) return true;
    this.companionSql.add(sql);
    return false;
  }

  private statement(sql: string): Database.Statement {
    let s = this.prepared.get(sql);
    if (s === undefined) this.prepared.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  private request(msg: object): Promise<void> {
    // Requests reach the writer in the order they were made: pending grouped appends go first.
    this.flushGroups();
    return this.post(msg);
  }

  private post(msg: object): Promise<void> {
    const writer = this.writer!;
    return new Promise((resolve, reject) => {
      const id = ++this.nextRequest;
      this.waiting.set(id, { resolve, reject });
      writer.postMessage({ id, ...msg });
    });
  }

  history(room: string, query: HistoryQuery): StoredMessage[] {
    const before = query.before ?? Number.MAX_SAFE_INTEGER;
    if (query.after === undefined && query.before !== undefined) {
      return this.stmt.before.all(room, before, query.limit).reverse();
    }
    return this.tails.range(room, query.after ?? 0, before, query.limit) ?? this.stmt.after.all(room, query.after ?? 0, before, query.limit);
  }

  rooms(): string[] {
    return this.stmt.rooms.all().map((r) => r.room);
  }

  roomCount(): number {
    return this.stmt.roomCount.get()?.n ?? 0;
  }

  deleteRoom(room: string): void | Promise<void> {
    this.pendingCheckpoints.delete(room);
    const rows = this.head(room);
    // Through the writer thread when there is one: a write here would wait (blocking) for its lock.
    if (this.writer !== undefined) return this.forgetting([room], this.request({ op: "delete", room }), true).then(() => this.keys.removed(rows));
    this.tails.forget(room);
    this.checkpointsInFile.delete(room);
    this.deleteTx(room);
    this.keys.removed(rows);
  }

  checkpointOf(room: string): CheckpointRecord | undefined {
    const pending = this.pendingCheckpoints.get(room);
    if (pending !== undefined) return pending;
    let inFile = this.checkpointsInFile.get(room);
    if (inFile === undefined) this.checkpointsInFile.set(room, (inFile = this.stmt.checkpointOf.get(room) ?? null));
    return inFile ?? undefined;
  }

  /**
   * Checkpoint records are advisory (a lost one only makes a restart re-read the manifest), so they are
   * written in one transaction per event-loop turn rather than one fsync per room.
   */
  setCheckpoint(room: string, record: CheckpointRecord): void {
    if (this.pendingCheckpoints.size === 0) setImmediate(() => this.flushCheckpoints());
    this.pendingCheckpoints.set(room, record);
  }

  private flushCheckpoints(): void {
    if (this.pendingCheckpoints.size === 0 || !this.db.open) return;
    const records = [...this.pendingCheckpoints];
    if (this.writer !== undefined) {
      // Through the writer thread like every other write; pending ones stay readable until written.
      void this.request({ op: "checkpoints", records }).then(
        () => {
          for (const [room, r] of records) {
            this.checkpointsInFile.set(room, r);
            if (this.pendingCheckpoints.get(room) === r) this.pendingCheckpoints.delete(room);
          }
        },
        () => {},
      );
      return;
    }
    this.pendingCheckpoints.clear();
    this.checkpointTx(records);
    for (const [room, r] of records) this.checkpointsInFile.set(room, r);
  }

  uncheckpointed(): RoomHeads[] {
    const rows = this.stmt.uncheckpointed.all();
    // Records still on their way to the writer count too.
    return rows.filter((r) => (this.pendingCheckpoints.get(r.room)?.seq ?? 0) < r.head);
  }

  /** Writes what is pending, stops the writer thread and closes both connections. */
  async closeAsync(): Promise<void> {
    if (this.writer !== undefined && this.db.open) {
      if (this.pendingCheckpoints.size > 0) await this.request({ op: "checkpoints", records: [...this.pendingCheckpoints] }).catch(() => {});
      await this.request({ op: "close" }).catch(() => {});
    }
    this.close();
  }

  close(): void {
    if (this.writer === undefined) this.flushCheckpoints();
    else void this.writer.terminate();
    if (this.db.open) this.db.close();
  }
}

function openDatabase(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma("journal_mode = WAL");
    // FULL: the WAL is fsynced at every commit, so an acknowledged send survives power loss (invariant 3).
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 5000");
    db.exec(SCHEMA);
    db.prepare("SELECT count(*) FROM rooms").get();
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB";
}
