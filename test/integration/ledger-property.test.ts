/**
 * B8: a property test over simulated days. Random arrivals, invalidations (forcing refreshes), upstream
 * failures, dead holders and container clock offsets (below the ledger margin) against the real broker,
 * store (dynalite) and a fake IdP. Safety: the IdP's own receipt log never holds more than `max` requests
 * in any window. Liveness: while budget remains and the IdP is healthy, requests get a valid token.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { principalFromArn } from '../../functions/core/authz.js';
import { FakeClock } from '../support/clock.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { type Answer, startIdp } from '../../testkit/idp.js';

const principal = principalFromArn(CALLER);
const MAX = 10;
const WINDOW_S = 8 * 3600;

type Op =
  | { kind: 'advance'; ms: number }
  | { kind: 'burst'; who: number[]; minTtl: number }
  | { kind: 'invalidate'; who: number }
  | { kind: 'idp'; mode: 'ok' | 'error' | 'timeout' }
  | { kind: 'kill'; who: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1_000, max: 45 * 60_000 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('burst' as const),
      who: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 6 }),
      minTtl: fc.integer({ min: 0, max: 600 }),
    }),
  },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('invalidate' as const), who: fc.integer({ min: 0, max: 2 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('idp' as const), mode: fc.constantFrom('ok' as const, 'error' as const, 'timeout' as const) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('kill' as const), who: fc.integer({ min: 0, max: 2 }) }) },
);

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => world.close());

describe('ledger property (B8)', () => {
  it('never more than max upstream requests in any window; healthy requests with budget get valid tokens', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 40, maxLength: 120 }),
        fc.array(fc.integer({ min: -1_500, max: 1_500 }), { minLength: 3, maxLength: 3 }),
        async (ops, offsets) => {
          const clock = new FakeClock(Date.UTC(2026, 10, 1));
          const idp = await startIdp(undefined, () => clock.now());
          let mode: 'ok' | 'error' | 'timeout' = 'ok';
          let n = 0;
          idp.respond = (): Answer =>
            mode === 'error'
              ? { status: 500 }
              : mode === 'timeout'
                ? { delayMs: 400 }
                : { body: { access_token: `p-${++n}`, token_type: 'Bearer', expires_in: 3600 } };
          const name = `prop-${++run}`;
          const config = connections(idp, { [name]: { rateLimit: { max: MAX, windowSeconds: WINDOW_S } } });
          const options = { upstreamTimeoutMs: 200, leaseMs: 2_000, maxWaitMs: 5_000 };
          const make = (i: number) => instance(world, { clock: clock.skewed(offsets[i]!), config, options }).broker;
          const brokers = [0, 1, 2].map(make);
          try {
            for (const o of ops) {
              if (o.kind === 'advance') clock.advance(o.ms);
              else if (o.kind === 'idp') mode = o.mode;
              else if (o.kind === 'kill')
                brokers[o.who] = make(o.who); // a container replaced: memory gone
              else if (o.kind === 'invalidate') {
                const t = await brokers[o.who]!.getToken({ connection: name, principal, minTtlSeconds: 0 }).catch(() => undefined);
                if (t) await brokers[o.who]!.invalidate({ connection: name, principal, accessToken: t.token.accessToken });
              } else {
                const results = await Promise.allSettled(
                  o.who.map((w) => brokers[w]!.getToken({ connection: name, principal, minTtlSeconds: o.minTtl })),
                );
                for (const r of results) {
                  if (r.status === 'fulfilled') {
                    // Invariant 3: never an expired token, nor one with less than min_ttl left.
                    expect(r.value.token.expiresAt - clock.now()).toBeGreaterThanOrEqual(o.minTtl * 1000 - 1_500);
                  } else {
                    expect(['rate_limited', 'unavailable', 'upstream_error']).toContain((r.reason as { code?: string }).code);
                  }
                }
              }
            }
            // Safety on the IdP's own clock: every MAX+1 consecutive receipts span at least the window.
            const at = idp.receipts.map((r) => r.at).sort((a, b) => a - b);
            for (let i = 0; i + MAX < at.length; i++) expect(at[i + MAX]! - at[i]!).toBeGreaterThanOrEqual(WINDOW_S * 1000);
            // Liveness: with the IdP healthy and the window long past, a request succeeds.
            mode = 'ok';
            clock.advance(WINDOW_S * 1000 + 60_000);
            const fresh = make(0);
            const last = await fresh.getToken({ connection: name, principal, minTtlSeconds: 60 });
            expect(last.token.expiresAt).toBeGreaterThan(clock.now() + 60_000);
          } finally {
            await idp.close();
          }
        },
      ),
      { numRuns: 12, seed: 20261125 },
    );
  }, 240_000);
});
