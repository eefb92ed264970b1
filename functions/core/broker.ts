/**
 * The token broker: serves a still-valid token for a connection to an authorised caller, refreshing it
 * through a fleet-wide lease and a rate-limit ledger under the budget guard. All I/O goes through the
 * ports (core/ports.ts); what to do next is decided by the pure functions of core/decide.ts.
 *
 * Read path, cheapest first:
 *  1. this container's memory (at most `memoryMaxAgeMs` old: the only staleness allowed);
 *  2. the store (one consistent GetItem; the sealed token is opened only if it changed);
 *  3. a refresh by whoever wins the lease; everyone else waits (bounded) for the winner's token.
 */
import { type Principal, isAllowed } from './authz.js';
import { backoffFor, backoffNote, errorForBackoff, errorForFailure } from './backoff.js';
import { circuitError, openCircuit, probeFailed } from './circuit.js';
import { type BrokerConfig, type Connection, requireUsableCredentials } from './connection.js';
import { DEMAND_REASONS, type Policy, type Step, aheadBlockedUntil, decide, tooShort } from './decide.js';
import { type InvalidationResult, invalidateToken } from './invalidation.js';
import { BrokerError, type RefreshReason, forbidden, notFound, rateLimited, unavailable } from './errors.js';
import { fingerprint } from './fingerprint.js';
import { inAheadWindow, serves, tokenExpiry, tooShortFor } from './freshness.js';
import { ledgerMarginMs } from './ledger.js';
import {
  DEFAULT_MARGIN_PARTS,
  HOLD_RATE_LIMITED_MS,
  HOLD_UNLIMITED_MS,
  LEASE_MS,
  MISCONFIGURED_RECHECK_MS,
  type MarginParts,
  UNLIMITED_GAP_MS,
} from './limits.js';
import {
  type Backoff,
  type Clock,
  DependencyUnavailable,
  type Ids,
  type Lease,
  type LedgerStore,
  type ReleaseNote,
  type SecretSource,
  type SecretValue,
  type Sealer,
  SealerUnavailable,
  StoreThrottled,
  type Token,
  type TokenItem,
  type TokenStore,
  type Timers,
  type Upstream,
} from './ports.js';
import { RateLimiter, refusalError } from './rate-limiter.js';
import { CREDENTIAL_ERRORS, UpstreamError } from './upstream-errors.js';
import { expectedRefreshMs, waitBeforeRead } from './waiting.js';

export type Outcome = 'memory' | 'store' | 'refreshed' | 'waited';

export interface Served {
  token: Token;
  outcome: Outcome;
  /** Upstream token requests this request sent, by reason. */
  sent?: RefreshReason[];
  /** Ledger slots left after this request's debit, when it debited. */
  ledgerRemaining?: number;
  /** Set when a refresh failed and the still-valid cached token was served instead: the refresh's error code. */
  staleAfter?: string;
  /** That refresh failed at the upstream (counted as an upstream error). */
  upstreamFailed?: boolean;
}

/** What the broker did with a reported token (docs/protocol.md "Invalidations"). `fp` is for the log line. */
export type InvalidationAnswer = { fp: string } & InvalidationResult;

export interface BrokerLog {
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface BrokerOptions {
  /** How long this container may answer from memory without reading the store (at most 5 s). */
  memoryMaxAgeMs: number;
  /** A cached token is served only with at least min_ttl plus this left (or a quarter of its lifetime, if less). */
  skewMs: number;
  /** Lease duration: a dead holder is taken over after this. */
  leaseMs: number;
  /** Total time allowed for one upstream token request. */
  upstreamTimeoutMs: number;
  /** Longest a request waits for another holder's refresh. */
  maxWaitMs: number;
  /** What the ledger's window margin covers; the margin is their sum (core/ledger.ts `ledgerMarginMs`). */
  margin: MarginParts;
  pollInitialMs: number;
  pollMaxMs: number;
}

const DEFAULT_OPTIONS: BrokerOptions = {
  memoryMaxAgeMs: 5_000,
  skewMs: 5_000,
  leaseMs: LEASE_MS,
  upstreamTimeoutMs: 6_000,
  maxWaitMs: 10_000,
  margin: DEFAULT_MARGIN_PARTS,
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
  /** Lease owners and ledger attempt ids. */
  ids: Ids;
  /** The upstream request's timeout, and how long a request waits for its container's read or refresh. */
  timers: Timers;
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
  /** The item version it was read at (-1: fetched here and not stored yet). */
  ver: number;
  readAt: number;
  /** Refresh-ahead cannot start before this (backoff, demand backoff, open circuit): serve from memory. */
  aheadBlockedUntil: number;
}

/** A token this container fetched that the store would not take (DynamoDB or KMS fault). */
interface Pending {
  token: Token;
  reason: RefreshReason;
  retryAt: number;
}

/** What one refresh needs to know about the request that triggers it. */
interface RefreshContext {
  connection: Connection;
  lease: Lease;
  /** When the lease was taken (this container's clock). */
  leaseAt: number;
  /** The item as it stood when the lease was taken. */
  item: TokenItem;
  /** Its token, opened (undefined if none or invalidated). */
  current: Token | undefined;
  minTtlMs: number;
  deadline: number;
  /** Upstream requests sent so far, by reason. */
  sent: RefreshReason[];
  /** This refresh is an open circuit's probe: if it does not succeed, the next probe waits as after a failure. */
  probe: boolean;
}

const silent: BrokerLog = { warn: () => {} };

/** Time kept back from the caller's deadline to publish and answer. */
const RESPONSE_RESERVE_MS = 500;
/** Not worth sending a token request with less time than this. */
const MIN_UPSTREAM_BUDGET_MS = 500;
/** A container retries storing a pending token at most this often. */
const PENDING_RETRY_MS = 1_000;

export class TokenBroker {
  readonly options: BrokerOptions;
  private readonly memory = new Map<string, MemoryEntry>();
  private readonly inflight = new Map<string, Promise<Served | undefined>>();
  private readonly pending = new Map<string, Pending>();
  /** The token this container invalidated last, per connection (fingerprint and item version). */
  private readonly invalidatedHere = new Map<string, { fp: string; ver: number }>();
  private readonly limiter: RateLimiter;
  private readonly log: BrokerLog;

  constructor(private readonly deps: BrokerDeps) {
    this.options = { ...DEFAULT_OPTIONS, ...deps.options };
    if (this.options.memoryMaxAgeMs > 5_000) throw new Error('memoryMaxAgeMs is at most 5000');
    this.limiter = new RateLimiter(deps.ledger, deps.clock, ledgerMarginMs(this.options.margin));
    this.log = deps.log ?? silent;
  }

  /** True if `name` is a configured connection (whoever asks). */
  knows(name: string): boolean {
    return this.deps.config.connections.has(name);
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
    const { skewMs, memoryMaxAgeMs } = this.options;
    const deadline = Math.min(req.deadline ?? Infinity, clock.now() + this.options.maxWaitMs);
    const minTtlMs = req.minTtlSeconds * 1000;
    let waited = false;
    for (;;) {
      const now = clock.now();
      const mem = this.memory.get(connection.name);
      const running = this.inflight.get(connection.name);
      if (mem && now - mem.readAt < memoryMaxAgeMs) {
        // In the refresh-ahead window one request per container refreshes; the others keep the current token.
        const ahead = inAheadWindow(mem.token, now, connection.refreshBeforeSeconds * 1000, skewMs);
        if (serves(mem.token, now, minTtlMs, skewMs) && (!ahead || running || now < mem.aheadBlockedUntil)) {
          return { token: mem.token, outcome: waited ? 'waited' : 'memory' };
        }
        if (tooShortFor(mem.token, minTtlMs)) throw tooShort(mem.token);
      }
      if (running) {
        // In-process single flight: wait for this container's own store read or refresh, then look again.
        waited = true;
        const r = await withDeadline(running, deadline, clock, this.deps.timers);
        // A token fresh from the upstream serves whoever waited for it (no skew allowance).
        if (r && (r.outcome === 'refreshed' || r.outcome === 'waited') && serves(r.token, clock.now(), minTtlMs, skewMs, true)) {
          return { token: r.token, outcome: 'waited' };
        }
        if (clock.now() >= deadline) throw unavailable('timed out waiting for a token refresh', 1);
        continue;
      }
      const work = this.sync(connection, minTtlMs, deadline);
      const shared = work.catch(() => undefined);
      this.inflight.set(connection.name, shared);
      try {
        const served = await work;
        return waited && served.outcome === 'store' ? { ...served, outcome: 'waited' } : served;
      } finally {
        // Only our own entry: a newer request's must stay for its waiters.
        if (this.inflight.get(connection.name) === shared) this.inflight.delete(connection.name);
      }
    }
  }

  /**
   * A caller's upstream rejected `accessToken`. If it is the cached token, stop serving it, unless the budget
   * guard will not spend a token request on it now (then it is deferred and stays in service).
   */
  async invalidate(req: { connection: string; principal: Principal | undefined; accessToken: string }): Promise<InvalidationAnswer> {
    const connection = this.authorize(req.connection, req.principal);
    const fp = fingerprint(req.accessToken);
    const name = connection.name;
    const now = this.deps.clock.now();
    const forget = () => {
      if (this.memory.get(name)?.token.fp === fp) this.memory.delete(name);
    };
    if (this.pending.get(name)?.token.fp === fp) {
      // Only this container serves it, and the hold that keeps the fleet from fetching stays in place.
      this.pending.delete(name);
      forget();
      return { invalidated: true, fp };
    }
    const answer = await this.storeCall(() => invalidateToken({ store: this.deps.store, limiter: this.limiter, now }, connection, fp));
    // Honoured, or no longer current: this container stops serving it at once, also from a store read that was
    // in flight when the report came (it still shows the token). Deferred: it stays in service.
    if (answer.invalidated && answer.ver !== undefined) this.invalidatedHere.set(name, { fp, ver: answer.ver });
    if (answer.invalidated || answer.reason === 'not_current') forget();
    return { ...answer, fp };
  }

  private policy(connection: Connection): Policy {
    return {
      skewMs: this.options.skewMs,
      refreshBeforeMs: connection.refreshBeforeSeconds * 1000,
      configHash: connection.configHash,
      refreshBudgetMs: this.options.upstreamTimeoutMs + 1_000,
    };
  }

  /** Reads the store and runs the decided steps: serve, wait for another holder, refresh, or refuse. */
  private async sync(connection: Connection, minTtlMs: number, deadline: number): Promise<Served> {
    const { clock } = this.deps;
    const policy = this.policy(connection);
    await this.storePending(connection);
    let item: TokenItem | undefined;
    // When the last read was sent: a lease taken after it showed the lease free was taken after this.
    let readAt = clock.now();
    try {
      item = await this.read(connection);
    } catch (e) {
      const pending = this.pendingToken(connection);
      if (pending && serves(pending, clock.now(), minTtlMs, this.options.skewMs)) return { token: pending, outcome: 'memory' };
      throw e;
    }
    let token = this.withPending(connection, await this.open(connection, item));
    const firstVer = item?.ver ?? 0;
    for (;;) {
      const fresh = (item?.ver ?? 0) > firstVer;
      const step = decide({ now: clock.now(), item, token, fresh, minTtlMs, deadline, holdsLease: false }, policy);
      if (step.do === 'serve') return { token: step.token, outcome: fresh ? 'waited' : 'store' };
      if (step.do === 'refuse') throw step.error;
      if (step.do === 'refresh') {
        const r = await this.tryRefresh(connection, policy, step, minTtlMs, deadline, firstVer);
        if ('token' in r) return r;
        if (r.lost?.item) {
          // Another holder has the lease: the failed lease write brought the item back, no read needed.
          item = r.lost.item;
          token = this.withPending(connection, await this.open(connection, item));
          continue;
        }
        if (r.lost) {
          // The store did not return the item: another holder took the lease after our read showed it free
          // (counted from the read: early rather than late), and its refresh should take as long as the item
          // we read expects.
          const now = clock.now();
          await clock.sleep(Math.min(waitBeforeRead({ leaseAt: readAt, refreshMs: item?.refreshMs }, now, this.options), deadline - now));
        }
      } else {
        // Sleep until the holder's refresh is due (the item says when), then poll fast.
        const now = clock.now();
        await clock.sleep(Math.min(waitBeforeRead(item, now, this.options), deadline - now));
      }
      // We waited for another holder, or gave a lease back: look again.
      readAt = clock.now();
      item = await this.read(connection);
      token = this.withPending(connection, await this.open(connection, item));
    }
  }

  /**
   * Takes the lease and refreshes, unless the item changed so that no refresh is needed any more. When
   * another holder has the lease: `lost`, with the item as the failed lease write found it if the store
   * returned it. A refresh-ahead that fails for any reason serves its still-valid token.
   */
  private async tryRefresh(
    connection: Connection,
    policy: Policy,
    step: Extract<Step, { do: 'refresh' }>,
    minTtlMs: number,
    deadline: number,
    firstVer: number,
  ): Promise<Served | { lost?: { item?: TokenItem | undefined } }> {
    const { clock } = this.deps;
    // What to serve if this refresh-ahead fails: the still-valid token, as long as it is still the cached one.
    let fallback = step.fallback;
    try {
      const leaseAt = clock.now();
      const attempt = await this.storeCall(() =>
        this.deps.store.acquireLease(connection.name, this.deps.ids.next(), leaseAt, leaseAt + this.options.leaseMs),
      );
      if (!attempt.lease) {
        // Someone else refreshes ahead: the still-valid token serves meanwhile.
        if (fallback && serves(fallback, clock.now(), minTtlMs, this.options.skewMs)) return { token: fallback, outcome: 'store' };
        return { lost: { item: attempt.item } };
      }
      const { lease, item } = attempt;
      let current: Token | undefined;
      try {
        current = this.withPending(connection, await this.open(connection, item));
      } catch (e) {
        await this.releaseQuietly(connection, lease);
        throw e;
      }
      // Someone may have published, invalidated, backed off or opened the circuit between our read and our lease.
      const again = decide(
        { now: clock.now(), item, token: current, fresh: item.ver > firstVer, minTtlMs, deadline, holdsLease: true },
        policy,
      );
      fallback = again.do === 'refresh' ? again.fallback : undefined;
      if (again.do !== 'refresh') {
        await this.releaseQuietly(connection, lease);
        // 'waited' only for a token published while this request waited: in-process waiters then take it
        // without the skew allowance; a cached one keeps it.
        if (again.do === 'serve') return { token: again.token, outcome: item.ver > firstVer ? 'waited' : 'store' };
        if (again.do === 'refuse') throw again.error;
        return {};
      }
      return await this.refresh(
        { connection, lease, leaseAt, item, current, minTtlMs, deadline, sent: [], probe: again.circuit === 'probe' },
        again,
      );
    } catch (e) {
      if (!fallback || !serves(fallback, clock.now(), minTtlMs, this.options.skewMs)) throw e;
      const err = e instanceof BrokerError ? e : undefined;
      // The guard declining a refresh-ahead is not a failure; anything else is, and the stale serve says so.
      const declined = err?.extra.refusal === 'reserve' || err?.extra.refusal === 'spacing';
      return {
        token: fallback,
        outcome: 'store',
        ...(err?.extra.sent?.length ? { sent: err.extra.sent } : {}),
        ...(declined ? {} : { staleAfter: err?.code ?? 'internal' }),
        ...(err?.extra.fromUpstream ? { upstreamFailed: true } : {}),
      };
    }
  }

  /**
   * Holding the lease: read the credentials, debit the ledger, fetch a token upstream, keep it. Always frees
   * the lease; a failure leaves a backoff, a demand backoff or the circuit behind so the fleet does not retry
   * at once.
   */
  private async refresh(ctx: RefreshContext, step: Extract<Step, { do: 'refresh' }>): Promise<Served> {
    const { connection, lease, item } = ctx;
    let secret: SecretValue | undefined;
    let fetched: Fetched;
    try {
      // A probe, a circuit's secret check and a misconfigured secret read the secret afresh.
      const force = step.circuit !== 'closed' || item.backoff?.code === 'internal';
      secret = await this.deps.secrets.get(connection.secret, force ? { forceRefresh: true } : undefined);
      requireUsableCredentials(connection, secret.credentials);
      let reason = step.reason;
      if (step.circuit === 'check') {
        const circuit = item.circuit!;
        if (fingerprint(secret.version) === circuit.secretVersion) {
          await this.releaseQuietly(connection, lease, { circuit: { ...circuit, checkedAt: this.deps.clock.now() } });
          throw new Released(circuitError(circuit));
        }
        reason = 'rotation';
      }
      try {
        fetched = await this.send(ctx, secret, reason);
      } catch (e) {
        if (!(e instanceof UpstreamError) || e.failure.kind !== 'oauth' || !CREDENTIAL_ERRORS.has(e.failure.error)) throw e;
        // Maybe ops rotated the secret: re-read it, and retry once only if it changed.
        const again = await this.deps.secrets.get(connection.secret, { forceRefresh: true }).catch(() => secret!);
        const timeLeft = Math.min(lease.until - 1_000, ctx.deadline - RESPONSE_RESERVE_MS) - this.deps.clock.now();
        if (again.version === secret.version || timeLeft < Math.min(MIN_UPSTREAM_BUDGET_MS, this.options.upstreamTimeoutMs)) throw e;
        secret = again;
        requireUsableCredentials(connection, secret.credentials);
        fetched = await this.send(ctx, secret, 'rotation');
      }
    } catch (e) {
      throw withSent(await this.failed(ctx, e, secret), ctx.sent);
    }
    return this.keep(ctx, fetched);
  }

  /** Debits the ledger and sends one upstream token request; the reason is recorded in `ctx.sent`. */
  private async send(ctx: RefreshContext, secret: SecretValue, reason: RefreshReason): Promise<Fetched> {
    const { connection, lease, deadline } = ctx;
    const { clock } = this.deps;
    const limit = connection.rateLimit;
    const attemptId = this.deps.ids.next();
    const debit = limit
      ? await this.limiter.debit(limit, attemptId, { demand: DEMAND_REASONS.has(reason), connection: connection.name })
      : undefined;
    const now = clock.now();
    // Finish inside the lease (nobody takes it over mid-request) and before the caller's deadline.
    const budget = Math.min(this.options.upstreamTimeoutMs, lease.until - 1_000 - now, deadline - RESPONSE_RESERVE_MS - now);
    // The ledger's margin covers a request reaching the upstream up to sendCutoff + connect after its debit.
    const stalled = debit !== undefined && now - debit.at > this.options.margin.sendCutoffMs;
    if (stalled || budget < Math.min(MIN_UPSTREAM_BUDGET_MS, this.options.upstreamTimeoutMs)) {
      // Nothing was sent, so nothing was spent: give the slot back.
      let refunded = true;
      if (limit) {
        refunded = await this.limiter.refund(limit, attemptId).then(
          () => true,
          (e: unknown) => {
            this.log.warn('could not refund an unsent debit', { connection: connection.name, error: errorName(e) });
            return false;
          },
        );
      }
      throw new NotSent(
        stalled ? 'the rate-limit ledger answered too slowly to send the token request' : 'not enough time left to send the token request',
        refunded,
      );
    }
    ctx.sent.push(reason);
    const sentAt = clock.now();
    const up = await this.deps.upstream.requestToken(connection, secret.credentials, this.deps.timers.timeout(budget));
    const token: Token = {
      accessToken: up.accessToken,
      tokenType: up.tokenType,
      ...((up.scope ?? connection.scope) ? { scope: up.scope ?? connection.scope } : {}),
      expiresAt: tokenExpiry(sentAt, up, connection.defaultTtlSeconds),
      issuedAt: sentAt,
      fp: fingerprint(up.accessToken),
    };
    return { token, reason, ...(debit ? { debit } : {}) };
  }

  /**
   * A token the upstream issued: publish it, unless it expires no later than the cached one (then keep the
   * cached one and hold off further requests). If the store or KMS will not take it, serve it from this
   * container and publish it later: it is never thrown away.
   */
  private async keep(ctx: RefreshContext, fetched: Fetched): Promise<Served> {
    const { connection, lease, current, minTtlMs } = ctx;
    const { clock, sealer, store } = this.deps;
    const { token, reason, debit } = fetched;
    const extra = { sent: ctx.sent, ...(debit ? { ledgerRemaining: debit.remaining } : {}) };
    const holdUntil = clock.now() + holdMs(connection);
    if (current && token.expiresAt <= current.expiresAt) {
      // Some upstreams answer with the token they already gave until it dies: no use asking again soon.
      const hold = backoffNote(
        unavailable('the upstream answered with a token that expires no later than the cached one; try again later', 1),
        holdUntil,
      );
      await this.releaseQuietly(connection, lease, DEMAND_REASONS.has(reason) ? { demandBackoff: hold } : { backoff: hold });
      this.log.warn('upstream answered with a token that expires no later than the cached one', {
        connection: connection.name,
        reason,
        fp: token.fp,
      });
      if (serves(current, clock.now(), minTtlMs, this.options.skewMs)) return { token: current, outcome: 'store', ...extra };
      throw withSent(errorForBackoff(hold, clock.now()), ctx.sent);
    }
    const satisfies = serves(token, clock.now(), minTtlMs, this.options.skewMs, true);
    const demandBackoff = this.demandBackoffAfter(
      connection,
      reason,
      debit?.at,
      satisfies || tooShortFor(token, minTtlMs) ? undefined : holdUntil,
    );
    let published: boolean;
    try {
      const sealed = await sealer.seal(connection.name, token);
      const result = await store.publish(connection.name, lease, {
        sealed,
        expiresAt: token.expiresAt,
        issuedAt: token.issuedAt,
        fp: token.fp,
        reason,
        ...(demandBackoff ? { demandBackoff } : {}),
        // What the next refresh's waiters sleep for before they read.
        refreshMs: expectedRefreshMs(ctx.item.refreshMs, clock.now() - ctx.leaseAt),
      });
      published = result === 'published';
    } catch (e) {
      await this.holdPending(connection, lease, token, reason, holdUntil, e);
      return this.answer(token, 'refreshed', ctx, extra);
    }
    if (published) {
      this.memory.set(connection.name, { token, ver: ctx.item.ver + 1, readAt: clock.now(), aheadBlockedUntil: demandBackoff?.until ?? 0 });
      return this.answer(token, 'refreshed', ctx, extra);
    }
    // Superseded: a holder who took the lease over published meanwhile. Prefer the token that lives longer.
    await this.releaseQuietly(connection, lease);
    const newer = await this.open(connection, await this.read(connection)).catch(() => undefined);
    const best = newer && newer.expiresAt >= token.expiresAt ? newer : token;
    return this.answer(best, 'waited', ctx, extra);
  }

  /** The refreshed token for the request that fetched or awaited it, if it satisfies its min_ttl. */
  private answer(token: Token, outcome: Outcome, ctx: RefreshContext, extra: Pick<Served, 'sent' | 'ledgerRemaining'>): Served {
    if (serves(token, this.deps.clock.now(), ctx.minTtlMs, this.options.skewMs, true)) return { token, outcome, ...extra };
    if (tooShortFor(token, ctx.minTtlMs)) throw withSent(tooShort(token), ctx.sent);
    throw withSent(unavailable('the refreshed token does not satisfy min_ttl', 1), ctx.sent);
  }

  /**
   * After a publish: demand refreshes wait for the guard's spacing (a hint; the ledger decides for sure),
   * and for the hold when the new token could not satisfy the request that fetched it.
   */
  private demandBackoffAfter(
    connection: Connection,
    reason: RefreshReason,
    debitAt: number | undefined,
    holdUntil: number | undefined,
  ): Backoff | undefined {
    const limit = connection.rateLimit;
    const now = this.deps.clock.now();
    // Rate-limited: the guard's spacing from this request's debit. Without rateLimit: demand refreshes, like
    // invalidations, at most one per 10 s (a caller whose min_ttl only a fresh token meets would otherwise
    // cost one upstream request per request).
    const spacing = limit
      ? debitAt !== undefined && limit.minSpacingMs > 0
        ? { until: debitAt + limit.minSpacingMs, error: refusalError('spacing', limit.minSpacingMs, limit) }
        : undefined
      : DEMAND_REASONS.has(reason)
        ? {
            until: now + UNLIMITED_GAP_MS,
            error: rateLimited(
              `token requests on demand are spaced at least ${UNLIMITED_GAP_MS / 1000} s apart (spacing)`,
              UNLIMITED_GAP_MS / 1000,
              'spacing',
            ),
          }
        : undefined;
    if (holdUntil !== undefined && (spacing === undefined || holdUntil >= spacing.until)) {
      return backoffNote(unavailable("the upstream's newest token could not satisfy the requested min_ttl; try again later", 1), holdUntil);
    }
    return spacing ? backoffNote(spacing.error, spacing.until) : undefined;
  }

  /**
   * The store or KMS would not take a fetched token: serve it from this container, publish it when the store
   * takes writes again, and keep the fleet from fetching another meanwhile (a backoff in the item; if even
   * that write fails, a hold in the ledger for rate-limited connections; the lease covers the rest).
   */
  private async holdPending(
    connection: Connection,
    lease: Lease,
    token: Token,
    reason: RefreshReason,
    until: number,
    cause: unknown,
  ): Promise<void> {
    const { clock } = this.deps;
    const now = clock.now();
    this.pending.set(connection.name, { token, reason, retryAt: now + PENDING_RETRY_MS });
    this.memory.set(connection.name, { token, ver: -1, readAt: now, aheadBlockedUntil: until });
    this.log.warn('fetched token could not be stored; this container serves it and stores it later', {
      connection: connection.name,
      fp: token.fp,
      error: errorName(cause),
    });
    const hold = backoffNote(unavailable('a token fetched for this connection is waiting to be stored; try again later', 1), until);
    const held = await this.deps.store.release(connection.name, lease, { backoff: hold }).catch(() => false);
    if (!held) {
      // The item did not take it (a failing store, or the lease was lost meanwhile): the ledger holds instead.
      if (connection.rateLimit) {
        await this.limiter.holdConnection(connection.rateLimit, connection.name, until).catch((e: unknown) =>
          this.log.warn('could not record the hold anywhere; the lease covers the next 20 s', {
            connection: connection.name,
            error: errorName(e),
          }),
        );
      }
    }
  }

  /** Tries (at most once a second) to publish this container's pending token for the connection. */
  private async storePending(connection: Connection): Promise<void> {
    const p = this.pending.get(connection.name);
    const { clock, store } = this.deps;
    const now = clock.now();
    if (!p) return;
    if (p.token.expiresAt <= now) {
      this.pending.delete(connection.name);
      return;
    }
    if (now < p.retryAt) return;
    p.retryAt = now + PENDING_RETRY_MS;
    let lease: Lease | undefined;
    try {
      const acquired = await store.acquireLease(connection.name, this.deps.ids.next(), now, now + this.options.leaseMs);
      if (!acquired.lease) return;
      lease = acquired.lease;
      const current = await this.open(connection, acquired.item);
      if (current && current.expiresAt >= p.token.expiresAt) {
        this.pending.delete(connection.name);
        return;
      }
      const sealed = await this.deps.sealer.seal(connection.name, p.token);
      const t = p.token;
      const result = await store.publish(connection.name, lease, {
        sealed,
        expiresAt: t.expiresAt,
        issuedAt: t.issuedAt,
        fp: t.fp,
        reason: p.reason,
      });
      if (result === 'published') {
        lease = undefined;
        this.pending.delete(connection.name);
        this.memory.set(connection.name, { token: t, ver: acquired.item.ver + 1, readAt: clock.now(), aheadBlockedUntil: 0 });
      }
    } catch {
      // Still failing: it stays pending and served here.
    } finally {
      if (lease) await this.releaseQuietly(connection, lease);
    }
  }

  private pendingToken(connection: Connection): Token | undefined {
    const p = this.pending.get(connection.name);
    return p && p.token.expiresAt > this.deps.clock.now() ? p.token : undefined;
  }

  /** The better of the stored token and this container's pending one; a pending token the store outlives is dropped. */
  private withPending(connection: Connection, stored: Token | undefined): Token | undefined {
    const pending = this.pendingToken(connection);
    if (!pending) return stored;
    if (stored && stored.expiresAt >= pending.expiresAt) {
      this.pending.delete(connection.name);
      return stored;
    }
    return pending;
  }

  /**
   * Turns a failure while holding the lease into the caller's error, freeing the lease with what the fleet
   * must know: an open circuit, a backoff, or a demand backoff.
   */
  private async failed(ctx: RefreshContext, e: unknown, secret: SecretValue | undefined): Promise<BrokerError> {
    const { connection, lease, item } = ctx;
    const now = this.deps.clock.now();
    if (e instanceof Released) return e.error;
    if (e instanceof UpstreamError) {
      const f = e.failure;
      if (f.kind === 'oauth') {
        // A credential or configuration error that survived the secret re-read: the circuit opens.
        const circuit = openCircuit(
          item.circuit,
          { upstreamError: f.error, secretVersion: fingerprint(secret?.version ?? ''), configHash: connection.configHash },
          now,
        );
        await this.releaseQuietly(connection, lease, { circuit });
        this.log.warn('upstream refused the credentials; circuit open', {
          connection: connection.name,
          upstreamError: f.error,
          status: f.status,
          probeAt: new Date(circuit.probeAt).toISOString(),
        });
        return errorForFailure(f, 0);
      }
      const backoff = backoffFor(f, connection, now, item.backoff);
      // Shared ledger first, so no connection on the same key sends before the lease is free.
      if (f.kind === 'rate_limited' && connection.rateLimit) {
        await this.limiter
          .holdUntil(connection.rateLimit, backoff.until)
          .catch((err: unknown) =>
            this.log.warn('could not record upstream backoff in the ledger', { connection: connection.name, error: errorName(err) }),
          );
      }
      await this.releaseQuietly(connection, lease, this.withProbe(ctx, { backoff }, now));
      this.log.warn('upstream token request failed', {
        connection: connection.name,
        failure: f.kind,
        status: 'status' in f ? f.status : undefined,
      });
      return errorForFailure(f, backoff.until - now);
    }
    const err = this.brokerError(e);
    await this.releaseQuietly(connection, lease, this.withProbe(ctx, releaseNoteFor(err, e, connection, item, now), now));
    return err;
  }

  /** A probe that did not succeed, whatever the reason, reschedules the circuit's next probe. */
  private withProbe(ctx: RefreshContext, note: ReleaseNote | undefined, now: number): ReleaseNote | undefined {
    if (!ctx.probe || !ctx.item.circuit || note?.circuit) return note;
    return { ...note, circuit: probeFailed(ctx.item.circuit, ctx.connection.configHash, now) };
  }

  private async read(connection: Connection): Promise<TokenItem | undefined> {
    return this.storeCall(() => this.deps.store.get(connection.name));
  }

  /** Runs a store call; a store that is throttled or unavailable becomes 503 `unavailable` (with its cause). */
  private async storeCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      throw e instanceof DependencyUnavailable ? this.unavailableError(e) : e;
    }
  }

  /**
   * The caller's error for a failure, by its type (adapters type what may clear by itself): a dependency that
   * is unavailable is a 503 with Retry-After; anything untyped is a bug or a misconfiguration, a 500.
   */
  private brokerError(e: unknown): BrokerError {
    if (e instanceof BrokerError) return e;
    if (e instanceof DependencyUnavailable) return this.unavailableError(e);
    this.log.warn('unexpected failure', { error: errorName(e) });
    return new BrokerError('internal', 'internal error', {}, { cause: e });
  }

  private unavailableError(e: DependencyUnavailable): BrokerError {
    const kms = e instanceof SealerUnavailable;
    this.log.warn(kms ? 'key service unavailable' : e instanceof StoreThrottled ? 'token store throttled' : 'token store unavailable', {
      error: e.name,
      cause: errorName(e.cause),
    });
    return unavailable(kms ? 'key service unavailable' : 'token store unavailable', 1, e);
  }

  private async releaseQuietly(connection: Connection, lease: Lease, note?: ReleaseNote): Promise<void> {
    try {
      await this.deps.store.release(connection.name, lease, note);
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
    const gone = this.invalidatedHere.get(name);
    if (gone && (gone.fp !== item?.fp || gone.ver !== item.ver)) this.invalidatedHere.delete(name);
    const invalidated = item?.invalidated || (gone !== undefined && gone.fp === item?.fp && gone.ver === item.ver);
    if (!item?.sealed || invalidated || item.expiresAt === undefined) {
      if (this.memory.get(name)?.ver !== -1) this.memory.delete(name);
      return undefined;
    }
    const aheadBlocked = aheadBlockedUntil(item, now, connection.configHash);
    const mem = this.memory.get(name);
    if (mem && mem.ver === item.ver && mem.token.fp === item.fp) {
      this.memory.set(name, { ...mem, readAt: now, aheadBlockedUntil: aheadBlocked });
      return mem.token;
    }
    try {
      const token = await this.deps.sealer.open(name, item.sealed);
      if (token.expiresAt !== item.expiresAt || token.fp !== item.fp) throw new Error('sealed token does not match its item');
      // Reported here while KMS was opening it: it is not served (nor cached) by this container any more.
      const reported = this.invalidatedHere.get(name);
      if (reported?.fp === item.fp && reported.ver === item.ver) return undefined;
      this.memory.set(name, { token, ver: item.ver, readAt: now, aheadBlockedUntil: aheadBlocked });
      return token;
    } catch (e) {
      this.memory.delete(name);
      // KMS throttled or unreachable: the sealed token may be fine; answer 503 and leave it for the fleet.
      if (e instanceof DependencyUnavailable) throw this.unavailableError(e);
      // Tampered with, sealed for another connection or with another key: never serve it, and let a fresh
      // token replace it (publishing over a token that expires later needs it invalidated).
      // Replacing it costs a token request, so it goes through the budget guard like a caller's report: containers
      // that cannot open each other's tokens (a key change mid-deploy) must not spend the budget in turn.
      this.log.warn('cached token did not open; replacing it under the budget guard', {
        connection: name,
        fp: item.fp,
        error: errorName(e),
      });
      if (!item.fp) return undefined;
      const answer = await this.storeCall(() =>
        invalidateToken({ store: this.deps.store, limiter: this.limiter, now }, connection, item.fp!),
      );
      if (answer.invalidated || answer.reason === 'not_current') return undefined;
      throw unavailable('the cached token cannot be opened here and cannot be replaced yet', answer.retryAfterSeconds);
    }
  }
}

interface Fetched {
  token: Token;
  reason: RefreshReason;
  debit?: { remaining: number; at: number };
}

/** A debited request that was not sent (too slow or too late). If its slot was refunded, no backoff. */
class NotSent extends BrokerError {
  constructor(
    message: string,
    readonly refunded: boolean,
  ) {
    super('unavailable', `${message}; nothing was sent`, { retryAfterSeconds: 1 });
  }
}

/** A failure after which the lease was already freed with its note. */
class Released extends Error {
  constructor(readonly error: BrokerError) {
    super(error.message);
  }
}

/** What a holder leaves in the item when it gives up for `err`. */
function releaseNoteFor(
  err: BrokerError,
  original: unknown,
  connection: Connection,
  item: TokenItem,
  now: number,
): ReleaseNote | undefined {
  const until = now + (err.extra.retryAfterSeconds ?? 1) * 1000;
  switch (err.extra.refusal) {
    // The guard keeps the reserve or the spacing: only demand refreshes wait.
    case 'reserve':
    case 'spacing':
      return { demandBackoff: backoffNote(err, until) };
    // Nobody can send before then: let everyone read the answer from the item instead of the ledger.
    // A fetched token waits to be stored (held), or nobody can send before then: let everyone read the
    // answer from the item instead of the ledger.
    case 'held':
    case 'ledger_exhausted':
    case 'upstream_429':
      return { backoff: backoffNote(err, until) };
  }
  // A slot spent without a request (its refund failed): back off as after a failed attempt, so a slow ledger
  // cannot drain the budget one unsent debit after another.
  if (original instanceof NotSent) {
    if (original.refunded) return undefined;
    const b = backoffFor({ kind: 'unavailable', detail: 'unsent debit not refunded' }, connection, now, item.backoff);
    return { backoff: { ...backoffNote(err, b.until), ...(b.failures ? { failures: b.failures } : {}) } };
  }
  // A misconfigured secret (placeholder, missing fields): answered from the item until a holder re-reads it.
  if (err.code === 'internal') return { backoff: backoffNote(err, now + MISCONFIGURED_RECHECK_MS) };
  return undefined;
}

function holdMs(connection: Connection): number {
  return connection.rateLimit ? HOLD_RATE_LIMITED_MS : HOLD_UNLIMITED_MS;
}

function withSent(err: BrokerError, sent: RefreshReason[]): BrokerError {
  if (sent.length) (err.extra as { sent?: RefreshReason[] }).sent = [...sent];
  return err;
}

function errorName(e: unknown): string {
  return e instanceof Error ? e.name : typeof e;
}

async function withDeadline<T>(p: Promise<T>, deadline: number, clock: Clock, timers: Timers): Promise<T | undefined> {
  const wait = deadline - clock.now();
  if (wait <= 0) return undefined;
  const timeout = timers.timeout(wait);
  let onTimeout!: () => void;
  const timedOut = new Promise<undefined>((resolve) => {
    onTimeout = () => resolve(undefined);
    timeout.addEventListener('abort', onTimeout, { once: true });
  });
  try {
    return await Promise.race([p, timedOut]);
  } finally {
    timeout.removeEventListener('abort', onTimeout);
  }
}
