import { randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { EnvelopeSealer, kmsSealer, rawAesSealer, SEAL_PURPOSE } from '../../functions/adapters/sealer.js';
import { fingerprint } from '../../functions/core/fingerprint.js';
import type { Token } from '../../functions/core/ports.js';
import { CANARY, jwt } from '../unit/fakes.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const jwtToken = jwt({ exp: Math.floor(T0 / 1000) + 1200, sub: CANARY.accessToken });
const token = (accessToken = jwtToken): Token => ({ accessToken, tokenType: 'Bearer', scope: 'API', expiresAt: T0 + 1_200_000, issuedAt: T0, fp: fingerprint(accessToken) });

const key = () => new Uint8Array(randomBytes(32));

/** Every representation of the token that must not appear in a sealed blob. */
function forms(t: string): string[] {
  const b64 = Buffer.from(t).toString('base64');
  const b64url = Buffer.from(t).toString('base64url');
  return [t, b64, b64url, b64.slice(4, -4), b64url.slice(4, -4), Buffer.from(t).toString('hex')];
}

function assertOpaque(sealed: Uint8Array, t: string) {
  const bytes = Buffer.from(sealed);
  const views = [bytes.toString('latin1'), bytes.toString('utf8'), bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex')];
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

  it('an edited encryption context (connection rewritten in the header) does not open', async () => {
    const s = rawAesSealer(key());
    const sealed = Buffer.from(await s.seal('conn-a', token()));
    const at = sealed.indexOf('conn-a');
    expect(at).toBeGreaterThan(0);
    sealed.write('conn-b', at, 'latin1');
    await expect(s.open('conn-b', new Uint8Array(sealed))).rejects.toThrow();
  });

  it('another key does not open it', async () => {
    const sealed = await rawAesSealer(key()).seal('vitesse', token());
    await expect(rawAesSealer(key()).open('vitesse', sealed)).rejects.toThrow();
  });

  it('refuses a key that is not 256 bits', () => {
    expect(() => rawAesSealer(new Uint8Array(16))).toThrow(/32 bytes/);
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
  /** Data keys the fake KMS issued: ciphertext blob (hex) -> plaintext key. */
  let issued: Map<string, Uint8Array>;

  beforeEach(() => {
    kms.reset();
    issued = new Map();
    kms.on(GenerateDataKeyCommand).callsFake((input: { NumberOfBytes?: number }) => {
      const plaintext = new Uint8Array(randomBytes(input.NumberOfBytes ?? 32));
      const blob = new Uint8Array(randomBytes(48));
      issued.set(Buffer.from(blob).toString('hex'), new Uint8Array(plaintext));
      // A fresh copy each time: the ESDK zeroes the Plaintext buffer it is given.
      return { KeyId: KEY_ARN, Plaintext: plaintext, CiphertextBlob: blob };
    });
    kms.on(DecryptCommand).callsFake((input: { CiphertextBlob?: Uint8Array }) => {
      const plaintext = issued.get(Buffer.from(input.CiphertextBlob!).toString('hex'));
      if (!plaintext) throw Object.assign(new Error('InvalidCiphertextException'), { name: 'InvalidCiphertextException' });
      return { KeyId: KEY_ARN, Plaintext: new Uint8Array(plaintext) };
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

  it('E11 with KMS: a blob copied to another connection does not open', async () => {
    const sealer = kmsSealer(KEY_ARN);
    const sealed = await sealer.seal('vitesse', token());
    await expect(kmsSealer(KEY_ARN).open('vertex-cloud', sealed)).rejects.toThrow();
  });

  it('a KMS failure surfaces as an error, not as a token', async () => {
    kms.on(GenerateDataKeyCommand).rejects(Object.assign(new Error('AccessDeniedException'), { name: 'AccessDeniedException' }));
    await expect(kmsSealer(KEY_ARN).seal('vitesse', token())).rejects.toThrow();
  });

  it('EnvelopeSealer.context names the purpose and the connection', () => {
    expect(EnvelopeSealer.context('x')).toEqual({ purpose: 'token-broker-cache', connection: 'x' });
  });
});
