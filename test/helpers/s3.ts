/**
 * S3 for tests: a real S3-protocol server (s3rver) and, in front of it, a thin proxy that adds what s3rver
 * lacks: conditional writes (If-Match / If-None-Match answered with 412 PreconditionFailed, checked against
 * the object's current ETag under a per-key lock). The proxy also carries failure switches, so fault paths
 * (throttling, an unreachable store) are tested on purpose.
 *
 * s3rver signs its list continuation tokens with DES, which OpenSSL 3 only has in its legacy provider: mocha
 * runs with `--openssl-legacy-provider` (.mocharc.json) so listings of more than 1000 keys work.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import S3rver from "s3rver";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

export const S3_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export interface TestS3 {
  /** Endpoint of the conditional-write front (what nodes and stores should use). */
  readonly endpoint: string;
  /** Endpoint of s3rver itself (no conditional writes). */
  readonly rawEndpoint: string;
  readonly front: ConditionalFront;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestS3(): Promise<TestS3> {
  const directory = mkdtempSync(join(tmpdir(), "fractal-s3rver-"));
  const s3rver = new S3rver({ port: 0, address: "127.0.0.1", silent: true, directory });
  const { port } = (await s3rver.run()) as unknown as AddressInfo;
  const front = await ConditionalFront.start(port);
  const rawEndpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint: `http://127.0.0.1:${front.port}`,
    rawEndpoint,
    front,
    async createBucket(name) {
      const client = new S3Client({
        region: "us-east-1",
        endpoint: rawEndpoint,
        forcePathStyle: true,
        credentials: S3_CREDENTIALS,
        requestChecksumCalculation: "WHEN_REQUIRED",
      });
      await client.send(new CreateBucketCommand({ Bucket: name }));
      client.destroy();
    },
    async stop() {
      await front.stop();
      await s3rver.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

export class ConditionalFront {
  /** Answer the next N requests with 503 SlowDown (the SDK retries these). */
  throttleNext = 0;
  /** While true, every request is answered 503 (the store is down). */
  down = false;
  requests = 0;
  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: number,
    /** Per-key locks; shared by fronts of one s3rver so compare-and-swap holds across them. */
    private readonly locks: Map<string, Promise<void>>,
  ) {}

  /** A front for s3rver on `target`; `shareWith` another front of the same s3rver (separately switchable). */
  static async start(target: number, shareWith?: ConditionalFront): Promise<ConditionalFront> {
    let front: ConditionalFront | undefined;
    const server = createServer((req, res) => void front!.handle(req, res));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    front = new ConditionalFront(server, (server.address() as AddressInfo).port, target, shareWith?.locks ?? new Map());
    return front;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    if (this.down || this.throttleNext > 0) {
      if (!this.down) this.throttleNext--;
      req.resume();
      return xmlError(res, 503, "SlowDown", "Please reduce your request rate.");
    }
    const body = await readBody(req);
    const ifMatch = header(req, "if-match");
    const ifNoneMatch = header(req, "if-none-match");
    const conditional = (req.method === "PUT" || req.method === "POST") && (ifMatch !== undefined || ifNoneMatch !== undefined);
    // Every request on one key goes through that key's lock: s3rver writes object files in place, so a GET
    // racing a PUT could read half an object, which real S3 never returns (its writes are atomic).
    const key = (req.url ?? "").split("?")[0]!;
    const previous = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = previous.then(() => mine);
    this.locks.set(key, chained);
    await previous;
    try {
      if (!conditional) return await this.forward(req, body, res);
      const current = await this.headEtag(req, key);
      const failed =
        (ifNoneMatch === "*" && current !== undefined) || (ifMatch !== undefined && (current === undefined || current !== ifMatch));
      if (failed) return xmlError(res, 412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold");
      await this.forward(req, body, res);
    } finally {
      release();
      if (this.locks.get(key) === chained) this.locks.delete(key);
    }
  }

  /** The current ETag of the object, asked of s3rver with the caller's credentials headers. */
  private headEtag(req: IncomingMessage, path: string): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      // s3rver does not check signatures on HEAD strictly for path-style requests made by this helper; send none.
      const r = request({ host: "127.0.0.1", port: this.target, method: "HEAD", path, headers: { host: req.headers.host } }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 ? (res.headers.etag as string | undefined) : undefined);
      });
      r.on("error", reject);
      r.end();
    });
  }

  private forward(req: IncomingMessage, body: Buffer, res: ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      const headers = { ...req.headers };
      delete headers["if-match"];
      delete headers["if-none-match"];
      const r = request({ host: "127.0.0.1", port: this.target, method: req.method, path: req.url, headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        up.on("end", resolve);
      });
      r.on("error", () => {
        xmlError(res, 502, "BadGateway", "s3rver unreachable");
        resolve();
      });
      r.end(body);
    });
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function xmlError(res: ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { "content-type": "application/xml" });
  res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`);
}
