/**
 * ObjectStore on S3 (or an S3-compatible server) through @aws-sdk/client-s3.
 *
 * - Compare-and-swap uses S3 conditional writes: `If-None-Match: *` and `If-Match: <etag>`; S3 answers 412
 *   (PreconditionFailed) or 409 (ConditionalRequestConflict, a concurrent conditional write) when the
 *   condition does not hold; both become PreconditionFailedError. The version is the ETag.
 * - Throttling (503 SlowDown, 429) and 5xx are retried by the SDK's standard retry strategy with exponential
 *   backoff and jitter, `maxAttempts` tries in all.
 * - Bodies above `multipartThreshold` go up in parts (the condition is applied on completion), so large
 *   snapshots neither need one huge request nor time out as one.
 * - Checksums: `requestChecksumCalculation: WHEN_REQUIRED`, because S3-compatible servers such as s3rver
 *   store the aws-chunked framing of checksummed uploads as data (shared/PACKAGES.md). Fractal verifies its own
 *   SHA-256 checksums on every checkpoint object anyway.
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  AbortMultipartUploadCommand,
} from "@aws-sdk/client-s3";
import {
  checkObjectKey,
  type ObjectStore,
  type ObjectVersion,
  type PutCondition,
  PreconditionFailedError,
  type StoredObject,
} from "./object-store.js";

export interface S3ObjectStoreOptions {
  /** `s3://bucket/prefix` */
  readonly url: string;
  /** Endpoint of an S3-compatible server (path-style addressing is used then). */
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  readonly maxAttempts?: number;
  readonly multipartThreshold?: number;
  readonly partSize?: number;
}

const MIN_PART = 5 * 1024 * 1024;

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (m === null) throw new Error(`"${url}" is not an s3://bucket/prefix URL`);
  const prefix = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  return { bucket: m[1]!, prefix: prefix === "" ? "" : `${prefix}/` };
}

export class S3ObjectStore implements ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;
  private readonly prefix: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;

  constructor(options: S3ObjectStoreOptions) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseS3Url(options.url));
    this.multipartThreshold = options.multipartThreshold ?? 16 * 1024 * 1024;
    this.partSize = Math.max(MIN_PART, options.partSize ?? 8 * 1024 * 1024);
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? "us-east-1",
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint, forcePathStyle: true } : {}),
      ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
      maxAttempts: options.maxAttempts ?? 5,
      retryMode: "standard",
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    checkObjectKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      const bytes = await res.Body!.transformToByteArray();
      return { body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), version: res.ETag ?? "" };
    } catch (err) {
      if (httpStatus(err) === 404 || errorName(err) === "NoSuchKey") return undefined;
      throw err;
    }
  }

  async put(key: string, body: Buffer, condition?: PutCondition): Promise<ObjectVersion> {
    checkObjectKey(key);
    const conditions = {
      ...(condition?.ifMatch !== undefined ? { IfMatch: condition.ifMatch } : {}),
      ...(condition?.ifNoneMatch !== undefined ? { IfNoneMatch: condition.ifNoneMatch } : {}),
    };
    try {
      if (body.length > this.multipartThreshold) return await this.putMultipart(key, body, conditions);
      const res = await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: body, ...conditions }),
      );
      return { version: res.ETag ?? "" };
    } catch (err) {
      if (isConditionFailure(err)) throw new PreconditionFailedError(key);
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    // Pages continue with StartAfter (the last key seen) rather than continuation tokens: equivalent on S3,
    // and s3rver's tokens need DES, which OpenSSL 3 no longer offers.
    let startAfter: string | undefined;
    for (;;) {
      const res = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, StartAfter: startAfter }),
      );
      const page = (res.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [o.Key]));
      for (const key of page) keys.push(key.slice(this.prefix.length));
      if (!res.IsTruncated || page.length === 0) break;
      startAfter = page[page.length - 1];
    }
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
  }

  private async putMultipart(key: string, body: Buffer, conditions: { IfMatch?: string; IfNoneMatch?: string }): Promise<ObjectVersion> {
    const Key = this.prefix + key;
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }));
    try {
      const parts: { ETag: string; PartNumber: number }[] = [];
      for (let offset = 0, n = 1; offset < body.length; offset += this.partSize, n++) {
        const res = await this.client.send(
          new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: n, Body: body.subarray(offset, offset + this.partSize) }),
        );
        parts.push({ ETag: res.ETag ?? "", PartNumber: n });
      }
      const res = await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts }, ...conditions }),
      );
      return { version: res.ETag ?? "" };
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => {});
      throw err;
    }
  }
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string } | null)?.name;
}

function isConditionFailure(err: unknown): boolean {
  const status = httpStatus(err);
  const name = errorName(err);
  return status === 412 || name === "PreconditionFailed" || name === "ConditionalRequestConflict" || (status === 409 && name !== "BucketAlreadyOwnedByYou");
}
