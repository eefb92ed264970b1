/**
 * What a failed refresh leaves behind: how long the fleet waits before trying the upstream again, and
 * the error callers get meanwhile. Connections without a rate limit never back off longer than 15 s.
 */
import type { Connection } from './config.js';
import { BrokerError } from './errors.js';
import { retryAfterSeconds } from './ledger.js';
import type { Backoff } from './ports.js';
import type { UpstreamFailure } from './upstream-errors.js';

export const MAX_BACKOFF_UNLIMITED_MS = 15_000;
const MAX_UPSTREAM_RETRY_AFTER_MS = 3_600_000;
/** An upstream 429 without a usable Retry-After. */
export const DEFAULT_RATE_LIMIT_BACKOFF_MS = 60_000;

export interface BackoffPolicy {
  /** Transient failures (timeouts, 5xx, nonsense answers). */
  transientMs: number;
  /** Configuration and credential errors: no retry storm while ops fix it. */
  configErrorMs: number;
}

export const DEFAULT_BACKOFF: { limited: BackoffPolicy; unlimited: BackoffPolicy } = {
  limited: { transientMs: 30_000, configErrorMs: 300_000 },
  unlimited: { transientMs: 2_000, configErrorMs: MAX_BACKOFF_UNLIMITED_MS },
};

export function backoffFor(failure: UpstreamFailure, connection: Connection, now: number, policy = DEFAULT_BACKOFF): Backoff {
  const p = connection.rateLimit ? policy.limited : policy.unlimited;
  const cap = connection.rateLimit ? MAX_UPSTREAM_RETRY_AFTER_MS : MAX_BACKOFF_UNLIMITED_MS;
  let ms: number;
  switch (failure.kind) {
    case 'rate_limited':
      ms = failure.retryAfterSeconds !== undefined ? failure.retryAfterSeconds * 1000 : DEFAULT_RATE_LIMIT_BACKOFF_MS;
      break;
    case 'oauth':
      ms = p.configErrorMs;
      break;
    default:
      ms = p.transientMs;
  }
  const err = errorForFailure(failure, 0);
  return {
    until: now + Math.min(Math.max(ms, 1000), cap),
    code: err.code,
    message: err.message,
    ...(err.extra.upstreamError ? { upstreamError: err.extra.upstreamError } : {}),
  };
}

/** The caller-facing error for an upstream failure. */
export function errorForFailure(failure: UpstreamFailure, retryAfterMs: number): BrokerError {
  const retryAfter = retryAfterSeconds(retryAfterMs);
  switch (failure.kind) {
    case 'oauth':
      return new BrokerError('upstream_error', `upstream refused the token request: ${failure.error}`, { upstreamError: failure.error });
    case 'rate_limited':
      return new BrokerError('rate_limited', 'upstream rate-limited token requests', { retryAfterSeconds: retryAfter });
    case 'invalid_response':
      return new BrokerError('upstream_error', 'upstream answered with an unusable token response', { upstreamError: 'invalid_response' });
    case 'unavailable':
      return new BrokerError('unavailable', 'upstream token endpoint unavailable', { retryAfterSeconds: retryAfter });
  }
}

/** The error callers get while a recorded backoff lasts. */
export function errorForBackoff(b: Backoff, now: number): BrokerError {
  const retryAfter = retryAfterSeconds(b.until - now);
  return new BrokerError(b.code, b.message, {
    retryAfterSeconds: retryAfter,
    ...(b.upstreamError ? { upstreamError: b.upstreamError } : {}),
  });
}
