import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../functions/core/config.js';
import { ledgerMarginMs } from '../../functions/core/ledger.js';
import { DEFAULT_MARGIN_PARTS } from '../../functions/core/limits.js';
import type { TokenItem } from '../../functions/core/ports.js';
import { connectionStatus } from '../../functions/core/status.js';

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

describe('connectionStatus', () => {
  it('an empty store: no token, closed circuit, an empty ledger for a rate-limited connection', () => {
    const s = connectionStatus(vertex, undefined, undefined, T0, MARGIN);
    expect(s).toMatchObject({ connection: 'vertex', tokenFp: null, expiresAt: null, backoffUntil: null, circuit: { state: 'closed' } });
    expect(s.ledger).toEqual({
      key: 'v',
      used: 0,
      max: 10,
      windowSeconds: 28800,
      remaining: 10,
      reserve: 2,
      minSpacingSeconds: 2880,
      nextSlotAt: null,
      nextSlotSeconds: 0,
      lastRequestAt: null,
      upstreamBackoffUntil: null,
      heldUntil: null,
    });
    expect(connectionStatus(free, undefined, undefined, T0, MARGIN).ledger).toBeNull();
  });

  it('reports the token by fingerprint, its age and last refresh, the lease, backoffs, circuit and ledger', () => {
    const item: TokenItem = {
      ver: 3,
      fence: 4,
      sealed: new Uint8Array([1]),
      fp: 'fp-abc',
      expiresAt: T0 + 600_000,
      issuedAt: T0 - 600_000,
      reason: 'expired',
      owner: 'holder',
      leaseUntil: T0 + 5_000,
      backoff: { until: T0 + 30_000, code: 'rate_limited', message: 'ledger exhausted', refusal: 'ledger_exhausted' },
      demandBackoff: { until: T0 + 60_000, code: 'rate_limited', message: 'spacing', refusal: 'spacing' },
      circuit: {
        upstreamError: 'invalid_grant',
        openedAt: T0 - 1,
        probeAt: T0 + 300_000,
        probes: 1,
        secretVersion: 'sv',
        configHashes: [vertex.configHash],
        checkedAt: T0,
      },
    };
    const entries = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`a${i}`, T0 - (10 - i) * 60_000]));
    const s = connectionStatus(vertex, item, { entries, ver: 10, holds: { vertex: T0 + 1_000 } }, T0, MARGIN);
    expect(s).toMatchObject({
      tokenFp: 'fp-abc',
      expiresAt: iso(T0 + 600_000),
      expiresInSeconds: 600,
      ageSeconds: 600,
      invalidated: false,
      lastRefresh: { reason: 'expired', at: iso(T0 - 600_000) },
      lease: { owner: 'holder', until: iso(T0 + 5_000) },
      backoffUntil: iso(T0 + 30_000),
      backoff: { error: 'rate_limited', cause: 'ledger_exhausted' },
      demandBackoffUntil: iso(T0 + 60_000),
      circuit: { state: 'open', upstreamError: 'invalid_grant', probeAt: iso(T0 + 300_000), probes: 1, configChanged: false },
    });
    const oldestLeaves = T0 - 600_000 + 28_800_000 + MARGIN;
    expect(s.ledger).toMatchObject({
      used: 10,
      remaining: 0,
      nextSlotAt: iso(oldestLeaves),
      nextSlotSeconds: Math.ceil((oldestLeaves - T0) / 1000),
      lastRequestAt: iso(T0 - 60_000),
      heldUntil: iso(T0 + 1_000),
    });
    expect(JSON.stringify(s)).not.toMatch(/sealed|accessToken/);
  });

  it('expired lease, backoff and hold are not reported; a circuit from another config is closed, flagged as changed', () => {
    const item: TokenItem = {
      ver: 1,
      fence: 1,
      owner: 'gone',
      leaseUntil: T0 - 1,
      backoff: { until: T0, code: 'unavailable', message: 'x' },
      circuit: {
        upstreamError: 'invalid_client',
        openedAt: T0 - 1,
        probeAt: T0 + 1,
        probes: 0,
        secretVersion: 'sv',
        configHashes: ['old'],
        checkedAt: T0,
      },
    };
    const s = connectionStatus(vertex, item, { entries: {}, ver: 1, holds: { vertex: T0 - 1 }, backoffUntil: T0 + 9_000 }, T0, MARGIN);
    expect(s).toMatchObject({ lease: null, backoffUntil: null, circuit: { state: 'closed', configChanged: true } });
    expect(s.ledger).toMatchObject({ heldUntil: null, upstreamBackoffUntil: iso(T0 + 9_000), nextSlotSeconds: 9 });
  });
});
