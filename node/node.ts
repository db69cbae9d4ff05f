/**
 * The composition root: builds one node from its config and runs it. Nothing else constructs long-lived
 * parts; every dependency is passed down from here.
 */
import * as grpc from "@grpc/grpc-js";
import { createServer, ServerResponse, type IncomingMessage, type Server as HttpServer } from "node:http";
import type { Socket } from "node:net";
import { join } from "node:path";
import { Server as SocketServer } from "socket.io";
import {
  CheckpointChain,
  Checkpointer,
  ClusterMapStore,
  DirectoryObjectStore,
  LeaseKeeper,
  LeaseWatcher,
  OwnedRooms,
  readLease,
  RoomRebuilder,
  S3ObjectStore,
  ThreadedObjectStore,
  SqliteReplicaStore,
  SqliteRoomStore,
  type ClusterMap,
  type ObjectStore,
  type RoomStore,
} from "../shards/index.js";
import { loadAuthSecret, Tokens } from "./auth.js";
import type { NodeConfig } from "./config.js";
import { Gateway } from "./gateway.js";
import { answerUnparsableRequests, createHttpApi } from "./http-api.js";
import { createLogger, type Logger } from "./log.js";
import { Membership } from "./membership.js";
import { NodeMetrics } from "./metrics.js";
import { LocalOwner } from "./owner.js";
import { PeerPool } from "./peer-pool.js";
import { createPeerServer } from "./rpc/server.js";
import { Router } from "./router.js";
import { establishMapPatiently } from "./cluster-map-setup.js";
import { Liveness, leaseOptions } from "./liveness.js";
import { DrainWatch } from "./draining.js";
import { OwnershipTransfer } from "./transfer.js";
import { markCleanStop, stoppedCleanly, takeCleanStop } from "./clean-stop.js";
import { ClusterAdmin, LocalAdmin } from "./admin.js";
import { createAdminApi } from "./admin-api.js";
import { Rebalancer } from "./rebalance.js";
import { Replicator } from "./replicator.js";
import { ReplicaRecovery } from "./replica-recovery.js";
import { dropUnneededCopies, ReplicaService } from "./replica-service.js";
import { ReplicaFailover } from "./replica-failover.js";
import { SlowClientGuard } from "./slow-clients.js";

/** socket.io packets larger than this close the connection: a maximal message is ~16 KB of UTF-8. */
const MAX_SOCKET_PACKET_BYTES = 256 * 1024;
const STOP_GRACE_MS = 5000;
/** How long a stop waits for clients to answer the close of their connection before cutting it. */
const CLIENT_CLOSE_GRACE_MS = 1000;

export interface RunningNode {
  readonly id: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly log: Logger;
  /** Graceful stop: refuse new work, finish in-flight sends, close sockets, peers and SQLite. */
  stop(): Promise<void>;
  /**
   * Resolves if the node can no longer work (its disk failed a sync of the SQLite log: nothing more can be
   * acknowledged). The process should stop and exit non-zero; its lease then lapses and its rooms fail over.
   */
  readonly broken: Promise<Error>;
}

/**
 * A directory path or `s3://bucket/prefix` (credentials from the standard AWS chain). `threaded`: the calls
 * run on a worker thread (the node's choice: checkpoint I/O must not hold its event loop); one-shot tools
 * use the store directly.
 */
export function openObjectStore(location: string, s3Endpoint?: string, options: { threaded?: boolean } = {}): ObjectStore {
  if (options.threaded === true) return new ThreadedObjectStore({ location, s3Endpoint });
  if (location.startsWith("s3://")) return new S3ObjectStore({ url: location, endpoint: s3Endpoint });
  return new DirectoryObjectStore(location);
}

export async function startNode(config: NodeConfig): Promise<RunningNode> {
  const log = createLogger(config.id, config.logLevel);
  // Two handles on the one store. Checkpoints and rebuilds (bulk, on a worker thread) must never queue in front
  // of the small control calls: a lease renewal stuck behind a 10,000-room checkpoint round fences the node.
  const objects = openObjectStore(config.objectStore, config.s3Endpoint);
  const bulkObjects = openObjectStore(config.objectStore, config.s3Endpoint, { threaded: true });
  const tokens = new Tokens(await loadAuthSecret(config.authSecret, objects));

  let broke!: (err: Error) => void;
  const broken = new Promise<Error>((resolve) => (broke = resolve));
  const store = new SqliteRoomStore(join(config.dataDir, "rooms.db"), { onBroken: (err) => broke(err) });
  if (store.setAside !== undefined) log.error({ file: store.setAside }, "local SQLite file was corrupt; set aside, rooms are rebuilt from checkpoints");
  let ready = false;
  let stopping: Promise<void> | undefined;

  const http = `http://${config.advertiseHost}:${config.httpPort}`;
  // The cluster map lives in the object store; this node seeds it (first start) and registers in it.
  const mapStore = new ClusterMapStore(objects);
  const membership: Membership = new Membership(
    config.id,
    await establishMapPatiently(mapStore, config, http, (err, retryInMs) =>
      log.warn({ err: (err as Error).message, retryInMs }, "cannot read or join the cluster map yet; retrying"),
    ),
    async (): Promise<ClusterMap> => (await mapStore.read())?.map ?? membership.map,
  );
  // The lease also says how this node acknowledges: a failover trusts its replica copies only if it was `replicated`.
  const lease = new LeaseKeeper(objects, config.id, { ...leaseOptions(config.leaseTtlMs), details: { durability: config.durability } }, (valid) =>
    valid ? log.info("lease renewed: accepting writes again") : log.error("lease not renewed in time: refusing writes (self-fenced)"),
  );
  // How this node acknowledged before this start (its lease from then): whether its rooms' replicas hold
  // everything it acknowledged, should its disk have been lost (node/replica-recovery.ts).
  const wasReplicated =
    config.durability === "replicated" && (await readLease(objects, config.id).catch(() => undefined))?.durability === "replicated";
  await lease.renew();
  // Renew from now on: a slow start (listing thousands of rooms) must not let the lease lapse.
  lease.start();

  let gateway: Gateway | undefined;
  let router: Router | undefined;
  const chain = new CheckpointChain(bulkObjects, config.checkpointRetentionMs);
  const checkpointer = new Checkpointer({
    store,
    chain,
    node: config.id,
    epoch: () => membership.epoch,
    owns: (room) => membership.ownerOf(room) === config.id,
    intervalMs: config.checkpointIntervalMs,
    concurrency: config.checkpointConcurrency,
    onCheckpoint: (_room, messages, lagMs) => {
      metrics.checkpointedMessages.inc(messages);
      metrics.checkpointLagSeconds.observe(lagMs / 1000);
    },
    onError: (room, err) => {
      metrics.checkpointFailures.inc();
      log.warn({ room, err: (err as Error).message }, "checkpoint failed; will retry");
    },
    onStale: (room, err) => log.error({ room, err: err.message }, "a newer owner checkpoints this room; stopped writing it"),
  });
  // A node that stopped cleanly left its whole state in the chain; otherwise its disk may have held more.
  const cleanStop = await takeCleanStop(objects, config.id);
  const rebuilder = new RoomRebuilder(
    store,
    chain,
    cleanStop ? 0 : config.checkpointBacklog,
    (room) => checkpointer.flush([room], { force: true }),
    // Replicated durability: a room's replica holds what this node acknowledged after the chain.
    config.durability === "replicated"
      ? async (room, chainHead) => {
          const head = await recovery.continueAfterRestore(room, chainHead);
          if (head !== undefined && head > chainHead) checkpointer.markDirty(room);
          return head;
        }
      : undefined,
  );
  const recovery: ReplicaRecovery = new ReplicaRecovery({ self: config.id, membership, store, peers: { get: (node) => peers.get(node) }, log, wasReplicated });
  // Peers and clients can reach this node before it has listed the rooms it must rebuild: hold every room.
  rebuilder.holdUntilStarted();
  const peers = new PeerPool(membership, config.forwardTimeoutMs, log);
  // Replicated durability: this node ships its rooms' commits to their replicas before acknowledging them.
  // Every node keeps the copies of the rooms it is the replica of (in the same SQLite file), whatever its own
  // mode, so a cluster being switched to or from `replicated` one node at a time keeps acknowledging.
  const replicaStore = new SqliteReplicaStore(store);
  const replicator: Replicator | undefined =
    config.durability === "replicated"
      ? new Replicator({
          self: config.id,
          membership,
          store,
          peers,
          log,
          // Within the forwarding deadline, so a refused send reaches its client as `unavailable`, not a timeout.
          timeoutMs: Math.max(200, Math.floor(config.forwardTimeoutMs / 2)),
          publish: (m): void => rooms.peek(m.room)?.committed(m),
          settling: (room): boolean => transfer.needsTakeOver(room) || rebuilder.isGated(room),
          checkpointSoon: (room) => void checkpointer.flush([room], { force: true }).catch(() => undefined),
          observe: (seconds, outcome) => metrics.replicationSeconds.observe({ outcome }, seconds),
          failed: (n, reason) => metrics.replicationFailures.inc({ reason }, n),
        })
      : undefined;
  const rooms: OwnedRooms = new OwnedRooms(
    store,
    (messages) => {
      metrics.messagesCommitted.inc(messages.length);
      metrics.commitBatchSize.observe(messages.length);
      // A batch's messages carry the time its commit started.
      if (messages[0] !== undefined) metrics.commitSeconds.observe(Math.max(0, Date.now() - messages[0].ts) / 1000);
      checkpointer.committed(messages);
    },
    replicator,
  );
  const metrics = new NodeMetrics(config.id, {
    roomsOwned: () => store.roomCount(),
    roomsFollowed: () => gateway?.followedRooms ?? 0,
    checkpointLag: () => checkpointer.lag(),
    degradedRooms: () => replicator?.degradedRooms() ?? 0,
    threads: {
      "sqlite-bulk": () => store.bulkThreadId,
      "object-store": () => (bulkObjects instanceof ThreadedObjectStore ? bulkObjects.threadId : undefined),
    },
  });
  const owner = new LocalOwner(config.id, membership, rooms, { rebuilder, chain, checkpointer }, config.forwardTimeoutMs, config.checkpointBacklog);
  const transfer: OwnershipTransfer = new OwnershipTransfer({
    self: config.id,
    membership,
    rooms,
    chain,
    checkpointer,
    rebuilder,
    peers,
    log,
    stoppedCleanly: (node) => stoppedCleanly(objects, node),
    backlog: config.checkpointBacklog,
    replicas:
      config.durability === "replicated"
        ? new ReplicaFailover({
            self: config.id,
            membership,
            replicas: replicaStore,
            store,
            log,
            replicatedOwner: async (node) => (await readLease(objects, node).catch(() => undefined))?.durability === "replicated",
          })
        : undefined,
    afterTakeOver: (room) => replicator?.forget(room),
  });
  owner.leaseValid = () => lease.valid;
  owner.settle = (room) => transfer.ensureSettled(room);
  owner.needsSettle = (room) => transfer.needsTakeOver(room);
  if (replicator !== undefined) {
    owner.replicaReady = (room, timeoutMs) => replicator.ready(room, timeoutMs);
    owner.needsReplicaSync = (room) => replicator.needsSync(room);
    owner.restored = (room) => replicator.forget(room, { reset: true });
  }
  router = new Router(config.id, membership, owner, peers, log, (op, seconds, outcome) =>
    metrics.forwardSeconds.observe({ op, outcome }, seconds),
  );

  // gRPC first: peers may forward to us as soon as they see us in the map.
  const localAdmin = new LocalAdmin({
    owner,
    transfer,
    membership,
    region: config.region,
    http,
    clients: () => gateway?.connectedClients ?? 0,
    gated: () => rebuilder.gated().map((g) => `${g.room}: ${g.state}`),
    checkpointLag: () => checkpointer.lag(),
    roomsOwned: () => store.roomCount(),
    durability: config.durability,
  });
  const clusterAdmin = new ClusterAdmin(membership, localAdmin, peers, async (node) => {
    const lease = await readLease(objects, node);
    const renewedAt = lease?.renewedAt;
    const ttlMs = lease?.ttlMs;
    return typeof renewedAt === "number" && typeof ttlMs === "number" ? { renewedAt, ttlMs } : undefined;
  });
  const rebalancer = new Rebalancer(membership, mapStore, objects, (id) => (id === config.id ? localAdmin : peers.get(id)), () => chain.rooms());
  const grpcServer = createPeerServer({
    owner,
    transfer,
    admin: localAdmin,
    replicas: new ReplicaService({ self: config.id, membership, store: replicaStore }),
    http,
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

  // Peers' HTTP addresses are not in a --peers list: learn them (and their liveness) by pinging.
  const peerHttp = new Map<string, { http: string; seenAt: number }>();
  const pingPeers = () => {
    for (const n of membership.map.nodes) {
      if (n.id === config.id) continue;
      peers
        .get(n.id)
        .ping({ node: config.id, epoch: membership.epoch })
        .then((r) => peerHttp.set(n.id, { http: r.http, seenAt: Date.now() }))
        .catch(() => {});
    }
  };
  const drainWatch = new DrainWatch({
    self: config.id,
    awaitingHandoff: () => transfer.awaitingHandoff(),
    releaseClients: (spreadMs) => gateway?.releaseClients(spreadMs) ?? Promise.resolve(0),
    log,
  });
  const pinger = setInterval(pingPeers, 2000);
  pinger.unref();
  pingPeers();

  const app = createHttpApi({
    self: config.id,
    clusterNodes: () =>
      membership.map.nodes.map((n) => {
        const seen = peerHttp.get(n.id);
        return { ...n, http: n.http || seen?.http || "", lastSeenMs: n.id === config.id ? 0 : seen ? Date.now() - seen.seenAt : null };
      }),
    admin: createAdminApi(clusterAdmin, rebalancer, config.adminToken),
    router,
    membership,
    tokens,
    metrics,
    log,
    maxTextLength: config.maxTextLength,
    ready: () => ready && stopping === undefined && !drainWatch.draining,
  });
  const server: HttpServer = createServer(app);
  answerUnparsableRequests(server, metrics);
  const io = new SocketServer(server, {
    maxHttpBufferSize: MAX_SOCKET_PACKET_BYTES,
    perMessageDeflate: false,
    pingInterval: 10_000,
    pingTimeout: 10_000,
    cors: { origin: true, credentials: true },
  });
  // Memory: engine.io keeps each connection's HTTP upgrade request (headers, parser state) for its lifetime, in
  // two places. Nothing reads it after the handshake, so drop both: ~1.3 KiB per idle websocket connection.
  // 1. The engine socket's `request` (socket.io's advice).
  io.engine.on("connection", (raw: { request: unknown }) => {
    raw.request = null;
  });
  // 2. engine.io 6.6 wraps an upgrade in a WebSocketResponse that stays referenced by the TCP socket's "close"
  //    listener and holds `req`; it only needs it while middlewares set headers, i.e. before this one returns.
  io.engine.use((_req: IncomingMessage, res: unknown, next: () => void) => {
    next();
    if (!(res instanceof ServerResponse)) (res as { req?: unknown }).req = undefined;
  });
  gateway = new Gateway(io, router, tokens, metrics, log, {
    maxTextLength: config.maxTextLength,
    rateLimit: config.rateLimit,
    forwardTimeoutMs: config.forwardTimeoutMs,
    maxRoomsPerConnection: config.maxRoomsPerConnection,
    clientBacklogBytes: config.clientBacklogBytes,
  });
  const slowClients = new SlowClientGuard(io, config.clientBacklogBytes, (socket, backlog) => {
    metrics.slowClientsCut.inc();
    log.warn({ user: (socket.data as { user?: string } | undefined)?.user, backlog }, "client too slow to keep up: connection cut (it resumes from history)");
  });
  slowClients.start();
  // Every TCP connection, websocket ones included: a stop must not wait for clients that do not read.
  const connections = new Set<Socket>();
  const forget = function (this: Socket) {
    connections.delete(this);
  }; // one listener shared by every connection: idle connections are the bulk of a node's memory
  server.on("connection", (c: Socket) => {
    connections.add(c);
    c.once("close", forget);
  });
  const httpPort = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.httpPort, config.host, () => {
      server.off("error", reject);
      const addr = server.address();
      resolve(typeof addr === "object" && addr !== null ? addr.port : config.httpPort);
    });
  });
  // Rooms this node owns whose chain is ahead of the local disk are gated before anything is served, then
  // rebuilt in the background (operations on them wait or get unavailable, never an empty room).
  await startRebuild(rebuilder, store, membership, config.id, log);
  checkpointer.start();
  const liveness = new Liveness({ self: config.id, membership, mapStore, lease, watcher: new LeaseWatcher(objects, config.leaseTtlMs), peers, log });
  membership.onChange((map, previous) => {
    log.info({ epoch: map.epoch, from: previous.epoch, nodes: map.nodes.map((n) => `${n.id}:${n.state}`) }, "cluster map changed");
    void transfer.afterMapChange().then(
      (r) => (r.lost > 0 || r.gained > 0) && log.info(r, "rooms moved after map change"),
      // E.g. the object store unreachable for the chain listing, or the node stopping meanwhile: rooms gained are
      // still taken over on their first request.
      (err: unknown) => log.warn({ err: (err as Error).message }, "eager takeover pass failed"),
    );
    // After afterMapChange has noted the rooms this change took away (synchronously, before its first wait).
    drainWatch.onMapChange(map);
    // Every room's replica is (re)synced under the new epoch; rooms gained are synced after their takeover.
    replicator?.resync();
    void dropUnneededCopies({ self: config.id, membership, store: replicaStore }).then(
      (n) => n > 0 && log.info({ rooms: n }, "dropped replica copies of rooms this node no longer replicates"),
      (err: unknown) => log.warn({ err: (err as Error).message }, "could not drop replica copies"),
    );
  });
  // After a restart the local copies may hold commits their replicas never confirmed: sync them now.
  replicator?.resync();
  liveness.start();
  ready = true;
  log.info({ httpPort, grpcPort, dataDir: config.dataDir, objectStore: objects.location, epoch: membership.epoch, nodes: membership.map.nodes.length }, "node ready");

  const stop = async (): Promise<void> => {
    log.info("stopping");
    // 1. Readiness goes 503 and new sends are refused, so load balancers and peers move on.
    owner.accepting = false;
    // 2. Sends already accepted get committed and acknowledged.
    await rooms.commits.drained();
    // With replicated durability they are acknowledged once their replicas confirm (or refused at the deadline).
    await replicator?.idle(STOP_GRACE_MS);
    replicator?.close();
    liveness.stop();
    lease.stop();
    // 3. A final checkpoint of every dirty room, so a node stopped cleanly loses nothing even with its disk.
    checkpointer.stop();
    rebuilder.stop();
    // Rooms lost at a recent map change and not handed off yet (the final checkpoint skips rooms not owned).
    await transfer.saveLost();
    const final = await checkpointer.flush().catch((err: unknown) => ({ rooms: 0, messages: 0, failed: -1, err }));
    log.info({ ...final }, "final checkpoint");
    // Everything this node acknowledged is in the chain: whoever rebuilds its rooms need not skip seqs.
    if (final.failed === 0 && checkpointer.dirtyRooms === 0 && transfer.unsavedLostRooms === 0) await markCleanStop(objects, config.id).catch(() => undefined);
    clearInterval(pinger);
    // 4. Clients are told to go (they reconnect elsewhere and resume with since); peers are released.
    // (Closing their connections without a socket.io disconnect packet: they reconnect by themselves.)
    await gateway?.releaseClients(0);
    slowClients.stop();
    // A websocket's close waits for the client's answer (up to 30 s in ws); one that does not read never
    // answers. Closed connections are told; what is left after a short grace is cut. (io.close also closes
    // the HTTP server, and the cut covers every connection it had, HTTP ones included.)
    const ioClosed = new Promise<void>((resolve) => io.close(() => resolve()));
    await Promise.race([ioClosed, new Promise((r) => setTimeout(r, CLIENT_CLOSE_GRACE_MS))]);
    for (const c of connections) c.destroy();
    await ioClosed;
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
    // 5. SQLite last: nothing can write any more.
    await store.closeAsync();
    if (bulkObjects instanceof ThreadedObjectStore) await bulkObjects.close();
    log.info("stopped");
  };

  return {
    id: config.id,
    httpPort,
    grpcPort,
    log,
    stop: () => (stopping ??= stop()),
    broken,
  };
}

/** Lists the object store until it answers (the node is not ready before), then rebuilds in the background. */
async function startRebuild(rebuilder: RoomRebuilder, store: RoomStore, membership: Membership, self: string, log: Logger): Promise<void> {
  for (let delay = 200; ; delay = Math.min(5000, delay * 2)) {
    try {
      let lastLogged = 0;
      const { rooms, done } = await rebuilder.start((room) => membership.ownerOf(room) === self, {
        onProgress: (p) => {
          if (p.roomsDone === p.roomsTotal || Date.now() - lastLogged > 1000) {
            lastLogged = Date.now();
            log.info(p, "rebuilding rooms from object storage");
          }
        },
        onError: (room, err) => log.warn({ room, err: (err as Error).message }, "room rebuild failed"),
      });
      if (rooms > 0) log.info({ rooms }, "rooms to check against their checkpoints");
      void done.then(async (p) => {
        if (rooms === 0) return;
        log.info(p, "rebuild finished");
        // The restores were bulk appends (no fsync each): make them durable and fold the log into the file.
        await store.compact?.().catch((err: unknown) => log.warn({ err }, "compacting the store after the rebuild failed"));
      });
      return;
    } catch (err) {
      log.warn({ err: (err as Error).message, retryInMs: delay }, "object store unreachable at start; retrying");
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
