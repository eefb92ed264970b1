/**
 * The core's view of the outside world: small interfaces that adapters implement
 * (functions/adapters) and tests fake. All times are epoch milliseconds from an injected Clock.
 */
import type { Connection } from './config.js';
import type { ErrorCode } from '../contract/errors.js';
import type { RefreshReason, Refusal } from './errors.js';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** Fresh unique ids: lease owners, ledger attempt ids. */
export interface Ids {
  next(): string;
}

/** Timeouts on the real time of the process (the core never starts a timer of its own). */
export interface Timers {
  /** A signal that aborts (with a `TimeoutError`) after `ms`; it never keeps the process alive. */
  timeout(ms: number): AbortSignal;
}

/**
 * A port's dependency failed in a way that may clear by itself (throttled, a 5xx, unreachable, timed out).
 * Adapters classify their SDK's errors into these types and keep the original as `cause`; the core answers
 * 503 with Retry-After for them and never reads an error's message. Anything else an adapter throws is a
 * configuration error or a bug.
 */
export class DependencyUnavailable extends Error {
  override name = 'DependencyUnavailable';
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
  }
}

/** The token store (DynamoDB) did not answer: a 5xx, a network error, a timeout. */
export class StoreUnavailable extends DependencyUnavailable {
  override name = 'StoreUnavailable';
}

/** The token store throttled the request after the SDK's retries (a hot partition, or the table's limits). */
export class StoreThrottled extends StoreUnavailable {
  override name = 'StoreThrottled';
}

/** The sealer's key service (KMS) did not answer or throttled: the sealed token may be fine. */
export class SealerUnavailable extends DependencyUnavailable {
  override name = 'SealerUnavailable';
}

/** A token as the broker serves it (plaintext: only ever in memory and in the 200 body). */
export interface Token {
  accessToken: string;
  tokenType: string;
  scope?: string;
  /** Epoch ms at which the upstream said the token expires. */
  expiresAt: number;
  /** Epoch ms at which the token request was sent. */
  issuedAt: number;
  /** Non-secret fingerprint of accessToken (logs, invalidation). */
  fp: string;
}

/** The failure a lease holder leaves behind so the fleet does not retry before `until`. */
export interface Backoff {
  until: number;
  code: ErrorCode;
  message: string;
  upstreamError?: string;
  refusal?: Refusal;
  /** Consecutive transient upstream failures this backoff follows (rate-limited backoffs double with each). */
  failures?: number;
}

/**
 * A connection's credential circuit (docs/protocol.md "Credential circuit"): opened by a credential or configuration error
 * that survived a secret re-read. No upstream request while it is open, until the secret's version or the
 * connection's config changes, or the probe time comes.
 */
export interface Circuit {
  /** The upstream's OAuth error code. */
  upstreamError: string;
  openedAt: number;
  /** When one probe request may go upstream with an unchanged secret. */
  probeAt: number;
  /** Probes that failed so far (the probe interval doubles with each). */
  probes: number;
  /** Fingerprint of the secret version that failed. */
  secretVersion: string;
  /**
   * The `Connection.configHash`es it failed under (the last few): a config not among them closes it, so a
   * deploy that changes the config is tried at once, while old and new containers running side by side
   * during the deploy do not reopen it for each other.
   */
  configHashes: string[];
  /** Last time a holder re-read the secret to see whether it changed. */
  checkedAt: number;
}

/** The cache/lease item of one connection, as stored (token sealed). */
export interface TokenItem {
  /** Publishes so far. */
  ver: number;
  /** Lease acquisitions so far: the fencing token. */
  fence: number;
  owner?: string;
  leaseUntil?: number;
  /** When the current lease was taken (the holder's clock): waiters expect its publish `refreshMs` later. */
  leaseAt?: number;
  /** How long refreshes take, from taking the lease to publishing (an estimate that leans early, core/waiting.ts). */
  refreshMs?: number;
  sealed?: Uint8Array;
  expiresAt?: number;
  issuedAt?: number;
  fp?: string;
  invalidated?: boolean;
  /** When the last honoured invalidation happened (connections without rateLimit honour one per 10 s). */
  invalidatedAt?: number;
  backoff?: Backoff;
  circuit?: Circuit;
  /** Why the cached token was fetched. */
  reason?: RefreshReason;
  /**
   * Refuses demand refreshes (`ahead`, `min_ttl`) and invalidations until `until`; `expired` refreshes go on.
   * Left by the budget guard's spacing and reserve (a hint: the ledger decides for sure) and by a refresh
   * whose token could not satisfy its request.
   */
  demandBackoff?: Backoff;
}

export interface Lease {
  owner: string;
  fence: number;
  until: number;
}

export interface SealedToken {
  sealed: Uint8Array;
  expiresAt: number;
  issuedAt: number;
  fp: string;
  reason: RefreshReason;
  demandBackoff?: Backoff;
  /** How long this refresh took from taking the lease: what the next refresh's waiters expect. */
  refreshMs?: number;
}

/**
 * A lease attempt: the lease and the item after the write; or no lease (another holder has it) and, when the
 * store returned it with the failure, the item as the failed write found it.
 */
export type LeaseAttempt = { lease: Lease; item: TokenItem } | { lease?: undefined; item?: TokenItem };

export type PublishResult = 'published' | 'superseded';

/** What a lease holder leaves in the item when it frees the lease without publishing. */
export interface ReleaseNote {
  backoff?: Backoff;
  circuit?: Circuit;
  demandBackoff?: Backoff;
}

export type InvalidateResult = { kind: 'invalidated' } | { kind: 'not_current' } | { kind: 'too_soon'; until: number };

export interface TokenStore {
  /** Strongly consistent read of the connection's item. */
  get(connection: string): Promise<TokenItem | undefined>;
  /**
   * Takes the lease if it is free or expired at `now`, recording `now` as `leaseAt`. Returns the lease and
   * the item as it stands after the write; when another holder has it, no lease and the item as the failed
   * write found it if the store returned it (DynamoDB does), so a waiter needs no read of its own. An SDK
   * retry of a write that succeeded is recognised as ours (read back if the store did not return the item).
   */
  acquireLease(connection: string, owner: string, now: number, until: number): Promise<LeaseAttempt>;
  /**
   * Stores the token and frees the lease, only while `lease` is still the current one (fencing) and
   * the cached token is not one that expires later (unless that one was invalidated). Clears any backoff
   * and circuit: the upstream just issued a token.
   */
  publish(connection: string, lease: Lease, token: SealedToken): Promise<PublishResult>;
  /**
   * Frees the lease (only if still ours), optionally leaving a backoff, a circuit or a demand backoff.
   * False if the lease was no longer ours, so the note did not land.
   */
  release(connection: string, lease: Lease, note?: ReleaseNote): Promise<boolean>;
  /**
   * Marks the cached token invalid if its fingerprint is `fp` and it is not already, and, when `minGapMs`
   * is given, the last honoured invalidation was at least that long before `now`.
   */
  invalidate(connection: string, fp: string, now: number, minGapMs?: number): Promise<InvalidateResult>;
  /** An operator's reset: removes the backoff, the demand backoff and the circuit. Returns the item as it was. */
  reset(connection: string): Promise<TokenItem | undefined>;
}

export interface LedgerState {
  /** attemptId -> epoch ms of the debit. */
  entries: Record<string, number>;
  /** No upstream attempt before this time (an upstream 429's Retry-After). */
  backoffUntil?: number;
  /**
   * connection -> no upstream attempt for it before this time: it fetched a token that waits to be
   * published (docs/protocol.md "Fetched tokens are kept": a store fault after a fetch costs at most one request per 5 minutes).
   */
  holds?: Record<string, number>;
  /** Optimistic-concurrency version; 0 when the item does not exist. */
  ver: number;
}

export type LedgerWriteResult = 'written' | 'conflict';

export interface LedgerStore {
  read(key: string): Promise<LedgerState>;
  /** Writes `entries` if the item is still at `expectedVer`; reads back on a failed condition. */
  write(
    key: string,
    expectedVer: number,
    entries: Record<string, number>,
    attemptId: string,
    expiresAt: number,
  ): Promise<LedgerWriteResult>;
  /** Raises backoffUntil to `until` (never lowers it). Bumps the version, so a debit decided before it retries. */
  setBackoff(key: string, until: number): Promise<void>;
  /** Raises the connection's hold to `until` (never lowers it). Bumps the version like setBackoff. */
  hold(key: string, connection: string, until: number): Promise<void>;
  /** Removes a debit whose request was never sent (the slot was not spent upstream). */
  refund(key: string, attemptId: string): Promise<void>;
  /** An operator's reset: removes the connection's hold (never a debit: spent slots stay spent). */
  releaseHold(key: string, connection: string): Promise<void>;
}

export interface ClientCredentials {
  client_id: string;
  client_secret: string;
  username?: string;
  password?: string;
}

export interface SecretValue {
  credentials: ClientCredentials;
  /** Changes whenever the secret is rotated (Secrets Manager VersionId, or a content hash locally). */
  version: string;
}

export interface SecretSource {
  get(name: string, options?: { forceRefresh?: boolean }): Promise<SecretValue>;
}

export interface Sealer {
  seal(connection: string, token: Token): Promise<Uint8Array>;
  /** Opens a sealed token; throws if it was not sealed for `connection` or was tampered with. */
  open(connection: string, sealed: Uint8Array): Promise<Token>;
}

/** What the upstream answered, parsed and validated (see core/token-response.ts). */
export interface UpstreamToken {
  accessToken: string;
  tokenType: string;
  scope?: string;
  expiresInSeconds?: number;
}

export interface Upstream {
  requestToken(connection: Connection, credentials: ClientCredentials, signal: AbortSignal): Promise<UpstreamToken>;
}
