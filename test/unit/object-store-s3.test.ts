import { expect } from "chai";
import { PreconditionFailedError } from "../../shards/index.js";
import { S3ObjectStore } from "../../shards/object-store-s3.js";
import { S3_CREDENTIALS, startTestS3, type TestS3 } from "../helpers/s3.js";
import { objectStoreContract } from "./object-store.contract.js";

let s3: TestS3;
let bucketCounter = 0;

before(async function () {
  this.timeout(20_000);
  s3 = await startTestS3();
});
after(async () => {
  await s3?.stop();
});

async function freshStore(endpoint: () => string, options: { maxAttempts?: number; multipartThreshold?: number } = {}) {
  const bucket = `fractal-test-${process.pid}-${++bucketCounter}`;
  await s3.createBucket(bucket);
  return new S3ObjectStore({ url: `s3://${bucket}/checkpoints`, endpoint: endpoint(), credentials: S3_CREDENTIALS, ...options });
}

// Over the S3 protocol against s3rver behind the in-repo conditional-write front (s3rver ignores If-Match).
objectStoreContract("S3 protocol (s3rver + conditional-write front)", () => freshStore(() => s3.endpoint));

describe("S3 object store specifics", () => {
  it("uploads large bodies in parts and reads them back intact", async function () {
    this.timeout(30_000);
    const store = await freshStore(() => s3.rawEndpoint, { multipartThreshold: 6 * 1024 * 1024 });
    const body = Buffer.alloc(12 * 1024 * 1024 + 17);
    for (let i = 0; i < body.length; i += 4096) body[i] = i % 251;
    await store.put("big/snapshot", body);
    expect((await store.get("big/snapshot"))?.body.equals(body)).to.equal(true);
  });

  it("retries throttling (503 SlowDown) with backoff and succeeds", async () => {
    const store = await freshStore(() => s3.endpoint);
    s3.front.throttleNext = 2;
    await store.put("retry/key", Buffer.from("ok"));
    expect((await store.get("retry/key"))?.body.toString()).to.equal("ok");
  });

  it("gives up with an error when the store stays down, and writes nothing", async () => {
    const store = await freshStore(() => s3.endpoint, { maxAttempts: 2 });
    s3.front.down = true;
    let failed: unknown;
    try {
      await store.put("down/key", Buffer.from("x")).catch((e: unknown) => (failed = e));
    } finally {
      s3.front.down = false;
    }
    expect(failed).to.be.instanceOf(Error);
    expect(failed).to.not.be.instanceOf(PreconditionFailedError);
    expect(await store.get("down/key")).to.equal(undefined);
  });

  it("lists across pages (more than 1000 keys)", async function () {
    this.timeout(60_000);
    const store = await freshStore(() => s3.rawEndpoint);
    const keys = Array.from({ length: 1010 }, (_, i) => `many/k${String(i).padStart(5, "0")}`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => store.put(k, Buffer.from("x"))));
    expect(await store.list("many/")).to.deep.equal(keys);
  });
});
