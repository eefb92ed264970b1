import { ArnFormat, Stack } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { OPS_LOG_STREAM } from '../../../functions/contract/telemetry.js';
import { DYNAMODB_VIA_SERVICE } from '../units/keys.js';

/** Item kinds the operator CLI reads and edits: `tok#<connection>` and `rl#<ledger key>`. */
const OPS_ITEM_KEYS = ['tok#*', 'rl#*'];

export interface OpsPolicyProps {
  readonly stage: string;
  readonly table: dynamodb.ITable;
  readonly tableKey: kms.IKey;
  readonly handler: lambda.IFunction;
  readonly logGroup: logs.ILogGroup;
}

/**
 * Exactly what the operator CLI (`npm run ops`) needs, for an operator role to attach:
 * - this stack's outputs (table and function names);
 * - GetItem and UpdateItem on the broker's own items only (`tok#`, `rl#`: status, reset, refresh);
 * - the table key, only through DynamoDB and only for this table: DynamoDB decrypts the table's data key
 *   with the caller's permissions (once per caller every few minutes), for reads and writes alike;
 * - GetFunction on the broker (to read the deployed `config.json`);
 * - its audit lines into one stream (`ops-cli`) of the broker's log group, where the saved queries look.
 * No access to the seal key: the CLI never opens a cached token. No Scan, Query, Put or Delete.
 */
export function opsPolicy(scope: Construct, id: string, props: OpsPolicyProps): iam.ManagedPolicy {
  const stack = Stack.of(scope);
  const group = stack.formatArn({
    service: 'logs',
    resource: 'log-group',
    resourceName: props.logGroup.logGroupName,
    arnFormat: ArnFormat.COLON_RESOURCE_NAME,
  });
  const auditStream = `${group}:log-stream:${OPS_LOG_STREAM}`;
  return new iam.ManagedPolicy(scope, id, {
    managedPolicyName: `TokenBroker-${props.stage}-ops`,
    description: `token-broker ${props.stage}: the operator CLI (npm run ops -- status|reset|refresh --stage ${props.stage})`,
    statements: [
      new iam.PolicyStatement({ sid: 'ReadStackOutputs', actions: ['cloudformation:DescribeStacks'], resources: [stack.stackId] }),
      new iam.PolicyStatement({
        sid: 'TokenAndLedgerItems',
        actions: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
        resources: [props.table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': OPS_ITEM_KEYS } },
      }),
      new iam.PolicyStatement({
        sid: 'TableKeyThroughDynamoDb',
        actions: ['kms:Decrypt'],
        resources: [props.tableKey.keyArn],
        conditions: {
          StringEquals: { 'kms:ViaService': DYNAMODB_VIA_SERVICE, 'kms:EncryptionContext:aws:dynamodb:tableName': props.table.tableName },
        },
      }),
      new iam.PolicyStatement({ sid: 'ReadDeployedConfig', actions: ['lambda:GetFunction'], resources: [props.handler.functionArn] }),
      // PutLogEvents only to the audit stream. CreateLogStream also on the group: IAM may authorise it against
      // the group's ARN rather than the stream's, and creating an empty stream writes nothing.
      new iam.PolicyStatement({
        sid: 'AuditLines',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [auditStream],
      }),
      new iam.PolicyStatement({ sid: 'AuditStreamCreate', actions: ['logs:CreateLogStream'], resources: [group] }),
    ],
  });
}
