/**
 * Fractal errors across gRPC: the code travels in the `fractal-code` trailer (and the refusing node's epoch in
 * `fractal-epoch`) next to a fitting gRPC status. A failure without a Fractal code (peer down, deadline) is
 * `unavailable`, so a client never waits on a dead peer.
 */
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { FractalError, isErrorCode, toFractalError, type ErrorCode } from "../../shards/index.js";

const GRPC_STATUS: Record<ErrorCode, status> = {
  bad_request: status.INVALID_ARGUMENT,
  unauthorized: status.UNAUTHENTICATED,
  forbidden: status.PERMISSION_DENIED,
  not_joined: status.FAILED_PRECONDITION,
  not_found: status.NOT_FOUND,
  too_large: status.INVALID_ARGUMENT,
  rate_limited: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
  wrong_owner: status.FAILED_PRECONDITION,
};

export function toServiceError(err: unknown): Partial<ServiceError> {
  const e = toFractalError(err);
  const metadata = new Metadata();
  metadata.set("fractal-code", e.code);
  if (e.epoch !== undefined) metadata.set("fractal-epoch", String(e.epoch));
  return { code: GRPC_STATUS[e.code], details: e.message, metadata };
}

export function fromServiceError(err: ServiceError, peer: string): FractalError {
  const code = err.metadata?.get("fractal-code")[0];
  if (typeof code === "string" && isErrorCode(code)) {
    const epoch = Number(err.metadata.get("fractal-epoch")[0]);
    return new FractalError(code, err.details, Number.isFinite(epoch) ? { epoch } : undefined);
  }
  if (err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED || err.code === status.CANCELLED) {
    return new FractalError("unavailable", `node ${peer} is unreachable: ${err.details || status[err.code]}`);
  }
  return new FractalError("internal", `node ${peer} failed: ${err.details}`);
}
