/**
 * Slow consumers. A client that reads slower than its rooms produce (a stalled TCP connection, a phone on a bad
 * link, or a client that stops reading on purpose) makes the node queue every message for it: engine.io keeps
 * them in the connection's write buffer and Node in the socket's, without a bound. One stalled client in a busy
 * room grew a node by ~650 MB in 20 s before the heartbeat gave up on it; enough of them take a node down.
 *
 * So each connection may have at most `maxBacklogBytes` waiting; beyond that it is cut (the TCP connection
 * destroyed, which frees what it held at once: a close handshake with a peer that does not read would keep it
 * for another 30 s). The client sees "transport close", reconnects and resumes with `since`, reading history
 * at its own pace (invariant 5 makes that gap-free), which is what a slow reader should do anyway.
 */
import type { Server, Socket } from "socket.io";

/** What a connection holds of engine.io and ws (not in their public types). */
interface EngineConnection {
  readonly writeBuffer?: readonly { data?: unknown }[];
  readonly transport?: { readonly name?: string; readonly socket?: { readonly bufferedAmount?: number; terminate?: () => void } };
  close(): void;
}

/** The ws WebSocket under a connection on the websocket transport; undefined on long-polling. */
function websocketOf(conn: EngineConnection) {
  return conn.transport?.name === "websocket" ? conn.transport.socket : undefined;
}

/**
 * Bytes waiting to be sent to a socket's client: the websocket's own buffer plus engine.io's write buffer. Stops
 * counting once past `enough` (a stalled client's buffer can hold many thousands of packets).
 */
export function backlogBytes(socket: Socket, enough = Number.MAX_SAFE_INTEGER): number {
  const conn = socket.conn as unknown as EngineConnection;
  let bytes = websocketOf(conn)?.bufferedAmount ?? 0;
  for (const packet of conn.writeBuffer ?? []) {
    if (bytes > enough) break;
    const data = packet.data;
    // Strings are counted by length (one byte per character of the JSON the packet carries, near enough).
    bytes += typeof data === "string" ? data.length : data instanceof Uint8Array ? data.byteLength : 16;
  }
  return bytes;
}

/** Cuts a socket's connection at once (no close handshake), freeing what was queued for it. */
function cutConnection(socket: Socket): void {
  const conn = socket.conn as unknown as EngineConnection;
  const ws = websocketOf(conn);
  if (typeof ws?.terminate === "function") ws.terminate();
  else conn.close(); // long-polling: engine.io drops its buffer on close
}

export class SlowClientGuard {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly io: Server,
    private readonly maxBacklogBytes: number,
    /** Told about each client cut, with what was waiting for it. */
    private readonly onCut: (socket: Socket, backlog: number) => void,
    private readonly intervalMs = 500,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.sweep(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Cuts every connection whose backlog is over the limit. Cheap: most buffers are empty. */
  private sweep(): void {
    for (const socket of this.io.of("/").sockets.values()) {
      const backlog = backlogBytes(socket, this.maxBacklogBytes);
      if (backlog <= this.maxBacklogBytes) continue;
      cutConnection(socket);
      this.onCut(socket, backlog);
    }
  }
}
