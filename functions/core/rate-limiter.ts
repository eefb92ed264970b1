/** The ledger protocol: read, decide (core/ledger.ts), conditional write, retry on a lost race. */
import type { Connection } from './config.js';
import { BrokerError, rateLimited } from './errors.js';
import { decideDebit, retryAfterSeconds } from './ledger.js';
import type { Clock, LedgerStore } from './ports.js';

type Limit = NonNullable<Connection['rateLimit']>;

export interface DebitResult {
  /** Slots left in the window after this debit. */
  remaining: number;
  /** When the attempt was debited (the time the ledger recorded). */
  at: number;
}

export class RateLimiter {
  constructor(
    private readonly store: LedgerStore,
    private readonly clock: Clock,
    private readonly marginMs: number,
    private readonly maxTries = 10,
  ) {}

  /** Debits one upstream attempt, or throws rate_limited. A refused debit never sends. */
  async debit(limit: Limit, attemptId: string): Promise<DebitResult> {
    for (let attempt = 0; attempt < this.maxTries; attempt++) {
      const state = await this.store.read(limit.key);
      const now = this.clock.now();
      const decision = decideDebit(state, now, limit, attemptId, this.marginMs);
      if (!decision.allow) {
        const message =
          decision.reason === 'upstream_backoff'
            ? 'upstream asked the broker to wait before requesting another token'
            : `token request limit reached (${limit.max} per ${limit.windowSeconds} s)`;
        throw rateLimited(message, retryAfterSeconds(decision.retryAfterMs));
      }
      const result = await this.store.write(limit.key, state.ver, decision.entries, attemptId, decision.expiresAt);
      if (result === 'written') return { remaining: limit.max - Object.keys(decision.entries).length, at: now };
      await this.clock.sleep(5 + Math.floor(Math.random() * 20 * (attempt + 1)));
    }
    throw new BrokerError('unavailable', 'rate-limit ledger is contended; try again', { retryAfterSeconds: 1 });
  }

  /** Records an upstream 429's Retry-After so that no container tries before then. */
  async holdUntil(limit: Limit, until: number): Promise<void> {
    await this.store.setBackoff(limit.key, until);
  }
}
