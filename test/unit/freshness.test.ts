import { describe, expect, it } from 'vitest';
import {
  expiresInSeconds,
  FRESH_MARGIN_MS,
  inAheadWindow,
  remainingMs,
  serves,
  skewFor,
  tokenExpiry,
  tooShortFor,
} from '../../functions/core/freshness.js';
import { MAX_TOKEN_LIFETIME_SECONDS } from '../../functions/core/token-response.js';
import { UpstreamError } from '../../functions/core/upstream-errors.js';
import { jwt } from './fakes.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

describe('serves: cached tokens need min_ttl + skew, fresh ones min_ttl + a response margin', () => {
  const token = { issuedAt: T0, expiresAt: T0 + 3_600_000 };

  it('serves a cached token exactly at min_ttl + skew and not a millisecond later', () => {
    const boundary = token.expiresAt - (60_000 + 5_000);
    expect(serves(token, boundary, 60_000, 5_000)).toBe(true);
    expect(serves(token, boundary + 1, 60_000, 5_000)).toBe(false);
  });

  it('a token fresh from the upstream needs only min_ttl + FRESH_MARGIN_MS (docs/protocol.md "Expiry and refresh")', () => {
    const boundary = token.expiresAt - (60_000 + FRESH_MARGIN_MS);
    expect(serves(token, boundary, 60_000, 5_000, true)).toBe(true);
    expect(serves(token, boundary + 1, 60_000, 5_000, true)).toBe(false);
    expect(serves(token, boundary, 60_000, 5_000, false)).toBe(false);
  });

  it('the skew allowance is at most a quarter of the lifetime: a 2 s token serves cached for 1.5 s', () => {
    const short = { issuedAt: T0, expiresAt: T0 + 2_000 };
    expect(skewFor(short, 5_000)).toBe(500);
    expect(serves(short, T0 + 1_500, 0, 5_000)).toBe(true);
    expect(serves(short, T0 + 1_501, 0, 5_000)).toBe(false);
    expect(skewFor(token, 5_000)).toBe(5_000);
  });

  it('never serves an expired token, even with min_ttl 0 (invariant 3, F1 as a clock jump)', () => {
    expect(serves(token, token.expiresAt + 1, 0, 0)).toBe(false);
    expect(serves(token, token.expiresAt + 1, 0, 0, true)).toBe(false);
    // F1: a container frozen with a fresh token and thawed hours later.
    expect(serves(token, T0, 60_000, 5_000)).toBe(true);
    expect(serves(token, T0 + 10 * 3_600_000, 0, 5_000)).toBe(false);
  });
});

describe('inAheadWindow: refresh-ahead, clamped to half the lifetime', () => {
  it('starts at refreshBefore + skew before expiry', () => {
    const token = { issuedAt: T0, expiresAt: T0 + 3_600_000 };
    const start = token.expiresAt - (120_000 + 5_000);
    expect(inAheadWindow(token, start, 120_000, 5_000)).toBe(false);
    expect(inAheadWindow(token, start + 1, 120_000, 5_000)).toBe(true);
  });

  it('never before half the lifetime: 10 s tokens with the 60 s default refresh at 5 s left, not at once', () => {
    const token = { issuedAt: T0, expiresAt: T0 + 10_000 };
    expect(inAheadWindow(token, T0, 60_000, 5_000)).toBe(false);
    expect(inAheadWindow(token, T0 + 5_000, 60_000, 5_000)).toBe(false);
    expect(inAheadWindow(token, T0 + 5_001, 60_000, 5_000)).toBe(true);
  });

  it('is off with refreshBefore 0 (the rate-limited default)', () => {
    const token = { issuedAt: T0, expiresAt: T0 + 10_000 };
    expect(inAheadWindow(token, T0 + 9_999, 0, 5_000)).toBe(false);
  });
});

describe('tooShortFor', () => {
  it('is true only when min_ttl itself exceeds the lifetime the upstream issues (no skew)', () => {
    const token = { issuedAt: T0, expiresAt: T0 + 1_200_000 };
    expect(tooShortFor(token, 1_200_000)).toBe(false);
    expect(tooShortFor(token, 1_200_001)).toBe(true);
    // Defect 6: a 2 s token and min_ttl 0 is no 400.
    expect(tooShortFor({ issuedAt: T0, expiresAt: T0 + 2_000 }, 0)).toBe(false);
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

  it('reports never less than min_ttl whenever serves() holds, fresh or cached, even answered 499 ms later', () => {
    for (const minTtl of [0, 1, 59, 60, 3599]) {
      for (const expiresAt of [T0 + minTtl * 1000 + 500, T0 + minTtl * 1000 + 5_000, T0 + minTtl * 1000 + 5_999, T0 + 86_400_000]) {
        const token = { issuedAt: T0 - 86_400_000 + 1, expiresAt };
        for (const fresh of [true, false]) {
          if (serves(token, T0, minTtl * 1000, 5_000, fresh)) expect(expiresInSeconds(expiresAt, T0 + 499)).toBeGreaterThanOrEqual(minTtl);
        }
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
    expect(tokenExpiry(T0, { accessToken: jwt({ exp: s + 600 }), tokenType: 'Bearer', expiresInSeconds: 3600 }, 300)).toBe(
      (s + 600) * 1000,
    );
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
    expect(() => tokenExpiry(T0, { accessToken: jwt({ exp: s - 1 }), tokenType: 'Bearer', expiresInSeconds: 3600 }, 300)).toThrow(
      UpstreamError,
    );
  });
});
