/**
 * Invariant 7 for the peer port: every method of the Peer service, called on a real node over gRPC with bytes
 * that are no protobuf message, with messages that decode but carry hostile values, and with oversized
 * frames, gets an error status and changes nothing. The node keeps serving: no process exits, the room's seq,
 * members and history and the cluster map are as before, and a good send goes through every node at the end.
 * Methods are taken from the generated service, so a method added later is covered without editing this file.
 */
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { HandoffRequest, HistoryRequest, JoinRequest, PeerService, RestoreRequest, SendRequest } from "../../proto/gen/fractal.js";
import {
  connect,
  fullHistory,
  http,
  join,
  roomInfo,
  roomOwnedBy,
  send,
  session,
  uniqueUser,
  useCluster,
  type ChatMessage,
  type TestCluster,
} from "../helpers/cluster.js";
import { prng } from "../helpers/prng.js";

type Method = (typeof PeerService)[keyof typeof PeerService];
const identity = (b: Buffer): Buffer => b;

/** Bytes no protobuf decoder accepts: each must get an error status from every method. */
const UNDECODABLE: [string, Buffer][] = [
  ["an invalid wire type", Buffer.from([0xff])],
  ["a truncated varint", Buffer.from([0x08, 0x80])],
  ["a field claiming 2 GB", Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x07, 0x61])],
  ["a length past the end", Buffer.concat([Buffer.from([0x12, 0x64]), Buffer.alloc(10, 0x61)])],
  ["an unterminated group", Buffer.from([0x0b, 0x08, 0x01])],
];

/** Seeded bytes (the same run after run): may decode as anything; the node must not care. */
function noise(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/**
 * Seeded messages in valid protobuf wire format with random fields: field numbers 1-12 (most of each request's
 * fields), every wire type, varints up to 2^64, strings that are valid ids, hostile or random, and nested
 * messages. Unlike noise they decode, so they reach the handlers with fields of random values and types. Room
 * names are random or a decoy room: the room under watch is never named, so nothing may change it. Most carry a
 * valid caller (field 1 of every request), so they get past the caller check to the method's own validation.
 */
function wireFuzz(seed: number, decoyRoom: string, epoch: number): () => Buffer {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const varint = (v: bigint): number[] => {
    const out: number[] = [];
    let x = BigInt.asUintN(64, v);
    do {
      out.push(Number(x & 0x7fn) | (x > 0x7fn ? 0x80 : 0));
      x >>= 7n;
    } while (x > 0n);
    return out;
  };
  const strings = [decoyRoom, "n1", "n2", "n3", "alice", "", "x".repeat(70), "../etc", "UPPER", "é😀", "\u0000", "constructor", "id-1"];
  const caller = (): number[] => {
    const body = [0x0a, 2, ...Buffer.from("n9"), 0x10, ...varint(BigInt(epoch))];
    return [0x0a, body.length, ...body];
  };
  const message = (depth: number): Buffer => {
    const withCaller = depth === 0 && rand() < 0.7;
    const bytes: number[] = withCaller ? caller() : [];
    for (let n = int(7); n > 0; n--) {
      // After a valid caller, not field 1 again: a second embedded caller would be merged into it.
      const field = (withCaller ? 2 : 1) + int(withCaller ? 11 : 12);
      const type = int(depth > 1 ? 3 : 4);
      if (type === 0) {
        bytes.push(...varint(BigInt(field << 3)), ...varint(rand() < 0.5 ? BigInt(int(100)) : BigInt.asUintN(64, BigInt(Math.floor(rand() * 2 ** 53)) << BigInt(int(12)))));
      } else if (type === 1 || type === 3) {
        const body = type === 3 ? message(depth + 1) : Buffer.from(rand() < 0.7 ? strings[int(strings.length)]! : noise(int(1e9), int(40)).toString("latin1"));
        bytes.push(...varint(BigInt((field << 3) | 2)), ...varint(BigInt(body.length)), ...body);
      } else {
        const width = rand() < 0.5 ? 4 : 8;
        bytes.push(...varint(BigInt((field << 3) | (width === 4 ? 5 : 1))), ...noise(int(1e9), width));
      }
    }
    return Buffer.from(bytes);
  };
  return () => message(0);
}

interface Outcome {
  code: grpc.status;
  fractalCode: string | undefined;
  details: string;
}

/** Calls `method` with raw request frames and waits for the call's status. */
function callRaw(
  client: grpc.Client,
  method: Method,
  frames: readonly Buffer[],
  { endAfterMs = 300, cancelAfterMs = 1_500 }: { endAfterMs?: number; cancelAfterMs?: number } = {},
): Promise<Outcome> {
  return new Promise((resolve) => {
    const deadline = Date.now() + 5_000;
    let done = false;
    const finish = (s: Partial<grpc.StatusObject> & { code: grpc.status }) => {
      if (done) return;
      done = true;
      const fractalCode = s.metadata?.get("fractal-code")[0];
      resolve({ code: s.code, fractalCode: typeof fractalCode === "string" ? fractalCode : undefined, details: s.details ?? "" });
    };
    if (!method.requestStream && !method.responseStream) {
      client.makeUnaryRequest(method.path, identity, identity, frames[0]!, new grpc.Metadata(), { deadline }, (err) =>
        finish(err ? (err as grpc.ServiceError) : { code: grpc.status.OK }),
      );
      return;
    }
    const call = method.requestStream
      ? client.makeBidiStreamRequest(method.path, identity, identity, new grpc.Metadata(), { deadline })
      : client.makeServerStreamRequest(method.path, identity, identity, frames[0]!, new grpc.Metadata(), { deadline });
    call.on("data", () => {});
    call.on("error", () => {}); // the status below says it
    call.on("status", (s: grpc.StatusObject) => finish(s));
    if (method.requestStream) {
      const stream = call as grpc.ClientDuplexStream<Buffer, Buffer>;
      for (const f of frames) stream.write(f);
      // A stream that stays open after bad frames (it may only ignore them) is closed from here; its status then
      // says how it ended, and the checks after the calls say whether anything changed.
      setTimeout(() => stream.end(), endAfterMs);
      setTimeout(() => call.cancel(), cancelAfterMs);
    }
  });
}

describe("cluster: bad peer input (gRPC, every Peer method)", function () {
  this.timeout(120_000);
  const cluster = useCluster({ nodes: 3 });
  const methods = Object.entries(PeerService) as [string, Method][];

  let room: string; // owned by n1, the node under attack
  let token: string;
  let initial: { seq: number; members: string[]; owner: string; history: ChatMessage[]; epoch: number };
  let client: grpc.Client;

  const snapshot = async (c: TestCluster) => {
    const info = await roomInfo(c, room, 1);
    const map = await http<{ epoch: number }>(`${c.node(0).httpUrl}/api/cluster`, { token: await c.token() });
    return {
      seq: info.seq,
      members: [...info.members].sort(),
      owner: info.owner,
      history: await fullHistory(c.node(0).httpUrl, token, room),
      epoch: map.json.epoch,
    };
  };

  before(async function () {
    this.timeout(30_000);
    const c = cluster();
    room = await roomOwnedBy(c, "n1", "peer-input");
    token = await session(c.node(1).httpUrl, uniqueUser("alice"));
    const sock = await connect(c.node(1).httpUrl, token);
    await join(sock, room);
    for (let i = 1; i <= 3; i++) await send(sock, room, `before ${i}`, `before-${i}`);
    initial = await snapshot(c);
    expect(initial.seq).to.equal(3);
    client = new grpc.Client(`127.0.0.1:${c.node(0).grpcPort}`, grpc.credentials.createInsecure(), {
      "grpc.max_send_message_length": 32 * 1024 * 1024,
    });
  });

  after(() => client?.close());

  it("covers every method of the service", () => {
    expect(methods.map(([name]) => name)).to.include.members(["join", "send", "sendStream", "subscribe", "restore", "takeOver", "replicate"]);
    expect(methods.length).to.be.at.least(18);
  });

  it("undecodable bytes get an error status from the node, on every method", async () => {
    const accepted: string[] = [];
    for (const [name, method] of methods) {
      for (const [label, bytes] of UNDECODABLE) {
        const out = await callRaw(client, method, [bytes]);
        // Refused by the node itself: a stream we had to cancel (or that ran into the deadline) was not refused.
        if ([grpc.status.OK, grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED].includes(out.code)) {
          accepted.push(`${name} did not refuse ${label}: ${grpc.status[out.code]}`);
        }
      }
    }
    expect(accepted).to.deep.equal([]);
  });

  it("seeded noise, an empty message and a stream of mixed frames change nothing, whatever status they get", async () => {
    const crashedOrHung: string[] = [];
    for (const [name, method] of methods) {
      const payloads = [Buffer.alloc(0), noise(1, 7), noise(2, 100), noise(3, 4096), noise(name.length, 65_536)];
      for (const p of payloads) {
        const out = await callRaw(client, method, [p]);
        if (out.code === grpc.status.DEADLINE_EXCEEDED) crashedOrHung.push(`${name} (${p.length} bytes) hung until the deadline`);
      }
      if (method.requestStream) await callRaw(client, method, [noise(4, 50), Buffer.alloc(0), UNDECODABLE[0]![1], noise(5, 300)]);
    }
    expect(crashedOrHung).to.deep.equal([]);
    expect(cluster().crashes).to.deep.equal([]);
  });

  it("seeded random messages in valid wire format, 40 per method (10 per stream): no call hangs, no node exits", async () => {
    const next = wireFuzz(0xf0221, "peer-fuzz-decoy", initial.epoch);
    const hung: string[] = [];
    for (const [name, method] of methods) {
      // A stream that stays open is cancelled after 300 ms: fewer of those, or the suite would take a minute.
      for (let i = 0; i < (method.requestStream ? 10 : 40); i++) {
        const frames = method.requestStream ? [next(), next(), next()] : [next()];
        const out = await callRaw(client, method, frames, { endAfterMs: 100, cancelAfterMs: 300 });
        if (out.code === grpc.status.DEADLINE_EXCEEDED && !method.responseStream && !method.requestStream) hung.push(`${name}: ${frames[0]!.toString("hex")}`);
      }
    }
    expect(hung).to.deep.equal([]);
    expect(cluster().crashes).to.deep.equal([]);
  });

  it("well-formed messages with hostile values are refused with a Fractal error code", async () => {
    const c = cluster();
    const epoch = initial.epoch;
    const caller = { node: "n2", epoch };
    const sendReq = (v: Partial<SendRequest>) => PeerService.send.requestSerialize(SendRequest.fromPartial({ caller, room, user: "alice", text: "hi", ...v }));
    const cases: [string, Method, Buffer, string][] = [
      ["send without a caller", PeerService.send, PeerService.send.requestSerialize(SendRequest.fromPartial({ room, user: "alice", id: "x1", text: "hi" })), "bad_request"],
      ["send from a caller with a bad node id", PeerService.send, sendReq({ caller: { node: "../n2", epoch }, id: "x2" }), "bad_request"],
      ["send to a bad room id", PeerService.send, sendReq({ room: "../etc/passwd", id: "x3" }), "bad_request"],
      ["send by a bad user name", PeerService.send, sendReq({ user: "a b<script>", id: "x4" }), "bad_request"],
      ["send with an empty id", PeerService.send, sendReq({ id: "" }), "bad_request"],
      ["send with a 65-char id", PeerService.send, sendReq({ id: "i".repeat(65) }), "bad_request"],
      ["send with an empty text", PeerService.send, sendReq({ id: "x5", text: "" }), "bad_request"],
      ["send with a text over the limit", PeerService.send, sendReq({ id: "x6", text: "t".repeat(4001) }), "too_large"],
      ["join by an empty user name", PeerService.join, PeerService.join.requestSerialize(JoinRequest.fromPartial({ caller, room, user: "" })), "bad_request"],
      ["history of a bad room id", PeerService.history, PeerService.history.requestSerialize(HistoryRequest.fromPartial({ caller, room: "UPPER", limit: 10 })), "bad_request"],
      ["handoff from a caller without a node id", PeerService.handoff, PeerService.handoff.requestSerialize(HandoffRequest.fromPartial({ caller: { node: "", epoch: 0 }, room })), "bad_request"],
      ["restore of a bad room id", PeerService.restore, PeerService.restore.requestSerialize(RestoreRequest.fromPartial({ caller, room: "-bad" })), "bad_request"],
    ];
    const wrong: string[] = [];
    for (const [label, method, bytes, code] of cases) {
      const out = await callRaw(client, method, [bytes]);
      if (out.code === grpc.status.OK || out.fractalCode !== code) wrong.push(`${label}: ${grpc.status[out.code]} ${out.fractalCode ?? "(no fractal-code)"} ${out.details}`);
    }
    expect(wrong).to.deep.equal([]);
    expect(c.crashes).to.deep.equal([]);
  });

  it("a frame over the peer message limit is refused (RESOURCE_EXHAUSTED) and the node stays up", async () => {
    const big = Buffer.alloc(9 * 1024 * 1024, 0x61);
    const out = await callRaw(client, PeerService.send, [Buffer.concat([Buffer.from([0x22, 0x80, 0x80, 0x80, 0x04]), big.subarray(0, 8 * 1024 * 1024)])]);
    expect(grpc.status[out.code]).to.equal("RESOURCE_EXHAUSTED");
  });

  it("afterwards nothing changed, and every node still serves", async () => {
    const c = cluster();
    expect(c.crashes).to.deep.equal([]);
    const now = await snapshot(c);
    expect(now).to.deep.equal(initial);
    // A good send through every node reaches history with the next seq.
    for (let i = 0; i < 3; i++) {
      const t = await session(c.node(i).httpUrl, uniqueUser("good"));
      const s = await connect(c.node(i).httpUrl, t);
      await join(s, room);
      const ack = await send(s, room, `after via ${c.node(i).id}`, `after-${i}`);
      expect(ack.seq).to.equal(initial.seq + 1 + i);
      s.close();
    }
  });
});
