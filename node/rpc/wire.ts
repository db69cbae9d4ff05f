/** Conversions between room events and their protobuf form, used by both ends of the Subscribe stream. */
import type { RoomEvent as WireEvent } from "../../proto/gen/fractal.js";
import type { RoomEvent } from "../../shards/index.js";

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
