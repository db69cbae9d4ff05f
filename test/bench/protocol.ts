/** IPC messages between the bench orchestrator (run.ts) and its load-generator children (load-client.ts). */

export type SystemName = "fractal" | "peer";

export interface ClientSpec {
  /** User name (session name). */
  user: string;
  /** Index into SetupReq.urls: which server node this client connects to. */
  node: number;
  /** Room id and its index (rooms are owned by exactly one load process). */
  room: string;
  roomIdx: number;
  /** Position of the client inside its room, 0..roomSize-1 (used as a delivery bit). */
  memberIdx: number;
}

export interface SetupReq {
  type: "setup";
  system: SystemName;
  procIdx: number;
  urls: string[];
  clients: ClientSpec[];
  /** Number of sockets connecting at once. */
  concurrency: number;
  /** Check per-room total order / seq consistency (Fractal only; the peer's seq is per server). */
  checkOrder: boolean;
  /** Length of each message text. */
  textBytes: number;
  /** Register message handlers and keep per-message records (false for idle-memory clients). */
  track: boolean;
  /** Node ids in the order of `urls` (Fractal): rooms' owners are looked up with GET /api/rooms/:room. */
  nodeIds?: string[];
}

export interface SetupRes {
  connected: number;
  joined: number;
  failed: number;
  errors: string[];
  /** Mean time of one POST /api/session. */
  sessionMs: number;
  /** Wall time of the whole setup (sessions, connects, joins). */
  connectMs: number;
}

export interface StepReq {
  type: "step";
  step: number;
  /** This process's share of the offered rate, msgs/s. */
  rate: number;
  durationMs: number;
  drainMs: number;
}

export interface StepRes {
  step: number;
  sent: number;
  windowMs: number;
  /** Deliveries (any message) received during the send window. */
  windowDeliveries: number;
  drained: boolean;
  drainMs: number;
  summary: StepSummary;
}

export interface StepSummary {
  step: number;
  sent: number;
  acked: number;
  ackErrors: Record<string, number>;
  unacked: number;
  expected: number;
  /** Unique deliveries of acked messages. */
  received: number;
  /** Unique deliveries of any message of this step (acked or not). */
  receivedAll: number;
  lost: number;
  /** Acked messages the sender itself never received. */
  lostSelf: number;
  dups: number;
  /** Deliveries that arrived after the step's drain window closed. */
  late: number;
  outOfOrder: number;
  seqConflicts: number;
  seqMismatch: number;
  /** End-to-end latency (send → receive, ms) of unique deliveries. Mergeable histogram. */
  latency: HistData;
  /** Send → ack latency (ms) of acked sends. */
  ackLatency: HistData;
  /** Max e2e latency (ms) of messages sent in each 100 ms slot of the send window (stall finder). */
  slotMaxMs: number[];
  /**
   * E2E latency by path (Fractal, when owners are known), index = (sender's node is the owner ? 0 : 2) +
   * (receiver's node is the owner ? 0 : 1): 0 owner→owner, 1 owner→other, 2 other→owner, 3 other→other.
   */
  latByPath: HistData[];
}

export interface HistData {
  n: number;
  sum: number;
  max: number;
  /** Sparse [bucket index, count] pairs. */
  buckets: [number, number][];
}

export interface FinishRes {
  steps: StepSummary[];
  disconnects: Record<string, number>;
  unknownMessages: number;
  misrouted: number;
  seqGaps: number;
  totalDeliveries: number;
}

export interface VerifyReq {
  type: "verify";
  roomIdxs: number[];
  pageLimit: number;
}

export interface VerifyRoom {
  room: string;
  acked: number;
  historyMessages: number;
  pages: number;
  missing: number;
  seqMismatch: number;
  historyGaps: number;
  historyDupSeqs: number;
  error?: string;
  missingSample: string[];
}

export interface VerifyRes {
  rooms: VerifyRoom[];
}

export interface FinishReq {
  type: "finish";
}

export interface CloseReq {
  type: "close";
}

export type Req = SetupReq | StepReq | FinishReq | VerifyReq | CloseReq;

export interface ReqEnvelope {
  reqId: number;
  req: Req;
}

export type ResEnvelope =
  | { reqId: number; ok: true; result: unknown }
  | { reqId: number; ok: false; error: string }
  | { event: "progress"; text: string };
