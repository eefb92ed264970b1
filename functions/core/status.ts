/**
 * A connection's state as operators see it: the cached token (fingerprint only), the last refresh, the
 * lease, backoffs, the credential circuit and the ledger. Pure: the operator CLI (`npm run ops -- status`)
 * and the budget gauges the broker publishes every minute both build it from the two stored items.
 * Never holds a token.
 */
import { circuitState } from './circuit.js';
import type { Connection } from './config.js';
import { liveEntries, windowMs } from './ledger.js';
import type { LedgerState, TokenItem } from './ports.js';

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

interface LedgerStatus {
  key: string;
  used: number;
  max: number;
  windowSeconds: number;
  remaining: number;
  reserve: number;
  minSpacingSeconds: number;
  /** When the oldest request in the window leaves it (the next time `used` drops); null if the window is empty. */
  nextSlotAt: string | null;
  /** Seconds until a request may be made at all: 0 while a slot is free (the `NextSlotSeconds` gauge). */
  nextSlotSeconds: number;
  lastRequestAt: string | null;
  /** An upstream 429's Retry-After, shared by every connection on the ledger. */
  upstreamBackoffUntil: string | null;
  /** This connection is held (a fetched token waits to be stored) until then. */
  heldUntil: string | null;
}

export interface ConnectionStatus {
  connection: string;
  /** The cached token's fingerprint (never the token); null without one. */
  tokenFp: string | null;
  expiresAt: string | null;
  expiresInSeconds: number | null;
  ageSeconds: number | null;
  invalidated: boolean;
  lastRefresh: { reason: string | null; at: string } | null;
  lease: { owner: string; until: string } | null;
  backoffUntil: string | null;
  backoff: { until: string; error: string; message: string; cause: string | null } | null;
  /** Demand refreshes and invalidations are deferred until then (the guard's spacing or reserve). */
  demandBackoffUntil: string | null;
  circuit: {
    state: 'open' | 'closed';
    upstreamError: string | null;
    openedAt: string | null;
    probeAt: string | null;
    probes: number;
    /** Opened under other configs only: a deploy closed it. */
    configChanged: boolean;
  };
  /** Null for a connection without rateLimit. */
  ledger: LedgerStatus | null;
}

export function connectionStatus(
  connection: Connection,
  item: TokenItem | undefined,
  ledger: LedgerState | undefined,
  now: number,
  marginMs: number,
): ConnectionStatus {
  const active = (until: number | undefined) => (until !== undefined && until > now ? until : undefined);
  const hasToken = item?.sealed !== undefined && item.expiresAt !== undefined;
  const circuit = item?.circuit;
  const state = circuitState(circuit, now, connection.configHash);
  const backoff = active(item?.backoff?.until) !== undefined ? item!.backoff! : undefined;
  return {
    connection: connection.name,
    tokenFp: hasToken ? (item.fp ?? null) : null,
    expiresAt: hasToken ? iso(item.expiresAt) : null,
    expiresInSeconds: hasToken ? Math.floor((item.expiresAt! - now) / 1000) : null,
    ageSeconds: hasToken && item.issuedAt !== undefined ? Math.floor((now - item.issuedAt) / 1000) : null,
    invalidated: item?.invalidated === true,
    lastRefresh: hasToken && item.issuedAt !== undefined ? { reason: item.reason ?? null, at: iso(item.issuedAt)! } : null,
    lease: item?.owner && active(item.leaseUntil) !== undefined ? { owner: item.owner, until: iso(item.leaseUntil)! } : null,
    backoffUntil: iso(backoff?.until),
    backoff: backoff ? { until: iso(backoff.until)!, error: backoff.code, message: backoff.message, cause: backoff.refusal ?? null } : null,
    demandBackoffUntil: iso(active(item?.demandBackoff?.until)),
    circuit: {
      state: state === 'closed' ? 'closed' : 'open',
      upstreamError: circuit?.upstreamError ?? null,
      openedAt: iso(circuit?.openedAt),
      probeAt: iso(circuit?.probeAt),
      probes: circuit?.probes ?? 0,
      configChanged: circuit !== undefined && state === 'closed',
    },
    ledger: connection.rateLimit ? ledgerStatus(connection, ledger ?? { entries: {}, ver: 0 }, now, marginMs) : null,
  };
}

function ledgerStatus(connection: Connection, ledger: LedgerState, now: number, marginMs: number): LedgerStatus {
  const limit = connection.rateLimit!;
  const window = windowMs(limit, marginMs);
  const live = liveEntries(ledger.entries, now, window);
  const used = live.length;
  const remaining = Math.max(0, limit.max - used);
  const oldest = live[0]?.[1];
  // With none left, a slot frees when enough of the oldest have left the window (as decideDebit computes it).
  const freeAt = remaining > 0 ? now : live[used - limit.max]![1] + window;
  const held = ledger.holds?.[connection.name];
  const upstream = ledger.backoffUntil !== undefined && ledger.backoffUntil > now ? ledger.backoffUntil : undefined;
  const blockedUntil = Math.max(freeAt, upstream ?? 0, held !== undefined && held > now ? held : 0);
  return {
    key: limit.key,
    used,
    max: limit.max,
    windowSeconds: limit.windowSeconds,
    remaining,
    reserve: limit.reserve,
    minSpacingSeconds: limit.minSpacingMs / 1000,
    nextSlotAt: iso(oldest === undefined ? undefined : oldest + window),
    nextSlotSeconds: Math.max(0, Math.ceil((blockedUntil - now) / 1000)),
    lastRequestAt: iso(live.at(-1)?.[1]),
    upstreamBackoffUntil: iso(upstream),
    heldUntil: iso(held !== undefined && held > now ? held : undefined),
  };
}
