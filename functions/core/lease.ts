/** Lease decisions for fleet-wide single flight (pure; the store applies them with conditional writes). */
import type { TokenItem } from './ports.js';

export type LeaseState = 'free' | 'held' | 'expired';

/** Whether a refresh lease on the item is free, held by a live holder, or left behind by a dead one. */
export function leaseState(item: Pick<TokenItem, 'owner' | 'leaseUntil'> | undefined, now: number): LeaseState {
  if (!item?.owner) return 'free';
  if (item.leaseUntil === undefined || item.leaseUntil <= now) return 'expired';
  return 'held';
}

/** True if there is time left before `deadline` to take the lease and still finish an upstream request. */
export function canRefresh(deadline: number, now: number, budgetMs: number): boolean {
  return deadline - now >= budgetMs;
}
