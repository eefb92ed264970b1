import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { configDigest } from '../../../functions/contract/config-digest.js';
import { BROKER_ENV } from '../../../functions/contract/env.js';
import type { BrokerConfig } from '../../../functions/core/config.js';
import { METRIC_NAMESPACE, SERVICE } from '../../../functions/contract/telemetry.js';
import { BUNDLE_CONFIG_FILE, renderBundleConfig } from '../connections.js';
import { LAMBDA_HANDLER } from '../lambda-code.js';
import type { StageSettings } from '../settings.js';
import { type BrokerKeys, DYNAMODB_VIA_SERVICE } from './keys.js';

/**
 * DynamoDB actions the function may call on the table: exactly what functions/adapters/dynamodb-store.ts
 * sends (strongly consistent GetItem, conditional UpdateItem; no Put/Delete/Query/Scan/Batch/Transact).
 * test/infra checks the two stay in step.
 * @internal
 */
export const DYNAMODB_ACTIONS = ['dynamodb:GetItem', 'dynamodb:UpdateItem'];

export interface BrokerFunctionProps {
  readonly stage: string;
  readonly settings: StageSettings;
  readonly removalPolicy: RemovalPolicy;
  readonly code: lambda.Code;
  /** The validated config `code` carries as config.json (its digest tells the function it need not validate it again). */
  readonly config: BrokerConfig;
  readonly table: dynamodb.ITable;
  readonly keys: BrokerKeys;
  /** Secret ARNs (or ARN patterns) the function may read. */
  readonly secretArns: readonly string[];
}

/** The broker Lambda with its own role (one inline policy, no managed policies) and its own log group. */
export class BrokerFunction extends Construct {
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly handler: lambda.Function;

  constructor(scope: Construct, id: string, props: BrokerFunctionProps) {
    super(scope, id);
    const { stage, settings, table, keys } = props;

    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `token-broker ${stage}: the broker function only`,
    });
    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: settings.logRetentionDays, removalPolicy: props.removalPolicy });

    const grants = [
      new iam.PolicyStatement({
        sid: 'WriteOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
      new iam.PolicyStatement({ sid: 'CacheLeaseLedgerItems', actions: DYNAMODB_ACTIONS, resources: [table.tableArn] }),
      // DynamoDB uses the table key with the caller's permissions (kms:ViaService): the function needs them,
      // and only through DynamoDB.
      new iam.PolicyStatement({
        sid: 'TableKeyThroughDynamoDb',
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
        resources: [keys.tableKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': DYNAMODB_VIA_SERVICE } },
      }),
      new iam.PolicyStatement({
        sid: 'SealTokens',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [keys.sealKey.keyArn],
        conditions: { StringEquals: keys.sealContext },
      }),
      new iam.PolicyStatement({
        sid: 'ReadConnectionSecrets',
        actions: ['secretsmanager:GetSecretValue'],
        resources: [...props.secretArns],
      }),
    ];
    for (const statement of grants) this.role.addToPolicy(statement);
    keys.allowSealing(this.role);

    // Memory 512 MB: Lambda CPU scales with memory, and the cold start (parsing the bundle, TLS to KMS and
    // DynamoDB) is CPU-bound; a warm request is microseconds to one GetItem, so more buys nothing after that.
    // Timeout 15 s: a refresh is one upstream attempt (6 s upstream timeout) plus, on invalid_client, a secret
    // re-read and one retry (6 s more), with margin. It stays below the 20 s lease, so an invocation killed at
    // its timeout never outlives the lease it holds, and below API Gateway's 29 s integration timeout, so
    // callers get the broker's own 503, not a gateway 504.
    this.handler = new lambda.Function(this, 'Handler', {
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 512,
      timeout: Duration.seconds(15),
      role: this.role,
      logGroup: this.logGroup,
      description: `token-broker ${stage}: broker`,
      code: props.code,
      handler: LAMBDA_HANDLER,
      environment: {
        [BROKER_ENV.table]: table.tableName,
        [BROKER_ENV.sealKeyArn]: keys.sealKey.keyArn,
        [BROKER_ENV.configFile]: BUNDLE_CONFIG_FILE,
        // The config.json synth validated: the function takes it as is, without loading zod at cold start.
        [BROKER_ENV.configDigest]: configDigest(renderBundleConfig(props.config)),
        POWERTOOLS_SERVICE_NAME: SERVICE,
        POWERTOOLS_METRICS_NAMESPACE: METRIC_NAMESPACE,
        POWERTOOLS_LOG_LEVEL: settings.logLevel,
        // No --enable-source-maps: it costs about 20 ms (16 %) of every cold start, and the broker logs error
        // names, not stacks. The maps ship in the asset for reading a stack by hand.
      },
    });
    Validations.of(this.handler).acknowledge({
      id: 'AwsSolutions-L1',
      reason: 'The broker contract pins Node.js 22 (Runtime.NODEJS_22_X); move deliberately, not on every CDK update.',
    });
  }
}
