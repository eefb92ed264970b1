/**
 * The in-memory TokenStore the fast broker tests use (test/support/memory-store.ts) must agree with the
 * DynamoDB adapter, or those tests prove nothing: random sequences of operations run against both (the
 * adapter on dynalite), and every answer and the item after each step must be the same.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import type { Backoff, Lease, TokenItem, TokenStore } from '../../functions/core/ports.js';
import { ensureTable, localDynamoClient, startDynalite, type EmbeddedDynamo } from '../../functions/local/dynamodb.js';
import { MemoryTokenStore } from '../support/memory-store.js';

type Op =
  | { op: 'acquire'; owner: number; at: number }
  | { op: 'publish'; owner: number; exp: number; fp: number }
  | { op: 'release'; owner: number; note: 'none' | 'backoff' | 'demand' | 'circuit' }
  | { op: 'invalidate'; fp: number; at: number; gap?: number }
  | { op: 'reset' };

const T0 = Date.UTC(2026, 10, 30, 9, 0, 0);
const backoff = (until: number): Backoff => ({ until, code: 'unavailable', message: 'try later', failures: 1 });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('acquire' as const), owner: fc.integer({ min: 0, max: 2 }), at: fc.integer({ min: 0, max: 60 }) }),
  fc.record({
    op: fc.constant('publish' as const),
    owner: fc.integer({ min: 0, max: 2 }),
    exp: fc.integer({ min: 1, max: 5 }),
    fp: fc.integer({ min: 0, max: 2 }),
  }),
  fc.record({
    op: fc.constant('release' as const),
    owner: fc.integer({ min: 0, max: 2 }),
    note: fc.constantFrom('none' as const, 'backoff' as const, 'demand' as const, 'circuit' as const),
  }),
  fc.record(
    {
      op: fc.constant('invalidate' as const),
      fp: fc.integer({ min: 0, max: 2 }),
      at: fc.integer({ min: 0, max: 60 }),
      gap: fc.constantFrom(5, 20),
    },
    { requiredKeys: ['op', 'fp', 'at'] },
  ),
  fc.record({ op: fc.constant('reset' as const) }),
);

/** The item without what only the encoding differs in. */
function normal(item: TokenItem | undefined): unknown {
  if (!item) return undefined;
  const { sealed, ...rest } = item;
  return { ...rest, ...(sealed ? { sealed: Buffer.from(sealed).toString('hex') } : {}) };
}

/** Runs `ops` on one store; the leases each owner holds are its own (as each container's are). */
async function run(store: TokenStore, connection: string, ops: Op[]): Promise<unknown[]> {
  const leases = new Map<number, Lease>();
  const trace: unknown[] = [];
  for (const o of ops) {
    let answer: unknown;
    switch (o.op) {
      case 'acquire': {
        const r = await store.acquireLease(connection, `owner-${o.owner}`, T0 + o.at * 1000, T0 + (o.at + 20) * 1000);
        if (r.lease) leases.set(o.owner, r.lease);
        answer = { lease: r.lease, item: normal(r.item) };
        break;
      }
      case 'publish': {
        const lease = leases.get(o.owner) ?? { owner: `owner-${o.owner}`, fence: 0, until: T0 };
        const exp = T0 + o.exp * 60_000;
        answer = await store.publish(connection, lease, {
          sealed: new Uint8Array([o.fp, o.exp]),
          expiresAt: exp,
          issuedAt: T0,
          fp: `fp-${o.fp}`,
          reason: 'expired',
          refreshMs: 100 * o.exp,
        });
        break;
      }
      case 'release': {
        const lease = leases.get(o.owner) ?? { owner: `owner-${o.owner}`, fence: 0, until: T0 };
        const note =
          o.note === 'backoff'
            ? { backoff: backoff(T0 + 30_000) }
            : o.note === 'demand'
              ? { demandBackoff: backoff(T0 + 40_000) }
              : o.note === 'circuit'
                ? {
                    circuit: {
                      upstreamError: 'invalid_client',
                      openedAt: T0,
                      probeAt: T0 + 300_000,
                      probes: 0,
                      secretVersion: 'sv',
                      configHashes: ['a', 'b'],
                      checkedAt: T0,
                    },
                  }
                : undefined;
        answer = await store.release(connection, lease, note);
        break;
      }
      case 'invalidate':
        answer = await store.invalidate(connection, `fp-${o.fp}`, T0 + o.at * 1000, o.gap === undefined ? undefined : o.gap * 1000);
        break;
      case 'reset':
        answer = normal(await store.reset(connection));
        break;
    }
    trace.push({ o, answer, item: normal(await store.get(connection)) });
  }
  return trace;
}

describe('MemoryTokenStore agrees with DynamoTokenStore (dynalite)', () => {
  let dynamo: EmbeddedDynamo;
  let dynamoStore: DynamoTokenStore;
  const client = () => localDynamoClient(dynamo.endpoint);
  let n = 0;

  beforeAll(async () => {
    dynamo = await startDynalite();
    const c = client();
    await ensureTable(c, 'parity');
    dynamoStore = new DynamoTokenStore(c, 'parity');
  });
  afterAll(async () => {
    await dynamo?.close();
  });

  it('on random sequences of lease, publish, release, invalidate and reset', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 14 }), async (ops) => {
        const connection = `c${n++}`;
        // dynalite does not return the item with a failed condition (DynamoDB does: the fake's default).
        const memory = await run(new MemoryTokenStore(false), connection, ops);
        const real = await run(dynamoStore, connection, ops);
        expect(memory).toEqual(real);
      }),
      { numRuns: 60 },
    );
  });
});
