/**
 * Handoffs over real gRPC: handoffs asked in one event-loop turn travel in one HandoffMany call, each room
 * keeps its own outcome (a refused or malformed room fails alone), oversized batches are refused, and a peer
 * without HandoffMany (an older node) is asked one room at a time.
 */
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { PeerClient, PeerService, type PeerServer } from "../../proto/gen/fractal.js";
import { FractalError } from "../../shards/index.js";
import type { Membership } from "../../node/membership.js";
import type { PeerServerDeps } from "../../node/rpc/server.js";
import { MAX_HANDOFF_ROOMS, peerImplementation } from "../../node/rpc/server.js";
import { PeerLink } from "../../node/rpc/peer-link.js";
import type { Caller } from "../../node/room-api.js";
import type { CopyEnd, Handoff } from "../../node/transfer.js";

const log = pino({ level: "silent" });

interface Served {
  calls: string[];
  rooms: { caller: Caller; room: string; copy: CopyEnd }[];
}

/** The old owner's side, faked: rooms named `own-*` are still its own, `boom-*` fail unexpectedly. */
function fakeTransfer(served: Served) {
  return {
    async handOff(caller: Caller, room: string, copy: CopyEnd): Promise<Handoff> {
      served.rooms.push({ caller, room, copy });
      if (room.startsWith("own-")) throw new FractalError("wrong_owner", `still owns ${room}`, { epoch: 7 });
      if (room.startsWith("boom-")) throw new Error("disk on fire");
      const tail = [{ room, seq: copy.since + 1, id: `m-${room}`, user: "ann", text: `after ${copy.since}`, ts: 1000 }];
      return { head: copy.since + 1, tail, checkpointed: copy.since };
    },
  };
}

async function startPeer(served: Served, options: { withoutHandoffMany?: boolean } = {}) {
  const deps = {
    owner: {},
    transfer: fakeTransfer(served),
    admin: {},
    replicas: {},
    http: "http://127.0.0.1:1",
    membership: { epoch: 100, refresh: async () => {} } as unknown as Membership,
    log,
    maxTextLength: 4000,
    observe: (method: string) => served.calls.push(method),
  } as unknown as PeerServerDeps;
  const impl: Partial<PeerServer> = peerImplementation(deps);
  if (options.withoutHandoffMany === true) delete impl.handoffMany;
  const server = new grpc.Server();
  server.addService(PeerService, impl as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, address: `127.0.0.1:${port}` };
}

describe("handoff batches over gRPC", function () {
  this.timeout(15_000);
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  async function setup(options: { withoutHandoffMany?: boolean } = {}) {
    const served: Served = { calls: [], rooms: [] };
    const { server, address } = await startPeer(served, options);
    const link = new PeerLink("old", address, 5000, log);
    closers.push(() => {
      link.close();
      server.forceShutdown();
    });
    return { served, link, address };
  }

  const copy = (since: number): CopyEnd => ({ since, sinceId: since === 0 ? "" : `m${since}`, sinceTs: since });

  it("handoffs asked in one turn travel in one HandoffMany call; each room gets its own reply", async () => {
    const { served, link } = await setup();
    const rooms = ["r-a", "r-b", "r-c", "r-d", "r-e"];
    const replies = await Promise.all(rooms.map((room, i) => link.handoff({ node: "n4", epoch: 6 + i }, room, copy(i * 10))));
    expect(served.calls).to.deep.equal(["handoffMany"]);
    expect(served.rooms.map((r) => r.room)).to.deep.equal(rooms);
    // The newest epoch speaks for the batch; each room's copy end arrives as sent.
    expect(served.rooms.every((r) => r.caller.epoch === 10 && r.caller.node === "n4")).to.equal(true);
    expect(served.rooms.map((r) => r.copy)).to.deep.equal(rooms.map((_, i) => copy(i * 10)));
    replies.forEach((h, i) => {
      expect(h.head).to.equal(i * 10 + 1);
      expect(h.checkpointed).to.equal(i * 10);
      expect(h.tail).to.deep.equal([{ room: rooms[i], seq: i * 10 + 1, id: `m-${rooms[i]}`, user: "ann", text: `after ${i * 10}`, ts: 1000 }]);
    });
    // A later turn is a new call.
    await link.handoff({ node: "n4", epoch: 10 }, "r-f", copy(0));
    expect(served.calls).to.deep.equal(["handoffMany", "handoffMany"]);
  });

  it("a refused, failing or malformed room fails alone, with its own error code", async () => {
    const { served, link } = await setup();
    const caller = { node: "n4", epoch: 6 };
    const outcomes = await Promise.allSettled(
      ["r-ok", "own-x", "boom-y", "BAD ROOM!", "r-ok2"].map((room) => link.handoff(caller, room, copy(0))),
    );
    expect(served.calls).to.deep.equal(["handoffMany"]);
    const codes = outcomes.map((o) => (o.status === "fulfilled" ? "ok" : (o.reason as FractalError).code));
    expect(codes).to.deep.equal(["ok", "wrong_owner", "internal", "bad_request", "ok"]);
    const refused = outcomes[1] as PromiseRejectedResult;
    expect((refused.reason as FractalError).epoch).to.equal(7);
    // The malformed room never reached the transfer.
    expect(served.rooms.map((r) => r.room)).to.deep.equal(["r-ok", "own-x", "boom-y", "r-ok2"]);
  });

  it("more rooms than one call may carry are split; a raw oversized call is refused with bad_request", async () => {
    const { served, link, address } = await setup();
    const n = MAX_HANDOFF_ROOMS + 5;
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => link.handoff({ node: "n4", epoch: 6 }, `r-${i}`, copy(0))));
    expect(replies).to.have.length(n);
    expect(served.calls).to.deep.equal(["handoffMany", "handoffMany"]);
    expect(served.rooms).to.have.length(n);

    const raw = new PeerClient(address, grpc.credentials.createInsecure());
    closers.push(() => raw.close());
    const caller = { node: "n4", epoch: 6 };
    const rooms = Array.from({ length: MAX_HANDOFF_ROOMS + 1 }, (_, i) => ({ caller, room: `x-${i}`, since: 0, sinceId: "", sinceTs: 0 }));
    const err = await new Promise<grpc.ServiceError | null>((resolve) => raw.handoffMany({ caller, rooms }, (e) => resolve(e)));
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err?.metadata.get("fractal-code")).to.deep.equal(["bad_request"]);
    expect(served.rooms).to.have.length(n); // nothing of the refused call was handed off
  });

  it("a peer without HandoffMany (an older node) is asked one room at a time", async () => {
    const { served, link } = await setup({ withoutHandoffMany: true });
    const replies = await Promise.all(["r-a", "r-b"].map((room) => link.handoff({ node: "n4", epoch: 6 }, room, copy(3))));
    expect(replies.map((h) => h.head)).to.deep.equal([4, 4]);
    expect(served.calls).to.deep.equal(["handoff", "handoff"]);
    await link.handoff({ node: "n4", epoch: 6 }, "r-c", copy(3));
    expect(served.calls).to.deep.equal(["handoff", "handoff", "handoff"]);
  });
});
