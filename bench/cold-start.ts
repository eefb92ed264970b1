/**
 * Cold start: times `await import(index.mjs)` in fresh Node processes, for the Lambda exactly as
 * @token-broker/cdk ships it (cdk/lambda, built by the package build) and for a bare GetItem handler built with
 * the same esbuild settings (cdk/scripts/lambda-bundle.ts: splitting, ESM-first mainFields, minify, source
 * maps written but not enabled), started alike (no --enable-source-maps, the same environment): like for like.
 *
 * `npx tsx bench/cold-start.ts [--runs 61] [--breakdown]` measures just this and prints the figures.
 * The single-file `bundle` below serves the benchmark's worker.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type Metafile } from 'esbuild';
import { buildLambda } from '../cdk/scripts/build.js';
import { renderBundleConfig } from '../cdk/src/connections.js';
import { configDigest } from '../functions/contract/config-digest.js';
import { parseConfig } from '../functions/core/config.js';
import { bundleLambda, entryOutput, staticOutputs } from '../cdk/scripts/lambda-bundle.js';
import { ascending, median, percentile, seededRandom } from './lib.js';

const BANNER = "import { createRequire } from 'module'; const require = createRequire(import.meta.url);";
const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

export interface Bundle {
  file: string;
  bytes: number;
  gzipBytes: number;
  metafile: Metafile;
}

export interface BundleOptions {
  minify?: boolean;
  target?: string;
  mainFields?: string[];
}

/** Bundles `entry`: a file, or module source (`{ contents }`) resolved from the repository root. */
export async function bundle(entry: string | { contents: string }, outfile: string, o: BundleOptions = {}): Promise<Bundle> {
  const r = await build({
    ...(typeof entry === 'string' ? { entryPoints: [entry] } : { stdin: { contents: entry.contents, resolveDir: ROOT, loader: 'ts' } }),
    ...(o.mainFields ? { mainFields: o.mainFields } : {}),
    outfile,
    bundle: true,
    platform: 'node',
    target: o.target ?? 'node22',
    format: 'esm',
    minify: o.minify ?? true,
    banner: { js: BANNER },
    metafile: true,
    logLevel: 'warning',
  });
  const code = readFileSync(outfile);
  return { file: outfile, bytes: code.length, gzipBytes: gzipSync(code).length, metafile: r.metafile };
}

interface LambdaBuild {
  /** The entry (`index.mjs`) to import. */
  file: string;
  /** What `import(index.mjs)` reads: the entry and the chunks it imports statically. */
  initBytes: number;
  initGzipBytes: number;
  /** How many files that is (each one more module to resolve, read, parse and link). */
  initFiles: number;
  /** Everything in the asset (chunks loaded on first refresh included), source maps excluded. */
  totalBytes: number;
  files: number;
  metafile: Metafile;
}

function measure(metafile: Metafile): LambdaBuild {
  const entry = entryOutput(metafile);
  const code = (outputs: string[]) => outputs.filter((o) => o.endsWith('.mjs')).map((o) => readFileSync(join(ROOT, o)));
  const atInit = code(staticOutputs(metafile, entry));
  const all = code(Object.keys(metafile.outputs));
  const build = {
    file: join(ROOT, entry),
    initBytes: atInit.reduce((n, b) => n + b.length, 0),
    initGzipBytes: atInit.reduce((n, b) => n + gzipSync(b).length, 0),
    initFiles: atInit.length,
    totalBytes: all.reduce((n, b) => n + b.length, 0),
    files: all.length,
  };
  // Not enumerable: results.json keeps the sizes, not esbuild's whole metafile.
  return Object.defineProperty(build, 'metafile', { value: metafile, enumerable: false }) as LambdaBuild;
}

/**
 * The broker Lambda as the package ships it (rebuilt into cdk/lambda from this checkout) and the bare GetItem
 * handler built with the same settings into `workDir`: like for like.
 */
async function prebuiltLambdas(workDir: string): Promise<{ handler: LambdaBuild; bare: LambdaBuild }> {
  const handler = measure(await buildLambda());
  const bare = measure(await bundleLambda(join(ROOT, 'bench/bare-handler.ts'), join(workDir, 'bare-lambda')));
  return { handler, bare };
}

/** Bytes in the output per npm package (project files as `(project)`), largest first. */
function topInputs(
  b: { metafile: Metafile },
  count: number,
  outputs = Object.keys(b.metafile.outputs),
): { input: string; bytes: number }[] {
  const sizes = new Map<string, number>();
  for (const output of outputs.map((o) => b.metafile.outputs[o]!)) {
    for (const [path, { bytesInOutput }] of Object.entries(output.inputs)) {
      const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1] ?? '(project)';
      sizes.set(pkg, (sizes.get(pkg) ?? 0) + bytesInOutput);
    }
  }
  return [...sizes]
    .map(([input, bytes]) => ({ input, bytes }))
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, count);
}

const IMPORT_SCRIPT = `
const c0 = process.cpuUsage();
const t0 = performance.now();
await import(process.env.BENCH_MODULE);
const t1 = performance.now();
const c = process.cpuUsage(c0);
process.stdout.write(JSON.stringify({ initMs: t1 - t0, cpuMs: (c.user + c.system) / 1000, sinceStartMs: t1 }));
process.exit(0);
`;

interface ImportTime {
  /** Wall-clock time of `await import(file)`. */
  initMs: number;
  /** CPU time (user + system, all threads) the process spent in it: what a busy machine disturbs least. */
  cpuMs: number;
  /** Time since the process started, at the end of the import. */
  sinceStartMs: number;
}

/**
 * The core every import runs on (the last one), when `taskset` is there to pin it. On two free cores V8's
 * background threads (compilers, GC) run beside the import or not, from one process to the next: imports of
 * one bundle fell into two states (about 45 and 65 ms), and a side's median could land in either or between
 * them. On one core the times are one spread. A Lambda function of up to 1,769 MB has at most one vCPU's worth.
 */
let pin: { core: string | undefined } | undefined;
function pinnedCore(): string | undefined {
  if (!pin) {
    const core = String(cpus().length - 1);
    pin = { core: spawnSync('taskset', ['-c', core, 'true']).status === 0 ? core : undefined };
  }
  return pin.core;
}

/**
 * Import-and-init time of a bundle in a fresh `node` process (ms), on one core (pinnedCore). The process gets `env`
 * and nothing else (no NODE_OPTIONS, so no --enable-source-maps: the function is deployed without).
 */
function timeImport(file: string, env: NodeJS.ProcessEnv): ImportTime {
  const node = [process.execPath, '--input-type=module', '-e', IMPORT_SCRIPT];
  const core = pinnedCore();
  const [command, ...args] = core ? ['taskset', '-c', core, ...node] : node;
  const r = spawnSync(command!, args, {
    env: { ...env, BENCH_MODULE: pathToFileURL(file).href },
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`importing ${file} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ImportTime;
}

/**
 * A 95% interval for the median of the runs' ratios: the runs resampled with replacement (2,000 times, a fixed
 * seed, so a run's interval can be recomputed from its times).
 */
function bootstrapMedian(xs: number[]): [number, number] {
  const random = seededRandom(0x9e3779b9);
  const medians = ascending(Array.from({ length: 2000 }, () => median(xs.map(() => xs[Math.floor(random() * xs.length)]!))));
  return [percentile(medians, 2.5), percentile(medians, 97.5)];
}

/**
 * The environment a deployed broker Lambda starts with (config file written to `workDir`): what the construct
 * sets (cdk/src/units/function.ts) and what the Lambda runtime adds. Both bundles start with it.
 */
function lambdaEnv(workDir: string): NodeJS.ProcessEnv {
  const callers = ['arn:aws:iam::111122223333:role/payments-*'];
  const connections = Object.fromEntries(
    ['vitesse-staging', 'vitesse-prod', 'vertex-oseries', 'vertex-cloud', 'demo'].map((name) => [
      name,
      {
        tokenUrl: `https://${name}.example.com/oauth/token`,
        grantType: 'client_credentials',
        secret: `token-broker/bench/${name}`,
        callers,
      },
    ]),
  );
  mkdirSync(workDir, { recursive: true });
  // As the construct writes it: validated, every default written out, its digest in the environment.
  const configFile = join(workDir, 'cold-config.json');
  const text = renderBundleConfig(parseConfig({ connections }));
  writeFileSync(configFile, text);
  return {
    PATH: process.env.PATH,
    // The construct's environment.
    BROKER_CONFIG_FILE: configFile,
    BROKER_CONFIG_SHA256: configDigest(text),
    BROKER_TABLE: 'token-broker-bench',
    BROKER_SEAL_KEY_ARN: 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000',
    POWERTOOLS_SERVICE_NAME: 'token-broker',
    POWERTOOLS_METRICS_NAMESPACE: 'TokenBroker',
    POWERTOOLS_LOG_LEVEL: 'INFO',
    // The runtime's.
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
    AWS_LAMBDA_FUNCTION_NAME: 'token-broker-bench-broker',
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
    AWS_LAMBDA_LOG_GROUP_NAME: '/aws/lambda/token-broker-bench-broker',
    AWS_LAMBDA_LOG_STREAM_NAME: '2026/01/01/[$LATEST]00000000000000000000000000000000',
    AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
    LAMBDA_TASK_ROOT: workDir,
    AWS_ACCESS_KEY_ID: 'AKIDBENCHEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'bench-secret-access-key',
    AWS_SESSION_TOKEN: 'bench-session-token',
    TZ: ':UTC',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
}

/**
 * The handler's parts, added one at a time to the bare handler: each step's bundle re-exports all the
 * modules so far, so the difference between steps is what a part costs when it is imported at init
 * (whether or not compose.ts defers it to first use).
 */
const PARTS: [string, string[]][] = [
  ['bare handler (DynamoDB client)', ['bench/bare-handler.ts']],
  [
    '+ TokenBroker, run-time config, DynamoTokenStore',
    ['functions/core/broker.ts', 'functions/core/connection.ts', 'functions/adapters/dynamodb-store.ts'],
  ],
  ['+ sealer (KMS client, node:crypto)', ['functions/adapters/sealer.ts']],
  ['+ HTTP layer, logging and metrics', ['functions/broker/http.ts', 'functions/broker/observability.ts']],
  ['+ config schema (zod; the handler loads it only for a config synth did not validate)', ['functions/core/config.ts']],
  ['+ HttpUpstream (undici; the handler loads it on first refresh)', ['functions/adapters/upstream-http.ts']],
  ['+ Secrets Manager client (the handler loads it on first refresh)', ['functions/adapters/secrets-manager.ts']],
];

interface BreakdownRow {
  step: string;
  /** Bytes `import()` reads (entry and static chunks). */
  bytes: number;
  initMsMedian: number;
}

/** Import-and-init time of the handler built up part by part, each built with the Lambda's esbuild settings. */
async function coldBreakdown(workDir: string, env: NodeJS.ProcessEnv, runs: number): Promise<BreakdownRow[]> {
  const steps: { step: string; build: LambdaBuild }[] = [];
  const modules: string[] = [];
  const dir = join(workDir, 'parts');
  mkdirSync(dir, { recursive: true });
  for (const [i, [step, files]] of PARTS.entries()) {
    modules.push(...files);
    const entry = join(dir, `part-${i}.ts`);
    writeFileSync(entry, modules.map((m, j) => `export * as m${j} from ${JSON.stringify(join(ROOT, m))};`).join('\n'));
    steps.push({ step, build: measure(await bundleLambda(entry, join(dir, `part-${i}`))) });
  }
  steps.push({
    step: '= the handler as shipped',
    build: measure(await bundleLambda(join(ROOT, 'functions/broker/handler.ts'), join(dir, 'handler'))),
  });
  const times = steps.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) steps.forEach((s, i) => times[i]!.push(timeImport(s.build.file, env).initMs));
  return steps.map((s, i) => ({ step: s.step, bytes: s.build.initBytes, initMsMedian: median(times[i]!) }));
}

/** One bundle's sizes and its import-and-init times. */
type ColdSide = LambdaBuild & { initMsMedian: number; initMsAll: number[]; cpuMsMedian: number };

export interface ColdStart {
  /**
   * The goal's measure: the median of the runs' broker / bare ratios of wall-clock import time, each run's two
   * imports made back to back on one core. The machine's speed drifts over seconds (the same bundle imported in
   * 95 ms, then half a minute later in 80): a run's ratio compares imports made in the same moment.
   */
  ratio: number;
  /** A 95% bootstrap interval for `ratio`. */
  ratioInterval: [number, number];
  /** broker median / bare median, as runs before these reported it (drift that falls unevenly moves it). */
  ratioOfMedians: number;
  /** broker / bare at the same percentile of each side's runs (p10 ... p90). */
  percentileRatios: Record<string, number>;
  /** The core the imports ran on (`taskset -c`), or undefined if taskset was not there. */
  pinnedTo: string | undefined;
  brokerMs: number;
  bareMs: number;
  /** The same for the CPU time the imports took, which a busy machine disturbs less. */
  cpu: { ratio: number; brokerMs: number; bareMs: number };
  runs: number;
  /** os.loadavg() (1, 5, 15 min) before and after the timed runs: the machine's load, to read the figures by. */
  load: { before: number[]; after: number[] };
  handler: ColdSide;
  bare: ColdSide;
  /** The largest npm packages in what the broker reads at init. */
  topInputs: { input: string; bytes: number }[];
  breakdown?: BreakdownRow[];
}

/**
 * The like-for-like cold start: rebuilds the broker Lambda (cdk/lambda) and the bare handler with the same
 * settings, then imports each in `runs` fresh processes, alternating (and swapping which goes first), after
 * one discarded warm-up each. `breakdown`: also time the handler's parts (always, never, or only when the
 * ratio misses `goal`).
 */
export async function measureColdStart(
  workDir: string,
  runs: number,
  o: { breakdown?: boolean | 'if-missed'; goal?: number } = {},
): Promise<ColdStart> {
  const { handler, bare } = await prebuiltLambdas(workDir);
  const env = lambdaEnv(workDir);
  timeImport(handler.file, env);
  timeImport(bare.file, env);
  const times = { handler: [] as number[], bare: [] as number[] };
  const cpu = { handler: [] as number[], bare: [] as number[] };
  const before = loadavg();
  for (let i = 0; i < runs; i++) {
    // Alternate, so that a busy moment on the machine hits both alike; and swap the order every other run.
    const order = i % 2 === 0 ? (['handler', 'bare'] as const) : (['bare', 'handler'] as const);
    for (const side of order) {
      const t = timeImport((side === 'handler' ? handler : bare).file, env);
      times[side].push(t.initMs);
      cpu[side].push(t.cpuMs);
    }
  }
  const after = loadavg();
  const side = (b: LambdaBuild, all: number[], cpuMs: number[]): ColdSide =>
    Object.assign(b, { initMsMedian: median(all), initMsAll: all, cpuMsMedian: median(cpuMs) });
  const h = side(handler, times.handler, cpu.handler);
  const b = side(bare, times.bare, cpu.bare);
  const perRun = (xs: Record<'handler' | 'bare', number[]>) => xs.handler.map((x, i) => x / xs.bare[i]!);
  const ratio = median(perRun(times));
  const wantBreakdown = o.breakdown === true || (o.breakdown === 'if-missed' && ratio > (o.goal ?? 1.2));
  return {
    ratio,
    ratioInterval: bootstrapMedian(perRun(times)),
    ratioOfMedians: h.initMsMedian / b.initMsMedian,
    pinnedTo: pinnedCore(),
    percentileRatios: Object.fromEntries(
      [10, 25, 50, 75, 90].map((p) => [`p${p}`, percentile(ascending(times.handler), p) / percentile(ascending(times.bare), p)]),
    ),
    brokerMs: h.initMsMedian,
    bareMs: b.initMsMedian,
    cpu: { ratio: median(perRun(cpu)), brokerMs: h.cpuMsMedian, bareMs: b.cpuMsMedian },
    runs,
    load: { before, after },
    handler: h,
    bare: b,
    topInputs: topInputs(handler, 12, staticOutputs(handler.metafile)),
    ...(wantBreakdown ? { breakdown: await coldBreakdown(workDir, env, Math.max(3, Math.ceil(runs / 2))) } : {}),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string) => process.argv[process.argv.indexOf(name) + 1];
  const runs = process.argv.includes('--runs') ? Number(arg('--runs')) : 61;
  const r = await measureColdStart(join(ROOT, 'bench/.work'), runs, { breakdown: process.argv.includes('--breakdown') });
  const load = (l: number[]) => l.map((v) => v.toFixed(2)).join(' ');
  console.log(`cold start, ${r.runs} fresh processes each (alternating), Node ${process.version}`);
  console.log(
    `  broker ${r.brokerMs.toFixed(1)} ms (${r.handler.initBytes} bytes at init), bare GetItem ${r.bareMs.toFixed(1)} ms (${r.bare.initBytes} bytes)`,
  );
  console.log(
    `  ratio ${r.ratio.toFixed(2)} (median of the runs' ratios, 95% interval ${r.ratioInterval.map((v) => v.toFixed(2)).join(' to ')}; ratio of the medians ${r.ratioOfMedians.toFixed(2)}; ${r.pinnedTo === undefined ? 'not pinned' : `on core ${r.pinnedTo}`}); load average before ${load(r.load.before)}, after ${load(r.load.after)}`,
  );
  console.log(
    `  at the same percentile: ${Object.entries(r.percentileRatios)
      .map(([p, v]) => `${p} ${v.toFixed(2)}`)
      .join(', ')}`,
  );
  console.log(`  CPU time: broker ${r.cpu.brokerMs.toFixed(1)} ms, bare ${r.cpu.bareMs.toFixed(1)} ms, ratio ${r.cpu.ratio.toFixed(2)}`);
  console.log(`  at init: ${r.topInputs.map((t) => `${t.input} ${(t.bytes / 1024).toFixed(0)} KB`).join(', ')}`);
  for (const b of r.breakdown ?? [])
    console.log(`  ${b.initMsMedian.toFixed(1).padStart(7)} ms ${String(b.bytes).padStart(8)} B  ${b.step}`);
}
