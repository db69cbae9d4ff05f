/**
 * RoomBroadcast over a real socket.io server and real socket.io clients on loopback: websocket clients get the
 * frame written straight to their connection, long-polling ones through socket.io, and nothing overtakes what
 * engine.io still holds for a connection.
 */
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { Server, type Socket as ServerSocket } from "socket.io";
import { io as connect, type Socket as ClientSocket } from "socket.io-client";
import { RoomBroadcast } from "../../node/room-broadcast.js";

describe("RoomBroadcast", () => {
  let http: HttpServer;
  let io: Server;
  let url: string;
  let broadcast: RoomBroadcast;
  const clients: ClientSocket[] = [];
  const serverSockets: ServerSocket[] = [];

  beforeEach(async () => {
    http = createServer();
    io = new Server(http, { serveClient: false, perMessageDeflate: false });
    io.on("connection", (socket) => {
      serverSockets.push(socket);
      socket.on("enter", (room: string, ack: () => void) => {
        void socket.join(room);
        ack();
      });
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    broadcast = new RoomBroadcast(io);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    serverSockets.length = 0;
    await new Promise<void>((resolve) => io.close(() => resolve()));
  });

  async function member(room: string, transports: ("websocket" | "polling")[], upgrade = true): Promise<ClientSocket> {
    const c = connect(url, { transports, upgrade, forceNew: true, reconnection: false });
    clients.push(c);
    await new Promise<void>((resolve, reject) => {
      c.once("connect", resolve);
      c.once("connect_error", reject);
    });
    await c.emitWithAck("enter", room);
    return c;
  }

  function collect(c: ClientSocket, event: string, count: number): Promise<unknown[]> {
    const got: unknown[] = [];
    return new Promise((resolve) => {
      c.on(event, (payload: unknown) => {
        got.push(payload);
        if (got.length === count) resolve(got);
      });
    });
  }

  it("writes to websocket clients directly and to long-polling clients through socket.io, the same payloads", async () => {
    const ws1 = await member("r", ["websocket"]);
    const ws2 = await member("r", ["websocket"]);
    const poll = await member("r", ["polling"], false);
    const outsider = await member("other", ["websocket"]);
    const payloads = [
      { room: "r", seq: 1, id: "a", user: "u", text: "hello", ts: 1 },
      { room: "r", seq: 2, id: "b", user: "ü", text: "emoji 😀 \" \\ \n quotes", ts: 2 },
      { room: "r", seq: 3, id: "c", user: "u", text: "x".repeat(70_000), ts: 3 }, // a 64-bit length header
    ];
    const waits = [ws1, ws2, poll].map((c) => collect(c, "message", payloads.length));
    let strays = 0;
    outsider.on("message", () => strays++);
    for (const p of payloads) expect(broadcast.emit("r", "message", p)).to.equal(3);
    for (const got of await Promise.all(waits)) expect(got).to.deep.equal(payloads);
    expect(broadcast.direct).to.equal(6);
    expect(broadcast.queued).to.equal(3);
    expect(broadcast.emit("nobody-here", "message", payloads[0])).to.equal(0);
    await outsider.emitWithAck("enter", "other"); // a round trip: anything sent to it would have arrived
    expect(strays).to.equal(0);
  });

  it("never overtakes packets engine.io still holds for a connection", async () => {
    const c = await member("r", ["websocket"]);
    const socket = serverSockets[0]!;
    const got = collect(c, "n", 6);
    // The first emit goes out and leaves the transport unwritable until its write completes, so the second waits
    // in engine.io's write buffer: a frame written directly now would reach the client before it.
    socket.emit("n", 1);
    socket.emit("n", 2);
    broadcast.emit("r", "n", 3);
    socket.emit("n", 4);
    await new Promise((resolve) => setImmediate(resolve));
    broadcast.emit("r", "n", 5);
    socket.emit("n", 6);
    expect(await got).to.deep.equal([1, 2, 3, 4, 5, 6]);
    expect(broadcast.queued).to.equal(1);
    expect(broadcast.direct).to.equal(1);
  });

  it("leaves events with binary parts to socket.io (they are several packets)", async () => {
    const c = await member("r", ["websocket"]);
    const got = collect(c, "blob", 1);
    expect(broadcast.emit("r", "blob", { room: "r", data: Buffer.from([1, 2, 3]) })).to.equal(1);
    const [payload] = (await got) as { room: string; data: ArrayBuffer }[];
    expect(payload!.room).to.equal("r");
    expect([...new Uint8Array(payload!.data)]).to.deep.equal([1, 2, 3]);
    expect(broadcast.queued).to.equal(1);
    expect(broadcast.direct).to.equal(0);
  });

  it("writes directly to a client once it upgraded from long-polling to websocket", async () => {
    const c = connect(url, { transports: ["polling", "websocket"], forceNew: true, reconnection: false });
    clients.push(c);
    await new Promise<void>((resolve) => c.io.engine.once("upgrade", () => resolve()));
    await c.emitWithAck("enter", "r"); // after the upgrade on both sides: the server answered over websocket
    const got = collect(c, "n", 1);
    broadcast.emit("r", "n", 1);
    expect(await got).to.deep.equal([1]);
    expect(broadcast.direct).to.equal(1);
  });
});
