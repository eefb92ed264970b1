/**
 * SHA-256, and HMAC-SHA-256 when constructed with a secret, for `@smithy/signature-v4`, from `node:crypto`.
 *
 * The AWS SDK uses the same thing in Node (`@smithy/hash-node`). It replaces `@aws-crypto/sha256-js`, a
 * pure-JS hash whose CommonJS build (picked by esbuild's default `mainFields` for platform node) requires
 * `buffer` and so crashed ESM bundles with `Dynamic require of "buffer" is not supported`.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import type { Checksum, SourceData } from '@smithy/types';

export class NodeSha256 implements Checksum {
  readonly #secret: SourceData | undefined;
  #hash: Hash | Hmac;

  constructor(secret?: SourceData) {
    this.#secret = secret;
    this.#hash = start(secret);
  }

  update(data: SourceData): void {
    this.#hash.update(bytes(data));
  }

  async digest(): Promise<Uint8Array> {
    return this.#hash.digest();
  }

  reset(): void {
    this.#hash = start(this.#secret);
  }
}

function start(secret: SourceData | undefined): Hash | Hmac {
  return secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
}

/** Strings are UTF-8, as the signer expects. */
function bytes(data: SourceData): string | Uint8Array {
  if (typeof data === 'string') return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}
