/**
 * docs/protocol.md "Budget guard" (invariant 7), rule by rule, with several independent broker instances on
 * one real DynamoDB API (dynalite) and a counting IdP whose receipt log is the ground truth. Cases G1-G10.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import type { Served } from '../../functions/core/broker.js';
import type { BrokerError } from '../../functions/core/errors.js';
import { localDynamoClient } from '../../functions/local/dynamodb.js';
import { attempt, fakeClock, faults, get, isError, MIN, report, resetIdp, S, vertex } from '../support/calls.js';
import { brokerError } from '../support/clock.js';
import { connections, instance, startWorld, type World } from '../support/env.js';
import { clientIdOf, issue, type Receipt, type Responder } from '../../testkit/idp.js';

let world: World;
let store: DynamoTokenStore;

beforeAll(async () => {
  world = await startWorld();
  store = new DynamoTokenStore(localDynamoClient(world.dynamo.endpoint), world.table);
});
afterAll(async () => world.close());
afterEach(() => resetIdp(world));

/** Upstream receipts at least `gap` apart, after the first (the bound of G6/G7). */
function spacedBy(receipts: Receipt[], gap: number): boolean {
  return receipts.every((r, i) => i === 0 || r.at - receipts[i - 1]!.at >= gap);
}

describe('G1: a caller that reports every token it gets', () => {
  it('rate-limited: its reports are deferred with retry_after; the upstream sees one request per minSpacing; others keep the token', async () => {
    const clock = fakeClock(world);
    world.idp.respond = issue(3600);
    const config = connections(world.idp, { g1: vertex });
    const looper = instance(world, { clock, config }).broker;
    const other = instance(world, { clock, config }).broker;
    const first = await get(looper, 'g1');
    const answers: unknown[] = [];
    for (let t = 0; t < 60; t++) {
      const served = await get(looper, 'g1');
      answers.push(await report(looper, 'g1', served.token.accessToken));
      expect((await get(other, 'g1')).token.accessToken).toBe(first.token.accessToken);
      clock.advance(S);
    }
    // 60 s of reports: not one slot beyond the first.
    expect(world.idp.count()).toBe(1);
    expect(answers[0]).toMatchObject({ invalidated: false, reason: 'deferred' });
    for (const a of answers) expect(a).toMatchObject({ invalidated: false, reason: 'deferred', retryAfterSeconds: expect.any(Number) });
    const retry = (answers.at(-1) as { retryAfterSeconds: number }).retryAfterSeconds;
    expect(retry).toBeGreaterThan(2_880 - 61);
    expect(retry).toBeLessThanOrEqual(2_880);
    // Once the spacing has passed, one report is honoured, and it costs one request (an `expired` refresh).
    clock.advance(retry * S);
    const t = (await get(looper, 'g1')).token.accessToken;
    expect(await report(looper, 'g1', t)).toMatchObject({ invalidated: true });
    const next = await get(other, 'g1');
    expect(next.token.accessToken).not.toBe(t);
    expect(next.sent).toEqual(['expired']);
    expect(world.idp.count()).toBe(2);
    expect(await report(looper, 'g1', next.token.accessToken)).toMatchObject({ invalidated: false, reason: 'deferred' });
    expect(world.idp.count()).toBe(2);
  });

  it('without rateLimit: at most one honoured invalidation per 10 s', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { 'g1-free': {} });
    const a = instance(world, { clock, config }).broker;
    const b = instance(world, { clock, config }).broker;
    let honoured = 0;
    for (let t = 0; t < 60; t++) {
      const who = t % 2 ? a : b;
      const served = await get(who, 'g1-free');
      const answer = await report(who, 'g1-free', served.token.accessToken);
      if (answer.invalidated) honoured++;
      else if (answer.reason === 'deferred') expect(answer.retryAfterSeconds).toBeLessThanOrEqual(10);
      clock.advance(S);
    }
    expect(honoured).toBeGreaterThanOrEqual(5);
    expect(honoured).toBeLessThanOrEqual(6);
    expect(world.idp.count()).toBe(honoured + 1);
    expect(spacedBy(world.idp.receipts.slice(1), 10 * S)).toBe(true);
  });
});

describe('G2, G3: demands for a larger min_ttl', () => {
  it('min_ttl just under the lifetime, every 5 s for 10 minutes: no demand refresh inside the spacing; default callers unaffected', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { g2: vertex });
    const demanding = instance(world, { clock, config }).broker;
    const plain = instance(world, { clock, config }).broker;
    const refused: BrokerError[] = [];
    const sent: string[] = [];
    for (let t = 0; t < 600; t += 5) {
      const d = await attempt(demanding, 'g2', 290);
      const p = await attempt(plain, 'g2');
      for (const r of [d, p]) sent.push(...((isError(r) ? r.extra.sent : r.sent) ?? []));
      expect(isError(p)).toBe(false);
      if (isError(d)) refused.push(d);
      clock.advance(5 * S);
    }
    // Only expiries went upstream (300 s tokens: one every ~235 s), never a min_ttl demand.
    expect(sent.every((r) => r === 'expired')).toBe(true);
    expect(world.idp.count()).toBe(sent.length);
    expect(world.idp.count()).toBeLessThanOrEqual(4);
    expect(refused.length).toBeGreaterThan(100);
    for (const e of refused) {
      expect(e).toMatchObject({ code: 'rate_limited', status: 429, extra: { refusal: 'spacing', retryAfterSeconds: expect.any(Number) } });
      expect(e.message).toMatch(/spac/);
    }
  });

  it('without spacing, demands stop at the reserve; an expiry may still spend the reserve (G3)', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { g3: { rateLimit: { max: 10, windowSeconds: 28_800, minSpacingSeconds: 0 } } });
    const demanding = instance(world, { clock, config }).broker;
    const plain = instance(world, { clock, config }).broker;
    const ledgerLeft: number[] = [];
    let reserveRefusal: BrokerError | undefined;
    for (let i = 0; i < 20 && !reserveRefusal; i++) {
      const d = await attempt(demanding, 'g3', 290);
      if (isError(d)) reserveRefusal = d;
      else if (d.sent?.includes('min_ttl')) ledgerLeft.push(d.ledgerRemaining!);
      clock.advance(6 * S);
    }
    expect(reserveRefusal).toMatchObject({ code: 'rate_limited', extra: { refusal: 'reserve' } });
    expect(reserveRefusal?.message).toMatch(/reserve/);
    // Every demand left at least the reserve (2) behind it.
    expect(Math.min(...ledgerLeft)).toBe(2);
    expect(world.idp.count()).toBe(8);
    // The cached token expires: a default caller's `expired` refresh spends a reserve slot.
    clock.advance(300 * S);
    const expired = await get(plain, 'g3');
    expect(expired).toMatchObject({ outcome: 'refreshed', sent: ['expired'], ledgerRemaining: 1 });
    expect(world.idp.count()).toBe(9);
  });
});

describe('G4: credential and configuration errors open the circuit', () => {
  const pw = (password: string) => ({ client_id: 'cloud-client', client_secret: 'CANARY-CLOUD-SECRET', username: 'api-user', password });
  const upstream = (): Responder => {
    const tokens = issue(1200);
    return (r, i) => (r.params.get('password') === 'CANARY-RIGHT' ? tokens(r, i) : { status: 400, body: { error: 'invalid_grant' } });
  };

  it('a wrong password is tried at most twice in 10 minutes (not every 15 s), across instances, without rateLimit', async () => {
    const clock = fakeClock(world);
    world.secrets.set('sec/g4', pw('CANARY-WRONG'));
    world.idp.respond = upstream();
    const config = connections(world.idp, { g4: { grantType: 'password', scope: 'vtms-public-api openid profile', secret: 'sec/g4' } });
    const brokers = [1, 2, 3].map(() => instance(world, { clock, config }).broker);
    const readsBefore = world.secrets.reads;
    for (let t = 0; t < 600; t += 5) {
      for (const b of brokers) {
        const e = await brokerError(get(b, 'g4'));
        expect(e).toMatchObject({ code: 'upstream_error', status: 502, extra: { upstreamError: 'invalid_grant' } });
      }
      clock.advance(5 * S);
    }
    // The first attempt, and one probe at 5 minutes (the next is due at 15).
    expect(world.idp.count()).toBe(2);
    expect(world.idp.receipts[1]!.at - world.idp.receipts[0]!.at).toBeGreaterThanOrEqual(5 * MIN);
    const item = await store.get('g4');
    expect(item?.circuit).toMatchObject({ upstreamError: 'invalid_grant', probes: 1 });
    expect(item!.circuit!.probeAt - item!.circuit!.openedAt).toBe(15 * MIN);
    // The secret is re-checked fleet-wide about every 15 s, not per request or per container.
    expect(world.secrets.reads - readsBefore).toBeLessThanOrEqual(600 / 15 + 8);

    // Ops fix the secret: picked up within 15 s.
    world.secrets.set('sec/g4', pw('CANARY-RIGHT'));
    const fixedAt = clock.now();
    let served: Served | undefined;
    while (!served) {
      const r = await attempt(brokers[0]!, 'g4');
      if (isError(r)) clock.advance(S);
      else served = r;
    }
    expect(clock.now() - fixedAt).toBeLessThanOrEqual(15 * S);
    expect(served.sent).toEqual(['rotation']);
    expect((await store.get('g4'))?.circuit).toBeUndefined();
  });

  it('rate-limited: invalid_request opens the circuit too; a config change closes it at once', async () => {
    const clock = fakeClock(world);
    world.idp.respond = () => ({ status: 400, body: { error: 'invalid_request' } });
    const config = connections(world.idp, { 'g4-rl': vertex });
    const a = instance(world, { clock, config }).broker;
    for (let i = 0; i < 20; i++) {
      await expect(get(a, 'g4-rl')).rejects.toMatchObject({ code: 'upstream_error', extra: { upstreamError: 'invalid_request' } });
      clock.advance(10 * S);
    }
    expect(world.idp.count()).toBe(1);
    // Ops fix the scope in the config and deploy: the next request goes upstream.
    world.idp.respond = issue();
    const fixed = connections(world.idp, { 'g4-rl': { ...vertex, scope: 'API' } });
    expect((await get(instance(world, { clock, config: fixed }).broker, 'g4-rl')).outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(2);
  });

  it('invalid_client with a rotated secret is retried once at once (rotation), not held by the circuit', async () => {
    const clock = fakeClock(world);
    world.secrets.set('sec/g4-rot', { client_id: 'rot', client_secret: 'CANARY-OLD' });
    const config = connections(world.idp, { 'g4-rot': { secret: 'sec/g4-rot' } });
    const a = instance(world, { clock, config }).broker;
    const old = await get(a, 'g4-rot'); // caches the old secret in this container
    world.secrets.set('sec/g4-rot', { client_id: 'rot', client_secret: 'CANARY-NEW' });
    const tokens = issue();
    world.idp.respond = (r, i) =>
      r.params.get('client_secret') === 'CANARY-NEW' ? tokens(r, i) : { status: 401, body: { error: 'invalid_client' } };
    expect(await report(a, 'g4-rot', old.token.accessToken)).toMatchObject({ invalidated: true });
    const served = await get(a, 'g4-rot');
    expect(served.sent).toEqual(['expired', 'rotation']);
    expect(world.idp.count()).toBe(3);
  });
});

describe('G5: a secret that still holds a placeholder', () => {
  it('is never sent: 500 without an upstream request or a ledger slot; the log names the secret; a fix is picked up within 15 s', async () => {
    const clock = fakeClock(world);
    world.secrets.set('sec/g5', { client_id: 'REPLACE_ME', client_secret: 'REPLACE_ME' });
    const config = connections(world.idp, { g5: { secret: 'sec/g5', ...vertex } });
    const a = instance(world, { clock, config }).broker;
    const b = instance(world, { clock, config }).broker;
    const e = await brokerError(get(a, 'g5'));
    expect(e).toMatchObject({ code: 'internal', status: 500 });
    expect(e.extra.detail).toMatch(/sec\/g5.*REPLACE_ME.*client_id, client_secret/);
    expect(e.message).not.toContain('sec/g5');
    await expect(get(b, 'g5')).rejects.toMatchObject({ code: 'internal' });
    expect(world.idp.count()).toBe(0);
    expect(Object.keys((await store.read('g5')).entries)).toHaveLength(0);
    world.secrets.set('sec/g5', { client_id: 'g5-client', client_secret: 'CANARY-FILLED' });
    clock.advance(15 * S);
    expect((await get(b, 'g5')).outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(1);
  });
});

describe('G6: a store or KMS fault after a successful upstream request', () => {
  /** Turns `on` when the IdP answers: the fault starts after the holder took the lease. */
  function faultAfterFetch(expiresIn = 1200) {
    const state = { on: false };
    const tokens = issue(expiresIn);
    world.idp.respond = (r, i) => {
      state.on = true;
      return tokens(r, i);
    };
    return state;
  }
  const tokenWrites = (cmd: string, input: { Key?: { pk?: { S?: string } } }) =>
    cmd === 'UpdateItemCommand' && (input.Key?.pk?.S ?? '').startsWith('tok#');

  it('rate-limited, publish fails for 20 s: the fetcher serves its token; nobody fetches another; it is published when writes succeed', async () => {
    const clock = fakeClock(world);
    const fault = faultAfterFetch();
    const publishes = (cmd: string, input: { Key?: { pk?: { S?: string } }; UpdateExpression?: string }) =>
      fault.on && tokenWrites(cmd, input) && (input.UpdateExpression ?? '').includes('#ct');
    const config = connections(world.idp, { g6: vertex });
    const a = instance(world, { clock, config, maxAttempts: 1, onClient: faults(publishes) }).broker;
    const b = instance(world, { clock, config, maxAttempts: 1, onClient: faults(publishes) }).broker;
    const fetched = await get(a, 'g6');
    expect(fetched.outcome).toBe('refreshed');
    for (let t = 0; t < 20; t++) {
      expect((await get(a, 'g6')).token.accessToken).toBe(fetched.token.accessToken);
      const other = await brokerError(get(b, 'g6'));
      expect(other).toMatchObject({ code: 'unavailable', extra: { retryAfterSeconds: expect.any(Number) } });
      clock.advance(S);
    }
    fault.on = false;
    world.idp.respond = issue();
    // The store takes writes again: the fetcher publishes on its next request, and the fleet gets its token.
    await get(a, 'g6');
    expect((await store.get('g6'))?.fp).toBe(fetched.token.fp);
    expect((await get(b, 'g6')).token.accessToken).toBe(fetched.token.accessToken);
    expect(world.idp.count()).toBe(1);
  });

  it('rate-limited, every token-item write fails: the hold goes into the ledger; still one request in 5 minutes', async () => {
    const clock = fakeClock(world);
    const fault = faultAfterFetch();
    const config = connections(world.idp, { 'g6-all': vertex });
    const a = instance(world, { clock, config, maxAttempts: 1, onClient: faults((c, i) => fault.on && tokenWrites(c, i)) }).broker;
    const b = instance(world, { clock, config, maxAttempts: 1, onClient: faults((c, i) => fault.on && tokenWrites(c, i)) }).broker;
    const fetched = await get(a, 'g6-all');
    expect((await store.read('g6-all')).holds?.['g6-all']).toBeGreaterThan(clock.now());
    clock.advance(30 * S); // the fetcher's lease expired meanwhile
    fault.on = false;
    // Another container takes the lease, but the ledger's hold refuses its debit: nothing is sent.
    await expect(get(b, 'g6-all')).rejects.toMatchObject({ code: 'unavailable', extra: { refusal: 'held' } });
    for (let t = 0; t < 240; t += 10) {
      await expect(get(b, 'g6-all')).rejects.toMatchObject({ code: 'unavailable' });
      clock.advance(10 * S);
    }
    expect(world.idp.count()).toBe(1);
    expect((await get(a, 'g6-all')).token.accessToken).toBe(fetched.token.accessToken);
    expect((await get(b, 'g6-all')).token.accessToken).toBe(fetched.token.accessToken);
  });

  it('KMS throttles the seal: the token is served and published once KMS answers', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { 'g6-kms': vertex });
    const a = instance(world, { clock, config });
    const sealer = (a.broker as unknown as { deps: { sealer: { seal: (...args: unknown[]) => Promise<Uint8Array> } } }).deps.sealer;
    const seal = sealer.seal.bind(sealer);
    let throttled = true;
    sealer.seal = (...args) =>
      throttled ? Promise.reject(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} })) : seal(...args);
    const b = instance(world, { clock, config }).broker;
    const fetched = await get(a.broker, 'g6-kms');
    expect(fetched.outcome).toBe('refreshed');
    clock.advance(6 * S);
    expect((await get(a.broker, 'g6-kms')).token.accessToken).toBe(fetched.token.accessToken);
    await expect(get(b, 'g6-kms')).rejects.toMatchObject({ code: 'unavailable' });
    throttled = false;
    clock.advance(2 * S);
    await get(a.broker, 'g6-kms');
    expect((await get(b, 'g6-kms')).token.accessToken).toBe(fetched.token.accessToken);
    expect(world.idp.count()).toBe(1);
  });

  it('without rateLimit: at most one more request per 15 s while the fetcher is gone', async () => {
    const clock = fakeClock(world);
    const fault = faultAfterFetch();
    const publishes = (cmd: string, input: { Key?: { pk?: { S?: string } }; UpdateExpression?: string }) =>
      fault.on && tokenWrites(cmd, input) && (input.UpdateExpression ?? '').includes('#ct');
    const config = connections(world.idp, { 'g6-free': {} });
    const a = instance(world, { clock, config, maxAttempts: 1, onClient: faults(publishes) }).broker;
    await get(a, 'g6-free'); // a's container then goes idle: its pending token is never published
    const b = instance(world, { clock, config, maxAttempts: 1, onClient: faults(publishes) }).broker;
    for (let t = 0; t < 60; t++) {
      await attempt(b, 'g6-free');
      clock.advance(S);
    }
    expect(world.idp.count()).toBeLessThanOrEqual(1 + 60 / 15);
    expect(spacedBy(world.idp.receipts, 15 * S)).toBe(true);
  });
});

describe('G7: an upstream that answers a refresh with the same token', () => {
  it('costs at most one request per 5 minutes, not one per request', async () => {
    const clock = fakeClock(world);
    const issuedAt = clock.now();
    let n = 0;
    // Until the old token dies, the upstream hands it out again with what is left of its lifetime.
    world.idp.respond = () => {
      const left = Math.floor((issuedAt + 300 * S - clock.now()) / S);
      if (left > 0) return { body: { access_token: 'same-token', token_type: 'Bearer', expires_in: left } };
      return { body: { access_token: `new-token-${++n}`, token_type: 'Bearer', expires_in: 300 } };
    };
    const config = connections(world.idp, { g7: vertex });
    const brokers = [1, 2].map(() => instance(world, { clock, config }).broker);
    expect((await get(brokers[0]!, 'g7')).token.accessToken).toBe('same-token');
    clock.advance(240 * S); // 60 s left: less than the default min_ttl + skew
    const answers: (Served | BrokerError)[] = [];
    for (let t = 0; t < 600; t++) {
      answers.push(await attempt(brokers[t % 2]!, 'g7'));
      clock.advance(S);
    }
    // The first token; the same one again (useless: held 5 minutes, callers get 503 meanwhile); a new one once
    // the old died; and that one's ordinary expiry refresh.
    expect(world.idp.count()).toBeLessThanOrEqual(4);
    expect(world.idp.receipts[2]!.at - world.idp.receipts[1]!.at).toBeGreaterThanOrEqual(5 * MIN);
    expect(answers.filter(isError).length).toBeGreaterThan(250);
    const served = answers.filter((a): a is Served => !isError(a));
    expect(served.some((s) => s.token.accessToken.startsWith('new-token'))).toBe(true);
    for (const s of served) expect(s.token.expiresAt - clock.now()).toBeGreaterThan(-600 * S); // sanity
  });
});

describe('G8: the ledger margin covers send delay and clock skew (defect 5)', () => {
  /**
   * Container A (clock 3 s behind) spends the budget with ledger writes that take just under the send
   * cut-off and requests that take the whole connect timeout to arrive; container B (3 s ahead) then tries
   * as early as its ledger lets it. The IdP's receipts, on true time, must never hold more than max in any
   * window.
   */
  async function scenario(margin?: { sendCutoffMs: number; connectTimeoutMs: number; clockSkewMs: number }): Promise<number> {
    const clock = fakeClock(world);
    const max = 5;
    const windowSeconds = 20;
    world.secrets.set('sec/g8-a', { client_id: 'g8-a', client_secret: 'CANARY-A' });
    world.secrets.set('sec/g8-b', { client_id: 'g8-b', client_secret: 'CANARY-B' });
    const key = `g8-${Math.random().toString(36).slice(2)}`;
    const limit = { rateLimit: { max, windowSeconds, key, reserve: 0, minSpacingSeconds: 0 } };
    const bNames = Array.from({ length: 150 }, (_, i) => `g8-b-${key}-${i}`.slice(0, 64));
    const config = connections(world.idp, {
      [`g8-a-${key}`.slice(0, 64)]: { ...limit, secret: 'sec/g8-a' },
      ...Object.fromEntries(bNames.map((n) => [n, { ...limit, secret: 'sec/g8-b' }])),
    });
    const aName = `g8-a-${key}`.slice(0, 64);
    world.idp.respond = issue(1);
    const options = margin ? { margin } : {};
    const a = instance(world, { clock: clock.skewed(-3 * S), config, options });
    const ledger = (a.broker as unknown as { deps: { ledger: DynamoTokenStore } }).deps.ledger;
    const write = ledger.write.bind(ledger);
    ledger.write = async (...args) => {
      const r = await write(...args);
      clock.advance(1_900); // just under the 2 s send cut-off
      return r;
    };
    const b = instance(world, { clock: clock.skewed(3 * S), config, options }).broker;
    for (let i = 0; i < max; i++) {
      await get(a.broker, aName, 0);
      clock.advance(1_000); // the 1 s token expired
    }
    for (const n of bNames) {
      await attempt(b, n, 0);
      clock.advance(100);
    }
    // A's requests reach the upstream a whole connect timeout (3 s) after they were sent.
    const arrivals = world.idp.receipts.map((r) => r.at + (clientIdOf(r) === 'g8-a' ? 3 * S : 0)).sort((x, y) => x - y);
    let most = 0;
    for (let i = 0; i < arrivals.length; i++)
      most = Math.max(most, arrivals.filter((t) => t >= arrivals[i]! && t < arrivals[i]! + windowSeconds * S).length);
    world.idp.receipts.length = 0;
    return most;
  }

  it('with the derived margin (2 s cut-off + 3 s connect + 6 s skew), never more than max in any window', async () => {
    expect(await scenario()).toBeLessThanOrEqual(5);
  });

  it('the scenario has teeth: a margin that leaves out the skew lets a sixth request into a window', async () => {
    expect(await scenario({ sendCutoffMs: 2_000, connectTimeoutMs: 3_000, clockSkewMs: 0 })).toBeGreaterThan(5);
  });
});

describe('G9: refresh-ahead never serves less than min_ttl (defect 1)', () => {
  it('a concurrent invalidation and a shorter upstream token: no 200 with expires_in below min_ttl', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { g9: { refreshBeforeSeconds: 300 } });
    world.idp.respond = issue(600);
    const a = instance(world, { clock, config }).broker;
    const t1 = await get(a, 'g9', 0);
    clock.advance(440 * S); // 160 s left: serves min_ttl 100, inside refresh-ahead (300 s)
    const b = instance(world, { clock, config }).broker;
    // While b's refresh-ahead is on its way, another caller reports t1, and the upstream answers with a 17 s token.
    world.idp.respond = async () => {
      await report(instance(world, { clock, config }).broker, 'g9', t1.token.accessToken);
      return { body: { access_token: 'short-lived', token_type: 'Bearer', expires_in: 17 } };
    };
    const r = await attempt(b, 'g9', 100);
    if (!isError(r)) expect(r.token.expiresAt - clock.now()).toBeGreaterThanOrEqual(100 * S);
    else expect(['invalid_request', 'unavailable']).toContain(r.code);
  });
});

describe('G10: short-lived tokens with default settings (defects 6, 7)', () => {
  it('2 s tokens: min_ttl 0 is served (no 400), to waiters and from cache', async () => {
    const clock = fakeClock(world);
    world.idp.respond = issue(2);
    const config = connections(world.idp, { 'g10-2s': {} });
    const brokers = [1, 2, 3].map(() => instance(world, { clock, config }).broker);
    const start = clock.now();
    for (let step = 0; step < 40; step++) {
      const served = await Promise.all(brokers.map((b) => get(b, 'g10-2s', 0)));
      for (const s of served) expect(s.token.expiresAt).toBeGreaterThan(clock.now());
      clock.advance(250);
    }
    // 2 s tokens cached for 1.5 s each: at most about one request per 1.5 s of (fake) time, not one per request
    // (120). Waiters' polls move the fake clock too, so the bound is on the time that really passed.
    expect(world.idp.count()).toBeLessThanOrEqual(Math.ceil((clock.now() - start) / 1_500) + 1);
  });

  it('10 s tokens with the 60 s refresh-ahead default: each token serves at least half its life', async () => {
    const clock = fakeClock(world);
    world.idp.respond = issue(10);
    const config = connections(world.idp, { 'g10-10s': {} });
    expect(config.connections.get('g10-10s')!.refreshBeforeSeconds).toBe(60);
    const brokers = [1, 2, 3].map(() => instance(world, { clock, config }).broker);
    for (let step = 0; step < 240; step++) {
      await get(brokers[step % 3]!, 'g10-10s', 0);
      clock.advance(250);
    }
    // 60 s: at most one request per 5 s (half the lifetime), where the old rule refreshed on every request.
    expect(world.idp.count()).toBeLessThanOrEqual(13);
    expect(spacedBy(world.idp.receipts, 5 * S)).toBe(true);
  });
});

describe('defects 3, 4, 8: store faults and upstream outages do not cost callers a still-valid token', () => {
  it('POST /invalidate with DynamoDB failing is 503 unavailable with Retry-After, not 500 (defect 3)', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { d3: {} });
    const t = await get(instance(world, { clock, config }).broker, 'd3');
    const broken = instance(world, { clock, config, maxAttempts: 1, onClient: faults(() => true) }).broker;
    const e = await brokerError(report(broken, 'd3', t.token.accessToken));
    expect(e).toMatchObject({ code: 'unavailable', status: 503, extra: { retryAfterSeconds: 1 } });
    expect(e.cause).toBeDefined();
  });

  it('refresh-ahead with the lease write throttled serves the cached token (defect 4)', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { d4: { refreshBeforeSeconds: 60 } });
    await get(instance(world, { clock, config }).broker, 'd4', 0);
    clock.advance(250 * S); // 50 s left: inside the window, still serves min_ttl 30
    const throttled = instance(world, { clock, config, maxAttempts: 1, onClient: faults((c) => c === 'UpdateItemCommand') }).broker;
    const served = await get(throttled, 'd4', 30);
    expect(served).toMatchObject({ outcome: 'store', staleAfter: 'unavailable' });
    expect(world.idp.count()).toBe(1);
  });

  it('the upstream down during refresh-ahead: the still-valid token keeps being served, fleet-wide (defect 8)', async () => {
    const clock = fakeClock(world);
    const config = connections(world.idp, { d8: { refreshBeforeSeconds: 60 } });
    const first = await get(instance(world, { clock, config }).broker, 'd8', 0);
    clock.advance(250 * S);
    world.idp.respond = () => ({ status: 503 });
    const a = await get(instance(world, { clock, config }).broker, 'd8', 30);
    expect(a).toMatchObject({ outcome: 'store', staleAfter: 'unavailable', sent: ['ahead'] });
    expect(a.token.accessToken).toBe(first.token.accessToken);
    // During the backoff, other containers serve it from the store without calling the upstream.
    const b = await get(instance(world, { clock, config }).broker, 'd8', 30);
    expect(b).toMatchObject({ outcome: 'store' });
    expect(b.token.accessToken).toBe(first.token.accessToken);
    expect(world.idp.count()).toBe(2);
  });
});
