/**
 * How a waiter spaces its reads (core/waiting.ts): asleep until the holder's refresh is due, then fast polls
 * that grow with the delay; never past the lease's end. Reads are counted by simulating the schedule.
 */
import { describe, expect, it } from 'vitest';
import { PUBLISH_ALLOWANCE_MS, expectedPublishAt, expectedRefreshMs, waitBeforeRead } from '../../functions/core/waiting.js';

const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);
const O = { pollInitialMs: 20, pollMaxMs: 250 };
const LEASE = { leaseAt: T0, leaseUntil: T0 + 20_000 };

/** The times at which a waiter that starts at `start` reads, until it reads at or after `publishedAt`. */
function reads(item: Parameters<typeof waitBeforeRead>[0], start: number, publishedAt: number): number[] {
  const at: number[] = [];
  let now = start;
  while (at.length < 100) {
    now += waitBeforeRead(item, now, O);
    at.push(now);
    if (now >= publishedAt) break;
  }
  return at;
}

describe('expectedRefreshMs', () => {
  it("is the first refresh's length; a faster one lowers it at once, a slower one raises it by half the difference", () => {
    expect(expectedRefreshMs(undefined, 512.4)).toBe(512);
    expect(expectedRefreshMs(500, 700)).toBe(600);
    expect(expectedRefreshMs(600, 500)).toBe(500);
    expect(expectedRefreshMs(undefined, -3)).toBe(0); // a clock that stepped back
  });
});

describe('waitBeforeRead', () => {
  it('sleeps until the refresh is due: the lease time plus the last refresh duration plus the publish allowance', () => {
    const item = { ...LEASE, refreshMs: 500 };
    expect(expectedPublishAt(item)).toBe(T0 + 500 + PUBLISH_ALLOWANCE_MS);
    expect(waitBeforeRead(item, T0 + 3, O)).toBe(500 + PUBLISH_ALLOWANCE_MS - 3);
    // A refresh on time: one read after the lease is lost.
    expect(reads(item, T0 + 3, T0 + 505)).toEqual([T0 + 510]);
  });

  it('polls fast once the refresh is overdue, each interval as long as the delay so far (at least pollInitialMs)', () => {
    const item = { ...LEASE, refreshMs: 500 };
    const due = T0 + 510;
    expect(reads(item, T0 + 3, due + 75).map((t) => t - due)).toEqual([0, 20, 40, 80]);
    // 80 ms late costs four reads after losing the lease; served within 80 ms of the publish.
    expect(
      reads(item, T0 + 3, due + 1_000)
        .map((t) => t - due)
        .slice(0, 7),
    ).toEqual([0, 20, 40, 80, 160, 320, 570]);
  });

  it("without a recorded refresh (a connection's first), polls from the lease time, each interval the time since the lease", () => {
    const at = reads(LEASE, T0 + 3, T0 + 500).map((t) => t - T0);
    expect(at).toEqual([23, 46, 92, 184, 368, 618]);
  });

  it('never sleeps past the lease: a dead holder is taken over when it ends', () => {
    const item = { leaseAt: T0, leaseUntil: T0 + 300, refreshMs: 500 };
    expect(waitBeforeRead(item, T0 + 100, O)).toBe(200);
    expect(waitBeforeRead({ ...item, refreshMs: 50_000 }, T0 + 290, { pollInitialMs: 20, pollMaxMs: 250 })).toBe(10);
  });

  it('a holder whose clock runs far ahead cannot make a waiter sleep longer than the refresh itself', () => {
    const item = { leaseAt: T0 + 60_000, leaseUntil: T0 + 80_000, refreshMs: 500 };
    expect(waitBeforeRead(item, T0, O)).toBe(500 + PUBLISH_ALLOWANCE_MS);
  });

  it('caps the interval at pollMaxMs, and never returns less than 1 ms', () => {
    expect(waitBeforeRead({ ...LEASE, refreshMs: 0 }, T0 + 10_000, O)).toBe(250);
    expect(waitBeforeRead({ leaseAt: T0, leaseUntil: T0 + 1, refreshMs: 500 }, T0, O)).toBe(1);
  });
});
