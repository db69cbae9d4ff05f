/** Runs on the object store thread: opens the real store and answers ThreadedObjectStore's calls in order of arrival. */
import { parentPort, workerData } from "node:worker_threads";
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
      return store.put(req.key, Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength), req.condition);
    case "list":
      return store.list(req.prefix);
    case "delete":
      return store.delete(req.key);
  }
}

parentPort!.on("message", (msg: ObjectRequest & { id: number }) => {
  answer(msg).then(
    (value) => parentPort!.postMessage({ id: msg.id, ok: true, value } satisfies ObjectReply),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      const { code, key } = e as { code?: unknown; key?: unknown };
      parentPort!.postMessage({
        id: msg.id,
        ok: false,
        error: { name: e.name, message: e.message, code: typeof code === "string" || typeof code === "number" ? code : undefined, key: typeof key === "string" ? key : undefined },
      } satisfies ObjectReply);
    },
  );
});
