/**
 * The local gateway in process, with a handler that records what it is given: the proxy event API
 * Gateway would build (identity only from the verified key), the 8 KB limit and the 403s, with an
 * injected clock.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { HttpHandler } from '../../functions/broker/http.js';
import { type Gateway, startGateway } from '../../functions/local/gateway.js';
import { call, type Signing } from './helpers.js';

const PRINCIPAL = 'arn:aws:iam::111122223333:role/payments-api';
const USER = 'arn:aws:iam::444455556666:user/ops/alice';
const KEY: Signing = { accessKeyId: 'AKIDGATEWAYTEST', secretAccessKey: 'gateway-test-secret' };
const USER_KEY: Signing = { accessKeyId: 'AKIDGATEWAYUSER', secretAccessKey: 'gateway-user-secret' };

let gateway: Gateway;
let clockOffset = 0;
let seen: Array<{ event: APIGatewayProxyEvent; remaining: number | undefined }> = [];
let answer: () => Promise<APIGatewayProxyResult> = async () => ({ statusCode: 200, headers: { 'Content-Type': 'application/json' }, body: '{"ok":true}' });

beforeAll(async () => {
  const handler: HttpHandler = async (event, context) => {
    seen.push({ event: event as APIGatewayProxyEvent, remaining: context?.getRemainingTimeInMillis() });
    return answer();
  };
  gateway = await startGateway({
    host: '127.0.0.1',
    port: 0,
    region: 'us-east-1',
    callers: new Map([
      [KEY.accessKeyId, { secretAccessKey: KEY.secretAccessKey, principal: PRINCIPAL }],
      [USER_KEY.accessKeyId, { secretAccessKey: USER_KEY.secretAccessKey, principal: USER }],
    ]),
    handler,
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    now: () => Date.now() + clockOffset,
  });
});

afterAll(async () => {
  await gateway.close();
});

beforeEach(() => {
  seen = [];
  clockOffset = 0;
  answer = async () => ({ statusCode: 200, headers: { 'Content-Type': 'application/json' }, body: '{"ok":true}' });
});

describe('local gateway', () => {
  it('builds the REST proxy event with the verified caller as identity, ignoring spoofed headers', async () => {
    const r = await call(gateway.url, {
      path: '/tokens/pay?min_ttl=30&x=1&x=2',
      headers: { 'x-caller-arn': 'arn:aws:iam::999999999999:role/admin', 'X-Forwarded-For': '10.9.9.9' },
      sign: KEY,
    });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ok: true });
    expect(seen).toHaveLength(1);
    const { event, remaining } = seen[0]!;
    expect(event.httpMethod).toBe('GET');
    expect(event.path).toBe('/tokens/pay');
    expect(event.resource).toBe('/tokens/{connection}');
    expect(event.pathParameters).toEqual({ connection: 'pay' });
    expect(event.queryStringParameters).toEqual({ min_ttl: '30', x: '2' });
    expect(event.multiValueQueryStringParameters).toEqual({ min_ttl: ['30'], x: ['1', '2'] });
    expect(event.body).toBeNull();
    expect(event.isBase64Encoded).toBe(false);
    expect(event.requestContext.stage).toBe('local');
    expect(event.requestContext.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.headers['x-amzn-requestid']).toBe(event.requestContext.requestId);
    const id = event.requestContext.identity;
    expect(id.userArn).toBe(PRINCIPAL);
    expect(id.accessKey).toBe(KEY.accessKeyId);
    expect(id.accountId).toBe('111122223333');
    expect(id.caller).toMatch(/^AROA[A-Z2-7]{17}:local$/);
    expect(id.user).toBe(id.caller);
    expect(id.sourceIp).toMatch(/127\.0\.0\.1$/);
    expect(remaining).toBeGreaterThan(28_000);
    expect(remaining).toBeLessThanOrEqual(29_000);
  });

  it('reports an IAM user as API Gateway does and passes a POST body through', async () => {
    const body = JSON.stringify({ access_token: 'abc' });
    const r = await call(gateway.url, { method: 'POST', path: '/tokens/pay/invalidate', body, sign: USER_KEY });
    expect(r.status).toBe(200);
    const { event } = seen[0]!;
    expect(event.resource).toBe('/tokens/{connection}/invalidate');
    expect(event.body).toBe(body);
    expect(event.requestContext.identity.userArn).toBe(USER);
    expect(event.requestContext.identity.accountId).toBe('444455556666');
    expect(event.requestContext.identity.user).toMatch(/^AIDA[A-Z2-7]{17}$/);
  });

  it('refuses a body over 8 KB with 413 before the handler, and accepts exactly 8 KB', async () => {
    const big = await call(gateway.url, { method: 'POST', path: '/tokens/pay/invalidate', body: 'x'.repeat(8 * 1024 + 1), sign: KEY });
    expect(big.status).toBe(413);
    expect(big.json).toEqual({ error: 'invalid_request', message: 'body is larger than 8 KB' });
    expect(seen).toHaveLength(0);
    const edge = await call(gateway.url, { method: 'POST', path: '/tokens/pay/invalidate', body: 'x'.repeat(8 * 1024), sign: KEY });
    expect(edge.status).toBe(200);
    expect(seen).toHaveLength(1);
  });

  it('answers 403 forbidden without calling the handler for unsigned and stale requests (clock injected)', async () => {
    const unsigned = await call(gateway.url, { path: '/tokens/pay' });
    expect(unsigned.status).toBe(403);
    expect(unsigned.json).toEqual({ error: 'forbidden', message: 'Missing Authentication Token' });
    clockOffset = 20 * 60_000;
    const stale = await call(gateway.url, { path: '/tokens/pay', sign: KEY });
    expect(stale.status).toBe(403);
    expect(stale.json?.error).toBe('forbidden');
    expect(String(stale.json?.message)).toMatch(/^Signature expired/);
    expect(seen).toHaveLength(0);
  });

  it('answers 500 internal if the handler throws, without details', async () => {
    answer = async () => {
      throw new Error('boom: secret detail');
    };
    const r = await call(gateway.url, { path: '/tokens/pay', sign: KEY });
    expect(r.status).toBe(500);
    expect(r.json).toEqual({ error: 'internal', message: 'internal error' });
  });
});
