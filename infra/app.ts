#!/usr/bin/env node
/**
 * CDK app: `npx cdk synth -c stage=dev`, `npx cdk deploy -c stage=prod`.
 * Context: `stage` (required); `handlerEntry` (optional, synth against another entry, e.g. a stub).
 */
import { App } from 'aws-cdk-lib';
import { ConfigError } from '../functions/core/config';
import { buildStage } from './build';
import { StageError } from './stages';

const app = new App();
try {
  const handlerEntry = app.node.tryGetContext('handlerEntry') as string | undefined;
  buildStage(app, { stage: app.node.tryGetContext('stage'), ...(handlerEntry ? { handlerEntry } : {}) });
  app.synth();
} catch (err) {
  if (err instanceof StageError || err instanceof ConfigError) {
    // A mistake in the stage or its config: the message says what and where; a stack trace adds nothing.
    console.error(`token-broker: ${err.message}`);
    process.exit(1);
  }
  throw err;
}
