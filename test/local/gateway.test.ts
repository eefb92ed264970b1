/**
 * The local gateway in process, with a handler that records what it is given: the proxy event API
 * Gateway would build (identity only from the verified key), the 8 KB limit and the 403s, with an
 * injected clock.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { HttpHandler } from '../../functions/broker/http.js';
import { apiEvent, buildEvent } from '../../functions/local/api-event.js';
import { type Gateway, startGateway } from '../../functions/local/gateway.js';
import { call, type Signing } from './helpers.js';

const PRINCIPAL = 'arn:aws:iam::111122223333:role/payments-api';
const USER = 'arn:aws:iam::444455556666:user/ops/alice';
const KEY: Signing = { accessKeyId: 'AKIDGATEWAYTEST', secretAccessKey: 'gateway-test-secret' };
const USER_KEY: Signing = { accessKeyId: 'AKIDGATEWAYUSER', secretAccessKey: 'gateway-user-secret' };

let gateway: Gateway;
let clockOffset = 0;
let seen: Array<{ event: APIGatewayProxyEvent; remaining: number | undefined }> = [];
let answer: () => Promise<APIGatewayProxyResult> = async () => ({
  statusCode: 200,
  headers: { 'Content-Type': 'application/json' },
  body: '{"ok":true}',
});

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

  it('verifies a presigned request (signature in the query string) like a header-signed one', async () => {
    const ok = await call(gateway.url, { path: '/tokens/pay?min_ttl=30', sign: { ...KEY, query: true, expires: 300 } });
    expect(ok.status).toBe(200);
    const { event } = seen[0]!;
    expect(event.requestContext.identity.userArn).toBe(PRINCIPAL);
    expect(event.headers.Authorization ?? event.headers.authorization).toBeUndefined();
    expect(event.queryStringParameters?.['X-Amz-Signature']).toMatch(/^[0-9a-f]{64}$/);
    expect(event.queryStringParameters?.min_ttl).toBe('30');

    const tampered = await call(gateway.url, {
      path: '/tokens/pay?min_ttl=30',
      sign: { ...KEY, query: true },
      tamper: (req) => void (req.path = req.path.replace('min_ttl=30', 'min_ttl=31')),
    });
    expect(tampered.status).toBe(403);
    expect(String(tampered.json?.message)).toMatch(/does not match/);
    const otherSecret = await call(gateway.url, { path: '/tokens/pay', sign: { ...KEY, secretAccessKey: 'wrong', query: true } });
    expect(otherSecret.status).toBe(403);
    clockOffset = 10 * 60_000;
    const expired = await call(gateway.url, { path: '/tokens/pay', sign: { ...KEY, query: true, expires: 60 } });
    expect(expired.status).toBe(403);
    expect(String(expired.json?.message)).toMatch(/^Request has expired/);
    expect(seen).toHaveLength(1);
  });

  it('treats header and query names like constructor, __proto__ and hasOwnProperty as plain names', async () => {
    const names = ['constructor', '__proto__', 'hasOwnProperty', 'toString'];
    const headers = Object.create(null) as Record<string, string>;
    for (const n of names) headers[n] = `h-${n}`;
    // aws4 (the test's signer) itself loses a `__proto__` query name, so the signed requests carry the other
    // three in the query; buildEvent below gets all four.
    const signable = names.filter((n) => n !== '__proto__');
    const query = signable.map((n) => `${n}=q-${n}`).join('&');

    // Unsigned: refused by authentication (403), not a crash (500).
    const unsigned = await call(gateway.url, { path: `/tokens/pay?${names.map((n) => `${n}=1`).join('&')}`, headers });
    expect(unsigned.status).toBe(403);
    expect(unsigned.json).toEqual({ error: 'forbidden', message: 'Missing Authentication Token' });

    // Signed: reaches the handler with every name as an ordinary key.
    const signed = await call(gateway.url, { path: `/tokens/pay?${query}&${query}`, headers, sign: KEY });
    expect(signed.json).toEqual({ ok: true });
    const { event } = seen[0]!;
    for (const n of names) {
      expect(Object.getOwnPropertyDescriptor(event.headers, n)?.value).toBe(`h-${n}`);
      expect(Object.getOwnPropertyDescriptor(event.multiValueHeaders, n)?.value).toEqual([`h-${n}`]);
    }
    for (const n of signable) {
      expect(Object.getOwnPropertyDescriptor(event.queryStringParameters, n)?.value).toBe(`q-${n}`);
      expect(Object.getOwnPropertyDescriptor(event.multiValueQueryStringParameters, n)?.value).toEqual([`q-${n}`, `q-${n}`]);
    }

    // Presigned, with such names in the query too.
    const presigned = await call(gateway.url, { path: `/tokens/pay?${query}`, headers, sign: { ...KEY, query: true } });
    expect(presigned.json).toEqual({ ok: true });
  });

  it('apiEvent (tests and bench call the handler with it) is the event the gateway builds for a verified request', async () => {
    await call(gateway.url, { method: 'POST', path: '/tokens/pay/invalidate?x=1&x=2', body: '{"access_token":"t"}', sign: KEY });
    const { event } = seen[0]!;
    const direct = apiEvent('POST', '/tokens/pay/invalidate?x=1&x=2', {
      userArn: PRINCIPAL,
      headers: event.multiValueHeaders as Record<string, string[]>,
      body: '{"access_token":"t"}',
      now: event.requestContext.requestTimeEpoch,
    });
    // Only the request id, the access key and the source address may differ.
    const normal = (e: APIGatewayProxyEvent) => {
      const rc = e.requestContext;
      return {
        ...e,
        requestContext: { ...rc, requestId: 'id', extendedRequestId: 'id', identity: { ...rc.identity, accessKey: 'key', sourceIp: 'ip' } },
      };
    };
    expect(normal(direct)).toEqual(normal(event));
    expect(direct.requestContext.identity.userArn).toBe(PRINCIPAL);
    expect(apiEvent('GET', '/tokens/pay', { userArn: null }).requestContext.identity).toMatchObject({
      userArn: null,
      caller: null,
      accessKey: null,
    });
  });

  it('builds the event with request names as own keys, __proto__ included, and pollutes no prototype', () => {
    const names = ['constructor', '__proto__', 'hasOwnProperty', 'toString'];
    const headers = Object.create(null) as Record<string, string[]>;
    for (const n of names) headers[n] = [`h-${n}`];
    const event = buildEvent({
      method: 'GET',
      target: `/tokens/pay?${names.map((n) => `${n}=a&${n}=b`).join('&')}`,
      headers,
      body: Buffer.alloc(0),
      accessKeyId: KEY.accessKeyId,
      principal: PRINCIPAL,
      sourceIp: '127.0.0.1',
      requestId: 'r-1',
      now: Date.now(),
    });
    for (const n of names) {
      expect(Object.getOwnPropertyDescriptor(event.queryStringParameters, n)?.value).toBe('b');
      expect(Object.getOwnPropertyDescriptor(event.multiValueQueryStringParameters, n)?.value).toEqual(['a', 'b']);
      expect(Object.getOwnPropertyDescriptor(event.headers, n)?.value).toBe(`h-${n}`);
    }
    // Serialised as Lambda would receive it, the names survive as plain JSON keys.
    expect(JSON.parse(JSON.stringify(event.queryStringParameters))).toEqual(JSON.parse(`{${names.map((n) => `"${n}":"b"`).join(',')}}`));
    expect(({} as Record<string, unknown>).hasOwnProperty).toBe(Object.prototype.hasOwnProperty);
  });
});
