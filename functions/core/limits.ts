/**
 * The numbers the contract fixes (docs/protocol.md "Limits"), named once.
 * Everything time-like is in milliseconds.
 */

/** The upstream client's connect timeout: the longest a sent token request takes to reach the upstream. */
const UPSTREAM_CONNECT_TIMEOUT_MS = 3_000;

/**
 * A debited token request is sent within this long of its debit, or not at all (the slot is refunded).
 * A ledger write slower than this means the request is not sent.
 */
const SEND_CUTOFF_MS = 2_000;

/**
 * The largest clock difference between any two containers that the ledger tolerates: each container's clock
 * within 3 s of true time. Lambda keeps clocks synchronised far tighter; the margin is what is proven.
 */
const CLOCK_SKEW_MS = 6_000;

/** What the ledger's window margin covers (see core/ledger.ts `ledgerMarginMs`). */
export interface MarginParts {
  sendCutoffMs: number;
  connectTimeoutMs: number;
  clockSkewMs: number;
}

export const DEFAULT_MARGIN_PARTS: MarginParts = {
  sendCutoffMs: SEND_CUTOFF_MS,
  connectTimeoutMs: UPSTREAM_CONNECT_TIMEOUT_MS,
  clockSkewMs: CLOCK_SKEW_MS,
};

/**
 * A token the upstream issued but the store would not take (DynamoDB or KMS fault), or a token that cannot
 * satisfy the request that fetched it: no further upstream request for the connection for this long.
 */
export const HOLD_RATE_LIMITED_MS = 5 * 60_000;
export const HOLD_UNLIMITED_MS = 15_000;

/** Connections without rateLimit honour at most one invalidation, and make at most one demand refresh, per this long. */
export const UNLIMITED_GAP_MS = 10_000;

/** While a credential circuit is open, the secret is re-read (fleet-wide) at most this often. */
export const SECRET_CHECK_MS = 15_000;
/** The first probe of an open circuit, doubling with each failed probe, up to the maximum. */
export const PROBE_FIRST_MS = 5 * 60_000;
export const PROBE_MAX_MS = 60 * 60_000;

/** How long a misconfigured secret (placeholder, missing fields) is answered from the item before a re-read. */
export const MISCONFIGURED_RECHECK_MS = 15_000;

/** A lease holder that dies is taken over within this (30 s allowed; docs/protocol.md "Lease"). */
export const LEASE_MS = 20_000;
