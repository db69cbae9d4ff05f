/** Conversions between room events and their protobuf form, used by both ends of the Subscribe stream. */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { RoomEvent as WireEvent, type EventBatch } from "../../proto/gen/fractal.js";
import type { RoomEvent } from "../../shards/index.js";

/** Each event's encoding, made once however many subscriber streams carry it (one per subscribed node). */
const encoded = new WeakMap<RoomEvent, Uint8Array>();

/**
 * The EventBatch frame of `events`, as bytes: `repeated RoomEvent events = 1`, i.e. per event the field's tag,
 * the length and the event's encoding. An owner sends every event to each subscribed node; encoding it once
 * instead of once per stream halves the protobuf work of the fan-out on a 3-node cluster.
 */
export function encodeEventBatch(events: readonly RoomEvent[]): Buffer {
  const writer = new BinaryWriter();
  for (const event of events) {
    let body = encoded.get(event);
    if (body === undefined) encoded.set(event, (body = WireEvent.encode(toWire(event)).finish()));
    writer.uint32(10).bytes(body); // field 1, length-delimited: the length, then the encoded event
  }
  const bytes = writer.finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** What the Subscribe stream's serializer takes: a batch, or a batch already encoded by encodeEventBatch. */
export type EventBatchFrame = EventBatch | Buffer;

export function toWire(event: RoomEvent): WireEvent {
  switch (event.type) {
    case "message":
      return { room: event.room, message: { ...event.message } };
    case "presence":
      return { room: event.room, presence: { user: event.user, event: event.event } };
    case "typing":
      return { room: event.room, typing: event.user };
    case "head":
      return { room: event.room, head: event.seq };
    case "refused":
      return { room: event.room, refused: event.code };
  }
}

/** Undefined for a frame this version does not understand (a newer peer): it is skipped. */
export function fromWire(w: WireEvent): RoomEvent | undefined {
  if (w.message !== undefined) return { room: w.room, type: "message", message: { ...w.message, room: w.room } };
  if (w.presence !== undefined) {
    const ev = w.presence.event;
    if (ev !== "join" && ev !== "leave") return undefined;
    return { room: w.room, type: "presence", user: w.presence.user, event: ev };
  }
  if (w.typing !== undefined) return { room: w.room, type: "typing", user: w.typing };
  if (w.head !== undefined) return { room: w.room, type: "head", seq: w.head };
  if (w.refused !== undefined) return { room: w.room, type: "refused", code: w.refused };
  return undefined;
}
