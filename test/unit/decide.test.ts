/**
 * The broker's protocol as a table: (item, opened token, request, now) -> next step. No DynamoDB, no
 * clock but T0. Each row is one rule of docs/protocol.md "Expiry and refresh" / docs/protocol.md "Budget guard".
 */
import { describe, expect, it } from 'vitest';
import { circuitRetryAt, circuitState, openCircuit, probeDelayMs, probeFailed } from '../../functions/core/circuit.js';
import { type Policy, type Situation, type Step, aheadBlockedUntil, decide, decideInvalidation } from '../../functions/core/decide.js';
import type { Backoff, Circuit, Token, TokenItem } from '../../functions/core/ports.js';

const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);
const MIN = 60_000;
const policy: Policy = { skewMs: 5_000, refreshBeforeMs: 120_000, configHash: 'cfg-1', refreshBudgetMs: 7_000 };

/** A token issued at `issued` (ms before T0) that lives `life` ms. */
const token = (life: number, issued = 0, fp = 'fp-1'): Token => ({
  accessToken: 'a',
  tokenType: 'Bearer',
  issuedAt: T0 - issued,
  expiresAt: T0 - issued + life,
  fp,
});
const item = (extra: Partial<TokenItem> = {}): TokenItem => ({
  ver: 1,
  fence: 1,
  sealed: new Uint8Array([1]),
  fp: 'fp-1',
  expiresAt: T0 + 3_600_000,
  ...extra,
});
const backoff = (until: number, extra: Partial<Backoff> = {}): Backoff => ({ until, code: 'unavailable', message: 'b', ...extra });
const circuit = (extra: Partial<Circuit> = {}): Circuit => ({
  upstreamError: 'invalid_grant',
  openedAt: T0 - MIN,
  probeAt: T0 + 4 * MIN,
  probes: 0,
  secretVersion: 'sv-1',
  configHashes: ['cfg-1'],
  checkedAt: T0 - 5_000,
  ...extra,
});
const held = { owner: 'other', leaseUntil: T0 + 10_000 };

function step(s: Partial<Situation>, p: Policy = policy): Step {
  return decide(
    { now: T0, item: item(), token: token(3_600_000), fresh: false, minTtlMs: 60_000, deadline: T0 + 10_000, holdsLease: false, ...s },
    p,
  );
}
const kind = (st: Step) =>
  st.do === 'refresh'
    ? `refresh:${st.reason}${st.circuit !== 'closed' ? `:${st.circuit}` : ''}`
    : st.do === 'refuse'
      ? `refuse:${st.error.code}${st.error.extra.refusal ? `:${st.error.extra.refusal}` : ''}`
      : st.do;

describe('decide: serve, refresh (with its reason), wait or refuse', () => {
  const oneHour = token(3_600_000);
  const fiveMinLeft = token(3_600_000, 3_300_000); // 300 s left
  const ninetyLeft = token(3_600_000, 3_510_000); // 90 s left
  const thirtyLeft = token(3_600_000, 3_570_000); // 30 s left

  it.each<[string, Partial<Situation>, string]>([
    ['a fresh cached token serves', { token: oneHour }, 'serve'],
    ['no token: expired', { token: undefined, item: undefined }, 'refresh:expired'],
    ['too close to its end for the default min_ttl: expired', { token: thirtyLeft }, 'refresh:expired'],
    ['serves the default but not min_ttl 200: min_ttl (a demand)', { token: ninetyLeft, minTtlMs: 200_000 }, 'refresh:min_ttl'],
    ['300 s left, outside the 125 s refresh-ahead window: serve', { token: fiveMinLeft }, 'serve'],
    ['inside refresh-ahead: ahead', { token: ninetyLeft }, 'refresh:ahead'],
    ['ahead, but another holder is refreshing: serve', { token: ninetyLeft, item: item(held) }, 'serve'],
    ['ahead, but a backoff: serve', { token: ninetyLeft, item: item({ backoff: backoff(T0 + 1) }) }, 'serve'],
    ['ahead, but the guard keeps the spacing: serve', { token: ninetyLeft, item: item({ demandBackoff: backoff(T0 + 1) }) }, 'serve'],
    ['ahead, but the circuit is open: serve', { token: ninetyLeft, item: item({ circuit: circuit() }) }, 'serve'],
    ['ahead, but too little time before the deadline: serve', { token: ninetyLeft, deadline: T0 + 1_000 }, 'serve'],
    ['min_ttl longer than the tokens the upstream issues: 400', { token: ninetyLeft, minTtlMs: 3_600_001 }, 'refuse:invalid_request'],
    ['min_ttl equal to the lifetime is no 400', { token: ninetyLeft, minTtlMs: 3_600_000 }, 'refresh:min_ttl'],
    ['expired while another holder refreshes: wait', { token: thirtyLeft, item: item(held) }, 'wait'],
    ['expired, holder still refreshing at the deadline: 503', { token: thirtyLeft, item: item(held), deadline: T0 }, 'refuse:unavailable'],
    [
      'expired during a backoff: the backoff answers',
      { token: thirtyLeft, item: item({ backoff: backoff(T0 + 1) }) },
      'refuse:unavailable',
    ],
    ['an expired backoff does not', { token: thirtyLeft, item: item({ backoff: backoff(T0) }) }, 'refresh:expired'],
    [
      'expired despite the demand backoff: expiry may spend the reserve',
      { token: thirtyLeft, item: item({ demandBackoff: backoff(T0 + 1) }) },
      'refresh:expired',
    ],
    [
      'min_ttl during the demand backoff: 429 spacing',
      {
        token: ninetyLeft,
        minTtlMs: 200_000,
        item: item({ demandBackoff: backoff(T0 + 1, { code: 'rate_limited', refusal: 'spacing' }) }),
      },
      'refuse:rate_limited:spacing',
    ],
    [
      'expired with an open circuit: 502 circuit_open, no I/O',
      { token: undefined, item: item({ circuit: circuit() }) },
      'refuse:upstream_error:circuit_open',
    ],
    [
      'open circuit, 15 s since the last secret check: check',
      { token: undefined, item: item({ circuit: circuit({ checkedAt: T0 - 15_000 }) }) },
      'refresh:expired:check',
    ],
    [
      'open circuit at its probe time: probe',
      { token: undefined, item: item({ circuit: circuit({ probeAt: T0 }) }) },
      'refresh:expired:probe',
    ],
    [
      'a circuit opened under another config is closed',
      { token: undefined, item: item({ circuit: circuit({ configHashes: ['cfg-0'] }) }) },
      'refresh:expired',
    ],
    [
      'a circuit opened under this config among others is open',
      { token: undefined, item: item({ circuit: circuit({ configHashes: ['cfg-0', 'cfg-1'] }) }) },
      'refuse:upstream_error:circuit_open',
    ],
    [
      'the circuit comes before a backoff',
      { token: undefined, item: item({ circuit: circuit(), backoff: backoff(T0 + 1) }) },
      'refuse:upstream_error:circuit_open',
    ],
    ['a cached token serves even with the circuit open', { token: oneHour, item: item({ circuit: circuit() }) }, 'serve'],
    ['no time left to refresh: 503', { token: undefined, deadline: T0 + 6_999 }, 'refuse:unavailable'],
    ['the lease holder itself is not waiting for anyone', { token: thirtyLeft, item: item(held), holdsLease: true }, 'refresh:expired'],
  ])('%s', (_name, s, expected) => {
    expect(kind(step(s))).toBe(expected);
  });

  it('a token fresh from the upstream serves a waiter without the skew allowance (defect 6)', () => {
    const twoSeconds = token(2_000);
    expect(kind(step({ token: twoSeconds, minTtlMs: 0, fresh: true }, { ...policy, refreshBeforeMs: 0 }))).toBe('serve');
    expect(kind(step({ token: twoSeconds, minTtlMs: 1_000, fresh: true }, { ...policy, refreshBeforeMs: 0 }))).toBe('serve');
    // 1.6 s left of a 2 s token is not enough for a cached serve at min_ttl 1.2 s (skew 0.5 s)...
    const aged = token(2_000, 400);
    expect(kind(step({ token: aged, minTtlMs: 1_200 }, { ...policy, refreshBeforeMs: 0 }))).toBe('refresh:expired');
    // ...and min_ttl 3 s is longer than the upstream issues: 400, not a refresh.
    expect(kind(step({ token: twoSeconds, minTtlMs: 3_000, fresh: true }))).toBe('refuse:invalid_request');
  });

  it('refresh-ahead carries the still-valid token as its fallback', () => {
    const st = step({ token: ninetyLeft });
    expect(st).toMatchObject({ do: 'refresh', reason: 'ahead', fallback: ninetyLeft });
  });

  it('a backoff answers with its own code, message and the time left', () => {
    const st = step({
      token: undefined,
      item: item({ backoff: backoff(T0 + 30_500, { code: 'rate_limited', message: 'ledger exhausted', refusal: 'ledger_exhausted' }) }),
    });
    expect(st.do === 'refuse' && st.error).toMatchObject({
      code: 'rate_limited',
      message: 'ledger exhausted',
      extra: { retryAfterSeconds: 31, refusal: 'ledger_exhausted' },
    });
  });

  it('the open circuit answers 502 with the upstream code', () => {
    const st = step({ token: undefined, item: item({ circuit: circuit({ upstreamError: 'invalid_client' }) }) });
    expect(st.do === 'refuse' && st.error).toMatchObject({
      code: 'upstream_error',
      status: 502,
      extra: { upstreamError: 'invalid_client', refusal: 'circuit_open' },
    });
  });
});

describe('decideInvalidation', () => {
  const unlimited = { rateLimited: false, configHash: 'cfg-1' };
  const limited = { rateLimited: true, configHash: 'cfg-1' };
  it.each<[string, TokenItem | undefined, typeof unlimited, string, number?]>([
    ['no item', undefined, unlimited, 'not_current'],
    ['another token', item({ fp: 'fp-2' }), unlimited, 'not_current'],
    ['already invalidated', item({ invalidated: true }), unlimited, 'not_current'],
    ['the cached token, unlimited: honour', item(), unlimited, 'honour'],
    ['unlimited, honoured 4 s ago: deferred 6 s', item({ invalidatedAt: T0 - 4_000 }), unlimited, 'defer', T0 + 6_000],
    ['unlimited, honoured 10 s ago: honour', item({ invalidatedAt: T0 - 10_000 }), unlimited, 'honour'],
    ['rate-limited: ask the ledger', item(), limited, 'ask-ledger'],
    [
      'rate-limited inside the spacing hint: deferred without the ledger',
      item({ demandBackoff: backoff(T0 + 60_000) }),
      limited,
      'defer',
      T0 + 60_000,
    ],
    ['during a backoff: deferred until it ends', item({ backoff: backoff(T0 + 30_000) }), limited, 'defer', T0 + 30_000],
    ['open circuit: deferred until its next check', item({ circuit: circuit() }), unlimited, 'defer', T0 + 10_000],
  ])('%s', (_name, it_, c, expected, until) => {
    const st = decideInvalidation(it_, 'fp-1', T0, c);
    expect(st.do).toBe(expected);
    if (until !== undefined) expect(st).toMatchObject({ until });
  });
});

describe('circuit', () => {
  it('probes after 5 minutes, doubling with each failed probe of the same secret, up to 1 hour', () => {
    expect([0, 1, 2, 3, 4, 5, 30].map((n) => probeDelayMs(n) / MIN)).toEqual([5, 10, 20, 40, 60, 60, 60]);
    const failure = { upstreamError: 'invalid_grant', secretVersion: 'sv-1', configHash: 'cfg-1' };
    let c = openCircuit(undefined, failure, T0);
    expect(c).toMatchObject({ probes: 0, probeAt: T0 + 5 * MIN, checkedAt: T0, openedAt: T0 });
    c = openCircuit(c, failure, T0 + 5 * MIN);
    expect(c).toMatchObject({ probes: 1, probeAt: T0 + 15 * MIN, openedAt: T0 });
    // A new secret or a new config starts over; the same secret keeps the configs it failed under (a deploy
    // where old and new containers run side by side does not reopen it for each other).
    expect(openCircuit(c, { ...failure, secretVersion: 'sv-2' }, T0 + 6 * MIN)).toMatchObject({
      probes: 0,
      probeAt: T0 + 11 * MIN,
      openedAt: T0 + 6 * MIN,
      configHashes: ['cfg-1'],
    });
    const both = openCircuit(c, { ...failure, configHash: 'cfg-2' }, T0 + 6 * MIN);
    expect(both).toMatchObject({ probes: 0, configHashes: ['cfg-1', 'cfg-2'] });
    expect(circuitState(both, T0 + 6 * MIN, 'cfg-1')).toBe('open');
    expect(circuitState(both, T0 + 6 * MIN, 'cfg-3')).toBe('closed');
    // It remembers the last four configs.
    let many = both;
    for (const h of ['cfg-3', 'cfg-4', 'cfg-5']) many = openCircuit(many, { ...failure, configHash: h }, T0);
    expect(many.configHashes).toEqual(['cfg-2', 'cfg-3', 'cfg-4', 'cfg-5']);
  });

  it('a probe that fails in any way reschedules the next one as a failed probe', () => {
    const c = openCircuit(undefined, { upstreamError: 'invalid_grant', secretVersion: 'sv-1', configHash: 'cfg-1' }, T0);
    expect(probeFailed(c, 'cfg-1', T0 + 5 * MIN)).toMatchObject({
      probes: 1,
      probeAt: T0 + 15 * MIN,
      upstreamError: 'invalid_grant',
      secretVersion: 'sv-1',
    });
  });

  it('states: open, check every 15 s, probe at its time, closed by a config change', () => {
    const c = circuit({ checkedAt: T0, probeAt: T0 + 5 * MIN });
    expect(circuitState(undefined, T0, 'cfg-1')).toBe('closed');
    expect(circuitState(c, T0 + 14_999, 'cfg-1')).toBe('open');
    expect(circuitState(c, T0 + 15_000, 'cfg-1')).toBe('check');
    expect(circuitState(c, T0 + 5 * MIN, 'cfg-1')).toBe('probe');
    expect(circuitState(c, T0, 'cfg-2')).toBe('closed');
    expect(circuitRetryAt(c)).toBe(T0 + 15_000);
  });

  it('blocks refresh-ahead in memory until the next check, like a backoff', () => {
    expect(aheadBlockedUntil(item({ circuit: circuit({ checkedAt: T0 }) }), T0, 'cfg-1')).toBe(T0 + 15_000);
    expect(aheadBlockedUntil(item({ backoff: backoff(T0 + 7), demandBackoff: backoff(T0 + 9) }), T0, 'cfg-1')).toBe(T0 + 9);
    expect(aheadBlockedUntil(item({ backoff: backoff(T0 - 1) }), T0, 'cfg-1')).toBe(0);
  });
});
