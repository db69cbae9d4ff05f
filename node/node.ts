/**
 * The composition root: builds one node from its config and runs it. Nothing else constructs long-lived
 * parts; every dependency is passed down from here.
 */
import * as grpc from "@grpc/grpc-js";
import { createServer, type Server as HttpServer } from "node:http";
import { join } from "node:path";
import { Server as SocketServer } from "socket.io";
import { DirectoryObjectStore, findNode, OwnedRooms, SqliteRoomStore, withNode, type ObjectStore } from "../shards/index.js";
import { loadAuthSecret, Tokens } from "./auth.js";
import type { NodeConfig } from "./config.js";
import { Gateway } from "./gateway.js";
import { createHttpApi } from "./http-api.js";
import { createLogger, type Logger } from "./log.js";
import { Membership } from "./membership.js";
import { NodeMetrics } from "./metrics.js";
import { LocalOwner } from "./owner.js";
import { PeerPool } from "./peer-pool.js";
import { createPeerServer } from "./rpc/server.js";
import { Router } from "./router.js";

/** socket.io packets larger than this close the connection: a maximal message is ~16 KB of UTF-8. */
const MAX_SOCKET_PACKET_BYTES = 256 * 1024;
const STOP_GRACE_MS = 5000;

export interface RunningNode {
  readonly id: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly log: Logger;
  /** Graceful stop: refuse new work, finish in-flight sends, close sockets, peers and SQLite. */
  stop(): Promise<void>;
}

export function openObjectStore(location: string): ObjectStore {
  if (location.startsWith("s3://")) {
    throw new Error("the S3 object store is not available in this version; use a directory path");
  }
  return new DirectoryObjectStore(location);
}

export async function startNode(config: NodeConfig): Promise<RunningNode> {
  const log = createLogger(config.id, config.logLevel);
  const objects = openObjectStore(config.objectStore);
  const tokens = new Tokens(await loadAuthSecret(config.authSecret, objects));

  const store = new SqliteRoomStore(join(config.dataDir, "rooms.db"));
  let ready = false;
  let stopping: Promise<void> | undefined;

  // The ring depends only on node ids; this node also knows its own HTTP address, shown by /api/cluster.
  const me = findNode(config.map, config.id);
  const map = me === undefined ? config.map : withNode(config.map, { ...me, http: `http://${config.advertiseHost}:${config.httpPort}` });
  const membership = new Membership(config.id, map);

  let gateway: Gateway | undefined;
  let router: Router | undefined;
  const rooms = new OwnedRooms(store, (messages) => {
    metrics.messagesCommitted.inc(messages.length);
    metrics.commitBatchSize.observe(messages.length);
  });
  const metrics = new NodeMetrics(config.id, {
    roomsOwned: () => store.rooms().length,
    roomsFollowed: () => gateway?.followedRooms ?? 0,
  });
  const owner = new LocalOwner(config.id, membership, rooms);
  const peers = new PeerPool(membership, config.forwardTimeoutMs, log);
  router = new Router(config.id, membership, owner, peers, log, (op, seconds, outcome) =>
    metrics.forwardSeconds.observe({ op, outcome }, seconds),
  );

  // gRPC first: peers may forward to us as soon as they see us in the map.
  const grpcServer = createPeerServer({
    owner,
    membership,
    log,
    maxTextLength: config.maxTextLength,
    observe: (method, seconds, outcome) => metrics.peerCallSeconds.observe({ method, outcome }, seconds),
  });
  const grpcPort = await new Promise<number>((resolve, reject) => {
    grpcServer.bindAsync(`${config.host}:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });

  const app = createHttpApi({
    self: config.id,
    router,
    membership,
    tokens,
    metrics,
    log,
    maxTextLength: config.maxTextLength,
    ready: () => ready && stopping === undefined,
  });
  const http: HttpServer = createServer(app);
  const io = new SocketServer(http, {
    maxHttpBufferSize: MAX_SOCKET_PACKET_BYTES,
    perMessageDeflate: false,
    pingInterval: 10_000,
    pingTimeout: 10_000,
    cors: { origin: true, credentials: true },
  });
  // Memory: engine.io keeps each connection's HTTP upgrade request (headers, socket refs) for its lifetime.
  // Nothing reads it after the handshake, so drop it: several KiB per idle connection (socket.io's advice).
  io.engine.on("connection", (raw: { request: unknown }) => {
    raw.request = null;
  });
  gateway = new Gateway(io, router, tokens, metrics, log, {
    maxTextLength: config.maxTextLength,
    rateLimit: config.rateLimit,
    forwardTimeoutMs: config.forwardTimeoutMs,
  });
  const httpPort = await new Promise<number>((resolve, reject) => {
    http.once("error", reject);
    http.listen(config.httpPort, config.host, () => {
      http.off("error", reject);
      const addr = http.address();
      resolve(typeof addr === "object" && addr !== null ? addr.port : config.httpPort);
    });
  });
  ready = true;
  log.info({ httpPort, grpcPort, dataDir: config.dataDir, objectStore: objects.location, peers: config.map.nodes.length }, "node ready");

  const stop = async (): Promise<void> => {
    log.info("stopping");
    // 1. Readiness goes 503 and new sends are refused, so load balancers and peers move on.
    owner.accepting = false;
    // 2. Sends already accepted get committed and acknowledged.
    await rooms.commits.drained();
    // 3. Clients are told to go (they reconnect elsewhere and resume with since); peers are released.
    io.disconnectSockets(true);
    await new Promise<void>((resolve) => io.close(() => resolve()));
    peers.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        grpcServer.forceShutdown();
        resolve();
      }, STOP_GRACE_MS);
      grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    // 4. SQLite last: nothing can write any more.
    store.close();
    log.info("stopped");
  };

  return {
    id: config.id,
    httpPort,
    grpcPort,
    log,
    stop: () => (stopping ??= stop()),
  };
}
