/**
 * `Retry-After`: the broker answers 429 and 503 with it, in whole seconds (at least 1); it reads an upstream's
 * (delta-seconds or IMF-fixdate). The client package parses the broker's with its own copy
 * (client/src/contract.ts); test/client/contract-parity.test.ts checks the two agree.
 */
export const RETRY_AFTER_HEADER = 'Retry-After';

/** Retry-After in whole seconds (at least 1) for a delay in milliseconds. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** The header value for a delay in whole seconds. */
export function formatRetryAfter(seconds: number): string {
  return String(seconds);
}

/**
 * Parses an HTTP Retry-After header (delta-seconds or HTTP-date) into a delay in ms from `now`.
 * Undefined for a missing or garbage value.
 */
export function parseRetryAfter(value: string | undefined | null, now: number): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d{1,9}$/.test(v)) return Number(v) * 1000;
  if (/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) {
    const at = Date.parse(v);
    if (Number.isFinite(at)) return Math.max(0, at - now);
  }
  return undefined;
}
