/**
 * Invariant 1 (single flight) and the cache, against a real DynamoDB API (dynalite) and a fake IdP whose
 * receipt log is the ground truth. Several independent broker instances stand for Lambda containers.
 */
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { principalFromArn } from '../../functions/core/authz.js';
import type { TokenBroker } from '../../functions/core/broker.js';
import { SealerUnavailable } from '../../functions/core/ports.js';
import { localDynamoClient } from '../../functions/local/dynamodb.js';
import { FakeClock, realClock } from '../support/clock.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { issue } from '../../testkit/idp.js';

const principal = principalFromArn(CALLER);
let world: World;

beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => world.close());
afterEach(() => {
  world.idp.respond = issue();
  world.idp.receipts.length = 0;
});

function storeOf(w: World) {
  return new DynamoTokenStore(localDynamoClient(w.dynamo.endpoint), w.table);
}

const get = (b: TokenBroker, connection: string, minTtlSeconds = 60, deadline?: number) =>
  b.getToken({ connection, principal, minTtlSeconds, ...(deadline !== undefined ? { deadline } : {}) });

describe('single flight across instances (A1)', () => {
  it('a cold storm of 50 requests over 5 instances makes exactly one upstream request', async () => {
    const config = connections(world.idp, { storm: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    const brokers = Array.from({ length: 5 }, () => instance(world, { clock: realClock, config }).broker);
    const served = await Promise.all(Array.from({ length: 50 }, (_, i) => get(brokers[i % 5]!, 'storm')));
    expect(world.idp.count()).toBe(1);
    expect(new Set(served.map((s) => s.token.accessToken)).size).toBe(1);
    expect(served.filter((s) => s.outcome === 'refreshed')).toHaveLength(1);
    const store = storeOf(world);
    const item = await store.get('storm');
    expect(item?.ver).toBe(1);
    expect(item?.owner).toBeUndefined();
    expect(Object.keys((await store.read('storm')).entries)).toHaveLength(1);
  });
});

describe('warm cache (A2)', () => {
  it('a fresh instance serves a cached token with one GetItem and no writes; a warm one from memory', async () => {
    const config = connections(world.idp, { warm: {} });
    const first = await get(instance(world, { clock: realClock, config }).broker, 'warm');
    const calls: string[] = [];
    const { broker } = instance(world, {
      clock: realClock,
      config,
      onClient: (c) =>
        c.middlewareStack.add((next, ctx) => (args) => {
          calls.push(ctx.commandName ?? '?');
          return next(args);
        }),
    });
    const second = await get(broker, 'warm');
    expect(second.token.accessToken).toBe(first.token.accessToken);
    expect(second.outcome).toBe('store');
    expect(calls).toEqual(['GetItemCommand']);
    const third = await get(broker, 'warm');
    expect(third.outcome).toBe('memory');
    expect(calls).toHaveLength(1);
    expect(world.idp.count()).toBe(1);
  });
});

describe('refresh ahead (A3)', () => {
  it('one instance refreshes while the others keep getting the still-valid token; none expired', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { ahead: { refreshBeforeSeconds: 60 } });
    const old = await get(instance(world, { clock, config }).broker, 'ahead', 0);
    clock.advance(250_000); // 50 s left: inside the refresh-ahead window, still valid
    world.idp.respond = () => ({ delayMs: 500, body: { access_token: `new-${Math.random()}`, token_type: 'Bearer', expires_in: 300 } });
    const brokers = Array.from({ length: 4 }, () => instance(world, { clock, config }).broker);
    const served = await Promise.all(Array.from({ length: 20 }, (_, i) => get(brokers[i % 4]!, 'ahead', 0)));
    expect(world.idp.count()).toBe(2);
    for (const s of served) {
      expect(s.token.expiresAt).toBeGreaterThan(clock.now());
      expect(s.token.accessToken === old.token.accessToken || s.token.accessToken.startsWith('new-')).toBe(true);
    }
    expect(served.some((s) => s.token.accessToken === old.token.accessToken)).toBe(true);
    expect(served.filter((s) => s.outcome === 'refreshed')).toHaveLength(1);
  });
});

describe('refresh ahead race', () => {
  it('a container that read before another published, and took the lease after, serves the new token without a second request', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, {
      race: { refreshBeforeSeconds: 60, rateLimit: { max: 10, windowSeconds: 28800, reserve: 0, minSpacingSeconds: 0 } },
    });
    await get(instance(world, { clock, config }).broker, 'race', 0);
    clock.advance(250_000); // inside the refresh-ahead window
    const a = instance(world, { clock, config });
    const store = (a.broker as unknown as { deps: { store: DynamoTokenStore } }).deps.store;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const acquire = store.acquireLease.bind(store);
    store.acquireLease = async (...args) => {
      await gate; // A read the old item, then stalls before taking the lease
      return acquire(...args);
    };
    const slow = get(a.broker, 'race', 0);
    await waitFor(() => world.idp.count() === 1);
    const b = await get(instance(world, { clock, config }).broker, 'race', 0);
    expect(b.outcome).toBe('refreshed');
    open();
    const late = await slow;
    expect(late.token.accessToken).toBe(b.token.accessToken);
    expect(world.idp.count()).toBe(2);
    expect(Object.keys((await storeOf(world).read('race')).entries)).toHaveLength(2);
  });
});

describe('refresh ahead failures', () => {
  it('a failed refresh-ahead serves the cached token only if it still satisfies the caller afterwards', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { failing: { refreshBeforeSeconds: 60 } });
    await get(instance(world, { clock, config }).broker, 'failing', 0);
    clock.advance(300_000 - 5_500); // 5.5 s left: still served with min_ttl 0 (5 s skew), inside the window
    world.idp.respond = () => {
      clock.advance(1_000); // the failing refresh takes a second
      return { status: 503 };
    };
    await expect(get(instance(world, { clock, config }).broker, 'failing', 0)).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('a KMS outage while opening the cached token is a 503, not an invalidation that costs a refresh', async () => {
    const config = connections(world.idp, { kms: {} });
    await get(instance(world, { clock: realClock, config }).broker, 'kms');
    const { broker } = instance(world, { clock: realClock, config });
    const sealer = (broker as unknown as { deps: { sealer: { open: () => Promise<never> } } }).deps.sealer;
    // As the sealer adapter reports a throttled KMS (test/adapters/sealer-faults.test.ts).
    sealer.open = () =>
      Promise.reject(
        new SealerUnavailable('KMS unavailable', { cause: Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }) }),
      );
    await expect(get(broker, 'kms')).rejects.toMatchObject({ code: 'unavailable' });
    expect((await storeOf(world).get('kms'))?.invalidated).toBeUndefined();
    expect(world.idp.count()).toBe(1);
  });
});

describe('dead lease holders (A6, A7)', () => {
  it('a holder that died before calling the IdP is taken over once its lease expires (A6)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { dead: {} });
    const store = storeOf(world);
    const dead = await store.acquireLease('dead', 'dead-holder', clock.now(), clock.now() + 3_000);
    expect(dead.lease?.fence).toBe(1);
    const { broker } = instance(world, { clock, config, options: { leaseMs: 3_000, maxWaitMs: 10_000, upstreamTimeoutMs: 1_000 } });
    const served = await get(broker, 'dead');
    expect(served.outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(1);
    const item = await store.get('dead');
    expect(item?.fence).toBe(2);
    expect(item?.ver).toBe(1);
    expect(item?.owner).toBeUndefined();
    expect(clock.now()).toBeGreaterThanOrEqual(dead.lease!.until);
  });

  it('a holder that died between the IdP answer and the publish costs a second ledger slot, nothing else (A7)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { lost: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    const options = { leaseMs: 3_000, maxWaitMs: 10_000, upstreamTimeoutMs: 1_000 };
    const victim = instance(world, { clock, config, options });
    // "SIGKILL before publish": the publish never happens and nothing after it runs.
    const store = (victim.broker as unknown as { deps: { store: DynamoTokenStore } }).deps.store;
    store.publish = () => new Promise(() => {});
    void get(victim.broker, 'lost');
    await waitFor(() => world.idp.count() === 1);
    const { broker } = instance(world, { clock, config, options });
    const served = await get(broker, 'lost');
    expect(served.outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(2);
    const shared = storeOf(world);
    expect(Object.keys((await shared.read('lost')).entries)).toHaveLength(2);
    const item = await shared.get('lost');
    expect(item?.fence).toBe(2);
    expect(item?.fp).toBe(served.token.fp);
  });
});

describe('fencing (A8)', () => {
  it('a slow former holder cannot overwrite the token of the holder who took over', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { fenced: {} });
    const options = { leaseMs: 3_000, maxWaitMs: 10_000, upstreamTimeoutMs: 2_000 };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    world.idp.respond = async (_r, i) => {
      if (i === 0) await gate; // holder 1's answer arrives after holder 2 published
      return { body: { access_token: `holder-${i + 1}`, token_type: 'Bearer', expires_in: 300 } };
    };
    const h1 = instance(world, { clock, config, options }).broker;
    const h2 = instance(world, { clock, config, options }).broker;
    const first = get(h1, 'fenced');
    await waitFor(() => world.idp.count() === 1);
    clock.advance(3_500); // holder 1's lease expires while its request is in flight
    const second = await get(h2, 'fenced');
    expect(second.token.accessToken).toBe('holder-2');
    release();
    const late = await first;
    expect(late.token.accessToken).toBe('holder-2');
    const item = await storeOf(world).get('fenced');
    expect(item?.fence).toBe(2);
    expect(item?.ver).toBe(1);
    expect(item?.fp).toBe(second.token.fp);
  });
});

describe('bounded waiting (A11, F2)', () => {
  it('a request with little time left does not take the lease; it answers 503 with Retry-After by its deadline', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { slow: {} });
    const store = storeOf(world);
    await store.acquireLease('slow', 'slow-holder', clock.now(), clock.now() + 20_000);
    const { broker } = instance(world, { clock, config });
    const deadline = clock.now() + 1_500;
    await expect(get(broker, 'slow', 60, deadline)).rejects.toMatchObject({
      code: 'unavailable',
      extra: { retryAfterSeconds: expect.any(Number) },
    });
    expect(clock.now()).toBeLessThanOrEqual(deadline);
    expect(world.idp.count()).toBe(0);
  });

  it('with a free lease but less than the refresh budget left, it does not start a refresh (F2)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { budget: {} });
    const { broker } = instance(world, { clock, config });
    await expect(get(broker, 'budget', 60, clock.now() + 1_000)).rejects.toMatchObject({ code: 'unavailable' });
    expect(world.idp.count()).toBe(0);
    expect((await storeOf(world).get('budget'))?.owner).toBeUndefined();
  });
});

describe('store failures (A13)', () => {
  it('a permanently failing DynamoDB gives 503 and never calls the IdP', async () => {
    const config = connections(world.idp, { broken: {} });
    const { broker } = instance(world, {
      clock: realClock,
      config,
      maxAttempts: 2,
      onClient: (c) =>
        c.middlewareStack.add(
          () => async () => {
            throw Object.assign(new Error('InternalServerError'), { name: 'InternalServerError', $fault: 'server' });
          },
          { step: 'finalizeRequest', priority: 'low' },
        ),
    });
    await expect(get(broker, 'broken')).rejects.toMatchObject({ code: 'unavailable' });
    expect(world.idp.count()).toBe(0);
  });

  it('throttling that clears is retried by the SDK transparently (A12)', async () => {
    const config = connections(world.idp, { throttled: {} });
    let failures = 2;
    const { broker } = instance(world, {
      clock: realClock,
      config,
      onClient: (c) =>
        c.middlewareStack.add(
          (next) => async (args) => {
            if (failures-- > 0) {
              throw Object.assign(new Error('ProvisionedThroughputExceededException'), {
                name: 'ProvisionedThroughputExceededException',
                $fault: 'client',
                $metadata: { httpStatusCode: 400 },
              });
            }
            return next(args);
          },
          { step: 'finalizeRequest', priority: 'low' },
        ),
    });
    const served = await get(broker, 'throttled');
    expect(served.outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(1);
  });
});

describe('clock skew between instances (A14)', () => {
  it('skew below the lease margin: one IdP request', async () => {
    const config = connections(world.idp, { skew: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    world.idp.respond = () => ({ delayMs: 200, body: { access_token: `s-${Math.random()}`, token_type: 'Bearer', expires_in: 300 } });
    const a = instance(world, { clock: realClock, config }).broker;
    const b = instance(world, { clock: { now: () => Date.now() + 500, sleep: realClock.sleep }, config }).broker;
    const served = await Promise.all([get(a, 'skew'), get(b, 'skew'), get(a, 'skew'), get(b, 'skew')]);
    expect(world.idp.count()).toBe(1);
    expect(new Set(served.map((s) => s.token.accessToken)).size).toBe(1);
  });

  it('skew beyond the lease: at most two IdP requests, fencing keeps one consistent item, ledger within max', async () => {
    const config = connections(world.idp, { skewed: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    world.idp.respond = () => ({ delayMs: 200, body: { access_token: `k-${Math.random()}`, token_type: 'Bearer', expires_in: 300 } });
    const options = { leaseMs: 2_000, upstreamTimeoutMs: 500 };
    const a = instance(world, { clock: realClock, config, options }).broker;
    const b = instance(world, { clock: { now: () => Date.now() + 5_000, sleep: realClock.sleep }, config, options }).broker;
    const served = await Promise.all([get(a, 'skewed', 0), get(b, 'skewed', 0)]);
    expect(world.idp.count()).toBeLessThanOrEqual(2);
    const store = storeOf(world);
    const item = await store.get('skewed');
    expect(item?.owner).toBeUndefined();
    expect(served.map((s) => s.token.fp)).toContain(item?.fp);
    expect(Object.keys((await store.read('skewed')).entries).length).toBe(world.idp.count());
  });
});

describe('expiry (F1, invariant 3)', () => {
  it('a token in memory is not served once the clock passes its expiry (freeze/thaw)', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { thaw: {} });
    const { broker } = instance(world, { clock, config });
    const first = await get(broker, 'thaw', 0);
    clock.advance(301_000);
    const second = await get(broker, 'thaw', 0);
    expect(second.token.accessToken).not.toBe(first.token.accessToken);
    expect(second.outcome).toBe('refreshed');
    expect(second.token.expiresAt).toBeGreaterThan(clock.now());
    expect(world.idp.count()).toBe(2);
  });

  it('never serves a token with less than min_ttl left; asks for one the upstream cannot give get 400 without a refresh', async () => {
    const clock = new FakeClock(Date.now());
    const config = connections(world.idp, { short: {} });
    const { broker } = instance(world, { clock, config });
    await get(broker, 'short', 60);
    clock.advance(200_000); // 100 s left
    const again = await get(broker, 'short', 60);
    expect(again.token.accessToken).toBe((await get(broker, 'short', 0)).token.accessToken);
    expect(world.idp.count()).toBe(1);
    const refreshed = await get(broker, 'short', 120);
    expect(refreshed.outcome).toBe('refreshed');
    expect(refreshed.token.expiresAt - clock.now()).toBeGreaterThanOrEqual(120_000);
    await expect(get(broker, 'short', 3_600)).rejects.toMatchObject({ code: 'invalid_request' });
    expect(world.idp.count()).toBe(2);
  });
});

describe('invalidation', () => {
  it('a hundred reports of one token cause one refresh; a report of an old token changes nothing', async () => {
    const config = connections(world.idp, { inv: {} });
    const brokers = Array.from({ length: 4 }, () => instance(world, { clock: realClock, config }).broker);
    const t1 = (await get(brokers[0]!, 'inv')).token.accessToken;
    await Promise.all(brokers.map((b) => get(b, 'inv'))); // warm every container
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => brokers[i % 4]!.invalidate({ connection: 'inv', principal, accessToken: t1 })),
    );
    expect(results.filter((r) => r.invalidated)).toHaveLength(1);
    expect(results.filter((r) => !r.invalidated && r.reason === 'not_current')).toHaveLength(99);
    // The receiving container stops serving it at once; the others within the memory bound.
    const after = await get(brokers[0]!, 'inv');
    expect(after.token.accessToken).not.toBe(t1);
    await Promise.all(brokers.map((b) => b.invalidate({ connection: 'inv', principal, accessToken: t1 })));
    const served = await Promise.all(brokers.map((b) => get(b, 'inv')));
    for (const s of served) if (s.outcome !== 'memory') expect(s.token.accessToken).toBe(after.token.accessToken);
    expect(world.idp.count()).toBe(2);
  });
});

describe('sealed at rest (invariant 5, E11)', () => {
  it('the table never holds the token in clear; a sealed token moved to another connection is never served', async () => {
    const config = connections(world.idp, { 'seal-a': {}, 'seal-b': {} });
    const { broker, client } = instance(world, { clock: realClock, config });
    const a = await get(broker, 'seal-a');
    const b = await get(broker, 'seal-b');
    const raw = async (c: string) =>
      (await client.send(new GetItemCommand({ TableName: world.table, Key: { pk: { S: `tok#${c}` } }, ConsistentRead: true }))).Item!;
    const itemA = await raw('seal-a');
    const dump = JSON.stringify(itemA, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v));
    expect(dump).not.toContain(a.token.accessToken);
    expect(Buffer.from(itemA.ct!.B!).toString('base64')).not.toContain(Buffer.from(a.token.accessToken).toString('base64').slice(0, 12));
    expect(Buffer.from(itemA.ct!.B!).subarray(0, 3).toString()).not.toBe('eyJ');
    // Swap: put A's sealed token (and its plaintext attributes) onto B's item.
    const { UpdateItemCommand } = await import('@aws-sdk/client-dynamodb');
    await client.send(
      new UpdateItemCommand({
        TableName: world.table,
        Key: { pk: { S: 'tok#seal-b' } },
        UpdateExpression: 'SET ct = :ct, #exp = :exp, fp = :fp',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeNames: { '#exp': 'exp' },
        ExpressionAttributeValues: { ':ct': itemA.ct!, ':exp': itemA.exp!, ':fp': itemA.fp! },
      }),
    );
    const fresh = instance(world, { clock: realClock, config }).broker;
    const served = await get(fresh, 'seal-b');
    expect(served.token.accessToken).not.toBe(a.token.accessToken);
    expect(served.token.accessToken).not.toBe(b.token.accessToken);
    expect(served.outcome).toBe('refreshed');
    expect(world.logs.some((l) => l.message.includes('did not open'))).toBe(true);
  });
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error('condition not reached');
}
