/**
 * What the CLI prints: status as readable lines or newline-delimited JSON (one `connectionStatus` object per
 * line, field names as core/status.ts has them), and one sentence per action. Statuses never hold a token
 * (only its fingerprint), so nothing here can print one.
 */
import type { ConnectionStatus } from '../core/status.js';
import type { Cleared, RefreshResult, ResetResult } from './commands.js';

/** `2h 5m`, `47m 59s`, `12s`: the two largest units. @internal */
export function duration(ms: number): string {
  let s = Math.max(0, Math.round(Math.abs(ms) / 1000));
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (s >= size || (unit === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.slice(0, 2).join(' ');
}

/** `ISO (in 5m)` or `ISO (3m ago)`. @internal */
export function when(at: string, now: number): string {
  const ms = Date.parse(at) - now;
  return `${at} (${ms >= 0 ? `in ${duration(ms)}` : `${duration(ms)} ago`})`;
}

/** One JSON object per line (newline-delimited JSON): `jq` reads it as is, `jq -s` makes an array. */
export function statusJson(statuses: readonly ConnectionStatus[]): string {
  return statuses.map((s) => `${JSON.stringify(s)}\n`).join('');
}

function tokenLine(s: ConnectionStatus, now: number): string {
  if (s.tokenFp === null || s.expiresAt === null) return 'none cached';
  const expired = Date.parse(s.expiresAt) <= now;
  return [
    `fp ${s.tokenFp}, ${expired ? 'expired' : 'expires'} ${when(s.expiresAt, now)}`,
    s.ageSeconds !== null ? `, age ${duration(s.ageSeconds * 1000)}` : '',
    s.invalidated ? '; invalidated: the next request fetches a new one' : '',
  ].join('');
}

function circuitLine(s: ConnectionStatus, now: number): string {
  const c = s.circuit;
  if (c.state === 'closed')
    return c.configChanged ? `closed (opened on ${c.upstreamError} under another config; the deploy closed it)` : 'closed';
  const probe = c.probeAt ? `; probe ${when(c.probeAt, now)}` : '';
  const probes = c.probes ? `, ${c.probes} failed probe${c.probes === 1 ? '' : 's'}` : '';
  return `OPEN on ${c.upstreamError} since ${c.openedAt ? when(c.openedAt, now) : '?'}${probe}${probes}: callers get 502; reset ${s.connection} closes it`;
}

function ledgerLine(s: ConnectionStatus, now: number): string {
  const l = s.ledger;
  if (!l) return 'none (no rateLimit)';
  const parts = [
    `${l.key} (${l.max} per ${duration(l.windowSeconds * 1000)}, reserve ${l.reserve}, spacing ${duration(l.minSpacingSeconds * 1000)}): ${l.used} used, ${l.remaining} left`,
  ];
  if (l.nextSlotAt) parts.push(`next slot frees ${when(l.nextSlotAt, now)}`);
  if (l.nextSlotSeconds > 0) parts.push(`no request possible for ${duration(l.nextSlotSeconds * 1000)}`);
  if (l.lastRequestAt) parts.push(`last request ${when(l.lastRequestAt, now)}`);
  if (l.upstreamBackoffUntil) parts.push(`upstream 429: wait until ${when(l.upstreamBackoffUntil, now)}`);
  if (l.heldUntil) parts.push(`held (a fetched token waits to be stored) until ${when(l.heldUntil, now)}`);
  return parts.join('; ');
}

/** A connection's status as aligned `label  value` lines under its name. @internal */
export function statusLines(s: ConnectionStatus, now: number): string[] {
  const rows: [string, string][] = [
    ['token', tokenLine(s, now)],
    ['refreshed', s.lastRefresh ? `${when(s.lastRefresh.at, now)}, reason ${s.lastRefresh.reason ?? 'unknown'}` : '-'],
    ['lease', s.lease ? `held by ${s.lease.owner} until ${when(s.lease.until, now)}` : 'free'],
    [
      'backoff',
      s.backoff
        ? `until ${when(s.backoff.until, now)}: ${s.backoff.error}${s.backoff.cause ? ` (${s.backoff.cause})` : ''}: ${s.backoff.message}`
        : 'none',
    ],
    ['demand', s.demandBackoffUntil ? `refreshes on demand and invalidations held back until ${when(s.demandBackoffUntil, now)}` : 'none'],
    ['circuit', circuitLine(s, now)],
    ['ledger', ledgerLine(s, now)],
  ];
  return [s.connection, ...rows.map(([k, v]) => `  ${k.padEnd(10)}${v}`)];
}

export function statusText(statuses: readonly ConnectionStatus[], now: number): string {
  return statuses.map((s) => `${statusLines(s, now).join('\n')}\n`).join('\n');
}

function clearedText(c: Cleared): string {
  switch (c.what) {
    case 'circuit':
      return c.active
        ? `closed the circuit (${c.detail}, open since ${c.since})`
        : `removed a circuit that no longer applied (${c.detail}, opened under another config)`;
    case 'backoff':
      return `${c.active ? 'cleared the backoff' : 'removed an expired backoff'} (${c.detail}, until ${c.until})`;
    case 'demand_backoff':
      return `${c.active ? 'cleared the demand backoff' : 'removed an expired demand backoff'} (${c.detail}, until ${c.until})`;
    case 'hold':
      return `${c.active ? 'released the ledger hold' : 'removed an expired ledger hold'} (until ${c.until})`;
  }
}

export function resetText(r: ResetResult): string {
  const what = r.cleared.length ? r.cleared.map(clearedText).join('; ') : 'nothing to reset (no circuit, backoff, demand backoff or hold)';
  const ledger = r.ledger ? ` Ledger ${r.ledger.key} untouched: ${r.ledger.used} of ${r.ledger.max} used.` : '';
  return `reset ${r.connection}: ${what}.${ledger}\n`;
}

export function refreshText(r: RefreshResult, now: number): string {
  const head = `refresh ${r.connection}:`;
  switch (r.result) {
    case 'nothing_cached':
      return `${head} nothing cached; the next request fetches a token anyway.\n`;
    case 'already_invalidated':
      return `${head} token fp ${r.tokenFp} is already invalidated; the next request fetches a new one.\n`;
    case 'invalidated':
      return (
        `${head} invalidated token fp ${r.tokenFp}${r.forced ? ' (--force: the budget guard was skipped)' : ''}; the next request fetches a new one.` +
        (r.circuitOpen ? ` But the credential circuit is open: callers get 502 until it closes (reset ${r.connection} closes it).` : '') +
        '\n'
      );
    case 'not_current':
      return `${head} the cached token changed meanwhile (another request refreshed it); nothing invalidated. Run it again to invalidate the new one.\n`;
    case 'deferred':
      return (
        `${head} deferred by the budget guard (${r.because}): it can be honoured ${when(r.retryAt, now)}. ` +
        `Token fp ${r.tokenFp} stays in service meanwhile; --force skips the guard.\n`
      );
  }
}
