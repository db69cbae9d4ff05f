/**
 * The operations a room's owner serves, as seen by the node that forwards them. Implemented in-process by
 * LocalOwner and over gRPC by PeerLink; the router picks one per call from the ring.
 *
 * Contract: every call is executed by the room's owner under the owner's newest map. A node that does not
 * own the room under that map throws FractalError("wrong_owner", {epoch}) and changes nothing. `send` is
 * idempotent by (room, user, id) and resolves only once the message is durable.
 */
import type { HistoryQuery, RoomListener, SendRecord, StoredMessage } from "../shards/index.js";

export interface Caller {
  /** Id of the node the request came through. */
  readonly node: string;
  /** Cluster-map epoch the caller routed with. */
  readonly epoch: number;
}

export interface JoinResult {
  readonly seq: number;
  readonly members: string[];
}

export interface RoomInfo {
  readonly room: string;
  readonly owner: string;
  readonly seq: number;
  readonly members: string[];
}

export interface OwnerApi {
  join(caller: Caller, room: string, user: string): Promise<JoinResult>;
  leave(caller: Caller, room: string, user: string): Promise<void>;
  send(caller: Caller, room: string, user: string, id: string, text: string): Promise<SendRecord>;
  history(caller: Caller, room: string, query: HistoryQuery): Promise<StoredMessage[]>;
  typing(caller: Caller, room: string, user: string): Promise<void>;
  info(caller: Caller, room: string): Promise<RoomInfo>;
}

/**
 * Room event subscriptions towards one owner. `listener` receives the room's head first, then its events in
 * order. If the path to the owner breaks and comes back, a fresh head event is delivered, so the subscriber
 * can fetch what it missed. A `refused` event means the owner will not serve the room (re-route).
 */
export interface OwnerEvents {
  subscribe(caller: Caller, room: string, listener: RoomListener): void;
  unsubscribe(caller: Caller, room: string): void;
}
