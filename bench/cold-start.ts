/**
 * Cold start: times `await import(index.mjs)` in fresh Node processes, for the Lambda exactly as
 * @token-broker/cdk ships it (cdk/lambda, built by the package build) and for a bare GetItem handler built with
 * the same esbuild settings (cdk/scripts/lambda-bundle.ts). The single-file `bundle` below serves the
 * breakdown of where the time goes and the benchmark's worker.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type Metafile } from 'esbuild';
import { buildLambda } from '../cdk/scripts/build.js';
import { bundleLambda, entryOutput, staticOutputs } from '../cdk/scripts/lambda-bundle.js';
import { median } from './lib.js';

export const BANNER = "import { createRequire } from 'module'; const require = createRequire(import.meta.url);";
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

export interface LambdaBuild {
  /** The entry (`index.mjs`) to import. */
  file: string;
  /** What `import(index.mjs)` reads: the entry and the chunks it imports statically. */
  initBytes: number;
  initGzipBytes: number;
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
  return {
    file: join(ROOT, entry),
    initBytes: atInit.reduce((n, b) => n + b.length, 0),
    initGzipBytes: atInit.reduce((n, b) => n + gzipSync(b).length, 0),
    totalBytes: all.reduce((n, b) => n + b.length, 0),
    files: all.length,
    metafile,
  };
}

/**
 * The broker Lambda as the package ships it (rebuilt into cdk/lambda from this checkout) and the bare GetItem
 * handler built with the same settings into `workDir`: like for like.
 */
export async function prebuiltLambdas(workDir: string): Promise<{ handler: LambdaBuild; bare: LambdaBuild }> {
  const handler = measure(await buildLambda());
  const bare = measure(await bundleLambda(join(ROOT, 'bench/bare-handler.ts'), join(workDir, 'bare-lambda')));
  return { handler, bare };
}

/** Bytes in the output per npm package (project files as `(project)`), largest first. */
export function topInputs(b: { metafile: Metafile }, count: number, outputs = Object.keys(b.metafile.outputs)): { input: string; bytes: number }[] {
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
const t0 = performance.now();
await import(process.env.BENCH_MODULE);
const t1 = performance.now();
process.stdout.write(JSON.stringify({ initMs: t1 - t0, sinceStartMs: t1 }));
process.exit(0);
`;

/** Import-and-init time of a bundle in a fresh `node` process (ms), plus time since process start. */
export function timeImport(file: string, env: NodeJS.ProcessEnv): { initMs: number; sinceStartMs: number } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', IMPORT_SCRIPT], {
    env: { ...env, BENCH_MODULE: pathToFileURL(file).href },
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`importing ${file} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as { initMs: number; sinceStartMs: number };
}

/** The environment a deployed broker Lambda starts with (config file written to `workDir`). */
export function lambdaEnv(workDir: string): NodeJS.ProcessEnv {
  const callers = ['arn:aws:iam::111122223333:role/payments-*'];
  const connections = Object.fromEntries(
    ['vitesse-staging', 'vitesse-prod', 'vertex-oseries', 'vertex-cloud', 'demo'].map((name) => [
      name,
      { tokenUrl: `https://${name}.example.com/oauth/token`, grantType: 'client_credentials', secret: `token-broker/bench/${name}`, callers },
    ]),
  );
  const configFile = join(workDir, 'cold-config.json');
  writeFileSync(configFile, JSON.stringify({ connections }, null, 2));
  return {
    PATH: process.env.PATH,
    BROKER_CONFIG_FILE: configFile,
    BROKER_TABLE: 'token-broker-bench',
    BROKER_SEAL_KEY_ARN: 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIDBENCHEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'bench-secret-access-key',
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
  ['+ TokenBroker, config (zod), DynamoTokenStore', ['functions/core/broker.ts', 'functions/core/config.ts', 'functions/adapters/dynamodb-store.ts']],
  ['+ HttpUpstream (undici)', ['functions/adapters/upstream-http.ts']],
  ['+ sealer (@aws-crypto/client-node, KMS client)', ['functions/adapters/sealer.ts']],
  ['+ Secrets Manager client', ['functions/adapters/secrets-manager.ts']],
  ['+ HTTP layer, Powertools logger and metrics', ['functions/broker/http.ts', 'functions/broker/observability.ts']],
];

export interface BreakdownRow {
  step: string;
  bytes: number;
  initMsMedian: number;
}

/** Import-and-init time of the handler built up part by part, and of both bundles with ESM-first package resolution. */
export async function coldBreakdown(workDir: string, env: NodeJS.ProcessEnv, runs: number): Promise<BreakdownRow[]> {
  const steps: { step: string; bundle: Bundle }[] = [];
  const modules: string[] = [];
  for (const [i, [step, files]] of PARTS.entries()) {
    modules.push(...files);
    const contents = modules.map((m, j) => `export * as m${j} from ${JSON.stringify(join(ROOT, m))};`).join('\n');
    steps.push({ step, bundle: await bundle({ contents }, join(workDir, `part-${i}.mjs`)) });
  }
  const esmFirst = { mainFields: ['module', 'main'] };
  steps.push({ step: '= the handler (compose.ts builds its clients at init)', bundle: await bundle(join(ROOT, 'functions/broker/handler.ts'), join(workDir, 'part-handler.mjs')) });
  steps.push({ step: 'bare handler, mainFields module,main', bundle: await bundle(join(ROOT, 'bench/bare-handler.ts'), join(workDir, 'bare-esm.mjs'), esmFirst) });
  steps.push({ step: 'the handler, mainFields module,main', bundle: await bundle(join(ROOT, 'functions/broker/handler.ts'), join(workDir, 'handler-esm.mjs'), esmFirst) });
  const times = steps.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) steps.forEach((s, i) => times[i]!.push(timeImport(s.bundle.file, env).initMs));
  return steps.map((s, i) => ({ step: s.step, bytes: s.bundle.bytes, initMsMedian: median(times[i]!) }));
}
