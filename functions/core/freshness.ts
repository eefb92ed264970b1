import type { Token, UpstreamToken } from './ports.js';
import { MAX_TOKEN_LIFETIME_SECONDS, jwtExpiry } from './token-response.js';
import { UpstreamError } from './upstream-errors.js';

/**
 * Whether a token can serve a request (invariant 3; docs/protocol.md "Expiry and refresh"):
 *  - a cached token needs min_ttl plus a skew allowance left: `skewMs`, or a quarter of the token's lifetime
 *    if that is less (a 5 s allowance would make a 2 s token uncacheable);
 *  - a token fresh from the upstream (fetched by this request, or published while it waited) needs only
 *    min_ttl plus FRESH_MARGIN_MS, which covers the time to answer: `expires_in` is never less than min_ttl.
 * @internal
 */
export const FRESH_MARGIN_MS = 500;

type Lifetime = Pick<Token, 'expiresAt' | 'issuedAt'>;

/** @internal */
export function remainingMs(expiresAt: number, now: number): number {
  return expiresAt - now;
}

export function lifetimeMs(token: Lifetime): number {
  return token.expiresAt - token.issuedAt;
}

/** The skew allowance for a cached token. @internal */
export function skewFor(token: Lifetime, skewMs: number): number {
  return Math.max(0, Math.min(skewMs, Math.floor(lifetimeMs(token) / 4)));
}

/** True if the token can serve a request with this min_ttl (see above). */
export function serves(token: Lifetime, now: number, minTtlMs: number, skewMs: number, fresh = false): boolean {
  const allowance = fresh ? FRESH_MARGIN_MS : skewFor(token, skewMs);
  return remainingMs(token.expiresAt, now) >= minTtlMs + allowance;
}

/**
 * Refresh-ahead starts when less than refreshBefore + skew is left, but never before half the token's
 * lifetime: with 10 s tokens and the 60 s default, the fleet would otherwise refresh back to back.
 */
export function inAheadWindow(token: Lifetime, now: number, refreshBeforeMs: number, skewMs: number): boolean {
  if (refreshBeforeMs <= 0) return false;
  const threshold = Math.min(refreshBeforeMs + skewFor(token, skewMs), lifetimeMs(token) / 2);
  return remainingMs(token.expiresAt, now) < threshold;
}

/**
 * True when min_ttl itself exceeds the lifetime this upstream issues: refreshing could never satisfy it
 * (a 400, not a refresh that burns ledger slots).
 */
export function tooShortFor(token: Lifetime, minTtlMs: number): boolean {
  return minTtlMs > lifetimeMs(token);
}

/** The `expires_in` the broker reports: whole seconds left, rounded down. */
export function expiresInSeconds(expiresAt: number, now: number): number {
  return Math.max(0, Math.floor(remainingMs(expiresAt, now) / 1000));
}

/**
 * When a token from the upstream expires (docs/protocol.md "Expiry and refresh"): the time the request was
 * sent plus `expires_in`; else the JWT `exp`; else the connection's default TTL. When both `expires_in`
 * and a JWT `exp` are present the earlier wins. Lifetimes are clamped to MAX_TOKEN_LIFETIME_SECONDS.
 */
export function tokenExpiry(sentAt: number, token: UpstreamToken, defaultTtlSeconds: number): number {
  const max = sentAt + MAX_TOKEN_LIFETIME_SECONDS * 1000;
  const fromExpiresIn = token.expiresInSeconds !== undefined ? sentAt + token.expiresInSeconds * 1000 : undefined;
  const exp = jwtExpiry(token.accessToken);
  const fromJwt = exp !== undefined ? exp * 1000 : undefined;
  const candidates = [fromExpiresIn, fromJwt].filter((v): v is number => v !== undefined);
  const expiresAt = Math.min(max, ...(candidates.length ? candidates : [sentAt + defaultTtlSeconds * 1000]));
  if (expiresAt <= sentAt) {
    throw new UpstreamError({ kind: 'invalid_response', status: 200, detail: 'token is already expired' });
  }
  return expiresAt;
}
