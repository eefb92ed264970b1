import { Readable } from 'node:stream';
import { Agent, fetch, request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ForbiddenError, RateLimitedError, type TokenSource } from '@token-broker/client';
import { tokenInterceptor } from '@token-broker/client/interceptor';
// White-box: an internal helper, imported from the source.
import { withAuthorization } from '../../client/src/interceptor.js';
import { errorBody, listen, mockBroker, newClient, record, tokenBody, type LocalServer } from './support.js';

const CONN = 'vitesse-staging';

interface UpstreamHit {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

/** A fake upstream API: 401 for any token in `rejected`, else 200 echoing what it got. */
async function fakeApi(rejected: Set<string>) {
  const hits: UpstreamHit[] = [];
  const server = await listen((req, res, body) => {
    const authorization = req.headers.authorization;
    hits.push({ method: req.method ?? '', url: req.url ?? '', authorization, body });
    const token = authorization?.replace(/^Bearer /, '');
    if (!token || rejected.has(token)) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token"' });
      res.end(JSON.stringify({ error: 'invalid_token', detail: 'upstream says no' }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, method: req.method, body }));
  });
  return { server, hits };
}

let broker: ReturnType<typeof mockBroker>;
let api: { server: LocalServer; hits: UpstreamHit[] };
let other: LocalServer | undefined;
let agent: Agent;
const rejected = new Set<string>();

beforeEach(async () => {
  rejected.clear();
  broker = mockBroker();
  api = await fakeApi(rejected);
  agent = new Agent();
});

afterEach(async () => {
  await broker.agent.close();
  await agent.close();
  await api.server.close();
  await other?.close();
  other = undefined;
});

/**
 * Broker mock: GET serves `tokens` in order (last one repeats); POST invalidate answers `invalidateStatus`
 * with `invalidateAnswer` (200) or an error body.
 */
function brokerServes(tokens: string[], invalidateStatus = 200, invalidateAnswer: Record<string, unknown> = { invalidated: true }) {
  const queue = [...tokens];
  broker.pool
    .intercept({ path: (p) => p.startsWith(`/prod/tokens/${CONN}?`), method: 'GET' })
    .reply((opts) => {
      record(broker.seen, opts as never);
      const token = queue.length > 1 ? queue.shift() : queue[0];
      return token === 'FORBIDDEN'
        ? { statusCode: 403, data: errorBody('forbidden', 'caller is not allowed to use this connection') }
        : { statusCode: 200, data: tokenBody(token ?? 'none') };
    })
    .persist();
  broker.pool
    .intercept({ path: `/prod/tokens/${CONN}/invalidate`, method: 'POST' })
    .reply((opts) => {
      record(broker.seen, opts as never);
      return {
        statusCode: invalidateStatus,
        data: invalidateStatus === 200 ? JSON.stringify(invalidateAnswer) : errorBody('internal', 'broken'),
        responseOptions: { headers: { 'content-type': 'application/json' } },
      };
    })
    .persist();
}

function upstream(options: Partial<Parameters<typeof tokenInterceptor>[1]> = {}) {
  const client = newClient({ dispatcher: broker.agent, sleep: async () => undefined, deadlineMs: 1_000 });
  const healErrors: unknown[] = [];
  const dispatcher = agent.compose(
    tokenInterceptor(client, { connection: CONN, origin: api.server.url, onHealError: (e) => healErrors.push(e), ...options }),
  );
  return { client, dispatcher, healErrors };
}

const invalidations = () => broker.seen.filter((r) => r.method === 'POST').map((r) => JSON.parse(r.body ?? '{}').access_token);
const tokenFetches = () => broker.seen.filter((r) => r.method === 'GET').length;

describe('tokenInterceptor', () => {
  it('adds the bearer token for the configured origin', async () => {
    brokerServes(['tok-1']);
    const { dispatcher } = upstream();
    const res = await request(`${api.server.url}/payments/1`, { dispatcher });
    expect(res.statusCode).toBe(200);
    await res.body.json();
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1']);
  });

  it('replaces an Authorization header the caller set, in every header shape', async () => {
    brokerServes(['tok-1']);
    const { dispatcher } = upstream();
    for (const headers of [
      { Authorization: 'Bearer mine' },
      ['authorization', 'Bearer mine', 'x-a', '1'],
      new Map([['AUTHORIZATION', 'Bearer mine']]),
    ]) {
      const res = await request(`${api.server.url}/x`, { dispatcher, headers: headers as never });
      await res.body.text();
    }
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-1', 'Bearer tok-1']);
    expect(withAuthorization(['a', '1', 'Authorization', 'x'], 'B')).toEqual(['a', '1', 'authorization', 'B']);
    expect(withAuthorization({ a: '1', authorization: 'x' }, 'B')).toEqual({ a: '1', authorization: 'B' });
    expect(withAuthorization(null, 'B')).toEqual({ authorization: 'B' });
  });

  it('never sends the token to another origin', async () => {
    brokerServes(['tok-1']);
    let seenAuth: string | undefined = 'unset';
    other = await listen((req, res) => {
      seenAuth = req.headers.authorization;
      res.end('ok');
    });
    const { dispatcher } = upstream();
    const res = await request(`${other.url}/elsewhere`, { dispatcher });
    await res.body.text();
    expect(seenAuth).toBeUndefined();
    expect(tokenFetches()).toBe(0);
  });

  it('heals a 401: reports the token, gets a new one and replays the POST once, with the same body', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher, healErrors } = upstream();
    const body = JSON.stringify({ amount: 1234, currency: 'EUR' });
    const res = await request(`${api.server.url}/payments`, {
      dispatcher,
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toEqual({ ok: true, method: 'POST', body });
    expect(api.hits.map((h) => [h.authorization, h.body])).toEqual([
      ['Bearer tok-1', body],
      ['Bearer tok-2', body],
    ]);
    expect(invalidations()).toEqual(['tok-1']);
    expect(healErrors).toEqual([]);
  });

  it('heals undici fetch() requests too (fetch streams every body: it is buffered for the replay)', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher } = upstream();
    const body = JSON.stringify({ amount: 5 });
    const res = await fetch(`${api.server.url}/payments`, {
      dispatcher,
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, method: 'POST', body });
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-2']);
  });

  it('a later request uses the healed token without asking the broker again', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher } = upstream();
    for (let i = 0; i < 3; i++) await (await request(`${api.server.url}/p/${i}`, { dispatcher })).body.text();
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-2', 'Bearer tok-2', 'Bearer tok-2']);
    expect(tokenFetches()).toBe(2);
  });

  it('concurrent requests rejected with one token cause one report and one new token', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher } = upstream();
    const statuses = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const res = await request(`${api.server.url}/p/${i}`, { dispatcher });
        await res.body.text();
        return res.statusCode;
      }),
    );
    expect(statuses).toEqual(Array(10).fill(200));
    expect(invalidations()).toEqual(['tok-1']);
    expect(tokenFetches()).toBe(2);
  });

  it('retries only once: a second 401 goes to the caller', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1').add('tok-2');
    const { dispatcher } = upstream();
    const res = await request(`${api.server.url}/payments`, { dispatcher, method: 'POST', body: 'x' });
    expect(res.statusCode).toBe(401);
    expect(await res.body.json()).toEqual({ error: 'invalid_token', detail: 'upstream says no' });
    expect(api.hits).toHaveLength(2);
  });

  it('when no new token can be had, the caller gets the original 401 (headers and body) and onHealError the reason', async () => {
    brokerServes(['tok-1', 'FORBIDDEN']);
    rejected.add('tok-1');
    const { dispatcher, healErrors } = upstream();
    const res = await request(`${api.server.url}/payments`, { dispatcher });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(await res.body.json()).toEqual({ error: 'invalid_token', detail: 'upstream says no' });
    expect(api.hits).toHaveLength(1);
    expect(healErrors).toHaveLength(1);
    expect(healErrors[0]).toBeInstanceOf(ForbiddenError);
  });

  it('still gets a new token when the report itself fails', async () => {
    brokerServes(['tok-1', 'tok-2'], 500);
    rejected.add('tok-1');
    const { dispatcher, healErrors } = upstream();
    const res = await request(`${api.server.url}/payments`, { dispatcher });
    expect(res.statusCode).toBe(200);
    await res.body.text();
    expect(healErrors.length).toBe(1);
  });

  it('a stream body over the replay limit is sent once; its 401 goes to the caller and the token is still reported', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher } = upstream({ maxReplayBodyBytes: 10 });
    const chunks = ['0123456789', 'abcdefghij', 'klm'];
    const res = await request(`${api.server.url}/upload`, { dispatcher, method: 'PUT', body: Readable.from(chunks) });
    expect(res.statusCode).toBe(401);
    await res.body.text();
    expect(api.hits.map((h) => h.body)).toEqual([chunks.join('')]);
    await expect.poll(() => invalidations()).toEqual(['tok-1']);
    // The next request gets the fresh token.
    await (await request(`${api.server.url}/next`, { dispatcher })).body.text();
    expect(api.hits.at(-1)?.authorization).toBe('Bearer tok-2');
  });

  it('a stream body under the limit is buffered and replayed', async () => {
    brokerServes(['tok-1', 'tok-2']);
    rejected.add('tok-1');
    const { dispatcher } = upstream();
    const res = await request(`${api.server.url}/upload`, { dispatcher, method: 'PUT', body: Readable.from(['abc', 'def']) });
    expect(res.statusCode).toBe(200);
    await res.body.text();
    expect(api.hits.map((h) => h.body)).toEqual(['abcdef', 'abcdef']);
  });

  it('fails the request with the broker error when no token can be had at all', async () => {
    brokerServes(['FORBIDDEN']);
    const { dispatcher } = upstream();
    await expect(request(`${api.server.url}/payments`, { dispatcher })).rejects.toBeInstanceOf(ForbiddenError);
    expect(api.hits).toHaveLength(0);
  });

  it('an abort while the token is being fetched cancels the request', async () => {
    brokerServes(['tok-1']);
    const { dispatcher } = upstream();
    const controller = new AbortController();
    const pending = request(`${api.server.url}/payments`, { dispatcher, signal: controller.signal });
    controller.abort(new Error('caller gave up'));
    await expect(pending).rejects.toThrow();
    // A later request through the same dispatcher is the only one the API ever sees.
    await request(`${api.server.url}/payments`, { dispatcher });
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1']);
  });

  it('does not replay when the broker defers the report: the caller gets the 401, onHealError a RateLimitedError', async () => {
    brokerServes(['tok-1', 'tok-2'], 200, { invalidated: false, reason: 'deferred', retry_after: 42 });
    rejected.add('tok-1');
    const { dispatcher, healErrors } = upstream();
    const res = await request(`${api.server.url}/payments`, { dispatcher, method: 'POST', body: 'x' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(await res.body.json()).toEqual({ error: 'invalid_token', detail: 'upstream says no' });
    // Sent once, with the rejected token; no second token was asked for.
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1']);
    expect(invalidations()).toEqual(['tok-1']);
    expect(tokenFetches()).toBe(1);
    expect(healErrors).toHaveLength(1);
    expect(healErrors[0]).toBeInstanceOf(RateLimitedError);
    expect(healErrors[0]).toMatchObject({ code: 'rate_limited', retryAfterSeconds: 42, connection: CONN });

    // The broker keeps serving tok-1, and so does the client: the next request goes out with it, its 401 is
    // answered from the client's memory of the deferral (no second report), and it is not replayed either.
    const next = await request(`${api.server.url}/payments/2`, { dispatcher });
    expect(next.statusCode).toBe(401);
    await next.body.text();
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-1']);
    expect(invalidations()).toEqual(['tok-1']);
    expect(tokenFetches()).toBe(1);
  });

  it('does not replay with the token it just reported when the token source hands that same token back', async () => {
    rejected.add('tok-1');
    const reports: string[] = [];
    const sameToken: TokenSource = {
      getToken: async () => ({ accessToken: 'tok-1', tokenType: 'Bearer', expiresAt: new Date(Date.now() + 300_000), expiresIn: 300 }),
      invalidate: async (_connection, token) => {
        reports.push(token);
        return { invalidated: true };
      },
    };
    const healErrors: unknown[] = [];
    const dispatcher = agent.compose(
      tokenInterceptor(sameToken, { connection: CONN, origin: api.server.url, onHealError: (e) => healErrors.push(e) }),
    );
    const res = await request(`${api.server.url}/payments`, { dispatcher, method: 'POST', body: 'x' });
    expect(res.statusCode).toBe(401);
    expect(await res.body.json()).toEqual({ error: 'invalid_token', detail: 'upstream says no' });
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1']);
    expect(reports).toEqual(['tok-1']);
  });

  it('replays after a not_current answer: the broker already has a newer token', async () => {
    brokerServes(['tok-1', 'tok-2'], 200, { invalidated: false, reason: 'not_current' });
    rejected.add('tok-1');
    const { dispatcher, healErrors } = upstream();
    const res = await request(`${api.server.url}/payments`, { dispatcher });
    expect(res.statusCode).toBe(200);
    await res.body.text();
    expect(api.hits.map((h) => h.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-2']);
    expect(healErrors).toEqual([]);
  });

  it('refuses a plain-http origin that is not loopback', () => {
    const client = newClient({ dispatcher: broker.agent });
    expect(() => tokenInterceptor(client, { connection: CONN, origin: 'http://api.example.com' })).toThrow(/https/);
  });
});
