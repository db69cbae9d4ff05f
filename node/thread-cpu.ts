/**
 * CPU seconds per thread of this node process, from /proc (Linux): the event loop ("main"), the named worker
 * threads (the SQLite bulk thread: log checkpoints and restores; the object store's thread: checkpoints), and "other"
 * (V8's compiler and GC helpers, libuv's pool with the SQLite log's fsync, short-lived workers). When the cores are busy, this says which
 * part of the node they go to; Node names every thread "node", so workers tell their ids (shards/thread-id.ts).
 */
import { readFileSync } from "node:fs";

/** USER_HZ: /proc reports CPU time in these ticks, 100 per second on Linux. */
const TICKS_PER_SECOND = 100;

/** Worker threads by name, each with its OS thread id once known. */
export type NamedThreads = Readonly<Record<string, () => number | undefined>>;

/** Cumulative CPU seconds per thread name ("main", the named ones, "other"); undefined without /proc. */
export function threadCpuSeconds(named: NamedThreads): Map<string, number> | undefined {
  const main = taskSeconds(process.pid);
  if (main === undefined) return undefined;
  const out = new Map<string, number>([["main", main]]);
  let namedSum = main;
  for (const [name, tid] of Object.entries(named)) {
    const id = tid();
    const seconds = id === undefined ? 0 : (taskSeconds(id) ?? 0);
    out.set(name, seconds);
    namedSum += seconds;
  }
  // The process's total includes threads that have ended, so "other" never goes backwards.
  const usage = process.cpuUsage();
  out.set("other", Math.max(0, (usage.user + usage.system) / 1e6 - namedSum));
  return out;
}

function taskSeconds(tid: number): number | undefined {
  return statCpuSeconds(`/proc/self/task/${tid}/stat`);
}

/** User + system CPU seconds in a /proc `stat` file (of a process or a thread); undefined if it cannot be read. */
export function statCpuSeconds(file: string, ticksPerSecond = TICKS_PER_SECOND): number | undefined {
  try {
    const stat = readFileSync(file, "utf8");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return undefined;
  }
}
