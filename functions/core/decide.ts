/**
 * The broker's protocol as pure decisions: given what a request knows (the connection's item, its opened
 * token, the request, the time), what to do next. `TokenBroker` (core/broker.ts) runs the steps against the
 * ports; every rule of docs/protocol.md "Expiry and refresh" and docs/protocol.md "Budget guard" that does not
 * need I/O lives here and is table-tested without DynamoDB.
 */
import { retryAfterSeconds } from '../contract/retry-after.js';
import { DEFAULT_MIN_TTL_SECONDS } from '../contract/routes.js';
import { errorForBackoff } from './backoff.js';
import { type CircuitState, circuitError, circuitRetryAt, circuitState } from './circuit.js';
import { type BrokerError, type RefreshReason, invalidRequest, unavailable } from './errors.js';
import { inAheadWindow, lifetimeMs, serves, tooShortFor } from './freshness.js';
import { canRefresh, leaseState } from './lease.js';
import { UNLIMITED_GAP_MS } from './limits.js';
import type { Backoff, Token, TokenItem } from './ports.js';

/** The min_ttl of a request that does not ask (docs/design.md "HTTP API"): what `expired` is measured against. */
const DEFAULT_MIN_TTL_MS = DEFAULT_MIN_TTL_SECONDS * 1000;

/** Demand refreshes: they must leave the budget's reserve and keep its spacing. */
export const DEMAND_REASONS: ReadonlySet<RefreshReason> = new Set(['ahead', 'min_ttl']);

export interface Policy {
  skewMs: number;
  refreshBeforeMs: number;
  /** The connection's `configHash`: a circuit opened under another config is closed. */
  configHash: string;
  /** A refresh is not started with less than this left before the deadline. */
  refreshBudgetMs: number;
}

export interface Situation {
  now: number;
  item: TokenItem | undefined;
  /** The item's token, opened; undefined when there is none or it was invalidated. */
  token: Token | undefined;
  /** The token arrived while this request waited (fetched by it, or published after its first read). */
  fresh: boolean;
  minTtlMs: number;
  deadline: number;
  /** This request holds the lease: it decides again after taking it. */
  holdsLease: boolean;
}

export type Step =
  | { do: 'serve'; token: Token }
  /** Take the lease and refresh. `circuit` says whether this is a probe or a secret check of an open circuit. */
  | { do: 'refresh'; reason: RefreshReason; circuit: Exclude<CircuitState, 'open'>; fallback?: Token }
  /** Another holder is refreshing: read the item again shortly. */
  | { do: 'wait' }
  | { do: 'refuse'; error: BrokerError };

const active = (b: Backoff | undefined, now: number): Backoff | undefined => (b && b.until > now ? b : undefined);

export function decide(s: Situation, p: Policy): Step {
  const { now, item, token } = s;
  const held = !s.holdsLease && leaseState(item, now) === 'held';
  const circuit = circuitState(item?.circuit, now, p.configHash);
  const backoff = active(item?.backoff, now);
  const demandBackoff = active(item?.demandBackoff, now);
  const timeToRefresh = canRefresh(s.deadline, now, p.refreshBudgetMs);

  if (token && serves(token, now, s.minTtlMs, p.skewMs, s.fresh)) {
    // Refresh ahead only when nothing stands in the way; otherwise the still-valid token serves.
    const ahead = inAheadWindow(token, now, p.refreshBeforeMs, p.skewMs);
    const blocked = held || backoff || demandBackoff || !timeToRefresh || (circuit !== 'closed' && circuit !== 'probe');
    if (!ahead || blocked) return { do: 'serve', token };
    return { do: 'refresh', reason: 'ahead', circuit, fallback: token };
  }
  if (token && tooShortFor(token, s.minTtlMs)) return { do: 'refuse', error: tooShort(token) };
  // The cached token serves callers at the default min_ttl: a larger min_ttl is a demand.
  const reason: RefreshReason = token && serves(token, now, DEFAULT_MIN_TTL_MS, p.skewMs) ? 'min_ttl' : 'expired';
  if (held) {
    if (now < s.deadline) return { do: 'wait' };
    const left = (item?.leaseUntil ?? now + 1_000) - now;
    return { do: 'refuse', error: unavailable('timed out waiting for another request to refresh the token', retryAfterSeconds(left)) };
  }
  if (circuit === 'open') return { do: 'refuse', error: circuitError(item!.circuit!) };
  if (backoff) return { do: 'refuse', error: errorForBackoff(backoff, now) };
  if (reason === 'min_ttl' && demandBackoff) return { do: 'refuse', error: errorForBackoff(demandBackoff, now) };
  if (!timeToRefresh) return { do: 'refuse', error: unavailable('not enough time left to refresh the token', 1) };
  return { do: 'refresh', reason, circuit };
}

/**
 * Until when refresh-ahead cannot start, whatever the request (a backoff, a demand backoff, an open
 * circuit): a container keeps answering from memory meanwhile instead of reading the store per request.
 */
export function aheadBlockedUntil(item: TokenItem, now: number, configHash: string): number {
  const circuit = circuitState(item.circuit, now, configHash);
  return Math.max(
    active(item.backoff, now)?.until ?? 0,
    active(item.demandBackoff, now)?.until ?? 0,
    circuit === 'open' || circuit === 'check' ? circuitRetryAt(item.circuit!) : 0,
  );
}

export function tooShort(token: Pick<Token, 'expiresAt' | 'issuedAt'>): BrokerError {
  return invalidRequest(`min_ttl is longer than the tokens this upstream issues (${Math.floor(lifetimeMs(token) / 1000)} s)`);
}

/** Without rateLimit, how often an invalidation is honoured, in words. */
export const UNLIMITED_GAP_RULE = `at most one invalidation per ${UNLIMITED_GAP_MS / 1000} s is honoured`;

export type InvalidationStep =
  | { do: 'not_current' }
  /** The guard will not spend a token request on it before `until`, `because` (a rule, in words). */
  | { do: 'defer'; until: number; because: string }
  /** Rate-limited: honour only if a demand request could be made now (the ledger says). */
  | { do: 'ask-ledger' }
  /** Mark it invalidated (the store enforces the gap between honoured invalidations atomically). */
  | { do: 'honour'; minGapMs?: number };

/**
 * What to do with a caller's report that its upstream rejected the token with fingerprint `fp`
 * (POST /invalidate, docs/protocol.md "Invalidations").
 */
export function decideInvalidation(
  item: TokenItem | undefined,
  fp: string,
  now: number,
  c: { rateLimited: boolean; configHash: string },
): InvalidationStep {
  if (!item?.sealed || item.fp !== fp || item.invalidated) return { do: 'not_current' };
  if (circuitState(item.circuit, now, c.configHash) === 'open')
    return { do: 'defer', until: circuitRetryAt(item.circuit!), because: circuitError(item.circuit!).message };
  // The later of a backoff and a demand backoff, with its own message (the rule that left it).
  const blocking = [active(item.backoff, now), active(item.demandBackoff, now)]
    .filter((b) => b !== undefined)
    .sort((a, b) => b.until - a.until)[0];
  if (blocking) return { do: 'defer', until: blocking.until, because: blocking.message };
  if (c.rateLimited) return { do: 'ask-ledger' };
  if (item.invalidatedAt !== undefined && now - item.invalidatedAt < UNLIMITED_GAP_MS) {
    return { do: 'defer', until: item.invalidatedAt + UNLIMITED_GAP_MS, because: UNLIMITED_GAP_RULE };
  }
  return { do: 'honour', minGapMs: UNLIMITED_GAP_MS };
}
