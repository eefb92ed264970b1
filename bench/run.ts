/**
 * `npm run bench`: the goals of docs/design.md "Performance goals", measured. Prints a table, writes
 * bench/results.json and bench/RESULTS.md. `npm run bench -- --quick` is a smoke run (shorter, fewer samples).
 *
 * The runner starts one DynamoDB-API server (dynalite) and, per scenario, a counting fake upstream token
 * endpoint; worker processes (bench/worker.ts, bundled into bench/.work/) each stand for a Lambda container.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BrokerOptions } from '../functions/core/broker.js';
import type { ConnectionInput } from '../functions/core/config.js';
import { ledgerMarginMs } from '../functions/core/ledger.js';
import { DynamoTokenStore } from '../functions/adapters/dynamodb-store.js';
import { ensureTable, localDynamoClient, startDynalite, type EmbeddedDynamo } from '../functions/local/dynamodb.js';
import { type Answer, type Responder, issue, startIdp } from '../testkit/idp.js';
import { bundle, measureColdStart } from './cold-start.js';
import {
  type Done,
  type Env,
  type FromWorker,
  type HotResult,
  type Job,
  type Load,
  type StormMode,
  type StormRound,
  type Tally,
  type ToWorker,
  type WorkerResult,
  connectionDoc,
  mergeTallies,
  ascending,
  percentile,
} from './lib.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);
const WORK = join(BENCH, '.work');
const quick = process.argv.includes('--quick'); // a smoke run: shorter scenarios, fewer samples
/** `--waiters-only`: runs the refresh storms alone and prints their figures (writes no results). */
const waitersOnly = process.argv.includes('--waiters-only');
const hotOnly = process.argv.includes('--hot-only'); // the hot path alone, printed; no file written

const PROCESSES = 8;
/** Fleet storm: 5 s tokens; served while at least min_ttl 1 s + skew 0.5 s is left. */
const STORM = { expiresIn: 5, minTtl: 1, skewMs: 500, memoryMaxAgeMs: 1_000, concurrency: 16, thinkMs: 10 };
/** Ledger: 10 upstream requests per 3 s window, shared by 4 connections, over 4 windows. */
// One machine, one clock: no skew between the processes; loopback connects in well under 100 ms.
const LEDGER_MARGIN = { sendCutoffMs: 150, connectTimeoutMs: 100, clockSkewMs: 0 };
const LEDGER = {
  max: 10,
  windowSeconds: 3,
  connections: 4,
  windows: quick ? 2 : 4,
  marginMs: ledgerMarginMs(LEDGER_MARGIN),
  concurrency: 4,
  thinkMs: 5,
};
const HOT = { rounds: quick ? 3 : 10, perRound: quick ? 50 : 150, refreshes: quick ? 60 : 300 };
/**
 * Refresh storms: 4 processes x 50 concurrent requests for a token the runner invalidated, upstream 500 ms.
 * The first storm (the connection's first refresh: nothing recorded for the waiters yet) is not measured.
 */
const WAITERS = {
  processes: 4,
  requests: 50,
  upstreamDelayMs: 500,
  storms: quick ? 3 : 11,
  unmeasured: 1,
  memoryMaxAgeMs: 1_000,
  minTtl: 60,
};
const COLD_RUNS = quick ? 3 : 61;
const GOALS = { perLifetime: 1, storeHitRatio: 1.3, coldRatio: 1.2, violations: 0, waiterP50Ms: 50, waiterP99Ms: 100, readsPerWaiter: 5 };

// ---------------------------------------------------------------- workers

function nextMessage(child: ChildProcess, timeoutMs: number): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    const done = (error: Error | undefined, m?: FromWorker) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve(m!);
    };
    const onMessage = (m: FromWorker) => done(m.type === 'failed' ? new Error(`worker failed: ${m.error}`) : undefined, m);
    const onExit = (code: number | null) => done(new Error(`worker exited with ${code}`));
    const timer = setTimeout(() => done(new Error('worker timed out')), timeoutMs);
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

/** Forks `count` workers, gives each the job, starts them together once all are ready, returns their results. */
async function runWorkers<R extends WorkerResult>(count: number, job: Job, runMs: number): Promise<Done<R>[]> {
  const send = (c: ChildProcess, m: ToWorker) => c.send(m);
  // Worker stdout (Powertools log lines and metrics) goes to /dev/null.
  const children = Array.from({ length: count }, () =>
    fork(join(WORK, 'worker.mjs'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }),
  );
  try {
    const ready = children.map((c) => nextMessage(c, 60_000));
    children.forEach((c) => send(c, { type: 'job', job }));
    await Promise.all(ready);
    const results = children.map((c) => nextMessage(c, runMs + 60_000));
    children.forEach((c) => send(c, { type: 'go' }));
    return (await Promise.all(results)) as Done<R>[];
  } finally {
    for (const c of children) c.kill();
  }
}

// ---------------------------------------------------------------- scenarios

let tables = 0;
async function freshEnv(
  dynamo: EmbeddedDynamo,
  connections: Record<string, ConnectionInput>,
  options: Partial<BrokerOptions>,
): Promise<Env> {
  const table = `bench-${process.pid}-${++tables}`;
  const admin = localDynamoClient(dynamo.endpoint);
  await ensureTable(admin, table);
  admin.destroy();
  return { endpoint: dynamo.endpoint, table, sealKeyHex: randomBytes(32).toString('hex'), connections, options };
}

/**
 * Token lifetimes: a lifetime starts with a token requested at least 0.9 lifetime after the one that started
 * the previous lifetime (10% slack for request latency jitter). A second token within one lifetime is a
 * duplicate: the broker's goal is one per lifetime. Each token is dated by when the broker requested it (its
 * expiry as served, less expires_in), not by when the request reached the upstream: a request held up by a
 * stalled worker arrives late but starts its token's life when it was sent. Tokens nobody was served are
 * dated by their arrival.
 */
function lifetimesOf(times: number[], usableMs: number): number {
  let lifetimes = 0;
  let start = -Infinity;
  for (const t of ascending(times)) {
    if (t - start >= 0.9 * usableMs) {
      lifetimes++;
      start = t;
    }
  }
  return lifetimes;
}

/** The most receipts inside any window [t, t + windowMs), and how many receipts open a window holding more than `max`. */
function windowCounts(times: number[], windowMs: number, max: number): { maxInWindow: number; violations: number } {
  const t = ascending(times);
  let maxInWindow = 0;
  let violations = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (j < t.length && t[j]! < t[i]! + windowMs) j++;
    maxInWindow = Math.max(maxInWindow, j - i);
    if (j - i > max) violations++;
  }
  return { maxInWindow, violations };
}

const errorsOf = (t: Tally) => t.calls - (t.outcomes['200'] ?? 0);
const maxStall = (done: Done[]) => Math.max(...done.map((d) => d.maxStallMs));

interface StormVariant {
  name: string;
  mode: StormMode;
  refreshBeforeSeconds?: number;
}

async function fleetStorm(dynamo: EmbeddedDynamo) {
  const variants: StormVariant[] = [
    { name: 'broker, inline refresh', mode: 'broker', refreshBeforeSeconds: 0 },
    { name: 'broker, refresh-ahead 2 s', mode: 'broker', refreshBeforeSeconds: 2 },
    { name: 'per-process cache', mode: 'process-cache' },
    { name: 'no cache', mode: 'no-cache' },
  ];
  const rows = [];
  for (const v of variants) {
    // How long one token serves before it must be replaced (refresh-ahead replaces it earlier).
    const usableMs = STORM.expiresIn * 1000 - Math.max(STORM.minTtl, v.refreshBeforeSeconds ?? 0) * 1000 - STORM.skewMs;
    // At least three expires_in periods, ending mid-lifetime so that no lifetime is cut short by the end.
    const durationMs = ((quick ? 1 : Math.ceil((3 * STORM.expiresIn * 1000) / usableMs)) + 0.5) * usableMs;
    // The token each upstream request was answered with, by receipt.
    const issued: string[] = [];
    const respond = issue(STORM.expiresIn);
    const idp = await startIdp((receipt, i) => {
      const a = respond(receipt, i) as Answer;
      issued[i] = (a.body as { access_token: string }).access_token;
      return a;
    });
    try {
      const refreshBefore = v.refreshBeforeSeconds !== undefined ? { refreshBeforeSeconds: v.refreshBeforeSeconds } : {};
      const env = await freshEnv(
        dynamo,
        { main: connectionDoc(idp.url, refreshBefore) },
        { skewMs: STORM.skewMs, memoryMaxAgeMs: STORM.memoryMaxAgeMs },
      );
      const load: Load = { concurrency: STORM.concurrency, durationMs, thinkMs: STORM.thinkMs, minTtl: STORM.minTtl };
      const done = await runWorkers<Tally>(PROCESSES, { kind: 'storm', env, load, mode: v.mode }, durationMs);
      const tally = mergeTallies(done.map((d) => d.result));
      const times = idp.receipts.map((r) => r.at);
      const tokens = tally.tokens ?? {};
      const requestedAt = idp.receipts.map((r, i) => {
        const expiresAt = tokens[issued[i]!];
        return expiresAt !== undefined ? Math.min(r.at, expiresAt - STORM.expiresIn * 1000) : r.at;
      });
      const lifetimes = lifetimesOf(requestedAt, usableMs);
      rows.push({
        variant: v.name,
        processes: PROCESSES,
        durationS: durationMs / 1000,
        usableLifetimeS: usableMs / 1000,
        calls: tally.calls,
        callsPerS: Math.round(tally.calls / (durationMs / 1000)),
        notServed: errorsOf(tally),
        outcomes: tally.outcomes,
        upstreamRequests: times.length,
        tokenLifetimes: lifetimes,
        perLifetime: times.length / lifetimes,
        // The rule as it was (lifetimes by arrival at the upstream): a stalled worker's late request reads as a duplicate.
        tokenLifetimesByArrival: lifetimesOf(times, usableMs),
        // How late requests reached the upstream after the broker sent them (a stall between the two).
        // A loop, not Math.max(...): the no-cache variant sends tens of thousands of requests (call stack).
        maxArrivalDelayMs: requestedAt.reduce((max, t, i) => Math.max(max, times[i]! - t), 0),
        upstreamAtMs: times.length <= 100 ? times.map((t) => t - times[0]!) : undefined,
        maxStallMs: maxStall(done),
      });
    } finally {
      await idp.close();
    }
  }
  return rows;
}

/**
 * Refresh storms across processes: each storm, every process sends `requests` concurrent requests for a
 * token the runner just invalidated (after memoryMaxAgeMs, so no process answers from memory). One process
 * refreshes; the others wait. Waiter overhead: from the winner's publish to each waiting request's answer
 * (one machine, one clock). Reads: GetItem calls of the token item per waiting process and storm.
 */
async function refreshStorm(dynamo: EmbeddedDynamo) {
  const respond = issue(3600);
  const idp = await startIdp(((receipt, i) => ({ ...(respond(receipt, i) as Answer), delayMs: WAITERS.upstreamDelayMs })) as Responder);
  const children: ChildProcess[] = [];
  try {
    const warm = Array.from({ length: WAITERS.processes }, (_, i) => `warm-${i}`);
    const connections = Object.fromEntries(['main', ...warm].map((name) => [name, connectionDoc(idp.url)]));
    const env = await freshEnv(dynamo, connections, { memoryMaxAgeMs: WAITERS.memoryMaxAgeMs });
    const store = new DynamoTokenStore(localDynamoClient(dynamo.endpoint), env.table);
    for (let i = 0; i < WAITERS.processes; i++)
      children.push(fork(join(WORK, 'worker.mjs'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
    const ready = children.map((c) => nextMessage(c, 60_000));
    children.forEach((c, i) =>
      c.send({
        type: 'job',
        job: { kind: 'waiters', env, requests: WAITERS.requests, minTtl: WAITERS.minTtl, warm: warm[i]! },
      } satisfies ToWorker),
    );
    await Promise.all(ready);
    const storms: { upstream: number; rounds: StormRound[] }[] = [];
    for (let s = 0; s < WAITERS.storms; s++) {
      const item = await store.get('main');
      if (item?.fp) await store.invalidate('main', item.fp, Date.now());
      await new Promise((r) => setTimeout(r, WAITERS.memoryMaxAgeMs + 200));
      const before = idp.count();
      const answers = children.map((c) => nextMessage(c, 60_000));
      children.forEach((c) => c.send({ type: 'storm' } satisfies ToWorker));
      const rounds = (await Promise.all(answers)).map((m) => (m as { round: StormRound }).round);
      storms.push({ upstream: idp.count() - before, rounds });
    }
    const done = await Promise.all(
      children.map((c) => {
        const m = nextMessage(c, 60_000);
        c.send({ type: 'stop' } satisfies ToWorker);
        return m;
      }),
    );
    const measured = storms.slice(WAITERS.unmeasured);
    const overheads: number[] = [];
    const reads: number[] = [];
    const outcomes: Record<string, number> = {};
    // A process whose requests started after the publish (held up by the machine) waited for nobody.
    let lateStarters = 0;
    for (const { rounds } of measured) {
      const publishedAt = rounds.find((r) => r.publishedAt !== undefined)?.publishedAt;
      for (const r of rounds) {
        for (const [k, v] of Object.entries(r.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v;
        if (r.publishedAt !== undefined || publishedAt === undefined) continue;
        if (r.startedAt >= publishedAt) {
          lateStarters++;
          continue;
        }
        reads.push(r.reads);
        for (const t of r.servedAt) overheads.push(t - publishedAt);
      }
    }
    const sorted = ascending(overheads);
    const refreshMs = (await store.get('main'))?.refreshMs;
    return {
      processes: WAITERS.processes,
      requestsPerProcess: WAITERS.requests,
      upstreamDelayMs: WAITERS.upstreamDelayMs,
      storms: measured.length,
      unmeasuredStorms: WAITERS.unmeasured,
      upstreamRequestsPerStorm: measured.map((s) => s.upstream),
      outcomes,
      waitingRequests: overheads.length,
      lateStarters,
      overheadMs: {
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        max: sorted[sorted.length - 1] ?? NaN,
        min: sorted[0] ?? NaN,
      },
      readsPerWaitingContainer: { max: Math.max(...reads), mean: reads.reduce((a, b) => a + b, 0) / reads.length, all: reads },
      // The unmeasured first storm: no refresh recorded yet, so its waiters polled from the lease time on.
      firstStormReads: storms[0]!.rounds.filter((r) => r.publishedAt === undefined).map((r) => r.reads),
      // Each measured storm, each process: reads, and its first and last answer after the publish (ms).
      perStorm: measured.map(({ rounds }) => {
        const publishedAt = rounds.find((r) => r.publishedAt !== undefined)?.publishedAt ?? NaN;
        return rounds.map((r) => ({
          refreshed: r.publishedAt !== undefined,
          startMs: r.startedAt - publishedAt,
          reads: r.reads,
          readsMs: r.readTimes.map(([a, b]) => `${a - publishedAt}+${b - a}`).join(' '),
          firstMs: Math.min(...r.servedAt) - publishedAt,
          lastMs: Math.max(...r.servedAt) - publishedAt,
        }));
      }),
      lastRefreshMs: refreshMs,
      maxStallMs: maxStall(done as Done[]),
    };
  } finally {
    for (const c of children) c.kill();
    await idp.close();
  }
}

async function hotPath(dynamo: EmbeddedDynamo) {
  const idp = await startIdp(issue(3600));
  try {
    const env = await freshEnv(dynamo, { main: connectionDoc(idp.url), refresh: connectionDoc(idp.url) }, {});
    const [done] = await runWorkers<HotResult>(1, { kind: 'hot', env, ...HOT }, 5 * 60_000);
    const l = done!.result.latency;
    return {
      ...done!.result,
      maxStallMs: done!.maxStallMs,
      storeHitOverGetItem: l.storeHit!.p50Ms / l.getItem!.p50Ms,
      storeHitOverGetItemP99: l.storeHit!.p99Ms / l.getItem!.p99Ms,
      /** What the broker adds to the read, in µs at p50: the ratio falls as the machine serves dynalite slower, this does not. */
      storeHitAddedUs: (l.storeHit!.p50Ms - l.getItem!.p50Ms) * 1000,
      memoryHitP50Us: l.memoryHit!.p50Ms * 1000,
      logBytesPerRequest: done!.result.logBytesPerRun.memoryHit!,
      logLinesPerRequest: done!.result.logLinesPerRun.memoryHit!,
    };
  } finally {
    await idp.close();
  }
}

async function ledgerContention(dynamo: EmbeddedDynamo) {
  const idp = await startIdp(issue(300));
  try {
    // The guard's reserve and spacing off: this measures the ledger itself under contention.
    const rateLimit = { max: LEDGER.max, windowSeconds: LEDGER.windowSeconds, key: 'shared', reserve: 0, minSpacingSeconds: 0 };
    const connections = Object.fromEntries(
      Array.from({ length: LEDGER.connections }, (_, i) => [`l${i}`, connectionDoc(idp.url, { rateLimit })]),
    );
    const env = await freshEnv(dynamo, connections, { margin: LEDGER_MARGIN });
    const durationMs = LEDGER.windows * LEDGER.windowSeconds * 1000;
    const load: Load = { concurrency: LEDGER.concurrency, durationMs, thinkMs: LEDGER.thinkMs, minTtl: 1 };
    const done = await runWorkers<Tally>(PROCESSES, { kind: 'ledger', env, load }, durationMs);
    const tally = mergeTallies(done.map((d) => d.result));
    const times = idp.receipts.map((r) => r.at);
    const debits = tally.debits!;
    const windowMs = LEDGER.windowSeconds * 1000;
    const widenedMs = windowMs + LEDGER.marginMs;
    const { maxInWindow, violations } = windowCounts(times, windowMs, LEDGER.max);
    return {
      processes: PROCESSES,
      connections: LEDGER.connections,
      limit: `${LEDGER.max} per ${LEDGER.windowSeconds} s`,
      durationS: durationMs / 1000,
      calls: tally.calls,
      outcomes: tally.outcomes,
      upstreamRequests: times.length,
      debits: debits.length,
      debitsPerS: debits.length / (durationMs / 1000),
      // The most the ledger may allow from the first debit to the last: max per widened window.
      mostAllowed: LEDGER.max * (Math.floor((Math.max(...debits) - Math.min(...debits)) / widenedMs) + 1),
      maxInWindow,
      violations,
      // The ledger's own promise, on its own clock: at most max in any widened window.
      debitViolations: windowCounts(debits, widenedMs, LEDGER.max).violations,
      maxStallMs: maxStall(done),
    };
  } finally {
    await idp.close();
  }
}

async function coldStart() {
  // Like for like: the Lambda exactly as @token-broker/cdk ships it, and a bare handler built the same way
  // (bench/cold-start.ts); the breakdown of where the time goes only when the goal is missed.
  return measureColdStart(WORK, COLD_RUNS, { breakdown: 'if-missed', goal: GOALS.coldRatio });
}

// ---------------------------------------------------------------- report

const fmt = (v: number, digits = 2) => v.toFixed(digits);
const kb = (bytes: number) => `${fmt(bytes / 1024, 0)} KB`;
const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');

function table(headers: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

function outcomesText(outcomes: Record<string, number>): string {
  return (
    Object.entries(outcomes)
      .filter(([k]) => k !== '200')
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ') || '-'
  );
}

type Results = {
  fleet: Awaited<ReturnType<typeof fleetStorm>>;
  waiters: Awaited<ReturnType<typeof refreshStorm>>;
  hot: Awaited<ReturnType<typeof hotPath>>;
  ledger: Awaited<ReturnType<typeof ledgerContention>>;
  cold: Awaited<ReturnType<typeof coldStart>>;
};

/** The headline figures, by name, for scripts (top of bench/results.json). */
function figures(r: Results) {
  return {
    coldStart: {
      ratio: r.cold.ratio,
      ratioInterval: r.cold.ratioInterval,
      ratioOfMedians: r.cold.ratioOfMedians,
      brokerMs: r.cold.handler.initMsMedian,
      bareMs: r.cold.bare.initMsMedian,
    },
    storm: {
      upstreamPerLifetime: Math.max(...r.fleet.filter((f) => f.variant.startsWith('broker')).map((f) => f.perLifetime)),
      waiterOverheadMs: { p50: r.waiters.overheadMs.p50, p99: r.waiters.overheadMs.p99 },
      readsPerWaitingContainer: r.waiters.readsPerWaitingContainer.max,
    },
    hotPath: { memoryHitUs: r.hot.memoryHitP50Us, storeHitRatio: r.hot.storeHitOverGetItem },
    logBytesPerRequest: r.hot.logBytesPerRequest,
    ledgerViolations: r.ledger.violations + r.ledger.debitViolations,
  };
}

/** What each figure must be (docs/design.md "Performance goals"). */
const TARGETS = {
  'coldStart.ratio': `<= ${GOALS.coldRatio}`,
  'storm.upstreamPerLifetime': `= ${GOALS.perLifetime.toFixed(2)}`,
  'storm.waiterOverheadMs.p50': `<= ${GOALS.waiterP50Ms}`,
  'storm.waiterOverheadMs.p99': `<= ${GOALS.waiterP99Ms}`,
  'storm.readsPerWaitingContainer': `<= ${GOALS.readsPerWaiter}`,
  'hotPath.memoryHitUs': 'microseconds',
  'hotPath.storeHitRatio': `<= ${GOALS.storeHitRatio}`,
  logBytesPerRequest: 'one line per request',
  ledgerViolations: `${GOALS.violations}`,
};

function summary(f: ReturnType<typeof figures>, r: Results): string {
  const met = (ok: boolean) => (ok ? 'met' : '**missed**');
  return table(
    ['figure', 'target', 'latest run', ''],
    [
      [
        '`storm.upstreamPerLifetime`',
        TARGETS['storm.upstreamPerLifetime'],
        fmt(f.storm.upstreamPerLifetime),
        met(f.storm.upstreamPerLifetime === GOALS.perLifetime),
      ],
      [
        '`storm.waiterOverheadMs.p50`',
        TARGETS['storm.waiterOverheadMs.p50'],
        fmt(f.storm.waiterOverheadMs.p50, 0),
        met(f.storm.waiterOverheadMs.p50 <= GOALS.waiterP50Ms),
      ],
      [
        '`storm.waiterOverheadMs.p99`',
        TARGETS['storm.waiterOverheadMs.p99'],
        fmt(f.storm.waiterOverheadMs.p99, 0),
        met(f.storm.waiterOverheadMs.p99 <= GOALS.waiterP99Ms),
      ],
      [
        '`storm.readsPerWaitingContainer`',
        TARGETS['storm.readsPerWaitingContainer'],
        `${f.storm.readsPerWaitingContainer} (mean ${fmt(r.waiters.readsPerWaitingContainer.mean, 1)})`,
        met(f.storm.readsPerWaitingContainer <= GOALS.readsPerWaiter),
      ],
      [
        '`hotPath.storeHitRatio`',
        TARGETS['hotPath.storeHitRatio'],
        fmt(f.hotPath.storeHitRatio),
        met(f.hotPath.storeHitRatio <= GOALS.storeHitRatio),
      ],
      ['`hotPath.memoryHitUs`', TARGETS['hotPath.memoryHitUs'], fmt(f.hotPath.memoryHitUs, 1), met(f.hotPath.memoryHitUs < 1000)],
      [
        '`logBytesPerRequest`',
        TARGETS.logBytesPerRequest,
        `${fmt(f.logBytesPerRequest, 0)} (${fmt(r.hot.logLinesPerRequest, 2)} lines)`,
        met(r.hot.logLinesPerRequest === 1),
      ],
      [
        '`coldStart.ratio`',
        TARGETS['coldStart.ratio'],
        `${fmt(f.coldStart.ratio)} (${fmt(f.coldStart.brokerMs, 1)} / ${fmt(f.coldStart.bareMs, 1)} ms; 95% interval ${f.coldStart.ratioInterval.map((v) => fmt(v)).join(' to ')})`,
        met(f.coldStart.ratio <= GOALS.coldRatio),
      ],
      ['ledger violations', TARGETS.ledgerViolations, `${f.ledgerViolations}`, met(f.ledgerViolations === GOALS.violations)],
    ],
  );
}

function markdown(
  r: Results,
  meta: { date: string; node: string; cores: number; cpu: string; loadAverage: { before: number[]; after: number[] } },
): string {
  const hot = r.hot.latency;
  const lat = (name: string, what: string) => [
    what,
    fmt(hot[name]!.p50Ms, 3),
    fmt(hot[name]!.p99Ms, 3),
    hot[name]!.n,
    fmt(r.hot.dbCallsPerRun[name] ?? 0),
  ];
  const brokerRows = r.fleet.filter((f) => f.variant.startsWith('broker'));
  const stall = Math.max(r.hot.maxStallMs, r.ledger.maxStallMs, r.waiters.maxStallMs, ...r.fleet.map((f) => f.maxStallMs));
  const w = r.waiters;
  const breakdown = r.cold.breakdown;
  return [
    `# Benchmark results`,
    ``,
    `${meta.date}, Node ${meta.node}, ${meta.cores} cores (${meta.cpu}); load average ${fmt(meta.loadAverage.before[0]!)} before, ${fmt(meta.loadAverage.after[0]!)} after. ` +
      `Generated by \`npm run bench\`${quick ? ' --quick (a smoke run: not representative)' : ''}.`,
    ...(stall > 1000
      ? [
          '',
          `Note: a worker's event loop stalled for up to ${fmt(stall, 0)} ms (max stall columns): the machine was busy, so read the figures with that in mind.`,
        ]
      : []),
    ``,
    `## Figures and targets`,
    ``,
    summary(figures(r), r),
    ``,
    `## Refresh storm: waiters (goal: served within ${GOALS.waiterP50Ms} ms p50 / ${GOALS.waiterP99Ms} ms p99 of the publish, at most ${GOALS.readsPerWaiter} reads per waiting container)`,
    ``,
    `${w.processes} processes x ${w.requestsPerProcess} concurrent requests per storm, for a token the runner has just invalidated (after memoryMaxAgeMs ${WAITERS.memoryMaxAgeMs}, so no process answers from memory); ` +
      `the upstream answers after ${w.upstreamDelayMs} ms. One process refreshes, the others wait. ${w.storms} storms measured after ${w.unmeasuredStorms} unmeasured (the connection's first refresh: nothing recorded for waiters yet). ` +
      `Overhead: from the winner's publish to each waiting request's answer, all processes on one clock. Reads: consistent GetItem calls of the token item per waiting process and storm (dynalite returns no item with a failed lease write; DynamoDB does, which spares no read here since a lost lease attempt is not read back without an SDK retry).`,
    ``,
    table(
      [
        'storms',
        'waiting requests',
        'upstream requests per storm',
        'overhead p50 ms',
        'overhead p99 ms',
        'overhead max ms',
        'reads per waiting container (max, mean)',
        'first storm reads',
        'last refresh ms',
        'max stall ms',
      ],
      [
        [
          w.storms,
          w.waitingRequests,
          w.upstreamRequestsPerStorm.join(' '),
          fmt(w.overheadMs.p50, 0),
          fmt(w.overheadMs.p99, 0),
          fmt(w.overheadMs.max, 0),
          `${w.readsPerWaitingContainer.max}, ${fmt(w.readsPerWaitingContainer.mean, 1)}`,
          w.firstStormReads.join(' '),
          w.lastRefreshMs ?? '-',
          fmt(w.maxStallMs, 0),
        ],
      ],
    ),
    ``,
    `## Fleet storm: upstream requests per token lifetime (goal: broker ${fmt(GOALS.perLifetime)})`,
    ``,
    `${PROCESSES} processes x ${STORM.concurrency} concurrent request loops (${STORM.thinkMs} ms pause), one shared DynamoDB-API server. Tokens live expires_in ${STORM.expiresIn} s; ` +
      `requests ask min_ttl ${STORM.minTtl}; broker skewMs ${STORM.skewMs}, memoryMaxAgeMs ${STORM.memoryMaxAgeMs}. ` +
      `A token lifetime is how long one token may serve: expires_in - max(min_ttl, refreshBeforeSeconds) - skew.`,
    ``,
    table(
      [
        'variant',
        'duration s',
        'calls',
        'calls/s',
        'not served',
        'upstream requests',
        'token lifetimes',
        'per lifetime',
        'latest arrival after send ms',
        'max stall ms',
      ],
      r.fleet.map((f) => [
        f.variant,
        f.durationS,
        f.calls,
        f.callsPerS,
        outcomesText(f.outcomes),
        f.upstreamRequests,
        f.tokenLifetimes,
        fmt(f.perLifetime),
        fmt(f.maxArrivalDelayMs, 0),
        fmt(f.maxStallMs, 0),
      ]),
    ),
    ``,
    `A token lifetime begins with a token requested at least 0.9 lifetime after the previous lifetime began; more than one request per lifetime means duplicates. ` +
      `Tokens are dated by when the broker sent their request (the expiry it served, less expires_in), not by their arrival at the upstream, which a stalled worker delays. ` +
      `Goal ${verdict(brokerRows.every((f) => f.perLifetime === GOALS.perLifetime))}. Every token served had at least min_ttl left unless "not served" shows \`short\`.`,
    ``,
    `## Hot path: handler latency, one request at a time (ms)`,
    ``,
    table(
      ['path', 'p50', 'p99', 'n', 'DynamoDB calls'],
      [
        lat('memoryHit', 'memory hit (handler as deployed)'),
        lat('memoryHitQuiet', 'memory hit, no logging/metrics'),
        lat('storeHit', 'store hit (handler as deployed, memoryMaxAgeMs 0)'),
        lat('storeHitQuiet', 'store hit, no logging/metrics'),
        lat('brokerGetToken', 'store hit, TokenBroker.getToken only'),
        lat('storeGet', 'DynamoTokenStore.get'),
        lat('getItem', 'bare GetItem (ConsistentRead)'),
        lat('sealerOpen', 'sealer.open (decrypt; only when the item changed)'),
        lat('refresh', 'refresh (GET after invalidate)'),
      ],
    ),
    ``,
    `Store hit / GetItem: p50 ${fmt(r.hot.storeHitOverGetItem)}, p99 ${fmt(r.hot.storeHitOverGetItemP99)} (goal <= ${GOALS.storeHitRatio}: ${verdict(r.hot.storeHitOverGetItem <= GOALS.storeHitRatio)}); ` +
      `the broker and handler add ${fmt(r.hot.storeHitAddedUs, 0)} us to the read at p50 (the ratio falls when the machine serves dynalite slower; this does not). ` +
      `Memory hit p50: ${fmt(r.hot.memoryHitP50Us, 1)} us. Log output of a memory hit as deployed: ${fmt(r.hot.logBytesPerRequest, 0)} bytes in ${fmt(r.hot.logLinesPerRequest, 2)} lines per request.`,
    ``,
    `## Cold start: import and init of the bundle (${r.cold.runs} fresh processes each)`,
    ``,
    `The broker Lambda as @token-broker/cdk ships it (code-split: the upstream client and Secrets Manager load on a container's first refresh) ` +
      `against a bare GetItem handler built with the same esbuild settings. Bytes at init: the entry and the chunks it imports statically. ` +
      `The imports alternate (the order swapped every run) and each runs on one core (${r.cold.pinnedTo === undefined ? 'taskset was not there: not pinned' : `taskset -c ${r.cold.pinnedTo}`}); ` +
      `the ratio is the median of the runs' ratios (each run's two imports made back to back), with a 95% bootstrap interval.`,
    ``,
    table(
      ['bundle', 'bytes at init (files)', 'gzip at init', 'bytes in the asset (files)', 'init ms (median)'],
      [
        [
          'broker (prebuilt asset)',
          `${r.cold.handler.initBytes} (${r.cold.handler.initFiles})`,
          r.cold.handler.initGzipBytes,
          `${r.cold.handler.totalBytes} (${r.cold.handler.files})`,
          fmt(r.cold.handler.initMsMedian, 1),
        ],
        [
          'bare GetItem handler',
          `${r.cold.bare.initBytes} (${r.cold.bare.initFiles})`,
          r.cold.bare.initGzipBytes,
          `${r.cold.bare.totalBytes} (${r.cold.bare.files})`,
          fmt(r.cold.bare.initMsMedian, 1),
        ],
      ],
    ),
    ``,
    `Ratio ${fmt(r.cold.ratio)} (goal <= ${GOALS.coldRatio}: ${verdict(r.cold.ratio <= GOALS.coldRatio)}; 95% interval ${r.cold.ratioInterval.map((v) => fmt(v)).join(' to ')}; ratio of the medians ${fmt(r.cold.ratioOfMedians)}). ` +
      `Broker / bare at the same percentile of their runs: ${Object.entries(r.cold.percentileRatios)
        .map(([p, v]) => `${p} ${fmt(v)}`)
        .join(', ')}; CPU time ${fmt(r.cold.cpu.ratio)}. Largest inputs loaded at init: ` +
      r.cold.topInputs.map((t) => `${t.input} ${kb(t.bytes)}`).join(', ') +
      '.',
    ...(breakdown
      ? [
          '',
          "Where the init time goes: the bare handler plus the handler's parts, each imported eagerly at init (the handler itself may defer some; " +
            'its own row says what it really costs). Medians of fewer runs, so differences under ~20 ms are noise.',
          '',
          table(
            ['bundle', 'bytes', 'init ms'],
            breakdown.map((b) => [b.step, b.bytes, fmt(b.initMsMedian, 1)]),
          ),
        ]
      : []),
    ``,
    `## Ledger under contention (goal: ${GOALS.violations} violations)`,
    ``,
    `Every call takes a token and reports it invalid, so the next call on that connection refreshes; the connections share one ledger key. ` +
      `ledgerMarginMs ${LEDGER.marginMs} (the ledger widens each window by it). Violations: windows holding more than ${LEDGER.max}, ` +
      `of ${LEDGER.windowSeconds} s on the upstream's receipt log (the contract), and of ${LEDGER.windowSeconds} s + margin on the debit times the ledger recorded (its own promise).`,
    ``,
    table(
      [
        'processes',
        'connections on one ledger',
        'limit',
        'duration s',
        'calls',
        'not served',
        'upstream requests (most allowed)',
        'debits/s',
        'most in any window',
        'violations (receipts)',
        'violations (debits)',
        'max stall ms',
      ],
      [
        [
          r.ledger.processes,
          r.ledger.connections,
          r.ledger.limit,
          r.ledger.durationS,
          r.ledger.calls,
          outcomesText(r.ledger.outcomes),
          `${r.ledger.upstreamRequests} (${r.ledger.mostAllowed})`,
          fmt(r.ledger.debitsPerS),
          r.ledger.maxInWindow,
          r.ledger.violations,
          r.ledger.debitViolations,
          fmt(r.ledger.maxStallMs, 0),
        ],
      ],
    ),
    ``,
  ].join('\n');
}

function packageVersions(): Record<string, string> {
  const names = ['@aws-sdk/client-dynamodb', '@aws-sdk/client-kms', 'undici', 'zod', 'dynalite', 'esbuild', 'tsx'];
  return Object.fromEntries(
    names.map((n) => [n, (JSON.parse(readFileSync(join(ROOT, 'node_modules', n, 'package.json'), 'utf8')) as { version: string }).version]),
  );
}

async function main() {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'; // Node 20 here; Lambda runs 22
  mkdirSync(WORK, { recursive: true });
  const started = Date.now();
  const loadBefore = loadavg();
  const step = <T>(name: string, f: () => Promise<T>) => {
    console.error(`bench: ${name}...`);
    return f();
  };
  await step('bundling the worker', () => bundle(join(BENCH, 'worker.ts'), join(WORK, 'worker.mjs'), { minify: false, target: 'node20' }));
  if (waitersOnly || hotOnly) {
    const dynamo = await startDynalite();
    try {
      console.log(JSON.stringify(await (hotOnly ? hotPath(dynamo) : refreshStorm(dynamo)), null, 1));
    } finally {
      await dynamo.close();
    }
    return;
  }
  const cold = await step('cold start', coldStart);
  const dynamo = await startDynalite();
  let results: Results;
  try {
    const hot = await step('hot path', () => hotPath(dynamo));
    const fleet = await step('fleet storm', () => fleetStorm(dynamo));
    const waiters = await step('refresh storm (waiters)', () => refreshStorm(dynamo));
    const ledger = await step('ledger under contention', () => ledgerContention(dynamo));
    results = { fleet, waiters, hot, ledger, cold };
  } finally {
    await dynamo.close();
  }
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    loadAverage: { before: loadBefore, after: loadavg() },
  };
  const md = markdown(results, meta);
  const settings = {
    processes: PROCESSES,
    storm: STORM,
    waiters: WAITERS,
    ledger: LEDGER,
    hot: HOT,
    coldRuns: COLD_RUNS,
    goals: GOALS,
    quick,
  };
  // The named figures first (for scripts), then the targets, then every detail.
  const json = { ...figures(results), targets: TARGETS, ...meta, packages: packageVersions(), settings, ...results };
  writeFileSync(join(BENCH, 'results.json'), JSON.stringify(json, null, 2) + '\n');
  writeFileSync(join(BENCH, 'RESULTS.md'), md);
  console.log(md);
  console.error(`bench: done in ${Math.round((Date.now() - started) / 1000)} s; wrote bench/results.json and bench/RESULTS.md`);
}

await main();
