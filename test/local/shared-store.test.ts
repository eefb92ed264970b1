/**
 * Two local broker processes sharing one DynamoDB endpoint (dynalite in this test process), configured
 * from a file, against a fake upstream that logs every request: the ground truth for counting.
 * Requests are signed with aws4, never with the gateway's own code.
 */
import aws4 from 'aws4';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedDynamo, startDynalite } from '../../functions/local/dynamodb.js';
import { clientIdOf, type FakeIdp, type Receipt, startIdp } from '../../testkit/idp.js';
import { call, logRecords, type RunningBroker, type Signing, startBroker } from './helpers.js';

const PAY: Signing = { accessKeyId: 'AKIDLOCALPAY', secretAccessKey: 'local-pay-caller-secret' };
const OTHER: Signing = { accessKeyId: 'AKIDLOCALOTHER', secretAccessKey: 'local-other-caller-secret' };
const ROT_V1 = 'rot:secret+1 é';
const ROT_V2 = 'rot:secret+2 é';

/** What the fake upstream accepts: client_id -> the one client_secret it takes right now. */
const accepted = new Map<string, string>([
  ['pay-client', 'pay-secret'],
  ['storm-client', 'storm-secret'],
  ['rot-client', ROT_V1],
  ['vc-client', 'vc-secret'],
]);
let issued = 0;

function secretOf(r: Receipt): string | undefined {
  if (r.authorization?.startsWith('Basic ')) {
    const decoded = Buffer.from(r.authorization.slice(6), 'base64').toString('utf8');
    const form = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
    return form(decoded.slice(decoded.indexOf(':') + 1));
  }
  return r.params.get('client_secret') ?? undefined;
}

const dir = mkdtempSync(join(tmpdir(), 'tb-local-shared-'));
const configPath = join(dir, 'local-config.json');
let idp: FakeIdp;
let dynamo: EmbeddedDynamo;
let b1: RunningBroker;
let b2: RunningBroker;

function writeConfig(rotSecret: string): void {
  const callers = ['arn:aws:iam::111122223333:role/payments-*'];
  const doc = {
    connections: {
      pay: { tokenUrl: idp.url, grantType: 'client_credentials', scope: 'API', secret: 'local/pay', callers },
      storm: {
        tokenUrl: idp.url,
        grantType: 'client_credentials',
        secret: 'local/storm',
        callers,
        rateLimit: { max: 10, windowSeconds: 28800 },
      },
      rot: {
        tokenUrl: idp.url,
        grantType: 'client_credentials',
        clientAuthentication: 'client_secret_basic',
        secret: 'local/rot',
        callers,
      },
      vc: { tokenUrl: idp.url, grantType: 'password', scope: 'vtms-public-api openid profile', secret: 'local/vc', callers },
    },
    secrets: {
      'local/pay': { client_id: 'pay-client', client_secret: 'pay-secret' },
      'local/storm': { client_id: 'storm-client', client_secret: 'storm-secret' },
      'local/rot': { client_id: 'rot-client', client_secret: rotSecret },
      'local/vc': { client_id: 'vc-client', client_secret: 'vc-secret', username: 'api-key', password: 'api-password' },
    },
    callers: {
      [PAY.accessKeyId]: { secretAccessKey: PAY.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/payments-api' },
      [OTHER.accessKeyId]: { secretAccessKey: OTHER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/marketing' },
    },
  };
  // Replace the file in one step, as an editor saving it would.
  writeFileSync(`${configPath}.tmp`, JSON.stringify(doc, null, 2));
  renameSync(`${configPath}.tmp`, configPath);
}

beforeAll(async () => {
  idp = await startIdp((receipt) => {
    const id = clientIdOf(receipt) ?? '';
    if (accepted.get(id) !== secretOf(receipt)) return { status: 401, body: { error: 'invalid_client' } };
    return {
      delayMs: 200,
      body: {
        access_token: `tok-${id}-${++issued}`,
        token_type: 'Bearer',
        expires_in: 3600,
        ...(receipt.params.get('scope') ? { scope: receipt.params.get('scope') } : {}),
      },
    };
  });
  dynamo = await startDynalite();
  writeConfig(ROT_V1);
  const args = ['--config', configPath, '--port', '0', '--dynamodb-endpoint', dynamo.endpoint, '--table', 'shared-test'];
  [b1, b2] = await Promise.all([startBroker(args), startBroker(args)]);
});

afterAll(async () => {
  const codes = await Promise.all([b1?.stop(), b2?.stop()]);
  await Promise.all([idp?.close(), dynamo?.close()]);
  rmSync(dir, { recursive: true, force: true });
  expect(codes).toEqual([0, 0]);
});

const receiptsFor = (clientId: string) => idp.receipts.filter((r) => clientIdOf(r) === clientId);

describe('local mode with a config file and a shared DynamoDB endpoint', () => {
  it('serves a config-file connection and shares the token with the other process', async () => {
    const r = await call(b1.url, { path: '/tokens/pay?min_ttl=60', sign: PAY });
    expect(r.status).toBe(200);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.json).toMatchObject({
      access_token: expect.stringMatching(/^tok-pay-client-\d+$/),
      token_type: 'Bearer',
      scope: 'API',
      connection: 'pay',
    });
    expect(r.json?.expires_in).toBeGreaterThan(3590);
    expect(r.json?.expires_in).toBeLessThanOrEqual(3600);
    const [receipt] = receiptsFor('pay-client');
    expect(receipt?.params.get('grant_type')).toBe('client_credentials');
    expect(receipt?.params.get('scope')).toBe('API');
    expect(receipt?.params.get('client_secret')).toBe('pay-secret');

    const other = await call(b2.url, { path: '/tokens/pay', sign: PAY });
    expect(other.status).toBe(200);
    expect(other.json?.access_token).toBe(r.json?.access_token);
    expect(receiptsFor('pay-client')).toHaveLength(1);
  });

  it('sends the password grant with username, password and a scope with spaces', async () => {
    const r = await call(b2.url, { path: '/tokens/vc', sign: PAY });
    expect(r.status).toBe(200);
    expect(r.json?.scope).toBe('vtms-public-api openid profile');
    const [receipt] = receiptsFor('vc-client');
    expect(Object.fromEntries(receipt!.params)).toMatchObject({
      grant_type: 'password',
      username: 'api-key',
      password: 'api-password',
      scope: 'vtms-public-api openid profile',
    });
  });

  it('turns a concurrent storm across both processes into exactly one upstream request', async () => {
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => call(i % 2 ? b1.url : b2.url, { path: '/tokens/storm?min_ttl=60', sign: PAY })),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(40).fill(200));
    expect(new Set(replies.map((r) => r.json?.access_token)).size).toBe(1);
    expect(receiptsFor('storm-client')).toHaveLength(1);
  });

  it('answers 403 forbidden for every request API Gateway would refuse, and never calls upstream', async () => {
    const before = idp.receipts.length;
    const stale = new Date(Date.now() - 20 * 60_000);
    const cases = {
      unsigned: await call(b1.url, { path: '/tokens/pay' }),
      wrongSecret: await call(b1.url, { path: '/tokens/pay', sign: { ...PAY, secretAccessKey: 'not-the-secret' } }),
      unknownKey: await call(b1.url, {
        path: '/tokens/pay',
        sign: { accessKeyId: 'AKIDLOCALNOBODY', secretAccessKey: PAY.secretAccessKey },
      }),
      alteredPath: await call(b1.url, { path: '/tokens/pay', sign: PAY, tamper: (req) => void (req.path = '/tokens/storm') }),
      alteredQuery: await call(b1.url, {
        path: '/tokens/pay?min_ttl=60',
        sign: PAY,
        tamper: (req) => void (req.path = '/tokens/pay?min_ttl=61'),
      }),
      staleDate: await call(b1.url, { path: '/tokens/pay', sign: { ...PAY, date: stale } }),
      wrongRegion: await call(b1.url, { path: '/tokens/pay', sign: { ...PAY, region: 'eu-west-1' } }),
      wrongService: await call(b1.url, { path: '/tokens/pay', sign: { ...PAY, service: 'lambda' } }),
    };
    for (const [name, r] of Object.entries(cases)) {
      expect(r.status, name).toBe(403);
      expect(r.json?.error, name).toBe('forbidden');
      expect(typeof r.json?.message, name).toBe('string');
      expect(r.text, name).not.toContain('access_token');
    }
    expect(cases.unsigned.json?.message).toBe('Missing Authentication Token');
    expect(cases.unknownKey.json?.message).toBe('The security token included in the request is invalid');
    expect(cases.staleDate.json?.message).toMatch(/^Signature expired/);
    expect(cases.wrongRegion.json?.message).toMatch(/eu-west-1/);

    // The refusal never reveals the signature the server expected.
    const right = aws4.sign({ host: new URL(b1.url).host, path: '/tokens/pay', service: 'execute-api', region: 'us-east-1' }, PAY);
    const expected = /Signature=(\w+)/.exec(String(right.headers?.Authorization))![1]!;
    expect(cases.wrongSecret.text).not.toContain(expected);

    // A good signature from a caller not in the connection's callers: 403 from the broker itself.
    const notAllowed = await call(b1.url, { path: '/tokens/pay', sign: OTHER });
    expect(notAllowed.status).toBe(403);
    expect(notAllowed.json?.error).toBe('forbidden');
    expect(idp.receipts.length).toBe(before);
  });

  it('answers the contract errors of the real handler: 404 unknown connection, 400 bad min_ttl, 413 big body', async () => {
    const unknown = await call(b1.url, { path: '/tokens/nope', sign: PAY });
    expect(unknown.status).toBe(404);
    expect(unknown.json?.error).toBe('not_found');
    const badTtl = await call(b1.url, { path: '/tokens/pay?min_ttl=abc', sign: PAY });
    expect(badTtl.status).toBe(400);
    expect(badTtl.json?.error).toBe('invalid_request');
    const big = await call(b1.url, {
      method: 'POST',
      path: '/tokens/pay/invalidate',
      body: JSON.stringify({ access_token: 'x'.repeat(9000) }),
      sign: PAY,
    });
    expect(big.status).toBe(413);
  });

  it('picks up a secret rotated by editing the file: invalidate, edit, next refresh uses the new secret', async () => {
    const first = await call(b1.url, { path: '/tokens/rot', sign: PAY });
    expect(first.status).toBe(200);
    const t1 = String(first.json?.access_token);
    expect(secretOf(receiptsFor('rot-client').at(-1)!)).toBe(ROT_V1);

    // Ops rotate: the upstream now takes only the new secret, and the file holds it.
    accepted.set('rot-client', ROT_V2);
    writeConfig(ROT_V2);
    const inv = await call(b1.url, {
      method: 'POST',
      path: '/tokens/rot/invalidate',
      body: JSON.stringify({ access_token: t1 }),
      sign: PAY,
    });
    expect(inv.status).toBe(200);
    expect(inv.json).toEqual({ invalidated: true });

    const second = await call(b1.url, { path: '/tokens/rot', sign: PAY });
    expect(second.status).toBe(200);
    const t2 = String(second.json?.access_token);
    expect(t2).toMatch(/^tok-rot-client-\d+$/);
    expect(t2).not.toBe(t1);
    const rot = receiptsFor('rot-client');
    // If the cached secret is still fresh (read < 5 s ago) it is tried once, refused, the file re-read and
    // the new one used; on a slow runner the cache has expired and the new one is used at once.
    expect(rot.map(secretOf).slice(1)).toEqual(rot.length === 3 ? [ROT_V1, ROT_V2] : [ROT_V2]);

    // The other process, which never served this connection, finds the new token in the shared store.
    const elsewhere = await call(b2.url, { path: '/tokens/rot', sign: PAY });
    expect(elsewhere.json?.access_token).toBe(t2);
    expect(receiptsFor('rot-client')).toHaveLength(rot.length);
  });

  it('never logs a token or a secret, and keeps stderr clean', () => {
    const served = idp.receipts.length;
    expect(served).toBeGreaterThan(0);
    const out = [...b1.stdout, ...b2.stdout].join('\n');
    for (const secret of ['pay-secret', 'storm-secret', 'vc-secret', 'api-password', ROT_V1, ROT_V2, PAY.secretAccessKey])
      expect(out).not.toContain(secret);
    expect(out).not.toMatch(/tok-[a-z]+-client-\d+/);
    expect(logRecords(b1.stdout).filter((r) => r.message === 'request').length).toBeGreaterThan(10);
    expect(b1.stderr()).toBe('');
    expect(b2.stderr()).toBe('');
  });
});
