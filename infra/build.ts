import { existsSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Validations, type App } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadStageConfig } from './broker-config';
import { TokenBrokerStack } from './stack';
import { getStage, StageError, STAGES, type StageSettings } from './stages';

/** The repository root (this file is infra/build.ts). */
export const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface BuildOptions {
  /** Stage name, normally from `-c stage=NAME`. */
  readonly stage: unknown;
  /** Directory holding `<stage>.json` (default `config/` in the repo). */
  readonly configDir?: string;
  readonly projectRoot?: string;
  /** Handler entry override, e.g. a stub for synth before the handler exists (`-c handlerEntry=PATH`). */
  readonly handlerEntry?: string;
  /** Tests: ready-made Lambda code; skips esbuild. */
  readonly code?: lambda.Code;
  /** Tests: a stage table other than STAGES. */
  readonly stages?: Readonly<Record<string, StageSettings>>;
  /** Run cdk-nag AwsSolutions checks (default true). */
  readonly nag?: boolean;
}

/**
 * Adds stack `TokenBroker-<stage>` to the app from that stage's settings and `config/<stage>.json`.
 * Throws StageError or ConfigError (from functions/core/config.ts) with a message meant for a human.
 */
export function buildStage(app: App, opts: BuildOptions): TokenBrokerStack {
  const stage = getStage(opts.stage, opts.stages ?? STAGES);
  const projectRoot = opts.projectRoot ?? PROJECT_ROOT;
  const configDir = opts.configDir ?? join(projectRoot, 'config');
  const { config, source } = loadStageConfig(stage.name, configDir, projectRoot);
  let handlerEntry: string | undefined;
  if (!opts.code) {
    handlerEntry = resolve(opts.handlerEntry ?? join(projectRoot, 'functions/broker/handler.ts'));
    if (!existsSync(handlerEntry)) {
      throw new StageError(`handler entry ${handlerEntry} not found (synth with a stub: -c handlerEntry=PATH)`);
    }
    // esbuild runs from the repo (its node_modules, lockfile and tsconfig), so the entry must be inside it.
    const rel = relative(projectRoot, handlerEntry);
    if (rel.startsWith('..') || isAbsolute(rel)) {
      throw new StageError(`handler entry ${handlerEntry} must be inside the repository (${projectRoot})`);
    }
  }
  const stack = new TokenBrokerStack(app, `TokenBroker-${stage.name}`, {
    stackName: `TokenBroker-${stage.name}`,
    stage,
    config,
    configSource: source,
    projectRoot,
    ...(handlerEntry ? { handlerEntry } : {}),
    ...(opts.code ? { code: opts.code } : {}),
    ...(stage.env ? { env: stage.env } : {}),
    tags: { service: 'token-broker', stage: stage.name },
  });
  // cdk-nag v3 is a policy-validation plugin: synth fails on any unacknowledged AwsSolutions finding.
  // Acknowledgements (with reasons) are also written to the template metadata as an audit trail.
  if (opts.nag ?? true) {
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }));
  }
  return stack;
}
