// The SQLite checkpointer thread of SqliteRoomStore: folds the write-ahead log into the database file (and
// fsyncs both) off the node's event loop. The event loop is the file's only writer and never checkpoints itself
// (`wal_autocheckpoint = 0`): a checkpoint copies every page written since the last one, which under load is
// milliseconds of blocking I/O. PASSIVE never takes the writer's lock, so commits go on while it runs. Plain
// JavaScript on purpose: a worker thread does not inherit the TypeScript loader that runs the rest of the node.
import Database from "better-sqlite3";
import { parentPort, workerData } from "node:worker_threads";
import { publishThreadId } from "./publish-thread-id.js";

publishThreadId(workerData.threadId);

const db = new Database(workerData.file);
// A checkpoint syncs the log before it copies it and the file after (with NORMAL and FULL alike).
db.pragma("synchronous = FULL");

parentPort.on("message", (msg) => {
  try {
    if (msg.op === "checkpoint") {
      // [{ busy, log, checkpointed }]: frames in the log as the checkpoint began, how many of them it copied (all:
      // the event loop is the only writer, and PASSIVE copies what no reader still needs).
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
