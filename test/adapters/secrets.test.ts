import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
  SecretsManagerServiceException,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CachedSecretSource, parseCredentials } from '../../functions/adapters/credentials.js';
import { secretsManagerSource } from '../../functions/adapters/secrets-manager.js';
import { BrokerError } from '../../functions/core/errors.js';
import { CANARY } from '../unit/fakes.js';
import { brokerError, FakeClock } from '../support/clock.js';

const NAME = 'token-broker/dev/vitesse';
const TTL = 5 * 60_000;
const GRACE = 60 * 60_000;
const v1 = JSON.stringify({ client_id: CANARY.clientId, client_secret: CANARY.clientSecret });
const v2 = JSON.stringify({ client_id: CANARY.clientId, client_secret: 'CANARY-rotated-secret' });

const sm = mockClient(SecretsManagerClient);

function throttling(): Error {
  return new SecretsManagerServiceException({
    name: 'ThrottlingException',
    $fault: 'client',
    message: 'Rate exceeded',
    $metadata: { httpStatusCode: 400 },
  });
}

function setup() {
  const clock = new FakeClock();
  const client = new SecretsManagerClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
  const source = secretsManagerSource(client, clock, { ttlMs: TTL, graceMs: GRACE });
  return { clock, source };
}

function assertNoSecretMaterial(e: BrokerError) {
  const text = `${e.message} ${e.extra.detail ?? ''} ${JSON.stringify(e)}`;
  for (const canary of [CANARY.clientSecret, CANARY.clientId, CANARY.password, 'CANARY']) expect(text).not.toContain(canary);
}

const calls = () => sm.commandCalls(GetSecretValueCommand);

beforeEach(() => sm.reset());
afterEach(() => {
  // D5: only AWSCURRENT is ever read (no VersionStage or VersionId sent), whatever the test did.
  for (const c of calls()) {
    expect(c.args[0].input).not.toHaveProperty('VersionStage');
    expect(c.args[0].input).not.toHaveProperty('VersionId');
    expect(c.args[0].input.SecretId).toMatch(/^token-broker\//);
  }
});

describe('secretsManagerSource', () => {
  it('D1: one GetSecretValue within the TTL, a re-fetch after it', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: v1, VersionId: 'ver-1' });
    const { clock, source } = setup();
    const first = await source.get(NAME);
    expect(first).toEqual({ credentials: { client_id: CANARY.clientId, client_secret: CANARY.clientSecret }, version: 'ver-1' });
    for (let i = 0; i < 20; i++) {
      clock.advance(10_000);
      expect(await source.get(NAME)).toEqual(first);
    }
    clock.advance(TTL - 1 - 200_000);
    expect(await source.get(NAME)).toEqual(first);
    expect(calls()).toHaveLength(1);
    clock.advance(1); // now exactly TTL after the fetch
    await source.get(NAME);
    expect(calls()).toHaveLength(2);
  });

  it('forceRefresh re-reads within the TTL', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce({ SecretString: v1, VersionId: 'ver-1' }).resolves({ SecretString: v2, VersionId: 'ver-2' });
    const { source } = setup();
    expect((await source.get(NAME)).version).toBe('ver-1');
    expect((await source.get(NAME)).version).toBe('ver-1');
    expect(calls()).toHaveLength(1);
    const again = await source.get(NAME, { forceRefresh: true });
    expect(calls()).toHaveLength(2);
    // D2: the rotated value and its new VersionId come back, and are cached from then on.
    expect(again).toEqual({ credentials: { client_id: CANARY.clientId, client_secret: 'CANARY-rotated-secret' }, version: 'ver-2' });
    expect(await source.get(NAME)).toEqual(again);
    expect(calls()).toHaveLength(2);
  });

  it('D2: an unrotated secret keeps its VersionId on a forced re-read (the core retries only on a change)', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: v1, VersionId: 'ver-1' });
    const { source } = setup();
    const a = await source.get(NAME);
    const b = await source.get(NAME, { forceRefresh: true });
    expect(b.version).toBe(a.version);
  });

  it('caches each secret separately', async () => {
    const other = 'token-broker/dev/vertex-oseries';
    sm.on(GetSecretValueCommand, { SecretId: NAME }).resolves({ SecretString: v1, VersionId: 'ver-1' });
    sm.on(GetSecretValueCommand, { SecretId: other }).resolves({ SecretString: v2, VersionId: 'ver-9' });
    const { source } = setup();
    expect((await source.get(NAME)).version).toBe('ver-1');
    expect((await source.get(other)).version).toBe('ver-9');
    expect((await source.get(NAME)).credentials.client_secret).toBe(CANARY.clientSecret);
    expect((await source.get(other)).credentials.client_secret).toBe('CANARY-rotated-secret');
    expect(calls().map((c) => c.args[0].input.SecretId)).toEqual([NAME, other]);
  });

  it('D3: throttled with a cached secret, serves it stale within the grace period', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce({ SecretString: v1, VersionId: 'ver-1' }).rejects(throttling());
    const { clock, source } = setup();
    const first = await source.get(NAME);
    clock.advance(TTL + GRACE - 1);
    expect(await source.get(NAME)).toEqual(first);
    expect(await source.get(NAME, { forceRefresh: true })).toEqual(first);
    expect(calls().length).toBeGreaterThanOrEqual(2);
  });

  it('D3: beyond the grace period, answers unavailable with Retry-After', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce({ SecretString: v1, VersionId: 'ver-1' }).rejects(throttling());
    const { clock, source } = setup();
    await source.get(NAME);
    clock.advance(TTL + GRACE);
    const err = await brokerError(source.get(NAME));
    expect(err.code).toBe('unavailable');
    expect(err.status).toBe(503);
    expect(err.extra.retryAfterSeconds).toBeGreaterThan(0);
    assertNoSecretMaterial(err);
  });

  it('D3: no cached secret and Secrets Manager failing: unavailable', async () => {
    sm.on(GetSecretValueCommand).rejects(Object.assign(new Error('socket hang up'), { name: 'InternalServiceError' }));
    const { source } = setup();
    expect((await brokerError(source.get(NAME))).code).toBe('unavailable');
  });

  it('recovers once Secrets Manager answers again, and restarts the TTL', async () => {
    sm.on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: v1, VersionId: 'ver-1' })
      .rejectsOnce(throttling())
      .resolves({ SecretString: v2, VersionId: 'ver-2' });
    const { clock, source } = setup();
    await source.get(NAME);
    clock.advance(TTL);
    expect((await source.get(NAME)).version).toBe('ver-1'); // stale
    // A failing store is not asked again on every request: the stale value serves for 30 s.
    const asked = calls().length;
    expect((await source.get(NAME)).version).toBe('ver-1');
    expect(calls()).toHaveLength(asked);
    clock.advance(30_000);
    expect((await source.get(NAME)).version).toBe('ver-2'); // fresh again
    const n = calls().length;
    clock.advance(TTL - 1);
    await source.get(NAME);
    expect(calls()).toHaveLength(n);
  });

  it.each([
    ['malformed JSON', `{"client_id":"${CANARY.clientId}","client_secret":"${CANARY.clientSecret}"`, /is not JSON/],
    ['missing client_id', JSON.stringify({ client_secret: CANARY.clientSecret, password: CANARY.password }), /client_id/],
    ['missing client_secret', JSON.stringify({ client_id: CANARY.clientId }), /client_secret/],
    ['empty client_secret', JSON.stringify({ client_id: CANARY.clientId, client_secret: '' }), /client_secret/],
    ['client_secret not a string', JSON.stringify({ client_id: CANARY.clientId, client_secret: 12345 }), /client_secret/],
    ['not an object', JSON.stringify(CANARY.clientSecret), /\(root\)/],
  ])(
    'D4: %s fails closed; the log detail names the secret and fields, the caller sees neither, nobody a value',
    async (_label, secretString, fields) => {
      sm.on(GetSecretValueCommand).resolves({ SecretString: secretString, VersionId: 'ver-1' });
      const { source } = setup();
      const err = await brokerError(source.get(NAME));
      expect(err.code).toBe('internal');
      expect(err.extra.detail).toContain(NAME);
      expect(err.extra.detail).toMatch(fields);
      expect(err.message).not.toContain(NAME);
      assertNoSecretMaterial(err);
    },
  );

  it('D4: a malformed rotation is not served over the last good value', async () => {
    sm.on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: v1, VersionId: 'ver-1' })
      .resolves({ SecretString: '{oops', VersionId: 'ver-2' });
    const { source } = setup();
    await source.get(NAME);
    const err = await brokerError(source.get(NAME, { forceRefresh: true }));
    expect(err.code).toBe('internal');
    assertNoSecretMaterial(err);
  });

  it('a binary-only secret is reported as misconfigured', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretBinary: new Uint8Array([1, 2, 3]), VersionId: 'ver-1' });
    const { source } = setup();
    const err = await brokerError(source.get(NAME));
    expect(err.code).toBe('internal');
    expect(err.extra.detail).toContain(NAME);
  });

  it('a missing secret is a configuration error naming the secret, not an outage to retry', async () => {
    sm.on(GetSecretValueCommand).rejects(new ResourceNotFoundException({ message: 'not found', $metadata: {} }));
    const { source } = setup();
    const err = await brokerError(source.get(NAME));
    expect(err.code).toBe('internal');
    expect(err.extra.detail).toContain(NAME);
    expect(err.extra.detail).toContain('ResourceNotFoundException');
    expect(err.message).not.toContain(NAME);
  });
});

describe('parseCredentials', () => {
  it('accepts the password-grant fields', () => {
    expect(parseCredentials(NAME, { ...JSON.parse(v1), username: CANARY.username, password: CANARY.password })).toEqual({
      client_id: CANARY.clientId,
      client_secret: CANARY.clientSecret,
      username: CANARY.username,
      password: CANARY.password,
    });
  });

  it('strips unknown fields so nothing unexpected travels with the credentials', () => {
    expect(parseCredentials(NAME, { ...JSON.parse(v1), note: 'x' })).not.toHaveProperty('note');
  });
});

describe('CachedSecretSource over a raw fetch', () => {
  it('passes BrokerErrors from the fetch through instead of serving stale', async () => {
    const clock = new FakeClock();
    let n = 0;
    const source = new CachedSecretSource(
      async () => {
        if (n++ === 0) return { value: v1, version: 'a' };
        throw new BrokerError('internal', 'misconfigured');
      },
      clock,
      { ttlMs: 1000, graceMs: 100_000 },
    );
    await source.get('s');
    clock.advance(1000);
    await expect(source.get('s')).rejects.toMatchObject({ code: 'internal' });
  });
});
