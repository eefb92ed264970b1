/**
 * openapi.yaml against the running local broker (`npm start`, spawned): every documented response of both
 * operations that the local broker can be made to give is requested for real (aws4-signed) and checked
 * against the document (status documented, required headers present and valid, body valid against its
 * schema with `additionalProperties: false`). So a change of shape on either side fails here.
 */
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, startBroker, type Call, type RunningBroker, type Signing } from '../local/helpers.js';
import { listen, type LocalServer } from '../client/support.js';
import { loadContract, type Contract, type Observed } from './contract.js';

const CALLER: Signing = { accessKeyId: 'AKIDCONTRACTTEST', secretAccessKey: 'contract-test-secret' };
const OUTSIDER: Signing = { accessKeyId: 'AKIDCONTRACTOUT', secretAccessKey: 'contract-outsider-secret' };
const LIFETIME = 600;

/** Documented responses the local broker cannot be made to give on purpose, and why. */
const NOT_EXERCISED = new Map([
  ['invalidateToken 500', 'a bug: the invalidate route reads no secret, so no configuration makes it answer 500'],
  [
    'invalidateToken 503',
    'needs DynamoDB to fail under a running broker; the 503 itself is tested in process (test/integration/budget-guard.test.ts, defect 3)',
  ],
]);

let contract: Contract;
let broker: RunningBroker | undefined;
let oauth: LocalServer;
let dir = '';
let configFile = '';
let serial = 0;
const observed: Array<Observed & { label: string }> = [];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Sends a request to the broker (signed as CALLER unless `c.sign` says otherwise), records it, returns what came back. */
async function send(label: string, c: Call, unsigned = false): Promise<Observed> {
  const r = await call(broker!.url, unsigned ? c : { sign: CALLER, ...c });
  const res = { method: c.method ?? 'GET', path: c.path.split('?')[0]!, status: r.status, headers: r.headers, body: r.text };
  observed.push({ ...res, label });
  return res;
}

const invalidate = (connection: string, body: string): Call => ({ method: 'POST', path: `/tokens/${connection}/invalidate`, body });

beforeAll(async () => {
  contract = await loadContract();
  oauth = await listen((req, res) => {
    if (req.url === '/busy') {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '120' }).end(JSON.stringify({ error: 'slow_down' }));
      return;
    }
    if (req.url === '/refuse') {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_client' }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ access_token: `contract-tok-${++serial}`, token_type: 'Bearer', expires_in: LIFETIME, scope: 'API' }));
  });
  const connection = (tokenUrl: string, secret: string, extra: Record<string, unknown> = {}) => ({
    tokenUrl,
    grantType: 'client_credentials',
    secret,
    callers: ['arn:aws:iam::111122223333:role/contract-*'],
    ...extra,
  });
  const config = {
    connections: {
      'c-ok': connection(`${oauth.url}/token`, 'c/ok'),
      'c-busy': connection(`${oauth.url}/busy`, 'c/busy', { rateLimit: { max: 10, windowSeconds: 28800 } }),
      'c-refused': connection(`${oauth.url}/refuse`, 'c/refused'),
      'c-down': connection(`http://127.0.0.1:${await freePort()}/token`, 'c/down'),
      'c-internal': connection(`${oauth.url}/token`, 'c/internal'),
    },
    secrets: Object.fromEntries(
      ['ok', 'busy', 'refused', 'down', 'internal'].map((n) => [`c/${n}`, { client_id: n, client_secret: `${n}-secret` }]),
    ),
    callers: {
      [CALLER.accessKeyId]: { secretAccessKey: CALLER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/contract-app' },
      [OUTSIDER.accessKeyId]: { secretAccessKey: OUTSIDER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/outsider' },
    },
  };
  dir = mkdtempSync(join(tmpdir(), 'openapi-contract-'));
  configFile = join(dir, 'broker.json');
  writeFileSync(configFile, JSON.stringify(config));
  broker = await startBroker(['--config', configFile, '--port', '0']);
}, 90_000);

afterAll(async () => {
  await broker?.stop();
  await oauth?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Asserts the response has the expected status and conforms to openapi.yaml. */
function conforms(res: Observed, status: number, code?: string): Record<string, unknown> {
  expect({ status: res.status, body: res.body }).toMatchObject({ status });
  expect(contract.check(res)).toEqual([]);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  if (code) expect(body.error).toBe(code);
  return body;
}

describe('openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document whose examples (the deferred answer among them) fit their schemas', () => {
    const examples = contract.examples();
    expect(examples.map((e) => e.where)).toEqual(
      expect.arrayContaining([expect.stringContaining('invalidateToken 200 application/json example deferred')]),
    );
    expect(examples.filter((e) => e.errors.length)).toEqual([]);
    expect(contract.validateSchema('InvalidateAnswer', { invalidated: false, reason: 'deferred', retry_after: 30 })).toEqual([]);
    // The schema is not vacuous: a deferred answer without retry_after, or with a stray field, fails.
    expect(contract.validateSchema('InvalidateAnswer', { invalidated: false, reason: 'deferred' })).not.toEqual([]);
    expect(contract.validateSchema('InvalidateAnswer', { invalidated: true, reason: 'not_current' })).not.toEqual([]);
  });

  it('documents both routes, min_ttl, every error code of the contract, Retry-After, Cache-Control and SigV4', () => {
    const doc = contract.doc as {
      paths: Record<string, Record<string, { parameters?: Array<{ name: string }> }>>;
      components: {
        securitySchemes: Record<string, Record<string, string>>;
        schemas: { Error: { properties: { error: { enum: string[] } } } };
      };
    };
    expect(Object.keys(doc.paths).sort()).toEqual(['/tokens/{connection}', '/tokens/{connection}/invalidate']);
    expect(
      contract
        .documented()
        .map((d) => `${d.operationId} ${d.status}`)
        .sort(),
    ).toEqual(
      [
        'getToken 200',
        'getToken 400',
        'getToken 403',
        'getToken 404',
        'getToken 429',
        'getToken 500',
        'getToken 502',
        'getToken 503',
        'invalidateToken 200',
        'invalidateToken 400',
        'invalidateToken 403',
        'invalidateToken 404',
        'invalidateToken 413',
        'invalidateToken 500',
        'invalidateToken 503',
      ].sort(),
    );
    expect(doc.paths['/tokens/{connection}']!.get!.parameters!.map((p) => ('name' in p ? p.name : '$ref'))).toContain('min_ttl');
    expect(doc.components.schemas.Error.properties.error.enum.sort()).toEqual([
      'forbidden',
      'internal',
      'invalid_request',
      'not_found',
      'rate_limited',
      'unavailable',
      'upstream_error',
    ]);
    expect(doc.components.securitySchemes.sigv4).toMatchObject({
      type: 'apiKey',
      in: 'header',
      name: 'Authorization',
      'x-amazon-apigateway-authtype': 'awsSigv4',
    });
    expect(readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8')).toContain('openapi.yaml');
  });
});

describe('the local broker answers as openapi.yaml says', () => {
  let token = '';

  it('200: a token, with Cache-Control: no-store', async () => {
    const body = conforms(await send('token', { path: '/tokens/c-ok?min_ttl=60' }), 200);
    token = String(body.access_token);
    expect(body).toMatchObject({ token_type: 'Bearer', scope: 'API', connection: 'c-ok' });
  });

  it('400 invalid_request: bad min_ttl, min_ttl given twice, bad connection name', async () => {
    conforms(await send('bad min_ttl', { path: '/tokens/c-ok?min_ttl=abc' }), 400, 'invalid_request');
    conforms(await send('min_ttl twice', { path: '/tokens/c-ok?min_ttl=1&min_ttl=2' }), 400, 'invalid_request');
    conforms(await send('bad name', { path: '/tokens/Not_A_Name' }), 400, 'invalid_request');
  });

  it('403 forbidden: unsigned, and a caller outside the connection callers', async () => {
    conforms(await send('unsigned', { path: '/tokens/c-ok' }, true), 403, 'forbidden');
    conforms(await send('outsider', { path: '/tokens/c-ok', sign: OUTSIDER }), 403, 'forbidden');
  });

  it('404 not_found: unknown connection', async () => {
    conforms(await send('unknown connection', { path: '/tokens/no-such-connection' }), 404, 'not_found');
  });

  it('429 rate_limited with Retry-After: the upstream token endpoint answered 429', async () => {
    const res = await send('busy', { path: '/tokens/c-busy' });
    conforms(res, 429, 'rate_limited');
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('502 upstream_error with the upstream OAuth code', async () => {
    const body = conforms(await send('refused', { path: '/tokens/c-refused' }), 502, 'upstream_error');
    expect(body.upstream_error).toBe('invalid_client');
  });

  it('503 unavailable with Retry-After: the upstream is unreachable', async () => {
    conforms(await send('down', { path: '/tokens/c-down' }), 503, 'unavailable');
  });

  it('500 internal: the credentials secret has gone from the config file', async () => {
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as { secrets: Record<string, unknown> };
    delete config.secrets['c/internal'];
    writeFileSync(configFile, JSON.stringify(config));
    const body = conforms(await send('internal', { path: '/tokens/c-internal' }), 500, 'internal');
    expect(JSON.stringify(body)).not.toContain('c/internal');
  });

  it('invalidate 200: {invalidated: true} for the cached token, then not_current', async () => {
    expect(token).not.toBe('');
    const payload = JSON.stringify({ access_token: token });
    expect(conforms(await send('invalidated', invalidate('c-ok', payload)), 200)).toEqual({ invalidated: true });
    expect(conforms(await send('not current', invalidate('c-ok', payload)), 200)).toEqual({ invalidated: false, reason: 'not_current' });
  });

  it('invalidate 200 {invalidated: false, reason: "deferred", retry_after}: the budget guard (one honoured report per 10 s here)', async () => {
    const fresh = conforms(await send('token after invalidation', { path: '/tokens/c-ok' }), 200);
    const body = conforms(await send('deferred', invalidate('c-ok', JSON.stringify({ access_token: fresh.access_token }))), 200);
    expect(body).toMatchObject({ invalidated: false, reason: 'deferred' });
    expect(body.retry_after).toBeGreaterThan(0);
    expect(body.retry_after).toBeLessThanOrEqual(10);
  });

  it('invalidate 400, 403, 404 and 413', async () => {
    conforms(await send('bad body', invalidate('c-ok', 'not json')), 400, 'invalid_request');
    conforms(await send('unsigned invalidate', invalidate('c-ok', '{"access_token":"x"}'), true), 403, 'forbidden');
    conforms(await send('unknown invalidate', invalidate('no-such-connection', '{"access_token":"x"}')), 404, 'not_found');
    conforms(await send('too big', invalidate('c-ok', JSON.stringify({ access_token: 'x'.repeat(9000) }))), 413, 'invalid_request');
  });

  it('every documented response was exercised, except those listed with a reason', () => {
    const seen = new Set(
      observed
        .map((o) => contract.operationOf(o))
        .filter((o) => o !== undefined)
        .map((o) => `${o.operationId} ${o.status}`),
    );
    const missing = contract
      .documented()
      .map((d) => `${d.operationId} ${d.status}`)
      .filter((k) => !seen.has(k));
    expect(missing.sort()).toEqual([...NOT_EXERCISED.keys()].sort());
  });

  it('catches drift: a response of another shape fails the check', () => {
    const ok = observed.find((o) => o.label === 'token')!;
    const withExtra = { ...ok, body: JSON.stringify({ ...JSON.parse(ok.body), cached: true }) };
    expect(contract.check(withExtra).join('\n')).toMatch(/additional properties/);
    const renamed = { ...ok, body: ok.body.replace('"expires_in"', '"expiresIn"') };
    expect(contract.check(renamed).join('\n')).toMatch(/expires_in/);
    const noRetryAfter = observed.find((o) => o.label === 'down')!;
    expect(contract.check({ ...noRetryAfter, headers: { ...noRetryAfter.headers, 'retry-after': undefined } })).toEqual([
      expect.stringMatching(/Retry-After is required/),
    ]);
    expect(contract.check({ ...ok, status: 418 })).toEqual([expect.stringMatching(/status not documented/)]);
  });
});
