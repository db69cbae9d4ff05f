/**
 * Invariant 7 by seeded fuzzing, against a real 3-node cluster. The table-driven bad-input suites check the
 * inputs someone thought of; this one throws thousands of random and nearly valid ones at every surface a
 * client or operator reaches — socket events over websocket and long-polling, raw engine.io / socket.io frames,
 * the HTTP API, the admin API — and checks what must hold whatever the input:
 * - every acked event is answered, with `{ok: true, …}` or a documented error code, never `internal`;
 * - every HTTP answer is below 500, and an API error is `{error: {code, message}}` with a documented code;
 * - no node exits, and afterwards every node still serves a good client;
 * - every room holds exactly the sends that were acknowledged (socket and HTTP), each once, at consecutive
 *   seqs from 1, at the seq its ack gave, with a text that was sent under its id.
 * The seed is printed; FRACTAL_FUZZ_SEED replays a run and FRACTAL_FUZZ_SCALE multiplies its size.
 */
import { expect } from "chai";
import WebSocket from "ws";
import {
  connect,
  fullHistory,
  http,
  join,
  roomOwnedBy,
  send,
  session,
  uniqueUser,
  useCluster,
  MessageCollector,
  type Socket,
} from "../helpers/cluster.js";
import { prng } from "../helpers/prng.js";

const CODES = ["bad_request", "unauthorized", "forbidden", "not_joined", "not_found", "too_large", "rate_limited", "unavailable", "internal"];
const ADMIN_TOKEN = "fuzz-admin-token-0123456789";
const SEED = Number(process.env.FRACTAL_FUZZ_SEED ?? Date.now() % 2 ** 31);
const SCALE = Number(process.env.FRACTAL_FUZZ_SCALE ?? 1);
const SOCKET_EVENTS = Math.round(1500 * SCALE);
const HTTP_REQUESTS = Math.round(600 * SCALE);

/** String(v), or its JSON for objects that cannot become a string (an own `toString` that is not a function). */
function asText(v: unknown): string {
  try {
    return String(v);
  } catch {
    return JSON.stringify(v) ?? "?";
  }
}

class Garbage {
  private readonly r: () => number;
  constructor(
    seed: number,
    /** Valid room ids the near-valid inputs aim at. */
    private readonly rooms: readonly string[],
  ) {
    this.r = prng(seed);
  }

  chance(p: number): boolean {
    return this.r() < p;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }

  /** Strings that have broken parsers, paths and templates before, then random ones of telling lengths. */
  string(): string {
    if (this.chance(0.4)) {
      return this.pick([
        "", " ", "a", "lobby", "__proto__", "constructor", "toString", "hasOwnProperty", "null", "undefined", "NaN",
        "1e309", "-0", "[]", "{}", "A".repeat(65), "a".repeat(64), "a".repeat(65), "x".repeat(4000), "x".repeat(4001),
        "é😀\u0000\u202e\ud800", "../../etc/passwd", "%00", "%", "<script>alert(1)</script>", "'; DROP TABLE messages;--",
        "\r\n\r\nHTTP/1.1 200 OK", "room\u0000x", "ROOM", "-room", "room/../x", "\u{1F4A9}".repeat(20),
      ]);
    }
    const len = this.pick([0, 1, 2, 5, 16, 32, 33, 63, 64, 65, 200, 1000, 3999, 4000, 4001, 5000]);
    const alphabet = this.pick(["abcdefghijklmnopqrstuvwxyz0123456789", "az09._-", "ABC xyz\t\n\"\\/", "\u0000\u0001\u001f\u007f\u00ff\u2028\ud83d\ude00é", "%$#@!&*()[]{}<>?"]);
    let s = "";
    for (let i = 0; i < len; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }

  /** Any value a JSON (or socket.io binary) payload can carry, nested a few levels. */
  value(depth = 0): unknown {
    switch (this.int(0, depth > 2 ? 7 : 10)) {
      case 0:
        return null;
      case 1:
        return this.chance(0.5);
      case 2:
        return this.pick([0, -1, 1, 2, 50, 200, 201, 1.5, -0.5, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308, Number.MAX_SAFE_INTEGER + 2]);
      case 3:
      case 4:
      case 5:
        return this.string();
      case 6:
        return this.chance(0.5) ? this.pick(this.rooms) : undefined;
      case 7:
        return Buffer.from(this.string().slice(0, 100));
      case 8:
        return Array.from({ length: this.int(0, 4) }, () => this.value(depth + 1));
      default: {
        const o: Record<string, unknown> = {};
        // Own properties only, as JSON.parse makes them: an assignment to "__proto__" would set the prototype.
        for (let i = this.int(0, 4); i > 0; i--) {
          const key = this.pick(["room", "text", "id", "since", "limit", "before", "after", "name", "__proto__", this.string().slice(0, 20)]);
          Object.defineProperty(o, key, { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
        }
        return o;
      }
    }
  }

  room(): unknown {
    return this.chance(0.8) ? this.pick(this.rooms) : this.value(1);
  }

  /** Ids from a small pool half the time, so retries (same room, user and id) happen. */
  id(): unknown {
    if (this.chance(0.5)) return `id-${this.int(0, 40)}`;
    return this.chance(0.8) ? `id-${this.string().slice(0, 50)}-${this.int(0, 1e9)}` : this.value(1);
  }

  text(): unknown {
    if (this.chance(0.75)) return `fuzz ${this.string().slice(0, 300)} ${this.int(0, 1e9)}`;
    return this.chance(0.5) ? this.pick(["", "x".repeat(4000), "x".repeat(4001), " "]) : this.value(1);
  }

  seq(): unknown {
    return this.chance(0.7) ? this.int(0, 30) : this.value(1);
  }

  /** A payload for `event`: usually valid in shape, often with a field broken, dropped or added. */
  payload(event: string): unknown {
    if (this.chance(0.1)) return this.value();
    const p: Record<string, unknown> = { room: this.room() };
    if (event === "send") Object.assign(p, { text: this.text(), id: this.id() });
    if (event === "join" && this.chance(0.5)) p.since = this.seq();
    if (event === "history") for (const k of ["before", "after", "limit"]) if (this.chance(0.4)) p[k] = this.seq();
    for (let n = this.chance(0.5) ? this.int(1, 2) : 0; n > 0; n--) {
      const key = this.pick([...Object.keys(p), "extra"]);
      if (this.chance(0.3)) delete p[key];
      else p[key] = this.value(1);
    }
    return p;
  }
}

/** What the fuzz sent and what was acknowledged, per room, by "user\u0000id" (invariant 4's key). */
class Sends {
  /** room → key → seqs its acks gave. */
  readonly acked = new Map<string, Map<string, Set<number>>>();
  /** room → keys sent without an ack callback: they may be stored, unacknowledged. */
  readonly unacked = new Map<string, Set<string>>();
  /** room → key → every text sent under it. */
  private readonly texts = new Map<string, Map<string, Set<unknown>>>();

  sent(room: unknown, user: string, id: unknown, text: unknown, withAck: boolean): void {
    if (typeof room !== "string" || typeof id !== "string") return; // never stored
    const key = `${user}\u0000${id}`;
    entry(entry(this.texts, room, () => new Map<string, Set<unknown>>()), key, () => new Set<unknown>()).add(text);
    if (!withAck) entry(this.unacked, room, () => new Set<string>()).add(key);
  }

  ack(room: string, user: string, id: string, seq: number): void {
    entry(entry(this.acked, room, () => new Map<string, Set<number>>()), `${user}\u0000${id}`, () => new Set<number>()).add(seq);
  }

  textsOf(room: string, key: string): Set<unknown> {
    return this.texts.get(room)?.get(key) ?? new Set();
  }
}

function entry<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) map.set(key, (v = make()));
  return v;
}

interface Failure {
  what: string;
  detail: string;
}

describe("cluster: seeded fuzzing of every client and operator input", function () {
  this.timeout(180_000);
  const cluster = useCluster({ nodes: 3, extraArgs: ["--rate-limit", "2000", "--admin-token", ADMIN_TOKEN] });
  const failures: Failure[] = [];
  const sends = new Sends();
  let rooms: string[];
  let users: { name: string; token: string; node: number }[];

  before(async function () {
    const c = cluster();
    // A room owned by each node, and clients on every node: every input also crosses the forwarding path.
    rooms = [await roomOwnedBy(c, "n1", "fz"), await roomOwnedBy(c, "n2", "fz"), await roomOwnedBy(c, "n3", "fz")];
    users = [];
    for (let i = 0; i < 4; i++) {
      const name = uniqueUser(`fuzz${i}`);
      users.push({ name, token: await session(c.node(i % 3).httpUrl, name), node: i % 3 });
    }
    console.log(`      fuzz seed ${SEED} (FRACTAL_FUZZ_SEED=${SEED} replays it)`);
  });

  // Each test reports its own failures (the sends' record is shared: the last test checks all of them).
  beforeEach(() => {
    failures.length = 0;
  });

  function fail(what: string, detail: unknown): void {
    if (failures.length < 50) failures.push({ what, detail: JSON.stringify(detail)?.slice(0, 400) ?? String(detail) });
  }

  function expectNoFailures(): void {
    if (failures.length > 0) expect.fail(`seed ${SEED}: ${failures.length} failure(s):\n${failures.map((f) => `${f.what}\n    ${f.detail}`).join("\n")}`);
  }

  function checkAck(what: string, ack: unknown): void {
    const a = ack as { ok?: unknown; error?: { code?: unknown; message?: unknown } } | null;
    if (a?.ok === true) return;
    if (a?.ok !== false || typeof a.error?.message !== "string" || !CODES.includes(a.error.code as string)) return fail(`${what}: malformed ack`, ack);
    if (a.error.code === "internal") fail(`${what}: internal error`, ack);
  }

  it("socket events (websocket and long-polling, three nodes): every ack well-formed, no internal error", async () => {
    const c = cluster();
    const g = new Garbage(SEED, rooms);
    const sockets: { socket: Socket; user: string }[] = [];
    for (const [i, u] of users.entries()) {
      sockets.push({ socket: await connect(c.node(u.node).httpUrl, u.token, i === 3 ? { transports: ["polling"] } : {}), user: u.name });
    }
    // Every socket starts in every room, so most sends get past the membership check.
    for (const s of sockets) for (const room of rooms) await join(s.socket, room);
    const EVENTS = ["join", "send", "leave", "history", "typing"];
    for (let done = 0; done < SOCKET_EVENTS; ) {
      const burst: Promise<void>[] = [];
      for (let i = 0; i < 25 && done < SOCKET_EVENTS; i++, done++) {
        const { socket, user } = g.pick(sockets);
        const event = g.chance(0.92) ? g.pick(EVENTS) : g.pick(["hello", "message", "presence", "__proto__", "constructor", g.string().slice(0, 40) || "x"]);
        const payload = g.payload(event);
        const shape = g.int(0, 19);
        if (!EVENTS.includes(event) || event === "typing" || shape >= 18) {
          // No ack to wait for: the node must ignore or drop it, or (a send) may store it unacknowledged.
          if (event === "send") recordSend(payload, user, false);
          if (shape === 18) socket.emit(event, payload);
          else socket.emit(event, payload, g.value(), g.value());
          continue;
        }
        // Mostly the payload alone; sometimes nothing but the ack, or an extra argument before it.
        const args = shape < 16 ? [payload] : shape === 16 ? [] : [payload, g.value()];
        if (event === "send" && args.length > 0) recordSend(payload, user, true);
        burst.push(
          socket
            .timeout(15_000)
            .emitWithAck(event, ...args)
            .then(
              (ack: unknown) => {
                checkAck(`${event} ${JSON.stringify(args).slice(0, 200)}`, ack);
                const a = ack as { ok?: unknown; seq?: unknown };
                const p = payload as { room?: unknown; id?: unknown } | null;
                if (event === "send" && a?.ok === true) {
                  if (typeof a.seq !== "number") return fail("send ok without a seq", ack);
                  sends.ack(String(p?.room), user, String(p?.id), a.seq);
                }
              },
              (err: Error) => fail(`${event}: no ack in 15 s (${err.message})`, args),
            ),
        );
      }
      await Promise.all(burst);
    }
    for (const { socket, user } of sockets) if (!socket.connected) fail("socket disconnected by the node", user);
    expectNoFailures();
    expect(c.crashes).to.deep.equal([]);
  });

  function recordSend(payload: unknown, user: string, withAck: boolean): void {
    const p = payload as { room?: unknown; id?: unknown; text?: unknown } | null;
    if (p !== null && typeof p === "object") sends.sent(p.room, user, p.id, p.text, withAck);
  }

  it("HTTP and admin requests with random methods, paths, queries, headers and bodies: no 5xx, API errors well-formed", async () => {
    const c = cluster();
    const g = new Garbage(SEED + 1, rooms);
    // encodeURIComponent throws on a lone surrogate (the generator makes them on purpose): send it as %ED%A0%80.
    const encode = (s: string): string => encodeURIComponent(s.toWellFormed()).replace(/%EF%BF%BD/g, "%ED%A0%80");
    const segment = (): string => {
      if (g.chance(0.6)) return encode(asText(g.room()));
      return g.pick(["%", "%ZZ", "%00", "..", "%2e%2e", "a%2Fb", "%E0%A4%A", "x".repeat(3000), "", "%F0%9F%92%A9", "lobby?x=1", "a#b"]);
    };
    const query = (): string => {
      const parts: string[] = [];
      for (const k of ["after", "before", "limit", "room", "rooms"]) {
        if (g.chance(0.3)) parts.push(`${k}=${encode(String(g.pick(["", "0", "1", "-1", "1.5", "1e3", "abc", "99999999999999999999", "200", "201", "true", "%", g.string().slice(0, 30)])))}`);
      }
      if (g.chance(0.1)) parts.push("after=1&after=2", "limit[]=3", "%=%");
      return parts.length === 0 ? "" : `?${parts.join("&")}`;
    };
    // A header value must be a byte string without NUL, CR or LF (fetch refuses anything else before sending).
    const header = (s: string): string => s.replace(/[^\x20-\x7e\x80-\xff]/g, "");
    type Request = { method: string; path: string; body?: string; contentType?: string; auth?: string; tracked?: { room: string; user: string; id: unknown; text: unknown } };
    const request = (): Request => {
      const user = g.pick(users);
      const auth = g.pick([undefined, `Bearer ${user.token}`, `Bearer ${user.token}`, `Bearer ${user.token}x`, "Bearer", `Basic ${user.token}`, `Bearer ${ADMIN_TOKEN}`, header(g.string().slice(0, 100))]);
      const json = (v: unknown) => (v === undefined ? undefined : JSON.stringify(v));
      const body = g.pick<() => string | undefined>([
        () => json(g.value()),
        () => json({ text: g.text(), id: g.id() }),
        () => json({ name: g.chance(0.5) ? `u${g.int(0, 1e6)}` : g.value(1) }),
        () => g.string(),
        () => "{",
        () => `{"text":"${"y".repeat(70 * 1024)}","id":"big"}`,
        () => undefined,
      ])();
      const contentType = g.pick([undefined, "application/json", "application/json", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16", "application/json; charset=nope", "multipart/form-data"]);
      const room = segment();
      const templates: (() => Request)[] = [
        () => ({ method: "POST", path: "/api/session" }),
        () => ({ method: "GET", path: `/api/rooms/${room}` }),
        () => ({ method: "GET", path: `/api/rooms/${room}/messages${query()}` }),
        () => ({ method: "POST", path: `/api/rooms/${room}/messages` }),
        () => ({ method: "GET", path: g.pick(["/api/cluster", "/healthz", "/readyz", "/metrics", "/", "/index.html", "/api", "/api/", "/api/nope", "/../package.json", `/${segment()}`]) }),
        () => ({ method: "GET", path: `/api/admin/${g.pick(["status", "room", "nope"])}${query()}` }),
        () => ({ method: "POST", path: `/api/admin/${g.pick(["checkpoint", "restore", "rebalance", "status"])}` }),
      ];
      const r = g.pick(templates)();
      if (g.chance(0.15)) r.method = g.pick(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]);
      let b = body;
      if (r.path === "/api/admin/restore" || r.path === "/api/admin/rebalance") {
        // Operator commands that would change rooms on purpose: only bodies that fail validation, or a dry run.
        b = r.path.endsWith("restore")
          ? JSON.stringify({ room: g.chance(0.5) ? `Bad ${g.string().slice(0, 10)}` : g.value(1), toSeq: g.value(1) })
          : JSON.stringify({ ...((typeof g.value() === "object" && g.value()) || {}), dryRun: true, maxConcurrent: g.value(1), drain: g.value(1) });
      }
      if (r.method === "GET" || r.method === "HEAD") b = undefined;
      r.body = b;
      r.contentType = b === undefined ? undefined : contentType;
      r.auth = auth;
      // A POST of a message that may be stored: remember it, to check the room's history afterwards.
      if (r.method === "POST" && r.path.startsWith("/api/rooms/") && auth === `Bearer ${user.token}` && b !== undefined) {
        let parsed: { text?: unknown; id?: unknown } | undefined;
        try {
          parsed = JSON.parse(b) as { text?: unknown; id?: unknown };
        } catch {
          parsed = undefined;
        }
        if (parsed !== null && typeof parsed === "object") {
          let roomName: string;
          try {
            roomName = decodeURIComponent(room);
          } catch {
            roomName = room;
          }
          r.tracked = { room: roomName, user: user.name, id: parsed.id, text: parsed.text };
          sends.sent(roomName, user.name, parsed.id, parsed.text, true);
        }
      }
      return r;
    };

    const node = (i: number) => c.node(i % 3).httpUrl;
    let next = 0;
    const worker = async (w: number) => {
      for (let i = next++; i < HTTP_REQUESTS; i = next++) {
        const r = request();
        const what = `${r.method} ${r.path.slice(0, 120)} ${r.contentType ?? ""} ${(r.body ?? "").slice(0, 120)}`;
        let res: Response;
        try {
          res = await fetch(`${node(w + i)}${r.path}`, {
            method: r.method,
            headers: { ...(r.contentType === undefined ? {} : { "content-type": r.contentType }), ...(r.auth === undefined ? {} : { authorization: r.auth }) },
            body: r.body,
            signal: AbortSignal.timeout(15_000),
          });
        } catch (err) {
          fail(`${what}: no answer (${(err as Error).message})`, r.auth);
          continue;
        }
        const text = await res.text();
        if (res.status >= 500 && !(r.path === "/readyz" && res.status === 503)) fail(`${what}: HTTP ${res.status}`, text.slice(0, 300));
        if (r.path.startsWith("/api") && res.status >= 400 && r.method !== "HEAD") {
          let err: { error?: { code?: unknown; message?: unknown } } | undefined;
          try {
            err = JSON.parse(text) as typeof err;
          } catch {
            err = undefined;
          }
          if (!CODES.includes(err?.error?.code as string) || typeof err?.error?.message !== "string") fail(`${what}: HTTP ${res.status} without a documented error body`, text.slice(0, 300));
          else if (err?.error?.code === "internal") fail(`${what}: internal error`, text.slice(0, 300));
        }
        if (r.tracked !== undefined && res.status === 200) {
          const ok = JSON.parse(text) as { seq?: unknown };
          if (typeof ok.seq !== "number") fail(`${what}: 200 without a seq`, text.slice(0, 300));
          else sends.ack(r.tracked.room, r.tracked.user, String(r.tracked.id), ok.seq);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    expectNoFailures();
    expect(c.crashes).to.deep.equal([]);
  });

  it("raw engine.io and socket.io frames (malformed packets, bad ack ids, binary placeholders, deep nesting): no node exits", async () => {
    // Below socket.io-client: what a hostile client can put on the wire itself. The node may close such a
    // connection (socket.io's parser refuses the packet) but must keep running and serving everyone else.
    const c = cluster();
    const g = new Garbage(SEED + 2, rooms);
    const deep = (n: number) => `${"[".repeat(n)}${"]".repeat(n)}`;
    const frame = (): string | Buffer => {
      const room = JSON.stringify(g.pick(rooms));
      return g.pick<() => string | Buffer>([
        () => `42${JSON.stringify(["send", g.payload("send")])}`,
        () => `42${g.int(0, 2 ** 31)}${JSON.stringify([g.pick(["join", "send", "history", "leave"]), g.payload("join")])}`,
        () => `42${g.pick(["99999999999999999999", "-1", "1.5", "0x10", "NaN"])}["history",{"room":${room}}]`,
        () => `42["join",${room}`,
        () => `42${deep(g.pick([10, 1000, 100_000]))}`,
        () => `42["send",${deep(g.pick([10, 5000]))}]`,
        () => `43${g.int(0, 100)}[${room}]`,
        () => `45${g.pick(["1", "2", "99", "-1", "999999999"])}-["send",{"room":${room},"text":{"_placeholder":true,"num":${g.pick(["0", "1", "-1", "1e9", "\"x\""])}},"id":"b1"}]`,
        () => `46${g.int(0, 3)}-${g.int(0, 9)}["x",{"_placeholder":true,"num":0}]`,
        () => g.pick(["2", "3", "5", "6", "1", "40", "41", "44", "4", "", "9", "4x", "4\u0000"]),
        () => `4${g.string().slice(0, 200)}`,
        () => Buffer.from(g.string().slice(0, 300)),
        () => g.string(),
      ])();
    };
    let opened = 0;
    for (let conn = 0; conn < Math.round(40 * SCALE); conn++) {
      const node = c.node(conn % 3);
      const user = g.pick(users);
      const ws = new WebSocket(`ws://127.0.0.1:${node.httpPort}/socket.io/?EIO=4&transport=websocket`);
      ws.on("error", () => undefined);
      const closed = new Promise<void>((resolve) => ws.on("close", () => resolve()));
      const open = await Promise.race([new Promise<boolean>((resolve) => ws.on("open", () => resolve(true))), closed.then(() => false)]);
      if (!open) {
        fail("raw websocket refused before any garbage", node.id);
        continue;
      }
      opened++;
      // Half the connections log in to the namespace first, so the frames reach the event handlers.
      if (g.chance(0.5)) ws.send(`40${JSON.stringify({ token: user.token })}`);
      // Mostly well-formed events with random payloads (they reach the handlers), then the malformed frames
      // (the first socket.io cannot parse ends the connection).
      const frames = [
        ...Array.from({ length: g.int(5, 25) }, () => {
          const event = g.pick(["join", "send", "history", "leave", "typing"]);
          return `42${g.chance(0.5) ? g.int(0, 1000) : ""}${JSON.stringify([event, g.payload(event)])}`;
        }),
        ...Array.from({ length: g.int(1, 4) }, frame),
      ];
      for (const f of frames) {
        if (ws.readyState !== WebSocket.OPEN) break;
        // A well-formed send among the garbage may be stored, unacknowledged: the final check allows for it.
        const event = typeof f === "string" ? /^42\d*(\[.*)$/s.exec(f)?.[1] : undefined;
        if (event !== undefined) {
          try {
            const [name, payload] = JSON.parse(event) as unknown[];
            if (name === "send") recordSend(payload, user.name, false);
          } catch {
            // not JSON: refused by socket.io's parser
          }
        }
        ws.send(f);
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, 50))]);
      ws.terminate();
    }
    expect(opened).to.be.greaterThan(0);
    // Raw long-polling: an engine.io session, then garbage POSTed as its payload.
    for (let i = 0; i < Math.round(20 * SCALE); i++) {
      const base = `${c.node(i % 3).httpUrl}/socket.io/?EIO=4&transport=polling`;
      const hello = await http(`${base}&t=${i}`);
      const sid = /"sid":"([^"]+)"/.exec(hello.text)?.[1];
      if (sid === undefined) {
        fail("no engine.io session over polling", hello.text.slice(0, 200));
        continue;
      }
      const body = Array.from({ length: g.int(1, 6) }, () => {
        const f = frame();
        return typeof f === "string" ? f : `b${f.toString("base64")}`;
      }).join(g.chance(0.8) ? "\x1e" : "");
      const res = await fetch(`${base}&sid=${sid}`, { method: "POST", body, headers: { "content-type": "text/plain;charset=UTF-8" }, signal: AbortSignal.timeout(10_000) });
      if (res.status >= 500) fail(`polling POST: HTTP ${res.status}`, body.slice(0, 200));
      await res.text();
    }
    expectNoFailures();
    expect(c.crashes).to.deep.equal([]);
    for (let i = 0; i < 3; i++) expect((await http(`${c.node(i).httpUrl}/healthz`)).status).to.equal(200);
  });

  it("afterwards every room holds exactly what was acknowledged, once, at consecutive seqs; every node still serves", async () => {
    const c = cluster();
    expect(sends.acked.size, "the fuzz got some sends acknowledged").to.be.greaterThan(0);
    let messages = 0;
    const roomIds = [...new Set([...sends.acked.keys(), ...sends.unacked.keys()])].filter((r) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(r));
    for (const room of roomIds) {
      const acked = sends.acked.get(room) ?? new Map<string, Set<number>>();
      const mayBe = sends.unacked.get(room) ?? new Set<string>();
      const history = await fullHistory(c.node(0).httpUrl, users[0]!.token, room);
      messages += history.length;
      expect(history.map((m) => m.seq), `${room}: seqs (seed ${SEED})`).to.deep.equal(history.map((_, i) => i + 1));
      const stored = new Map(history.map((m) => [`${m.user}\u0000${m.id}`, m]));
      expect(stored.size, `${room}: one message per (user, id) (seed ${SEED})`).to.equal(history.length);
      for (const [key, m] of stored) {
        expect(acked.has(key) || mayBe.has(key), `${room}: ${JSON.stringify(key)} stored but never sent (seed ${SEED})`).to.equal(true);
        expect(sends.textsOf(room, key).has(m.text), `${room} ${JSON.stringify(key)}: the stored text was sent under this id`).to.equal(true);
      }
      for (const [key, seqs] of acked) {
        const m = stored.get(key);
        expect(m, `${room}: ${JSON.stringify(key)} acknowledged but not stored (seed ${SEED})`).to.not.equal(undefined);
        expect([...seqs], `${room} ${JSON.stringify(key)}: every ack of a send gives its seq`).to.deep.equal([m!.seq]);
      }
    }
    console.log(`      ${roomIds.length} rooms, ${messages} stored messages checked against the acks`);

    expect(c.crashes).to.deep.equal([]);
    for (let i = 0; i < 3; i++) expect((await http(`${c.node(i).httpUrl}/healthz`)).status).to.equal(200);
    const room = rooms[0]!;
    const listeners = await Promise.all([0, 1, 2].map(async (i) => connect(c.node(i).httpUrl, await session(c.node(i).httpUrl, uniqueUser("after")))));
    const collectors = listeners.map((s) => new MessageCollector(s));
    const joins = await Promise.all(listeners.map((s) => join(s, room)));
    const ack = await send(listeners[1]!, room, "still serving", `after-${SEED}`);
    expect(ack.seq).to.equal(Math.max(...joins.map((j) => j.seq)) + 1);
    for (const col of collectors) expect((await col.waitFor(room, 1)).map((m) => m.seq)).to.deep.equal([ack.seq]);
  });
});
