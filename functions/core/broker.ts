/**
 * The token broker: serves a still-valid token for a connection to an authorised caller, refreshing it
 * through a fleet-wide lease and a rate-limit ledger. All I/O goes through the ports (core/ports.ts).
 *
 * Read path, cheapest first:
 *  1. this container's memory (at most `memoryMaxAgeMs` old: the only staleness allowed);
 *  2. the store (one consistent GetItem; the sealed token is opened only if it changed);
 *  3. a refresh by whoever wins the lease; everyone else waits (bounded) for the winner's token.
 */
import { randomUUID } from 'node:crypto';
import { type Principal, isAllowed } from './authz.js';
import { backoffFor, errorForBackoff, errorForFailure } from './backoff.js';
import { type BrokerConfig, type Connection, requireGrantFields } from './config.js';
import { BrokerError, forbidden, invalidRequest, notFound, unavailable } from './errors.js';
import { fingerprint } from './fingerprint.js';
import { type FreshnessPolicy, freshness, lifetimeTooShort, satisfies, tokenExpiry } from './freshness.js';
import { canRefresh, leaseState, nextPoll } from './lease.js';
import { retryAfterSeconds } from './ledger.js';
import type { Clock, Lease, SecretSource, Sealer, Token, TokenItem, TokenStore, Upstream, UpstreamToken, LedgerStore, SecretValue } from './ports.js';
import { RateLimiter } from './rate-limiter.js';
import { CREDENTIAL_ERRORS, UpstreamError } from './upstream-errors.js';

export type Outcome = 'memory' | 'store' | 'refreshed' | 'waited';

export interface Served {
  token: Token;
  outcome: Outcome;
  connection: Connection;
  /** Ledger slots left after this request's debit, when it debited. */
  ledgerRemaining?: number;
  /** Set when a refresh-ahead failed and the still-valid cached token was served instead. */
  staleAfter?: string;
}

/** What the broker did with a reported token (DESIGN "HTTP API", POST /invalidate). `fp` is for the log line. */
export type InvalidationAnswer = { fp: string } & (
  | { invalidated: true }
  | { invalidated: false; reason: 'not_current' }
  | { invalidated: false; reason: 'deferred'; retryAfterSeconds: number }
);

export interface BrokerLog {
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface BrokerOptions {
  /** How long this container may answer from memory without reading the store (at most 5 s). */
  memoryMaxAgeMs: number;
  /** Served only with at least min_ttl plus this left. */
  skewMs: number;
  /** Lease duration: a dead holder is taken over after this. */
  leaseMs: number;
  /** Total time allowed for one upstream token request. */
  upstreamTimeoutMs: number;
  /** Longest a request waits for another holder's refresh. */
  maxWaitMs: number;
  /**
   * Added to every ledger window. Half covers the time from a debit to the request reaching the upstream
   * (a request is not sent more than half the margin after its debit; connecting takes at most 3 s), the
   * other half clock skew between containers.
   */
  ledgerMarginMs: number;
  pollInitialMs: number;
  pollMaxMs: number;
}

export const DEFAULT_OPTIONS: BrokerOptions = {
  memoryMaxAgeMs: 5_000,
  skewMs: 5_000,
  leaseMs: 20_000,
  upstreamTimeoutMs: 6_000,
  maxWaitMs: 10_000,
  ledgerMarginMs: 10_000,
  pollInitialMs: 20,
  pollMaxMs: 250,
};

export interface BrokerDeps {
  config: BrokerConfig;
  store: TokenStore;
  ledger: LedgerStore;
  secrets: SecretSource;
  sealer: Sealer;
  upstream: Upstream;
  clock: Clock;
  log?: BrokerLog;
  options?: Partial<BrokerOptions>;
}

export interface TokenRequest {
  connection: string;
  principal: Principal | undefined;
  minTtlSeconds: number;
  /** Epoch ms by which an answer is due (Lambda remaining time, capped by maxWaitMs). */
  deadline?: number;
}

interface MemoryEntry {
  token: Token;
  ver: number;
  readAt: number;
}

const silent: BrokerLog = { warn: () => {} };

export class TokenBroker {
  readonly options: BrokerOptions;
  private readonly memory = new Map<string, MemoryEntry>();
  private readonly inflight = new Map<string, Promise<unknown>>();
  private readonly limiter: RateLimiter;
  private readonly log: BrokerLog;

  constructor(private readonly deps: BrokerDeps) {
    this.options = { ...DEFAULT_OPTIONS, ...deps.options };
    if (this.options.memoryMaxAgeMs > 5_000) throw new Error('memoryMaxAgeMs is at most 5000');
    this.limiter = new RateLimiter(deps.ledger, deps.clock, this.options.ledgerMarginMs);
    this.log = deps.log ?? silent;
  }

  /** The connection, if it exists and the principal may use it; deny by default. */
  authorize(name: string, principal: Principal | undefined): Connection {
    if (!principal) throw forbidden('no caller identity');
    const connection = this.deps.config.connections.get(name);
    if (!connection) throw notFound(`unknown connection "${name}"`);
    if (!isAllowed(principal, connection.callers)) throw forbidden();
    return connection;
  }

  async getToken(req: TokenRequest): Promise<Served> {
    const connection = this.authorize(req.connection, req.principal);
    const { clock } = this.deps;
    const deadline = Math.min(req.deadline ?? Infinity, clock.now() + this.options.maxWaitMs);
    const policy: FreshnessPolicy = {
      minTtlMs: req.minTtlSeconds * 1000,
      skewMs: this.options.skewMs,
      refreshBeforeMs: connection.refreshBeforeSeconds * 1000,
    };
    let waited = false;
    for (;;) {
      const now = clock.now();
      const mem = this.memory.get(connection.name);
      const running = this.inflight.get(connection.name);
      if (mem && now - mem.readAt < this.options.memoryMaxAgeMs) {
        const f = freshness(mem.token.expiresAt, now, policy);
        // In refresh-ahead, one request per container refreshes; the others keep the current token.
        if (f === 'fresh' || (f === 'refresh-ahead' && running)) {
          return { token: mem.token, outcome: waited ? 'waited' : 'memory', connection };
        }
        if (f === 'stale' && lifetimeTooShort(mem.token, policy)) throw tooShort(mem.token);
      }
      if (running) {
        // In-process single flight: wait for this container's own store read or refresh, then look again.
        waited = true;
        await withDeadline(running, deadline, clock);
        if (clock.now() >= deadline) throw unavailable('timed out waiting for a token refresh', 1);
        continue;
      }
      const work = this.sync(connection, policy, deadline);
      this.inflight.set(connection.name, work);
      try {
        const served = await work;
        return waited && served.outcome === 'store' ? { ...served, outcome: 'waited' } : served;
      } finally {
        this.inflight.delete(connection.name);
      }
    }
  }

  /** Tells the broker a caller's upstream rejected `accessToken`: stop serving it if it is the current one. */
  async invalidate(req: { connection: string; principal: Principal | undefined; accessToken: string }): Promise<InvalidationAnswer> {
    const connection = this.authorize(req.connection, req.principal);
    const fp = fingerprint(req.accessToken);
    if (this.memory.get(connection.name)?.token.fp === fp) this.memory.delete(connection.name);
    return (await this.deps.store.invalidate(connection.name, fp)) ? { invalidated: true, fp } : { invalidated: false, reason: 'not_current', fp };
  }

  /** Reads the store and, if needed, refreshes or waits for the holder who does. */
  private async sync(connection: Connection, policy: FreshnessPolicy, deadline: number): Promise<Served> {
    const { clock } = this.deps;
    let item = await this.read(connection);
    let token = await this.open(connection, item);
    const served = (t: Token, outcome: Outcome, extra: Partial<Served> = {}): Served => ({ token: t, outcome, connection, ...extra });

    const f = freshness(token?.expiresAt, clock.now(), policy);
    if (token && f === 'fresh') return served(token, 'store');
    if (token && f === 'refresh-ahead') {
      const now = clock.now();
      const backingOff = item?.backoff !== undefined && item.backoff.until > now;
      if (backingOff || !canRefresh(deadline, now, this.refreshBudgetMs()) || leaseState(item, now) === 'held') return served(token, 'store');
      const acquired = await this.acquire(connection);
      if (!acquired) return served(token, 'store');
      if (acquired.item.ver !== item?.ver) {
        // Someone published between our read and our lease: serve theirs, do not spend another request.
        await this.releaseQuietly(connection, acquired.lease);
        const published = await this.open(connection, acquired.item);
        return served(published && published.expiresAt > token.expiresAt ? published : token, 'store');
      }
      try {
        const r = await this.refresh(connection, acquired.lease, acquired.item, deadline);
        return served(r.token, r.published ? 'refreshed' : 'store', { ...(r.ledgerRemaining !== undefined ? { ledgerRemaining: r.ledgerRemaining } : {}) });
      } catch (e) {
        // If the cached token still satisfies this caller, serve it and say the refresh failed.
        if (!satisfies(token.expiresAt, clock.now(), policy)) throw e;
        return served(token, 'store', { staleAfter: e instanceof BrokerError ? e.code : 'internal' });
      }
    }
    if (token && lifetimeTooShort(token, policy)) throw tooShort(token);

    let poll = 0;
    const seenVer = item?.ver ?? 0;
    for (;;) {
      const now = clock.now();
      if (now >= deadline) {
        throw unavailable('timed out waiting for another request to refresh the token', retryAfterSeconds((item?.leaseUntil ?? now + 1000) - now));
      }
      const lease = leaseState(item, now);
      if (lease === 'held') {
        poll = nextPoll(poll, this.options.pollInitialMs, this.options.pollMaxMs);
        await clock.sleep(Math.min(poll, deadline - now));
        item = await this.read(connection);
        token = await this.open(connection, item);
        if (token && satisfies(token.expiresAt, clock.now(), policy)) {
          return served(token, (item?.ver ?? 0) > seenVer ? 'waited' : 'store');
        }
        continue;
      }
      if (item?.backoff && item.backoff.until > now) throw errorForBackoff(item.backoff, now);
      if (!canRefresh(deadline, now, this.refreshBudgetMs())) {
        throw unavailable('not enough time left to refresh the token', 1);
      }
      const acquired = await this.acquire(connection);
      if (!acquired) {
        item = await this.read(connection);
        continue;
      }
      // Someone may have published between our read and our lease.
      const current = await this.open(connection, acquired.item);
      if (current && satisfies(current.expiresAt, clock.now(), policy)) {
        await this.releaseQuietly(connection, acquired.lease);
        return served(current, 'waited');
      }
      if (acquired.item.backoff && acquired.item.backoff.until > clock.now()) {
        await this.releaseQuietly(connection, acquired.lease, acquired.item.backoff);
        throw errorForBackoff(acquired.item.backoff, clock.now());
      }
      const r = await this.refresh(connection, acquired.lease, acquired.item, deadline);
      const extra = r.ledgerRemaining !== undefined ? { ledgerRemaining: r.ledgerRemaining } : {};
      if (satisfies(r.token.expiresAt, clock.now(), policy)) return served(r.token, r.published ? 'refreshed' : 'waited', extra);
      if (lifetimeTooShort(r.token, policy)) throw tooShort(r.token);
      throw unavailable('the refreshed token does not satisfy min_ttl', 1);
    }
  }

  private refreshBudgetMs(): number {
    return this.options.upstreamTimeoutMs + 1_000;
  }

  private async read(connection: Connection): Promise<TokenItem | undefined> {
    try {
      return await this.deps.store.get(connection.name);
    } catch (e) {
      throw storeUnavailable(e, this.log);
    }
  }

  private async acquire(connection: Connection): Promise<{ lease: Lease; item: TokenItem } | undefined> {
    const now = this.deps.clock.now();
    try {
      return await this.deps.store.acquireLease(connection.name, `${randomUUID()}`, now, now + this.options.leaseMs);
    } catch (e) {
      throw storeUnavailable(e, this.log);
    }
  }

  private async releaseQuietly(connection: Connection, lease: Lease, backoff?: TokenItem['backoff']): Promise<void> {
    try {
      await this.deps.store.release(connection.name, lease, backoff);
    } catch (e) {
      // The lease then expires on its own; nothing is lost.
      this.log.warn('lease release failed', { connection: connection.name, error: errorName(e) });
    }
  }

  /**
   * Opens the item's sealed token; undefined if there is none, it was invalidated, or it does not open
   * for this connection (then it is invalidated so a fresh token may replace it). Reuses the token in
   * memory when the item has not changed, so a store hit costs no decryption.
   */
  private async open(connection: Connection, item: TokenItem | undefined): Promise<Token | undefined> {
    const now = this.deps.clock.now();
    const name = connection.name;
    if (!item?.sealed || item.invalidated || item.expiresAt === undefined) {
      this.memory.delete(name);
      return undefined;
    }
    const mem = this.memory.get(name);
    if (mem && mem.ver === item.ver && mem.token.fp === item.fp) {
      this.memory.set(name, { ...mem, readAt: now });
      return mem.token;
    }
    try {
      const token = await this.deps.sealer.open(name, item.sealed);
      if (token.expiresAt !== item.expiresAt || token.fp !== item.fp) throw new Error('sealed token does not match its item');
      this.memory.set(name, { token, ver: item.ver, readAt: now });
      return token;
    } catch (e) {
      this.memory.delete(name);
      // KMS throttled or unreachable: the sealed token may be fine; answer 503 and leave it for the fleet.
      if (isTransient(e)) throw storeUnavailable(e, this.log);
      // Tampered with, sealed for another connection or with another key: never serve it, and let a fresh
      // token replace it (publishing over a token that expires later needs it invalidated).
      this.log.warn('cached token did not open; treating it as a miss', { connection: name, fp: item.fp, error: errorName(e) });
      if (item.fp) await this.deps.store.invalidate(name, item.fp).catch(() => false);
      return undefined;
    }
  }

  /**
   * Holding the lease: read the credentials, debit the ledger, fetch a token upstream, publish it. Always
   * frees the lease; a failure leaves a backoff behind so the fleet does not retry at once.
   */
  private async refresh(
    connection: Connection,
    lease: Lease,
    item: TokenItem,
    deadline: number,
  ): Promise<{ token: Token; published: boolean; ledgerRemaining?: number }> {
    const { clock, secrets, store, sealer } = this.deps;
    let ledgerRemaining: number | undefined;
    let upstreamToken: UpstreamToken;
    let sentAt: number;
    try {
      const attempt = async (secret: SecretValue) => {
        if (connection.rateLimit) {
          const debit = await this.limiter.debit(connection.rateLimit, randomUUID());
          ledgerRemaining = debit.remaining;
          // The window margin covers the time from debit to arrival upstream (half of it: a stall here plus
          // the connect timeout) and clock skew between containers (the other half). A container that
          // stalled longer does not send (the slot stays spent: attempts are never refunded).
          if (clock.now() - debit.at > this.options.ledgerMarginMs / 2) {
            throw new UpstreamError({ kind: 'unavailable', detail: 'rate-limit debit too old to send' });
          }
        }
        // Finish inside the lease (nobody takes it over mid-request) and before the caller's deadline.
        const budget = Math.min(this.options.upstreamTimeoutMs, lease.until - 1_000 - clock.now(), deadline - RESPONSE_RESERVE_MS - clock.now());
        if (budget < Math.min(MIN_UPSTREAM_BUDGET_MS, this.options.upstreamTimeoutMs)) throw new UpstreamError({ kind: 'unavailable', detail: 'no time left to send the token request' });
        sentAt = clock.now();
        upstreamToken = await this.deps.upstream.requestToken(connection, secret.credentials, AbortSignal.timeout(budget));
      };
      const secret = await secrets.get(connection.secret);
      // Checked before any ledger slot is spent.
      requireGrantFields(connection, secret.credentials);
      try {
        await attempt(secret);
      } catch (e) {
        if (!(e instanceof UpstreamError) || e.failure.kind !== 'oauth' || !CREDENTIAL_ERRORS.has(e.failure.error)) throw e;
        // Maybe ops rotated the secret: re-read it, and retry once only if it changed.
        const again = await secrets.get(connection.secret, { forceRefresh: true });
        const timeLeft = Math.min(lease.until - 1_000, deadline - RESPONSE_RESERVE_MS) - clock.now();
        if (again.version === secret.version || timeLeft < Math.min(MIN_UPSTREAM_BUDGET_MS, this.options.upstreamTimeoutMs)) throw e;
        requireGrantFields(connection, again.credentials);
        await attempt(again);
      }
      const issuedAt = sentAt!;
      const up = upstreamToken!;
      const expiresAt = tokenExpiry(issuedAt, up, connection.defaultTtlSeconds);
      const token: Token = {
        accessToken: up.accessToken,
        tokenType: up.tokenType,
        ...(up.scope ?? connection.scope ? { scope: up.scope ?? connection.scope } : {}),
        expiresAt,
        issuedAt,
        fp: fingerprint(up.accessToken),
      };
      const sealed = await sealer.seal(connection.name, token);
      const result = await store.publish(connection.name, lease, { sealed, expiresAt, issuedAt, fp: token.fp });
      const extra = ledgerRemaining !== undefined ? { ledgerRemaining } : {};
      if (result === 'published') {
        this.memory.set(connection.name, { token, ver: item.ver + 1, readAt: clock.now() });
        return { token, published: true, ...extra };
      }
      // Superseded: a newer holder published, or the cached token outlives ours. Prefer the cached one.
      await this.releaseQuietly(connection, lease);
      const current = await this.open(connection, await this.read(connection));
      const best = current && current.expiresAt >= token.expiresAt ? current : token;
      return { token: best, published: false, ...extra };
    } catch (e) {
      const now = clock.now();
      if (e instanceof UpstreamError) {
        const backoff = backoffFor(e.failure, connection, now);
        // Shared ledger first, so no connection on the same key sends before the lease is free.
        if (e.failure.kind === 'rate_limited' && connection.rateLimit) {
          await this.limiter.holdUntil(connection.rateLimit, backoff.until).catch((err: unknown) =>
            this.log.warn('could not record upstream backoff in the ledger', { connection: connection.name, error: errorName(err) }),
          );
        }
        await this.releaseQuietly(connection, lease, backoff);
        this.log.warn('upstream token request failed', { connection: connection.name, failure: e.failure.kind, status: statusOf(e), upstreamError: e.failure.kind === 'oauth' ? e.failure.error : undefined });
        throw errorForFailure(e.failure, backoff.until - now);
      }
      const err = storeUnavailable(e, this.log);
      // A refused debit: let everyone else read the answer from the item instead of trying the ledger too.
      const backoff =
        err.code === 'rate_limited' && err.extra.retryAfterSeconds !== undefined
          ? { until: now + err.extra.retryAfterSeconds * 1000, code: err.code, message: err.message }
          : undefined;
      await this.releaseQuietly(connection, lease, backoff);
      throw err;
    }
  }
}

/** Time kept back from the caller's deadline to publish and answer. */
const RESPONSE_RESERVE_MS = 500;
/** Not worth sending a token request with less time than this. */
const MIN_UPSTREAM_BUDGET_MS = 500;

function tooShort(token: Token): BrokerError {
  const lifetime = Math.floor((token.expiresAt - token.issuedAt) / 1000);
  return invalidRequest(`min_ttl is longer than the tokens this upstream issues (${lifetime} s)`);
}

/**
 * An AWS service or network failure (throttling, 5xx, timeouts), as opposed to a sealed token that does not
 * open. The Encryption SDK folds keyring errors into its own message, so the message is checked too.
 */
export function isTransient(e: unknown): boolean {
  const err = e as { $metadata?: unknown; $retryable?: unknown; name?: string; message?: string; code?: string };
  if (err?.$metadata !== undefined || err?.$retryable !== undefined) return true;
  const text = `${err?.name ?? ''} ${err?.code ?? ''} ${err?.message ?? ''}`;
  return /Throttl|TooManyRequests|LimitExceeded|ServiceUnavailable|InternalFailure|KMSInternal|Timeout|ECONN|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|socket hang up|NetworkingError/i.test(text);
}

function statusOf(e: UpstreamError): number | undefined {
  return 'status' in e.failure ? e.failure.status : undefined;
}

function errorName(e: unknown): string {
  return e instanceof Error ? e.name : typeof e;
}

function storeUnavailable(e: unknown, log: BrokerLog): BrokerError {
  if (e instanceof BrokerError) return e;
  log.warn('token store unavailable', { error: errorName(e) });
  return unavailable('token store unavailable', 1);
}

async function withDeadline(p: Promise<unknown>, deadline: number, clock: Clock): Promise<void> {
  const wait = deadline - clock.now();
  if (wait <= 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, wait);
    }),
  ]);
  clearTimeout(timer);
}
