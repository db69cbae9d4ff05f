/** Prometheus metrics of one node, on a registry of its own (no process-wide singletons). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { threadCpuSeconds, type NamedThreads } from "./thread-cpu.js";

export class NodeMetrics {
  readonly registry = new Registry();
  readonly connectedClients: Gauge;
  readonly roomsOwned: Gauge;
  readonly roomsFollowed: Gauge;
  readonly messagesCommitted: Counter;
  readonly messagesDelivered: Counter;
  readonly commitBatchSize: Histogram;
  readonly commitSeconds: Histogram;
  readonly forwardSeconds: Histogram;
  readonly peerCallSeconds: Histogram;
  readonly clientErrors: Counter;
  readonly slowClientsCut: Counter;
  readonly checkpointedMessages: Counter;
  readonly checkpointFailures: Counter;
  readonly checkpointLagSeconds: Histogram;
  readonly replicationSeconds: Histogram;
  readonly replicationFailures: Counter;

  constructor(
    node: string,
    probes: {
      roomsOwned: () => number;
      roomsFollowed: () => number;
      checkpointLag: () => { rooms: number; seq: number; seconds: number };
      /** Replicated durability: rooms owned here without a replica (acknowledged after the local commit). */
      degradedRooms?: () => number;
      /** Worker threads whose CPU time is reported by name (besides "main" and "other"). */
      threads?: NamedThreads;
    },
  ) {
    this.registry.setDefaultLabels({ node });
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.connectedClients = new Gauge({ name: "fractal_connected_clients", help: "Sockets connected to this node", registers });
    this.roomsOwned = new Gauge({
      name: "fractal_rooms_owned",
      help: "Rooms stored on this node as owner",
      registers,
      collect() {
        this.set(probes.roomsOwned());
      },
    });
    this.roomsFollowed = new Gauge({
      name: "fractal_rooms_followed",
      help: "Rooms with local clients whose events this node follows",
      registers,
      collect() {
        this.set(probes.roomsFollowed());
      },
    });
    this.messagesCommitted = new Counter({
      name: "fractal_messages_committed_total",
      help: "Messages committed by this node as owner (rate() gives messages/s)",
      registers,
    });
    this.messagesDelivered = new Counter({
      name: "fractal_messages_delivered_total",
      help: "Message events emitted to local sockets",
      registers,
    });
    this.commitBatchSize = new Histogram({
      name: "fractal_commit_batch_size",
      help: "Messages per group commit",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: "fractal_commit_duration_seconds",
      help: "Group commits, from the batch's start to durable in SQLite (acks and fan-out wait for it)",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.forwardSeconds = new Histogram({
      name: "fractal_forward_duration_seconds",
      help: "Room operations forwarded to their owner, by operation and outcome",
      labelNames: ["op", "outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.peerCallSeconds = new Histogram({
      name: "fractal_peer_call_duration_seconds",
      help: "Room operations served to peers, by method and outcome",
      labelNames: ["method", "outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.checkpointedMessages = new Counter({
      name: "fractal_checkpointed_messages_total",
      help: "Messages written to object storage by checkpoints",
      registers,
    });
    this.checkpointFailures = new Counter({
      name: "fractal_checkpoint_failures_total",
      help: "Room checkpoints that failed (retried with backoff)",
      registers,
    });
    this.checkpointLagSeconds = new Histogram({
      name: "fractal_checkpoint_lag_seconds",
      help: "Age of the oldest message a checkpoint saved, when it completed",
      buckets: [0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60],
      registers,
    });
    new Gauge({
      name: "fractal_checkpoint_lag_current_seconds",
      help: "Age of the oldest committed message not yet checkpointed",
      registers,
      collect() {
        this.set(probes.checkpointLag().seconds);
      },
    });
    new Gauge({
      name: "fractal_checkpoint_lag_messages",
      help: "Committed messages not yet checkpointed",
      registers,
      collect() {
        this.set(probes.checkpointLag().seq);
      },
    });
    this.replicationSeconds = new Histogram({
      name: "fractal_replication_duration_seconds",
      help: "Replicate calls to a room's replica (replicated durability), by outcome; an ack waits for one",
      labelNames: ["outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.replicationFailures = new Counter({
      name: "fractal_replication_failures_total",
      help: "Rooms whose waiting sends were refused (unavailable) because their replica did not confirm, by reason",
      labelNames: ["reason"],
      registers,
    });
    new Gauge({
      name: "fractal_replication_degraded_rooms",
      help: "Rooms owned here that have no replica (no other node in their region): acknowledged after the local commit only",
      registers,
      collect() {
        this.set(probes.degradedRooms?.() ?? 0);
      },
    });
    const reported = new Map<string, number>();
    new Counter({
      name: "fractal_thread_cpu_seconds_total",
      help: "CPU time (user + system) per thread of the node: main (the event loop), sqlite-bulk, object-store, other (V8 and libuv helpers: the SQLite log's fsync runs there)",
      labelNames: ["thread"],
      registers,
      collect() {
        for (const [thread, seconds] of threadCpuSeconds(probes.threads ?? {}) ?? []) {
          const delta = seconds - (reported.get(thread) ?? 0);
          if (delta <= 0) continue;
          this.inc({ thread }, delta);
          reported.set(thread, seconds);
        }
      },
    });
    this.clientErrors = new Counter({
      name: "fractal_client_errors_total",
      help: "Client requests answered with an error, by code",
      labelNames: ["code"],
      registers,
    });
    this.slowClientsCut = new Counter({
      name: "fractal_slow_clients_cut_total",
      help: "Client connections cut because more than --client-backlog was waiting to be sent to them",
      registers,
    });
  }
}
