/**
 * Sealing cached tokens at rest: envelope encryption, AES-256-GCM (node:crypto) under a data key that KMS
 * issues and wraps (GenerateDataKey, Decrypt). Locally and in tests the data key is wrapped by a raw AES key
 * instead. The encryption context {purpose, connection} is KMS's encryption context and part of the GCM
 * additional data, so a token copied onto another connection's item never opens. Data keys are cached, so a
 * warm container does not call KMS per request. The format, and what the AWS Encryption SDK (used before)
 * gave that this does not: docs/sealing.md.
 *
 *   offset      bytes  field
 *   0           1      version, 0xB1 (an Encryption SDK message starts 0x01 or 0x02: never mistaken for one)
 *   1           2      L, the wrapped data key's length, unsigned big-endian (1..1024)
 *   3           L      the wrapped data key (KMS CiphertextBlob; locally IV 12 | wrapped key 32 | tag 16)
 *   3+L         12     IV, random per message
 *   15+L        n      AES-256-GCM ciphertext of the payload (JSON, UTF-8)
 *   15+L+n      16     GCM tag
 *
 * GCM additional data: bytes 0 .. 3+L (version, length, wrapped key) then the encoded encryption context.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { isServerError, isThrottlingError, isTransientError } from '@smithy/core/retry';
import { SEAL_PURPOSE } from '../contract/names.js';
import { type Sealer, SealerUnavailable, type Token } from '../core/ports.js';

/** @internal The first byte of a sealed token. */
export const SEAL_FORMAT_VERSION = 0xb1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const MAX_WRAPPED_KEY_BYTES = 1024;
const HEADER_FIXED = 3;
/** A sealed token is a few KB at most; anything larger is not ours. */
const MAX_SEALED_BYTES = 64 * 1024;

/**
 * A sealed token that does not open here: not this format, tampered with, another connection's or another key's.
 * @internal
 */
export class SealError extends Error {
  override readonly name = 'SealError';
}

export type EncryptionContext = Record<string, string>;

/** Where data keys come from and how they are wrapped: KMS in AWS, a raw AES key locally. */
export interface DataKeySource {
  /** A new 256-bit data key, in clear and wrapped under `context`. */
  generate(context: EncryptionContext): Promise<{ key: Uint8Array; wrapped: Uint8Array }>;
  /** The data key in clear; throws SealError if `wrapped` does not unwrap under `context`, anything else (AWS errors) as is. */
  unwrap(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array>;
}

export interface SealerOptions {
  /** How long a data key seals new tokens, and how long an unwrapped one stays cached (default 5 min). */
  maxAgeMs?: number;
  /** How many tokens one data key seals at most (default 10,000). */
  maxMessages?: number;
  /** Unwrapped data keys kept (default 256; the oldest goes first). */
  cacheEntries?: number;
  now?: () => number;
}

interface SealedPayload {
  t: string;
  ty: string;
  s?: string;
  e: number;
  i: number;
  f: string;
}

/**
 * The encryption context as bytes, for the GCM additional data: the pairs sorted by key, a count then for
 * each a length-prefixed key and value (unsigned 16-bit big-endian lengths, UTF-8): one encoding per context.
 * @internal
 */
export function encodeContext(context: EncryptionContext): Buffer {
  const entries = Object.entries(context).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const parts: Buffer[] = [u16(entries.length)];
  for (const [k, v] of entries) for (const s of [k, v]) parts.push(u16(Buffer.byteLength(s)), Buffer.from(s, 'utf8'));
  return Buffer.concat(parts);
}

function u16(n: number): Buffer {
  if (n > 0xffff) throw new SealError('encryption context entry too long');
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function gcmSeal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): { iv: Buffer; ciphertext: Buffer; tag: Buffer } {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ciphertext, tag: cipher.getAuthTag() };
}

/** The plaintext, or undefined if the tag does not verify. */
function gcmOpen(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array, aad: Uint8Array): Buffer | undefined {
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    return undefined;
  }
}

interface EncryptKey {
  key: Promise<{ key: Uint8Array; wrapped: Uint8Array }>;
  createdAt: number;
  messages: number;
}

export class EnvelopeSealer implements Sealer {
  private readonly maxAgeMs: number;
  private readonly maxMessages: number;
  private readonly cacheEntries: number;
  private readonly now: () => number;
  /** Per connection (the context differs): the data key new tokens are sealed with. */
  private readonly encryptKeys = new Map<string, EncryptKey>();
  /** Unwrapped data keys by connection and wrapped bytes, oldest first. */
  private readonly decryptKeys = new Map<string, { key: Promise<Uint8Array>; at: number }>();

  constructor(
    private readonly keys: DataKeySource,
    options: SealerOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
    this.maxMessages = options.maxMessages ?? 10_000;
    this.cacheEntries = options.cacheEntries ?? 256;
    this.now = options.now ?? Date.now;
  }

  static context(connection: string): EncryptionContext {
    return { purpose: SEAL_PURPOSE, connection };
  }

  async seal(connection: string, token: Token): Promise<Uint8Array> {
    const payload: SealedPayload = { t: token.accessToken, ty: token.tokenType, e: token.expiresAt, i: token.issuedAt, f: token.fp };
    if (token.scope) payload.s = token.scope;
    const context = EnvelopeSealer.context(connection);
    const { key, wrapped } = await this.encryptKey(connection, context);
    if (wrapped.length < 1 || wrapped.length > MAX_WRAPPED_KEY_BYTES) throw new SealError('the wrapped data key has an unexpected length');
    const header = Buffer.concat([Buffer.from([SEAL_FORMAT_VERSION]), u16(wrapped.length), wrapped]);
    const { iv, ciphertext, tag } = gcmSeal(
      key,
      Buffer.from(JSON.stringify(payload), 'utf8'),
      Buffer.concat([header, encodeContext(context)]),
    );
    return new Uint8Array(Buffer.concat([header, iv, ciphertext, tag]));
  }

  async open(connection: string, sealed: Uint8Array): Promise<Token> {
    const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (bytes.length < HEADER_FIXED || bytes[0] !== SEAL_FORMAT_VERSION) throw new SealError('not a sealed token of this format');
    const wrappedLength = bytes.readUInt16BE(1);
    const bodyAt = HEADER_FIXED + wrappedLength;
    if (
      wrappedLength < 1 ||
      wrappedLength > MAX_WRAPPED_KEY_BYTES ||
      bytes.length < bodyAt + IV_BYTES + TAG_BYTES ||
      bytes.length > MAX_SEALED_BYTES
    ) {
      throw new SealError('not a sealed token of this format');
    }
    const header = bytes.subarray(0, bodyAt);
    const wrapped = bytes.subarray(HEADER_FIXED, bodyAt);
    const context = EnvelopeSealer.context(connection);
    const key = await this.decryptKey(connection, wrapped, context);
    const iv = bytes.subarray(bodyAt, bodyAt + IV_BYTES);
    const ciphertext = bytes.subarray(bodyAt + IV_BYTES, bytes.length - TAG_BYTES);
    const tag = bytes.subarray(bytes.length - TAG_BYTES);
    const plaintext = gcmOpen(key, iv, ciphertext, tag, Buffer.concat([header, encodeContext(context)]));
    if (!plaintext) throw new SealError('sealed token did not open: tampered with, sealed for another connection, or under another key');
    const p = JSON.parse(plaintext.toString('utf8')) as SealedPayload;
    return { accessToken: p.t, tokenType: p.ty, ...(p.s ? { scope: p.s } : {}), expiresAt: p.e, issuedAt: p.i, fp: p.f };
  }

  /** The connection's current data key: a new one after maxAgeMs or maxMessages; concurrent seals share one request. */
  private encryptKey(connection: string, context: EncryptionContext): Promise<{ key: Uint8Array; wrapped: Uint8Array }> {
    const now = this.now();
    let entry = this.encryptKeys.get(connection);
    if (!entry || entry.messages >= this.maxMessages || now - entry.createdAt >= this.maxAgeMs) {
      const key = this.keys.generate(context);
      const fresh: EncryptKey = { key, createdAt: now, messages: 0 };
      entry = fresh;
      this.encryptKeys.set(connection, fresh);
      key.then(
        // This container opens what it sealed without asking KMS.
        (k) => this.remember(this.decryptCacheKey(connection, k.wrapped), Promise.resolve(k.key), now),
        () => {
          if (this.encryptKeys.get(connection) === fresh) this.encryptKeys.delete(connection);
        },
      );
    }
    entry.messages++;
    return entry.key;
  }

  private decryptKey(connection: string, wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array> {
    const id = this.decryptCacheKey(connection, wrapped);
    const now = this.now();
    const hit = this.decryptKeys.get(id);
    if (hit && now - hit.at < this.maxAgeMs) return hit.key;
    const key = this.keys.unwrap(new Uint8Array(wrapped), context);
    this.remember(id, key, now);
    key.catch(() => {
      if (this.decryptKeys.get(id)?.key === key) this.decryptKeys.delete(id);
    });
    return key;
  }

  private decryptCacheKey(connection: string, wrapped: Uint8Array): string {
    return `${connection}\0${Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength).toString('base64')}`;
  }

  private remember(id: string, key: Promise<Uint8Array>, at: number): void {
    this.decryptKeys.delete(id);
    this.decryptKeys.set(id, { key, at });
    while (this.decryptKeys.size > this.cacheEntries) this.decryptKeys.delete(this.decryptKeys.keys().next().value!);
  }
}

/**
 * A KMS error that says the wrapped key will never unwrap here (another key, another context, tampered with,
 * key disabled or not allowed) as opposed to one worth retrying (throttling, KMS or network trouble), which
 * stays as the SDK raised it.
 */
function isPermanentKmsError(e: unknown): boolean {
  const err = e as { name?: string; $fault?: string };
  return err?.$fault === 'client' && !/Throttl|LimitExceeded|TooManyRequests/i.test(err.name ?? '');
}

/**
 * KMS throttled, failing or unreachable: SealerUnavailable (the original as `cause`), so the broker answers 503
 * and leaves the sealed token in place (it may be fine) instead of replacing it, which would spend budget.
 */
function kmsFault(e: unknown): unknown {
  if (e instanceof SealError || typeof e !== 'object' || e === null) return e;
  const err = e as Parameters<typeof isThrottlingError>[0] & Error;
  const outage = isThrottlingError(err) || isTransientError(err) || isServerError(err) || err.$fault === 'server';
  return outage ? new SealerUnavailable(`KMS unavailable (${err.name})`, { cause: e }) : e;
}

/** Data keys from the KMS key `keyArn`, asked of KMS in the key's own region. */
function kmsDataKeys(keyArn: string, client = new KMSClient({ maxAttempts: 3, ...regionOf(keyArn) })): DataKeySource {
  return {
    async generate(context) {
      let out;
      try {
        out = await client.send(new GenerateDataKeyCommand({ KeyId: keyArn, NumberOfBytes: KEY_BYTES, EncryptionContext: context }));
      } catch (e) {
        throw kmsFault(e);
      }
      if (out.Plaintext?.length !== KEY_BYTES || !out.CiphertextBlob?.length) throw new SealError('KMS returned no usable data key');
      return { key: new Uint8Array(out.Plaintext), wrapped: new Uint8Array(out.CiphertextBlob) };
    },
    async unwrap(wrapped, context) {
      let plaintext: Uint8Array | undefined;
      try {
        ({ Plaintext: plaintext } = await client.send(
          new DecryptCommand({ KeyId: keyArn, CiphertextBlob: wrapped, EncryptionContext: context }),
        ));
      } catch (e) {
        if (isPermanentKmsError(e)) throw new SealError(`the data key did not decrypt (${(e as Error).name})`);
        throw kmsFault(e);
      }
      if (plaintext?.length !== KEY_BYTES) throw new SealError('the data key did not decrypt to 256 bits');
      return new Uint8Array(plaintext);
    },
  };
}

function regionOf(keyArn: string): { region?: string } {
  const region = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):/.exec(keyArn)?.[1];
  return region ? { region } : {};
}

/** Data keys wrapped by a raw 256-bit AES key (AES-256-GCM, the encoded context as additional data). */
function rawAesDataKeys(wrappingKey: Uint8Array): DataKeySource {
  if (wrappingKey.length !== KEY_BYTES) throw new Error('the local sealing key must be 32 bytes');
  const kek = new Uint8Array(wrappingKey);
  return {
    async generate(context) {
      const key = new Uint8Array(randomBytes(KEY_BYTES));
      const { iv, ciphertext, tag } = gcmSeal(kek, key, encodeContext(context));
      return { key, wrapped: new Uint8Array(Buffer.concat([iv, ciphertext, tag])) };
    },
    async unwrap(wrapped, context) {
      const key =
        wrapped.length === IV_BYTES + KEY_BYTES + TAG_BYTES
          ? gcmOpen(
              kek,
              wrapped.subarray(0, IV_BYTES),
              wrapped.subarray(IV_BYTES, IV_BYTES + KEY_BYTES),
              wrapped.subarray(IV_BYTES + KEY_BYTES),
              encodeContext(context),
            )
          : undefined;
      if (!key) throw new SealError('the data key did not unwrap: another key or another connection');
      return new Uint8Array(key);
    },
  };
}

/** AWS: data keys from the KMS key `keyArn`. */
export function kmsSealer(keyArn: string, options?: SealerOptions & { client?: KMSClient }): EnvelopeSealer {
  return new EnvelopeSealer(kmsDataKeys(keyArn, options?.client), options);
}

/** Local mode and tests: a raw 256-bit AES wrapping key. */
export function rawAesSealer(key: Uint8Array, options?: SealerOptions): EnvelopeSealer {
  return new EnvelopeSealer(rawAesDataKeys(key), options);
}
