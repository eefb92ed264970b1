/**
 * What the operator CLI (functions/ops) relies on in a deployed stage: the stage name rule, the stack's name
 * and the stack outputs it reads. The app (infra) and the construct (cdk/src) produce them.
 */

/** A stage name: lowercase letters, digits and `-`, starting with a letter, at most 20 characters. */
export const STAGE_NAME = /^[a-z][a-z0-9-]{0,19}$/;

/** The stack of stage `stage` in this repository's app. */
export const stackName = (stage: string) => `TokenBroker-${stage}`;

/** Outputs of the TokenBroker construct that the operator CLI reads. */
export const STACK_OUTPUTS = {
  table: 'TableName',
  function: 'FunctionName',
  functionLogGroup: 'FunctionLogGroup',
} as const;
