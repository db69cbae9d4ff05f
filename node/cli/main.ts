/**
 * The `fractal` command line: only wiring. Each command lives in its own module; failures print one line
 * and exit non-zero.
 */
import { Command, Option } from "commander";
import { adminCommand } from "./admin-command.js";
import { clusterCommand } from "./cluster-command.js";
import { nodeCommand } from "./node-command.js";
import { NODE_FLAGS, envName } from "../config.js";

// `fractal admin status | head` closes our stdout early: that is not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

const program = new Command();
program
  .name("fractal")
  .description("Fractal Chat: a distributed real-time chat service of identical nodes")
  .showHelpAfterError()
  .exitOverride();

const node = program.command("node").description("run one node in the foreground (SIGTERM/SIGINT: graceful stop)");
for (const [flag, spec] of Object.entries(NODE_FLAGS)) {
  const defaultNote = "default" in spec ? ` (default: ${spec.default})` : "";
  node.addOption(new Option(`--${flag} <value>`, `${spec.help}${defaultNote} [env ${envName(flag)}]`));
}
// commander names options in camelCase; the config speaks in flag names.
node.action((opts: Record<string, string>) =>
  nodeCommand(Object.fromEntries(Object.entries(opts).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v]))),
);

program
  .command("cluster")
  .description("run a local cluster of N nodes (ports 8080.. and 9080.., data under ./data)")
  .option("--nodes <n>", "number of nodes", "3")
  .option("--base-http-port <port>", "HTTP port of the first node", "8080")
  .option("--base-grpc-port <port>", "gRPC port of the first node", "9080")
  .option("--data-dir <dir>", "data root: one folder per node plus objects/", "./data")
  .option("--host <host>", "address to bind and advertise", "127.0.0.1")
  .option("--log-level <level>", "log level of the nodes", "info")
  .option("--lb-port <port>", "also run HAProxy (Debian package) on this port in front of the nodes")
  .action(clusterCommand);

adminCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") process.exit(0);
  if (typeof e.code === "string" && e.code.startsWith("commander.")) process.exit(e.exitCode ?? 2);
  console.error(`fractal: ${e.message ?? String(err)}`);
  process.exit(1);
}
