import { expect } from "chai";
import { EventBatch } from "../../proto/gen/fractal.js";
import { encodeEventBatch, fromWire, toWire } from "../../node/rpc/wire.js";
import type { RoomEvent } from "../../shards/index.js";

describe("Subscribe frames encoded once per event", () => {
  const message = (seq: number, text: string): RoomEvent => ({
    room: "r1",
    type: "message",
    message: { room: "r1", seq, id: `id${seq}`, user: "ann", text, ts: 1_700_000_000_000 + seq },
  });
  const events: RoomEvent[] = [
    message(1, "hi"),
    message(2, "x".repeat(200)), // a length that takes two varint bytes
    message(3, "é".repeat(9000)), // three
    { room: "r2", type: "presence", user: "bob", event: "join" },
    { room: "r2", type: "typing", user: "bob" },
    { room: "r3", type: "head", seq: 42 },
    { room: "r4", type: "refused", code: "wrong_owner" },
  ];

  it("gives the same bytes as encoding the batch, and decodes to the same events", () => {
    const bytes = encodeEventBatch(events);
    expect(Buffer.compare(bytes, Buffer.from(EventBatch.encode({ events: events.map(toWire) }).finish()))).to.equal(0);
    expect(EventBatch.decode(bytes).events.map(fromWire)).to.deep.equal(events);
  });

  it("an event carried by several frames (one per subscribed node, any batch) decodes the same in each", () => {
    const first = encodeEventBatch([events[0]!, events[3]!]);
    const second = encodeEventBatch([events[3]!]); // the other node's stream, another turn's batch
    expect(EventBatch.decode(second).events.map(fromWire)).to.deep.equal([events[3]]);
    expect(EventBatch.decode(first).events.map(fromWire)).to.deep.equal([events[0], events[3]]);
    expect(encodeEventBatch([]).length).to.equal(0);
  });
});
