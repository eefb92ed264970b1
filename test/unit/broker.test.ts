/**
 * TokenBroker's branches over in-memory fakes (test/support/fast-broker.ts): each path of the read path,
 * the lease, the budget guard and invalidation, in milliseconds and with an exact count of what reached the
 * store and the upstream. The same rules under real concurrency and real DynamoDB conditions are proven on
 * dynalite in test/integration.
 */
import { describe, expect, it } from 'vitest';
import { principalFromArn } from '../../functions/core/authz.js';
import { StoreUnavailable } from '../../functions/core/ports.js';
import { brokerError } from '../support/clock.js';
import { FAST_CALLER, MemorySealer, fastWorld } from '../support/fast-broker.js';

const caller = principalFromArn(FAST_CALLER);
const get = (minTtlSeconds = 60, connection = 'main') => ({ connection, principal: caller, minTtlSeconds });

describe('TokenBroker read path (in-memory fakes)', () => {
  it('refreshes once, then serves from memory, and another container serves from the store', async () => {
    const w = fastWorld();
    const a = w.broker();
    const first = await a.getToken(get());
    expect(first.outcome).toBe('refreshed');
    expect((await a.getToken(get())).outcome).toBe('memory');
    const b = w.broker();
    const other = await b.getToken(get());
    expect(other).toMatchObject({ outcome: 'store', token: { fp: first.token.fp } });
    expect(w.upstream.requests).toHaveLength(1);
    expect(w.store.items.get('main')).toMatchObject({ ver: 1, fp: first.token.fp, reason: 'expired' });
  });

  it('reads the store again once the memory entry is older than memoryMaxAgeMs, without going upstream', async () => {
    const w = fastWorld();
    const a = w.broker({ memoryMaxAgeMs: 1_000 });
    await a.getToken(get());
    const reads = w.store.calls.get;
    await a.getToken(get());
    expect(w.store.calls.get).toBe(reads);
    w.clock.advance(1_000);
    expect((await a.getToken(get())).outcome).toBe('store');
    expect(w.store.calls.get).toBe(reads + 1);
    expect(w.upstream.requests).toHaveLength(1);
  });

  it('refreshes when the cached token no longer covers min_ttl plus the skew (reason expired)', async () => {
    const w = fastWorld();
    const a = w.broker({ skewMs: 5_000 });
    const first = await a.getToken(get(60));
    // 300 s token: 60 s + 5 s skew still fit 234 s in; at 236 s they do not.
    w.clock.advance(234_000);
    expect((await a.getToken(get(60))).token.fp).toBe(first.token.fp);
    w.clock.advance(2_000);
    const next = await a.getToken(get(60));
    expect(next.outcome).toBe('refreshed');
    expect(next.token.fp).not.toBe(first.token.fp);
    expect(w.store.items.get('main')?.reason).toBe('expired');
    expect(w.upstream.requests).toHaveLength(2);
  });

  it('answers 400 for a min_ttl no token of this upstream can meet, without a request', async () => {
    const w = fastWorld();
    const a = w.broker();
    await a.getToken(get());
    const e = await brokerError(a.getToken(get(3_600)));
    expect(e.code).toBe('invalid_request');
    expect(w.upstream.requests).toHaveLength(1);
  });
});

describe('authorisation comes before any I/O (deny by default)', () => {
  it.each([
    ['an unknown connection', { connection: 'nope', principal: caller }, 'not_found'],
    ['no caller identity', { connection: 'main', principal: undefined }, 'forbidden'],
    [
      'a role that is not listed',
      { connection: 'main', principal: principalFromArn('arn:aws:sts::111122223333:assumed-role/other/s') },
      'forbidden',
    ],
    [
      'the right role name in another account',
      { connection: 'main', principal: principalFromArn('arn:aws:sts::999999999999:assumed-role/payments-api/s') },
      'forbidden',
    ],
  ])('%s', async (_name, req, code) => {
    const w = fastWorld();
    const e = await brokerError(w.broker().getToken({ ...req, minTtlSeconds: 60 }));
    expect(e.code).toBe(code);
    expect(w.store.calls.get + w.store.calls.acquireLease).toBe(0);
    expect(w.upstream.requests).toHaveLength(0);
  });
});

describe('the lease: one upstream request at a time across containers', () => {
  it('a request that finds the lease held waits for the holder’s publish and sends nothing', async () => {
    const w = fastWorld();
    const holder = w.broker();
    await holder.getToken(get());
    w.clock.advance(300_000); // expired
    // Another container holds the lease; it publishes while our request waits.
    const lease = (await w.store.acquireLease('main', 'other', w.clock.now(), w.clock.now() + 20_000))!.lease;
    const sealer = new MemorySealer();
    const fresh = {
      accessToken: 'other-token',
      tokenType: 'Bearer',
      expiresAt: w.clock.now() + 300_000,
      issuedAt: w.clock.now(),
      fp: 'fp-other',
    };
    // It publishes just after our request's first read (which finds the lease held).
    w.store.fault = (op) => {
      if (op === 'get') {
        w.store.fault = undefined;
        setImmediate(() => {
          void sealer.seal('main', fresh).then((sealed) =>
            w.store.publish('main', lease!, {
              sealed,
              expiresAt: fresh.expiresAt,
              issuedAt: fresh.issuedAt,
              fp: fresh.fp,
              reason: 'expired',
            }),
          );
        });
      }
      return undefined;
    };
    const served = await w.broker().getToken(get());
    expect(served).toMatchObject({ outcome: 'waited', token: { fp: 'fp-other' } });
    expect(w.upstream.requests).toHaveLength(1);
  });

  it('a holder that dies is taken over when its lease runs out', async () => {
    const w = fastWorld();
    const start = w.clock.now();
    await w.store.acquireLease('main', 'dead', start, start + 2_000);
    const served = await w.broker({ maxWaitMs: 10_000 }).getToken(get());
    expect(served.outcome).toBe('refreshed');
    expect(w.upstream.requests).toHaveLength(1);
    expect(w.upstream.requests[0]!.at).toBeGreaterThanOrEqual(start + 2_000);
  });

  it('concurrent requests in one container share one refresh (in-process single flight)', async () => {
    const w = fastWorld();
    const a = w.broker();
    const served = await Promise.all(Array.from({ length: 20 }, () => a.getToken(get())));
    expect(new Set(served.map((s) => s.token.fp)).size).toBe(1);
    expect(w.upstream.requests).toHaveLength(1);
    expect(w.store.calls.acquireLease).toBe(1);
  });
});

describe('faults cost no budget', () => {
  it('a store that cannot be read answers 503 and sends nothing upstream', async () => {
    const w = fastWorld();
    w.store.fault = (op) =>
      op === 'get' ? new StoreUnavailable('DynamoDB unreachable', { cause: new Error('connect ECONNREFUSED') }) : undefined;
    const e = await brokerError(w.broker().getToken(get()));
    expect(e.code).toBe('unavailable');
    expect(e.extra.retryAfterSeconds).toBeGreaterThan(0);
    expect(w.upstream.requests).toHaveLength(0);
  });

  it('a token the store will not take is served by its container, published later, and fetched once', async () => {
    const w = fastWorld({ main: { rateLimit: { max: 10, windowSeconds: 28_800 } } });
    const a = w.broker();
    const b = w.broker();
    w.store.fault = (op) =>
      op === 'publish' ? new StoreUnavailable('DynamoDB 500', { cause: new Error('InternalServerError') }) : undefined;
    const served = await a.getToken(get());
    expect(served.outcome).toBe('refreshed');
    expect((await a.getToken(get())).token.fp).toBe(served.token.fp);
    const e = await brokerError(b.getToken(get()));
    expect(e.code).toBe('unavailable');
    w.store.fault = undefined;
    w.clock.advance(5_000);
    expect((await a.getToken(get())).token.fp).toBe(served.token.fp);
    expect(w.store.items.get('main')?.fp).toBe(served.token.fp);
    w.clock.advance(5_000);
    expect((await b.getToken(get())).token.fp).toBe(served.token.fp);
    expect(w.upstream.requests).toHaveLength(1);
  });

  it('an upstream outage leaves a backoff: other containers answer 503 without sending', async () => {
    const w = fastWorld();
    w.upstream.answer = () => ({ kind: 'unavailable', status: 503, detail: 'HTTP 503' });
    const e = await brokerError(w.broker().getToken(get()));
    expect(e.code).toBe('unavailable');
    const again = await brokerError(w.broker().getToken(get()));
    expect(again.code).toBe('unavailable');
    expect(again.extra.retryAfterSeconds).toBeGreaterThan(0);
    expect(w.upstream.requests).toHaveLength(1);
  });
});

describe('the credential circuit', () => {
  it('opens on invalid_client: no request until the probe, and a rotated secret is tried at once', async () => {
    const w = fastWorld();
    w.upstream.answer = () => ({ kind: 'oauth', status: 401, error: 'invalid_client' });
    const e = await brokerError(w.broker().getToken(get()));
    expect(e).toMatchObject({ code: 'upstream_error', extra: { upstreamError: 'invalid_client' } });
    const sent = w.upstream.requests.length;
    const reads = w.secrets.reads;
    // 4 minutes of requests every 5 s (the probe is due at 5 min): the secret is re-read about every 15 s.
    for (let i = 0; i < 48; i++) {
      w.clock.advance(5_000);
      expect((await brokerError(w.broker().getToken(get()))).extra.upstreamError).toBe('invalid_client');
    }
    expect(w.upstream.requests).toHaveLength(sent);
    expect(w.secrets.reads - reads).toBeLessThanOrEqual(240 / 15 + 1);
    // Ops rotate the secret: the next holder that re-reads it sends one request with the new one.
    w.secrets.set('sec/main', { client_id: 'broker-client', client_secret: 'rotated' });
    w.upstream.answer = () => ({ expiresIn: 300 });
    w.clock.advance(20_000);
    const served = await w.broker().getToken(get());
    expect(served.outcome).toBe('refreshed');
    expect(w.upstream.requests.at(-1)!.clientSecret).toBe('rotated');
    expect(w.store.items.get('main')).toMatchObject({ reason: 'rotation' });
    expect(w.store.items.get('main')?.circuit).toBeUndefined();
  });
});

describe('the budget guard on a scarce upstream', () => {
  const scarce = { main: { rateLimit: { max: 10, windowSeconds: 28_800 } } };

  it('a demand refresh (min_ttl) inside the spacing is refused with 429 and sends nothing', async () => {
    const w = fastWorld(scarce);
    const a = w.broker();
    await a.getToken(get(60));
    w.clock.advance(200_000); // 100 s left: min_ttl 200 needs a new token
    const ledgerReads = w.ledger.reads;
    const e = await brokerError(a.getToken(get(200)));
    expect(e).toMatchObject({ code: 'rate_limited', extra: { refusal: 'spacing' } });
    expect(w.upstream.requests).toHaveLength(1);
    // The spacing left in the item refuses it: no lease taken, the ledger not even read.
    expect(w.store.calls.acquireLease).toBe(1);
    expect(w.ledger.reads).toBe(ledgerReads);
  });

  it('reports of the cached token are deferred inside the spacing; the token stays in service', async () => {
    const w = fastWorld(scarce);
    const a = w.broker();
    const first = await a.getToken(get());
    const answer = await a.invalidate({ connection: 'main', principal: caller, accessToken: first.token.accessToken });
    expect(answer).toMatchObject({ invalidated: false, reason: 'deferred' });
    expect((await w.broker().getToken(get())).token.fp).toBe(first.token.fp);
    expect(w.upstream.requests).toHaveLength(1);
  });

  it('without rateLimit a report is honoured: the next request fetches a new token', async () => {
    const w = fastWorld();
    const a = w.broker();
    const first = await a.getToken(get());
    const answer = await a.invalidate({ connection: 'main', principal: caller, accessToken: first.token.accessToken });
    expect(answer).toMatchObject({ invalidated: true });
    const next = await w.broker().getToken(get());
    expect(next.token.fp).not.toBe(first.token.fp);
    expect(w.upstream.requests).toHaveLength(2);
    const stale = await a.invalidate({ connection: 'main', principal: caller, accessToken: first.token.accessToken });
    expect(stale).toMatchObject({ invalidated: false, reason: 'not_current' });
  });

  it('never sends more than max requests per window, whatever the callers do', async () => {
    const w = fastWorld({ main: { rateLimit: { max: 3, windowSeconds: 3_600, reserve: 1, minSpacingSeconds: 0 } } });
    w.upstream.answer = () => ({ expiresIn: 60 });
    for (let i = 0; i < 40; i++) {
      await w
        .broker()
        .getToken(get(30))
        .catch(() => undefined);
      w.clock.advance(40_000);
    }
    const inFirstWindow = w.upstream.requests.filter((r) => r.at < w.upstream.requests[0]!.at + 3_600_000);
    expect(inFirstWindow.length).toBe(3);
  });
});
