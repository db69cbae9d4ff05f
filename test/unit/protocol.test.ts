import { expect } from "chai";
import { Tokens } from "../../node/auth.js";
import { HistoryPayload, JoinPayload, parsePayload, parseSend } from "../../node/protocol.js";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

describe("client protocol validation", () => {
  const cases: [string, unknown, string | undefined][] = [
    ["a good join", { room: "lobby" }, undefined],
    ["a join with since", { room: "a.b_c-1", since: 5 }, undefined],
    ["a number", 42, "bad_request"],
    ["null", null, "bad_request"],
    ["an upper-case room", { room: "Lobby" }, "bad_request"],
    ["a room starting with -", { room: "-x" }, "bad_request"],
    ["a 65-char room", { room: "a".repeat(65) }, "bad_request"],
    ["a path room", { room: "../etc" }, "bad_request"],
    ["a negative since", { room: "x", since: -1 }, "bad_request"],
    ["a fractional since", { room: "x", since: 1.5 }, "bad_request"],
    ["a string since", { room: "x", since: "3" }, "bad_request"],
  ];
  for (const [what, payload, expected] of cases) {
    it(`join: ${what} -> ${expected ?? "ok"}`, () => {
      expect(code(() => parsePayload(JoinPayload, payload))).to.equal(expected);
    });
  }

  const sends: [string, unknown, string | undefined][] = [
    ["a good send", { room: "r", text: "hi", id: "1" }, undefined],
    ["4000 emoji (one character each)", { room: "r", text: "😀".repeat(4000), id: "1" }, undefined],
    ["4001 characters", { room: "r", text: "x".repeat(4001), id: "1" }, "too_large"],
    ["a megabyte", { room: "r", text: "x".repeat(1 << 20), id: "1" }, "too_large"],
    ["empty text", { room: "r", text: "", id: "1" }, "bad_request"],
    ["blank text", { room: "r", text: "   \n", id: "1" }, "bad_request"],
    ["text as object", { room: "r", text: { a: 1 }, id: "1" }, "bad_request"],
    ["a missing id", { room: "r", text: "hi" }, "bad_request"],
    ["an empty id", { room: "r", text: "hi", id: "" }, "bad_request"],
    ["a 64-char id", { room: "r", text: "hi", id: "i".repeat(64) }, undefined],
    ["a 65-char id", { room: "r", text: "hi", id: "i".repeat(65) }, "bad_request"],
    ["a numeric id", { room: "r", text: "hi", id: 7 }, "bad_request"],
    // No UTF-8 form: stored, it would read back as U+FFFD (history unlike what members saw live).
    ["text with a lone surrogate", { room: "r", text: "a\ud800b", id: "1" }, "bad_request"],
    ["text ending in a lone high surrogate", { room: "r", text: "ab\ud83d", id: "1" }, "bad_request"],
    ["an id with a lone surrogate", { room: "r", text: "hi", id: "x\udc00" }, "bad_request"],
    ["text and id with surrogate pairs", { room: "r", text: "💩 ok", id: "💩" }, undefined],
    ["a bad room", { room: "R", text: "hi", id: "1" }, "bad_request"],
    ["an array", [], "bad_request"],
  ];
  for (const [what, payload, expected] of sends) {
    it(`send: ${what} -> ${expected ?? "ok"}`, () => {
      expect(code(() => parseSend(payload, 4000))).to.equal(expected);
    });
  }

  it("history: limit 1-200, bounds are whole numbers", () => {
    expect(code(() => parsePayload(HistoryPayload, { room: "r", limit: 200 }))).to.equal(undefined);
    expect(code(() => parsePayload(HistoryPayload, { room: "r", limit: 201 }))).to.equal("bad_request");
    expect(code(() => parsePayload(HistoryPayload, { room: "r", limit: 0 }))).to.equal("bad_request");
    expect(code(() => parsePayload(HistoryPayload, { room: "r", before: "x" }))).to.equal("bad_request");
  });
});

describe("session tokens", () => {
  const tokens = new Tokens(Buffer.from("a secret shared by the cluster"));

  it("are valid on any node with the same secret, and name the user", () => {
    const token = tokens.issue("alice");
    expect(new Tokens(Buffer.from("a secret shared by the cluster")).verify(token)).to.equal("alice");
  });

  it("are refused with another secret, when tampered with, or when expired", () => {
    const token = tokens.issue("alice");
    expect(code(() => new Tokens(Buffer.from("another secret")).verify(token))).to.equal("unauthorized");
    const [v, payload, mac] = token.split(".");
    const forged = Buffer.from(JSON.stringify({ u: "mallory", iat: Date.now() })).toString("base64url");
    expect(code(() => tokens.verify(`${v}.${forged}.${mac}`))).to.equal("unauthorized");
    expect(code(() => tokens.verify(`${v}.${payload}.${mac}x`))).to.equal("unauthorized");
    const old = new Tokens(Buffer.from("s"), 1000, () => 0).issue("bob");
    expect(code(() => new Tokens(Buffer.from("s"), 1000, () => 5000).verify(old))).to.equal("unauthorized");
  });

  for (const bad of [undefined, null, 3, "", "v1..", "x.y.z", "v1.e30.AAAA", "a".repeat(10_000)]) {
    it(`refuses ${JSON.stringify(bad)?.slice(0, 20)}`, () => {
      expect(code(() => tokens.verify(bad))).to.equal("unauthorized");
    });
  }

  it("are issued only for valid user names", () => {
    for (const bad of ["", "a b", "x".repeat(33), "ünï", "a/b"]) expect(code(() => tokens.issue(bad))).to.equal("bad_request");
    expect(tokens.verify(tokens.issue("A-z_0.9"))).to.equal("A-z_0.9");
  });
});
