import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Validations, type App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { TokenBroker, type TokenBrokerConfig } from '../cdk/src/index.js';
import { SERVICE, stackName } from '../functions/contract/index.js';
import { TokenBrokerStack } from './stack.js';
import { loadStage } from './stages.js';

/** The repository root (this file is infra/build.ts). */
export const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CONFIG_DIR = join(PROJECT_ROOT, 'config');

export interface BuildOptions {
  /** Stage name, normally from `-c stage=NAME`. */
  readonly stage: unknown;
  /** Directory holding `<stage>.json` (default `config/` in the repo). */
  readonly configDir?: string;
  /** Run cdk-nag AwsSolutions checks (default true). */
  readonly nag?: boolean;
}

export interface Built {
  readonly stack: TokenBrokerStack;
  readonly broker: TokenBroker;
}

/**
 * Adds stack `TokenBroker-<stage>` to the app: one TokenBroker construct from `config/<stage>.json`.
 * Throws StageError or ConfigError with a message meant for a human.
 */
export function buildStage(app: App, opts: BuildOptions): Built {
  const stage = loadStage(opts.stage, opts.configDir ?? CONFIG_DIR, PROJECT_ROOT);
  const stack = new TokenBrokerStack(app, stackName(stage.name), {
    stackName: stackName(stage.name),
    description: `token-broker (${stage.name}): OAuth 2.0 token broker for internal callers`,
    brokerId: 'Broker',
    ...(stage.settings.env ? { env: stage.settings.env } : {}),
    tags: { service: SERVICE, stage: stage.name },
  });
  const broker = new TokenBroker(stack, 'Broker', {
    stage: stage.name,
    config: stage.document as TokenBrokerConfig,
    configSource: stage.source,
  });
  // cdk-nag v3 is a policy-validation plugin: synth fails on any unacknowledged AwsSolutions finding.
  // Acknowledgements (with reasons) are also written to the template metadata as an audit trail.
  if (opts.nag ?? true) {
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }));
  }
  return { stack, broker };
}
