/**
 * The OS thread id of a worker thread, told to the thread that started it through a shared slot: per-thread CPU
 * time (node/thread-cpu.ts) needs it, and Node names every thread "node". Linux only; elsewhere the slot stays 0.
 */

/** A slot for workerData: the worker writes its thread id into it (see sqlite-bulk.worker.js). */
export function threadIdSlot(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4));
}

/** The thread id a worker wrote into its slot; undefined until it has (or where /proc is not there). */
export function threadIdIn(slot: Int32Array): number | undefined {
  const tid = Atomics.load(slot, 0);
  return tid > 0 ? tid : undefined;
}
