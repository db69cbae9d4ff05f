// Run inside a worker thread: writes the OS thread id it runs on into the slot its starter passed in
// workerData (see thread-id.ts). Plain JavaScript: worker threads start without the TypeScript loader.
import { readlinkSync } from "node:fs";

export function publishThreadId(slot) {
  if (!(slot instanceof Int32Array)) return;
  try {
    // "/proc/thread-self" links to "<pid>/task/<tid>" (Linux).
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isInteger(tid) && tid > 0) Atomics.store(slot, 0, tid);
  } catch {
    // no /proc: per-thread CPU is not reported
  }
}
