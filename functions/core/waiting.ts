/**
 * How a request waits for another container's refresh (pure). docs/design.md "Performance goals": a waiter is
 * served within 50 ms (p50; 100 ms p99) of the winner's publish, with at most 5 store reads per waiting
 * container. The item says when its lease was taken (`leaseAt`) and how long refreshes take, lease to
 * publish (`refreshMs`, an estimate that leans early): a waiter sleeps until the refresh is due, then polls fast, a little slower the later
 * the refresh is. Without a recorded refresh (a connection's first), it polls from the lease time on, each
 * interval as long as the time since the lease. Never past the lease's end: a dead holder is taken over then.
 */
import type { TokenItem } from './ports.js';

export interface WaitOptions {
  /** Shortest interval between two reads of a waiter. */
  pollInitialMs: number;
  /** Longest interval between two reads of a waiter. */
  pollMaxMs: number;
}

/** @internal After the expected publish time: for the publish write to land before our read does. */
export const PUBLISH_ALLOWANCE_MS = 10;

/**
 * What a publish records as the expected length of the next refresh, leaning early: a faster refresh lowers
 * it at once, a slower one (a slow upstream answer, a busy container) raises it by half the difference.
 * Waking early costs a waiter one more read; waking late costs every waiting request the difference.
 */
export function expectedRefreshMs(recorded: number | undefined, tookMs: number): number {
  const took = Math.max(0, Math.round(tookMs));
  return recorded === undefined || took <= recorded ? took : Math.round((recorded + took) / 2);
}

/** @internal When the holder of the item's lease is expected to publish (epoch ms, holder's clock), if the item says. */
export function expectedPublishAt(item: Pick<TokenItem, 'leaseAt' | 'refreshMs'> | undefined): number | undefined {
  if (item?.leaseAt === undefined || item.refreshMs === undefined) return undefined;
  return item.leaseAt + item.refreshMs + PUBLISH_ALLOWANCE_MS;
}

/** How long a waiter sleeps before it reads the item again. */
export function waitBeforeRead(
  item: Pick<TokenItem, 'leaseAt' | 'leaseUntil' | 'refreshMs'> | undefined,
  now: number,
  o: WaitOptions,
): number {
  const due = expectedPublishAt(item) ?? item?.leaseAt ?? now;
  let wait: number;
  if (now < due) {
    // Not due yet: sleep until it is (at most the refresh's own length, whatever the holder's clock says).
    wait = Math.min(due - now, (item?.refreshMs ?? 0) + PUBLISH_ALLOWANCE_MS);
  } else {
    // Overdue: the interval grows with the delay, so a slow refresh costs few reads and a late one little time.
    wait = Math.min(o.pollMaxMs, Math.max(o.pollInitialMs, now - due));
  }
  if (item?.leaseUntil !== undefined && item.leaseUntil > now) wait = Math.min(wait, item.leaseUntil - now);
  return Math.max(1, wait);
}
