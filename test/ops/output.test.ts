import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../functions/core/config.js';
import { ledgerMarginMs } from '../../functions/core/ledger.js';
import { DEFAULT_MARGIN_PARTS } from '../../functions/core/limits.js';
import type { TokenItem } from '../../functions/core/ports.js';
import { connectionStatus } from '../../functions/core/status.js';
import { duration, refreshText, resetText, statusJson, statusLines, statusText, when } from '../../functions/ops/output.js';
import { CANARY_TOKEN } from './support.js';

const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);
const MARGIN = ledgerMarginMs(DEFAULT_MARGIN_PARTS);
const base = {
  tokenUrl: 'https://idp.example/token',
  grantType: 'client_credentials',
  secret: 's',
  callers: ['arn:aws:iam::111122223333:role/a'],
};
const cfg = parseConfig({ connections: { vertex: { ...base, rateLimit: { max: 10, windowSeconds: 28800, key: 'v' } }, free: base } });
const vertex = cfg.connections.get('vertex')!;
const free = cfg.connections.get('free')!;
const iso = (ms: number) => new Date(ms).toISOString();

/** Everything at once, with the token's plaintext where the sealed bytes go. */
const busy: TokenItem = {
  ver: 3,
  fence: 4,
  sealed: new Uint8Array(Buffer.from(CANARY_TOKEN)),
  fp: 'fp-abc',
  expiresAt: T0 + 600_000,
  issuedAt: T0 - 600_000,
  reason: 'min_ttl',
  owner: 'container-7',
  leaseUntil: T0 + 5_000,
  invalidated: true,
  backoff: { until: T0 + 30_000, code: 'unavailable', message: 'upstream token endpoint unavailable', upstreamError: 'server_error' },
  demandBackoff: { until: T0 + 60_000, code: 'rate_limited', message: 'spacing', refusal: 'spacing' },
  circuit: {
    upstreamError: 'invalid_grant',
    openedAt: T0 - 120_000,
    probeAt: T0 + 300_000,
    probes: 1,
    secretVersion: 'sv',
    configHashes: [vertex.configHash],
    checkedAt: T0,
  },
};
const entries = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`a${i}`, T0 - (10 - i) * 60_000]));
const busyStatus = connectionStatus(
  vertex,
  busy,
  { entries, ver: 10, holds: { vertex: T0 + 1_000 }, backoffUntil: T0 + 90_000 },
  T0,
  MARGIN,
);

describe('durations', () => {
  it('shows the two largest units', () => {
    expect(duration(0)).toBe('0s');
    expect(duration(12_400)).toBe('12s');
    expect(duration(47 * 60_000 + 59_000)).toBe('47m 59s');
    expect(duration(2 * 3_600_000 + 5 * 60_000 + 9_000)).toBe('2h 5m');
    expect(duration(3_600_000)).toBe('1h');
    expect(duration(26 * 3_600_000)).toBe('1d 2h');
    expect(when(iso(T0 + 90_000), T0)).toBe(`${iso(T0 + 90_000)} (in 1m 30s)`);
    expect(when(iso(T0 - 90_000), T0)).toBe(`${iso(T0 - 90_000)} (1m 30s ago)`);
  });
});

describe('status output', () => {
  it('--json: one object per line with the contract fields, never the token', () => {
    const text = statusJson([busyStatus, connectionStatus(free, undefined, undefined, T0, MARGIN)]);
    const lines = text.split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    const [a, b] = lines.slice(0, 2).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const o of [a!, b!]) for (const k of ['connection', 'expiresAt', 'ledger', 'circuit', 'backoffUntil']) expect(o).toHaveProperty(k);
    expect(a!.ledger).toMatchObject({ used: 10, max: 10, windowSeconds: 28800, nextSlotAt: expect.any(String) });
    expect(a!.circuit).toMatchObject({ state: 'open' });
    expect(b).toMatchObject({ connection: 'free', expiresAt: null, ledger: null, backoffUntil: null, circuit: { state: 'closed' } });
    expect(text).not.toContain(CANARY_TOKEN);
    expect(text).not.toContain(Buffer.from(CANARY_TOKEN).toString('base64'));
  });

  it('human: every part on its own line, never the token', () => {
    const lines = statusLines(busyStatus, T0);
    expect(lines[0]).toBe('vertex');
    const row = (label: string) => lines.find((l) => l.startsWith(`  ${label.padEnd(10)}`))!.slice(12);
    expect(row('token')).toBe(`fp fp-abc, expires ${iso(T0 + 600_000)} (in 10m), age 10m; invalidated: the next request fetches a new one`);
    expect(row('refreshed')).toBe(`${iso(T0 - 600_000)} (10m ago), reason min_ttl`);
    expect(row('lease')).toBe(`held by container-7 until ${iso(T0 + 5_000)} (in 5s)`);
    expect(row('backoff')).toBe(`until ${iso(T0 + 30_000)} (in 30s): unavailable: upstream token endpoint unavailable`);
    expect(row('demand')).toBe(`refreshes on demand and invalidations held back until ${iso(T0 + 60_000)} (in 1m)`);
    expect(row('circuit')).toBe(
      `OPEN on invalid_grant since ${iso(T0 - 120_000)} (2m ago); probe ${iso(T0 + 300_000)} (in 5m), 1 failed probe: callers get 502; reset vertex closes it`,
    );
    expect(row('ledger')).toMatch(
      /^v \(10 per 8h, reserve 2, spacing 48m\): 10 used, 0 left; next slot frees .* \(in 7h 50m\); no request possible for 7h 50m; last request .* \(1m ago\); upstream 429: wait until .* \(in 1m 30s\); held \(a fetched token waits to be stored\) until .* \(in 1s\)$/,
    );
    expect(lines.join('\n')).not.toContain(CANARY_TOKEN);
  });

  it('human: a quiet connection, and one whose circuit a deploy closed', () => {
    const quiet = statusLines(
      connectionStatus(free, { ver: 0, fence: 1, circuit: { ...busy.circuit!, configHashes: ['old'] } }, undefined, T0, MARGIN),
      T0,
    );
    expect(quiet).toEqual([
      'free',
      '  token     none cached',
      '  refreshed -',
      '  lease     free',
      '  backoff   none',
      '  demand    none',
      '  circuit   closed (opened on invalid_grant under another config; the deploy closed it)',
      '  ledger    none (no rateLimit)',
    ]);
    const expired = statusLines(
      connectionStatus(
        free,
        { ver: 1, fence: 1, sealed: new Uint8Array([1]), fp: 'x', expiresAt: T0 - 1000, issuedAt: T0 - 3_600_000 },
        undefined,
        T0,
        MARGIN,
      ),
      T0,
    );
    expect(expired[1]).toBe(`  token     fp x, expired ${iso(T0 - 1000)} (1s ago), age 1h`);
    expect(statusText([busyStatus, busyStatus], T0).split('\n\n')).toHaveLength(2);
  });
});

describe('action output', () => {
  it('says what a reset removed, including ones that had run out', () => {
    expect(
      resetText({
        connection: 'vertex',
        result: 'reset',
        cleared: [
          { what: 'backoff', active: false, until: iso(T0 - 1), detail: 'unavailable' },
          { what: 'hold', active: false, until: iso(T0 - 1) },
        ],
        ledger: null,
      }),
    ).toBe(
      `reset vertex: removed an expired backoff (unavailable, until ${iso(T0 - 1)}); removed an expired ledger hold (until ${iso(T0 - 1)}).\n`,
    );
  });

  it('says a refresh that lost a race invalidated nothing', () => {
    expect(refreshText({ connection: 'vertex', result: 'not_current', tokenFp: 'x' }, T0)).toBe(
      'refresh vertex: the cached token changed meanwhile (another request refreshed it); nothing invalidated. Run it again to invalidate the new one.\n',
    );
  });
});
