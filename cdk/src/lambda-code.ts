/**
 * The broker's Lambda code: the package's prebuilt `lambda/` directory plus the stage's validated
 * `config.json`, staged into one directory and deployed with `lambda.Code.fromAsset`. No bundling at synth.
 *
 * This module sits directly in src/ so that `..` from it is the package root both here (src/lambda-code.ts)
 * and in the build (dist/index.cjs).
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stage } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { Construct } from 'constructs';
import type { BrokerConfig } from '../../functions/core/config.js';
import { BUNDLE_CONFIG_FILE, renderBundleConfig } from './connections.js';

/** The prebuilt Lambda (scripts/build.ts): `index.mjs` (handler `index.handler`), `chunks/`, source maps. @internal test/infra reads it. */
export const PREBUILT_LAMBDA_DIR = fileURLToPath(new URL('../lambda/', import.meta.url));
export const LAMBDA_HANDLER = 'index.handler';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/**
 * Copies the prebuilt code and writes `config.json` beside it, into a directory named by the content's hash
 * (so repeated synths of one config reuse it, and concurrent ones never see a half-written directory).
 * @internal test/infra/config.test.ts calls it.
 */
export function stageLambdaCode(config: BrokerConfig, stagingRoot: string, prebuilt = PREBUILT_LAMBDA_DIR): string {
  if (!existsSync(join(prebuilt, 'index.mjs'))) {
    throw new Error(
      `token-broker: the prebuilt Lambda code is missing (${join(prebuilt, 'index.mjs')}): build @token-broker/cdk first (npm run build)`,
    );
  }
  const configText = renderBundleConfig(config);
  const hash = createHash('sha256');
  for (const file of filesUnder(prebuilt))
    hash
      .update(file)
      .update('\0')
      .update(readFileSync(join(prebuilt, file)))
      .update('\0');
  hash.update(configText);
  const dir = join(stagingRoot, hash.digest('hex').slice(0, 32));
  if (existsSync(join(dir, BUNDLE_CONFIG_FILE))) return dir;
  mkdirSync(stagingRoot, { recursive: true });
  const partial = `${dir}.${process.pid}.${Date.now()}.partial`;
  cpSync(prebuilt, partial, { recursive: true });
  writeFileSync(join(partial, BUNDLE_CONFIG_FILE), configText);
  try {
    renameSync(partial, dir);
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    if (!existsSync(join(dir, BUNDLE_CONFIG_FILE))) throw err; // else: a concurrent synth staged the same content
  }
  return dir;
}

/**
 * The function's code: prebuilt bundle + config.json, as a CDK asset. Staged under the app's output directory
 * (cdk.out), so it goes away with it.
 */
export function brokerCode(scope: Construct, config: BrokerConfig): lambda.Code {
  const outdir = Stage.of(scope)?.outdir;
  if (!outdir) throw new Error('token-broker: TokenBroker must be inside a CDK App (or Stage)');
  return lambda.Code.fromAsset(stageLambdaCode(config, join(outdir, '.token-broker-lambda')));
}
