/**
 * The Lambda's composition: built once from the environment, config read from the bundled file, and the
 * refresh-only clients (undici upstream, Secrets Manager) loaded on first use.
 */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildAwsHandler, lazySecrets, lazyUpstream } from '../../functions/broker/compose.js';
import { ConfigError, parseConfig } from '../../functions/core/config.js';
import { apiEvent } from '../../functions/local/api-event.js';
import { ALLOWED } from '../support/env.js';
import { type FakeIdp, issue, startIdp } from '../../testkit/idp.js';

let idp: FakeIdp;
let dir: string;
beforeAll(async () => {
  idp = await startIdp(issue(600));
  dir = mkdtempSync(join(tmpdir(), 'broker-compose-'));
});
afterAll(async () => idp.close());

const env = (file: string) => ({
  BROKER_CONFIG_FILE: file,
  BROKER_TABLE: 'broker',
  BROKER_SEAL_KEY_ARN: 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000',
  AWS_REGION: 'us-east-1',
});

describe('buildAwsHandler', () => {
  it('reads the bundled config relative to LAMBDA_TASK_ROOT and serves the contract (deny by default)', async () => {
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({
        connections: {
          vitesse: {
            tokenUrl: 'https://staging-identity.vitessepsp.com/connect/token',
            grantType: 'client_credentials',
            secret: 's',
            callers: ALLOWED,
          },
        },
      }),
    );
    const handler = await buildAwsHandler({ ...env('config.json'), LAMBDA_TASK_ROOT: dir });
    const userArn = 'arn:aws:sts::111122223333:assumed-role/tax-engine/s';
    // The request log lines (JSON, on stdout) are captured, not printed.
    const out: string[] = [];
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => out.push(String(chunk)) > 0);
    try {
      const res = await handler(apiEvent('GET', '/tokens/vitesse', { userArn }));
      expect(res.statusCode).toBe(403);
      const unknown = await handler(apiEvent('GET', '/tokens/nope', { userArn }));
      expect(unknown.statusCode).toBe(404);
    } finally {
      stdout.mockRestore();
    }
    const lines = out
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.message, l.status, l.error])).toEqual([
      ['request', 403, 'forbidden'],
      ['request', 404, 'not_found'],
    ]);
  });

  it('fails at start, naming the connection and field, for a bad config or a missing variable', async () => {
    writeFileSync(
      join(dir, 'bad.json'),
      JSON.stringify({ connections: { vitesse: { tokenUrl: 'ftp://x', grantType: 'client_credentials', secret: 's', callers: ALLOWED } } }),
    );
    await expect(buildAwsHandler(env(join(dir, 'bad.json')))).rejects.toThrow(/connections\.vitesse\.tokenUrl/);
    await expect(buildAwsHandler({ ...env(join(dir, 'config.json')), BROKER_TABLE: '' })).rejects.toThrow(ConfigError);
    await expect(buildAwsHandler({ ...env(join(dir, 'config.json')), BROKER_MEMORY_MAX_AGE_MS: '9000' })).rejects.toThrow(/at most|5000/);
  });
});

describe('refresh-only clients load on first use', () => {
  it('the lazy upstream fetches a token from a real endpoint', async () => {
    const c = parseConfig({
      connections: { x: { tokenUrl: idp.url, grantType: 'client_credentials', secret: 's', callers: ALLOWED } },
    }).connections.get('x')!;
    const t = await lazyUpstream().requestToken(c, { client_id: 'id', client_secret: 'secret' }, AbortSignal.timeout(2_000));
    expect(t).toMatchObject({ tokenType: 'Bearer', expiresInSeconds: 600 });
    expect(idp.count('id')).toBe(1);
  });

  it('the lazy Secrets Manager source reads AWSCURRENT once and caches it', async () => {
    const sm = mockClient(SecretsManagerClient);
    sm.on(GetSecretValueCommand).resolves({ SecretString: '{"client_id":"a","client_secret":"b"}', VersionId: 'v1' });
    const secrets = lazySecrets();
    expect(await secrets.get('token-broker/dev/x')).toEqual({ credentials: { client_id: 'a', client_secret: 'b' }, version: 'v1' });
    await secrets.get('token-broker/dev/x');
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    expect(sm.commandCalls(GetSecretValueCommand)[0]!.args[0].input).toEqual({ SecretId: 'token-broker/dev/x' });
    sm.restore();
  });
});
