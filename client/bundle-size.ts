/**
 * Measures what the client adds to a caller's bundle: `npx tsx client/bundle-size.ts [--json]`.
 * esbuild, platform node, format esm, minify, as a Lambda bundler would. The AWS credential chain is reported
 * both bundled and external, because callers' Lambdas typically carry it already (or take it from the
 * runtime). The client bundles no undici (types only); the example does, for its upstream calls.
 * Not imported by the client.
 */
import { build, type Metafile } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

export interface Measurement {
  name: string;
  bytes: number;
  /** Bytes from each package (or `client` / `examples` for this repository's code). */
  byPackage: Record<string, number>;
  /** Inputs reached only through a dynamic import(). */
  dynamicOnly: string[];
}

export async function measure(
  name: string,
  entry: string,
  options: { external?: string[]; mainFields?: string[] } = {},
): Promise<Measurement> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minify: true,
    write: false,
    metafile: true,
    logLevel: 'silent',
    external: options.external ?? [],
    // The workspace package resolves to its sources (as in the tests); `module` is esbuild's default condition,
    // which setting `conditions` would otherwise drop.
    conditions: ['@token-broker/source', 'module'],
    ...(options.mainFields ? { mainFields: options.mainFields } : {}),
  });
  const output = result.outputFiles[0];
  if (!output) throw new Error('esbuild produced no output');
  return { name, bytes: output.contents.byteLength, byPackage: byPackage(result.metafile), dynamicOnly: dynamicOnly(result.metafile) };
}

function packageOf(path: string): string {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (match?.[1]) return match[1];
  return path.split('/')[0] ?? path;
}

function byPackage(meta: Metafile): Record<string, number> {
  const sizes: Record<string, number> = {};
  for (const output of Object.values(meta.outputs)) {
    for (const [path, input] of Object.entries(output.inputs)) {
      const pkg = packageOf(path);
      sizes[pkg] = (sizes[pkg] ?? 0) + input.bytesInOutput;
    }
  }
  return sizes;
}

/** Packages that no static import chain from the entry reaches. */
function dynamicOnly(meta: Metafile): string[] {
  const entry = Object.keys(meta.inputs).find((p) => !p.includes('node_modules') && Object.values(meta.outputs)[0]?.entryPoint === p);
  const seen = new Set<string>();
  const stack = entry ? [entry] : [];
  while (stack.length) {
    const path = stack.pop() as string;
    if (seen.has(path)) continue;
    seen.add(path);
    for (const imp of meta.inputs[path]?.imports ?? []) {
      if (imp.kind !== 'dynamic-import' && !imp.external && imp.path in meta.inputs) stack.push(imp.path);
    }
  }
  const dynamic = new Set(
    Object.keys(meta.inputs)
      .filter((p) => !seen.has(p))
      .map(packageOf),
  );
  for (const p of seen) dynamic.delete(packageOf(p));
  return [...dynamic].sort();
}

export const CREDENTIAL_CHAIN = ['@aws-sdk/credential-provider-node'];

export async function measureAll(): Promise<Measurement[]> {
  const esm = ['module', 'main'];
  return Promise.all([
    measure('client, everything bundled', 'client/src/index.ts'),
    measure('client, credential chain external', 'client/src/index.ts', { external: CREDENTIAL_CHAIN }),
    measure('client, everything bundled (mainFields module,main)', 'client/src/index.ts', { mainFields: esm }),
    measure('client, credential chain external (mainFields module,main)', 'client/src/index.ts', {
      mainFields: esm,
      external: CREDENTIAL_CHAIN,
    }),
    measure('examples/payments-lambda.ts, everything bundled', 'examples/payments-lambda.ts'),
    measure('examples/payments-lambda.ts, credential chain external', 'examples/payments-lambda.ts', { external: CREDENTIAL_CHAIN }),
  ]);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const results = await measureAll();
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(results, null, 2));
  } else {
    for (const r of results) {
      const top = Object.entries(r.byPackage)
        .sort((a, b) => b[1] - a[1])
        .map(([p, b]) => `${p} ${(b / 1024).toFixed(1)}K`)
        .join(', ');
      console.log(`${String(r.bytes).padStart(8)} B  ${r.name}\n          ${top}`);
    }
  }
}
