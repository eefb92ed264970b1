/**
 * Waiters of a refresh storm (docs/design.md "Performance goals": at most 5 store reads per waiting container, served
 * soon after the winner's publish). Several broker instances on one dynalite; time is a manual clock that
 * the test moves from one sleeper's wake-up to the next, so the reads are counted without timing anything:
 * the holder's refresh takes exactly as long (in the clock's time) as the test says.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { principalFromArn } from '../../functions/core/authz.js';
import type { Served, TokenBroker } from '../../functions/core/broker.js';
import type { Clock } from '../../functions/core/ports.js';
import { localDynamoClient } from '../../functions/local/dynamodb.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { issue } from '../../testkit/idp.js';

const principal = principalFromArn(CALLER);

/** A clock whose time moves only when the test says; sleepers wake when it passes their time. */
class ManualClock implements Clock {
  private timers: { at: number; wake: () => void }[] = [];
  constructor(private t: number) {}
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((wake) => this.timers.push({ at: this.t + ms, wake }));
  }
  get sleepers(): number {
    return this.timers.length;
  }
  nextWake(): number | undefined {
    return this.timers.length ? Math.min(...this.timers.map((x) => x.at)) : undefined;
  }
  /** Moves the time to `t` (never back) and wakes everyone due by then. */
  advanceTo(t: number): void {
    this.t = Math.max(this.t, t);
    const due = this.timers.filter((x) => x.at <= this.t);
    this.timers = this.timers.filter((x) => x.at > this.t);
    for (const x of due) x.wake();
  }
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!cond()) throw new Error(`timed out waiting until ${what}`);
}

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => world.close());

/** Counts the consistent reads (GetItem) each instance makes. */
function counted(): { reads: number; onClient: (c: DynamoDBClient) => void } {
  const counter = {
    reads: 0,
    onClient: (c: DynamoDBClient) =>
      c.middlewareStack.add(
        (next, ctx) => (args) => {
          if (ctx.commandName === 'GetItemCommand') counter.reads++;
          return next(args);
        },
        { step: 'initialize' },
      ),
  };
  return counter;
}

interface Fleet {
  clock: ManualClock;
  brokers: TokenBroker[];
  counters: { reads: number }[];
  store: DynamoTokenStore;
}

/** `returnsItem`: a failed lease write brings the item back, as DynamoDB's does (dynalite's does not). */
function fleet(connection: string, size: number, o: { returnsItem?: boolean } = {}): Fleet {
  const clock = new ManualClock(Date.now());
  const config = connections(world.idp, { [connection]: {} });
  const counters = Array.from({ length: size }, counted);
  const store = new DynamoTokenStore(localDynamoClient(world.dynamo.endpoint), world.table);
  // memoryMaxAgeMs 0: every request reads the store, as a container whose memory is stale does.
  const brokers = counters.map((c) => {
    const { broker } = instance(world, { clock, config, options: { memoryMaxAgeMs: 0 }, onClient: c.onClient });
    if (o.returnsItem) {
      const own = (broker as unknown as { deps: { store: DynamoTokenStore } }).deps.store;
      const acquire = own.acquireLease.bind(own);
      own.acquireLease = async (...args) => {
        const r = await acquire(...args);
        return r.lease ? r : { item: (await store.get(args[0]))! }; // not counted: it comes with the failure
      };
    }
    return broker;
  });
  return { clock, brokers, counters, store };
}

/**
 * One storm: every instance asks at once for a token that must be refreshed; the upstream answers the
 * holder `refreshMs` (clock time) after the storm began. Returns what each served and its reads.
 */
async function storm(f: Fleet, connection: string, refreshMs: number): Promise<{ served: Served[]; reads: number[]; holder: number }> {
  let answer!: () => void;
  const gate = new Promise<void>((r) => (answer = r));
  const respond = issue(300);
  world.idp.respond = async (receipt, i) => {
    await gate;
    return respond(receipt, i);
  };
  const before = world.idp.count();
  const readsBefore = f.counters.map((c) => c.reads);
  const start = f.clock.now();
  const settled = new Set<number>();
  const calls = f.brokers.map((b, i) => b.getToken({ connection, principal, minTtlSeconds: 60 }).finally(() => settled.add(i)));
  const waiting = () => f.brokers.length - 1 - [...settled].filter((i) => i !== holderOf()).length;
  let holder = -1;
  const holderOf = () => holder;
  // The holder's token request is at the upstream; everyone else sleeps.
  await until(() => world.idp.count() === before + 1 && f.clock.sleepers === f.brokers.length - 1, 'the holder asked and the others sleep');
  // Time passes until the upstream answers: waiters wake, read and sleep again as they will.
  const runTo = async (t: number) => {
    for (;;) {
      await until(() => f.clock.sleepers === waiting(), 'every waiter sleeps');
      const next = f.clock.nextWake();
      if (next === undefined || next > t) break;
      f.clock.advanceTo(next);
    }
    f.clock.advanceTo(t);
  };
  await runTo(start + refreshMs);
  answer();
  await until(() => settled.size === 1, 'the holder published');
  holder = [...settled][0]!;
  // Then until every waiter has read the published token.
  while (settled.size < f.brokers.length) {
    await until(() => settled.size === f.brokers.length || f.clock.sleepers === waiting(), 'every waiter sleeps or is served');
    const next = f.clock.nextWake();
    if (next !== undefined) f.clock.advanceTo(next);
  }
  const served = await Promise.all(calls);
  return { served, reads: f.counters.map((c, i) => c.reads - readsBefore[i]!), holder };
}

describe('waiters of a refresh storm', () => {
  it.each([
    ['a store that returns no item with a failed write (dynalite)', 'storm', false],
    ['a store that returns the item with a failed write (DynamoDB)', 'storm-all-old', true],
  ])('%s: each waiting instance reads at most 5 times, on time or 60 ms late', async (_label, connection, returnsItem) => {
    const f = fleet(connection, 4, { returnsItem });
    // The connection's first storm: no refresh recorded yet, so the waiters poll from the lease on.
    const first = await storm(f, connection, 500);
    expect(new Set(first.served.map((s) => s.token.accessToken)).size).toBe(1);
    expect((await f.store.get(connection))?.refreshMs).toBe(500);

    // Each publish records the length waiters expect next: 500, then 500, 530 (half way up), 500 (down at once).
    for (const [refreshMs, late, recorded] of [
      [500, 0, 500],
      [560, 60, 530],
      [500, -30, 500],
    ] as const) {
      await f.store.invalidate(connection, (await f.store.get(connection))!.fp!, f.clock.now());
      const before = world.idp.count();
      const { served, reads, holder } = await storm(f, connection, refreshMs);
      expect(world.idp.count(), `one upstream request (late ${late} ms)`).toBe(before + 1);
      expect(new Set(served.map((s) => s.token.accessToken)).size).toBe(1);
      expect(served[holder]!.outcome).toBe('refreshed');
      const waiters = reads.filter((_, i) => i !== holder);
      for (const r of waiters) expect(r, `reads of a waiting instance (late ${late} ms): ${reads.join(', ')}`).toBeLessThanOrEqual(5);
      // On time: the read before the lease attempt and one when the refresh is due.
      if (late <= 0) expect(waiters).toEqual(waiters.map(() => 2));
      expect((await f.store.get(connection))?.refreshMs).toBe(recorded);
    }
  });
});
