/**
 * Rate-limit ledger decisions: an exact sliding log of upstream attempts per ledger key. Pure functions
 * over the stored state; the protocol that reads and conditionally writes it is in core/rate-limiter.ts.
 *
 * Windows are widened by a margin (W' = windowSeconds + margin, see `ledgerMarginMs`) so that requests that
 * reach the upstream late, debited by containers whose clocks differ, still never put `max + 1` attempts
 * into any real window of `windowSeconds`.
 */
import type { MarginParts } from './limits.js';
import type { LedgerState } from './ports.js';

export interface LedgerLimit {
  max: number;
  windowSeconds: number;
}

/** The budget guard's settings of a rate-limited connection (resolved defaults, see core/config.ts). */
export interface GuardedLimit extends LedgerLimit {
  reserve: number;
  minSpacingMs: number;
}

/**
 * Why a debit is refused: an upstream 429 asked to wait; a token this connection fetched waits to be
 * published (`held`); no slot left; or, for demand refreshes and invalidations only, the guard keeps the
 * reserve or the spacing.
 */
export type LedgerRefusal = 'upstream_backoff' | 'held' | 'exhausted' | 'reserve' | 'spacing';

export type DebitDecision =
  | { allow: true; entries: Record<string, number>; expiresAt: number }
  | { allow: false; retryAfterMs: number; reason: LedgerRefusal; live: number };

/**
 * The margin every window is widened by. Requests reach the upstream up to sendCutoff + connect after their
 * debit, and two containers' clocks differ by up to clockSkew. With W' = W + sendCutoff + connect + clockSkew,
 * the last of any max + 1 requests that reach the upstream within W sees the other max as live entries (also
 * after another container pruned with its own clock), so it is refused.
 */
export function ledgerMarginMs(parts: MarginParts): number {
  return parts.sendCutoffMs + parts.connectTimeoutMs + parts.clockSkewMs;
}

export function windowMs(limit: LedgerLimit, marginMs: number): number {
  return limit.windowSeconds * 1000 + marginMs;
}

/** The entries still inside the window ending at `now` (entries from a clock that runs ahead count too). */
export function liveEntries(entries: Record<string, number>, now: number, window: number): [string, number][] {
  return Object.entries(entries)
    .filter(([, at]) => at > now - window)
    .sort((a, b) => a[1] - b[1]);
}

/** When the ledger's last request was debited (undefined if it holds none). */
function lastDebitAt(state: LedgerState): number | undefined {
  const times = Object.values(state.entries);
  return times.length ? Math.max(...times) : undefined;
}

/** When enough of the oldest live entries have left the window for at most `allowed` to remain. */
function freeAt(live: [string, number][], allowed: number, window: number): number {
  return live[live.length - allowed - 1]![1] + window;
}

/**
 * Whether one more request may be debited at `now`, and if not, why and for how long. `demand` marks a
 * demand refresh or an invalidation: it must leave `reserve` slots and come `minSpacingMs` after the
 * ledger's last request (docs/protocol.md "Budget guard").
 */
export function debitRefusal(
  state: LedgerState,
  now: number,
  limit: GuardedLimit,
  marginMs: number,
  opts: { demand: boolean; connection?: string },
): { reason: LedgerRefusal; retryAfterMs: number; live: number } | undefined {
  const window = windowMs(limit, marginMs);
  const live = liveEntries(state.entries, now, window);
  const refuse = (reason: LedgerRefusal, until: number) => ({ reason, retryAfterMs: Math.max(1, until - now), live: live.length });
  if (state.backoffUntil !== undefined && state.backoffUntil > now) return refuse('upstream_backoff', state.backoffUntil);
  const held = opts.connection !== undefined ? state.holds?.[opts.connection] : undefined;
  if (held !== undefined && held > now) return refuse('held', held);
  if (live.length >= limit.max) return refuse('exhausted', freeAt(live, limit.max - 1, window));
  if (!opts.demand) return undefined;
  // After this request, at least `reserve` slots must remain: at most max - 1 - reserve live entries now.
  const allowed = limit.max - 1 - limit.reserve;
  const reserveUntil = live.length > allowed ? freeAt(live, allowed, window) : undefined;
  const last = lastDebitAt(state);
  const spacingUntil = last !== undefined && now - last < limit.minSpacingMs ? last + limit.minSpacingMs : undefined;
  if (reserveUntil === undefined && spacingUntil === undefined) return undefined;
  // Say the first rule that refuses; wait for both.
  return refuse(reserveUntil !== undefined ? 'reserve' : 'spacing', Math.max(reserveUntil ?? 0, spacingUntil ?? 0));
}

/**
 * Decides whether one more attempt may be debited at `now`. On allow, `entries` is the new log: the live
 * entries plus this attempt (expired ones are pruned so the item stays small).
 */
export function decideDebit(
  state: LedgerState,
  now: number,
  limit: GuardedLimit,
  attemptId: string,
  marginMs: number,
  opts: { demand: boolean; connection?: string } = { demand: false },
): DebitDecision {
  const refused = debitRefusal(state, now, limit, marginMs, opts);
  if (refused) return { allow: false, ...refused };
  const entries = Object.fromEntries(liveEntries(state.entries, now, windowMs(limit, marginMs)));
  entries[attemptId] = now;
  const newest = Math.max(...Object.values(entries));
  return { allow: true, entries, expiresAt: newest + windowMs(limit, marginMs) };
}
