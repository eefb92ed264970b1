/**
 * Builds @token-broker/cdk (`npm run build` at the repository root or in cdk/):
 * - `lambda/`: the broker Lambda, prebuilt (scripts/lambda-bundle.ts). The construct deploys it as is, with the
 *   stage's validated `config.json` added: synth never runs esbuild and never needs this repository.
 * - `dist/index.cjs`: the construct library, CommonJS (loads in CommonJS and ESM CDK apps and in Jest), with
 *   this repository's own modules (config schema, telemetry names) bundled in; aws-cdk-lib, constructs and
 *   zod stay imports (peer dependencies and a dependency).
 * - `dist/index.d.cts`: its types, bundled into one file (rollup-plugin-dts).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { rollup } from 'rollup';
import { dts } from 'rollup-plugin-dts';
import { bundleLambda } from './lambda-bundle.js';

const PACKAGE_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
const REPO = dirname(PACKAGE_DIR);
/** The package's imports: its peer dependencies and its dependency; everything else is bundled. */
const EXTERNAL = /^(aws-cdk-lib|constructs|zod)(\/|$)/;
const HANDLER_ENTRY = join(REPO, 'functions/broker/handler.ts');

/** Rebuilds `outdir` (default the package's `lambda/`) from functions/broker/handler.ts. */
export async function buildLambda(outdir = join(PACKAGE_DIR, 'lambda')) {
  rmSync(outdir, { recursive: true, force: true });
  const metafile = await bundleLambda(HANDLER_ENTRY, outdir);
  writeFileSync(join(PACKAGE_DIR, '.lambda-meta.json'), JSON.stringify(metafile));
  return metafile;
}

/** @internal */
export async function buildLibrary(outdir = join(PACKAGE_DIR, 'dist')): Promise<void> {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  await build({
    entryPoints: [join(PACKAGE_DIR, 'src/index.ts')],
    outfile: join(outdir, 'index.cjs'),
    bundle: true,
    external: ['aws-cdk-lib', 'aws-cdk-lib/*', 'constructs', 'zod', 'zod/*'],
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // src/lambda-code.ts finds the package from import.meta.url, which CommonJS spells differently.
    define: { 'import.meta.url': '__tokenBrokerModuleUrl' },
    banner: { js: "const __tokenBrokerModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
    logLevel: 'warning',
  });
  // Types: one file, this repository's own modules inlined, the dependencies' types imported.
  const types = await rollup({
    input: join(PACKAGE_DIR, 'src/index.ts'),
    plugins: [dts({ tsconfig: join(PACKAGE_DIR, 'tsconfig.json') })],
    external: (id) => EXTERNAL.test(id),
  });
  await types.write({ file: join(outdir, 'index.d.cts'), format: 'es' });
  await types.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const only = process.argv[2];
  if (only !== '--library') await buildLambda();
  if (only !== '--lambda') await buildLibrary();
}
