import { randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { encodeContext, EnvelopeSealer, kmsSealer, rawAesSealer, SEAL_FORMAT_VERSION, SealError } from '../../functions/adapters/sealer.js';
import { SEAL_PURPOSE } from '../../functions/contract/names.js';
import { fingerprint } from '../../functions/core/fingerprint.js';
import { SealerUnavailable, type Token } from '../../functions/core/ports.js';
import { LEGACY_SEALED } from '../support/legacy-sealed.js';
import { CANARY, jwt } from '../unit/fakes.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const jwtToken = jwt({ exp: Math.floor(T0 / 1000) + 1200, sub: CANARY.accessToken });
const token = (accessToken = jwtToken): Token => ({
  accessToken,
  tokenType: 'Bearer',
  scope: 'API',
  expiresAt: T0 + 1_200_000,
  issuedAt: T0,
  fp: fingerprint(accessToken),
});

const key = () => new Uint8Array(randomBytes(32));

/** Every representation of the token that must not appear in a sealed blob. */
function forms(t: string): string[] {
  const b64 = Buffer.from(t).toString('base64');
  const b64url = Buffer.from(t).toString('base64url');
  return [t, b64, b64url, b64.slice(4, -4), b64url.slice(4, -4), Buffer.from(t).toString('hex')];
}

function assertOpaque(sealed: Uint8Array, t: string) {
  const bytes = Buffer.from(sealed);
  const views = [
    bytes.toString('latin1'),
    bytes.toString('utf8'),
    bytes.toString('base64'),
    bytes.toString('base64url'),
    bytes.toString('hex'),
  ];
  for (const view of views) for (const f of forms(t)) expect(view.includes(f), `sealed blob contains a form of the token`).toBe(false);
  expect(bytes.toString('latin1').startsWith('eyJ')).toBe(false);
}

describe('rawAesSealer', () => {
  it('round-trips a token', async () => {
    const s = rawAesSealer(key());
    const t = token();
    expect(await s.open('vitesse', await s.seal('vitesse', t))).toEqual(t);
    const noScope: Token = { accessToken: CANARY.accessToken, tokenType: 'Bearer', expiresAt: T0 + 60_000, issuedAt: T0, fp: 'fp' };
    expect(await s.open('vitesse', await s.seal('vitesse', noScope))).toEqual(noScope);
  });

  it('the sealed bytes contain neither the token nor its base64 (E11, invariant 5)', async () => {
    const s = rawAesSealer(key());
    for (const t of [jwtToken, CANARY.accessToken]) assertOpaque(await s.seal('vitesse', token(t)), t);
  });

  it('E11: a token sealed for one connection does not open for another', async () => {
    const s = rawAesSealer(key());
    const sealed = await s.seal('vitesse', token());
    await expect(s.open('vertex-cloud', sealed)).rejects.toThrow(/another connection/);
    await expect(s.open('vitesse', sealed)).resolves.toMatchObject({ accessToken: jwtToken });
  });

  it('tampered ciphertext does not open', async () => {
    const s = rawAesSealer(key());
    const sealed = await s.seal('vitesse', token());
    for (const at of [sealed.length - 1, Math.floor(sealed.length / 2), 40]) {
      const bad = new Uint8Array(sealed);
      bad[at]! ^= 0x01;
      await expect(s.open('vitesse', bad)).rejects.toThrow();
    }
    await expect(s.open('vitesse', sealed.slice(0, sealed.length - 10))).rejects.toThrow();
    await expect(s.open('vitesse', new Uint8Array([1, 2, 3]))).rejects.toThrow();
  });

  it('the blob does not name its connection: the connection is bound by the key wrap and the GCM additional data', async () => {
    const s = rawAesSealer(key());
    const sealed = Buffer.from(await s.seal('conn-a', token()));
    expect(sealed.includes('conn-a')).toBe(false);
    await expect(s.open('conn-b', new Uint8Array(sealed))).rejects.toThrow(SealError);
  });

  it('is laid out as docs/sealing.md says: version, wrapped-key length and bytes, IV, ciphertext, tag', async () => {
    const s = rawAesSealer(key());
    const t = token();
    const sealed = Buffer.from(await s.seal('vitesse', t));
    expect(sealed[0]).toBe(SEAL_FORMAT_VERSION);
    expect(SEAL_FORMAT_VERSION).toBe(0xb1);
    const wrapped = sealed.readUInt16BE(1);
    expect(wrapped).toBe(12 + 32 + 16); // the local wrap: IV, data key, tag
    const payload = JSON.stringify({ t: t.accessToken, ty: t.tokenType, e: t.expiresAt, i: t.issuedAt, f: t.fp, s: t.scope });
    expect(sealed.length).toBe(3 + wrapped + 12 + Buffer.byteLength(payload) + 16);
  });

  it('a header spliced from a message under another data key does not open', async () => {
    const k = key();
    const a = Buffer.from(await rawAesSealer(k).seal('vitesse', token()));
    const b = Buffer.from(await rawAesSealer(k).seal('vitesse', token()));
    const headerEnd = 3 + a.readUInt16BE(1);
    expect(a.subarray(0, headerEnd).equals(b.subarray(0, headerEnd))).toBe(false); // two sealers, two data keys
    const spliced = Buffer.concat([a.subarray(0, headerEnd), b.subarray(headerEnd)]);
    await expect(rawAesSealer(k).open('vitesse', new Uint8Array(spliced))).rejects.toThrow(SealError);
  });

  it('another version byte does not open, even with the rest intact', async () => {
    const s = rawAesSealer(key());
    const sealed = Buffer.from(await s.seal('vitesse', token()));
    for (const v of [0x01, 0x02, 0xb2]) {
      sealed[0] = v;
      await expect(s.open('vitesse', new Uint8Array(sealed))).rejects.toThrow(SealError);
    }
  });

  it('the header is authenticated: a changed wrapped-key byte does not open, even if it unwrapped to the same data key', async () => {
    const dataKey = key();
    // A key source that ignores the wrapped bytes: only the GCM additional data can notice the change.
    const lax = new EnvelopeSealer({ generate: async () => ({ key: dataKey, wrapped: new Uint8Array(8) }), unwrap: async () => dataKey });
    const sealed = await lax.seal('vitesse', token());
    expect(await lax.open('vitesse', sealed)).toEqual(token());
    const bad = new Uint8Array(sealed);
    bad[3]! ^= 0x01;
    await expect(lax.open('vitesse', bad)).rejects.toThrow(SealError);
  });

  it('a token sealed in the previous format (AWS Encryption SDK) does not open, though the key is right', async () => {
    const s = rawAesSealer(Buffer.from(LEGACY_SEALED.key, 'hex'));
    const err = await s.open(LEGACY_SEALED.connection, new Uint8Array(LEGACY_SEALED.sealed)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SealError);
    expect(err).not.toBeInstanceOf(SealerUnavailable); // the broker replaces it instead of answering 503
    expect(await s.open('main', await s.seal('main', LEGACY_SEALED.token))).toEqual(LEGACY_SEALED.token);
  });

  it('data keys: reused for up to maxMessages tokens and maxAgeMs, then a new one', async () => {
    let now = 0;
    const s = rawAesSealer(key(), { maxMessages: 3, maxAgeMs: 1000, now: () => now });
    const wrappedOf = async () =>
      Buffer.from(await s.seal('vitesse', token()))
        .subarray(3, 3 + 60)
        .toString('hex');
    const first = await wrappedOf();
    expect(await wrappedOf()).toBe(first);
    expect(await wrappedOf()).toBe(first);
    const second = await wrappedOf(); // the fourth message
    expect(second).not.toBe(first);
    now += 999;
    expect(await wrappedOf()).toBe(second);
    now += 1;
    expect(await wrappedOf()).not.toBe(second);
    expect(
      Buffer.from(await s.seal('other', token()))
        .subarray(3, 63)
        .toString('hex'),
    ).not.toBe(first); // one per connection
  });

  it('another key does not open it', async () => {
    const sealed = await rawAesSealer(key()).seal('vitesse', token());
    await expect(rawAesSealer(key()).open('vitesse', sealed)).rejects.toThrow();
  });

  it('refuses a key that is not 256 bits', () => {
    expect(() => rawAesSealer(new Uint8Array(16))).toThrow(/32 bytes/);
  });

  it('encodes the encryption context one way whatever the key order', () => {
    expect(encodeContext({ purpose: 'p', connection: 'c' }).equals(encodeContext({ connection: 'c', purpose: 'p' }))).toBe(true);
    expect(encodeContext({ purpose: 'p', connection: 'c' }).equals(encodeContext({ purpose: 'p', connection: 'd' }))).toBe(false);
    expect(encodeContext({ a: 'bc' }).equals(encodeContext({ ab: 'c' }))).toBe(false);
  });

  it('errors do not carry the token', async () => {
    const s = rawAesSealer(key());
    const sealed = await s.seal('vitesse', token(CANARY.accessToken));
    const err = (await s.open('other', sealed).catch((e: unknown) => e)) as Error;
    expect(`${err.message} ${String(err.stack)}`).not.toContain(CANARY.accessToken);
  });
});

describe('kmsSealer (KMS mocked with aws-sdk-client-mock)', () => {
  const KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/0d8e4a1c-7d0a-4c6e-9a57-1f2f1b2c3d4e';
  const kms = mockClient(KMSClient);
  /** Data keys the fake KMS issued: ciphertext blob (hex) -> plaintext key and the encryption context it was bound to. */
  let issued: Map<string, { key: Uint8Array; context: string }>;
  /** Like KMS: Decrypt refuses a context other than the one the data key was generated under. */
  let checkContext: boolean;
  /** Errors the fake KMS raises on the next calls, before answering. */
  let failNext: { generate: Error[]; decrypt: Error[] };
  const kmsError = (name: string, fault: 'client' | 'server') =>
    Object.assign(new Error(name), { name, $fault: fault, $metadata: { httpStatusCode: fault === 'client' ? 400 : 500 } });
  const ctx = (c: Record<string, string> | undefined) => JSON.stringify(Object.entries(c ?? {}).sort());

  beforeEach(() => {
    kms.reset();
    issued = new Map();
    checkContext = true;
    failNext = { generate: [], decrypt: [] };
    kms.on(GenerateDataKeyCommand).callsFake((input: { NumberOfBytes?: number; EncryptionContext?: Record<string, string> }) => {
      const fail = failNext.generate.shift();
      if (fail) throw fail;
      const plaintext = new Uint8Array(randomBytes(input.NumberOfBytes ?? 32));
      const blob = new Uint8Array(randomBytes(48));
      issued.set(Buffer.from(blob).toString('hex'), { key: new Uint8Array(plaintext), context: ctx(input.EncryptionContext) });
      return { KeyId: KEY_ARN, Plaintext: plaintext, CiphertextBlob: blob };
    });
    kms.on(DecryptCommand).callsFake((input: { CiphertextBlob?: Uint8Array; EncryptionContext?: Record<string, string> }) => {
      const fail = failNext.decrypt.shift();
      if (fail) throw fail;
      const found = issued.get(Buffer.from(input.CiphertextBlob!).toString('hex'));
      if (!found || (checkContext && found.context !== ctx(input.EncryptionContext)))
        throw kmsError('InvalidCiphertextException', 'client');
      return { KeyId: KEY_ARN, Plaintext: new Uint8Array(found.key) };
    });
  });

  it('round-trips through GenerateDataKey and Decrypt with the purpose and connection as encryption context', async () => {
    const sealer = kmsSealer(KEY_ARN);
    const sealed = await sealer.seal('vitesse', token());
    assertOpaque(sealed, jwtToken);

    const gdk = kms.commandCalls(GenerateDataKeyCommand);
    expect(gdk).toHaveLength(1);
    expect(gdk[0]!.args[0].input).toMatchObject({ KeyId: KEY_ARN, NumberOfBytes: 32 });
    expect(gdk[0]!.args[0].input.EncryptionContext).toEqual({ purpose: SEAL_PURPOSE, connection: 'vitesse' });
    expect(SEAL_PURPOSE).toBe('token-broker-cache');

    // A different container (fresh sealer, empty cache) must call Decrypt to open it.
    const other = kmsSealer(KEY_ARN);
    expect(await other.open('vitesse', sealed)).toEqual(token());
    const dec = kms.commandCalls(DecryptCommand);
    expect(dec).toHaveLength(1);
    expect(dec[0]!.args[0].input).toMatchObject({ KeyId: KEY_ARN, EncryptionContext: { purpose: SEAL_PURPOSE, connection: 'vitesse' } });
  });

  it('caches data keys: many seals cost one GenerateDataKey per connection, many opens at most one Decrypt', async () => {
    const sealer = kmsSealer(KEY_ARN);
    const sealed: Uint8Array[] = [];
    for (let i = 0; i < 25; i++) sealed.push(await sealer.seal('vitesse', token(`${CANARY.accessToken}-${i}`)));
    expect(kms.commandCalls(GenerateDataKeyCommand)).toHaveLength(1);

    await sealer.seal('vertex-cloud', token());
    await sealer.seal('vertex-cloud', token());
    expect(kms.commandCalls(GenerateDataKeyCommand)).toHaveLength(2); // the context differs per connection

    const reader = kmsSealer(KEY_ARN);
    for (let i = 0; i < 25; i++) expect((await reader.open('vitesse', sealed[i]!)).accessToken).toBe(`${CANARY.accessToken}-${i}`);
    expect(kms.commandCalls(DecryptCommand).length).toBeLessThanOrEqual(1);
    for (let i = 0; i < 25; i++) await sealer.open('vitesse', sealed[i]!);
    expect(kms.commandCalls(DecryptCommand).length).toBeLessThanOrEqual(2);
  });

  it('E11 with KMS: a blob copied to another connection does not open (KMS refuses the context: not transient)', async () => {
    const sealer = kmsSealer(KEY_ARN);
    const sealed = await sealer.seal('vitesse', token());
    expect(await sealer.open('vitesse', sealed)).toEqual(token());
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(0); // a container opens what it sealed without KMS
    for (const opener of [kmsSealer(KEY_ARN), sealer]) {
      const err = await opener.open('vertex-cloud', sealed).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SealError);
      expect(err).not.toBeInstanceOf(SealerUnavailable);
    }
    // The cached data key is cached for its own connection only: KMS was asked (and refused) both times.
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(2);
  });

  it('E11 even if KMS let the data key through: the context is GCM additional data too', async () => {
    checkContext = false;
    const sealed = await kmsSealer(KEY_ARN).seal('vitesse', token());
    await expect(kmsSealer(KEY_ARN).open('vertex-cloud', sealed)).rejects.toThrow(/another connection/);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1); // the data key did decrypt; the tag did not verify
  });

  it('another KMS key (a data key KMS never issued) does not open, and is not transient', async () => {
    const sealed = Buffer.from(await kmsSealer(KEY_ARN).seal('vitesse', token()));
    issued.clear();
    const err = await kmsSealer(KEY_ARN)
      .open('vitesse', new Uint8Array(sealed))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SealError);
    expect(err).not.toBeInstanceOf(SealerUnavailable);
  });

  it('a tampered wrapped data key does not open', async () => {
    const sealed = Buffer.from(await kmsSealer(KEY_ARN).seal('vitesse', token()));
    sealed[3 + 5]! ^= 0x01;
    await expect(kmsSealer(KEY_ARN).open('vitesse', new Uint8Array(sealed))).rejects.toThrow(SealError);
  });

  it('a KMS failure surfaces as an error, not as a token', async () => {
    kms.on(GenerateDataKeyCommand).rejects(Object.assign(new Error('AccessDeniedException'), { name: 'AccessDeniedException' }));
    await expect(kmsSealer(KEY_ARN).seal('vitesse', token())).rejects.toThrow();
  });

  it('a failed GenerateDataKey is not cached: the next seal asks again', async () => {
    const sealer = kmsSealer(KEY_ARN);
    failNext.generate.push(kmsError('ThrottlingException', 'client'));
    await expect(sealer.seal('vitesse', token())).rejects.toThrow(/Throttling/);
    expect(await sealer.open('vitesse', await sealer.seal('vitesse', token()))).toEqual(token());
    expect(kms.commandCalls(GenerateDataKeyCommand)).toHaveLength(2);
  });

  it('KMS throttled or failing on Decrypt: SealerUnavailable with the SDK error as cause (503, the token stays), and is not cached', async () => {
    const sealed = await kmsSealer(KEY_ARN).seal('vitesse', token());
    const reader = kmsSealer(KEY_ARN);
    for (const [name, fault] of [
      ['ThrottlingException', 'client'],
      ['KMSInternalException', 'server'],
    ] as const) {
      failNext.decrypt.push(kmsError(name, fault));
      const err = await reader.open('vitesse', sealed).catch((e: unknown) => e);
      expect(err).not.toBeInstanceOf(SealError);
      expect(err).toBeInstanceOf(SealerUnavailable);
      expect(((err as Error).cause as Error).name).toBe(name);
    }
    expect(await reader.open('vitesse', sealed)).toEqual(token());
  });

  it('a token sealed in the previous format is refused before any KMS call', async () => {
    const err = await kmsSealer(KEY_ARN)
      .open(LEGACY_SEALED.connection, new Uint8Array(LEGACY_SEALED.sealed))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SealError);
    expect(err).not.toBeInstanceOf(SealerUnavailable);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(0);
  });

  it('another format version is refused before any KMS call', async () => {
    const sealed = await kmsSealer(KEY_ARN).seal('vitesse', token());
    sealed[0] = SEAL_FORMAT_VERSION + 1;
    await expect(kmsSealer(KEY_ARN).open('vitesse', sealed)).rejects.toThrow(SealError);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(0);
  });

  it('concurrent seals and opens share one KMS request', async () => {
    const sealer = kmsSealer(KEY_ARN);
    const sealed = await Promise.all(Array.from({ length: 10 }, () => sealer.seal('vitesse', token())));
    expect(kms.commandCalls(GenerateDataKeyCommand)).toHaveLength(1);
    const reader = kmsSealer(KEY_ARN);
    await Promise.all(sealed.map((s) => reader.open('vitesse', s)));
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
  });

  it('the cache of decrypted data keys is bounded (oldest out) and entries expire after maxAgeMs', async () => {
    const sealed = [];
    for (const c of ['a', 'b', 'c']) sealed.push({ c, blob: await kmsSealer(KEY_ARN).seal(c, token()) });
    let now = 0;
    const reader = kmsSealer(KEY_ARN, { cacheEntries: 2, maxAgeMs: 1000, now: () => now });
    const decrypts = () => kms.commandCalls(DecryptCommand).length;
    for (const { c, blob } of sealed) await reader.open(c, blob);
    expect(decrypts()).toBe(3);
    await reader.open('c', sealed[2]!.blob);
    await reader.open('b', sealed[1]!.blob);
    expect(decrypts()).toBe(3);
    await reader.open('a', sealed[0]!.blob); // evicted by c
    expect(decrypts()).toBe(4);
    now += 1000;
    await reader.open('a', sealed[0]!.blob);
    expect(decrypts()).toBe(5);
  });

  it("asks KMS in the key ARN's region", async () => {
    await kmsSealer('arn:aws:kms:eu-west-3:111122223333:key/0d8e4a1c-7d0a-4c6e-9a57-1f2f1b2c3d4e').seal('vitesse', token());
    const [call] = kms.commandCalls(GenerateDataKeyCommand);
    expect(await (call!.thisValue as KMSClient).config.region()).toBe('eu-west-3');
  });

  it('EnvelopeSealer.context names the purpose and the connection', () => {
    expect(EnvelopeSealer.context('x')).toEqual({ purpose: 'token-broker-cache', connection: 'x' });
  });
});
