/**
 * `npm run bench`: the performance goals of DESIGN.md, measured. Prints a table, writes
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
import { ensureTable, localDynamoClient, startDynalite, type EmbeddedDynamo } from '../functions/local/dynamodb.js';
import { issue, startIdp } from '../test/support/idp.js';
import { bundle, measureColdStart } from './cold-start.js';
import {
  type Done,
  type Env,
  type FromWorker,
  type HotResult,
  type Job,
  type Load,
  type StormMode,
  type Tally,
  type ToWorker,
  type WorkerResult,
  connectionDoc,
  mergeTallies,
} from './lib.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);
const WORK = join(BENCH, '.work');
const quick = process.argv.includes('--quick'); // a smoke run: shorter scenarios, fewer samples

const PROCESSES = 8;
/** Fleet storm: 5 s tokens; served while at least min_ttl 1 s + skew 0.5 s is left. */
const STORM = { expiresIn: 5, minTtl: 1, skewMs: 500, memoryMaxAgeMs: 1_000, concurrency: 16, thinkMs: 10 };
/** Ledger: 10 upstream requests per 3 s window, shared by 4 connections, over 4 windows. */
// One machine, one clock: no skew between the processes; loopback connects in well under 100 ms.
const LEDGER_MARGIN = { sendCutoffMs: 150, connectTimeoutMs: 100, clockSkewMs: 0 };
const LEDGER = { max: 10, windowSeconds: 3, connections: 4, windows: quick ? 2 : 4, marginMs: ledgerMarginMs(LEDGER_MARGIN), concurrency: 4, thinkMs: 5 };
const HOT = { rounds: quick ? 3 : 10, perRound: quick ? 50 : 150, refreshes: quick ? 60 : 300 };
const COLD_RUNS = quick ? 3 : 21;
const GOALS = { perLifetime: 1, storeHitRatio: 1.3, coldRatio: 1.2, violations: 0 };

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
  const children = Array.from({ length: count }, () => fork(join(WORK, 'worker.mjs'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
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
async function freshEnv(dynamo: EmbeddedDynamo, connections: Record<string, ConnectionInput>, options: Partial<BrokerOptions>): Promise<Env> {
  const table = `bench-${process.pid}-${++tables}`;
  const admin = localDynamoClient(dynamo.endpoint);
  await ensureTable(admin, table);
  admin.destroy();
  return { endpoint: dynamo.endpoint, table, sealKeyHex: randomBytes(32).toString('hex'), connections, options };
}

/**
 * Token lifetimes, counted from the upstream's receipts: a lifetime starts with a request made at least
 * 0.9 lifetime after the one that started the previous lifetime (10% slack for request latency jitter).
 * A second request within one lifetime is a duplicate: the broker's goal is one per lifetime.
 */
function lifetimesOf(times: number[], usableMs: number): number {
  let lifetimes = 0;
  let start = -Infinity;
  for (const t of [...times].sort((a, b) => a - b)) {
    if (t - start >= 0.9 * usableMs) {
      lifetimes++;
      start = t;
    }
  }
  return lifetimes;
}

/** The most receipts inside any window [t, t + windowMs), and how many receipts open a window holding more than `max`. */
function windowCounts(times: number[], windowMs: number, max: number): { maxInWindow: number; violations: number } {
  const t = [...times].sort((a, b) => a - b);
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
    const idp = await startIdp(issue(STORM.expiresIn));
    try {
      const refreshBefore = v.refreshBeforeSeconds !== undefined ? { refreshBeforeSeconds: v.refreshBeforeSeconds } : {};
      const env = await freshEnv(dynamo, { main: connectionDoc(idp.url, refreshBefore) }, { skewMs: STORM.skewMs, memoryMaxAgeMs: STORM.memoryMaxAgeMs });
      const load: Load = { concurrency: STORM.concurrency, durationMs, thinkMs: STORM.thinkMs, minTtl: STORM.minTtl };
      const done = await runWorkers<Tally>(PROCESSES, { kind: 'storm', env, load, mode: v.mode }, durationMs);
      const tally = mergeTallies(done.map((d) => d.result));
      const times = idp.receipts.map((r) => r.at);
      const lifetimes = lifetimesOf(times, usableMs);
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
        upstreamAtMs: times.length <= 100 ? times.map((t) => t - times[0]!) : undefined,
        maxStallMs: maxStall(done),
      });
    } finally {
      await idp.close();
    }
  }
  return rows;
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
      memoryHitP50Us: l.memoryHit!.p50Ms * 1000,
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
    const connections = Object.fromEntries(Array.from({ length: LEDGER.connections }, (_, i) => [`l${i}`, connectionDoc(idp.url, { rateLimit })]));
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
  return Object.entries(outcomes)
    .filter(([k]) => k !== '200')
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ') || '-';
}

type Results = {
  fleet: Awaited<ReturnType<typeof fleetStorm>>;
  hot: Awaited<ReturnType<typeof hotPath>>;
  ledger: Awaited<ReturnType<typeof ledgerContention>>;
  cold: Awaited<ReturnType<typeof coldStart>>;
};

function markdown(r: Results, meta: { date: string; node: string; cores: number; cpu: string; loadAverage: { before: number[]; after: number[] } }): string {
  const hot = r.hot.latency;
  const lat = (name: string, what: string) => [what, fmt(hot[name]!.p50Ms, 3), fmt(hot[name]!.p99Ms, 3), hot[name]!.n, fmt(r.hot.dbCallsPerRun[name] ?? 0)];
  const brokerRows = r.fleet.filter((f) => f.variant.startsWith('broker'));
  const stall = Math.max(r.hot.maxStallMs, r.ledger.maxStallMs, ...r.fleet.map((f) => f.maxStallMs));
  const breakdown = r.cold.breakdown;
  return [
    `# Benchmark results`,
    ``,
    `${meta.date}, Node ${meta.node}, ${meta.cores} cores (${meta.cpu}); load average ${fmt(meta.loadAverage.before[0]!)} before, ${fmt(meta.loadAverage.after[0]!)} after. ` +
      `Generated by \`npm run bench\`${quick ? ' --quick (a smoke run: not representative)' : ''}.`,
    ...(stall > 1000 ? ['', `Note: a worker's event loop stalled for up to ${fmt(stall, 0)} ms (max stall columns): the machine was busy, so read the figures with that in mind.`] : []),
    ``,
    `## Fleet storm: upstream requests per token lifetime (goal: broker ${fmt(GOALS.perLifetime)})`,
    ``,
    `${PROCESSES} processes x ${STORM.concurrency} concurrent request loops (${STORM.thinkMs} ms pause), one shared DynamoDB-API server. Tokens live expires_in ${STORM.expiresIn} s; ` +
      `requests ask min_ttl ${STORM.minTtl}; broker skewMs ${STORM.skewMs}, memoryMaxAgeMs ${STORM.memoryMaxAgeMs}. ` +
      `A token lifetime is how long one token may serve: expires_in - max(min_ttl, refreshBeforeSeconds) - skew.`,
    ``,
    table(
      ['variant', 'duration s', 'calls', 'calls/s', 'not served', 'upstream requests', 'token lifetimes', 'per lifetime', 'max stall ms'],
      r.fleet.map((f) => [f.variant, f.durationS, f.calls, f.callsPerS, outcomesText(f.outcomes), f.upstreamRequests, f.tokenLifetimes, fmt(f.perLifetime), fmt(f.maxStallMs, 0)]),
    ),
    ``,
    `A token lifetime begins with an upstream request at least 0.9 lifetime after the previous lifetime began; more than one request per lifetime means duplicates. ` +
      `Goal ${verdict(brokerRows.every((f) => f.perLifetime === GOALS.perLifetime))}. Every token served had at least min_ttl left unless "not served" shows \`short\`.`,
    ``,
    `## Hot path: handler latency, one request at a time (ms)`,
    ``,
    table(['path', 'p50', 'p99', 'n', 'DynamoDB calls'], [
      lat('memoryHit', 'memory hit (handler as deployed)'),
      lat('memoryHitQuiet', 'memory hit, no logging/metrics'),
      lat('storeHit', 'store hit (handler as deployed, memoryMaxAgeMs 0)'),
      lat('storeHitQuiet', 'store hit, no logging/metrics'),
      lat('brokerGetToken', 'store hit, TokenBroker.getToken only'),
      lat('storeGet', 'DynamoTokenStore.get'),
      lat('getItem', 'bare GetItem (ConsistentRead)'),
      lat('sealerOpen', 'sealer.open (decrypt; only when the item changed)'),
      lat('refresh', 'refresh (GET after invalidate)'),
    ]),
    ``,
    `Store hit / GetItem: p50 ${fmt(r.hot.storeHitOverGetItem)}, p99 ${fmt(r.hot.storeHitOverGetItemP99)} (goal <= ${GOALS.storeHitRatio}: ${verdict(r.hot.storeHitOverGetItem <= GOALS.storeHitRatio)}). ` +
      `Memory hit p50: ${fmt(r.hot.memoryHitP50Us, 1)} us.`,
    ``,
    `## Cold start: import and init of the bundle (median of ${r.cold.runs} fresh processes)`,
    ``,
    `The broker Lambda as @token-broker/cdk ships it (code-split: the upstream client and Secrets Manager load on a container's first refresh) ` +
      `against a bare GetItem handler built with the same esbuild settings. Bytes at init: the entry and the chunks it imports statically.`,
    ``,
    table(['bundle', 'bytes at init', 'gzip at init', 'bytes in the asset (files)', 'init ms (median)'], [
      ['broker (prebuilt asset)', r.cold.handler.initBytes, r.cold.handler.initGzipBytes, `${r.cold.handler.totalBytes} (${r.cold.handler.files})`, fmt(r.cold.handler.initMsMedian, 1)],
      ['bare GetItem handler', r.cold.bare.initBytes, r.cold.bare.initGzipBytes, `${r.cold.bare.totalBytes} (${r.cold.bare.files})`, fmt(r.cold.bare.initMsMedian, 1)],
    ]),
    ``,
    `Ratio ${fmt(r.cold.ratio)} (goal <= ${GOALS.coldRatio}: ${verdict(r.cold.ratio <= GOALS.coldRatio)}). Largest inputs loaded at init: ` +
      r.cold.topInputs.map((t) => `${t.input} ${kb(t.bytes)}`).join(', ') + '.',
    ...(breakdown
      ? ['', 'Where the init time goes: the bare handler plus the handler\'s parts, each imported eagerly at init (the handler itself may defer some; ' +
          'its own row says what it really costs). Medians of fewer runs, so differences under ~20 ms are noise.', '',
        table(['bundle', 'bytes', 'init ms'], breakdown.map((b) => [b.step, b.bytes, fmt(b.initMsMedian, 1)]))]
      : []),
    ``,
    `## Ledger under contention (goal: ${GOALS.violations} violations)`,
    ``,
    `Every call takes a token and reports it invalid, so the next call on that connection refreshes; the connections share one ledger key. ` +
      `ledgerMarginMs ${LEDGER.marginMs} (the ledger widens each window by it). Violations: windows holding more than ${LEDGER.max}, ` +
      `of ${LEDGER.windowSeconds} s on the upstream's receipt log (the contract), and of ${LEDGER.windowSeconds} s + margin on the debit times the ledger recorded (its own promise).`,
    ``,
    table(['processes', 'connections on one ledger', 'limit', 'duration s', 'calls', 'not served', 'upstream requests (most allowed)', 'debits/s', 'most in any window', 'violations (receipts)', 'violations (debits)', 'max stall ms'], [
      [r.ledger.processes, r.ledger.connections, r.ledger.limit, r.ledger.durationS, r.ledger.calls, outcomesText(r.ledger.outcomes), `${r.ledger.upstreamRequests} (${r.ledger.mostAllowed})`,
        fmt(r.ledger.debitsPerS), r.ledger.maxInWindow, r.ledger.violations, r.ledger.debitViolations, fmt(r.ledger.maxStallMs, 0)],
    ]),
    ``,
  ].join('\n');
}

function packageVersions(): Record<string, string> {
  const names = ['@aws-sdk/client-dynamodb', '@aws-sdk/client-kms', 'undici', 'zod', 'dynalite', 'esbuild', 'tsx'];
  return Object.fromEntries(names.map((n) => [n, (JSON.parse(readFileSync(join(ROOT, 'node_modules', n, 'package.json'), 'utf8')) as { version: string }).version]));
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
  const cold = await step('cold start', coldStart);
  const dynamo = await startDynalite();
  let results: Results;
  try {
    const hot = await step('hot path', () => hotPath(dynamo));
    const fleet = await step('fleet storm', () => fleetStorm(dynamo));
    const ledger = await step('ledger under contention', () => ledgerContention(dynamo));
    results = { fleet, hot, ledger, cold };
  } finally {
    await dynamo.close();
  }
  const meta = { date: new Date().toISOString(), node: process.version, cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', loadAverage: { before: loadBefore, after: loadavg() } };
  const md = markdown(results, meta);
  const settings = { processes: PROCESSES, storm: STORM, ledger: LEDGER, hot: HOT, coldRuns: COLD_RUNS, goals: GOALS, quick };
  writeFileSync(join(BENCH, 'results.json'), JSON.stringify({ ...meta, packages: packageVersions(), settings, ...results }, null, 2) + '\n');
  writeFileSync(join(BENCH, 'RESULTS.md'), md);
  console.log(md);
  console.error(`bench: done in ${Math.round((Date.now() - started) / 1000)} s; wrote bench/results.json and bench/RESULTS.md`);
}

await main();
