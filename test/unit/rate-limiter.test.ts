import { describe, expect, it } from 'vitest';
import { windowMs } from '../../functions/core/ledger.js';
import { RateLimiter } from '../../functions/core/rate-limiter.js';
import { MemoryLedgerStore } from './fakes.js';
import { brokerError, FakeClock } from '../support/clock.js';

const MARGIN = 2_000;
const limit = { max: 3, windowSeconds: 60, key: 'vertex' };


describe('RateLimiter', () => {
  it('debits one entry per attempt and reports the slots left', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    expect(await rl.debit(limit, 'a1')).toEqual({ remaining: 2, at: clock.now() });
    clock.advance(1);
    expect(await rl.debit(limit, 'a2')).toEqual({ remaining: 1, at: clock.now() });
    expect(await rl.debit(limit, 'a3')).toEqual({ remaining: 0, at: clock.now() });
    expect(store.items.get('vertex')!.entries).toEqual({ a1: clock.now() - 1, a2: clock.now(), a3: clock.now() });
    expect(store.items.get('vertex')!.ver).toBe(3);
  });

  it('refuses a debit over the limit with rate_limited and Retry-After, and never writes (B1)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    const first = clock.now();
    for (let i = 0; i < limit.max; i++) await rl.debit(limit, `a${i}`);
    clock.advance(10_000);
    const writesBefore = store.writes.length;
    const err = await brokerError(rl.debit(limit, 'a-over'));
    expect(err.code).toBe('rate_limited');
    expect(err.status).toBe(429);
    expect(err.extra.retryAfterSeconds).toBe(Math.ceil((first + windowMs(limit, MARGIN) - clock.now()) / 1000));
    expect(err.message).toContain('3 per 60 s');
    expect(store.writes.length).toBe(writesBefore);
    expect(store.items.get('vertex')!.entries).not.toHaveProperty('a-over');
    // Once the window has slid past the three entries (all debited at `first`), debits resume.
    clock.set(first + windowMs(limit, MARGIN) - 1);
    await expect(rl.debit(limit, 'a-early')).rejects.toMatchObject({ code: 'rate_limited', extra: { retryAfterSeconds: 1 } });
    clock.set(first + windowMs(limit, MARGIN));
    expect(await rl.debit(limit, 'a-later')).toEqual({ remaining: 2, at: clock.now() });
    expect(store.items.get('vertex')!.entries).toEqual({ 'a-later': clock.now() });
  });

  it('refuses during an upstream backoff with its own message, and never writes (B9)', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    await rl.holdUntil(limit, clock.now() + 120_000);
    const err = await brokerError(rl.debit(limit, 'a1'));
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
    expect(await rl.debit(limit, 'mine')).toEqual({ remaining: 0, at: clock.now() });
    expect(store.writes.map((w) => w.result)).toEqual(['conflict', 'conflict', 'written']);
    expect(store.reads).toBe(3);
    expect(Object.keys(store.items.get('vertex')!.entries).sort()).toEqual(['mine', 'other-1', 'other-2']);
    expect(clock.sleeps).toHaveLength(2); // jittered pause between tries (injected clock: no real wait)
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
    const err = await brokerError(rl.debit(limit, 'mine'));
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
    const err = await brokerError(rl.debit(limit, 'mine'));
    expect(err.code).toBe('unavailable');
    expect(err.extra.retryAfterSeconds).toBe(1);
    expect(n).toBe(4);
    expect(store.writes.every((w) => w.result === 'conflict')).toBe(true);
  });

  it('keeps ledgers of different keys apart', async () => {
    const store = new MemoryLedgerStore();
    const clock = new FakeClock();
    const rl = new RateLimiter(store, clock, MARGIN);
    for (let i = 0; i < limit.max; i++) await rl.debit(limit, `a${i}`);
    expect(await rl.debit({ ...limit, key: 'other' }, 'b0')).toEqual({ remaining: 2, at: clock.now() });
    await expect(rl.debit(limit, 'a-over')).rejects.toMatchObject({ code: 'rate_limited' });
  });
});
