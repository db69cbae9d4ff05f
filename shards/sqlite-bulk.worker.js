// The SQLite bulk thread of SqliteRoomStore: the node's big writes, off its event loop. It folds the write-ahead
// log into the database file (and fsyncs both), and it commits restores' bulk appends (a rebuild inserts a
// million rows: on the event loop that doubled its time, since decoding the segments is the loop's own work).
// The event loop does every other write and never checkpoints itself in a commit (`wal_autocheckpoint = 0`); it
// writes nothing while a bulk append is here (one writer at a time: waiting for the lock would block its loop).
// PASSIVE checkpoints take no writer's lock, so commits go on while one runs. Plain JavaScript on purpose: a
// worker thread does not inherit the TypeScript loader that runs the rest of the node.
import Database from "better-sqlite3";
import { parentPort, workerData } from "node:worker_threads";
import { publishThreadId } from "./publish-thread-id.js";

publishThreadId(workerData.threadId);

const db = new Database(workerData.file);
// NORMAL: bulk commits do not sync (the event loop syncs the log after them); checkpoints sync the log before
// copying it and the file after.
db.pragma("synchronous = NORMAL");
db.pragma("wal_autocheckpoint = 0");
db.pragma("busy_timeout = 5000");

const head = db.prepare("SELECT head FROM rooms WHERE room = ?").pluck();
const setHead = db.prepare("INSERT INTO rooms (room, head) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET head = excluded.head");
// Positional parameters: binding by name costs a property lookup per column per row (15 % of a bulk restore).
const insert = db.prepare("INSERT INTO messages (room, seq, id, user, text, ts) VALUES (?, ?, ?, ?, ?, ?)");

// Same contract as the event loop's append: consecutive seqs per room, all or nothing.
const append = db.transaction((messages) => {
  const next = new Map();
  for (const m of messages) {
    const expected = (next.get(m.room) ?? head.get(m.room) ?? 0) + 1;
    if (m.seq !== expected) throw new Error(`room ${m.room}: append seq ${m.seq} but expected ${expected} (gap or second writer)`);
    next.set(m.room, m.seq);
    insert.run(m.room, m.seq, m.id, m.user, m.text, m.ts);
  }
  for (const [room, seq] of next) setHead.run(room, seq);
});

parentPort.on("message", (msg) => {
  try {
    if (msg.op === "append") {
      append(msg.messages);
      parentPort.postMessage({ id: msg.id, ok: true, log: 0 });
    } else if (msg.op === "checkpoint") {
      // [{ busy, log, checkpointed }]: frames in the log as the checkpoint began, how many of them it copied (all:
      // PASSIVE copies what no reader still needs, and this node's readers are short).
      const [result] = db.pragma("wal_checkpoint(PASSIVE)");
      parentPort.postMessage({ id: msg.id, ok: true, log: result.log });
    } else if (msg.op === "close") {
      db.close();
      parentPort.postMessage({ id: msg.id, ok: true, log: 0 });
      parentPort.close();
    }
  } catch (err) {
    parentPort.postMessage({ id: msg.id, ok: false, message: err.message, code: err.code });
  }
});
