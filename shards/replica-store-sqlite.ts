/**
 * ReplicaStore in the node's one SQLite file (`rooms.db`), next to the rooms it owns: two tables of its own,
 * written on the store's connection (SqliteRoomStore.companion), so a replication call costs one transaction and
 * shares the log's next fsync with the node's own commits.
 *
 * Decisions are made on the event loop against an in-memory copy of the records (loaded at start), so every
 * call is decided in the order it arrives without reading the file; the records change before the write is
 * durable, but the answer to the owner waits for it. A failed write reloads the records it touched (a broken
 * disk: the node's own commits fail too).
 *
 * Group commit: the writes of calls that arrive while one is being written (from any owner) go together in
 * the next transaction, so a replica pays one fsync per round, not one per call.
 */
import type Database from "better-sqlite3";
import { checkItem, decide, type ReplicaItem, type ReplicaOutcome, type ReplicaRecord, type ReplicaStore } from "./replica-store.js";
import type { StoredMessage } from "./room-store.js";
import type { SqlStatement, SqliteCompanion, SqliteRoomStore } from "./room-store-sqlite.js";

const SCHEMA = `
-- Per room: who last brought the copy in sync, at which epoch, and where it ends.
CREATE TABLE IF NOT EXISTS replica_rooms (
  room TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  head INTEGER NOT NULL,
  checkpointed INTEGER NOT NULL
) WITHOUT ROWID;
-- The owner's messages above its checkpointed seq.
CREATE TABLE IF NOT EXISTS replica_messages (
  room TEXT NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  user TEXT NOT NULL,
  text TEXT NOT NULL,
  ts INTEGER NOT NULL,
  PRIMARY KEY (room, seq)
) WITHOUT ROWID;
`;

const UPSERT_RECORD =
  "INSERT INTO replica_rooms (room, owner, epoch, head, checkpointed) VALUES (?, ?, ?, ?, ?) ON CONFLICT(room) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch, head = excluded.head, checkpointed = excluded.checkpointed";
const INSERT_MESSAGE = "INSERT OR REPLACE INTO replica_messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)";
const DROP_ROWS_UPTO = "DELETE FROM replica_messages WHERE room = ? AND seq <= ?";
const DROP_ROWS = "DELETE FROM replica_messages WHERE room = ?";
const DROP_RECORD = "DELETE FROM replica_rooms WHERE room = ?";

interface RecordRow {
  room: string;
  owner: string;
  epoch: number;
  head: number;
  checkpointed: number;
  headId: string | null;
  headTs: number | null;
}

export class SqliteReplicaStore implements ReplicaStore {
  private readonly companion: SqliteCompanion;
  private readonly records = new Map<string, ReplicaRecord>();
  private readonly stmt;
  /** Statements waiting for the write in flight to finish, with the calls that wait for them. */
  private queued: { statements: SqlStatement[]; touched: Set<string>; done: { resolve: () => void; reject: (err: unknown) => void }[] } | undefined;
  private writing = false;
  /** Resolves once everything posted so far is written (`settled`). */
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => {};

  constructor(store: SqliteRoomStore) {
    this.companion = store.companion(SCHEMA);
    const db: Database.Database = this.companion.db;
    this.stmt = {
      records: db.prepare<[], RecordRow>(
        "SELECT r.room, r.owner, r.epoch, r.head, r.checkpointed, m.id AS headId, m.ts AS headTs FROM replica_rooms r LEFT JOIN replica_messages m ON m.room = r.room AND m.seq = r.head",
      ),
      record: db.prepare<[string], RecordRow>(
        "SELECT r.room, r.owner, r.epoch, r.head, r.checkpointed, m.id AS headId, m.ts AS headTs FROM replica_rooms r LEFT JOIN replica_messages m ON m.room = r.room AND m.seq = r.head WHERE r.room = ?",
      ),
      messages: db.prepare<[string, number, number], StoredMessage>(
        "SELECT room, seq, id, user, text, ts FROM replica_messages WHERE room = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
      ),
    };
    for (const row of this.stmt.records.all()) this.records.set(row.room, toRecord(row));
  }

  apply(owner: string, epoch: number, items: readonly ReplicaItem[]): Promise<ReplicaOutcome[]> {
    const statements: SqlStatement[] = [];
    const touched = new Set<string>();
    // Checked before anything changes: a malformed call must change nothing, not half of it.
    try {
      items.forEach(checkItem);
    } catch (err) {
      return Promise.reject(err);
    }
    const outcomes = items.map((item) => {
      const d = decide(this.records.get(item.room), owner, epoch, item);
      if (d.next === undefined) return d.outcome;
      touched.add(item.room);
      if (d.dropAll) statements.push([DROP_ROWS, [item.room]]);
      for (const m of item.messages) statements.push([INSERT_MESSAGE, [item.room, m.seq, m.id, m.user, m.text, m.ts]]);
      statements.push([DROP_ROWS_UPTO, [item.room, item.checkpointed]]);
      statements.push([UPSERT_RECORD, [item.room, owner, epoch, d.next.head, d.next.checkpointed]]);
      this.records.set(item.room, d.next);
      return d.outcome;
    });
    if (statements.length === 0) return Promise.resolve(outcomes);
    return this.write(statements, touched).then(() => outcomes);
  }

  /** Joins the next transaction; resolves once it is durable. */
  private write(statements: readonly SqlStatement[], touched: Iterable<string>): Promise<void> {
    if (this.queued === undefined) {
      this.queued = { statements: [], touched: new Set(), done: [] };
      if (!this.writing) this.idle = new Promise((resolve) => (this.markIdle = resolve));
    }
    const q = this.queued;
    q.statements.push(...statements);
    for (const room of touched) q.touched.add(room);
    const done = new Promise<void>((resolve, reject) => q.done.push({ resolve, reject }));
    if (!this.writing) this.flush();
    return done;
  }

  private flush(): void {
    const q = this.queued;
    this.queued = undefined;
    if (q === undefined) {
      this.writing = false;
      this.markIdle();
      return;
    }
    this.writing = true;
    this.companion.write(q.statements).then(
      () => {
        for (const d of q.done) d.resolve();
        this.flush();
      },
      (err: unknown) => {
        // Rolled back: what the file says is the truth again for these rooms.
        for (const room of q.touched) this.reload(room);
        for (const d of q.done) d.reject(err);
        this.flush();
      },
    );
  }

  record(room: string): ReplicaRecord | undefined {
    return this.records.get(room);
  }

  messages(room: string, after: number, limit: number): StoredMessage[] {
    return this.stmt.messages.all(room, after, limit);
  }

  settled(): Promise<void> {
    return this.idle;
  }

  drop(room: string): Promise<void> {
    this.records.delete(room);
    return this.write(
      [
        [DROP_ROWS, [room]],
        [DROP_RECORD, [room]],
      ],
      [],
    );
  }

  rooms(): string[] {
    return [...this.records.keys()].sort();
  }

  private reload(room: string): void {
    const row = this.stmt.record.get(room);
    if (row === undefined) this.records.delete(room);
    else this.records.set(room, toRecord(row));
  }
}

function toRecord(row: RecordRow): ReplicaRecord {
  const held = row.headId !== null && row.head > row.checkpointed;
  return {
    room: row.room,
    owner: row.owner,
    epoch: row.epoch,
    head: row.head,
    checkpointed: row.checkpointed,
    headId: held ? row.headId! : "",
    headTs: held ? row.headTs! : 0,
  };
}
