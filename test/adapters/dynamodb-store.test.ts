import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  ProvisionedThroughputExceededException,
  ResourceNotFoundException,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoTokenStore, toTokenItem } from '../../functions/adapters/dynamodb-store.js';
import { BrokerError } from '../../functions/core/errors.js';
import {
  type Backoff,
  type Circuit,
  type Lease,
  type LeaseAttempt,
  type SealedToken,
  StoreThrottled,
  StoreUnavailable,
  type TokenItem,
} from '../../functions/core/ports.js';
import { RateLimiter } from '../../functions/core/rate-limiter.js';
import { type EmbeddedDynamo, ensureTable, localDynamoClient, startDynalite } from '../../functions/local/dynamodb.js';
import { FakeClock } from '../support/clock.js';

const TABLE = 'token-broker-test';
const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const LEASE_MS = 10_000;

const sealedToken = (tag: string, expiresAt: number, issuedAt = T0): SealedToken => ({
  sealed: new Uint8Array(Buffer.from(`sealed:${tag}`)),
  expiresAt,
  issuedAt,
  fp: `fp-${tag}`,
  reason: 'expired',
});

/** A lease the test expects to get. */
async function taken(attempt: Promise<LeaseAttempt>): Promise<{ lease: Lease; item: TokenItem }> {
  const r = await attempt;
  if (!r.lease) throw new Error('the lease was not taken');
  return r;
}

const N = (v: number): AttributeValue => ({ N: String(v) });
const S = (v: string): AttributeValue => ({ S: v });

// ---------------------------------------------------------------------------------------------
// aws-sdk-client-mock: the paths dynalite cannot take (CCF carrying `Item`), and error propagation.
// ---------------------------------------------------------------------------------------------
describe('DynamoTokenStore with a mocked client', () => {
  // Mock this one instance only: the dynalite tests below use a real client of the same class.
  const mocked = new DynamoDBClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
  const ddb = mockClient(mocked);
  let store: DynamoTokenStore;

  const ccf = (Item?: Record<string, AttributeValue>) =>
    new ConditionalCheckFailedException({
      message: 'The conditional request failed',
      $metadata: { httpStatusCode: 400 },
      ...(Item ? { Item } : {}),
    });

  beforeEach(() => {
    ddb.reset();
    store = new DynamoTokenStore(mocked, TABLE);
  });

  afterAll(() => ddb.restore());

  it('asks for the old item on a failed condition (ReturnValuesOnConditionCheckFailure) and conditions every write', async () => {
    ddb
      .on(UpdateItemCommand)
      .resolves({ Attributes: { pk: S('tok#c'), owner: S('me'), fence: N(1), ver: N(0), leaseUntil: N(T0 + LEASE_MS) } });
    await store.acquireLease('c', 'me', T0, T0 + LEASE_MS);
    const input = ddb.commandCalls(UpdateItemCommand)[0]!.args[0].input;
    expect(input).toMatchObject({
      TableName: TABLE,
      Key: { pk: S('tok#c') },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      ReturnValues: 'ALL_NEW',
    });
    expect(input.ConditionExpression).toBeTruthy();
  });

  it('A9: acquireLease whose condition failed but whose Item shows us as owner returns the lease (our retried write)', async () => {
    ddb.on(UpdateItemCommand).rejects(ccf({ pk: S('tok#c'), owner: S('me'), fence: N(7), ver: N(3), leaseUntil: N(T0 + LEASE_MS) }));
    const r = await store.acquireLease('c', 'me', T0, T0 + LEASE_MS);
    expect(r?.lease).toEqual({ owner: 'me', fence: 7, until: T0 + LEASE_MS });
    expect(r.item?.ver).toBe(3);
    expect(ddb.commandCalls(GetItemCommand)).toHaveLength(0); // the Item on the exception sufficed
  });

  it('acquireLease whose failed condition shows another owner returns no lease and the item it found', async () => {
    ddb.on(UpdateItemCommand).rejects(ccf({ pk: S('tok#c'), owner: S('other'), fence: N(7), ver: N(3), leaseUntil: N(T0 + LEASE_MS) }));
    const r = await store.acquireLease('c', 'me', T0, T0 + LEASE_MS);
    expect(r.lease).toBeUndefined();
    expect(r.item).toMatchObject({ owner: 'other', fence: 7, ver: 3 }); // the item the failed write found: no read needed
    expect(ddb.commandCalls(GetItemCommand)).toHaveLength(0);
  });

  it('without Item on the exception, reads back with a consistent GetItem', async () => {
    ddb.on(UpdateItemCommand).rejects(ccf());
    ddb.on(GetItemCommand).resolves({ Item: { pk: S('tok#c'), owner: S('me'), fence: N(2), ver: N(0), leaseUntil: N(T0 + LEASE_MS) } });
    const r = await store.acquireLease('c', 'me', T0, T0 + LEASE_MS);
    expect(r.lease?.fence).toBe(2);
    const get = ddb.commandCalls(GetItemCommand);
    expect(get).toHaveLength(1);
    expect(get[0]!.args[0].input).toMatchObject({ TableName: TABLE, Key: { pk: S('tok#c') }, ConsistentRead: true });
  });

  it('A10: publish whose condition failed but whose Item holds our token with the lease cleared is published', async () => {
    const t = sealedToken('a', T0 + 3_600_000);
    const lease: Lease = { owner: 'me', fence: 4, until: T0 + LEASE_MS };
    ddb
      .on(UpdateItemCommand)
      .rejects(ccf({ pk: S('tok#c'), fence: N(4), ver: N(5), ct: { B: t.sealed }, exp: N(t.expiresAt), iat: N(T0), fp: S(t.fp) }));
    expect(await store.publish('c', lease, t)).toBe('published');
  });

  it.each([
    ['another holder owns the lease', { owner: S('other') }],
    ['another token is in place', { fp: S('fp-other') }],
    ['our fp but another expiry', { exp: N(T0 + 1) }],
  ])('publish whose failed condition shows that %s is superseded', async (_label, patch) => {
    const t = sealedToken('a', T0 + 3_600_000);
    ddb.on(UpdateItemCommand).rejects(ccf({ pk: S('tok#c'), fence: N(4), ver: N(5), exp: N(t.expiresAt), fp: S(t.fp), ...patch }));
    expect(await store.publish('c', { owner: 'me', fence: 4, until: T0 + LEASE_MS }, t)).toBe('superseded');
  });

  it('B6: a ledger write whose failed condition shows our attemptId in the log counts as written', async () => {
    ddb.on(UpdateItemCommand).rejects(ccf({ pk: S('rl#k'), ver: N(1), log: { M: { 'attempt-1': N(T0) } } }));
    expect(await store.write('k', 0, { 'attempt-1': T0 }, 'attempt-1', T0 + 1000)).toBe('written');
    ddb.on(UpdateItemCommand).rejects(ccf({ pk: S('rl#k'), ver: N(1), log: { M: { 'someone-else': N(T0) } } }));
    expect(await store.write('k', 0, { 'attempt-2': T0 }, 'attempt-2', T0 + 1000)).toBe('conflict');
    expect(ddb.commandCalls(GetItemCommand)).toHaveLength(0);
  });

  it('throttling leaves every call as StoreThrottled with the SDK error as cause (never a lost race or a miss)', async () => {
    const throttled = new ProvisionedThroughputExceededException({ message: 'slow down', $metadata: { httpStatusCode: 400 } });
    ddb.on(UpdateItemCommand).rejects(throttled);
    ddb.on(GetItemCommand).rejects(throttled);
    const lease: Lease = { owner: 'me', fence: 1, until: T0 + LEASE_MS };
    const calls = [
      store.acquireLease('c', 'me', T0, T0 + LEASE_MS),
      store.publish('c', lease, sealedToken('a', T0 + 1000)),
      store.release('c', lease),
      store.invalidate('c', 'fp', T0),
      store.reset('c'),
      store.write('k', 0, {}, 'a', T0),
      store.setBackoff('k', T0),
      store.hold('k', 'c', T0),
      store.refund('k', 'a'),
      store.releaseHold('k', 'c'),
      store.get('c'),
      store.read('k'),
    ];
    for (const call of calls) {
      const e = await call.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(StoreThrottled);
      expect((e as Error).cause).toBe(throttled);
    }
  });

  it('a server fault or a network error is StoreUnavailable; a client error (missing table, denied) stays as the SDK threw it', async () => {
    const server = Object.assign(new Error('InternalServerError'), {
      name: 'InternalServerError',
      $fault: 'server',
      $metadata: { httpStatusCode: 500 },
    });
    ddb.on(GetItemCommand).rejects(server);
    const e = await store.get('c').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StoreUnavailable);
    expect(e).not.toBeInstanceOf(StoreThrottled);
    expect((e as Error).cause).toBe(server);
    ddb.on(GetItemCommand).rejects(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    await expect(store.get('c')).rejects.toBeInstanceOf(StoreUnavailable);
    const missing = new ResourceNotFoundException({ message: 'Requested resource not found', $metadata: { httpStatusCode: 400 } });
    ddb.on(GetItemCommand).rejects(missing);
    await expect(store.get('c')).rejects.toBe(missing);
  });

  it('names each attribute once and sends only the values its expressions use', async () => {
    ddb.on(UpdateItemCommand).resolves({});
    const lease: Lease = { owner: 'me', fence: 1, until: T0 + LEASE_MS };
    await store.release('c', lease);
    await store.release('c', lease, { backoff: { until: T0, code: 'unavailable', message: 'm' } });
    await store.publish('c', lease, sealedToken('a', T0 + 1000));
    await store.invalidate('c', 'fp', T0, 10_000);
    await store.hold('k', 'conn', T0);
    await store.refund('k', 'attempt-1');
    for (const call of ddb.commandCalls(UpdateItemCommand)) {
      const { UpdateExpression, ConditionExpression, ExpressionAttributeNames = {}, ExpressionAttributeValues = {} } = call.args[0].input;
      const text = `${UpdateExpression} ${ConditionExpression}`;
      expect(Object.keys(ExpressionAttributeNames).sort()).toEqual([...new Set(text.match(/#\w+/g))].sort());
      expect(Object.keys(ExpressionAttributeValues).sort()).toEqual([...new Set(text.match(/:\w+/g))].sort());
    }
    const [plain, withNote, publish, , hold, refund] = ddb.commandCalls(UpdateItemCommand).map((c) => c.args[0].input);
    expect(plain!.ConditionExpression).toBe(withNote!.ConditionExpression);
    expect(publish!.ConditionExpression).toContain(plain!.ConditionExpression); // the lease clause, said once
    expect(withNote!.ExpressionAttributeValues![':bo']).toEqual({ M: { until: N(T0), code: S('unavailable'), msg: S('m') } });
    expect(hold!.ExpressionAttributeNames!['#a']).toBe('hold#conn');
    expect(refund!.ExpressionAttributeNames).toMatchObject({ '#log': 'log', '#id': 'attempt-1' });
  });

  it('toTokenItem maps every attribute', () => {
    const item = toTokenItem({
      pk: S('tok#c'),
      ver: N(2),
      fence: N(3),
      owner: S('o'),
      leaseUntil: N(T0),
      ct: { B: new Uint8Array([1]) },
      exp: N(T0 + 5),
      iat: N(T0 - 5),
      fp: S('f'),
      inv: { BOOL: true },
      bo: { M: { until: N(T0 + 9), code: S('upstream_error'), msg: S('m'), ue: S('invalid_client') } },
    });
    expect(item).toEqual({
      ver: 2,
      fence: 3,
      owner: 'o',
      leaseUntil: T0,
      sealed: new Uint8Array([1]),
      expiresAt: T0 + 5,
      issuedAt: T0 - 5,
      fp: 'f',
      invalidated: true,
      backoff: { until: T0 + 9, code: 'upstream_error', message: 'm', upstreamError: 'invalid_client' },
    });
    expect(toTokenItem({ pk: S('tok#c') })).toEqual({ ver: 0, fence: 0 });
  });
});

// ---------------------------------------------------------------------------------------------
// dynalite: the real conditional-write semantics.
// ---------------------------------------------------------------------------------------------
interface SeenCall {
  command: string;
  input: Record<string, unknown>;
}

describe('DynamoTokenStore against dynalite', () => {
  let dynamo: EmbeddedDynamo;
  let client: DynamoDBClient;
  let store: DynamoTokenStore;
  let seen: SeenCall[] = [];
  /** Commands whose next response is dropped after the server applied them (then the SDK retries). */
  const drop = new Map<string, number>();
  /** Wire attempts per command, counting SDK retries. */
  const attempts = new Map<string, number>();
  /** Commands to fail with a throttling error before they reach the server, this many times. */
  const throttle = new Map<string, number>();
  let conn = 0;
  const name = () => `conn-${++conn}`;

  beforeAll(async () => {
    dynamo = await startDynalite();
    client = localDynamoClient(dynamo.endpoint);
    await ensureTable(client, TABLE);
    // A15 spy: every command the store sends, as sent.
    client.middlewareStack.add(
      (next, context) => async (args) => {
        seen.push({ command: String(context.commandName), input: args.input as Record<string, unknown> });
        return next(args);
      },
      { step: 'initialize', name: 'a15Spy' },
    );
    // Fault injection inside the SDK's retry loop.
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const cmd = String(context.commandName);
        attempts.set(cmd, (attempts.get(cmd) ?? 0) + 1);
        const t = throttle.get(cmd) ?? 0;
        if (t > 0) {
          throttle.set(cmd, t - 1);
          throw new ProvisionedThroughputExceededException({ message: 'injected throttle', $metadata: { httpStatusCode: 400 } });
        }
        const result = await next(args);
        const d = drop.get(cmd) ?? 0;
        if (d > 0) {
          drop.set(cmd, d - 1);
          // The write went through; its response is "lost": a retryable network error.
          throw Object.assign(new Error('socket hang up (injected)'), { name: 'Error', code: 'ECONNRESET', $metadata: {} });
        }
        return result;
      },
      { step: 'deserialize', name: 'faultInjector', priority: 'high' },
    );
  });

  afterAll(async () => {
    client?.destroy();
    await dynamo?.close();
  });

  beforeEach(() => {
    store = new DynamoTokenStore(client, TABLE);
    seen = [];
    drop.clear();
    attempts.clear();
    throttle.clear();
  });

  afterEach(() => {
    // A15: strongly consistent reads, conditional writes only, no transactions.
    for (const c of seen) {
      expect(c.command).not.toMatch(/^Transact|^Batch|^Execute/);
      if (c.command === 'GetItemCommand') expect(c.input.ConsistentRead, `${c.command} ConsistentRead`).toBe(true);
      if (/^(UpdateItem|PutItem|DeleteItem)Command$/.test(c.command))
        expect(c.input.ConditionExpression, `${c.command} ConditionExpression`).toBeTruthy();
      expect(['GetItemCommand', 'UpdateItemCommand', 'PutItemCommand', 'DeleteItemCommand']).toContain(c.command);
    }
  });

  describe('lease', () => {
    it('acquires a free lease with fence 1, refuses it to others while held, hands it over once expired', async () => {
      const c = name();
      const a = await store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS);
      expect(a?.lease).toEqual({ owner: 'holder-a', fence: 1, until: T0 + LEASE_MS });
      expect(a?.item).toMatchObject({ ver: 0, fence: 1, owner: 'holder-a' });
      const refused = await store.acquireLease(c, 'holder-b', T0 + LEASE_MS - 1, T0 + 2 * LEASE_MS);
      expect(refused.lease).toBeUndefined();
      // dynalite returns no item with the failure, and without an SDK retry the store does not read it back.
      expect(refused.item).toBeUndefined();
      expect(seen.filter((x) => x.command === 'GetItemCommand')).toHaveLength(0);
      const b = await store.acquireLease(c, 'holder-b', T0 + LEASE_MS, T0 + 2 * LEASE_MS);
      expect(b?.lease).toEqual({ owner: 'holder-b', fence: 2, until: T0 + 2 * LEASE_MS });
      expect(await store.get(c)).toMatchObject({ owner: 'holder-b', fence: 2, leaseUntil: T0 + 2 * LEASE_MS });
    });

    it('records when the lease was taken, and at publish how long the refresh took (what waiters sleep for)', async () => {
      const c = name();
      const a = await taken(store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS));
      expect(a.item).toMatchObject({ leaseAt: T0 });
      expect(await store.publish(c, a.lease, { ...sealedToken('t', T0 + 3_600_000), refreshMs: 512 })).toBe('published');
      const published = await store.get(c);
      expect(published).toMatchObject({ refreshMs: 512, fp: 'fp-t' });
      expect(published?.leaseAt).toBeUndefined();
      const b = await taken(store.acquireLease(c, 'holder-b', T0 + 5, T0 + LEASE_MS));
      expect(b.item).toMatchObject({ leaseAt: T0 + 5, refreshMs: 512 }); // a waiter expects the publish at T0 + 5 + 512
      await store.release(c, b.lease);
      const released = await store.get(c);
      expect(released?.leaseAt).toBeUndefined();
      expect(released?.refreshMs).toBe(512); // a failed refresh leaves the last good duration
    });

    it('release frees the lease only for the current holder, and can leave a backoff, a demand backoff and a circuit', async () => {
      const c = name();
      const a = await taken(store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS));
      const b = await taken(store.acquireLease(c, 'holder-b', T0 + LEASE_MS, T0 + 2 * LEASE_MS));
      await store.release(c, a.lease); // stale: fence 1 is no longer current
      expect(await store.get(c)).toMatchObject({ owner: 'holder-b', fence: 2 });
      const backoff: Backoff = { until: T0 + 30_000, code: 'unavailable', message: 'upstream token endpoint unavailable', failures: 2 };
      const demandBackoff: Backoff = { until: T0 + 60_000, code: 'rate_limited', message: 'spacing', refusal: 'spacing' };
      const circuit: Circuit = {
        upstreamError: 'invalid_grant',
        openedAt: T0,
        probeAt: T0 + 300_000,
        probes: 1,
        secretVersion: 'sv',
        configHashes: ['ch', 'ch2'],
        checkedAt: T0 + 5,
      };
      await store.release(c, b.lease, { backoff, demandBackoff, circuit });
      const item = await store.get(c);
      expect(item?.owner).toBeUndefined();
      expect(item?.leaseUntil).toBeUndefined();
      expect(item?.backoff).toEqual(backoff);
      expect(item?.demandBackoff).toEqual(demandBackoff);
      expect(item?.circuit).toEqual(circuit);
      // Free again: the next acquire needs no waiting.
      expect((await store.acquireLease(c, 'holder-c', T0 + LEASE_MS + 1, T0 + 3 * LEASE_MS)).lease?.fence).toBe(3);
    });
  });

  describe('publish', () => {
    it('stores the token with its reason, frees the lease, bumps ver, clears a backoff and the circuit, sets the demand backoff', async () => {
      const c = name();
      const a = await taken(store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS));
      const circuit: Circuit = {
        upstreamError: 'invalid_grant',
        openedAt: T0,
        probeAt: T0,
        probes: 0,
        secretVersion: 'sv',
        configHashes: ['ch', 'ch2'],
        checkedAt: T0,
      };
      await store.release(c, a.lease, {
        backoff: { until: T0 + 1000, code: 'unavailable', message: 'x' },
        circuit,
        demandBackoff: { until: T0 + 9, code: 'unavailable', message: 'old' },
      });
      const b = await taken(store.acquireLease(c, 'holder-b', T0, T0 + LEASE_MS));
      const spacing: Backoff = { until: T0 + 2_880_000, code: 'rate_limited', message: 'spacing', refusal: 'spacing' };
      const t = { ...sealedToken('t1', T0 + 3_600_000), reason: 'min_ttl' as const, demandBackoff: spacing };
      expect(await store.publish(c, b.lease, t)).toBe('published');
      const item = await store.get(c);
      expect(item).toEqual({
        ver: 1,
        fence: 2,
        sealed: t.sealed,
        expiresAt: t.expiresAt,
        issuedAt: T0,
        fp: 'fp-t1',
        reason: 'min_ttl',
        demandBackoff: spacing,
      });
      // Without a demand backoff, a publish clears the old one.
      const h = await taken(store.acquireLease(c, 'holder-c', T0, T0 + LEASE_MS));
      expect(await store.publish(c, h.lease, sealedToken('t2', T0 + 3_600_000))).toBe('published');
      expect((await store.get(c))?.demandBackoff).toBeUndefined();
    });

    it("A8: a holder whose lease was taken over cannot publish; the newer holder's token stays", async () => {
      const c = name();
      const h1 = await taken(store.acquireLease(c, 'holder-1', T0, T0 + LEASE_MS));
      const h2 = await taken(store.acquireLease(c, 'holder-2', T0 + LEASE_MS + 1, T0 + 2 * LEASE_MS));
      expect(h2.lease.fence).toBe(2);
      // Holder 1 answers late, while holder 2 still holds the lease...
      expect(await store.publish(c, h1.lease, sealedToken('late-1', T0 + 7_200_000))).toBe('superseded');
      expect(await store.publish(c, h2.lease, sealedToken('h2', T0 + 3_600_000))).toBe('published');
      // ...and after holder 2 published.
      expect(await store.publish(c, h1.lease, sealedToken('late-2', T0 + 7_200_000))).toBe('superseded');
      expect(await store.get(c)).toMatchObject({ fp: 'fp-h2', ver: 1, fence: 2 });
    });

    it('publishing twice with the same lease fails the second time (the lease was consumed)', async () => {
      const c = name();
      const h = await taken(store.acquireLease(c, 'holder', T0, T0 + LEASE_MS));
      expect(await store.publish(c, h.lease, sealedToken('a', T0 + 3_600_000))).toBe('published');
      expect(await store.publish(c, h.lease, sealedToken('b', T0 + 7_200_000))).toBe('superseded');
      expect(await store.get(c)).toMatchObject({ fp: 'fp-a', ver: 1 });
    });

    it('invariant 4: refuses a token that expires earlier than the cached one, unless that one was invalidated', async () => {
      const c = name();
      const h1 = await taken(store.acquireLease(c, 'h1', T0, T0 + LEASE_MS));
      await store.publish(c, h1.lease, sealedToken('long', T0 + 3_600_000));

      const h2 = await taken(store.acquireLease(c, 'h2', T0 + 1, T0 + LEASE_MS));
      expect(await store.publish(c, h2.lease, sealedToken('short', T0 + 1_800_000))).toBe('superseded');
      expect(await store.get(c)).toMatchObject({ fp: 'fp-long', expiresAt: T0 + 3_600_000, ver: 1 });
      await store.release(c, h2.lease);

      // An equally long token may replace it.
      const h3 = await taken(store.acquireLease(c, 'h3', T0 + 2, T0 + LEASE_MS));
      expect(await store.publish(c, h3.lease, sealedToken('same', T0 + 3_600_000))).toBe('published');

      // After an invalidation, a shorter one may replace it, and the invalidation is cleared.
      expect(await store.invalidate(c, 'fp-same', T0)).toEqual({ kind: 'invalidated' });
      const h4 = await taken(store.acquireLease(c, 'h4', T0 + 3, T0 + LEASE_MS));
      expect(await store.publish(c, h4.lease, sealedToken('short', T0 + 1_800_000))).toBe('published');
      const item = await store.get(c);
      expect(item).toMatchObject({ fp: 'fp-short', expiresAt: T0 + 1_800_000, ver: 3 });
      expect(item?.invalidated).toBeUndefined();
    });
  });

  describe('invalidate', () => {
    it('matches only the current fingerprint, once', async () => {
      const c = name();
      const notCurrent = { kind: 'not_current' };
      expect(await store.invalidate(c, 'fp-none', T0)).toEqual(notCurrent); // no item
      const h = await taken(store.acquireLease(c, 'h', T0, T0 + LEASE_MS));
      await store.publish(c, h.lease, sealedToken('cur', T0 + 3_600_000));
      expect(await store.invalidate(c, 'fp-other', T0)).toEqual(notCurrent);
      expect((await store.get(c))?.invalidated).toBeUndefined();
      expect(await store.invalidate(c, 'fp-cur', T0)).toEqual({ kind: 'invalidated' });
      expect(await store.get(c)).toMatchObject({ invalidated: true, invalidatedAt: T0 });
      expect(await store.invalidate(c, 'fp-cur', T0)).toEqual(notCurrent); // a hundred reports, one change, even in the same ms
      // After a new publish, reports of the old token change nothing.
      const h2 = await taken(store.acquireLease(c, 'h2', T0 + 1, T0 + LEASE_MS));
      await store.publish(c, h2.lease, sealedToken('next', T0 + 3_600_000));
      expect(await store.invalidate(c, 'fp-cur', T0)).toEqual(notCurrent);
      expect((await store.get(c))?.invalidated).toBeUndefined();
    });

    it('with a minimum gap, honours one invalidation per gap, atomically (connections without rateLimit)', async () => {
      const c = name();
      const h = await taken(store.acquireLease(c, 'h', T0, T0 + LEASE_MS));
      await store.publish(c, h.lease, sealedToken('one', T0 + 3_600_000));
      expect(await store.invalidate(c, 'fp-one', T0, 10_000)).toEqual({ kind: 'invalidated' });
      const h2 = await taken(store.acquireLease(c, 'h2', T0 + 1, T0 + LEASE_MS));
      await store.publish(c, h2.lease, sealedToken('two', T0 + 3_600_000));
      expect(await store.invalidate(c, 'fp-two', T0 + 4_000, 10_000)).toEqual({ kind: 'too_soon', until: T0 + 10_000 });
      expect((await store.get(c))?.invalidated).toBeUndefined();
      expect(await store.invalidate(c, 'fp-two', T0 + 10_000, 10_000)).toEqual({ kind: 'invalidated' });
    });
  });

  describe('reset (operators)', () => {
    it('removes the backoff, the demand backoff and the circuit, keeps the token, and returns the item as it was', async () => {
      const c = name();
      expect(await store.reset(c)).toBeUndefined(); // no item: nothing to reset, nothing created
      expect(await store.get(c)).toBeUndefined();
      const h = await taken(store.acquireLease(c, 'h', T0, T0 + LEASE_MS));
      await store.publish(c, h.lease, sealedToken('kept', T0 + 3_600_000));
      const h2 = await taken(store.acquireLease(c, 'h2', T0, T0 + LEASE_MS));
      const circuit: Circuit = {
        upstreamError: 'invalid_grant',
        openedAt: T0,
        probeAt: T0 + 1,
        probes: 0,
        secretVersion: 'sv',
        configHashes: ['ch', 'ch2'],
        checkedAt: T0,
      };
      await store.release(c, h2.lease, {
        circuit,
        backoff: { until: T0 + 9, code: 'unavailable', message: 'b' },
        demandBackoff: { until: T0 + 9, code: 'rate_limited', message: 'd' },
      });
      const before = await store.reset(c);
      expect(before).toMatchObject({ circuit, backoff: { until: T0 + 9 }, demandBackoff: { until: T0 + 9 } });
      const after = await store.get(c);
      expect(after).toMatchObject({ fp: 'fp-kept', ver: 1 });
      expect(after?.circuit).toBeUndefined();
      expect(after?.backoff).toBeUndefined();
      expect(after?.demandBackoff).toBeUndefined();
    });

    it("releaseHold removes only that connection's hold and never a debit", async () => {
      const k = name();
      expect(await store.write(k, 0, { a1: T0 }, 'a1', T0 + 1000)).toBe('written');
      await store.hold(k, 'c1', T0 + 300_000);
      await store.hold(k, 'c2', T0 + 300_000);
      await store.releaseHold(k, 'c1');
      await store.releaseHold(k, 'none');
      expect(await store.read(k)).toMatchObject({ entries: { a1: T0 }, holds: { c2: T0 + 300_000 } });
    });
  });

  describe('ledger', () => {
    it('writes at the expected version only, and reads back entries and version', async () => {
      const k = name();
      expect(await store.read(k)).toEqual({ entries: {}, ver: 0 });
      expect(await store.write(k, 0, { a1: T0 }, 'a1', T0 + 1000)).toBe('written');
      expect(await store.write(k, 0, { a2: T0 }, 'a2', T0 + 1000)).toBe('conflict');
      expect(await store.write(k, 1, { a1: T0, a2: T0 + 1 }, 'a2', T0 + 1000)).toBe('written');
      expect(await store.read(k)).toEqual({ entries: { a1: T0, a2: T0 + 1 }, ver: 2 });
    });

    it('setBackoff never lowers backoffUntil, and does not disturb the log', async () => {
      const k = name();
      await store.setBackoff(k, T0 + 100_000); // before any ledger write: version 1
      expect(await store.write(k, 1, { a1: T0 }, 'a1', T0 + 1000)).toBe('written');
      await store.setBackoff(k, T0 + 50_000);
      expect((await store.read(k)).backoffUntil).toBe(T0 + 100_000);
      await store.setBackoff(k, T0 + 200_000);
      expect(await store.read(k)).toEqual({ entries: { a1: T0 }, ver: 3, backoffUntil: T0 + 200_000 });
    });

    it('hold raises a per-connection hold, refund removes one entry; both bump the version so a racing debit decides again', async () => {
      const k = name();
      expect(await store.write(k, 0, { a1: T0, a2: T0 + 1 }, 'a2', T0 + 1000)).toBe('written');
      await store.hold(k, 'conn-a', T0 + 300_000);
      await store.hold(k, 'conn-a', T0 + 1_000); // never lowered
      await store.hold(k, 'conn-b', T0 + 5_000);
      expect(await store.read(k)).toEqual({
        entries: { a1: T0, a2: T0 + 1 },
        ver: 3,
        holds: { 'conn-a': T0 + 300_000, 'conn-b': T0 + 5_000 },
      });
      await store.refund(k, 'a2');
      await store.refund(k, 'a2'); // already gone: no change
      expect(await store.read(k)).toMatchObject({ entries: { a1: T0 }, ver: 4 });
      expect(await store.write(k, 3, { a1: T0, x: T0 }, 'x', T0 + 1000)).toBe('conflict');
    });

    it('B3: concurrent debits never exceed max, and refused ones write nothing', async () => {
      const k = name();
      const clock = new FakeClock(T0);
      const limiter = new RateLimiter(store, clock, 2_000, 50);
      const limit = { max: 10, windowSeconds: 28_800, key: k, reserve: 2, minSpacingMs: 2_880_000 };
      const plain = { demand: false, connection: 'c' };
      for (let i = 0; i < 8; i++) await limiter.debit(limit, `pre-${i}`, plain);
      const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => limiter.debit(limit, `c-${i}`, plain)));
      const ok = results.filter((r) => r.status === 'fulfilled');
      expect(ok).toHaveLength(2);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as BrokerError).code).toMatch(/^(rate_limited|unavailable)$/);
      const state = await store.read(k);
      expect(Object.keys(state.entries)).toHaveLength(10);
      expect(Object.keys(state.entries).filter((id) => id.startsWith('c-'))).toHaveLength(2);
    });
  });

  describe('lost responses: the SDK retries a write that went through (real server, no Item on CCF)', () => {
    it('A9: acquireLease recognises its own retried write and proceeds without waiting for the lease', async () => {
      const c = name();
      drop.set('UpdateItemCommand', 1);
      const r = await store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS);
      expect(attempts.get('UpdateItemCommand')).toBe(2); // the write, then the SDK's retry that failed its condition
      expect(r?.lease).toEqual({ owner: 'holder-a', fence: 1, until: T0 + LEASE_MS });
      expect(seen.filter((s) => s.command === 'GetItemCommand')).toHaveLength(1); // the read-back
      expect(await store.get(c)).toMatchObject({ owner: 'holder-a', fence: 1 });
    });

    it('A9 (negative): a failed condition that is really another holder still returns undefined', async () => {
      const c = name();
      await store.acquireLease(c, 'holder-a', T0, T0 + LEASE_MS);
      drop.set('UpdateItemCommand', 1); // not used: the condition fails on the first attempt
      expect((await store.acquireLease(c, 'holder-b', T0 + 1, T0 + LEASE_MS)).lease).toBeUndefined();
    });

    it('A10: publish recognises its own retried write as published, with ver bumped once', async () => {
      const c = name();
      const h = await taken(store.acquireLease(c, 'holder', T0, T0 + LEASE_MS));
      drop.set('UpdateItemCommand', 1);
      attempts.clear();
      expect(await store.publish(c, h.lease, sealedToken('a', T0 + 3_600_000))).toBe('published');
      expect(attempts.get('UpdateItemCommand')).toBe(2);
      expect(await store.get(c)).toMatchObject({ fp: 'fp-a', ver: 1 });
    });

    it('B6: a ledger write recognises its own retried write and is counted once', async () => {
      const k = name();
      drop.set('UpdateItemCommand', 1);
      expect(await store.write(k, 0, { 'attempt-1': T0 }, 'attempt-1', T0 + 1000)).toBe('written');
      expect(attempts.get('UpdateItemCommand')).toBe(2);
      expect(await store.read(k)).toEqual({ entries: { 'attempt-1': T0 }, ver: 1 });
    });

    it('A12: throttling twice then success is retried transparently by the SDK', async () => {
      const c = name();
      throttle.set('UpdateItemCommand', 2);
      const r = await store.acquireLease(c, 'holder', T0, T0 + LEASE_MS);
      expect(attempts.get('UpdateItemCommand')).toBe(3);
      expect(r.lease?.fence).toBe(1);
    });

    it('A13: permanent throttling propagates as an error after the SDK gives up', async () => {
      const c = name();
      throttle.set('GetItemCommand', 100);
      const e = await store.get(c).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StoreThrottled);
      expect((e as Error).cause).toBeInstanceOf(ProvisionedThroughputExceededException);
      expect(attempts.get('GetItemCommand')).toBe(3); // localDynamoClient's maxAttempts
    });
  });
});
