/**
 * Vitest global setup: builds @token-broker/cdk's prebuilt Lambda (cdk/lambda/) from this checkout once per
 * run, so the CDK tests synthesise the code being tested, as `cdk synth` does.
 */
import { buildLambda } from '../../cdk/scripts/build.js';

export async function setup(): Promise<void> {
  await buildLambda();
}
