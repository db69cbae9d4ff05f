/**
 * Client protocol v1 (DESIGN.md): payload validation for socket events and HTTP bodies. Every payload is
 * checked here before it reaches routing; a bad one becomes bad_request / too_large and changes nothing.
 */
import { z } from "zod";
import { FractalError } from "../shards/index.js";

export const ROOM_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MAX_HISTORY_LIMIT = 200;
export const DEFAULT_HISTORY_LIMIT = 50;
export const MAX_SEND_ID_LENGTH = 64;

const roomId = z.string().regex(ROOM_ID_PATTERN, "room must match ^[a-z0-9][a-z0-9._-]{0,63}$");
const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const sendId = z
  .string()
  .min(1)
  .max(MAX_SEND_ID_LENGTH, `id must be 1-${MAX_SEND_ID_LENGTH} characters`)
  .refine((id) => id.isWellFormed(), "id must be well-formed Unicode (no lone surrogates)");

export const JoinPayload = z.object({ room: roomId, since: seq.optional() });
export const LeavePayload = z.object({ room: roomId });
export const TypingPayload = z.object({ room: roomId });
export const HistoryPayload = z.object({
  room: roomId,
  before: seq.optional(),
  after: seq.optional(),
  limit: z.number().int().min(1).max(MAX_HISTORY_LIMIT).optional(),
});

export type JoinPayload = z.infer<typeof JoinPayload>;
export type HistoryPayload = z.infer<typeof HistoryPayload>;

export interface SendPayload {
  readonly room: string;
  readonly text: string;
  readonly id: string;
}

/**
 * A send's idempotency id: 1-64 characters of well-formed Unicode (a lone surrogate has no UTF-8 form, so it
 * would not be stored as given; see checkText). The one check for every way a send arrives: clients, HTTP, peers.
 */
export function isSendId(id: unknown): id is string {
  return typeof id === "string" && id.length >= 1 && id.length <= MAX_SEND_ID_LENGTH && id.isWellFormed();
}

/** Parses a payload with `schema`; anything else becomes bad_request naming the first problem. */
export function parsePayload<T>(schema: z.ZodType<T>, payload: unknown): T {
  const result = schema.safeParse(payload);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
  throw new FractalError("bad_request", `${where}${issue?.message ?? "invalid payload"}`);
}

export function checkRoomId(room: unknown): string {
  if (typeof room !== "string" || !ROOM_ID_PATTERN.test(room)) {
    throw new FractalError("bad_request", "room must match ^[a-z0-9][a-z0-9._-]{0,63}$");
  }
  return room;
}

/**
 * Validates a send. Text length is counted in characters (code points) so that emoji count once; too long
 * is too_large, empty is bad_request. Text and id must be well-formed Unicode (see checkText).
 */
export function parseSend(payload: unknown, maxTextLength: number, requireRoom = true): SendPayload {
  if (typeof payload !== "object" || payload === null) throw new FractalError("bad_request", "payload must be an object");
  const p = payload as Record<string, unknown>;
  const room = requireRoom ? checkRoomId(p.room) : "";
  // The hot path checks the id by hand (zod's parse was ~1 % of a loaded node's event loop); zod words the error.
  const id = isSendId(p.id) ? p.id : parsePayload(sendId, p.id);
  const text = checkText(p.text, maxTextLength);
  return { room, text, id };
}

export function checkText(text: unknown, maxTextLength: number): string {
  if (typeof text !== "string") throw new FractalError("bad_request", "text must be a string");
  // Cheap bound first: a string longer than 2 UTF-16 units per character cannot fit.
  if (text.length > maxTextLength * 2) throw tooLarge(maxTextLength);
  if (text.trim().length === 0) throw new FractalError("bad_request", "text must not be empty");
  // A lone surrogate has no UTF-8 form: SQLite would keep bytes that read back as U+FFFD, so history would
  // differ from what the room's members saw live. Refused, like any other malformed input.
  if (!text.isWellFormed()) throw new FractalError("bad_request", "text must be well-formed Unicode (no lone surrogates)");
  // A string of at most max UTF-16 units has at most max characters: count code points only beyond that.
  if (text.length > maxTextLength && codePoints(text) > maxTextLength) throw tooLarge(maxTextLength);
  return text;
}

function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff || i + 1 === text.length) n++;
    else {
      const d = text.charCodeAt(i + 1);
      n++;
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return n;
}

function tooLarge(max: number): FractalError {
  return new FractalError("too_large", `text is longer than ${max} characters`);
}

/** Normalises a history request: default limit, and a range query when both bounds are given. */
export function historyQuery(p: { before?: number | undefined; after?: number | undefined; limit?: number | undefined }) {
  return {
    ...(p.after !== undefined ? { after: p.after } : {}),
    ...(p.before !== undefined ? { before: p.before } : {}),
    limit: p.limit ?? DEFAULT_HISTORY_LIMIT,
  };
}
