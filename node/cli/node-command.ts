/** `fractal node`: runs one node in the foreground until SIGTERM/SIGINT, then stops gracefully. */
import { parseNodeConfig, type RawFlags } from "../config.js";
import { startNode } from "../node.js";

export async function nodeCommand(flags: RawFlags): Promise<void> {
  const config = parseNodeConfig(flags);
  const node = await startNode(config);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals | "stdin closed") => {
    if (++signals > 1) {
      node.log.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    node.log.info({ signal }, "signal received, stopping gracefully");
    node.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        node.log.error({ err }, "graceful stop failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // After a failed fsync nothing more can be acknowledged (PostgreSQL stops too): stop, saving to the object store
  // what was acknowledged, and exit non-zero so that the supervisor restarts the node, which recovers its file.
  void node.broken.then((err) => {
    node.log.fatal({ err }, "the disk failed a sync of the SQLite log: stopping");
    node.stop().finally(() => process.exit(74));
  });
  if (config.stopWithStdin) {
    // The parent holds the other end: when it is gone (even killed with SIGKILL), so is this node.
    process.stdin.on("end", () => onSignal("stdin closed"));
    process.stdin.on("error", () => onSignal("stdin closed"));
    process.stdin.resume();
  }
  // A bug must not take the node down silently, nor keep a half-dead node running: log and exit non-zero.
  process.on("uncaughtException", (err) => {
    node.log.fatal({ err }, "uncaught exception");
    process.exit(70);
  });
  process.on("unhandledRejection", (err) => {
    node.log.error({ err }, "unhandled rejection");
  });
}
