/**
 * Invalidating a connection's cached token under the budget guard: the runner behind POST /invalidate and
 * the operator's `refresh`. The decision is core/decide.ts `decideInvalidation`; the ledger is asked only
 * for a rate-limited connection; the store applies it with one conditional write.
 */
import { retryAfterSeconds } from '../contract/retry-after.js';
import type { Connection } from './config.js';
import { decideInvalidation, UNLIMITED_GAP_RULE } from './decide.js';
import type { TokenStore } from './ports.js';
import type { RateLimiter } from './rate-limiter.js';

export type InvalidationResult =
  /** `ver`: the item version whose token was invalidated. */
  | { invalidated: true; ver?: number }
  | { invalidated: false; reason: 'not_current' }
  /** `because`: the rule that defers it, in words (operators see it; the HTTP answer carries only the time). */
  | { invalidated: false; reason: 'deferred'; retryAfterSeconds: number; because: string };

export interface InvalidationDeps {
  store: TokenStore;
  limiter: RateLimiter;
  now: number;
}

/**
 * Marks the cached token with fingerprint `fp` invalidated, unless it is not the cached one or the guard
 * will not spend a token request on it now. `force` (an operator's decision) skips the guard.
 */
export async function invalidateToken(
  deps: InvalidationDeps,
  connection: Connection,
  fp: string,
  opts: { force?: boolean } = {},
): Promise<InvalidationResult> {
  const { store, limiter, now } = deps;
  const item = await store.get(connection.name);
  let step = decideInvalidation(item, fp, now, { rateLimited: connection.rateLimit !== undefined, configHash: connection.configHash });
  if (opts.force && step.do !== 'not_current') step = { do: 'honour' };
  if (step.do === 'ask-ledger') {
    const { refusal } = await limiter.demandAllowed(connection.rateLimit!, connection.name);
    step = refusal
      ? { do: 'defer', until: now + (refusal.extra.retryAfterSeconds ?? 1) * 1000, because: refusal.message }
      : { do: 'honour' };
  }
  if (step.do === 'defer')
    return { invalidated: false, reason: 'deferred', retryAfterSeconds: retryAfterSeconds(step.until - now), because: step.because };
  if (step.do === 'not_current') return { invalidated: false, reason: 'not_current' };
  const r = await store.invalidate(connection.name, fp, now, step.minGapMs);
  if (r.kind === 'too_soon')
    return { invalidated: false, reason: 'deferred', retryAfterSeconds: retryAfterSeconds(r.until - now), because: UNLIMITED_GAP_RULE };
  return r.kind === 'invalidated'
    ? { invalidated: true, ...(item ? { ver: item.ver } : {}) }
    : { invalidated: false, reason: 'not_current' };
}
