import { CfnOutput } from 'aws-cdk-lib';
import type { Construct } from 'constructs';

/**
 * A stack output whose logical ID is exactly `id` wherever the construct sits, so that callers, their IaC and
 * the operator CLI find it by name (`ApiUrl`, `TableName`...). One TokenBroker per stack, therefore: a second
 * one fails synth on the duplicate output.
 */
export function stableOutput(scope: Construct, id: string, value: string, description?: string): CfnOutput {
  const output = new CfnOutput(scope, id, { value, ...(description ? { description } : {}) });
  output.overrideLogicalId(id);
  return output;
}
