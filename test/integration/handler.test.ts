/**
 * The Lambda's HTTP layer end to end over the real core, store (dynalite) and a fake IdP: routes, status
 * codes and bodies of docs/design.md "HTTP API", identity only from the request context, and nothing secret in
 * any log line (the JSON log lines captured from stdout).
 */
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHttpHandler, type HttpHandler } from '../../functions/broker/http.js';
import { type MetricSink, jsonLogger } from '../../functions/broker/observability.js';
import { apiEvent, type ApiEventOptions } from '../../functions/local/api-event.js';
import { realClock } from '../support/clock.js';
import { ALLOWED, CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { issue } from '../../testkit/idp.js';

let world: World;
let handler: HttpHandler;
const output: string[] = [];
const metrics: string[] = [];
/** Every token any response carried: none may appear in a log line. */
const served = new Set<string>();

const sink: MetricSink = {
  count: (name) => metrics.push(name),
  gauge: (name, value) => metrics.push(`${name}=${value}`),
  latency: () => {},
  take: () => ({}),
};

/** The event API Gateway sends for a verified request, from CALLER unless `userArn` says otherwise. */
const event = (method: string, target: string, o: Partial<ApiEventOptions> = {}) => apiEvent(method, target, { userArn: CALLER, ...o });

const json = (body: string) => JSON.parse(body) as Record<string, unknown>;

beforeAll(async () => {
  world = await startWorld(issue(1200, { scope: 'API', refresh_token: 'CANARY-REFRESH' }));
  world.secrets.set('sec/main', { client_id: 'broker-client', client_secret: 'CANARY-CLIENT-SECRET' });
  const config = connections(world.idp, {
    payments: { scope: 'API' },
    other: { callers: ['arn:aws:iam::111122223333:role/tax-*'] },
    guarded: { rateLimit: { max: 10, windowSeconds: 28800 } },
    denied: { tokenUrl: world.idp.url, grantType: 'client_credentials', secret: 'sec/main', callers: ALLOWED },
  });
  const { broker } = instance(world, { clock: realClock, config });
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    output.push(String(chunk));
    return true;
  });
  const inner = createHttpHandler({ broker, logger: jsonLogger(), metrics: sink });
  handler = async (e, c) => {
    const res = await inner(e, c);
    if (res.statusCode === 200) served.add(json(res.body).access_token as string);
    return res;
  };
});
afterAll(async () => {
  vi.restoreAllMocks();
  await world.close();
});

describe('GET /tokens/{connection}', () => {
  it('returns the token with the contract fields and no-store headers (E10)', async () => {
    const res = await handler(event('GET', '/tokens/payments?min_ttl=300'), { getRemainingTimeInMillis: () => 10_000 });
    expect(res.statusCode).toBe(200);
    expect(res.headers).toMatchObject({ 'Cache-Control': 'no-store', Pragma: 'no-cache', 'Content-Type': 'application/json' });
    const body = json(res.body);
    expect(Object.keys(body).sort()).toEqual(['access_token', 'connection', 'expires_at', 'expires_in', 'scope', 'token_type']);
    expect(body).toMatchObject({ token_type: 'Bearer', scope: 'API', connection: 'payments' });
    expect(body.expires_in).toBeGreaterThanOrEqual(300);
    expect(body.expires_in).toBeLessThanOrEqual(1200);
    expect(Date.parse(body.expires_at as string)).toBeGreaterThan(Date.now() + 1_190_000);
    expect(body).not.toHaveProperty('refresh_token');
    expect(world.idp.receipts[0]?.params.get('scope')).toBe('API');
  });

  it.each([['-1'], ['86401'], ['abc'], ['1.5'], ['']])('rejects min_ttl=%j with 400 invalid_request', async (v) => {
    const res = await handler(event('GET', `/tokens/payments?min_ttl=${encodeURIComponent(v)}`));
    expect(res.statusCode).toBe(400);
    expect(json(res.body)).toMatchObject({ error: 'invalid_request' });
  });

  it('accepts the bounds 0 and 86400 as valid values', async () => {
    expect((await handler(event('GET', '/tokens/payments?min_ttl=0'))).statusCode).toBe(200);
    const res = await handler(event('GET', '/tokens/payments?min_ttl=86400'));
    expect(res.statusCode).toBe(400); // valid, but longer than the 1200 s tokens this upstream issues
    expect(json(res.body).message).toMatch(/longer than the tokens this upstream issues/);
  });

  it('rejects a bad connection name with 400 and an unknown one with 404', async () => {
    expect(json((await handler(event('GET', '/tokens/Bad_Name'))).body)).toMatchObject({ error: 'invalid_request' });
    const res = await handler(event('GET', '/tokens/nope'));
    expect(res.statusCode).toBe(404);
    expect(json(res.body)).toMatchObject({ error: 'not_found' });
  });

  it('unknown routes and methods are 404 not_found', async () => {
    for (const [m, p] of [
      ['GET', '/'],
      ['GET', '/tokens'],
      ['DELETE', '/tokens/payments'],
      ['GET', '/tokens/payments/invalidate'],
      ['POST', '/tokens/payments'],
    ]) {
      const res = await handler(event(m!, p!));
      expect(res.statusCode).toBe(404);
      expect(json(res.body)).toMatchObject({ error: 'not_found' });
    }
  });

  it('refuses a missing identity, root, federated users and callers outside `callers` with 403 and no IdP call (E5, E7)', async () => {
    const before = world.idp.count();
    for (const userArn of [
      null,
      'arn:aws:iam::111122223333:root',
      'arn:aws:sts::111122223333:federated-user/bob',
      'not-an-arn',
      'arn:aws:sts::999999999999:assumed-role/payments-api/s',
    ]) {
      const res = await handler(event('GET', '/tokens/payments', { userArn }));
      expect(res.statusCode).toBe(403);
      expect(json(res.body)).toMatchObject({ error: 'forbidden' });
    }
    const res = await handler(event('GET', '/tokens/other'));
    expect(res.statusCode).toBe(403);
    expect(world.idp.count()).toBe(before);
  });

  it('ignores spoofed identity headers and body fields (E8)', async () => {
    const res = await handler(
      event('GET', '/tokens/payments', {
        userArn: null,
        headers: { 'x-caller-arn': CALLER, 'X-Forwarded-For': '10.0.0.1', 'x-amz-user-arn': CALLER },
        body: JSON.stringify({ userArn: CALLER }),
      }),
    );
    expect(res.statusCode).toBe(403);
  });

  it('handles the v2 event shape identically (E6)', async () => {
    const v2 = {
      version: '2.0',
      routeKey: 'GET /tokens/{connection}',
      rawPath: '/tokens/payments',
      rawQueryString: 'min_ttl=30',
      queryStringParameters: { min_ttl: '30' },
      headers: {},
      isBase64Encoded: false,
      requestContext: { http: { method: 'GET', path: '/tokens/payments' }, authorizer: { iam: { userArn: CALLER } } },
    } as unknown as APIGatewayProxyEventV2;
    const res = await handler(v2);
    expect(res.statusCode).toBe(200);
    const denied = await handler({
      ...v2,
      requestContext: { ...v2.requestContext, authorizer: undefined },
    } as unknown as APIGatewayProxyEventV2);
    expect(denied.statusCode).toBe(403);
  });
});

describe('POST /tokens/{connection}/invalidate', () => {
  it('200 {invalidated: true} for the current token, which then stops being served; not_current and no change for an old one', async () => {
    const t1 = json((await handler(event('GET', '/tokens/payments'))).body).access_token as string;
    const res = await handler(event('POST', '/tokens/payments/invalidate', { body: JSON.stringify({ access_token: t1 }) }));
    expect(res.statusCode).toBe(200);
    expect(res.headers).toMatchObject({ 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    expect(json(res.body)).toEqual({ invalidated: true });
    const t2 = json((await handler(event('GET', '/tokens/payments'))).body).access_token as string;
    expect(t2).not.toBe(t1);
    const again = await handler(event('POST', '/tokens/payments/invalidate', { body: JSON.stringify({ access_token: t1 }) }));
    expect(again.statusCode).toBe(200);
    expect(json(again.body)).toEqual({ invalidated: false, reason: 'not_current' });
    expect(json((await handler(event('GET', '/tokens/payments'))).body).access_token).toBe(t2);
  });

  it('rejects bad bodies with 400 and a body over 8 KB with 413', async () => {
    for (const body of [null, 'not json', '{}', '{"access_token": 5}', '{"access_token": ""}', '[]']) {
      const res = await handler(event('POST', '/tokens/payments/invalidate', { body }));
      expect(res.statusCode).toBe(400);
      expect(json(res.body)).toMatchObject({ error: 'invalid_request' });
    }
    const big = await handler(event('POST', '/tokens/payments/invalidate', { body: JSON.stringify({ access_token: 'x'.repeat(9000) }) }));
    expect(big.statusCode).toBe(413);
  });

  it('requires the caller to be allowed on the connection', async () => {
    const res = await handler(event('POST', '/tokens/other/invalidate', { body: '{"access_token":"x"}' }));
    expect(res.statusCode).toBe(403);
  });
});

describe('errors and logs (invariant 5, E9)', () => {
  it('an upstream refusal is 502 with the OAuth code, a rate limit 429 with Retry-After', async () => {
    world.idp.respond = () => ({ status: 400, body: { error: 'invalid_scope', error_description: 'CANARY-DESCRIPTION' } });
    const res = await handler(event('GET', '/tokens/denied'));
    expect(res.statusCode).toBe(502);
    expect(json(res.body)).toEqual({ error: 'upstream_error', message: expect.any(String), upstream_error: 'invalid_scope' });
    world.idp.respond = issue(1200);
  });

  it('writes one JSON log line per request with caller, connection, outcome, latency and fingerprint, never a token or secret', async () => {
    const start = output.length;
    const res = await handler(event('GET', '/tokens/payments'));
    const token = json(res.body).access_token as string;
    const lines = output
      .slice(start)
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const request = lines.filter((l) => l.message === 'request');
    expect(request).toHaveLength(1);
    expect(request[0]).toMatchObject({
      caller: CALLER,
      role: 'arn:aws:iam::111122223333:role/payments-api',
      connection: 'payments',
      outcome: 'memory',
      status: 200,
      latencyMs: expect.any(Number),
      tokenFp: expect.stringMatching(/^[\w-]{16}$/),
    });
    expect(metrics).toContain('MemoryHit');
    const all = output.join('');
    expect(served.size).toBeGreaterThanOrEqual(2);
    for (const t of [token, ...served]) expect(all).not.toContain(t);
    for (const receipt of world.idp.receipts) expect(all).not.toContain(receipt.params.get('client_secret') ?? 'never');
    for (const canary of ['CANARY-CLIENT-SECRET', 'CANARY-REFRESH', 'CANARY-DESCRIPTION', 'access_token', 'client_secret']) {
      expect(all).not.toContain(canary);
    }
  });
});

describe('the budget guard on the wire', () => {
  const lines = (from: number) =>
    output
      .slice(from)
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.message === 'request');

  it('the refresh reason is in the log line and the metrics; a deferred report answers 200 with retry_after', async () => {
    let start = output.length;
    metrics.length = 0;
    const t = json((await handler(event('GET', '/tokens/guarded'))).body).access_token as string;
    expect(lines(start)[0]).toMatchObject({ outcome: 'refreshed', refreshReason: 'expired', ledgerRemaining: 9 });
    expect(metrics).toEqual(expect.arrayContaining(['RefreshExpired', 'Refreshed', 'LedgerRemaining=9']));
    start = output.length;
    const res = await handler(event('POST', '/tokens/guarded/invalidate', { body: JSON.stringify({ access_token: t }) }));
    expect(res.statusCode).toBe(200);
    const body = json(res.body);
    expect(body).toEqual({ invalidated: false, reason: 'deferred', retry_after: expect.any(Number) });
    expect(body.retry_after).toBeGreaterThan(2_800);
    expect(lines(start)[0]).toMatchObject({ outcome: 'deferred', invalidation: 'deferred', tokenFp: expect.stringMatching(/^[\w-]{16}$/) });
    expect(metrics).toContain('InvalidationDeferred');
  });

  it('a refused demand is 429 with Retry-After, a message that says why, and the cause in the log line and metrics', async () => {
    const start = output.length;
    metrics.length = 0;
    // 1200 s tokens: min_ttl 1199 is a demand the spacing refuses.
    const res = await handler(event('GET', '/tokens/guarded?min_ttl=1199'));
    expect(res.statusCode).toBe(429);
    expect(Number(res.headers!['Retry-After'])).toBeGreaterThan(0);
    expect(json(res.body)).toEqual({ error: 'rate_limited', message: expect.stringMatching(/spac/) });
    expect(lines(start)[0]).toMatchObject({ status: 429, error: 'rate_limited', cause: 'spacing' });
    expect(metrics).toEqual(expect.arrayContaining(['RefusedSpacing', 'RateLimited']));
  });
});
