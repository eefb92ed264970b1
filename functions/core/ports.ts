/**
 * The core's view of the outside world: small interfaces that adapters implement
 * (functions/adapters) and tests fake. All times are epoch milliseconds from an injected Clock.
 */
import type { Connection } from './config.js';
import type { ErrorCode } from './errors.js';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

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
}

/** The cache/lease item of one connection, as stored (token sealed). */
export interface TokenItem {
  /** Publishes so far. */
  ver: number;
  /** Lease acquisitions so far: the fencing token. */
  fence: number;
  owner?: string;
  leaseUntil?: number;
  sealed?: Uint8Array;
  expiresAt?: number;
  issuedAt?: number;
  fp?: string;
  invalidated?: boolean;
  backoff?: Backoff;
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
}

export type PublishResult = 'published' | 'superseded';

export interface TokenStore {
  /** Strongly consistent read of the connection's item. */
  get(connection: string): Promise<TokenItem | undefined>;
  /**
   * Takes the lease if it is free or expired at `now`. Returns the lease and the item as it stands after
   * the write, or undefined when another holder has it. Reads back after a failed condition, so an
   * SDK retry of a write that succeeded is recognised as ours.
   */
  acquireLease(connection: string, owner: string, now: number, until: number): Promise<{ lease: Lease; item: TokenItem } | undefined>;
  /**
   * Stores the token and frees the lease, only while `lease` is still the current one (fencing) and
   * the cached token is not one that expires later (unless that one was invalidated).
   */
  publish(connection: string, lease: Lease, token: SealedToken): Promise<PublishResult>;
  /** Frees the lease (only if still ours), optionally recording a backoff. */
  release(connection: string, lease: Lease, backoff?: Backoff): Promise<void>;
  /** Marks the cached token invalid if its fingerprint is `fp`. True if this call changed the item. */
  invalidate(connection: string, fp: string): Promise<boolean>;
}

export interface LedgerState {
  /** attemptId -> epoch ms of the debit. */
  entries: Record<string, number>;
  /** No upstream attempt before this time (an upstream 429's Retry-After). */
  backoffUntil?: number;
  /** Optimistic-concurrency version; 0 when the item does not exist. */
  ver: number;
}

export type LedgerWriteResult = 'written' | 'conflict';

export interface LedgerStore {
  read(key: string): Promise<LedgerState>;
  /** Writes `entries` if the item is still at `expectedVer`; reads back on a failed condition. */
  write(key: string, expectedVer: number, entries: Record<string, number>, attemptId: string, expiresAt: number): Promise<LedgerWriteResult>;
  /** Raises backoffUntil to `until` (never lowers it). */
  setBackoff(key: string, until: number): Promise<void>;
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
