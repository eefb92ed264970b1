/**
 * Invariant 2 (the ledger) and upstream failure handling across instances, against dynalite and a fake
 * IdP whose receipt log is the ground truth.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { principalFromArn } from '../../functions/core/authz.js';
import type { BrokerError } from '../../functions/core/errors.js';
import type { TokenBroker } from '../../functions/core/broker.js';
import { localDynamoClient } from '../../functions/local/dynamodb.js';
import { brokerError, FakeClock, realClock } from '../support/clock.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { issue, secretOf } from '../../testkit/idp.js';

const principal = principalFromArn(CALLER);
let world: World;
let store: DynamoTokenStore;

beforeAll(async () => {
  world = await startWorld();
  store = new DynamoTokenStore(localDynamoClient(world.dynamo.endpoint), world.table);
});
afterAll(async () => world.close());
afterEach(() => {
  world.idp.respond = issue();
  world.idp.receipts.length = 0;
});

const get = (b: TokenBroker, connection: string, minTtlSeconds = 60) => b.getToken({ connection, principal, minTtlSeconds });
/** A rate limit with the budget guard's reserve and spacing off: these tests are about the ledger itself. */
const limited = (key: string, max = 10, windowSeconds = 28_800) => ({
  rateLimit: { max, windowSeconds, key, reserve: 0, minSpacingSeconds: 0 },
});

describe('rate-limit ledger (invariant 2)', () => {
  it('allows max attempts per window, then 429 with Retry-After from the oldest entry, without calling the IdP (B1)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { b1: { ...limited('b1', 3, 60) } });
    world.idp.respond = issue(10);
    const { broker } = instance(world, { clock, config });
    const first = clock.now();
    for (let i = 0; i < 3; i++) {
      await get(broker, 'b1', 0);
      clock.advance(10_000); // it expired
    }
    expect(world.idp.count()).toBe(3);
    const err = await get(broker, 'b1', 0).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'rate_limited' });
    // W' = 60 s + the 11 s margin; the oldest attempt was at `first`.
    expect((err as { extra: { retryAfterSeconds: number } }).extra.retryAfterSeconds).toBe(
      Math.ceil((first + 71_000 - clock.now()) / 1000),
    );
    expect(world.idp.count()).toBe(3);
    clock.t = first + 71_001; // the oldest entry has left the window
    expect((await get(broker, 'b1', 0)).outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(4);
  });

  it('with 8 of 10 slots used, 30 concurrent refreshes across instances let exactly 2 reach the IdP (B3)', async () => {
    const names = Array.from({ length: 30 }, (_, i) => `b3-${i}`);
    const config = connections(world.idp, Object.fromEntries(names.map((n) => [n, limited('b3')])));
    const now = Date.now();
    const entries = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`seed-${i}`, now - 1000 * i]));
    expect(await store.write('b3', 0, entries, 'seed-0', now + 3_600_000)).toBe('written');
    const brokers = Array.from({ length: 5 }, () => instance(world, { clock: realClock, config }).broker);
    const results = await Promise.allSettled(names.map((n, i) => get(brokers[i % 5]!, n)));
    expect(world.idp.count()).toBe(2);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(refused).toHaveLength(28);
    for (const r of refused) expect(r.reason).toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: expect.any(Number) } });
    expect(Object.keys((await store.read('b3')).entries)).toHaveLength(10);
  });

  it('counts failed attempts (500, timeout, reset) and never refunds them; the backoff doubles with each (B4)', async () => {
    const clock = new FakeClock(Date.now());
    // Default spacing (2880 s): the cap of the doubling.
    const config = connections(world.idp, { b4: { rateLimit: { max: 10, windowSeconds: 28_800, key: 'b4', reserve: 0 } } });
    const { broker } = instance(world, { clock, config, options: { upstreamTimeoutMs: 300 } });
    const answers = [{ status: 500, body: { error: 'server_error' } }, { delayMs: 1_000 }, { reset: true }];
    world.idp.respond = (_r, i) => answers[i]!;
    for (let i = 0; i < answers.length; i++) {
      // Every attempt spent a slot: an upstream that stays down must not drain the budget in minutes.
      const wait = 30 * 2 ** i;
      await expect(get(broker, 'b4')).rejects.toMatchObject({ code: 'unavailable', extra: { retryAfterSeconds: wait } });
      const item = await store.get('b4');
      expect(item?.backoff).toMatchObject({ code: 'unavailable', failures: i + 1 });
      expect(item?.owner).toBeUndefined();
      // While the backoff lasts, nobody calls the IdP.
      clock.advance(wait * 1000 - 1_000);
      await expect(get(instance(world, { clock, config }).broker, 'b4')).rejects.toMatchObject({ code: 'unavailable' });
      expect(world.idp.count()).toBe(i + 1);
      clock.advance(1_001);
    }
    expect(Object.keys((await store.read('b4')).entries)).toHaveLength(3);
    // A success ends the series: the next failure backs off 30 s again.
    world.idp.respond = issue();
    await get(broker, 'b4');
    expect((await store.get('b4'))?.backoff).toBeUndefined();
    clock.advance(300_000); // the token expired
    world.idp.respond = () => ({ status: 503 });
    await expect(get(broker, 'b4')).rejects.toMatchObject({ code: 'unavailable', extra: { retryAfterSeconds: 30 } });
  });

  it('a debit that stalled past the send cut-off is not sent: the slot is refunded, no fleet backoff, no upstream failure reported', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { stall: limited('stall') });
    const { broker } = instance(world, { clock, config });
    const ledger = (broker as unknown as { deps: { ledger: DynamoTokenStore } }).deps.ledger;
    const write = ledger.write.bind(ledger);
    let stalls = 1;
    ledger.write = async (...args) => {
      const r = await write(...args);
      if (stalls-- > 0) clock.advance(2_001); // a ledger write slower than the 2 s send cut-off
      return r;
    };
    const err = await brokerError(get(broker, 'stall'));
    expect(err).toMatchObject({ code: 'unavailable', extra: { retryAfterSeconds: 1 } });
    expect(err.message).toMatch(/nothing was sent/);
    expect(world.idp.count()).toBe(0);
    expect(Object.keys((await store.read('stall')).entries)).toHaveLength(0);
    expect((await store.get('stall'))?.backoff).toBeUndefined();
    expect(world.logs.some((l) => l.message === 'upstream token request failed' && l.fields?.connection === 'stall')).toBe(false);
    // Nothing holds the fleet back: the next request (another container) sends at once.
    expect((await get(instance(world, { clock, config }).broker, 'stall')).outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(1);
  });

  it('an upstream 429 Retry-After is shared by every connection on the ledger; garbage means the default (B9)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { 'b9-a': limited('b9'), 'b9-b': limited('b9') });
    world.idp.respond = () => ({ status: 429, headers: { 'retry-after': '120' }, body: { error: 'slow_down' } });
    const a = instance(world, { clock, config }).broker;
    await expect(get(a, 'b9-a')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 120 } });
    expect((await store.read('b9')).backoffUntil).toBe(clock.now() + 120_000);
    clock.advance(60_000);
    const b = instance(world, { clock, config }).broker;
    await expect(get(b, 'b9-b')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 60 } });
    expect(world.idp.count()).toBe(1);
    clock.advance(61_000);
    world.idp.respond = () => ({ status: 429, headers: { 'retry-after': 'soon' } });
    await expect(get(b, 'b9-b')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 60 } });
    expect(world.idp.count()).toBe(2);
  });

  it('without a rate limit, a backoff after failure is at most 15 s', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { free: {} });
    world.idp.respond = () => ({ status: 429, headers: { 'retry-after': '3600' } });
    const { broker } = instance(world, { clock, config });
    await expect(get(broker, 'free')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 15 } });
    world.idp.respond = issue();
    clock.advance(15_001);
    expect((await get(broker, 'free')).outcome).toBe('refreshed');
  });
});

describe('credentials and OAuth errors (invariant 6, C3, C4, D2)', () => {
  it('a secret rotated in the console is picked up after invalid_client: one retry, two ledger entries (D2)', async () => {
    const clock = new FakeClock(Date.now());
    world.secrets.set('sec/rot', { client_id: 'rot-client', client_secret: 'CANARY-OLD-SECRET' });
    const config = connections(world.idp, { rot: { secret: 'sec/rot', ...limited('rot') } });
    const { broker } = instance(world, { clock, config });
    // Warm the instance's secret cache with the old secret, then rotate.
    await get(broker, 'rot');
    world.secrets.set('sec/rot', { client_id: 'rot-client', client_secret: 'CANARY-NEW-SECRET' });
    const tokens = issue();
    world.idp.respond = (r, i) => (secretOf(r) === 'CANARY-NEW-SECRET' ? tokens(r, i) : { status: 401, body: { error: 'invalid_client' } });
    const t = (await get(broker, 'rot')).token.accessToken;
    await broker.invalidate({ connection: 'rot', principal, accessToken: t });
    const before = world.idp.count();
    const entriesBefore = Object.keys((await store.read('rot')).entries).length;
    const served = await get(broker, 'rot');
    expect(served.outcome).toBe('refreshed');
    // The cached secret was stale: invalid_client, re-read (new VersionId), one retry.
    expect(world.idp.receipts.slice(before).map(secretOf)).toEqual(['CANARY-OLD-SECRET', 'CANARY-NEW-SECRET']);
    expect(Object.keys((await store.read('rot')).entries).length - entriesBefore).toBe(2);
    expect(world.secrets.reads).toBeGreaterThanOrEqual(2);
  });

  it('invalid_client with an unchanged secret fails closed: no retry, 502 with the OAuth code, backoff (C3)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { c3: limited('c3') });
    world.idp.respond = () => ({ status: 401, headers: { 'www-authenticate': 'Basic' }, body: { error: 'invalid_client' } });
    const { broker } = instance(world, { clock, config });
    await expect(get(broker, 'c3')).rejects.toMatchObject({ code: 'upstream_error', extra: { upstreamError: 'invalid_client' } });
    expect(world.idp.count()).toBe(1);
    expect(Object.keys((await store.read('c3')).entries)).toHaveLength(1);
    await expect(get(instance(world, { clock, config }).broker, 'c3')).rejects.toMatchObject({
      code: 'upstream_error',
      extra: { upstreamError: 'invalid_client' },
    });
    expect(world.idp.count()).toBe(1);
  });

  it.each(['invalid_scope', 'unauthorized_client', 'unsupported_grant_type', 'invalid_request'])(
    '%s is a configuration error: no retry, negative-cached, one ledger attempt (C4)',
    async (code) => {
      const clock = new FakeClock(Date.now());
      const name = `c4-${code.replace(/_/g, '-')}`;
      const config = connections(world.idp, { [name]: limited(name) });
      world.idp.respond = () => ({ status: 400, body: { error: code, error_description: 'CANARY-DESCRIPTION' } });
      const brokers = [1, 2, 3].map(() => instance(world, { clock, config }).broker);
      for (const b of brokers) {
        const err = await get(b, name).catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'upstream_error', extra: { upstreamError: code } });
        expect((err as Error).message).not.toContain('CANARY');
      }
      expect(world.idp.count()).toBe(1);
      expect(Object.keys((await store.read(name)).entries)).toHaveLength(1);
    },
  );

  it('answers that are not a usable token are failures: not cached, slot consumed (C1, C2, A4)', async () => {
    const clock = new FakeClock(Date.now());
    const bodies: unknown[] = [
      '<html>login</html>',
      '{"access_token": "x',
      { token_type: 'Bearer' },
      { access_token: 'x', token_type: 'mac' },
      { access_token: 'x', token_type: 'Bearer', expires_in: 0 },
      { access_token: 'x', token_type: 'Bearer', expires_in: -5 },
    ];
    for (const [i, body] of bodies.entries()) {
      const name = `c1-${i}`;
      const config = connections(world.idp, { [name]: limited(name) });
      world.idp.respond = () => ({ body });
      await expect(get(instance(world, { clock, config }).broker, name)).rejects.toMatchObject({
        code: 'upstream_error',
        extra: { upstreamError: 'invalid_response' },
      });
      const item = await store.get(name);
      expect(item?.sealed).toBeUndefined();
      expect(Object.keys((await store.read(name)).entries)).toHaveLength(1);
    }
  });

  it('a granted scope narrower than requested is cached and served as granted (C9); refresh_token is not kept (C8)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { c9: { scope: 'read   write' } });
    world.idp.respond = () => ({
      body: { access_token: 'narrow', token_type: 'Bearer', expires_in: 600, scope: 'read', refresh_token: 'CANARY-RT' },
    });
    const served = await get(instance(world, { clock, config }).broker, 'c9');
    expect(world.idp.receipts[0]?.params.get('scope')).toBe('read write');
    expect(served.token.scope).toBe('read');
    expect(JSON.stringify(served.token)).not.toContain('CANARY-RT');
    const again = await get(instance(world, { clock, config }).broker, 'c9');
    expect(again).toMatchObject({ outcome: 'store', token: { scope: 'read' } });
  });

  it('a password-grant secret without username/password fails closed before any ledger slot is spent', async () => {
    const clock = new FakeClock(Date.now());
    world.secrets.set('sec/pw', { client_id: 'pw-client', client_secret: 'CANARY-PW-SECRET' });
    const config = connections(world.idp, { pw: { grantType: 'password', secret: 'sec/pw', ...limited('pw') } });
    const err = await get(instance(world, { clock, config }).broker, 'pw').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'internal' });
    expect((err as BrokerError).extra.detail).toMatch(/sec\/pw.*username, password/);
    expect((err as Error).message).not.toContain('sec/pw');
    expect((err as Error).message).not.toContain('CANARY');
    expect(world.idp.count()).toBe(0);
    expect(Object.keys((await store.read('pw')).entries)).toHaveLength(0);
    expect((await store.get('pw'))?.owner).toBeUndefined();
  });

  it('a refused debit leaves the answer in the item, so other containers do not queue on the ledger', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { full: limited('full', 1, 3600) });
    world.idp.respond = issue(120);
    const a = instance(world, { clock, config }).broker;
    const t = await get(a, 'full');
    // With the ledger exhausted, a report is deferred: honouring it would leave callers with nothing.
    expect(await a.invalidate({ connection: 'full', principal, accessToken: t.token.accessToken })).toMatchObject({
      invalidated: false,
      reason: 'deferred',
    });
    clock.advance(120_000); // it expired
    await expect(get(a, 'full')).rejects.toMatchObject({ code: 'rate_limited' });
    expect((await store.get('full'))?.backoff).toMatchObject({ code: 'rate_limited' });
    const b = instance(world, { clock, config });
    const ledger = (b.broker as unknown as { deps: { ledger: DynamoTokenStore } }).deps.ledger;
    let ledgerReads = 0;
    const read = ledger.read.bind(ledger);
    ledger.read = async (key) => {
      ledgerReads++;
      return read(key);
    };
    await expect(get(b.broker, 'full')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: expect.any(Number) } });
    expect(ledgerReads).toBe(0);
    expect(world.idp.count()).toBe(1);
  });

  it('a missing expires_in falls back to the JWT exp, else the default TTL (A4)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { 'a4-default': { defaultTtlSeconds: 900 }, 'a4-jwt': {} });
    world.idp.respond = () => ({ body: { access_token: 'opaque-token', token_type: 'bearer' } });
    const { broker } = instance(world, { clock, config });
    const d = await get(broker, 'a4-default');
    expect(d.token.expiresAt - d.token.issuedAt).toBe(900_000);
    const exp = Math.floor(clock.now() / 1000) + 1200;
    const jwt = ['{"alg":"none"}', JSON.stringify({ exp }), ''].map((p) => Buffer.from(p).toString('base64url')).join('.') + 'sig';
    world.idp.respond = () => ({ body: { access_token: jwt, token_type: 'Bearer' } });
    expect((await get(broker, 'a4-jwt')).token.expiresAt).toBe(exp * 1000);
  });
});
