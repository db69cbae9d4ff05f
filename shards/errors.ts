/**
 * Typed errors with stable codes. Every edge (socket.io ack, HTTP status, gRPC status) maps these once;
 * nothing branches on message text.
 */

/** Codes a client can see (DESIGN.md, client protocol v1). */
export const ClientErrorCode = {
  bad_request: "bad_request",
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  not_joined: "not_joined",
  not_found: "not_found",
  too_large: "too_large",
  rate_limited: "rate_limited",
  unavailable: "unavailable",
  internal: "internal",
} as const;

/** Codes only peers see; they are turned into a client code (or retried) before reaching a client. */
export const PeerErrorCode = {
  /** The receiving node does not own the room under its map; the sender refreshes and retries. */
  wrong_owner: "wrong_owner",
} as const;

export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];
export type ErrorCode = ClientErrorCode | (typeof PeerErrorCode)[keyof typeof PeerErrorCode];

const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["unavailable", "wrong_owner", "rate_limited"]);

export const ALL_ERROR_CODES: readonly ErrorCode[] = [
  ...Object.values(ClientErrorCode),
  ...Object.values(PeerErrorCode),
];

export class FractalError extends Error {
  readonly code: ErrorCode;
  /** For wrong_owner: the epoch of the node that refused. */
  readonly epoch: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { epoch?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FractalError";
    this.code = code;
    this.epoch = options?.epoch;
  }

  /** True when the same request may succeed later without change. */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  /** The code a client sees: peer-only codes become `unavailable`. */
  get clientCode(): ClientErrorCode {
    return this.code === "wrong_owner" ? "unavailable" : this.code;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ALL_ERROR_CODES as readonly string[]).includes(value);
}

/** Wraps anything thrown into a FractalError; unknown failures become `internal`. */
export function toFractalError(err: unknown): FractalError {
  if (err instanceof FractalError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new FractalError("internal", message, { cause: err });
}

export function badRequest(message: string): FractalError {
  return new FractalError("bad_request", message);
}
