/**
 * The Subscribe stream between a node and an owner, over real gRPC (the owner's side faked): following rooms,
 * and letting go of the last one and following another right away, as a user leaving one room for another does.
 */
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import type { Membership } from "../../node/membership.js";
import type { PeerServerDeps } from "../../node/rpc/server.js";
import { createPeerServer } from "../../node/rpc/server.js";
import { PeerLink } from "../../node/rpc/peer-link.js";
import type { Caller } from "../../node/room-api.js";
import type { RoomEvent, RoomListener } from "../../shards/index.js";
import { waitUntil } from "../helpers/cluster.js";

/** What the owner saw, in order: "+room", "-room", "forget node". */
type Seen = string[];

/** The owner's side, faked: every subscription is answered with the room's head, as the real owner does. */
function fakeOwner(seen: Seen, heads: Map<string, number>) {
  return {
    subscribe(caller: Caller, room: string, listener: RoomListener): void {
      seen.push(`+${room}`);
      listener({ room, type: "head", seq: heads.get(room) ?? 0 });
    },
    unsubscribe(_caller: Caller, room: string): void {
      seen.push(`-${room}`);
    },
    forgetNode(node: string): void {
      seen.push(`forget ${node}`);
    },
  };
}

async function startOwner(seen: Seen, heads: Map<string, number>) {
  const deps = {
    owner: fakeOwner(seen, heads),
    transfer: {},
    admin: {},
    replicas: {},
    http: "http://127.0.0.1:1",
    membership: { epoch: 1, refresh: async () => {} } as unknown as Membership,
    log: pino({ level: "silent" }),
    maxTextLength: 4000,
  } as unknown as PeerServerDeps;
  const server = createPeerServer(deps);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, address: `127.0.0.1:${port}` };
}

describe("the Subscribe stream to an owner, over gRPC", function () {
  this.timeout(15_000);
  const caller = { node: "n1", epoch: 1 };
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  async function setup() {
    const seen: Seen = [];
    const heads = new Map([["a", 5], ["b", 9]]);
    const { server, address } = await startOwner(seen, heads);
    const logged: { msg?: string; why?: string }[] = [];
    const log = pino({ level: "debug" }, { write: (line: string) => void logged.push(JSON.parse(line) as { msg?: string }) });
    const link = new PeerLink("n2", address, 5000, log);
    closers.push(() => {
      link.close();
      server.forceShutdown();
    });
    const events: RoomEvent[] = [];
    const listener: RoomListener = (e) => events.push(e);
    return { seen, link, events, listener, logged };
  }

  it("a room followed right after the last one was let go of gets its head at once, on a fresh stream", async () => {
    const { seen, link, events, listener, logged } = await setup();
    link.subscribe(caller, "a", listener);
    await waitUntil(() => events.some((e) => e.room === "a" && e.type === "head"), "a's head");
    link.unsubscribe(caller, "a");
    expect(link.following).to.equal(0);
    link.subscribe(caller, "b", listener);
    await waitUntil(() => events.some((e) => e.room === "b" && e.type === "head"), "b's head");
    expect(events.filter((e) => e.type === "head").map((e) => [e.room, (e as { seq: number }).seq])).to.deep.equal([
      ["a", 5],
      ["b", 9],
    ]);
    // The old stream was closed on purpose, not lost: writing to it after its end used to fail it and the room
    // waited for the reconnect delay.
    expect(logged.filter((l) => l.msg === "event stream to peer lost")).to.deep.equal([]);
    await waitUntil(() => seen.includes("+b"), "the owner to see b followed");
    expect(seen.filter((s) => !s.startsWith("forget"))).to.deep.equal(["+a", "-a", "+b"]);
    expect(link.following).to.equal(1);
  });

  it("following again the room just let go of works the same", async () => {
    const { link, events, listener, logged } = await setup();
    for (let i = 0; i < 3; i++) {
      link.subscribe(caller, "a", listener);
      await waitUntil(() => events.filter((e) => e.room === "a" && e.type === "head").length === i + 1, `head ${i + 1}`);
      link.unsubscribe(caller, "a");
    }
    expect(logged.filter((l) => l.msg === "event stream to peer lost")).to.deep.equal([]);
  });
});
