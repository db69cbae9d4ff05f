/** Runs on the object store thread: opens the real store and answers ThreadedObjectStore's calls as they arrive. */
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { DirectoryObjectStore } from "./object-store-dir.js";
import { S3ObjectStore } from "./object-store-s3.js";
import type { ObjectStore } from "./object-store.js";
import type { ObjectReply, ObjectRequest, ObjectStoreSpec } from "./object-store-threaded.js";

const spec = workerData as ObjectStoreSpec;
const store: ObjectStore = spec.location.startsWith("s3://")
  ? new S3ObjectStore({ url: spec.location, endpoint: spec.s3Endpoint })
  : new DirectoryObjectStore(spec.location, { blocking: true });

async function answer(req: ObjectRequest): Promise<unknown> {
  switch (req.op) {
    case "get":
      return store.get(req.key);
    case "put":
      return store.put(req.key, bodyOf(req), req.condition);
    case "list":
      return store.list(req.prefix);
    case "delete":
      return store.delete(req.key);
  }
}

function reply(id: number, outcome: PromiseSettledResult<unknown>): void {
  if (outcome.status === "fulfilled") {
    parentPort!.postMessage({ id, ok: true, value: outcome.value } satisfies ObjectReply);
    return;
  }
  const err: unknown = outcome.reason;
  const e = err instanceof Error ? err : new Error(String(err));
  const { code, key } = e as { code?: unknown; key?: unknown };
  parentPort!.postMessage({
    id,
    ok: false,
    error: { name: e.name, message: e.message, code: typeof code === "string" || typeof code === "number" ? code : undefined, key: typeof key === "string" ? key : undefined },
  } satisfies ObjectReply);
}

type Call = ObjectRequest & { id: number };
type PutCall = Extract<ObjectRequest, { op: "put" }> & { id: number };

/** Puts per durability barrier: bounds the work (and a failure's reach) of one group. */
const MAX_GROUP = 64;

function bodyOf(put: Extract<ObjectRequest, { op: "put" }>): Buffer {
  return Buffer.from(put.body.buffer, put.body.byteOffset, put.body.byteLength);
}

/** Runs one group of puts of distinct keys through the directory store's shared fsync barrier. */
function putGroup(group: PutCall[]): void {
  if (group.length === 1 || !(store instanceof DirectoryObjectStore)) {
    for (const put of group) void settled(answer(put)).then((outcome) => reply(put.id, outcome));
    return;
  }
  let outcomes: Promise<unknown>[];
  try {
    outcomes = store.putMany(group.map((put) => ({ key: put.key, body: bodyOf(put), condition: put.condition })));
  } catch (err) {
    // A call must never take the thread down (the node would lose its object store): answer it with the error.
    outcomes = group.map(() => Promise.reject(err));
  }
  outcomes.forEach((outcome, i) => void settled(outcome).then((o) => reply(group[i]!.id, o)));
}

function settled<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return p.then(
    (value) => ({ status: "fulfilled", value }),
    (reason: unknown) => ({ status: "rejected", reason }),
  );
}

// Calls that queued while the thread was busy (an fsync under load takes milliseconds) are taken together:
// consecutive puts of distinct keys share one durability barrier; everything else runs as it arrives.
parentPort!.on("message", (first: Call) => {
  const calls = [first];
  for (let m = receiveMessageOnPort(parentPort!); m !== undefined; m = receiveMessageOnPort(parentPort!)) calls.push(m.message as Call);
  let group: PutCall[] = [];
  const keys = new Set<string>();
  const flush = () => {
    if (group.length > 0) putGroup(group);
    group = [];
    keys.clear();
  };
  for (const call of calls) {
    if (call.op !== "put") {
      flush();
      void settled(answer(call)).then((outcome) => reply(call.id, outcome));
      continue;
    }
    if (keys.has(call.key) || group.length >= MAX_GROUP) flush();
    group.push(call);
    keys.add(call.key);
  }
  flush();
});
