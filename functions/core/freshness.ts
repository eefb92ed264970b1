import type { Token, UpstreamToken } from './ports.js';
import { MAX_TOKEN_LIFETIME_SECONDS, jwtExpiry } from './token-response.js';
import { UpstreamError } from './upstream-errors.js';

/** How fresh a cached token is for one request. */
export type Freshness =
  /** Serve it. */
  | 'fresh'
  /** Serve it, but it is inside the refresh-ahead window: whoever wins the lease refreshes. */
  | 'refresh-ahead'
  /** It cannot serve this request (expired, invalidated, or less than min_ttl + skew left). */
  | 'stale';

export interface FreshnessPolicy {
  minTtlMs: number;
  skewMs: number;
  refreshBeforeMs: number;
}

export function remainingMs(expiresAt: number, now: number): number {
  return expiresAt - now;
}

/** True if the token has at least min_ttl plus the skew allowance left. */
export function satisfies(expiresAt: number, now: number, p: Pick<FreshnessPolicy, 'minTtlMs' | 'skewMs'>): boolean {
  return remainingMs(expiresAt, now) >= p.minTtlMs + p.skewMs;
}

export function freshness(expiresAt: number | undefined, now: number, p: FreshnessPolicy): Freshness {
  if (expiresAt === undefined || !satisfies(expiresAt, now, p)) return 'stale';
  return remainingMs(expiresAt, now) < p.refreshBeforeMs + p.skewMs ? 'refresh-ahead' : 'fresh';
}

/**
 * True when even a brand-new token from this upstream could not satisfy the request: the upstream
 * issues tokens that live `lifetime`, shorter than min_ttl + skew. Refreshing would only burn ledger slots.
 */
export function lifetimeTooShort(token: Pick<Token, 'expiresAt' | 'issuedAt'>, p: Pick<FreshnessPolicy, 'minTtlMs' | 'skewMs'>): boolean {
  return token.expiresAt - token.issuedAt < p.minTtlMs + p.skewMs;
}

/** The `expires_in` the broker reports: whole seconds left, rounded down. */
export function expiresInSeconds(expiresAt: number, now: number): number {
  return Math.max(0, Math.floor(remainingMs(expiresAt, now) / 1000));
}

/**
 * When a token from the upstream expires (DESIGN.md "Expiry and refresh"): the time the request was
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
