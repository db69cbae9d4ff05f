/** Events a room's owner publishes to the nodes subscribed to the room, in the order it produced them. */
import type { StoredMessage } from "./room-store.js";

export type PresenceChange = "join" | "leave";

export type RoomEvent =
  | { readonly room: string; readonly type: "message"; readonly message: StoredMessage }
  | { readonly room: string; readonly type: "presence"; readonly user: string; readonly event: PresenceChange }
  | { readonly room: string; readonly type: "typing"; readonly user: string }
  /** The committed head when a subscription starts; lets the subscriber detect what it missed. */
  | { readonly room: string; readonly type: "head"; readonly seq: number }
  /** The node will not serve the room (e.g. wrong_owner); the subscriber must re-route. */
  | { readonly room: string; readonly type: "refused"; readonly code: string };

/**
 * Receives a room's events. Called synchronously in the owner's order; must not block or throw.
 */
export type RoomListener = (event: RoomEvent) => void;
