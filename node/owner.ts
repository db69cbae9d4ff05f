/**
 * The owner side of room operations: checks that this node owns the room under its newest map (fencing,
 * DESIGN.md invariant 1), then hands the operation to the room actor. Served to local callers directly and
 * to peers through the gRPC server.
 */
import { FractalError, type HistoryQuery, type OwnedRooms, type RoomListener, type SendRecord, type StoredMessage } from "../shards/index.js";
import type { Membership } from "./membership.js";
import type { Caller, JoinResult, OwnerApi, OwnerEvents, RoomInfo } from "./room-api.js";

export class LocalOwner implements OwnerApi, OwnerEvents {
  /** False while the node is stopping: it then refuses new writes with unavailable. */
  accepting = true;

  constructor(
    private readonly self: string,
    private readonly membership: Membership,
    readonly rooms: OwnedRooms,
  ) {}

  async join(caller: Caller, room: string, user: string): Promise<JoinResult> {
    const actor = this.owned(room);
    const members = actor.join(user, caller.node);
    return { seq: actor.head, members };
  }

  async leave(caller: Caller, room: string, user: string): Promise<void> {
    this.owned(room).leave(user, caller.node);
    this.rooms.evictIfIdle(room);
  }

  async send(caller: Caller, room: string, user: string, id: string, text: string): Promise<SendRecord> {
    if (!this.accepting) throw new FractalError("unavailable", `node ${this.self} is stopping`);
    return this.owned(room).send({ user, id, text });
  }

  async history(caller: Caller, room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    return this.owned(room).history(query);
  }

  async typing(caller: Caller, room: string, user: string): Promise<void> {
    this.owned(room).typing(user);
  }

  async info(caller: Caller, room: string): Promise<RoomInfo> {
    const actor = this.owned(room);
    return { room, owner: this.self, seq: actor.head, members: actor.members() };
  }

  subscribe(caller: Caller, room: string, listener: RoomListener): void {
    this.owned(room).subscribe(caller.node, listener);
  }

  unsubscribe(caller: Caller, room: string): void {
    this.rooms.peek(room)?.unsubscribe(caller.node);
    this.rooms.evictIfIdle(room);
  }

  /** A peer's event stream closed: forget its subscriptions and the presence it reported. */
  forgetNode(node: string): void {
    for (const room of [...this.rooms.all()]) {
      room.unsubscribe(node);
      room.dropNode(node);
      this.rooms.evictIfIdle(room.id);
    }
  }

  private owned(room: string) {
    const owner = this.membership.ownerOf(room);
    if (owner !== this.self) {
      throw new FractalError("wrong_owner", `node ${this.self} does not own room ${room} at epoch ${this.membership.epoch}`, {
        epoch: this.membership.epoch,
      });
    }
    return this.rooms.get(room);
  }
}
