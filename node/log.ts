/** Structured logs: JSON lines, every line names the node. */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(node: string, level: string): Logger {
  return pino({ level, base: { node } });
}
