// The SQLite writer thread of SqliteRoomStore. Commits (and their fsync) run here, off the node's event loop,
// so a slow disk delays acknowledgements but never stalls deliveries. Plain JavaScript on purpose: a worker
// thread does not inherit the TypeScript loader that runs the rest of the node.
import Database from "better-sqlite3";
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { publishThreadId } from "./publish-thread-id.js";

publishThreadId(workerData.threadId);

const db = new Database(workerData.file);
db.pragma("journal_mode = WAL");
db.pragma("synchronous = FULL");
db.pragma("busy_timeout = 5000");

const head = db.prepare("SELECT head FROM rooms WHERE room = ?");
const setHead = db.prepare("INSERT INTO rooms (room, head) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET head = excluded.head");
// Positional parameters: binding by name costs a property lookup per column per row (15 % of a bulk restore).
const insert = db.prepare("INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)");
const setCheckpoint = db.prepare(
  "INSERT INTO checkpoints (room, seq, version, at) VALUES (@room, @seq, @version, @at) ON CONFLICT(room) DO UPDATE SET seq = excluded.seq, version = excluded.version, at = excluded.at",
);

// Same contract as the main-thread append: consecutive seqs per room, all or nothing.
const append = db.transaction((messages) => {
  const next = new Map();
  for (const m of messages) {
    const expected = (next.get(m.room) ?? head.get(m.room)?.head ?? 0) + 1;
    if (m.seq !== expected) throw new Error(`room ${m.room}: append seq ${m.seq} but expected ${expected} (gap or second writer)`);
    next.set(m.room, m.seq);
    insert.run(m.room, m.seq, m.id, m.user, m.text, m.ts);
  }
  for (const [room, seq] of next) setHead.run(room, seq);
});
const deleteRoom = db.transaction((room) => {
  db.prepare("DELETE FROM messages WHERE room = ?").run(room);
  db.prepare("DELETE FROM rooms WHERE room = ?").run(room);
  db.prepare("DELETE FROM checkpoints WHERE room = ?").run(room);
});
const checkpoints = db.transaction((records) => {
  for (const [room, r] of records) setCheckpoint.run({ room, ...r });
});
// Companion tables (the replica copy) send their own statements: one transaction per request.
const prepared = new Map();
const statement = (sql) => {
  let s = prepared.get(sql);
  if (s === undefined) prepared.set(sql, (s = db.prepare(sql)));
  return s;
};
const statements = db.transaction((list) => {
  for (const [sql, params] of list) statement(sql).run(...params);
});

/** Runs a transaction whose commit need not be durable on its own (the next FULL commit's fsync covers it). */
function withoutFsync(transaction) {
  db.pragma("synchronous = OFF");
  try {
    transaction();
  } finally {
    db.pragma("synchronous = FULL");
  }
}

// Group commit across the main thread's batches: the plain appends (and advisory checkpoint records) that queued
// during the last commit run as one transaction, one fsync. If it fails, each request runs again on its own, so a
// batch fails only for its own reasons (or by continuing a room whose earlier batch failed: the seq check refuses
// the gap).
const runGroup = db.transaction((group) => {
  for (const msg of group) {
    if (msg.op === "append") append(msg.messages);
    else checkpoints(msg.records);
  }
});

const groupable = (msg) => (msg.op === "append" && !msg.bulk) || msg.op === "checkpoints";

parentPort.on("message", (first) => {
  const queued = [first];
  for (let m = receiveMessageOnPort(parentPort); m !== undefined; m = receiveMessageOnPort(parentPort)) queued.push(m.message);
  for (let i = 0; i < queued.length; ) {
    let j = i;
    while (j < queued.length && groupable(queued[j])) j++;
    const group = queued.slice(i, Math.max(j, i + 1));
    i += group.length;
    if (group.length < 2 || !group.some((m) => m.op === "append")) {
      for (const m of group) handle(m);
      continue;
    }
    let ok = false;
    try {
      runGroup(group);
      ok = true;
    } catch {
      for (const m of group) handle(m);
    }
    // One answer for the whole group: each message to the main thread wakes its event loop.
    if (ok) parentPort.postMessage({ ids: group.map((m) => m.id), ok: true });
  }
});

function handle(msg) {
  try {
    // Restores copy what the checkpoint chain already holds durably: no fsync per batch (the next normal
    // commit's fsync covers these WAL frames too, since the WAL is append-only).
    if (msg.op === "append" && msg.bulk) withoutFsync(() => append(msg.messages));
    else if (msg.op === "append") append(msg.messages);
    // Checkpoint records are advisory (a lost one makes a restart re-read the manifest): no fsync of their own,
    // which would delay the appends queued behind them; the next append's fsync makes them durable.
    else if (msg.op === "checkpoints") withoutFsync(() => checkpoints(msg.records));
    else if (msg.op === "tx") statements(msg.statements);
    else if (msg.op === "delete") deleteRoom(msg.room);
    // The checkpoint fsyncs the WAL (frames of bulk appends included) before copying it into the file.
    else if (msg.op === "compact") db.pragma("wal_checkpoint(TRUNCATE)");
    else if (msg.op === "skip") {
      if ((head.get(msg.room)?.head ?? 0) < msg.seq) setHead.run(msg.room, msg.seq);
    }
    else if (msg.op === "close") {
      db.close();
      parentPort.postMessage({ id: msg.id, ok: true });
      parentPort.close();
      return;
    }
    parentPort.postMessage({ id: msg.id, ok: true });
  } catch (err) {
    parentPort.postMessage({ id: msg.id, ok: false, message: err.message, code: err.code });
  }
}
