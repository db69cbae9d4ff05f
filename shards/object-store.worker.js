// The thread behind ThreadedObjectStore (object-store-threaded.ts). Plain JavaScript because a worker thread
// does not inherit the TypeScript loader of the node; it registers it and then runs the TypeScript host.
import { register } from "tsx/esm/api";
import { workerData } from "node:worker_threads";
import { publishThreadId } from "./publish-thread-id.js";

publishThreadId(workerData?.threadId);

register();
await import("./object-store-host.ts");
