import { describe, expect, it } from 'vitest';
import { expiresInSeconds, freshness, lifetimeTooShort, remainingMs, satisfies, tokenExpiry } from '../../functions/core/freshness.js';
import { MAX_TOKEN_LIFETIME_SECONDS } from '../../functions/core/token-response.js';
import { UpstreamError } from '../../functions/core/upstream-errors.js';
import { jwt } from './fakes.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const policy = { minTtlMs: 60_000, skewMs: 5_000, refreshBeforeMs: 120_000 };

describe('satisfies / freshness', () => {
  const expiresAt = T0 + 3_600_000;

  it('serves exactly at min_ttl + skew and not a millisecond later', () => {
    const boundary = expiresAt - (policy.minTtlMs + policy.skewMs);
    expect(satisfies(expiresAt, boundary, policy)).toBe(true);
    expect(satisfies(expiresAt, boundary + 1, policy)).toBe(false);
    expect(freshness(expiresAt, boundary + 1, policy)).toBe('stale');
  });

  it('is fresh well before expiry, refresh-ahead inside refreshBefore + skew, stale after min_ttl + skew', () => {
    const refreshStart = expiresAt - (policy.refreshBeforeMs + policy.skewMs);
    expect(freshness(expiresAt, T0, policy)).toBe('fresh');
    expect(freshness(expiresAt, refreshStart, policy)).toBe('fresh');
    expect(freshness(expiresAt, refreshStart + 1, policy)).toBe('refresh-ahead');
    expect(freshness(expiresAt, expiresAt - policy.minTtlMs - policy.skewMs, policy)).toBe('refresh-ahead');
    expect(freshness(expiresAt, expiresAt - policy.minTtlMs - policy.skewMs + 1, policy)).toBe('stale');
  });

  it('never serves an expired token, even with min_ttl 0 (invariant 3, F1 as a clock jump)', () => {
    const p = { minTtlMs: 0, skewMs: 0, refreshBeforeMs: 0 };
    expect(freshness(expiresAt, expiresAt - 1, p)).toBe('fresh');
    expect(freshness(expiresAt, expiresAt, p)).toBe('fresh'); // 0 ms left satisfies min_ttl 0 and skew 0 exactly
    expect(freshness(expiresAt, expiresAt + 1, p)).toBe('stale');
    // F1: a container frozen with a fresh token and thawed hours later.
    expect(freshness(expiresAt, T0, policy)).toBe('fresh');
    expect(freshness(expiresAt, T0 + 10 * 3_600_000, policy)).toBe('stale');
    expect(satisfies(expiresAt, T0 + 10 * 3_600_000, { minTtlMs: 0, skewMs: 0 })).toBe(false);
  });

  it('is stale when there is no expiry', () => {
    expect(freshness(undefined, T0, policy)).toBe('stale');
  });

  it('with refreshBefore 0 (rate-limited) goes from fresh straight to stale at min_ttl + skew', () => {
    const p = { ...policy, refreshBeforeMs: 0 };
    const boundary = expiresAt - p.minTtlMs - p.skewMs;
    expect(freshness(expiresAt, boundary, p)).toBe('fresh');
    expect(freshness(expiresAt, boundary + 1, p)).toBe('stale');
  });

  it('a larger min_ttl makes the same token stale sooner', () => {
    const now = expiresAt - 600_000; // 10 min left
    expect(freshness(expiresAt, now, { ...policy, minTtlMs: 60_000 })).toBe('fresh');
    expect(freshness(expiresAt, now, { ...policy, minTtlMs: 595_000 })).toBe('fresh'); // the refresh-ahead window does not depend on min_ttl
    expect(freshness(expiresAt, now, { ...policy, minTtlMs: 595_001 })).toBe('stale');
  });
});

describe('lifetimeTooShort', () => {
  it('is true only when even a brand-new token cannot satisfy min_ttl + skew', () => {
    const token = { issuedAt: T0, expiresAt: T0 + 1_200_000 };
    expect(lifetimeTooShort(token, { minTtlMs: 1_195_000, skewMs: 5_000 })).toBe(false);
    expect(lifetimeTooShort(token, { minTtlMs: 1_195_001, skewMs: 5_000 })).toBe(true);
    expect(lifetimeTooShort(token, { minTtlMs: 86_400_000, skewMs: 5_000 })).toBe(true);
  });
});

describe('expiresInSeconds / remainingMs', () => {
  it('rounds down to whole seconds and never goes negative', () => {
    expect(remainingMs(T0 + 1500, T0)).toBe(1500);
    expect(expiresInSeconds(T0 + 1_187_999, T0)).toBe(1187);
    expect(expiresInSeconds(T0 + 1_188_000, T0)).toBe(1188);
    expect(expiresInSeconds(T0 + 999, T0)).toBe(0);
    expect(expiresInSeconds(T0 - 5_000, T0)).toBe(0);
  });

  it('reports never less than min_ttl whenever satisfies() holds', () => {
    for (const minTtl of [0, 1, 59, 60, 3599]) {
      const p = { minTtlMs: minTtl * 1000, skewMs: 5_000 };
      for (const expiresAt of [T0 + minTtl * 1000 + 5_000, T0 + minTtl * 1000 + 5_999, T0 + 86_400_000]) {
        if (satisfies(expiresAt, T0, p)) expect(expiresInSeconds(expiresAt, T0)).toBeGreaterThanOrEqual(minTtl);
      }
    }
  });
});

describe('tokenExpiry', () => {
  const opaque = 'opaque-token';

  it('is the time the request was sent plus expires_in', () => {
    expect(tokenExpiry(T0, { accessToken: opaque, tokenType: 'Bearer', expiresInSeconds: 1200 }, 300)).toBe(T0 + 1_200_000);
  });

  it('uses the JWT exp when expires_in is missing', () => {
    const exp = Math.floor(T0 / 1000) + 1800;
    expect(tokenExpiry(T0, { accessToken: jwt({ exp }), tokenType: 'Bearer' }, 300)).toBe(exp * 1000);
  });

  it('takes the earlier of expires_in and JWT exp', () => {
    const s = Math.floor(T0 / 1000);
    expect(tokenExpiry(T0, { accessToken: jwt({ exp: s + 600 }), tokenType: 'Bearer', expiresInSeconds: 3600 }, 300)).toBe((s + 600) * 1000);
    expect(tokenExpiry(T0, { accessToken: jwt({ exp: s + 7200 }), tokenType: 'Bearer', expiresInSeconds: 3600 }, 300)).toBe(T0 + 3_600_000);
  });

  it('falls back to the default TTL without expires_in or a JWT exp', () => {
    expect(tokenExpiry(T0, { accessToken: opaque, tokenType: 'Bearer' }, 300)).toBe(T0 + 300_000);
    expect(tokenExpiry(T0, { accessToken: jwt({ sub: 'x' }), tokenType: 'Bearer' }, 900)).toBe(T0 + 900_000);
    expect(tokenExpiry(T0, { accessToken: jwt({ exp: 'soon' }), tokenType: 'Bearer' }, 900)).toBe(T0 + 900_000);
  });

  it('clamps any lifetime to 24 h', () => {
    const max = T0 + MAX_TOKEN_LIFETIME_SECONDS * 1000;
    expect(MAX_TOKEN_LIFETIME_SECONDS).toBe(86_400);
    expect(tokenExpiry(T0, { accessToken: opaque, tokenType: 'Bearer', expiresInSeconds: 10 * 86_400 }, 300)).toBe(max);
    expect(tokenExpiry(T0, { accessToken: jwt({ exp: 4_102_444_800 }), tokenType: 'Bearer' }, 300)).toBe(max);
    expect(tokenExpiry(T0, { accessToken: opaque, tokenType: 'Bearer' }, 10 * 86_400)).toBe(max);
  });

  it('rejects a token that is already expired as an invalid upstream response (A4)', () => {
    const s = Math.floor(T0 / 1000);
    for (const accessToken of [jwt({ exp: s - 60 }), jwt({ exp: s })]) {
      let err: unknown;
      try {
        tokenExpiry(T0, { accessToken, tokenType: 'Bearer' }, 300);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UpstreamError);
      expect((err as UpstreamError).failure).toMatchObject({ kind: 'invalid_response', status: 200 });
      expect((err as Error).message).not.toContain(accessToken);
    }
    // Even with a long expires_in, an expired JWT exp wins (min of both).
    expect(() => tokenExpiry(T0, { accessToken: jwt({ exp: s - 1 }), tokenType: 'Bearer', expiresInSeconds: 3600 }, 300)).toThrow(UpstreamError);
  });
});
