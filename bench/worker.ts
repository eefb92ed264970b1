/**
 * One benchmark worker process: a Lambda container's worth of broker (or, for comparison, of a
 * per-process token cache or of no cache). The runner forks it (bundled into bench/.work/worker.mjs),
 * sends a job, waits for `ready` from every worker, then sends `go` to all at once.
 */
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { HttpUpstream } from '../functions/adapters/upstream-http.js';
import { principalFromArn } from '../functions/core/authz.js';
import type { Connection } from '../functions/core/config.js';
import { fingerprint } from '../functions/core/fingerprint.js';
import { serves, tokenExpiry } from '../functions/core/freshness.js';
import type { Token } from '../functions/core/ports.js';
import {
  CALLER,
  CREDENTIALS,
  type Env,
  type FromWorker,
  type HotResult,
  type Job,
  type Load,
  type Probe,
  type StormMode,
  type StormRound,
  type Tally,
  type ToWorker,
  type WorkerResult,
  container,
  drive,
  getEvent,
  invalidateEvent,
  measure,
  outputBytes,
  tokenLog,
  tokenOutcome,
} from './lib.js';

const send = (m: FromWorker) => process.send!(m);

/** What an OAuth library inside each service does: cache in process memory, one fetch in flight. */
function processCache(connection: Connection, skewMs: number) {
  const upstream = new HttpUpstream();
  let token: Token | undefined;
  let inflight: Promise<Token> | undefined;
  const fetchToken = async (): Promise<Token> => {
    const sentAt = Date.now();
    const up = await upstream.requestToken(connection, CREDENTIALS, AbortSignal.timeout(6_000));
    const expiresAt = tokenExpiry(sentAt, up, connection.defaultTtlSeconds);
    return { accessToken: up.accessToken, tokenType: up.tokenType, expiresAt, issuedAt: sentAt, fp: fingerprint(up.accessToken) };
  };
  return {
    fetchToken,
    async get(minTtl: number): Promise<Token> {
      if (token && serves(token, Date.now(), minTtl * 1000, skewMs)) return token;
      inflight ??= fetchToken().finally(() => (inflight = undefined));
      return (token = await inflight);
    },
  };
}

function storm(env: Env, load: Load, mode: StormMode) {
  const c = container(env);
  const cache = processCache(c.config.connections.get('main')!, c.broker.options.skewMs);
  // Which tokens this process served, dated by their expiry: the runner counts token lifetimes by them.
  const served = tokenLog();
  const fresh = (t: Token) => {
    served.add(t.accessToken, t.expiresAt);
    return t.expiresAt - Date.now() >= load.minTtl * 1000 ? '200' : 'short';
  };
  const actions: Record<StormMode, () => Promise<string>> = {
    broker: async () => {
      const r = tokenOutcome(await c.handler(getEvent('main', load.minTtl)), load.minTtl);
      served.add(r.accessToken, r.expiresAt);
      return r.outcome;
    },
    'process-cache': async () => fresh(await cache.get(load.minTtl)),
    'no-cache': async () => fresh(await cache.fetchToken()),
  };
  return async (): Promise<Tally> => ({ ...(await drive(actions[mode], load)), tokens: served.tokens });
}

/**
 * Refresh storms, one per `storm` message: `requests` concurrent requests for a token that the runner has
 * invalidated. Reports when each was answered, the reads of the token item the process made, and, in the
 * process that refreshed, when its publish returned.
 */
async function waiters(env: Env, requests: number, minTtl: number, warm: string) {
  const c = container(env);
  // A warm container: its first refresh (which loads the upstream client and reads the secret) is behind it.
  const warmed = tokenOutcome(await c.handler(getEvent(warm, minTtl)), minTtl);
  if (warmed.outcome !== '200') throw new Error(`warm-up failed: ${warmed.outcome}`);
  let reads = 0;
  let readTimes: [number, number][] = [];
  c.client.middlewareStack.add(
    (next, ctx) => async (args) => {
      if (ctx.commandName !== 'GetItemCommand' || !(args.input as { Key?: { pk?: { S?: string } } }).Key?.pk?.S?.startsWith('tok#'))
        return next(args);
      reads++;
      const sent = Date.now();
      const out = await next(args);
      readTimes.push([sent, Date.now()]);
      return out;
    },
    { step: 'initialize' },
  );
  let publishedAt: number | undefined;
  const publish = c.store.publish.bind(c.store);
  c.store.publish = async (...args) => {
    const r = await publish(...args);
    if (r === 'published') publishedAt = Date.now();
    return r;
  };
  return async (): Promise<StormRound> => {
    reads = 0;
    readTimes = [];
    publishedAt = undefined;
    const outcomes: Record<string, number> = {};
    const startedAt = Date.now();
    const servedAt = await Promise.all(
      Array.from({ length: requests }, async () => {
        const { outcome } = tokenOutcome(await c.handler(getEvent('main', minTtl)), minTtl);
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
        return Date.now();
      }),
    );
    return { startedAt, servedAt, outcomes, reads, readTimes, ...(publishedAt !== undefined ? { publishedAt } : {}) };
  };
}

/**
 * Every call takes a token for one of the connections (which share one ledger key) and then reports it
 * invalid, so the next call on that connection must refresh: each refresh debits the shared ledger.
 */
function ledger(env: Env, load: Load) {
  const c = container(env);
  // Record each debit as the ledger does, to tell the protocol (debits) from delivery (upstream receipts). A
  // debit whose request was not sent is refunded: it leaves the ledger, and this record, again.
  const debits = new Map<string, number>();
  const write = c.store.write.bind(c.store);
  c.store.write = async (key, expectedVer, entries, attemptId, expiresAt) => {
    const result = await write(key, expectedVer, entries, attemptId, expiresAt);
    if (result === 'written') debits.set(attemptId, entries[attemptId]!);
    return result;
  };
  const refund = c.store.refund.bind(c.store);
  c.store.refund = async (key, attemptId) => {
    await refund(key, attemptId);
    debits.delete(attemptId);
  };
  const names = Object.keys(env.connections);
  let next = Math.floor(Math.random() * names.length);
  return async () => ({
    ...(await drive(async () => {
      const name = names[next++ % names.length]!;
      const { outcome, accessToken } = tokenOutcome(await c.handler(getEvent(name, load.minTtl)), load.minTtl);
      if (accessToken) await c.handler(invalidateEvent(name, accessToken));
      return outcome;
    }, load)),
    debits: [...debits.values()],
  });
}

/** Runs of each hot-path probe in the untimed pass that counts its DynamoDB calls and log bytes. */
const COUNTED_RUNS = 50;

/** Waits (untimed) until Date.now() moves on: with memoryMaxAgeMs 0 the broker still answers from memory within the millisecond of its last read. */
async function nextMillisecond(): Promise<void> {
  const t = Date.now();
  while (Date.now() === t) await yieldTurn();
}

/**
 * The hot path, one call at a time. `memoryHit` and `storeHit` are the handler as deployed (Powertools
 * logging and metrics to stdout); the other probes peel it layer by layer down to a bare GetItem.
 */
async function hot(env: Env, rounds: number, perRound: number, refreshes: number): Promise<() => Promise<HotResult>> {
  const deployedMemory = container(env);
  const deployedStore = container(env, { options: { memoryMaxAgeMs: 0 } });
  const quietMemory = container(env, { quiet: true });
  const quietStore = container(env, { options: { memoryMaxAgeMs: 0 }, quiet: true });
  const refresher = container(env, { options: { memoryMaxAgeMs: 0 } });
  const bare = container(env).client; // a client with the store's settings
  let dbCalls = 0;
  for (const c of [deployedMemory.client, deployedStore.client, quietMemory.client, quietStore.client, refresher.client, bare]) {
    c.middlewareStack.add(
      (next) => (args) => {
        dbCalls++;
        return next(args);
      },
      { step: 'initialize' },
    );
  }
  const minTtl = 60;
  const principal = principalFromArn(CALLER);
  const ok = async (p: Promise<{ statusCode: number }>) => {
    const res = await p;
    if (res.statusCode >= 300) throw new Error(`status ${res.statusCode}`);
  };
  // Publish the token once, and bring every container's memory up to date.
  for (const c of [deployedMemory, deployedStore, quietMemory, quietStore]) await ok(c.handler(getEvent('main', minTtl)));
  const sealed = (await quietStore.store.get('main'))!.sealed!;
  let current = tokenOutcome(await refresher.handler(getEvent('refresh', minTtl)), minTtl).accessToken!;

  const inMemory: Probe[] = [
    { name: 'memoryHit', run: () => ok(deployedMemory.handler(getEvent('main', minTtl))) },
    { name: 'memoryHitQuiet', run: () => ok(quietMemory.handler(getEvent('main', minTtl))) },
    { name: 'sealerOpen', run: () => quietStore.sealer.open('main', sealed) },
  ].map((p) => ({ ...p, perRound: perRound * 10 })); // microseconds each: take more samples
  const fromStore: Probe[] = [
    { name: 'storeHit', run: () => ok(deployedStore.handler(getEvent('main', minTtl))) },
    { name: 'storeHitQuiet', run: () => ok(quietStore.handler(getEvent('main', minTtl))) },
    { name: 'brokerGetToken', run: () => quietStore.broker.getToken({ connection: 'main', principal, minTtlSeconds: minTtl }) },
    { name: 'storeGet', run: () => quietStore.store.get('main') },
    {
      name: 'getItem',
      run: () => bare.send(new GetItemCommand({ TableName: env.table, Key: { pk: { S: 'tok#main' } }, ConsistentRead: true })),
    },
  ].map((p) => ({ ...p, prepare: nextMillisecond }));
  const refresh: Probe = {
    name: 'refresh',
    perRound: Math.ceil(refreshes / rounds),
    // Straight in the store: the budget guard would defer a report every round (one honoured per 10 s).
    prepare: async () => {
      await refresher.store.invalidate('refresh', fingerprint(current), Date.now());
      await nextMillisecond();
    },
    run: async () => {
      const r = tokenOutcome(await refresher.handler(getEvent('refresh', minTtl)), minTtl);
      if (!r.accessToken) throw new Error(`refresh failed: ${r.outcome}`);
      current = r.accessToken;
    },
  };
  // Count the DynamoDB calls (a store hit must make exactly one) and the log bytes of each probe in a pass of its
  // own, untimed: the byte counter wraps stdout's write and costs time per line, which the timed runs must not pay.
  const calls: Record<string, { db: number; bytes: number; lines: number; runs: number }> = {};
  const probes = [...inMemory, ...fromStore, refresh];
  return async () => {
    const written = outputBytes();
    try {
      for (const p of probes) {
        for (let i = 0; i < Math.min(p.perRound ?? perRound, COUNTED_RUNS); i++) {
          await p.prepare?.();
          const before = dbCalls;
          const outBefore = written.read();
          await p.run();
          const out = written.read();
          const c = (calls[p.name] ??= { db: 0, bytes: 0, lines: 0, runs: 0 });
          c.db += dbCalls - before;
          c.bytes += out.bytes - outBefore.bytes;
          c.lines += out.lines - outBefore.lines;
          c.runs++;
        }
      }
    } finally {
      written.restore();
    }
    const per = (f: (v: (typeof calls)[string]) => number) => Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, f(v) / v.runs]));
    return {
      latency: await measure(probes, rounds, perRound),
      dbCallsPerRun: per((v) => v.db),
      logBytesPerRun: per((v) => v.bytes),
      logLinesPerRun: per((v) => v.lines),
    };
  };
}

/** Prepares a job and returns the function that runs it once the runner says go. */
async function prepare(job: Exclude<Job, { kind: 'waiters' }>): Promise<() => Promise<WorkerResult>> {
  switch (job.kind) {
    case 'storm':
      return storm(job.env, job.load, job.mode);
    case 'ledger':
      return ledger(job.env, job.load);
    case 'hot':
      return hot(job.env, job.rounds, job.perRound, job.refreshes);
  }
}

const fail = (e: unknown) => send({ type: 'failed', error: String((e as Error)?.stack ?? e) });

/** A `waiters` job: one storm per `storm` message, until `stop`. */
async function serveStorms(job: Extract<Job, { kind: 'waiters' }>): Promise<void> {
  const round = await waiters(job.env, job.requests, job.minTtl, job.warm);
  const stalls = monitorEventLoopDelay({ resolution: 10 });
  stalls.enable();
  const started = performance.now();
  let rounds = 0;
  process.on('message', (m: ToWorker) => {
    if (m.type === 'storm') {
      rounds++;
      round().then((r) => send({ type: 'storm', round: r }), fail);
    } else if (m.type === 'stop') {
      stalls.disable();
      send({ type: 'result', result: { rounds }, maxStallMs: stalls.max / 1e6, runMs: performance.now() - started });
    }
  });
  send({ type: 'ready' });
}

process.once('message', (first: ToWorker) => {
  if (first.type !== 'job') return;
  if (first.job.kind === 'waiters') return void serveStorms(first.job).catch(fail);
  prepare(first.job).then((run) => {
    process.once('message', () => {
      // The longest the event loop was held up: a hint that the machine, not the code, was slow.
      const stalls = monitorEventLoopDelay({ resolution: 10 });
      stalls.enable();
      const started = performance.now();
      run().then((result) => {
        stalls.disable();
        send({ type: 'result', result, maxStallMs: stalls.max / 1e6, runMs: performance.now() - started });
      }, fail);
    });
    send({ type: 'ready' });
  }, fail);
});
