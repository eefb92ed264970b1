/** The ledger protocol: read, decide (core/ledger.ts), conditional write, retry on a lost race. */
import { retryAfterSeconds } from '../contract/retry-after.js';
import { createHash } from 'node:crypto';
import type { RateLimit } from './config.js';
import { BrokerError, type Refusal, rateLimited } from './errors.js';
import { type LedgerRefusal, decideDebit, debitRefusal } from './ledger.js';
import type { Clock, LedgerState, LedgerStore } from './ports.js';

export interface DebitResult {
  /** Slots left in the window after this debit. */
  remaining: number;
  /** When the attempt was debited (the time the ledger recorded). */
  at: number;
}

const REFUSAL: Record<LedgerRefusal, Refusal> = {
  held: 'held',
  upstream_backoff: 'upstream_429',
  exhausted: 'ledger_exhausted',
  reserve: 'reserve',
  spacing: 'spacing',
};

/** The caller-facing error for a refused debit: the message says which rule refused. */
export function refusalError(reason: LedgerRefusal, retryAfterMs: number, limit: RateLimit): BrokerError {
  const retryAfter = retryAfterSeconds(retryAfterMs);
  const budget = `${limit.max} per ${limit.windowSeconds} s`;
  switch (reason) {
    case 'held':
      return new BrokerError('unavailable', 'a token fetched for this connection is waiting to be stored; try again later', {
        retryAfterSeconds: retryAfter,
        refusal: REFUSAL[reason],
      });
    case 'upstream_backoff':
      return rateLimited('upstream asked the broker to wait before requesting another token (upstream 429)', retryAfter, REFUSAL[reason]);
    case 'exhausted':
      return rateLimited(`token request limit reached: ledger exhausted (${budget})`, retryAfter, REFUSAL[reason]);
    case 'reserve':
      return rateLimited(
        `the last ${limit.reserve} token requests of the budget (${budget}) are kept for expiring tokens (reserve)`,
        retryAfter,
        REFUSAL[reason],
      );
    case 'spacing':
      return rateLimited(
        `token requests on demand are spaced at least ${Math.ceil(limit.minSpacingMs / 1000)} s apart (spacing; budget ${budget})`,
        retryAfter,
        REFUSAL[reason],
      );
  }
}

/**
 * A fraction in [0, 1) for the pause after a lost race, derived from the attempt's unique id: writers racing
 * on one ledger spread apart with no random source in the core.
 */
function jitter(attemptId: string, attempt: number): number {
  return createHash('sha256').update(`${attemptId}#${attempt}`).digest().readUInt32BE(0) / 2 ** 32;
}

export class RateLimiter {
  constructor(
    private readonly store: LedgerStore,
    private readonly clock: Clock,
    private readonly marginMs: number,
    private readonly maxTries = 10,
  ) {}

  /**
   * Debits one upstream attempt, or throws the refusal (rate_limited, or unavailable while a fetched token
   * waits to be stored). A refused debit never sends. `demand` applies the budget guard's reserve and spacing.
   */
  async debit(limit: RateLimit, attemptId: string, opts: { demand: boolean; connection: string }): Promise<DebitResult> {
    for (let attempt = 0; attempt < this.maxTries; attempt++) {
      const state = await this.store.read(limit.key);
      const now = this.clock.now();
      const decision = decideDebit(state, now, limit, attemptId, this.marginMs, opts);
      if (!decision.allow) throw refusalError(decision.reason, decision.retryAfterMs, limit);
      const result = await this.store.write(limit.key, state.ver, decision.entries, attemptId, decision.expiresAt);
      if (result === 'written') return { remaining: limit.max - Object.keys(decision.entries).length, at: now };
      await this.clock.sleep(5 + Math.floor(jitter(attemptId, attempt) * 20 * (attempt + 1)));
    }
    throw new BrokerError('unavailable', 'rate-limit ledger is contended; try again', { retryAfterSeconds: 1 });
  }

  /** The ledger as it stands, and whether a demand request (or an invalidation) could be made now. */
  async demandAllowed(limit: RateLimit, connection: string): Promise<{ state: LedgerState; refusal?: BrokerError }> {
    const state = await this.store.read(limit.key);
    const refused = debitRefusal(state, this.clock.now(), limit, this.marginMs, { demand: true, connection });
    return { state, ...(refused ? { refusal: refusalError(refused.reason, refused.retryAfterMs, limit) } : {}) };
  }

  /** Gives back a debited slot whose request was never sent. */
  async refund(limit: RateLimit, attemptId: string): Promise<void> {
    await this.store.refund(limit.key, attemptId);
  }

  /** Records an upstream 429's Retry-After so that no container tries before then. */
  async holdUntil(limit: RateLimit, until: number): Promise<void> {
    await this.store.setBackoff(limit.key, until);
  }

  /** No upstream request for `connection` before `until`: a token it fetched waits to be published. */
  async holdConnection(limit: RateLimit, connection: string, until: number): Promise<void> {
    await this.store.hold(limit.key, connection, until);
  }
}
