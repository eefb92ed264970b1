import { describe, expect, it } from 'vitest';
import { windowMs } from '../../functions/core/ledger.js';
import { RateLimiter } from '../../functions/core/rate-limiter.js';
import { MemoryLedgerStore } from './fakes.js';
import { brokerError, FakeClock } from '../support/clock.js';

const MARGIN = 2_000;
const limit = { max: 3, windowSeconds: 60, key: 'vertex', reserve: 0, minSpacingMs: 0 };
const plain = { demand: false, connection: 'c' };

describe('RateLimiter', () => {
  it('debits one entry per attempt and reports the slots left', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    expect(await rl.debit(limit, 'a1', plain)).toEqual({ remaining: 2, at: clock.now() });
    clock.advance(1);
    expect(await rl.debit(limit, 'a2', plain)).toEqual({ remaining: 1, at: clock.now() });
    expect(await rl.debit(limit, 'a3', plain)).toEqual({ remaining: 0, at: clock.now() });
    expect(store.items.get('vertex')!.entries).toEqual({ a1: clock.now() - 1, a2: clock.now(), a3: clock.now() });
    expect(store.items.get('vertex')!.ver).toBe(3);
  });

  it('refuses a debit over the limit with rate_limited and Retry-After, and never writes (B1)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    const first = clock.now();
    for (let i = 0; i < limit.max; i++) await rl.debit(limit, `a${i}`, plain);
    clock.advance(10_000);
    const writesBefore = store.writes.length;
    const err = await brokerError(rl.debit(limit, 'a-over', plain));
    expect(err.code).toBe('rate_limited');
    expect(err.status).toBe(429);
    expect(err.extra.retryAfterSeconds).toBe(Math.ceil((first + windowMs(limit, MARGIN) - clock.now()) / 1000));
    expect(err.message).toContain('3 per 60 s');
    expect(store.writes.length).toBe(writesBefore);
    expect(store.items.get('vertex')!.entries).not.toHaveProperty('a-over');
    // Once the window has slid past the three entries (all debited at `first`), debits resume.
    clock.set(first + windowMs(limit, MARGIN) - 1);
    await expect(rl.debit(limit, 'a-early', plain)).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 1 } });
    clock.set(first + windowMs(limit, MARGIN));
    expect(await rl.debit(limit, 'a-later', plain)).toEqual({ remaining: 2, at: clock.now() });
    expect(store.items.get('vertex')!.entries).toEqual({ 'a-later': clock.now() });
  });

  it('refuses during an upstream backoff with its own message, and never writes (B9)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    await rl.holdUntil(limit, clock.now() + 120_000);
    const err = await brokerError(rl.debit(limit, 'a1', plain));
    expect(err.code).toBe('rate_limited');
    expect(err.extra.retryAfterSeconds).toBe(120);
    expect(err.message).toMatch(/upstream asked/);
    expect(store.writes).toHaveLength(0);
  });

  it('holdUntil never lowers a recorded backoff', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    await rl.holdUntil(limit, clock.now() + 120_000);
    await rl.holdUntil(limit, clock.now() + 5_000);
    expect((await store.read('vertex')).backoffUntil).toBe(clock.now() + 120_000);
  });

  it('retries after a lost race, re-reading the ledger', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    let raced = 0;
    store.beforeWrite = (key) => {
      if (raced++ < 2) store.commit(key, `other-${raced}`, clock.now()); // another container commits first, twice
    };
    expect(await rl.debit(limit, 'mine', plain)).toEqual({ remaining: 0, at: clock.now() });
    expect(store.writes.map((w) => w.result)).toEqual(['conflict', 'conflict', 'written']);
    expect(store.reads).toBe(3);
    expect(Object.keys(store.items.get('vertex')!.entries).sort()).toEqual(['mine', 'other-1', 'other-2']);
    expect(clock.sleeps).toHaveLength(2); // jittered pause between tries (injected clock: no real wait)
  });

  it('spreads the pauses of racing writers by their attempt ids, within 5 + 20 * (try + 1) ms', async () => {
    const pauses = async (attemptId: string) => {
      const store = new MemoryLedgerStore();
      const clock = new FakeClock();
      let raced = 0;
      store.beforeWrite = (key) => {
        if (raced++ < 3) store.commit(key, `other-${raced}`, clock.now());
      };
      await new RateLimiter(store, clock, MARGIN).debit({ ...limit, max: 10 }, attemptId, plain);
      return clock.sleeps;
    };
    const byId = await Promise.all(Array.from({ length: 8 }, (_, i) => pauses(`attempt-${i}`)));
    for (const sleeps of byId) {
      expect(sleeps).toHaveLength(3);
      sleeps.forEach((ms, n) => {
        expect(ms).toBeGreaterThanOrEqual(5);
        expect(ms).toBeLessThan(5 + 20 * (n + 1));
      });
    }
    expect(new Set(byId.map((s) => s.join())).size).toBeGreaterThan(4); // different writers, different pauses
    expect(await pauses('attempt-0')).toEqual(byId[0]); // no random source: the id decides
  });

  it('after a lost race that filled the ledger, refuses without writing (B3)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    store.commit('vertex', 'x1', clock.now());
    store.commit('vertex', 'x2', clock.now());
    let raced = false;
    store.beforeWrite = (key) => {
      if (!raced) {
        raced = true;
        store.commit(key, 'x3', clock.now()); // the last slot goes to someone else
      }
    };
    const err = await brokerError(rl.debit(limit, 'mine', plain));
    expect(err.code).toBe('rate_limited');
    expect(store.writes.map((w) => w.result)).toEqual(['conflict']);
    expect(Object.keys(store.items.get('vertex')!.entries)).toHaveLength(3);
    expect(store.items.get('vertex')!.entries).not.toHaveProperty('mine');
  });

  it('gives up with unavailable after maxTries conflicts', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN, 4);
    let n = 0;
    store.beforeWrite = (key) => {
      // Contention without filling the ledger: the competitor's entries expire immediately.
      store.items.set(key, { entries: {}, ver: (store.items.get(key)?.ver ?? 0) + 1 });
      n++;
    };
    const err = await brokerError(rl.debit(limit, 'mine', plain));
    expect(err.code).toBe('unavailable');
    expect(err.extra.retryAfterSeconds).toBe(1);
    expect(n).toBe(4);
    expect(store.writes.every((w) => w.result === 'conflict')).toBe(true);
  });

  it('keeps ledgers of different keys apart', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    for (let i = 0; i < limit.max; i++) await rl.debit(limit, `a${i}`, plain);
    expect(await rl.debit({ ...limit, key: 'other' }, 'b0', plain)).toEqual({ remaining: 2, at: clock.now() });
    await expect(rl.debit(limit, 'a-over', plain)).rejects.toMatchObject({ code: 'rate_limited' });
  });

  it('demand debits keep the reserve and the spacing, and the 429 says which (budget guard)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    const guarded = { max: 10, windowSeconds: 28_800, key: 'g', reserve: 2, minSpacingMs: 2_880_000 };
    const demand = { demand: true, connection: 'c' };
    await rl.debit(guarded, 'first', plain);
    const spacing = await brokerError(rl.debit(guarded, 'soon', demand));
    expect(spacing).toMatchObject({ code: 'rate_limited', extra: { refusal: 'spacing', retryAfterSeconds: 2880 } });
    expect(spacing.message).toMatch(/spac/);
    // Spent down to the reserve by expiries: demand is refused for the reserve, expiry is not.
    for (let i = 0; i < 7; i++) await rl.debit(guarded, `exp${i}`, plain);
    clock.advance(2_880_000);
    const reserve = await brokerError(rl.debit(guarded, 'demand', demand));
    expect(reserve).toMatchObject({ code: 'rate_limited', extra: { refusal: 'reserve' } });
    expect(reserve.message).toMatch(/reserve/);
    expect(await rl.debit(guarded, 'expiry', plain)).toMatchObject({ remaining: 1 });
    const exhausted = await brokerError(
      Promise.resolve().then(async () => {
        await rl.debit(guarded, 'last', plain);
        return rl.debit(guarded, 'over', plain);
      }),
    );
    expect(exhausted).toMatchObject({ code: 'rate_limited', extra: { refusal: 'ledger_exhausted' } });
    expect(exhausted.message).toMatch(/exhausted/);
  });

  it('refunds an unsent debit and holds a connection', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    await rl.debit(limit, 'sent', plain);
    await rl.debit(limit, 'unsent', plain);
    await rl.refund(limit, 'unsent');
    expect(Object.keys(store.items.get('vertex')!.entries)).toEqual(['sent']);
    await rl.holdConnection(limit, 'c', clock.now() + 60_000);
    const held = await brokerError(rl.debit(limit, 'x', plain));
    expect(held).toMatchObject({ code: 'unavailable', extra: { refusal: 'held', retryAfterSeconds: 60 } });
    expect(await rl.debit(limit, 'y', { demand: false, connection: 'other' })).toMatchObject({ remaining: 1 });
  });
});
