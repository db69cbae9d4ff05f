import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

describe("generated gRPC code", () => {
  it("matches proto/fractal.proto (run `npm run gen:proto` after editing the .proto)", function () {
    this.timeout(20_000);
    const out = mkdtempSync(join(tmpdir(), "fractal-proto-"));
    try {
      execFileSync(
        "protoc",
        [
          "--plugin=protoc-gen-ts_proto=./node_modules/.bin/protoc-gen-ts_proto",
          `--ts_proto_out=${out}`,
          "--ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js",
          "-I",
          "proto",
          "proto/fractal.proto",
        ],
        { stdio: "pipe" },
      );
      // The header names the protoc version that generated it; compare the code below it.
      const body = (file: string) => readFileSync(file, "utf8").replace(/^\/\/ +protoc .*$/m, "");
      expect(body(join(out, "fractal.ts"))).to.equal(body("proto/gen/fractal.ts"));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
