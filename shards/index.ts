export * from "./errors.js";
export * from "./cluster-map.js";
export { Ring } from "./ring.js";
export type { RoomStore, StoredMessage, HistoryQuery, SendRecord } from "./room-store.js";
export { messageAt, contiguous } from "./room-store.js";
export { SqliteRoomStore } from "./room-store-sqlite.js";
export { MemoryRoomStore } from "./room-store-memory.js";
export type { RoomEvent, RoomListener, PresenceChange } from "./room-event.js";
export { CommitQueue } from "./commit-queue.js";
export { Room } from "./room.js";
export { OwnedRooms } from "./owned-rooms.js";
export type { ObjectStore, ObjectVersion, StoredObject, PutCondition } from "./object-store.js";
export { PreconditionFailedError, checkObjectKey } from "./object-store.js";
export { DirectoryObjectStore } from "./object-store-dir.js";
export { ThreadedObjectStore, type ObjectStoreSpec } from "./object-store-threaded.js";
export { S3ObjectStore, parseS3Url } from "./object-store-s3.js";
export * from "./checkpoint-format.js";
export { CheckpointChain, StaleOwnerError, type VersionedManifest, type ChainWriter } from "./checkpoint-chain.js";
export { Checkpointer, DEFAULT_CONCURRENCY as DEFAULT_CHECKPOINT_CONCURRENCY, type RoomCheckpointStatus, type CheckpointRoundResult } from "./checkpointer.js";
export { restoreRoom, type RestoreProgress, type RestoreResult } from "./room-restore.js";
export type { CheckpointRecord, RoomHeads } from "./room-store.js";
export { RoomRebuilder, RoomUnavailableError, type RebuildProgress } from "./room-rebuilder.js";
export { ClusterMapStore, MapConflictError, MAP_KEY, parseClusterMap, encodeClusterMap, type VersionedMap } from "./cluster-map-store.js";
export { LeaseKeeper, LeaseWatcher, leaseKey, readLease, type LeaseOptions } from "./leases.js";
export {
  decide as decideReplicaItem,
  ReplicaStatus,
  type ReplicaItem,
  type ReplicaOutcome,
  type ReplicaRecord,
  type ReplicaStore,
} from "./replica-store.js";
export { MemoryReplicaStore } from "./replica-store-memory.js";
export { SqliteReplicaStore } from "./replica-store-sqlite.js";
export { replicaDistrust, replicaTrusted, type ReplicaTrustQuestion } from "./replica-trust.js";
export type { MessageRelease } from "./message-release.js";
