import { expect } from "chai";
import { resolve } from "node:path";
import { envName, NODE_FLAGS, parseNodeConfig, type NodeFlag } from "../../node/config.js";
import { prng } from "../helpers/prng.js";

const peers = "n1=127.0.0.1:9080,n2=127.0.0.1:9081";

describe("node config", () => {
  it("applies defaults and derives the object store next to the data dir", () => {
    const c = parseNodeConfig({ id: "n1", peers, "data-dir": "/tmp/x/n1" }, {});
    expect(c).to.include({ id: "n1", host: "127.0.0.1", advertiseHost: "127.0.0.1", httpPort: 8080, grpcPort: 9080 });
    expect(c.objectStore).to.equal("/tmp/x/objects");
    expect(c.maxTextLength).to.equal(4000);
    expect(c.map!.epoch).to.equal(1);
    expect(c.map!.nodes.map((n) => n.id)).to.deep.equal(["n1", "n2"]);
  });

  it("takes FRACTAL_* environment variables, and flags over them", () => {
    const env = { FRACTAL_ID: "n2", FRACTAL_PEERS: peers, FRACTAL_HTTP_PORT: "8181", FRACTAL_MAX_TEXT_LENGTH: "10" };
    const c = parseNodeConfig({ "http-port": "8282" }, env);
    expect(c.id).to.equal("n2");
    expect(c.httpPort).to.equal(8282);
    expect(c.maxTextLength).to.equal(10);
  });

  it("keeps s3:// object stores as given and resolves directories", () => {
    expect(parseNodeConfig({ id: "n1", peers, "object-store": "s3://bucket/prefix" }, {}).objectStore).to.equal("s3://bucket/prefix");
    expect(parseNodeConfig({ id: "n1", peers, "object-store": "rel/objects" }, {}).objectStore).to.equal(resolve("rel/objects"));
  });

  it("takes --durability local (default) or replicated, also from FRACTAL_DURABILITY", () => {
    expect(parseNodeConfig({ id: "n1", peers }, {}).durability).to.equal("local");
    expect(parseNodeConfig({ id: "n1", peers }, { FRACTAL_DURABILITY: "replicated" }).durability).to.equal("replicated");
    expect(parseNodeConfig({ id: "n1", peers, durability: "local" }, { FRACTAL_DURABILITY: "replicated" }).durability).to.equal("local");
  });

  it("stops with standard input only when asked (--stop-with-stdin true, also FRACTAL_STOP_WITH_STDIN)", () => {
    expect(parseNodeConfig({ id: "n1", peers }, {}).stopWithStdin).to.equal(false);
    expect(parseNodeConfig({ id: "n1", peers, "stop-with-stdin": "true" }, {}).stopWithStdin).to.equal(true);
    expect(parseNodeConfig({ id: "n1", peers }, { FRACTAL_STOP_WITH_STDIN: "true" }).stopWithStdin).to.equal(true);
  });

  it("takes --client-backlog as a size (bytes, KiB, MiB, GiB), 4MiB by default, also from FRACTAL_CLIENT_BACKLOG", () => {
    expect(parseNodeConfig({ id: "n1", peers }, {}).clientBacklogBytes).to.equal(4 * 1024 * 1024);
    expect(parseNodeConfig({ id: "n1", peers, "client-backlog": "512KiB" }, {}).clientBacklogBytes).to.equal(512 * 1024);
    expect(parseNodeConfig({ id: "n1", peers, "client-backlog": "65536" }, {}).clientBacklogBytes).to.equal(65536);
    expect(parseNodeConfig({ id: "n1", peers }, { FRACTAL_CLIENT_BACKLOG: "1GiB" }).clientBacklogBytes).to.equal(1024 ** 3);
  });

  it("takes --max-rooms-per-connection, 1000 by default", () => {
    expect(parseNodeConfig({ id: "n1", peers }, {}).maxRoomsPerConnection).to.equal(1000);
    expect(parseNodeConfig({ id: "n1", peers, "max-rooms-per-connection": "5" }, {}).maxRoomsPerConnection).to.equal(5);
  });

  const bad: [string, Record<string, string>, RegExp][] = [
    ["no rooms per connection", { id: "n1", peers, "max-rooms-per-connection": "0" }, /--max-rooms-per-connection/],
    ["a client backlog in an unknown unit", { id: "n1", peers, "client-backlog": "4MB" }, /--client-backlog must be a size like/],
    ["a client backlog below 64KiB", { id: "n1", peers, "client-backlog": "1KiB" }, /--client-backlog must be between 64KiB and 1GiB/],
    ["a client backlog above 1GiB", { id: "n1", peers, "client-backlog": "2GiB" }, /--client-backlog must be between 64KiB and 1GiB/],
    ["an unknown durability mode", { id: "n1", peers, durability: "paranoid" }, /--durability must be local or replicated/],
    ["a missing id", { peers }, /--id/],
    ["a bad port", { id: "n1", peers, "http-port": "99999" }, /--http-port/],
    ["a non-numeric port", { id: "n1", peers, "grpc-port": "abc" }, /--grpc-port/],
    ["neither peers nor join", { id: "n1" }, /--peers/],
    ["peers without this node", { id: "n9", peers }, /does not list this node/],
    ["a bad log level", { id: "n1", peers, "log-level": "loud" }, /--log-level/],
    ["a short auth secret", { id: "n1", peers, "auth-secret": "short" }, /--auth-secret/],
    ["a zero text limit", { id: "n1", peers, "max-text-length": "0" }, /--max-text-length/],
    ["a stop-with-stdin that is not true or false", { id: "n1", peers, "stop-with-stdin": "yes" }, /--stop-with-stdin must be true or false/],
  ];
  for (const [what, flags, message] of bad) {
    it(`rejects ${what} with one clear bad_request`, () => {
      expect(() => parseNodeConfig(flags, {}))
        .to.throw(message)
        .with.property("code", "bad_request");
    });
  }

  it("gives every random set of flags and FRACTAL_* variables a config or one bad_request, never another error (seeded)", () => {
    // Operators' input is input too (invariant 7): whatever the values, the CLI can print one clear line.
    const rand = prng(0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const values = [
      "", " ", "0", "-1", "1", "1.5", "65535", "65536", "99999999999999999999", "NaN", "Infinity", "1e3", "0x10", "true", "false",
      "1s", "500ms", "-5s", "1h", "24h", "10d", "1KiB", "64KiB", "4MiB", "1GiB", "2GiB", "1MB", "local", "replicated", "debug", "info",
      "n1", "n1=127.0.0.1:9080", peers, "n1=127.0.0.1:9080,n1=127.0.0.1:9081", "http://127.0.0.1:8080", "s3://bucket/prefix", "s3://",
      "/tmp/fractal-fuzz", "./data", "..", "\u0000", "é😀", "constructor", "__proto__", "x".repeat(5000), "a-long-enough-secret-0123456789",
    ];
    const flags = Object.keys(NODE_FLAGS) as NodeFlag[];
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const given: Partial<Record<NodeFlag, string>> = { id: "n1", peers };
      const env: Record<string, string> = {};
      for (let n = Math.floor(rand() * 6); n > 0; n--) {
        const value = rand() < 0.8 ? pick(values) : String.fromCharCode(...Array.from({ length: Math.floor(rand() * 20) }, () => Math.floor(rand() * 0x3000)));
        if (rand() < 0.7) given[pick(flags)] = value;
        else env[envName(pick(flags))] = value;
      }
      try {
        parseNodeConfig(given, env);
        accepted++;
      } catch (err) {
        expect((err as { code?: unknown }).code, `${JSON.stringify({ given, env })}: ${(err as Error).stack}`).to.equal("bad_request");
        expect((err as Error).message).to.be.a("string").and.not.equal("");
      }
    }
    expect(accepted, "some random configurations are valid").to.be.greaterThan(100);
  });
});
