/**
 * The esbuild settings of the broker Lambda, in one place: the package build (scripts/build.ts) uses them
 * for the shipped asset and the cold-start benchmark (bench/cold-start.ts) for its bare baseline handler,
 * so the two are compared like for like.
 */
import { build, type BuildOptions, type Metafile } from 'esbuild';

/** The handler module is `index.mjs` (Lambda handler `index.handler`); shared and lazy code goes to `chunks/`. */
const LAMBDA_BUNDLE = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  // Code splitting: what compose.ts loads with `import()` (the upstream client and Secrets Manager) lands in
  // chunks of its own, read from disk by the first refresh of a container, not at cold start.
  splitting: true,
  mainFields: ['module', 'main'],
  minify: true,
  sourcemap: true,
  sourcesContent: false,
  outExtension: { '.js': '.mjs' },
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  // Everything is bundled, AWS SDK v3 included, so client versions are pinned by the lockfile and tree-shaken;
  // only node: builtins come from the runtime. CommonJS dependencies still call require(): give them one.
  banner: {
    js: "import { createRequire as __brokerCreateRequire } from 'node:module'; const require = __brokerCreateRequire(import.meta.url);",
  },
  metafile: true,
  logLevel: 'warning',
} as const satisfies BuildOptions;

/** Bundles `entry` as the Lambda entry `index` into `outdir`; returns esbuild's metafile. */
export async function bundleLambda(entry: string, outdir: string): Promise<Metafile> {
  const result = await build({ ...LAMBDA_BUNDLE, entryPoints: { index: entry }, outdir });
  return result.metafile;
}

/** The entry's output file (`.../index.mjs`) in a metafile of bundleLambda. */
export function entryOutput(meta: Metafile): string {
  const entry = Object.keys(meta.outputs).find((o) => /(^|\/)index\.mjs$/.test(o) && meta.outputs[o]!.entryPoint !== undefined);
  if (!entry) throw new Error('no index.mjs entry in the metafile');
  return entry;
}

/** Output files that `import(from)` loads before it returns: `from` and its static imports, transitively. */
export function staticOutputs(meta: Metafile, from = entryOutput(meta)): string[] {
  const seen = new Set([from]);
  const queue = [from];
  while (queue.length > 0) {
    for (const i of meta.outputs[queue.pop()!]!.imports) {
      if (i.kind === 'import-statement' && !i.external && !seen.has(i.path)) {
        seen.add(i.path);
        queue.push(i.path);
      }
    }
  }
  return [...seen];
}
