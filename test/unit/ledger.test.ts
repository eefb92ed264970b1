import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRetryAfter, retryAfterSeconds } from '../../functions/contract/retry-after.js';
import { type GuardedLimit, debitRefusal, decideDebit, ledgerMarginMs, liveEntries, windowMs } from '../../functions/core/ledger.js';
import type { LedgerState } from '../../functions/core/ports.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const H = 3_600_000;
const limit = { max: 10, windowSeconds: 8 * 3600, reserve: 2, minSpacingMs: 2_880_000 };
const MARGIN = 2_000;
const W = windowMs(limit, MARGIN); // W' = W + margin

/** Applies allowed debits to a state as a store would; throws on a refusal. */
function debitAt(state: LedgerState, now: number, id: string): LedgerState {
  const d = decideDebit(state, now, limit, id, MARGIN);
  if (!d.allow) throw new Error(`debit ${id} refused at ${now}`);
  return { ...state, entries: d.entries, ver: state.ver + 1 };
}

describe('decideDebit', () => {
  it('allows up to max debits in a window and records each with its time', () => {
    let state: LedgerState = { entries: {}, ver: 0 };
    for (let i = 0; i < limit.max; i++) {
      const d = decideDebit(state, T0 + i * 1000, limit, `a${i}`, MARGIN);
      expect(d.allow).toBe(true);
      if (d.allow) {
        expect(d.entries[`a${i}`]).toBe(T0 + i * 1000);
        expect(Object.keys(d.entries)).toHaveLength(i + 1);
        expect(d.expiresAt).toBe(T0 + i * 1000 + W);
      }
      state = debitAt(state, T0 + i * 1000, `a${i}`);
    }
    expect(liveEntries(state.entries, T0 + 10_000, W)).toHaveLength(limit.max);
  });

  it("B1: the 11th is refused with retryAfter = oldest + W' - now", () => {
    let state: LedgerState = { entries: {}, ver: 0 };
    for (let i = 0; i < limit.max; i++) state = debitAt(state, T0 + i * 60_000, `a${i}`);
    const now = T0 + 2 * H;
    const d = decideDebit(state, now, limit, 'a10', MARGIN);
    expect(d).toEqual({ allow: false, reason: 'exhausted', retryAfterMs: T0 + W - now, live: 10 });
    if (!d.allow) expect(retryAfterSeconds(d.retryAfterMs)).toBe(Math.ceil((T0 + W - now) / 1000));
  });

  it("B2: the window slides: allowed exactly when the oldest entry is W' old", () => {
    let state: LedgerState = { entries: {}, ver: 0 };
    // 10 debits just before W ends.
    for (let i = 0; i < limit.max; i++) state = debitAt(state, T0 + i, `a${i}`);
    expect(decideDebit(state, T0 + W - 1, limit, 'b', MARGIN)).toMatchObject({ allow: false, retryAfterMs: 1 });
    const d = decideDebit(state, T0 + W, limit, 'b', MARGIN);
    expect(d.allow).toBe(true);
    if (d.allow) {
      expect(d.entries).not.toHaveProperty('a0'); // pruned: it left the window
      expect(Object.keys(d.entries)).toHaveLength(limit.max);
    }
    // The second slot frees one ms later, with the second-oldest entry.
    state = debitAt(state, T0 + W, 'b');
    expect(decideDebit(state, T0 + W, limit, 'c', MARGIN)).toMatchObject({ allow: false, retryAfterMs: 1 });
    expect(decideDebit(state, T0 + W + 1, limit, 'c', MARGIN).allow).toBe(true);
  });

  it('B2 invariant: for any sequence of allowed debits, every window of W holds at most max', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 30 * 60_000 }), { minLength: 1, maxLength: 200 }), (gaps) => {
        let state: LedgerState = { entries: {}, ver: 0 };
        let now = T0;
        const allowed: number[] = [];
        gaps.forEach((gap, i) => {
          now += gap;
          const d = decideDebit(state, now, limit, `a${i}`, MARGIN);
          if (d.allow) {
            state = { ...state, entries: d.entries, ver: state.ver + 1 };
            allowed.push(now);
          }
        });
        for (let i = 0; i + limit.max < allowed.length; i++) {
          expect(allowed[i + limit.max]! - allowed[i]!).toBeGreaterThanOrEqual(limit.windowSeconds * 1000);
        }
      }),
    );
  });

  it('counts entries stamped by a clock that runs ahead', () => {
    const state: LedgerState = { entries: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`f${i}`, T0 + 1_500])), ver: 1 };
    expect(decideDebit(state, T0, limit, 'x', MARGIN)).toMatchObject({ allow: false, reason: 'exhausted', retryAfterMs: 1_500 + W });
  });

  it('B5: two reservations in the same millisecond are both recorded', () => {
    let state: LedgerState = { entries: {}, ver: 0 };
    state = debitAt(state, T0, 'attempt-1');
    const d = decideDebit(state, T0, limit, 'attempt-2', MARGIN);
    expect(d.allow).toBe(true);
    if (d.allow) expect(d.entries).toEqual({ 'attempt-1': T0, 'attempt-2': T0 });
    // ...and both count toward the limit.
    const small = { max: 2, windowSeconds: 60, reserve: 0, minSpacingMs: 0 };
    const s2: LedgerState = { entries: { a: T0, b: T0 }, ver: 2 };
    expect(decideDebit(s2, T0, small, 'c', MARGIN).allow).toBe(false);
  });

  it('denies with reason upstream_backoff while backoffUntil lies ahead, even with slots free', () => {
    const state: LedgerState = { entries: {}, ver: 3, backoffUntil: T0 + 120_000 };
    expect(decideDebit(state, T0, limit, 'x', MARGIN)).toEqual({
      allow: false,
      reason: 'upstream_backoff',
      retryAfterMs: 120_000,
      live: 0,
    });
    expect(decideDebit(state, T0 + 119_999, limit, 'x', MARGIN)).toMatchObject({ allow: false, retryAfterMs: 1 });
    expect(decideDebit(state, T0 + 120_000, limit, 'x', MARGIN).allow).toBe(true);
  });

  it('prunes expired entries from the new log and keeps live ones', () => {
    const state: LedgerState = { entries: { old1: T0 - W, old2: T0 - W - 5 * H, live1: T0 - W + 1, live2: T0 - 1000 }, ver: 7 };
    const d = decideDebit(state, T0, limit, 'new', MARGIN);
    expect(d.allow).toBe(true);
    if (d.allow) {
      expect(d.entries).toEqual({ live1: T0 - W + 1, live2: T0 - 1000, new: T0 });
      expect(d.expiresAt).toBe(T0 + W);
    }
    expect(liveEntries(state.entries, T0, W).map(([id]) => id)).toEqual(['live1', 'live2']);
    expect(limit.max - liveEntries(state.entries, T0, W).length).toBe(8);
  });

  it('frees the slot of the max-th newest entry when the log is over max (a smaller max after a config change)', () => {
    const state: LedgerState = { entries: { a: T0, b: T0 + 10, c: T0 + 20, d: T0 + 30 }, ver: 4 };
    const d = decideDebit(state, T0 + 100, { max: 2, windowSeconds: 60, reserve: 0, minSpacingMs: 0 }, 'x', 0);
    // Live 4, max 2: a new debit fits once only one live entry remains, i.e. when c (the 2nd newest) leaves.
    expect(d).toMatchObject({ allow: false, retryAfterMs: T0 + 20 + 60_000 - (T0 + 100) });
  });
});

describe('budget guard: demand debits and holds (docs/protocol.md "Budget guard")', () => {
  // 10 per 8 h: reserve 2, spacing 48 min.
  const stateWith = (times: number[], extra: Partial<LedgerState> = {}): LedgerState => ({
    entries: Object.fromEntries(times.map((t, i) => [`e${i}`, t])),
    ver: times.length,
    ...extra,
  });
  const demand = { demand: true, connection: 'c' };

  it.each([
    // [entries (minutes before now), demand allowed?, refusal, retry after (ms)]
    ['empty ledger', [], undefined, 0],
    ['7 used, last 49 min ago: 2 would remain', [-300, -200, -100, -90, -80, -70, -49], undefined, 0],
    ['8 used: a demand would leave 1 < reserve 2', [-300, -200, -100, -90, -80, -70, -60, -49], 'reserve', W - 300 * 60_000],
    ['last request 10 min ago: spacing', [-10], 'spacing', 38 * 60_000],
    ['both: reserve named, waits for the later of the two', [-300, -200, -100, -90, -80, -70, -60, -1], 'reserve', W - 300 * 60_000],
  ] as const)('%s', (_name, minutesAgo, refusal, retryMs) => {
    const state = stateWith(minutesAgo.map((m) => T0 + m * 60_000));
    const d = debitRefusal(state, T0, limit, MARGIN, demand);
    if (refusal === undefined) expect(d).toBeUndefined();
    else expect(d).toMatchObject({ reason: refusal, retryAfterMs: retryMs });
  });

  it('expired and rotation refreshes (not demand) may spend the reserve, down to the last slot', () => {
    const state = stateWith([-300, -200, -100, -90, -80, -70, -60, -50, -1].map((m) => T0 + m * 60_000));
    expect(debitRefusal(state, T0, limit, MARGIN, demand)?.reason).toBe('reserve');
    expect(debitRefusal(state, T0, limit, MARGIN, { demand: false, connection: 'c' })).toBeUndefined();
    const full = stateWith([...Object.values(state.entries).map((t) => t - T0), 0].map((d) => T0 + d));
    expect(debitRefusal(full, T0, limit, MARGIN, { demand: false })?.reason).toBe('exhausted');
  });

  it('a hold stops every refresh of that connection, and only of that one, until it ends', () => {
    const state = stateWith([], { holds: { c: T0 + 300_000 } });
    expect(debitRefusal(state, T0, limit, MARGIN, { demand: false, connection: 'c' })).toMatchObject({
      reason: 'held',
      retryAfterMs: 300_000,
    });
    expect(debitRefusal(state, T0, limit, MARGIN, { demand: false, connection: 'other' })).toBeUndefined();
    expect(debitRefusal(state, T0 + 300_000, limit, MARGIN, { demand: false, connection: 'c' })).toBeUndefined();
  });

  it('with reserve 0 and spacing 0 a demand debit is an ordinary one', () => {
    const open = { ...limit, reserve: 0, minSpacingMs: 0 };
    const state = stateWith(Array.from({ length: 9 }, (_, i) => T0 - i));
    expect(debitRefusal(state, T0, open, MARGIN, demand)).toBeUndefined();
  });
});

describe('retryAfterSeconds', () => {
  it('rounds up to whole seconds, at least 1', () => {
    expect(retryAfterSeconds(0)).toBe(1);
    expect(retryAfterSeconds(1)).toBe(1);
    expect(retryAfterSeconds(1000)).toBe(1);
    expect(retryAfterSeconds(1001)).toBe(2);
    expect(retryAfterSeconds(8 * H)).toBe(28_800);
  });
});

describe('parseRetryAfter (B9)', () => {
  it('reads delta-seconds', () => {
    expect(parseRetryAfter('120', T0)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', T0)).toBe(0);
  });

  it('reads an HTTP-date relative to now, never negative', () => {
    const at = new Date(T0 + 90_000).toUTCString();
    expect(at).toMatch(/GMT$/);
    expect(parseRetryAfter(at, T0)).toBe(90_000);
    expect(parseRetryAfter(new Date(T0 - 90_000).toUTCString(), T0)).toBe(0);
  });

  it.each([undefined, null, '', 'soon', '-5', '1.5', '12abc', 'Mon, 32 Foo 2026 99:00:00 GMT', '2026-11-23T12:00:00Z', '9999999999'])(
    'is undefined for garbage %s',
    (value) => {
      expect(parseRetryAfter(value, T0)).toBeUndefined();
    },
  );
});

describe('B8-style property: the margin covers send delay and clock skew (docs/protocol.md "The margin")', () => {
  interface Arrival {
    /** True-time gap since the previous arrival. */
    gap: number;
    writer: number;
    /** If set, this writer read the state this many arrivals ago (a stale read: its write must conflict). */
    staleBy: number;
    /** How long after its debit the request reaches the upstream (stall before the send, plus connect). */
    delay: number;
  }

  /**
   * Simulates several writers sharing one ledger item with optimistic concurrency (write only at the
   * version read). Each writer's clock is off by its offset; a debit is decided at the true time of the
   * arrival and its request reaches the upstream `delay` later. Returns the true arrival times upstream.
   */
  function simulate(arrivals: Arrival[], offsets: number[], lim: GuardedLimit, margin: number): number[] {
    let state: LedgerState = { entries: {}, ver: 0 };
    const history: LedgerState[] = [state];
    let t = T0;
    const received: number[] = [];
    arrivals.forEach((a, i) => {
      t += a.gap;
      const read = history[Math.max(0, history.length - 1 - a.staleBy)]!;
      const now = t + offsets[a.writer]!;
      const d = decideDebit(read, now, lim, `w${a.writer}-${i}`, margin);
      if (!d.allow) return; // refused: never sends
      if (read.ver !== state.ver) return; // conditional write fails: conflict, does not send
      state = { ...state, entries: d.entries, ver: state.ver + 1 };
      history.push(state);
      received.push(t + a.delay);
    });
    return received.sort((x, y) => x - y);
  }

  function maxInAnyWindow(sent: number[], windowMsTrue: number): number {
    let best = 0;
    for (let i = 0, j = 0; j < sent.length; j++) {
      while (sent[j]! - sent[i]! >= windowMsTrue) i++;
      best = Math.max(best, j - i + 1);
    }
    return best;
  }

  const lim = { max: 3, windowSeconds: 60, reserve: 0, minSpacingMs: 0 };
  const parts = { sendCutoffMs: 2_000, connectTimeoutMs: 3_000, clockSkewMs: 6_000 };
  const arb = fc.record({
    // Offsets in [0, clockSkew]: any two writers differ by at most clockSkew.
    offsets: fc.array(fc.integer({ min: 0, max: parts.clockSkewMs }), { minLength: 2, maxLength: 5 }),
    arrivals: fc.array(
      fc.record({
        gap: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 30_000 })),
        writer: fc.nat(),
        staleBy: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 3 })),
        delay: fc.oneof(
          fc.constant(0),
          fc.constant(parts.sendCutoffMs + parts.connectTimeoutMs),
          fc.integer({ min: 0, max: parts.sendCutoffMs + parts.connectTimeoutMs }),
        ),
      }),
      { minLength: 1, maxLength: 120 },
    ),
  });
  const norm = ({ offsets, arrivals }: { offsets: number[]; arrivals: Arrival[] }) => ({
    offsets,
    arrivals: arrivals.map((a) => ({ ...a, writer: a.writer % offsets.length })),
  });

  it('holds with the margin derived from its parts', () => {
    expect(ledgerMarginMs(parts)).toBe(11_000);
    fc.assert(
      fc.property(arb, (input) => {
        const { offsets, arrivals } = norm(input);
        expect(maxInAnyWindow(simulate(arrivals, offsets, lim, ledgerMarginMs(parts)), lim.windowSeconds * 1000)).toBeLessThanOrEqual(
          lim.max,
        );
      }),
      { numRuns: 1000 },
    );
  });

  it.each([
    ['the send delay', { ...parts, sendCutoffMs: 0, connectTimeoutMs: 0 }],
    ['the clock skew', { ...parts, clockSkewMs: 0 }],
    ['the connect time', { ...parts, connectTimeoutMs: 0 }],
  ])('the property has teeth: a margin without %s lets max + 1 through (fast-check finds it)', (_what, short) => {
    expect(() =>
      fc.assert(
        fc.property(arb, (input) => {
          const { offsets, arrivals } = norm(input);
          return maxInAnyWindow(simulate(arrivals, offsets, lim, ledgerMarginMs(short)), lim.windowSeconds * 1000) <= lim.max;
        }),
        { numRuns: 5000, seed: 42 },
      ),
    ).toThrow(/Property failed/);
  });
});
