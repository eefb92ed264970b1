/**
 * The operator commands over a connection's two stored items, through the same store adapter, status
 * function and invalidation runner as the broker:
 * - status: core/status.ts `connectionStatus` of `tok#<connection>` and `rl#<ledger key>`;
 * - reset: store.reset (backoff, demand backoff, circuit) and ledger.releaseHold; never the ledger's log;
 * - refresh: core/invalidation.ts `invalidateToken` of the cached token, under the budget guard unless forced.
 * Results are plain data; functions/ops/output.ts prints them.
 */
import { circuitState } from '../core/circuit.js';
import type { Connection } from '../core/config.js';
import { invalidateToken } from '../core/invalidation.js';
import type { Clock, LedgerState, LedgerStore, TokenStore } from '../core/ports.js';
import { RateLimiter } from '../core/rate-limiter.js';
import { type ConnectionStatus, connectionStatus } from '../core/status.js';

export interface OpsDeps {
  /** The broker's store (functions/adapters/dynamodb-store.ts): token items and ledger items. */
  store: TokenStore & LedgerStore;
  now: () => number;
  /** The ledger's window margin (core/ledger.ts ledgerMarginMs of DEFAULT_MARGIN_PARTS, as the broker). */
  marginMs: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The status of each connection, reading each shared ledger once. */
export async function status(deps: OpsDeps, connections: readonly Connection[]): Promise<ConnectionStatus[]> {
  const ledgers = new Map<string, Promise<LedgerState>>();
  const ledgerOf = (key: string) => {
    let l = ledgers.get(key);
    if (!l) ledgers.set(key, (l = deps.store.read(key)));
    return l;
  };
  // A few at a time: a stage may have a hundred connections.
  const out: ConnectionStatus[] = [];
  for (let i = 0; i < connections.length; i += 8) {
    const batch = connections.slice(i, i + 8);
    const items = await Promise.all(
      batch.map(async (c) => [await deps.store.get(c.name), c.rateLimit ? await ledgerOf(c.rateLimit.key) : undefined] as const),
    );
    const now = deps.now();
    batch.forEach((c, j) => out.push(connectionStatus(c, items[j]![0], items[j]![1], now, deps.marginMs)));
  }
  return out;
}

/** One thing a reset removed; `active` is false for one that had already run out. */
export interface Cleared {
  what: 'circuit' | 'backoff' | 'demand_backoff' | 'hold';
  active: boolean;
  /** When a circuit opened. */
  since?: string;
  /** Until when a backoff or hold ran. */
  until?: string;
  /** The circuit's or backoff's upstream error or cause. */
  detail?: string;
}

export interface ResetResult {
  connection: string;
  result: 'reset' | 'nothing_to_reset';
  cleared: Cleared[];
  /** The ledger as the reset left it (untouched): used of max. */
  ledger: { key: string; used: number; max: number } | null;
}

export async function reset(deps: OpsDeps, connection: Connection): Promise<ResetResult> {
  const before = connection.rateLimit ? await deps.store.read(connection.rateLimit.key) : undefined;
  const item = await deps.store.reset(connection.name);
  const now = deps.now();
  const cleared: Cleared[] = [];
  if (item?.circuit) {
    const state = circuitState(item.circuit, now, connection.configHash);
    cleared.push({ what: 'circuit', active: state !== 'closed', since: iso(item.circuit.openedAt), detail: item.circuit.upstreamError });
  }
  if (item?.backoff) {
    const b = item.backoff;
    cleared.push({ what: 'backoff', active: b.until > now, until: iso(b.until), detail: b.upstreamError ?? b.refusal ?? b.code });
  }
  if (item?.demandBackoff) {
    const b = item.demandBackoff;
    cleared.push({ what: 'demand_backoff', active: b.until > now, until: iso(b.until), detail: b.refusal ?? b.code });
  }
  const hold = before?.holds?.[connection.name];
  if (connection.rateLimit && hold !== undefined) {
    await deps.store.releaseHold(connection.rateLimit.key, connection.name);
    cleared.push({ what: 'hold', active: hold > now, until: iso(hold) });
  }
  const ledger = connection.rateLimit && before ? connectionStatus(connection, undefined, before, now, deps.marginMs).ledger : null;
  return {
    connection: connection.name,
    result: cleared.length ? 'reset' : 'nothing_to_reset',
    cleared,
    ledger: ledger ? { key: ledger.key, used: ledger.used, max: ledger.max } : null,
  };
}

export type RefreshResult =
  | { connection: string; result: 'nothing_cached' }
  | { connection: string; result: 'already_invalidated'; tokenFp: string }
  | { connection: string; result: 'invalidated'; tokenFp: string; forced: boolean; circuitOpen: boolean }
  /** The cached token changed between reading it and invalidating it (another request refreshed it). */
  | { connection: string; result: 'not_current'; tokenFp: string }
  | { connection: string; result: 'deferred'; tokenFp: string; retryAfterSeconds: number; retryAt: string; because: string };

export async function refresh(deps: OpsDeps, connection: Connection, opts: { force: boolean }): Promise<RefreshResult> {
  const name = connection.name;
  const item = await deps.store.get(name);
  if (!item?.sealed || item.fp === undefined) return { connection: name, result: 'nothing_cached' };
  const fp = item.fp;
  if (item.invalidated) return { connection: name, result: 'already_invalidated', tokenFp: fp };
  const clock: Clock = { now: deps.now, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };
  const limiter = new RateLimiter(deps.store, clock, deps.marginMs);
  const now = deps.now();
  const r = await invalidateToken({ store: deps.store, limiter, now }, connection, fp, { force: opts.force });
  if (r.invalidated) {
    return {
      connection: name,
      result: 'invalidated',
      tokenFp: fp,
      forced: opts.force,
      circuitOpen: circuitState(item.circuit, now, connection.configHash) !== 'closed',
    };
  }
  if (r.reason === 'not_current') return { connection: name, result: 'not_current', tokenFp: fp };
  const circuitOpen = circuitState(item.circuit, now, connection.configHash) !== 'closed';
  return {
    connection: name,
    result: 'deferred',
    tokenFp: fp,
    retryAfterSeconds: r.retryAfterSeconds,
    retryAt: iso(now + r.retryAfterSeconds * 1000),
    because: circuitOpen ? `${r.because}; reset ${name} closes it` : r.because,
  };
}
