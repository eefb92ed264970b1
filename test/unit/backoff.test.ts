import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  backoffFor,
  backoffNote,
  DEFAULT_RATE_LIMIT_BACKOFF_MS,
  errorForBackoff,
  errorForFailure,
  MAX_BACKOFF_UNLIMITED_MS,
  TRANSIENT_BACKOFF_MS,
} from '../../functions/core/backoff.js';
import type { Backoff } from '../../functions/core/ports.js';
import { parseConfig } from '../../functions/core/config.js';
import type { UpstreamFailure } from '../../functions/core/upstream-errors.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const base = {
  tokenUrl: 'https://idp.example/token',
  grantType: 'client_credentials',
  secret: 's',
  callers: ['arn:aws:iam::111122223333:role/a'],
};
const cfg = parseConfig({ connections: { limited: { ...base, rateLimit: { max: 10, windowSeconds: 28800 } }, unlimited: base } });
const limited = cfg.connections.get('limited')!;
const unlimited = cfg.connections.get('unlimited')!;

const oauth: UpstreamFailure = { kind: 'oauth', status: 400, error: 'invalid_client' };
const failures: Record<string, Exclude<UpstreamFailure, { kind: 'oauth' }>> = {
  rateLimited: { kind: 'rate_limited', status: 429, retryAfterSeconds: 120 },
  rateLimitedNoHeader: { kind: 'rate_limited', status: 429 },
  unavailable: { kind: 'unavailable', status: 503, detail: 'status 503' },
  timeout: { kind: 'unavailable', detail: 'timed out' },
  invalid: { kind: 'invalid_response', status: 200, detail: 'body is not JSON' },
};

describe('backoffFor', () => {
  it('rate-limited connections: per failure kind', () => {
    expect(backoffFor(failures.unavailable!, limited, T0).until).toBe(T0 + TRANSIENT_BACKOFF_MS.limited);
    expect(backoffFor(failures.timeout!, limited, T0).until).toBe(T0 + TRANSIENT_BACKOFF_MS.limited);
    expect(backoffFor(failures.invalid!, limited, T0).until).toBe(T0 + TRANSIENT_BACKOFF_MS.limited);
    expect(backoffFor(failures.rateLimited!, limited, T0).until).toBe(T0 + 120_000); // upstream's Retry-After
    expect(backoffFor(failures.rateLimitedNoHeader!, limited, T0).until).toBe(T0 + DEFAULT_RATE_LIMIT_BACKOFF_MS); // B9 garbage → default
  });

  it('rate-limited connections: consecutive transient failures double the wait, up to the guard spacing', () => {
    let previous: Backoff | undefined;
    const waits: number[] = [];
    for (let i = 0; i < 9; i++) {
      previous = backoffFor(failures.unavailable!, limited, T0, previous);
      waits.push((previous.until - T0) / 1000);
    }
    // 10 per 8 h: spacing 2880 s.
    expect(waits).toEqual([30, 60, 120, 240, 480, 960, 1920, 2880, 2880]);
    expect(previous?.failures).toBe(9);
    // An upstream 429 follows its own Retry-After and restarts the series.
    expect(backoffFor(failures.rateLimited!, limited, T0, previous)).toMatchObject({ until: T0 + 120_000 });
    expect(backoffFor(failures.rateLimited!, limited, T0, previous).failures).toBeUndefined();
  });

  it('caps an upstream Retry-After at one hour and floors any backoff at one second', () => {
    expect(backoffFor({ kind: 'rate_limited', status: 429, retryAfterSeconds: 86_400 }, limited, T0).until).toBe(T0 + 3_600_000);
    expect(backoffFor({ kind: 'rate_limited', status: 429, retryAfterSeconds: 0 }, limited, T0).until).toBe(T0 + 1_000);
  });

  it('unlimited connections: per failure kind, never more than 15 s, and no doubling', () => {
    expect(backoffFor(failures.unavailable!, unlimited, T0).until).toBe(T0 + TRANSIENT_BACKOFF_MS.unlimited);
    const again = backoffFor(failures.unavailable!, unlimited, T0, backoffFor(failures.unavailable!, unlimited, T0));
    expect(again.until).toBe(T0 + TRANSIENT_BACKOFF_MS.unlimited);
    expect(backoffFor(failures.rateLimited!, unlimited, T0).until).toBe(T0 + MAX_BACKOFF_UNLIMITED_MS);
    expect(backoffFor(failures.rateLimitedNoHeader!, unlimited, T0).until).toBe(T0 + MAX_BACKOFF_UNLIMITED_MS);
    expect(MAX_BACKOFF_UNLIMITED_MS).toBe(15_000);
  });

  it('unlimited connections never back off more than 15 s, whatever the failure and history', () => {
    const failureArb = fc.oneof(
      fc
        .record({
          kind: fc.constant('rate_limited' as const),
          status: fc.constant(429 as const),
          retryAfterSeconds: fc.option(fc.nat({ max: 10_000_000 }), { nil: undefined }),
        })
        .map(({ retryAfterSeconds, ...f }) => (retryAfterSeconds === undefined ? f : { ...f, retryAfterSeconds })),
      fc.record({ kind: fc.constant('unavailable' as const), detail: fc.string() }),
      fc.record({ kind: fc.constant('invalid_response' as const), status: fc.integer({ min: 100, max: 599 }), detail: fc.string() }),
    );
    fc.assert(
      fc.property(failureArb, fc.nat({ max: 1000 }), (failure, failuresBefore) => {
        const previous = { until: T0, code: 'unavailable' as const, message: 'x', failures: failuresBefore };
        const b = backoffFor(failure, unlimited, T0, previous);
        expect(b.until - T0).toBeLessThanOrEqual(15_000);
        expect(b.until - T0).toBeGreaterThanOrEqual(1_000);
      }),
    );
  });

  it('records the caller-facing error with the backoff', () => {
    expect(backoffFor(failures.unavailable!, limited, T0)).toMatchObject({ code: 'unavailable' });
    expect(backoffFor(failures.unavailable!, limited, T0)).not.toHaveProperty('upstreamError');
    expect(backoffFor(failures.rateLimited!, limited, T0)).toMatchObject({ code: 'rate_limited', refusal: 'upstream_429' });
    expect(backoffFor(failures.invalid!, limited, T0)).toMatchObject({ code: 'upstream_error', upstreamError: 'invalid_response' });
  });
});

describe('errorForFailure', () => {
  it('maps failure kinds to contract codes and statuses', () => {
    const o = errorForFailure(oauth, 0);
    expect([o.code, o.status, o.extra.upstreamError]).toEqual(['upstream_error', 502, 'invalid_client']);
    const rl = errorForFailure(failures.rateLimited!, 120_000);
    expect([rl.code, rl.status, rl.extra.retryAfterSeconds]).toEqual(['rate_limited', 429, 120]);
    const un = errorForFailure(failures.unavailable!, 1_500);
    expect([un.code, un.status, un.extra.retryAfterSeconds]).toEqual(['unavailable', 503, 2]);
    const inv = errorForFailure(failures.invalid!, 0);
    expect([inv.code, inv.status, inv.extra.upstreamError]).toEqual(['upstream_error', 502, 'invalid_response']);
  });

  it('does not carry the upstream detail into the caller message', () => {
    const e = errorForFailure({ kind: 'invalid_response', status: 200, detail: 'CANARY-detail' }, 0);
    expect(e.message).not.toContain('CANARY');
    expect(errorForFailure({ kind: 'unavailable', detail: 'CANARY-detail' }, 0).message).not.toContain('CANARY');
  });
});

describe('errorForBackoff', () => {
  it('answers with the recorded error and the time left as Retry-After', () => {
    const b = backoffNote(errorForFailure(oauth, 0), T0 + 300_000);
    const e = errorForBackoff(b, T0 + 100_500);
    expect(e.code).toBe('upstream_error');
    expect(e.extra).toEqual({ retryAfterSeconds: Math.ceil((b.until - T0 - 100_500) / 1000), upstreamError: 'invalid_client' });
    const u = errorForBackoff(backoffFor(failures.unavailable!, unlimited, T0), T0);
    expect(u.status).toBe(503);
    expect(u.extra.retryAfterSeconds).toBe(2);
  });
});
