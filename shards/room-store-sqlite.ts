/**
 * RoomStore on one SQLite file per node (`<data-dir>/rooms.db`), WAL.
 *
 * Why one file per node and not one per room:
 * - Group commit: one fsync makes the sends of every room that arrived meanwhile durable.
 *   With a file per room, each room would pay its own fsync per commit.
 * - Open files: a node may own tens of thousands of rooms; a WAL database holds three descriptors (db, -wal,
 *   -shm), so a file per room would need an LRU of open handles under the 20,000 descriptor limit.
 * - Checkpointing and moving a room are row-based anyway (the messages since the last checkpoint, the
 *   messages of one room), which `(room, seq)` primary keys make a range scan.
 *
 * Threads: the event loop's connection reads and does the commits (a commit is a few page writes into the log,
 * well under a millisecond, and one connection keeps its page cache across commits). What costs time goes
 * elsewhere: the fsync that makes commits durable runs on libuv's thread pool, one for every commit made
 * meanwhile (wal-sync.ts); folding the log into the file and restores' bulk appends run on the bulk thread
 * (sqlite-bulk.worker.js). The file has one writer at a time: while a bulk append is on the thread, the loop's
 * writes wait in order behind it (never for SQLite's lock, which would block the loop). Until its sync has
 * finished a commit is not acknowledged and not shown to readers (unsynced-heads.ts).
 */
import Database from "better-sqlite3";
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { setImmediate as nextTurn } from "node:timers/promises";
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
import { type UnsyncedRoom, UnsyncedHeads } from "./unsynced-heads.js";
import { type SyncFile, WalSync } from "./wal-sync.js";

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

/** A companion table set in the node's one SQLite file (the replica copy), on the store's connection. */
export interface SqliteCompanion {
  /** The store's connection: reads see the companion's writes before they are durable. */
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

/** Rooms whose head is remembered (see `heads`); past it the memory starts over. */
const HEADS_CACHED = 100_000;
/** Rows a room deletion removes per event-loop turn (a room of millions of rows must not block the loop). */
const DELETE_CHUNK = 5000;
/** How often the log is folded into the file while commits come. */
const CHECKPOINT_EVERY_MS = 1000;
/**
 * Log frames (pages, 4 KiB each) beyond which the event loop finishes a checkpoint itself (four times SQLite's
 * own autocheckpoint limit). The log starts over, and stops growing, only at a write that finds all of it in the
 * file; under steady commits the bulk thread never gets there (every round, new commits land behind it),
 * so the loop copies the few frames written during the thread's round, its writes held by its being busy: one
 * fsync of the file, 4–5 ms every few seconds at 1,000 messages/s per node (the thread's round copies the rest).
 */
const LOG_LIMIT_FRAMES = 4000;

type Written = readonly (readonly [room: UnsyncedRoom, head: number])[];

export class SqliteRoomStore implements RoomStore {
  private readonly db: Database.Database;
  private readonly stmt;
  private readonly appendTx: (messages: readonly StoredMessage[]) => ReturnType<typeof checkContiguous>;
  private readonly deleteTx: (room: string) => void;
  private readonly deleteChunkTx: (room: string) => boolean;
  private readonly checkpointTx: (records: [string, CheckpointRecord][]) => void;
  private readonly pendingCheckpoints = new Map<string, CheckpointRecord>();
  /**
   * The checkpoint record the file holds per room (null: none), as far as read or written here: the owner checks
   * a room's unsaved backlog on every send, and that read was 3 % of the event loop under load. Only this class
   * writes the table; a delete forgets the room until it lands.
   */
  private readonly checkpointsInFile = new Map<string, CheckpointRecord | null>();
  /** The latest durable messages per room, for history reads (see room-tails.ts). */
  private readonly tails = new RoomTails();
  private readonly prepared = new Map<string, Database.Statement>();
  /** The idempotency keys the file holds, for dedupe lookups that skip SQLite (see send-keys.ts). */
  private readonly keys: SendKeys;
  /**
   * The head in the file per room, as written or read here (every commit reads the heads of its rooms; 2 % of
   * the loop under load). This connection writes the heads, except bulk appends, whose rooms are forgotten.
   */
  private readonly heads = new Map<string, number>();
  /** Rooms with commits not yet synced, and the heads readers see meanwhile. */
  private readonly unsynced = new UnsyncedHeads();
  /** Where the bulk thread tells its OS thread id (for per-thread CPU in /metrics). */
  private readonly bulkThreadSlot = threadIdSlot();
  /** Companion statements checked to leave the rooms' tables alone (a handful of constant strings). */
  private readonly companionSql = new Set<string>();

  /** Set when the file was unreadable and was moved aside (its rooms are then rebuilt from checkpoints). */
  readonly setAside: string | undefined;
  /** File databases: the group fsync of the log (in-memory ones are "durable" on commit). */
  private readonly wal: WalSync | undefined;
  /** File databases: the thread that folds the log into the file and commits bulk appends. */
  private readonly bulk: Worker | undefined;
  private readonly waiting = new Map<number, { resolve: (reply: BulkReply) => void; reject: (err: Error) => void }>();
  private nextRequest = 0;
  /** The checkpoint running on the bulk thread, if any. */
  private checkpointing: Promise<BulkReply> | undefined;
  private lastCheckpointAt = 0;
  /** Set once the bulk thread has failed or exited. */
  private bulkGone: Error | undefined;
  /** Writes waiting, in order, for the bulk append on the thread to commit (empty while the loop may write). */
  private readonly writes: Write[] = [];
  /** A bulk append is on the thread: the loop must not write. */
  private bulkWriting = false;

  constructor(
    file: string,
    private readonly options: {
      /** How the log is synced (tests inject failures). */
      readonly syncFile?: SyncFile;
      /** See LOG_LIMIT_FRAMES (tests use small logs). */
      readonly logLimitFrames?: number;
      /** Told once if a sync of the log fails: the store refuses every write from then on. */
      readonly onBroken?: (err: Error) => void;
    } = {},
  ) {
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
      // Positional parameters: binding by name costs a property lookup per column per row (15 % of a bulk restore).
      insert: this.db.prepare("INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)"),
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
      chunkStart: this.db
        .prepare<[string, number], number>("SELECT seq FROM messages WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?")
        .pluck(),
      deleteFrom: this.db.prepare("DELETE FROM messages WHERE room = ? AND seq >= ?"),
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
      this.heads.delete(room);
      this.stmt.deleteMessages.run(room);
      this.stmt.deleteRoom.run(room);
      this.stmt.deleteCheckpoint.run(room);
    });
    // The room's newest rows, the head lowered below them: every state in between is the room's first messages,
    // so a crash in the middle leaves a shorter room that the rebuild on start completes from its chain.
    this.deleteChunkTx = this.db.transaction((room: string) => {
      const from = this.stmt.chunkStart.get(room, DELETE_CHUNK - 1);
      if (from === undefined) return false;
      this.stmt.deleteFrom.run(room, from);
      this.stmt.setHead.run(room, from - 1);
      this.rememberHead(room, from - 1);
      return true;
    });
    this.appendTx = this.db.transaction((messages: readonly StoredMessage[]) => {
      const heads = checkContiguous(messages, (room) => this.writtenHead(room));
      for (const m of messages) this.stmt.insert.run(m.room, m.seq, m.id, m.user, m.text, m.ts);
      for (const [room, head] of heads) {
        this.stmt.setHead.run(room, head.last);
        this.rememberHead(room, head.last);
      }
      return heads;
    });
    if (file !== ":memory:") {
      this.wal = new WalSync(`${file}-wal`, options.syncFile, options.onBroken);
      this.bulk = new Worker(new URL("./sqlite-bulk.worker.js", import.meta.url), {
        workerData: { file, threadId: this.bulkThreadSlot },
      });
      this.bulk.on("message", (m: BulkReply) => {
        const w = this.waiting.get(m.id);
        if (w === undefined) return;
        this.waiting.delete(m.id);
        if (m.ok) w.resolve(m);
        else w.reject(Object.assign(new Error(m.message ?? "SQLite bulk thread request failed"), { code: m.code }));
      });
      // A thread that is gone answers nothing more: its requests fail now and later ones at once (post).
      const gone = (err: Error) => {
        this.bulkGone ??= err;
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
      };
      this.bulk.on("error", gone);
      this.bulk.on("exit", (code) => gone(new Error(`the SQLite bulk thread exited (code ${code})`)));
      this.bulk.unref();
    }
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

  /** The bulk thread's OS thread id, once it has started (file databases on Linux). */
  get bulkThreadId(): number | undefined {
    return threadIdIn(this.bulkThreadSlot);
  }

  /** True once every key of the file is known in memory (for tests and status). */
  get sendKeysLoaded(): boolean {
    return this.keys.complete;
  }

  /** Keys in the send filter, deleted rows' included (for tests and status). */
  get sendKeys(): number {
    return this.keys.size;
  }

  /** The latest durable seq (what readers may see). */
  head(room: string): number {
    return this.unsynced.visible(room) ?? this.writtenHead(room);
  }

  /** The latest seq in the file, durable or not (what the next write continues). */
  private writtenHead(room: string): number {
    let head = this.heads.get(room);
    if (head === undefined) this.rememberHead(room, (head = this.stmt.head.get(room)?.head ?? 0));
    return head;
  }

  private rememberHead(room: string, head: number): void {
    if (this.heads.size >= HEADS_CACHED && !this.heads.has(room)) this.heads.clear();
    this.heads.set(room, head);
  }

  /** Runs a transaction; if it rolls back, the heads remembered during it may be wrong, so all are forgotten. */
  private transact<T>(tx: () => T): T {
    try {
      return tx();
    } catch (err) {
      this.heads.clear();
      throw err;
    }
  }

  /**
   * Finds unsynced sends too: a retry can only race its original while the room actor still holds the original
   * in flight (and answers with its promise), so this never acknowledges a send before it is durable.
   */
  findSend(room: string, user: string, id: string): SendRecord | undefined {
    if (!this.keys.mayHold(room, user, id)) return undefined;
    return this.stmt.findSend.get(room, user, id);
  }

  /** Commits and, for a file, waits for the fsync with the event loop blocked (tests and tools; nodes use appendAsync). */
  append(messages: readonly StoredMessage[]): void {
    if (messages.length === 0) return;
    this.failIfBroken();
    this.transact(() => this.appendTx(messages));
    this.keys.added(messages);
    this.wal?.flushSync();
    this.tails.committed(messages);
  }

  /**
   * Commits (now, unless a bulk append is on the thread) and resolves once the commit is durable. `bulk` appends
   * (restores: copies of the checkpoint chain, for rooms not served meanwhile) commit on the bulk thread, the
   * ones queued meanwhile together, and resolve once committed there, without a sync of their own: the chain
   * holds them durably, a lost one is restored again, and the next sync of any commit covers them (the log is
   * append-only); compact() after a rebuild syncs them at the latest. `bulk` and `grouped` appends (a takeover's
   * tail) are not the room's latest commits as its tail saw them, so its tail is dropped.
   */
  appendAsync(messages: readonly StoredMessage[], options?: { bulk?: boolean; grouped?: boolean }): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    const plain = options?.bulk !== true && options?.grouped !== true;
    if (this.wal === undefined) {
      this.append(messages);
      if (!plain) for (const m of messages) this.tails.forget(m.room);
      return Promise.resolve();
    }
    if (options?.bulk === true) return this.bulkAppend(messages);
    return this.write(() => {
      const heads = this.transact(() => this.appendTx(messages));
      this.keys.added(messages);
      if (!plain) for (const room of heads.keys()) this.tails.forget(room);
      return [...heads].map(([room, h]) => [this.unsynced.wrote(room, h.before, h.last), h.last] as const);
    }).then((written) =>
      this.durable(written).then(() => {
        if (plain) this.tails.committed(messages);
      }),
    );
  }

  skipTo(room: string, seq: number): void | Promise<void> {
    const skip = (): Written => {
      const before = this.writtenHead(room);
      if (seq <= before) return [];
      this.tails.forget(room);
      this.stmt.setHead.run(room, seq);
      this.rememberHead(room, seq);
      // In memory there is no sync to wait for: the head is visible at once.
      return this.wal === undefined ? [] : [[this.unsynced.wrote(room, before, seq), seq]];
    };
    if (this.wal === undefined) return void skip();
    return this.write(skip).then((written) => (written.length > 0 ? this.durable(written) : undefined));
  }

  /**
   * Runs a write on this connection: now, or once the bulk appends before it have committed on the thread (in
   * the order the writes were made). Resolves with its result, or rejects with its error (the store broken by a
   * failed sync refuses).
   */
  private write<T>(run: () => T): Promise<T> {
    if (!this.bulkWriting && this.writes.length === 0) {
      try {
        this.failIfBroken();
        return Promise.resolve(run());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.writes.push({
        kind: "loop",
        run: () => {
          try {
            this.failIfBroken();
            resolve(run());
          } catch (err) {
            reject(err);
          }
        },
      });
    });
  }

  /** A bulk append, in order with the other writes; the bulk appends queued together commit in one transaction. */
  private bulkAppend(messages: readonly StoredMessage[]): Promise<void> {
    const rooms = new Set(messages.map((m) => m.room));
    const landed = new Promise<void>((resolve, reject) => {
      this.writes.push({ kind: "bulk", messages, resolve, reject });
      this.runWrites();
    });
    // Readable once the thread has committed; a read meanwhile may have started the room's tail again.
    const forget = () => {
      for (const room of rooms) this.tails.forget(room);
    };
    forget();
    return this.keys.writing(messages, landed).then(forget, (err: unknown) => {
      forget();
      throw err;
    });
  }

  /** Runs the queued writes in order until one is a bulk append, which goes to the thread with those after it. */
  private runWrites(): void {
    while (!this.bulkWriting && this.writes.length > 0) {
      if (this.writes[0]!.kind === "loop") {
        (this.writes.shift() as LoopWrite).run();
        continue;
      }
      const group: BulkWrite[] = [];
      while (this.writes[0]?.kind === "bulk") group.push(this.writes.shift() as BulkWrite);
      this.bulkWriting = true;
      void this.commitBulk(group).finally(() => {
        // The thread moved these rooms' heads: what this thread remembered or read of them meanwhile is stale.
        for (const part of group) for (const m of part.messages) this.heads.delete(m.room);
        this.bulkWriting = false;
        this.runWrites();
      });
    }
  }

  /** One transaction on the thread; if it fails, each part alone, so a bad part fails only itself. */
  private async commitBulk(group: readonly BulkWrite[]): Promise<void> {
    const post = (parts: readonly BulkWrite[]) => {
      const broken = this.wal?.failed;
      if (broken !== undefined) return Promise.reject(broken);
      return this.post({ op: "append", messages: parts.length === 1 ? parts[0]!.messages : parts.flatMap((p) => p.messages) });
    };
    try {
      await post(group);
      for (const part of group) part.resolve();
      return;
    } catch (err) {
      if (group.length === 1) return group[0]!.reject(err);
    }
    for (const part of group) await post([part]).then(() => part.resolve(), part.reject);
  }

  /** Resolves once what was written so far is durable, then lets readers see the rooms written up to their heads. */
  private durable(written: Written): Promise<void> {
    return this.wal!.flush().then(() => {
      for (const [room, head] of written) this.unsynced.synced(room, head);
      this.checkpointSoon();
    });
  }

  private failIfBroken(): void {
    const failed = this.wal?.failed;
    if (failed !== undefined) throw failed;
  }

  /**
   * Folds the log into the file now and empties it (after a rebuild or a rebalance's copy, before the rooms are
   * served: the first reads would otherwise walk a log of a quarter of a million messages). The bulk thread
   * copies most of it; the event loop then copies what was committed meanwhile and truncates the log.
   */
  async compact(): Promise<void> {
    // Without the thread (crashed), the TRUNCATE below copies everything itself.
    if (this.bulk !== undefined) await this.checkpoint().catch(() => undefined);
    // A write: with the lock held by a bulk append on the thread, TRUNCATE would wait for it with the loop blocked.
    await this.write(() => {
      if (this.checkpointing === undefined && this.db.open) this.db.pragma("wal_checkpoint(TRUNCATE)");
    });
  }

  /** A checkpoint on the bulk thread, after the one running. */
  private checkpoint(): Promise<BulkReply> {
    const run = (): Promise<BulkReply> => this.post({ op: "checkpoint" });
    const next = (this.checkpointing ?? Promise.resolve()).then(run, run);
    this.checkpointing = next;
    const done = () => {
      if (this.checkpointing === next) this.checkpointing = undefined;
    };
    next.then(done, done);
    return next;
  }

  /** After commits: a checkpoint round once a second (SQLite's own are off on this connection). */
  private checkpointSoon(): void {
    if (this.bulk === undefined || this.checkpointing !== undefined) return;
    const now = Date.now();
    if (now - this.lastCheckpointAt < CHECKPOINT_EVERY_MS) return;
    this.lastCheckpointAt = now;
    const here = () => {
      if (this.checkpointing !== undefined || !this.db.open) return;
      try {
        this.db.pragma("wal_checkpoint(PASSIVE)");
      } catch {
        // An I/O error here fails no write (the log holds everything); the next round tries again.
      }
    };
    this.checkpoint().then(
      (reply) => {
        if (reply.log >= (this.options.logLimitFrames ?? LOG_LIMIT_FRAMES)) here();
      },
      // No thread (it never goes away while the store is open, unless it crashed): the loop checkpoints, blocked.
      () => void (this.bulkGone !== undefined && here()),
    );
  }

  /**
   * A companion set of tables in the same file (the replica copy, shards/replica-store-sqlite.ts): its schema
   * is created on this connection, and its writes commit here too, in order with the rooms' writes, and resolve
   * once durable.
   */
  companion(schema: string): SqliteCompanion {
    this.db.exec(schema);
    return {
      db: this.db,
      write: (statements) => {
        const trespass = statements.find(([sql]) => this.touchesRoomTables(sql));
        if (trespass !== undefined) return Promise.reject(new Error(`a companion may not write the rooms' tables: ${trespass[0]}`));
        const tx = () =>
          this.db.transaction(() => {
            for (const [sql, params] of statements) this.statement(sql).run(...params);
          })();
        return this.write(tx).then(() => (this.wal === undefined ? undefined : this.durable([])));
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

  private post(msg: object): Promise<BulkReply> {
    const bulk = this.bulk!;
    if (this.bulkGone !== undefined) return Promise.reject(this.bulkGone);
    return new Promise((resolve, reject) => {
      const id = ++this.nextRequest;
      this.waiting.set(id, { resolve, reject });
      bulk.postMessage({ id, ...msg });
    });
  }

  history(room: string, query: HistoryQuery): StoredMessage[] {
    let before = query.before ?? Number.MAX_SAFE_INTEGER;
    const visible = this.unsynced.visible(room);
    if (visible !== undefined) before = Math.min(before, visible + 1);
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

  async deleteRoom(room: string): Promise<void> {
    this.failIfBroken();
    const forget = () => {
      this.pendingCheckpoints.delete(room);
      this.unsynced.forget(room);
      this.tails.forget(room);
      this.checkpointsInFile.delete(room);
    };
    let rows: number | undefined;
    // Each step a write in order with the others; true while rows are left for the next turn.
    const step = (chunk: boolean) =>
      this.write(() => {
        rows ??= this.writtenHead(room);
        forget();
        return this.transact(() => (chunk ? this.deleteChunkTx(room) : (this.deleteTx(room), false)));
      });
    // A file's room goes a chunk per turn (see deleteChunkTx); the last step removes the rest and its records.
    if (this.wal !== undefined) while (await step(true)) await nextTurn();
    await step(false);
    this.keys.removed(rows ?? 0);
    if (this.wal !== undefined) await this.durable([]);
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
   * written in one transaction per event-loop turn, and made durable by the next commit's sync.
   */
  setCheckpoint(room: string, record: CheckpointRecord): void {
    if (this.pendingCheckpoints.size === 0) setImmediate(() => this.flushCheckpoints());
    this.pendingCheckpoints.set(room, record);
  }

  private flushCheckpoints(): void {
    if (this.pendingCheckpoints.size === 0 || !this.db.open || this.wal?.failed !== undefined) return;
    // Pending records stay readable until written (checkpointOf), and a later record replaces an earlier one.
    void this.write(() => {
      if (this.pendingCheckpoints.size === 0 || !this.db.open) return;
      const records = [...this.pendingCheckpoints];
      this.checkpointTx(records);
      this.pendingCheckpoints.clear();
      for (const [room, r] of records) this.checkpointsInFile.set(room, r);
    }).catch(() => {});
  }

  /** Rooms whose durable head is above their checkpointed seq. */
  uncheckpointed(): RoomHeads[] {
    const rows = this.stmt.uncheckpointed.all();
    const result: RoomHeads[] = [];
    for (const r of rows) {
      const head = this.unsynced.visible(r.room) ?? r.head;
      if (head > r.checkpointed) result.push(head === r.head ? r : { ...r, head });
    }
    return result;
  }

  /** Writes what is pending, makes it durable, stops the bulk thread and closes the connection. */
  async closeAsync(): Promise<void> {
    if (this.db.open) {
      this.flushCheckpoints();
      await this.write(() => undefined).catch(() => {}); // every write queued before this one has run
      await this.wal?.flush().catch(() => {});
      if (this.bulk !== undefined) await this.post({ op: "close" }).catch(() => {});
    }
    this.close();
  }

  close(): void {
    if (this.db.open) this.flushCheckpoints();
    if (this.bulk !== undefined) void this.bulk.terminate();
    this.wal?.close();
    if (this.db.open) this.db.close();
  }
}

interface LoopWrite {
  readonly kind: "loop";
  readonly run: () => void;
}

interface BulkWrite {
  readonly kind: "bulk";
  readonly messages: readonly StoredMessage[];
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

type Write = LoopWrite | BulkWrite;

interface BulkReply {
  readonly id: number;
  readonly ok: boolean;
  /** A checkpoint's: frames in the log as the checkpoint began (it copied them all). */
  readonly log: number;
  readonly message?: string;
  readonly code?: string;
}

function openDatabase(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma("journal_mode = WAL");
    // NORMAL: a commit writes its log frames without syncing them; the store acknowledges it only after WalSync
    // has synced the log (invariant 3: an acknowledged send survives power loss, as with FULL). The checkpoints
    // run on the bulk thread, never in a commit here.
    db.pragma("synchronous = NORMAL");
    db.pragma("wal_autocheckpoint = 0");
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
