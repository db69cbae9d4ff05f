/**
 * The fractal shape across regions, simulated on loopback: two rings of nodes ("east": n1, n2; "west": n3,
 * n4) in one cluster. A room has a home region (ring of regions, or pinned by the operator) and a home node in
 * that region's ring; its writes are served there, clients in the other region chat through forwarding, and
 * `fractal admin move-room` moves a room's home to the other region without losing a message.
 */
import { expect } from "chai";
import { MessageCollector, admin, connect, emitAck, fullHistory, http, join, session, sleep, startCluster, uniqueRoom, uniqueUser, waitUntil, type Ack, type SendAck, type TestCluster } from "../helpers/cluster.js";

const REGION = (i: number) => (i < 2 ? "east" : "west");


describe("cluster: two regions on loopback", function () {
  this.timeout(120_000);
  let c: TestCluster;
  before(async function () {
    this.timeout(60_000);
    c = await startCluster({ nodes: 4, extraArgs: ["--lease-ttl", "30s"], nodeArgs: (i) => ["--region", REGION(i)] });
  });
  after(async () => {
    await c?.stopAll();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") c.printLogTails(30);
  });

  const regionOf = (node: string) => REGION(c.indexOf(node));

  it("every room is owned by a node of its home region, and both regions are used", async () => {
    const token = await c.token();
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const room = uniqueRoom("geo");
      const info = (await http(`${c.node(i % 4).httpUrl}/api/rooms/${room}`, { token })).json as { owner: string; region: string };
      expect(regionOf(info.owner), `owner of ${room}`).to.equal(info.region);
      seen.add(info.region);
    }
    expect([...seen].sort()).to.deep.equal(["east", "west"]);
  });

  it("clients in the other region chat through forwarding; move-room moves the home without losing a message", async () => {
    const token = await c.token();
    let room = "";
    for (let i = 0; !room; i++) {
      const r = uniqueRoom("home");
      if ((await http(`${c.node(0).httpUrl}/api/rooms/${r}`, { token })).json.region === "east") room = r;
    }
    const eastUser = await session(c.node(0).httpUrl, uniqueUser("e"));
    const westUser = await session(c.node(3).httpUrl, uniqueUser("w"));
    const east = await connect(c.node(0).httpUrl, eastUser);
    const west = await connect(c.node(3).httpUrl, westUser);
    const eastSeen = new MessageCollector(east);
    const westSeen = new MessageCollector(west);
    await join(east, room);
    await join(west, room);
    for (let i = 1; i <= 6; i++) {
      const ack = await emitAck<Ack<SendAck>>(i % 2 ? west : east, "send", { room, text: `m${i}`, id: `m${i}` });
      expect(ack.ok).to.equal(true);
    }
    await eastSeen.waitFor(room, 6);
    await westSeen.waitFor(room, 6);

    const before = JSON.parse(await admin(c.node(2).httpUrl, ["room", room, "--json"])) as { region: string; owner: string; pinned: boolean };
    expect(before).to.include({ region: "east", pinned: false });
    expect(regionOf(before.owner)).to.equal("east");
    const out = await admin(c.node(2).httpUrl, ["move-room", room, "--region", "west", "--json"]);
    const result = out.trim().split("\n").map((l) => JSON.parse(l) as { result?: { failed: number } }).find((l) => l.result)?.result;
    expect(result?.failed).to.equal(0);
    const after = JSON.parse(await admin(c.node(0).httpUrl, ["room", room, "--json"])) as { region: string; owner: string; pinned: boolean; seq: number };
    expect(after).to.include({ region: "west", pinned: true, seq: 6 });
    expect(regionOf(after.owner)).to.equal("west");

    // Chat goes on: seqs continue, both clients get everything once, in order.
    const ack = await waitUntil(
      async () => {
        const a = await emitAck<Ack<SendAck>>(east, "send", { room, text: "after move", id: "after-move" });
        return a.ok ? a : undefined;
      },
      "a send after the move",
      10_000,
      200,
    );
    expect(ack.seq).to.equal(7);
    await eastSeen.waitFor(room, 7);
    await westSeen.waitFor(room, 7);
    await sleep(200);
    expect(eastSeen.seqs(room)).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    expect(westSeen.seqs(room)).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    expect((await fullHistory(c.node(1).httpUrl, token, room)).map((m) => m.id)).to.deep.equal(["m1", "m2", "m3", "m4", "m5", "m6", "after-move"]);
    east.close();
    west.close();
  });
});
