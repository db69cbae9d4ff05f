/** Prometheus metrics of one node, on a registry of its own (no process-wide singletons). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class NodeMetrics {
  readonly registry = new Registry();
  readonly connectedClients: Gauge;
  readonly roomsOwned: Gauge;
  readonly roomsFollowed: Gauge;
  readonly messagesCommitted: Counter;
  readonly messagesDelivered: Counter;
  readonly commitBatchSize: Histogram;
  readonly forwardSeconds: Histogram;
  readonly peerCallSeconds: Histogram;
  readonly clientErrors: Counter;

  constructor(node: string, probes: { roomsOwned: () => number; roomsFollowed: () => number }) {
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
    this.clientErrors = new Counter({
      name: "fractal_client_errors_total",
      help: "Client requests answered with an error, by code",
      labelNames: ["code"],
      registers,
    });
  }
}
