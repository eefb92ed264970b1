/**
 * What a failed refresh leaves behind: how long the fleet waits before trying the upstream again, and
 * the error callers get meanwhile. Connections without a rate limit never back off longer than 15 s.
 * Credential and configuration errors open the circuit instead (core/circuit.ts).
 */
import { retryAfterSeconds } from '../contract/retry-after.js';
import type { Connection } from './config.js';
import { BrokerError } from './errors.js';
import type { Backoff } from './ports.js';
import type { UpstreamFailure } from './upstream-errors.js';

/** @internal */
export const MAX_BACKOFF_UNLIMITED_MS = 15_000;
const MAX_UPSTREAM_RETRY_AFTER_MS = 3_600_000;
/** An upstream 429 without a usable Retry-After. @internal */
export const DEFAULT_RATE_LIMIT_BACKOFF_MS = 60_000;

/** Transient failures (timeouts, 5xx, nonsense answers): how long the fleet waits. @internal */
export const TRANSIENT_BACKOFF_MS = { limited: 30_000, unlimited: 2_000 };

/**
 * The backoff after a failure that does not open the circuit (everything but an OAuth error). On a
 * rate-limited connection every attempt spends a slot, so consecutive transient failures double the wait
 * (30 s, 60 s, ...) up to the guard's spacing: an upstream that is down does not drain the budget in minutes.
 */
export function backoffFor(
  failure: Exclude<UpstreamFailure, { kind: 'oauth' }>,
  connection: Connection,
  now: number,
  previous?: Backoff,
): Backoff {
  const limit = connection.rateLimit;
  const cap = limit ? MAX_UPSTREAM_RETRY_AFTER_MS : MAX_BACKOFF_UNLIMITED_MS;
  const failures = failure.kind === 'rate_limited' ? 0 : (previous?.failures ?? 0) + 1;
  let ms: number;
  if (failure.kind === 'rate_limited')
    ms = failure.retryAfterSeconds !== undefined ? failure.retryAfterSeconds * 1000 : DEFAULT_RATE_LIMIT_BACKOFF_MS;
  else if (!limit) ms = TRANSIENT_BACKOFF_MS.unlimited;
  else
    ms = Math.max(
      TRANSIENT_BACKOFF_MS.limited,
      Math.min(TRANSIENT_BACKOFF_MS.limited * 2 ** Math.min(failures - 1, 20), limit.minSpacingMs),
    );
  return { ...backoffNote(errorForFailure(failure, 0), now + Math.min(Math.max(ms, 1000), cap)), ...(failures ? { failures } : {}) };
}

/** A backoff that answers `err` until `until`. */
export function backoffNote(err: BrokerError, until: number): Backoff {
  return {
    until,
    code: err.code,
    message: err.message,
    ...(err.extra.upstreamError ? { upstreamError: err.extra.upstreamError } : {}),
    ...(err.extra.refusal ? { refusal: err.extra.refusal } : {}),
  };
}

/** The caller-facing error for an upstream failure. */
export function errorForFailure(failure: UpstreamFailure, retryAfterMs: number): BrokerError {
  const retryAfter = retryAfterSeconds(retryAfterMs);
  const fromUpstream = true;
  switch (failure.kind) {
    case 'oauth':
      return new BrokerError('upstream_error', `upstream refused the token request: ${failure.error}`, {
        upstreamError: failure.error,
        fromUpstream,
      });
    case 'rate_limited':
      return new BrokerError('rate_limited', 'upstream rate-limited token requests (upstream 429)', {
        retryAfterSeconds: retryAfter,
        refusal: 'upstream_429',
        fromUpstream,
      });
    case 'invalid_response':
      return new BrokerError('upstream_error', 'upstream answered with an unusable token response', {
        upstreamError: 'invalid_response',
        fromUpstream,
      });
    case 'unavailable':
      return new BrokerError('unavailable', 'upstream token endpoint unavailable', { retryAfterSeconds: retryAfter, fromUpstream });
  }
}

/** The error callers get while a recorded backoff lasts. */
export function errorForBackoff(b: Backoff, now: number): BrokerError {
  const retryAfter = retryAfterSeconds(b.until - now);
  return new BrokerError(b.code, b.message, {
    retryAfterSeconds: retryAfter,
    ...(b.upstreamError ? { upstreamError: b.upstreamError } : {}),
    ...(b.refusal ? { refusal: b.refusal } : {}),
  });
}
