import { ArnFormat, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { STACK_OUTPUTS } from '../../functions/contract/deployment.js';
import { ROUTE_KINDS, ROUTES, routePath } from '../../functions/contract/routes.js';
import type { BrokerConfig } from '../../functions/core/config.js';
import { secretRefs } from './connections.js';
import { brokerCode } from './lambda-code.js';
import { Operations } from './operations/operations.js';
import { stableOutput } from './outputs.js';
import { parseBrokerDocument, StageError, type StageSettings, type TokenBrokerConfig, validateStageName } from './settings.js';
import { BrokerApi } from './units/api.js';
import { CallerPolicies } from './units/callers.js';
import { BrokerFunction } from './units/function.js';
import { BrokerKeys } from './units/keys.js';
import { ConnectionSecrets } from './units/secrets.js';
import { BrokerTable } from './units/table.js';

export interface TokenBrokerProps {
  /**
   * The broker's config as data: `{ connections, settings? }`, the schema of this project's
   * `config/<stage>.json`. Validated at synth; a mistake throws ConfigError naming the field.
   */
  readonly config: TokenBrokerConfig;
  /** Stage name: API Gateway stage, resource names, SSM parameters `/token-broker/<stage>/...`. Default `default`. */
  readonly stage?: string;
  /** Where `config` came from (a file name), for error messages. Default `config`. */
  readonly configSource?: string;
}

/**
 * The token broker: an IAM-authorised REST API in front of the broker Lambda (prebuilt, shipped in this
 * package), its DynamoDB table (cache, lease, rate-limit ledger) and KMS keys, the connections' secrets, a
 * managed policy per connection for its callers, alarms, a dashboard, saved queries and the operator policy.
 *
 * Outputs (fixed names, so one TokenBroker per stack): `ApiUrl`, `ExecuteApiArnPrefix`, `TableName`,
 * `FunctionName`, `OpsPolicyArn`, `AlarmTopicArn`, `SealKeyArn`, `FunctionLogGroup`, `ApiAccessLogGroup`,
 * `CallerPolicyArn<Connection>`, `SecretsToFill`. SSM parameters `/token-broker/<stage>/url` and
 * `/token-broker/<stage>/execute-api-arn-prefix`.
 */
export class TokenBroker extends Construct {
  readonly stage: string;
  readonly settings: StageSettings;
  /** The validated connections, every default resolved (what the function's `config.json` holds). */
  readonly config: BrokerConfig;
  readonly api: apigw.RestApi;
  /** The API's base URL, `https://{id}.execute-api.{region}.amazonaws.com/{stage}/`. */
  readonly url: string;
  /** `arn:aws:execute-api:{region}:{account}:{api id}/{stage}`: append `/GET/tokens/NAME`, `/POST/tokens/NAME/invalidate`. */
  readonly executeApiArnPrefix: string;
  readonly table: dynamodb.Table;
  readonly function: lambda.Function;
  readonly logGroup: logs.LogGroup;
  readonly tableKey: kms.Key;
  readonly sealKey: kms.Key;
  readonly alarmTopic: sns.ITopic;
  readonly alarms: readonly cloudwatch.Alarm[];
  /** For operator roles: what `npm run ops` needs, nothing more. */
  readonly opsPolicy: iam.ManagedPolicy;
  private readonly callers: CallerPolicies;

  constructor(scope: Construct, id: string, props: TokenBrokerProps) {
    super(scope, id);
    this.stage = validateStageName(props.stage ?? 'default');
    const other = Stack.of(this)
      .node.findAll()
      .find((c) => c instanceof TokenBroker && c !== this);
    if (other) {
      throw new StageError(
        `token-broker: ${other.node.path} is already in this stack; its outputs (ApiUrl, TableName...) have fixed names, so stage "${this.stage}" needs a stack of its own`,
      );
    }
    const source = props.configSource ?? 'config';
    const { config, settings } = parseBrokerDocument(props.config, source);
    this.config = config;
    this.settings = settings;
    const stage = this.stage;
    const removalPolicy = settings.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    const keys = new BrokerKeys(this, 'Keys', { stage, removalPolicy });
    this.tableKey = keys.tableKey;
    this.sealKey = keys.sealKey;
    this.table = new BrokerTable(this, 'Table', {
      key: keys.tableKey,
      removalPolicy,
      deletionProtection: settings.deletionProtection,
    }).table;
    const secrets = new ConnectionSecrets(this, 'Secrets', { stage, refs: secretRefs(config, source) });
    const fn = new BrokerFunction(this, 'Function', {
      stage,
      settings,
      removalPolicy,
      code: brokerCode(this, config),
      config,
      table: this.table,
      keys,
      secretArns: secrets.readableArns,
    });
    this.function = fn.handler;
    this.logGroup = fn.logGroup;
    const api = new BrokerApi(this, 'Api', { stage, settings, removalPolicy, config, configSource: source, handler: fn.handler });
    this.api = api.restApi;
    this.url = this.api.url;
    this.executeApiArnPrefix = Stack.of(this).formatArn({
      service: 'execute-api',
      resource: this.api.restApiId,
      resourceName: this.api.deploymentStage.stageName,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    this.callers = new CallerPolicies(this, 'Callers', { stage, connections: [...config.connections.keys()], restApi: this.api });
    const ops = new Operations(this, 'Operations', {
      stage,
      settings,
      config,
      restApi: this.api,
      handler: fn.handler,
      logGroup: fn.logGroup,
      table: this.table,
      tableKey: keys.tableKey,
    });
    this.alarmTopic = ops.alarmTopic;
    this.alarms = ops.alarms;
    this.opsPolicy = ops.opsPolicy;

    // Stable names for callers, their IaC and the operator CLI.
    const routeSuffixes = ROUTE_KINDS.map((kind) => `/${ROUTES[kind].method}${routePath(kind, 'NAME')}`);
    new ssm.StringParameter(this, 'UrlParameter', {
      parameterName: `/token-broker/${stage}/url`,
      description: `token-broker ${stage}: base URL of the API (${ROUTES.token.method} {url}${routePath('token', 'NAME').slice(1)})`,
      stringValue: this.url,
    });
    new ssm.StringParameter(this, 'ExecuteApiArnPrefixParameter', {
      parameterName: `/token-broker/${stage}/execute-api-arn-prefix`,
      description: `token-broker ${stage}: execute-api ARN prefix for caller policies (+ ${routeSuffixes.join(', ')})`,
      stringValue: this.executeApiArnPrefix,
    });
    stableOutput(this, 'ApiUrl', this.url, `Base URL of the token-broker API; also SSM parameter /token-broker/${stage}/url`);
    stableOutput(
      this,
      'ExecuteApiArnPrefix',
      this.executeApiArnPrefix,
      "Callers in other accounts cannot attach this account's managed policies: grant execute-api:Invoke on " +
        `${routeSuffixes.map((suffix) => `<prefix>${suffix}`).join(' and ')} in their own account`,
    );
    stableOutput(this, STACK_OUTPUTS.table, this.table.tableName);
    stableOutput(this, STACK_OUTPUTS.function, this.function.functionName);
    stableOutput(this, 'OpsPolicyArn', this.opsPolicy.managedPolicyArn, 'Managed policy for operator roles: what npm run ops needs');
    stableOutput(this, 'SealKeyArn', this.sealKey.keyArn);
    stableOutput(this, 'AlarmTopicArn', this.alarmTopic.topicArn);
    stableOutput(this, STACK_OUTPUTS.functionLogGroup, this.logGroup.logGroupName);
    stableOutput(this, 'ApiAccessLogGroup', api.accessLogs.logGroupName);
    if (secrets.created.length > 0) {
      stableOutput(
        this,
        'SecretsToFill',
        secrets.created.join(', '),
        'Secrets this stack created with REPLACE_ME placeholders: fill them in in the console',
      );
    }
  }

  /** The managed policy a caller role in this account attaches to use `connection`. */
  callerPolicy(connection: string): iam.ManagedPolicy {
    const policy = this.callers.policy(connection);
    if (!policy)
      throw new Error(
        `token-broker: no connection "${connection}" (connections: ${[...this.config.connections.keys()].sort().join(', ')})`,
      );
    return policy;
  }

  /**
   * Lets `grantee` get and invalidate `connection`'s tokens (execute-api:Invoke on its two routes). The broker
   * checks the caller against the connection's `callers` too: list the grantee's role there.
   */
  grantInvoke(grantee: iam.IGrantable, connection: string): iam.Grant {
    this.callerPolicy(connection); // unknown connection: fail at synth
    return iam.Grant.addToPrincipal({ grantee, actions: ['execute-api:Invoke'], resourceArns: this.callers.routeArns(connection) });
  }
}
