import { BrokerError } from '../../functions/core/errors.js';
import type { Clock } from '../../functions/core/ports.js';

/**
 * The one fake clock of the tests (the broker's Clock port, and the client's `now`/`sleep` options). `sleep`
 * advances time instead of waiting (after yielding to real I/O, so in-flight DynamoDB and HTTP calls make
 * progress). `now` and `sleep` are bound: pass them on alone (`{ now: clock.now, sleep: clock.sleep }`).
 * `skewed` lets one broker instance run ahead.
 */
export class FakeClock implements Clock {
  /** Every sleep asked for, in order (to assert on backoff delays without waiting). */
  readonly sleeps: number[] = [];
  constructor(public t = Date.UTC(2026, 10, 25, 12, 0, 0)) {}
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
  set(t: number): void {
    this.t = t;
  }
  readonly sleep = async (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    await new Promise((r) => setImmediate(r));
    this.t += Math.max(0, ms);
  };
  /** A view of this clock shifted by `offsetMs` (a container whose clock runs ahead or behind). */
  skewed(offsetMs: number): Clock {
    return { now: () => this.now() + offsetMs, sleep: (ms) => this.sleep(ms) };
  }
}

/** Real time, but sleeps are real too: for concurrency tests where real interleaving matters. */
export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** The BrokerError a promise rejects with; fails the test if it resolves or rejects with anything else. */
export async function brokerError(p: Promise<unknown>): Promise<BrokerError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BrokerError) return e;
    throw new Error(`expected a BrokerError, got ${String(e)}`);
  }
  throw new Error('expected a rejection with a BrokerError');
}
