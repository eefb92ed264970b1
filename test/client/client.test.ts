import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import aws4 from 'aws4';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BrokerUnreachableError,
  ForbiddenError,
  InternalError,
  InvalidRequestError,
  NotFoundError,
  RateLimitedError,
  TokenBrokerClient,
  TokenBrokerError,
  UnavailableError,
  UpstreamError,
} from '@token-broker/client';
import { NodeSha256 } from '../../client/src/sha256.js';
import {
  CREDENTIALS,
  ENDPOINT,
  ORIGIN,
  T0,
  errorBody,
  listen,
  mockBroker,
  newClient,
  record,
  tokenBody,
  type SeenRequest,
} from './support.js';
import { FakeClock } from '../support/clock.js';

const CONN = 'vitesse-staging';
const TOKEN_PATH = (minTtl = 65) => `/prod/tokens/${CONN}?min_ttl=${minTtl}`;

let broker: ReturnType<typeof mockBroker>;
afterEach(async () => {
  await broker?.agent.close();
  broker = undefined as never;
});

/** Queue replies (status, body, headers) for GET /prod/tokens/vitesse-staging; records each request. */
function replies(
  list: Array<[number, string, Record<string, string>?]>,
  path: string | ((p: string) => boolean) = (p) => p.startsWith(`/prod/tokens/${CONN}?`),
) {
  for (const [status, body, headers] of list) {
    broker.pool.intercept({ path, method: 'GET' }).reply((opts) => {
      record(broker.seen, opts as never);
      return { statusCode: status, data: body, responseOptions: { headers: { 'content-type': 'application/json', ...headers } } };
    });
  }
}

describe('TokenBrokerClient: signing', () => {
  it('signs GET /{stage}/tokens/{connection} with SigV4 for execute-api in the endpoint region (verified by re-signing with aws4)', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([[200, tokenBody('tok-1')]]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    expect(client.region).toBe('eu-west-1');

    const token = await client.getToken(CONN);
    expect(token.accessToken).toBe('tok-1');

    const req = broker.seen[0] as SeenRequest;
    expect(req.method).toBe('GET');
    expect(req.path).toBe(TOKEN_PATH());
    const auth = req.headers.authorization ?? '';
    expect(auth).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/20260102\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/,
    );
    expect(req.headers['x-amz-date']).toBe('20260102T030405Z');
    expect(req.headers['x-amz-security-token']).toBe(CREDENTIALS.sessionToken);
    expect(req.headers.host).toBe(new URL(ORIGIN).host);

    expect(resign(req, 'eu-west-1')).toBe(auth);
  });

  it('signs the invalidate POST including its JSON body', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    broker.pool.intercept({ path: `/prod/tokens/${CONN}/invalidate`, method: 'POST' }).reply((opts) => {
      record(broker.seen, opts as never);
      return { statusCode: 200, data: JSON.stringify({ invalidated: true }) };
    });
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    expect(await client.invalidate(CONN, 'tok-bad')).toEqual({ invalidated: true });
    const req = broker.seen[0] as SeenRequest;
    expect(JSON.parse(req.body ?? '')).toEqual({ access_token: 'tok-bad' });
    expect(req.headers['content-type']).toBe('application/json');
    expect(resign(req, 'eu-west-1')).toBe(req.headers.authorization);
    // The body is covered: its SHA-256 is the signed x-amz-content-sha256 (which aws4 also hashes into the signature).
    expect(req.headers['x-amz-content-sha256']).toBe(
      createHash('sha256')
        .update(req.body ?? '')
        .digest('hex'),
    );
    expect(req.headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-content-sha256/);
  });

  it('takes the region from the execute-api hostname, else AWS_REGION; honours an explicit region', () => {
    const regionOf = (host: string) => new TokenBrokerClient({ endpoint: `https://${host}/prod`, credentials: CREDENTIALS }).region;
    const saved = process.env.AWS_REGION;
    process.env.AWS_REGION = 'us-west-2';
    try {
      expect(regionOf('abc.execute-api.ap-southeast-2.amazonaws.com')).toBe('ap-southeast-2');
      expect(regionOf('abc-vpce-123.execute-api.eu-central-1.vpce.amazonaws.com')).toBe('eu-central-1');
      expect(regionOf('abc.execute-api.cn-north-1.amazonaws.com.cn')).toBe('cn-north-1');
      expect(new TokenBrokerClient({ endpoint: 'https://broker.example.com/v1', credentials: CREDENTIALS }).region).toBe('us-west-2');
      expect(new TokenBrokerClient({ endpoint: ENDPOINT, credentials: CREDENTIALS }).region).toBe('eu-west-1');
      expect(new TokenBrokerClient({ endpoint: ENDPOINT, credentials: CREDENTIALS, region: 'eu-north-1' }).region).toBe('eu-north-1');
    } finally {
      if (saved === undefined) delete process.env.AWS_REGION;
      else process.env.AWS_REGION = saved;
    }
  });

  it('refuses plain http except on loopback, and endpoints with a query', () => {
    expect(() => new TokenBrokerClient({ endpoint: 'http://broker.example.com', region: 'us-east-1', credentials: CREDENTIALS })).toThrow(
      /https/,
    );
    expect(() => new TokenBrokerClient({ endpoint: `${ENDPOINT}?x=1`, credentials: CREDENTIALS })).toThrow(/query/);
    expect(new TokenBrokerClient({ endpoint: 'http://127.0.0.1:8787', region: 'us-east-1', credentials: CREDENTIALS }).region).toBe(
      'us-east-1',
    );
  });

  it('uses a credential provider function and signs with whatever it returns', async () => {
    broker = mockBroker();
    replies([[200, tokenBody('tok-1')]]);
    let calls = 0;
    const client = new TokenBrokerClient({
      endpoint: ENDPOINT,
      dispatcher: broker.agent,
      credentials: async () => {
        calls++;
        return { accessKeyId: 'AKIDPROVIDED', secretAccessKey: 'secret' };
      },
    });
    await client.getToken(CONN);
    expect(calls).toBeGreaterThan(0);
    expect(broker.seen[0]?.headers.authorization).toContain('Credential=AKIDPROVIDED/');
    expect(broker.seen[0]?.headers['x-amz-security-token']).toBeUndefined();
  });

  it('turns a credential failure into ForbiddenError (status 0) without sending anything', async () => {
    broker = mockBroker();
    const client = new TokenBrokerClient({
      endpoint: ENDPOINT,
      dispatcher: broker.agent,
      credentials: async () => {
        throw new Error('no credentials here');
      },
    });
    const error = await client.getToken(CONN).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ForbiddenError);
    expect((error as ForbiddenError).status).toBe(0);
    expect(broker.seen).toHaveLength(0);
  });
});

describe('TokenBrokerClient: cache and single flight', () => {
  it('serves a cached token while it has minTtl + skew left, then asks again', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [200, tokenBody('tok-1', 300)],
      [200, tokenBody('tok-2', 300)],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });

    const first = await client.getToken(CONN);
    expect(first).toMatchObject({ accessToken: 'tok-1', tokenType: 'Bearer', expiresIn: 300, scope: 'API' });
    expect(first.expiresAt.getTime()).toBe(T0 + 300_000);

    t.advance(200_000); // 100 s left: still >= 60 + 5
    const second = await client.getToken(CONN);
    expect(second.accessToken).toBe('tok-1');
    expect(second.expiresIn).toBe(100);
    expect(broker.seen).toHaveLength(1);

    t.advance(36_000); // 64 s left: < 60 + 5
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
    expect(broker.seen).toHaveLength(2);
  });

  it('asks the broker for minTtl + skew, and a caller needing more than the cached token has fetches again', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [200, tokenBody('tok-1', 300)],
      [200, tokenBody('tok-2', 1200)],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    await client.getToken(CONN);
    expect((await client.getToken(CONN, { minTtl: 600 })).accessToken).toBe('tok-2');
    expect(broker.seen.map((r) => r.path)).toEqual([TOKEN_PATH(65), TOKEN_PATH(605)]);
  });

  it('collapses concurrent getToken calls for one connection into one broker request', async () => {
    broker = mockBroker();
    broker.pool
      .intercept({ path: TOKEN_PATH(), method: 'GET' })
      .reply((opts) => {
        record(broker.seen, opts as never);
        return { statusCode: 200, data: tokenBody('tok-1') };
      })
      .delay(20);
    const client = newClient({ dispatcher: broker.agent });
    const tokens = await Promise.all(Array.from({ length: 50 }, () => client.getToken(CONN)));
    expect(new Set(tokens.map((x) => x.accessToken))).toEqual(new Set(['tok-1']));
    expect(broker.seen).toHaveLength(1);
  });

  it('shares a failure with every concurrent caller, then tries again on the next call', async () => {
    broker = mockBroker();
    replies([
      [403, errorBody('forbidden', 'caller is not allowed to use this connection')],
      [200, tokenBody('tok-1')],
    ]);
    const client = newClient({ dispatcher: broker.agent });
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => client.getToken(CONN)));
    expect(results.every((r) => r.status === 'rejected' && r.reason instanceof ForbiddenError)).toBe(true);
    expect(broker.seen).toHaveLength(1);
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
  });

  it('keeps connections apart', async () => {
    broker = mockBroker();
    replies([[200, tokenBody('tok-a')]], `/prod/tokens/conn-a?min_ttl=65`);
    replies([[200, tokenBody('tok-b')]], `/prod/tokens/conn-b?min_ttl=65`);
    const client = newClient({ dispatcher: broker.agent });
    const [a, b] = await Promise.all([client.getToken('conn-a'), client.getToken('conn-b')]);
    expect([a.accessToken, b.accessToken]).toEqual(['tok-a', 'tok-b']);
  });

  it('validates connection names and minTtl locally, before any request', async () => {
    broker = mockBroker();
    const client = newClient({ dispatcher: broker.agent });
    for (const bad of ['', 'UPPER', '../admin', 'a/b', 'x'.repeat(65)]) {
      await expect(client.getToken(bad)).rejects.toBeInstanceOf(InvalidRequestError);
    }
    await expect(client.getToken(CONN, { minTtl: -1 })).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(client.getToken(CONN, { minTtl: 1.5 })).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(client.getToken(CONN, { minTtl: 86_401 })).rejects.toBeInstanceOf(InvalidRequestError);
    expect(broker.seen).toHaveLength(0);
  });
});

describe('TokenBrokerClient: retries and deadline', () => {
  it('retries 503 and 429 after the Retry-After they carry (plus at most baseDelayMs jitter)', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [503, errorBody('unavailable', 'refresh in progress'), { 'retry-after': '2' }],
      [429, errorBody('rate_limited', 'ledger exhausted'), { 'retry-after': '3' }],
      [200, tokenBody('tok-1')],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep, random: () => 0.5 });
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
    expect(t.sleeps).toEqual([2050, 3050]);
    expect(broker.seen).toHaveLength(3);
  });

  it('understands Retry-After as an HTTP date', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [503, errorBody('unavailable', 'busy'), { 'retry-after': new Date(T0 + 4_000).toUTCString() }],
      [200, tokenBody('tok-1')],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    await client.getToken(CONN);
    expect(t.sleeps).toEqual([4000]);
  });

  it('backs off with full jitter when there is no Retry-After (503 and network errors)', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([[503, errorBody('unavailable', 'busy')]]);
    broker.pool.intercept({ path: TOKEN_PATH(), method: 'GET' }).replyWithError(new Error('socket hang up'));
    replies([[503, '<html>Service Unavailable</html>']]);
    replies([[200, tokenBody('tok-1')]]);
    const randoms = [1, 0.5, 0.25];
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep, random: () => randoms.shift() ?? 0 });
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
    // attempt n sleeps random * min(2000, 100 * 2^n)
    expect(t.sleeps).toEqual([100, 100, 100]);
  });

  it('gives up when the next wait would pass the deadline, and never sleeps past it', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    broker.pool
      .intercept({ path: TOKEN_PATH(), method: 'GET' })
      .reply((opts) => {
        record(broker.seen, opts as never);
        return { statusCode: 503, data: errorBody('unavailable', 'upstream down') };
      })
      .persist();
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep, random: () => 1, deadlineMs: 5_000 });
    const error = await client.getToken(CONN).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).status).toBe(503);
    expect(t.sleeps).toEqual([100, 200, 400, 800, 1600]);
    expect(t.sleeps.reduce((a, b) => a + b, 0)).toBeLessThan(5_000);
    expect(t.now() - T0).toBeLessThan(5_000);
    expect(broker.seen).toHaveLength(6);
  });

  it('does not wait for a Retry-After beyond the deadline: the error comes at once with retryAfterSeconds', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([[429, errorBody('rate_limited', 'ledger exhausted'), { 'retry-after': '120' }]]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    const error = await client.getToken(CONN, { deadlineMs: 3_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(error).toMatchObject({ code: 'rate_limited', status: 429, retryAfterSeconds: 120, connection: CONN });
    expect(t.sleeps).toEqual([]);
    expect(broker.seen).toHaveLength(1);
  });

  it('reports an unreachable broker as BrokerUnreachableError (an UnavailableError, status 0) after retrying', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    broker.pool.intercept({ path: TOKEN_PATH(), method: 'GET' }).replyWithError(new Error('connect ECONNREFUSED')).persist();
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep, random: () => 1, deadlineMs: 1_000 });
    const error = await client.getToken(CONN).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BrokerUnreachableError);
    expect(error).toBeInstanceOf(UnavailableError);
    expect(error).toMatchObject({ code: 'unavailable', status: 0 });
    expect(t.sleeps).toEqual([100, 200, 400]);
  });

  it('times out a hanging attempt and retries it', async () => {
    broker = mockBroker();
    broker.pool.intercept({ path: TOKEN_PATH(), method: 'GET' }).reply(200, tokenBody('tok-slow')).delay(5_000);
    replies([[200, tokenBody('tok-1')]]);
    const client = newClient({ dispatcher: broker.agent, attemptTimeoutMs: 50, sleep: async () => undefined });
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
  });

  it.each([
    [400, 'invalid_request', InvalidRequestError],
    [403, 'forbidden', ForbiddenError],
    [404, 'not_found', NotFoundError],
    [500, 'internal', InternalError],
    [502, 'upstream_error', UpstreamError],
  ] as const)('does not retry %i %s', async (status, code, cls) => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [
        status,
        errorBody(code, `nope ${code}`, code === 'upstream_error' ? { upstream_error: 'invalid_client' } : {}),
        { 'retry-after': '1' },
      ],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    const error = await client.getToken(CONN).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(cls);
    expect(error).toBeInstanceOf(TokenBrokerError);
    expect(error).toMatchObject({ code, status, connection: CONN });
    expect((error as Error).message).toContain(`nope ${code}`);
    expect(t.sleeps).toEqual([]);
    expect(broker.seen).toHaveLength(1);
  });
});

describe('TokenBrokerClient: error classes', () => {
  it('UpstreamError carries the OAuth code from upstream_error', async () => {
    broker = mockBroker();
    replies([[502, errorBody('upstream_error', 'upstream refused the client credentials', { upstream_error: 'invalid_client' })]]);
    const error = await newClient({ dispatcher: broker.agent })
      .getToken(CONN)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error).toMatchObject({ name: 'UpstreamError', code: 'upstream_error', status: 502, upstreamError: 'invalid_client' });
  });

  it("maps API Gateway's own answers by status (403 Missing Authentication Token, 429 throttling, 502 broken integration)", async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [403, JSON.stringify({ message: 'User: arn:aws:sts::1:assumed-role/x/y is not authorized to perform: execute-api:Invoke' })],
      [502, JSON.stringify({ message: 'Internal server error' })],
    ]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    const forbidden = await client.getToken(CONN).catch((e: unknown) => e);
    expect(forbidden).toBeInstanceOf(ForbiddenError);
    expect((forbidden as Error).message).toContain('not authorized to perform: execute-api:Invoke');
    const broken = await client.getToken(CONN).catch((e: unknown) => e);
    expect(broken).toBeInstanceOf(InternalError);
    expect(broken).toMatchObject({ status: 502 });
  });

  it('a 200 without a usable token is InternalError and its message does not echo the body', async () => {
    broker = mockBroker();
    replies([[200, JSON.stringify({ access_token: 'tok-secret-looking', expires_in: 'soon' })]]);
    const error = await newClient({ dispatcher: broker.agent })
      .getToken(CONN)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InternalError);
    expect(String((error as Error).message)).not.toContain('tok-secret-looking');
    expect(inspect(error)).not.toContain('tok-secret-looking');
  });

  it('a returned token does not print its access token when logged or serialised', async () => {
    broker = mockBroker();
    replies([[200, tokenBody('tok-very-secret')]]);
    const token = await newClient({ dispatcher: broker.agent }).getToken(CONN);
    expect(token.accessToken).toBe('tok-very-secret');
    expect(JSON.stringify(token)).not.toContain('tok-very-secret');
    expect(inspect(token)).not.toContain('tok-very-secret');
    expect(`${JSON.stringify({ token })}`).not.toContain('tok-very-secret');
    expect({ ...token }.accessToken).toBe('tok-very-secret');
  });
});

describe('TokenBrokerClient: invalidate', () => {
  function invalidateReplies(status: number, body: string | Record<string, unknown> = '') {
    broker.pool.intercept({ path: `/prod/tokens/${CONN}/invalidate`, method: 'POST' }).reply((opts) => {
      record(broker.seen, opts as never);
      return {
        statusCode: status,
        data: typeof body === 'string' ? body : JSON.stringify(body),
        responseOptions: { headers: { 'content-type': 'application/json' } },
      };
    });
  }
  const posts = () => broker.seen.filter((r) => r.method === 'POST').length;

  it('POSTs the token, returns {invalidated: true}, and drops that token from the cache', async () => {
    broker = mockBroker();
    replies([
      [200, tokenBody('tok-1')],
      [200, tokenBody('tok-2')],
    ]);
    invalidateReplies(200, { invalidated: true });
    const client = newClient({ dispatcher: broker.agent });
    await client.getToken(CONN);
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: true });
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
    expect(broker.seen.map((r) => `${r.method} ${r.path}`)).toEqual([
      `GET ${TOKEN_PATH()}`,
      `POST /prod/tokens/${CONN}/invalidate`,
      `GET ${TOKEN_PATH()}`,
    ]);
  });

  it('returns not_current as the broker says, and keeps the cached token when an older token is reported', async () => {
    broker = mockBroker();
    replies([[200, tokenBody('tok-2')]]);
    invalidateReplies(200, { invalidated: false, reason: 'not_current' });
    const client = newClient({ dispatcher: broker.agent });
    await client.getToken(CONN);
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: false, reason: 'not_current' });
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
    expect(broker.seen).toHaveLength(2);
  });

  it('returns deferred with retryAfterSeconds, keeps serving that token, and answers repeats locally until retry_after has passed', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([[200, tokenBody('tok-1', 3600)]]);
    invalidateReplies(200, { invalidated: false, reason: 'deferred', retry_after: 30 });
    invalidateReplies(200, { invalidated: true });
    replies([[200, tokenBody('tok-2', 3600)]]);
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep });
    await client.getToken(CONN);
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: false, reason: 'deferred', retryAfterSeconds: 30 });
    // The broker keeps serving tok-1, and so does this process: from its cache, without a broker request.
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
    expect(broker.seen).toHaveLength(2);
    // A repeat within the window is answered from memory, with the seconds left.
    t.advance(10_000);
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: false, reason: 'deferred', retryAfterSeconds: 20 });
    expect(posts()).toBe(1);
    // Once retry_after has passed, a report goes to the broker again.
    t.advance(20_000);
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: true });
    expect(posts()).toBe(2);
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
  });

  it('collapses concurrent reports of one token into one request, and does not report an honoured token again', async () => {
    broker = mockBroker();
    invalidateReplies(200, { invalidated: true });
    const client = newClient({ dispatcher: broker.agent });
    const answers = await Promise.all(Array.from({ length: 10 }, () => client.invalidate(CONN, 'tok-1')));
    expect(answers).toEqual(Array(10).fill({ invalidated: true }));
    expect(broker.seen).toHaveLength(1);
    // Once honoured, the token is no longer the broker's current one: not_current, without asking.
    expect(await client.invalidate(CONN, 'tok-1')).toEqual({ invalidated: false, reason: 'not_current' });
    expect(broker.seen).toHaveLength(1);
  });

  it('a report that fails (403: the caller may not invalidate) does not make this process refuse the token', async () => {
    broker = mockBroker();
    replies([[200, tokenBody('tok-1', 3600)]]);
    invalidateReplies(403, { error: 'forbidden', message: 'caller is not allowed to use this connection' });
    replies([[200, tokenBody('tok-1', 3600)]]);
    const client = newClient({ dispatcher: broker.agent });
    await client.getToken(CONN);
    await expect(client.invalidate(CONN, 'tok-1')).rejects.toBeInstanceOf(ForbiddenError);
    // The broker is asked again and still serves it: the client takes it (it used to refuse it until it expired).
    expect((await client.getToken(CONN)).accessToken).toBe('tok-1');
    expect(broker.seen.map((r) => r.method)).toEqual(['GET', 'POST', 'GET']);
  });

  it('an unusable 200 body is InternalError (a 204 is no answer this broker gives)', async () => {
    broker = mockBroker();
    invalidateReplies(204);
    invalidateReplies(200, { invalidated: 'maybe', access_token: 'tok-echo' });
    invalidateReplies(200, { invalidated: false, reason: 'deferred' });
    const client = newClient({ dispatcher: broker.agent });
    await expect(client.invalidate(CONN, 'tok-old')).rejects.toBeInstanceOf(InternalError);
    const error = await client.invalidate(CONN, 'tok-echo').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InternalError);
    expect(inspect(error)).not.toContain('tok-echo');
    await expect(client.invalidate(CONN, 'tok-3')).rejects.toBeInstanceOf(InternalError);
  });

  it('refuses a rejected token the broker still serves (invalidation not yet everywhere) and retries until a new one comes', async () => {
    broker = mockBroker();
    const t = new FakeClock(T0);
    replies([
      [200, tokenBody('tok-1')],
      [200, tokenBody('tok-1')],
      [200, tokenBody('tok-1')],
      [200, tokenBody('tok-2')],
    ]);
    invalidateReplies(200, { invalidated: true });
    const client = newClient({ dispatcher: broker.agent, now: t.now, sleep: t.sleep, random: () => 1 });
    await client.getToken(CONN);
    await client.invalidate(CONN, 'tok-1');
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
    expect(t.sleeps).toEqual([100, 200]);
  });

  it('throws typed errors and never puts the token in the message', async () => {
    broker = mockBroker();
    invalidateReplies(400, errorBody('invalid_request', 'bad access_token tok-in-message'));
    const error = await newClient({ dispatcher: broker.agent })
      .invalidate(CONN, 'tok-in-message')
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect((error as Error).message).not.toContain('tok-in-message');
    expect((error as Error).message).toContain('[token redacted]');
  });
});

/** Re-signs the captured request with aws4, over exactly the headers the client signed. */
function resign(req: SeenRequest, region: string): string {
  const signedNames = /SignedHeaders=([^,]+)/.exec(req.headers.authorization ?? '')?.[1]?.split(';') ?? [];
  const headers: Record<string, string> = {};
  for (const name of signedNames) headers[name] = req.headers[name] ?? '';
  const signer = new aws4.RequestSigner(
    {
      host: req.headers.host,
      method: req.method,
      path: req.path,
      headers,
      body: req.body,
      service: 'execute-api',
      region,
      doNotModifyHeaders: true,
    },
    CREDENTIALS,
  );
  // With doNotModifyHeaders aws4 does not read X-Amz-Date itself: give it the request's signing time.
  (signer as unknown as { datetime: string }).datetime = req.headers['x-amz-date'] ?? '';
  return String((signer.sign().headers as Record<string, string>).Authorization);
}

describe('TokenBrokerClient: default transport (the runtime fetch, no dispatcher)', () => {
  it('signs, sends and parses through the built-in fetch against a real local server', async () => {
    const seen: SeenRequest[] = [];
    const server = await listen((req, res, body) => {
      const request: SeenRequest = { method: req.method ?? '', path: req.url ?? '', headers: {}, body: body || undefined };
      for (const [k, v] of Object.entries(req.headers)) request.headers[k] = String(v);
      seen.push(request);
      const valid = resign(request, 'eu-west-1') === request.headers.authorization;
      if (!valid) {
        res.writeHead(403, { 'content-type': 'application/json' }).end(errorBody('forbidden', 'signature mismatch'));
      } else if (seen.length === 1) {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(errorBody('unavailable', 'busy'));
      } else if (req.method === 'POST') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ invalidated: true }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(tokenBody('tok-fetch'));
      }
    });
    try {
      const delays: number[] = [];
      const client = new TokenBrokerClient({
        endpoint: `${server.url}/prod`,
        region: 'eu-west-1',
        credentials: CREDENTIALS,
        sleep: async (ms) => void delays.push(ms),
        random: () => 0,
      });
      const token = await client.getToken(CONN);
      expect(token.accessToken).toBe('tok-fetch');
      expect(delays).toEqual([1000]);
      expect(await client.invalidate(CONN, 'tok-fetch')).toEqual({ invalidated: true });
      expect(seen.map((r) => `${r.method} ${r.path}`)).toEqual([
        `GET ${TOKEN_PATH()}`,
        `GET ${TOKEN_PATH()}`,
        `POST /prod/tokens/${CONN}/invalidate`,
      ]);
      expect(seen[0]?.headers.host).toBe(new URL(server.url).host);
    } finally {
      await server.close();
    }
  });
});

describe('NodeSha256 (the signer’s hash, from node:crypto)', () => {
  it('matches SHA-256 and HMAC-SHA-256 test vectors (FIPS 180-2, RFC 4231 case 2) for strings and bytes', async () => {
    const sha = new NodeSha256();
    sha.update('ab');
    sha.update(new TextEncoder().encode('c'));
    expect(Buffer.from(await sha.digest()).toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    sha.reset();
    expect(Buffer.from(await sha.digest()).toString('hex')).toBe(createHash('sha256').digest('hex'));
    const hmac = new NodeSha256('Jefe');
    hmac.update(new TextEncoder().encode('what do ya want for nothing?').buffer);
    expect(Buffer.from(await hmac.digest()).toString('hex')).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
    const view = new NodeSha256(new Uint8Array(Buffer.from('xxJefexx')).subarray(2, 6));
    view.update('what do ya want for nothing?');
    expect(Buffer.from(await view.digest()).toString('hex')).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });
});
