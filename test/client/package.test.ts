/**
 * The package as a caller in another repository gets it: `npm pack -w @token-broker/client`, the tarball
 * installed into a scratch project outside this repository, then
 * - plain `node` (no tsx) gets a token from a running local broker (`npm start`), credentials passed
 *   explicitly, and heals a 401 from an upstream API through the interceptor;
 * - TypeScript under `strict` + `exactOptionalPropertyTypes` + `NodeNext` (and no skipLibCheck) compiles
 *   a consumer of the main entry without undici installed, then of the interceptor with it;
 * - esbuild bundles both for a Lambda (ESM, platform node): the client with esbuild's defaults, the
 *   interceptor (undici is CommonJS) with the `createRequire` banner the README documents; both bundles run.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startBroker, type RunningBroker } from '../local/helpers.js';
import { listen, type LocalServer } from './support.js';

const CALLER = { accessKeyId: 'AKIDCONSUMERPKG', secretAccessKey: 'consumer-package-secret' };
const CONNECTION = 'pkg-demo';
/** The README's banner for ESM bundles that contain CommonJS (undici). */
/** Installs, compilers and bundlers on a shared 2-core machine: generous per-test time limits. */
const SLOW = 180_000;
const BANNER = "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], options: ExecFileOptions & { timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024, ...options }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The environment for npm in the scratch project: without the npm_* variables of the `npm test` running us. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
}

const npm = (args: string[], cwd: string) => run('npm', args, { cwd, env: npmEnv() });
const fingerprint = (token: string) => createHash('sha256').update(token).digest('hex').slice(0, 16);

describe('@token-broker/client as an installed package', () => {
  let scratch = '';
  let consumer = '';
  let tarball = '';
  let packed: { files: Array<{ path: string }>; size: number; entryCount: number } | undefined;
  let oauth: LocalServer;
  let api: LocalServer;
  let broker: RunningBroker | undefined;
  let serial = 0;
  const apiHits: Array<string | undefined> = [];
  const rejected = new Set<string>();

  beforeAll(async () => {
    scratch = realpathSync(mkdtempSync(join(tmpdir(), 'token-broker-consumer-')));
    expect(relative(ROOT, scratch).startsWith('..')).toBe(true);

    // Pack (prepack builds dist/ with tsc) and install the tarball alone into an empty project.
    const pack = await npm(['pack', '-w', '@token-broker/client', '--json', '--pack-destination', scratch], ROOT);
    expect(pack.code, pack.stderr).toBe(0);
    const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{
      filename: string;
      files: Array<{ path: string }>;
      size: number;
      entryCount: number;
    }>;
    packed = info[0];
    tarball = join(scratch, info[0]!.filename);
    consumer = join(scratch, 'consumer');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
    const install = await npm(['install', '--prefer-offline', '--no-package-lock', tarball], consumer);
    expect(install.code, install.stderr).toBe(0);

    // The broker: `npm start` with a config whose connection fetches from a local OAuth token endpoint.
    oauth = await listen((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ access_token: `pkg-tok-${++serial}`, token_type: 'Bearer', expires_in: 600 }));
    });
    // The upstream API: rejects the first token it sees, and any token reported rejected.
    api = await listen((req, res) => {
      const token = req.headers.authorization?.replace(/^Bearer /, '');
      apiHits.push(token && fingerprint(token));
      if (token && rejected.size === 0) rejected.add(token);
      const ok = token !== undefined && !rejected.has(token);
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? { paid: true } : { error: 'invalid_token' }));
    });
    const config = {
      connections: {
        [CONNECTION]: {
          tokenUrl: `${oauth.url}/token`,
          grantType: 'client_credentials',
          secret: 'pkg/demo',
          callers: ['arn:aws:iam::111122223333:role/consumer-*'],
        },
      },
      secrets: { 'pkg/demo': { client_id: 'pkg', client_secret: 'pkg-secret' } },
      callers: {
        [CALLER.accessKeyId]: { secretAccessKey: CALLER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/consumer-app' },
      },
    };
    writeFileSync(join(scratch, 'broker.json'), JSON.stringify(config));
    broker = await startBroker(['--config', join(scratch, 'broker.json'), '--port', '0']);
  }, 240_000);

  afterAll(async () => {
    await broker?.stop();
    await oauth?.close();
    await api?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  /** Runs a file of the consumer project with plain node (no tsx, no loader). */
  const node = (file: string, env: Record<string, string> = {}) =>
    run(process.execPath, [file], {
      cwd: consumer,
      env: {
        PATH: process.env.PATH ?? '',
        BROKER_URL: broker!.url,
        API_URL: api.url,
        KEY_ID: CALLER.accessKeyId,
        KEY_SECRET: CALLER.secretAccessKey,
        ...env,
      },
    });

  it('ships only the built client, its README, its licence and package.json', () => {
    const paths = packed!.files.map((f) => f.path).sort();
    expect(paths).toEqual([
      'LICENSE',
      'README.md',
      'dist/client.d.ts',
      'dist/client.js',
      'dist/contract.d.ts',
      'dist/contract.js',
      'dist/errors.d.ts',
      'dist/errors.js',
      'dist/index.d.ts',
      'dist/index.js',
      'dist/interceptor.d.ts',
      'dist/interceptor.js',
      'dist/sha256.d.ts',
      'dist/sha256.js',
      'package.json',
    ]);
  });

  it('installs its own dependencies and nothing of the server', () => {
    const modules = join(consumer, 'node_modules');
    expect(existsSync(join(modules, '@token-broker/client/dist/index.js'))).toBe(true);
    for (const dep of ['@smithy/signature-v4', '@smithy/types', '@aws-sdk/credential-provider-node'])
      expect(existsSync(join(modules, dep)), dep).toBe(true);
    for (const server of ['@aws-sdk/client-dynamodb', '@aws-sdk/client-kms', '@aws-sdk/client-secrets-manager', 'zod', 'undici']) {
      expect(existsSync(join(modules, server)), server).toBe(false);
    }
  });

  it(
    'plain node: the README five-liner gets a token from the running local broker',
    async () => {
      writeFileSync(
        join(consumer, 'get-token.mjs'),
        [
          "import { TokenBrokerClient } from '@token-broker/client';",
          'const credentials = { accessKeyId: process.env.KEY_ID, secretAccessKey: process.env.KEY_SECRET };',
          "const broker = new TokenBrokerClient({ endpoint: process.env.BROKER_URL, region: 'us-east-1', credentials });",
          `const token = await broker.getToken('${CONNECTION}');`,
          "console.log(JSON.stringify({ fp: (await import('node:crypto')).createHash('sha256').update(token.accessToken).digest('hex').slice(0, 16), expiresIn: token.expiresIn, printed: JSON.stringify(token) }));",
        ].join('\n'),
      );
      const r = await node('get-token.mjs');
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);

      // The five lines of the package README, as printed there (with this broker's URL and connection).
      const readme = readFileSync(join(consumer, 'node_modules/@token-broker/client/README.md'), 'utf8');
      const lines = /```js\n([\s\S]*?)```/.exec(readme)![1]!;
      expect(lines.trim().split('\n')).toHaveLength(5);
      writeFileSync(
        join(consumer, 'readme.mjs'),
        lines.replace('http://127.0.0.1:8787', broker!.url).replace("getToken('demo')", `getToken('${CONNECTION}')`),
      );
      const fromReadme = await node('readme.mjs');
      expect(fromReadme.stderr).toBe('');
      expect(fromReadme.stdout).toMatch(/^Bearer \d+\n$/);
      const out = JSON.parse(r.stdout) as { fp: string; expiresIn: number; printed: string };
      expect(out.fp).toBe(fingerprint('pkg-tok-1'));
      expect(out.expiresIn).toBeGreaterThan(500);
      // The token object does not print its token.
      expect(out.printed).toContain('[token redacted]');
      expect(out.printed).not.toContain('pkg-tok');
    },
    SLOW,
  );

  it(
    'TypeScript (strict, exactOptionalPropertyTypes, NodeNext, no skipLibCheck) compiles a consumer of the main entry without undici installed',
    async () => {
      const install = await npm(
        ['install', '--prefer-offline', '--no-package-lock', '--no-save', tarball, `@types/node@${devVersion('@types/node')}`],
        consumer,
      );
      expect(install.code, install.stderr).toBe(0);
      expect(existsSync(join(consumer, 'node_modules/undici'))).toBe(false);
      writeFileSync(
        join(consumer, 'main.ts'),
        [
          "import { TokenBrokerClient, RateLimitedError, type BrokerToken, type InvalidateResult } from '@token-broker/client';",
          "const broker = new TokenBrokerClient({ endpoint: 'https://abc.execute-api.eu-west-1.amazonaws.com/prod', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });",
          'export async function main(): Promise<number> {',
          "  const token: BrokerToken = await broker.getToken('vitesse-staging', { minTtl: 120 });",
          "  const answer: InvalidateResult = await broker.invalidate('vitesse-staging', token.accessToken);",
          "  if (!answer.invalidated && answer.reason === 'deferred') return answer.retryAfterSeconds;",
          "  return token.expiresAt.getTime() + (token.scope?.length ?? 0) + (new RateLimitedError('x').retryAfterSeconds ?? 0);",
          '}',
        ].join('\n'),
      );
      const r = await tsc(['main.ts']);
      expect(r.stdout + r.stderr).toBe('');
      expect(r.code).toBe(0);

      // The same compiler settings do catch a mistake (the check is not vacuous).
      writeFileSync(
        join(consumer, 'wrong.ts'),
        "import { TokenBrokerClient } from '@token-broker/client';\nnew TokenBrokerClient({ endpoint: 'x', minTtl: undefined });\n",
      );
      const wrong = await tsc(['wrong.ts']);
      expect(wrong.stdout).toMatch(/exactOptionalPropertyTypes|undefined/);
    },
    SLOW,
  );

  it(
    'plain node: the interceptor (undici installed beside it) heals a 401 from the upstream API',
    async () => {
      const install = await npm(
        [
          'install',
          '--prefer-offline',
          '--no-package-lock',
          '--no-save',
          tarball,
          `@types/node@${devVersion('@types/node')}`,
          `undici@${rootVersion('undici')}`,
        ],
        consumer,
      );
      expect(install.code, install.stderr).toBe(0);
      writeFileSync(
        join(consumer, 'heal.mjs'),
        [
          "import { Agent, request } from 'undici';",
          "import { TokenBrokerClient } from '@token-broker/client';",
          "import { tokenInterceptor } from '@token-broker/client/interceptor';",
          'const credentials = { accessKeyId: process.env.KEY_ID, secretAccessKey: process.env.KEY_SECRET };',
          "const broker = new TokenBrokerClient({ endpoint: process.env.BROKER_URL, region: 'us-east-1', credentials });",
          `const dispatcher = new Agent().compose(tokenInterceptor(broker, { connection: '${CONNECTION}', origin: process.env.API_URL }));`,
          "const res = await request(`${process.env.API_URL}/payments`, { dispatcher, method: 'POST', body: '{\"amount\":1}' });",
          'console.log(JSON.stringify({ status: res.statusCode, body: await res.body.json() }));',
          'await dispatcher.close();',
        ].join('\n'),
      );
      const before = apiHits.length;
      const r = await node('heal.mjs');
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({ status: 200, body: { paid: true } });
      // First attempt with a token the API rejected, then one replay with a new token from the broker.
      const hits = apiHits.slice(before);
      expect(hits).toHaveLength(2);
      expect(hits[0]).not.toBe(hits[1]);
      expect(serial).toBeGreaterThanOrEqual(2);

      writeFileSync(
        join(consumer, 'interceptor.ts'),
        [
          "import { Agent } from 'undici';",
          "import { TokenBrokerClient } from '@token-broker/client';",
          "import { tokenInterceptor, type TokenInterceptorOptions } from '@token-broker/client/interceptor';",
          "const broker = new TokenBrokerClient({ endpoint: 'https://abc.execute-api.eu-west-1.amazonaws.com/prod', dispatcher: new Agent() });",
          "const options: TokenInterceptorOptions = { connection: 'vitesse-staging', origin: 'https://api.example.com', onHealError: (e) => void e };",
          'export const dispatcher = new Agent().compose(tokenInterceptor(broker, options));',
        ].join('\n'),
      );
      const types = await tsc(['interceptor.ts']);
      expect(types.stdout + types.stderr).toBe('');
      expect(types.code).toBe(0);
    },
    SLOW,
  );

  it(
    'esbuild (ESM, platform node): the client bundles with the defaults, the interceptor with the banner, and both run',
    async () => {
      const bundle = async (entry: string, banner?: string) => {
        const result = await build({
          absWorkingDir: consumer,
          entryPoints: [entry],
          bundle: true,
          platform: 'node',
          format: 'esm',
          target: 'node20',
          outfile: join(consumer, 'dist', entry.replace(/\.mjs$/, '.bundle.mjs')),
          logLevel: 'silent',
          ...(banner ? { banner: { js: banner } } : {}),
        });
        expect(result.errors).toEqual([]);
        return join('dist', entry.replace(/\.mjs$/, '.bundle.mjs'));
      };
      // Run the bundles away from node_modules, as in a Lambda zip.
      const client = await node(await bundle('get-token.mjs'));
      expect(client.stderr).toBe('');
      expect(JSON.parse(client.stdout).fp).toMatch(/^[0-9a-f]{16}$/);

      const healed = await node(await bundle('heal.mjs', BANNER));
      expect(healed.stderr).toBe('');
      expect(JSON.parse(healed.stdout)).toEqual({ status: 200, body: { paid: true } });
    },
    SLOW,
  );

  /** The repository's TypeScript compiler, run in the consumer project with the strictest consumer settings. */
  function tsc(files: string[]): Promise<Run> {
    const bin = join(ROOT, 'node_modules/typescript/bin/tsc');
    const flags = [
      '--noEmit',
      '--strict',
      '--exactOptionalPropertyTypes',
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--types',
      'node',
      '--skipLibCheck',
      'false',
    ];
    return run(process.execPath, [bin, ...flags, ...files], { cwd: consumer });
  }
});

function rootVersion(name: string): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  return pkg.dependencies[name]!;
}

function devVersion(name: string): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
  return pkg.devDependencies[name]!;
}
