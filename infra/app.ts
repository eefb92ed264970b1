#!/usr/bin/env node
/**
 * This repository's CDK app, one user of the TokenBroker construct (cdk/): `npx cdk synth -c stage=dev`,
 * `npx cdk deploy -c stage=prod`. A stage is a file, `config/<stage>.json`.
 * It rebuilds the construct's prebuilt Lambda from this checkout first, so a deploy never ships stale code.
 */
import { App } from 'aws-cdk-lib';
import { buildLambda } from '../cdk/scripts/build.js';
import { StageError } from '../cdk/src/settings.js';
import { ConfigError } from '../functions/core/config.js';
import { buildStage, CONFIG_DIR, PROJECT_ROOT } from './build.js';
import { loadStage } from './stages.js';

const app = new App();
try {
  loadStage(app.node.tryGetContext('stage'), CONFIG_DIR, PROJECT_ROOT); // fail fast, before building
  await buildLambda();
  buildStage(app, { stage: app.node.tryGetContext('stage') });
  app.synth();
} catch (err) {
  if (err instanceof StageError || err instanceof ConfigError) {
    // A mistake in the stage or its config: the message says what and where; a stack trace adds nothing.
    console.error(`token-broker: ${err.message}`);
    process.exit(1);
  }
  throw err;
}
