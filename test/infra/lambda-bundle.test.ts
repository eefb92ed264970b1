/**
 * The prebuilt Lambda in @token-broker/cdk (cdk/scripts/lambda-bundle.ts), as the run's global setup built it:
 * ESM, ESM-first package resolution, and code splitting that keeps the refresh-only modules (the upstream
 * client and Secrets Manager, which functions/broker/compose.ts loads with import() as one module) out of the cold start.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Metafile } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { entryOutput, staticOutputs } from '../../cdk/scripts/lambda-bundle';
import { PREBUILT_LAMBDA_DIR } from '../../cdk/src/lambda-code';
import { PROJECT_ROOT } from '../../infra/build';

const meta = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk/.lambda-meta.json'), 'utf8')) as Metafile;
const entry = entryOutput(meta);
const staticGraph = (from: string) => staticOutputs(meta, from);
const inputsOf = (outputs: Iterable<string>) => new Set([...outputs].flatMap((o) => Object.keys(meta.outputs[o]!.inputs)));

const REFRESH_ONLY = [
  /^functions\/adapters\/upstream-http\.ts$/,
  /^functions\/adapters\/secrets-manager\.ts$/,
  /node_modules\/undici\//,
  /node_modules\/@aws-sdk\/client-secrets-manager\//,
  /node_modules\/zod\//,
  /^functions\/core\/config\.ts$/,
];

describe('the prebuilt Lambda', () => {
  it('is index.mjs (handler index.handler) with the createRequire banner, chunks beside it', () => {
    expect(entry).toBe('cdk/lambda/index.mjs');
    expect(meta.outputs[entry]!.entryPoint).toBe('functions/broker/handler.ts');
    expect(readFileSync(join(PREBUILT_LAMBDA_DIR, 'index.mjs'), 'utf8').slice(0, 200)).toMatch(
      /^import \{ createRequire as (\w+) \} from 'node:module'; const require = \1\(import\.meta\.url\);/,
    );
    expect(meta.outputs[entry]!.exports).toEqual(['handler']);
  });

  it('cold start loads the handler, core, store and sealer, and none of the refresh-only modules', () => {
    const atInit = inputsOf(staticGraph(entry));
    for (const needed of [
      'functions/broker/handler.ts',
      'functions/core/broker.ts',
      'functions/adapters/dynamodb-store.ts',
      'functions/adapters/sealer.ts',
    ]) {
      expect(atInit).toContain(needed);
    }
    for (const lazy of REFRESH_ONLY)
      expect(
        [...atInit].filter((i) => lazy.test(i)),
        String(lazy),
      ).toEqual([]);
  });

  it('the refresh-only modules are in chunks of their own, reached by dynamic import()', () => {
    const all = inputsOf(Object.keys(meta.outputs));
    for (const lazy of REFRESH_ONLY)
      expect(
        [...all].some((i) => lazy.test(i)),
        String(lazy),
      ).toBe(true);
    const dynamic = meta.outputs[entry]!.imports.filter((i) => i.kind === 'dynamic-import').map((i) => i.path);
    const lazyInputs = inputsOf(dynamic.flatMap((d) => [...staticGraph(d)]));
    expect(lazyInputs).toContain('functions/adapters/upstream-http.ts');
    expect(lazyInputs).toContain('functions/adapters/secrets-manager.ts');
  });

  it('cold start imports no node:perf_hooks (the global performance serves; the module loads about ten more)', () => {
    const builtins = staticGraph(entry).flatMap((o) => meta.outputs[o]!.imports.filter((i) => i.external).map((i) => i.path));
    expect(builtins).toContain('node:crypto');
    expect(builtins.filter((b) => /^(node:)?perf_hooks$/.test(b))).toEqual([]);
  });

  it('the project loads two modules lazily: the refresh adapters (both at once) and the config schema', () => {
    // Each lazy module the project adds makes esbuild split the code it shares with the init path into more
    // chunks (one per combination of lazy modules sharing it), and each is one more file read at cold start.
    const lazyProjectEntries = Object.values(meta.outputs)
      .map((o) => o.entryPoint)
      .filter((e): e is string => e !== undefined && e.startsWith('functions/') && e !== 'functions/broker/handler.ts');
    expect(lazyProjectEntries.sort()).toEqual(['functions/broker/refresh-adapters.ts', 'functions/core/config.ts']);
  });

  it('resolves packages ESM-first (mainFields module, main): the AWS SDK from dist-es', () => {
    const sdk = Object.keys(meta.inputs).filter((i) => /node_modules\/@(aws-sdk|smithy)\//.test(i));
    expect(sdk.length).toBeGreaterThan(0);
    expect(sdk.filter((i) => i.includes('/dist-cjs/'))).toEqual([]);
  });
});
