/**
 * The sealer classifies KMS failures (core/ports.ts typed errors): an outage that may clear is a
 * SealerUnavailable with the KMS error kept as its cause; a blob that does not open, or a refusal, is not.
 */
import { randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient, KMSServiceException } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { kmsSealer } from '../../functions/adapters/sealer.js';
import { SealerUnavailable, type Token } from '../../functions/core/ports.js';

const KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/0d8e4a1c-7d0a-4c6e-9a57-1f2f1b2c3d4e';
const token: Token = { accessToken: 'opaque', tokenType: 'Bearer', expiresAt: 2_000, issuedAt: 1_000, fp: 'fp' };
const throttled = () =>
  new KMSServiceException({ name: 'ThrottlingException', $fault: 'client', message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } });
const denied = () =>
  new KMSServiceException({
    name: 'AccessDeniedException',
    $fault: 'client',
    message: 'not authorized',
    $metadata: { httpStatusCode: 400 },
  });

describe('kmsSealer failure types', () => {
  const kms = mockClient(KMSClient);
  beforeEach(() => {
    kms.reset();
    kms
      .on(GenerateDataKeyCommand)
      .callsFake(() => ({ KeyId: KEY_ARN, Plaintext: new Uint8Array(randomBytes(32)), CiphertextBlob: new Uint8Array(randomBytes(48)) }));
  });

  it('a throttled GenerateDataKey is SealerUnavailable, with the KMS error as its cause', async () => {
    const err = throttled();
    kms.on(GenerateDataKeyCommand).rejects(err);
    const e = await kmsSealer(KEY_ARN)
      .seal('c', token)
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SealerUnavailable);
    expect((e as Error).cause).toBe(err);
  });

  it('a throttled or unreachable Decrypt is SealerUnavailable', async () => {
    const sealed = await kmsSealer(KEY_ARN).seal('c', token);
    kms.on(DecryptCommand).rejects(throttled());
    await expect(kmsSealer(KEY_ARN).open('c', sealed)).rejects.toBeInstanceOf(SealerUnavailable);
    kms.on(DecryptCommand).rejects(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:443'), { code: 'ECONNREFUSED' }));
    await expect(kmsSealer(KEY_ARN).open('c', sealed)).rejects.toBeInstanceOf(SealerUnavailable);
  });

  it('a refusal, or a blob that does not open, is not an outage', async () => {
    const sealed = await kmsSealer(KEY_ARN).seal('c', token);
    kms.on(DecryptCommand).rejects(denied());
    const refused = await kmsSealer(KEY_ARN)
      .open('c', sealed)
      .catch((x: unknown) => x);
    expect(refused).toBeInstanceOf(Error);
    expect(refused).not.toBeInstanceOf(SealerUnavailable);
    const tampered = new Uint8Array(sealed);
    tampered[tampered.length - 1]! ^= 1;
    const bad = await kmsSealer(KEY_ARN)
      .open('c', tampered)
      .catch((x: unknown) => x);
    expect(bad).not.toBeInstanceOf(SealerUnavailable);
    const other = await kmsSealer(KEY_ARN)
      .open('other', sealed)
      .catch((x: unknown) => x);
    expect(other).not.toBeInstanceOf(SealerUnavailable);
  });
});
