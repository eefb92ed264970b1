/**
 * Rate-limit ledger decisions: an exact sliding log of upstream attempts per ledger key. Pure functions
 * over the stored state; the protocol that reads and conditionally writes it is in core/rate-limiter.ts.
 *
 * Windows are widened by a clock-skew margin (W' = windowSeconds + margin) so that writers whose clocks
 * differ slightly still never let `max + 1` attempts into any real window of `windowSeconds`.
 */
import type { LedgerState } from './ports.js';

export interface LedgerLimit {
  max: number;
  windowSeconds: number;
}

export type DebitDecision =
  | { allow: true; entries: Record<string, number>; expiresAt: number }
  | { allow: false; retryAfterMs: number; reason: 'exhausted' | 'upstream_backoff'; live: number };

export function windowMs(limit: LedgerLimit, marginMs: number): number {
  return limit.windowSeconds * 1000 + marginMs;
}

/** The entries still inside the window ending at `now` (entries from a clock that runs ahead count too). */
export function liveEntries(entries: Record<string, number>, now: number, window: number): [string, number][] {
  return Object.entries(entries)
    .filter(([, at]) => at > now - window)
    .sort((a, b) => a[1] - b[1]);
}

/** Slots left in the window at `now`. */
export function remainingSlots(state: LedgerState, now: number, limit: LedgerLimit, marginMs: number): number {
  return Math.max(0, limit.max - liveEntries(state.entries, now, windowMs(limit, marginMs)).length);
}

/**
 * Decides whether one more attempt may be debited at `now`. On allow, `entries` is the new log: the live
 * entries plus this attempt (expired ones are pruned so the item stays small).
 */
export function decideDebit(state: LedgerState, now: number, limit: LedgerLimit, attemptId: string, marginMs: number): DebitDecision {
  const window = windowMs(limit, marginMs);
  const live = liveEntries(state.entries, now, window);
  if (state.backoffUntil !== undefined && state.backoffUntil > now) {
    return { allow: false, retryAfterMs: state.backoffUntil - now, reason: 'upstream_backoff', live: live.length };
  }
  if (live.length >= limit.max) {
    // The next slot frees when enough of the oldest entries have left the window.
    const freeing = live[live.length - limit.max]![1];
    return { allow: false, retryAfterMs: Math.max(1, freeing + window - now), reason: 'exhausted', live: live.length };
  }
  const entries = Object.fromEntries(live);
  entries[attemptId] = now;
  const newest = Math.max(...Object.values(entries));
  return { allow: true, entries, expiresAt: newest + window };
}

/** Retry-After in whole seconds (at least 1) for a delay in milliseconds. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
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
