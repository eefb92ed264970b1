import { join } from 'node:path';
import {
  ArnFormat,
  Aws,
  CfnOutput,
  Duration,
  RemovalPolicy,
  SecretValue,
  Stack,
  Validations,
  type StackProps,
} from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, SourceMapMode } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import type { BrokerConfig } from '../functions/core/config';
import {
  BUNDLE_CONFIG_FILE,
  callerAccounts,
  copyConfigCommand,
  principalArnPatterns,
  secretRefs,
  stageBundleConfig,
  type SecretRef,
} from './broker-config';
import type { StageSettings } from './stages';
import { SEAL_PURPOSE } from '../functions/adapters/sealer';
import { BROKER_ENV } from '../functions/broker/env';

/** The encryption-context purpose the broker puts on every sealed token; the seal key policy requires it. */
export { SEAL_PURPOSE };
/** Namespace and `service` dimension of the broker's EMF metrics (Powertools). */
export const METRICS_NAMESPACE = 'TokenBroker';
export const SERVICE_NAME = 'token-broker';

/** The two routes, as API Gateway method ARN suffixes (`{connection}` in the route = NAME below). */
export const routeArnSuffixes = (connection: string): [string, string] => [
  `GET/tokens/${connection}`,
  `POST/tokens/${connection}/invalidate`,
];

export interface TokenBrokerStackProps extends StackProps {
  readonly stage: StageSettings;
  /** The stage's validated connection config (`loadStageConfig`). */
  readonly config: BrokerConfig;
  /** Where `config/<stage>.json` came from, for error messages. */
  readonly configSource?: string;
  /** Repo root: esbuild's project root and the base of the default handler entry. */
  readonly projectRoot: string;
  /** Handler entry override (default `functions/broker/handler.ts` under projectRoot). */
  readonly handlerEntry?: string;
  /**
   * Tests: ready-made Lambda code (e.g. `Code.fromInline`), handler `index.handler`; skips esbuild and
   * therefore the config.json bundling hook (which is tested on its own).
   */
  readonly code?: lambda.Code;
}

/** DynamoDB actions the function may call on the table. */
export const DYNAMODB_ACTIONS = ['dynamodb:GetItem', 'dynamodb:UpdateItem'];

/** Key administration without key use: enough to manage, rotate, tag and delete the key, never to decrypt. */
const KEY_ADMIN_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:PutKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:RotateKeyOnDemand',
  'kms:ListKeyRotations',
  'kms:ListResourceTags',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:ListGrants',
  'kms:RevokeGrant',
  'kms:ListAliases',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
];

export class TokenBrokerStack extends Stack {
  readonly api: apigw.RestApi;
  readonly fn: lambda.Function;
  readonly table: dynamodb.Table;
  readonly sealKey: kms.Key;
  readonly tableKey: kms.Key;
  readonly alarmTopic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: TokenBrokerStackProps) {
    super(scope, id, {
      description: `token-broker (${props.stage.name}): OAuth 2.0 token broker for internal callers`,
      ...props,
    });
    const { stage, config } = props;
    const source = props.configSource ?? `config/${stage.name}.json`;
    const secrets = secretRefs(config, source);
    const accounts = callerAccounts(config, source);
    const removalPolicy = stage.removalPolicy;

    // ---- Function role (created first: the seal key policy names it) -------------------------------------
    const role = new iam.Role(this, 'BrokerRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `token-broker ${stage.name}: the broker function only`,
    });

    // ---- KMS keys ------------------------------------------------------------------------------------------
    const accountAdmin = () =>
      new iam.PolicyStatement({
        sid: 'KeyAdministrationWithoutUse',
        principals: [new iam.AccountRootPrincipal()],
        actions: KEY_ADMIN_ACTIONS,
        resources: ['*'],
      });
    const viaDynamoDb = { 'kms:ViaService': `dynamodb.${Aws.REGION}.amazonaws.com`, 'kms:CallerAccount': Aws.ACCOUNT_ID };

    // Table SSE key: usable only through DynamoDB (by principals IAM allows: the function, CloudFormation,
    // backup/restore operators), never directly.
    this.tableKey = new kms.Key(this, 'TableKey', {
      description: `token-broker ${stage.name}: DynamoDB table encryption`,
      enableKeyRotation: true,
      removalPolicy,
      pendingWindow: Duration.days(7),
      policy: new iam.PolicyDocument({
        statements: [
          accountAdmin(),
          new iam.PolicyStatement({
            sid: 'UseThroughDynamoDbOnly',
            principals: [new iam.AccountRootPrincipal()],
            actions: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:CreateGrant', 'kms:DescribeKey'],
            resources: ['*'],
            conditions: { StringEquals: viaDynamoDb },
          }),
          new iam.PolicyStatement({
            sid: 'DynamoDbDescribesKey',
            principals: [new iam.ServicePrincipal('dynamodb.amazonaws.com')],
            actions: ['kms:DescribeKey', 'kms:GetKeyPolicy', 'kms:ListGrants'],
            resources: ['*'],
          }),
        ],
      }),
    });

    // Seal key: envelope encryption of cached tokens (AWS Encryption SDK, KMS keyring). Only the function may
    // use it, and only with the broker's encryption context. The account can administer it but not use it
    // (no kms:Encrypt/Decrypt/GenerateDataKey/CreateGrant for the account root).
    const sealContext = { 'kms:EncryptionContext:purpose': SEAL_PURPOSE };
    this.sealKey = new kms.Key(this, 'SealKey', {
      description: `token-broker ${stage.name}: seals cached tokens (envelope encryption)`,
      enableKeyRotation: true,
      removalPolicy,
      pendingWindow: Duration.days(7),
      policy: new iam.PolicyDocument({
        statements: [
          accountAdmin(),
          new iam.PolicyStatement({
            sid: 'BrokerFunctionSealsTokens',
            principals: [new iam.ArnPrincipal(role.roleArn)],
            actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
            resources: ['*'],
            conditions: { StringEquals: sealContext },
          }),
        ],
      }),
    });

    // ---- Table ---------------------------------------------------------------------------------------------
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'ttl',
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: this.tableKey,
      deletionProtection: stage.deletionProtection,
      removalPolicy,
    });

    // ---- Secrets -------------------------------------------------------------------------------------------
    const secretArns: string[] = [];
    const created: string[] = [];
    for (const ref of secrets) secretArns.push(this.secretFor(ref, stage, created));

    // ---- Function ------------------------------------------------------------------------------------------
    const fnLogs = new logs.LogGroup(this, 'BrokerLogs', { retention: stage.logRetention, removalPolicy });

    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'WriteOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [fnLogs.logGroupArn],
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'CacheLeaseLedgerItems',
        // Exactly what functions/adapters/dynamodb-store.ts sends: strongly consistent GetItem and conditional
        // UpdateItem (no Put/Delete/Query/Scan/Batch/Transact). test/infra checks the two stay in step.
        actions: DYNAMODB_ACTIONS,
        resources: [this.table.tableArn],
      }),
    );
    // DynamoDB uses the table key with the caller's permissions (kms:ViaService): the function needs them,
    // and only through DynamoDB.
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'TableKeyThroughDynamoDb',
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
        resources: [this.tableKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${Aws.REGION}.amazonaws.com` } },
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'SealTokens',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [this.sealKey.keyArn],
        conditions: { StringEquals: sealContext },
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'ReadConnectionSecrets',
        actions: ['secretsmanager:GetSecretValue'],
        resources: secretArns,
      }),
    );

    // Memory 512 MB: Lambda CPU scales with memory, and the cold start (parsing a bundle with the SDK clients
    // and the Encryption SDK, TLS to KMS, DynamoDB, Secrets Manager and the upstream) is CPU-bound; a warm
    // request is microseconds to one GetItem, so more memory buys nothing after that.
    // Timeout 15 s: a refresh is one upstream attempt (6 s upstream timeout) plus, on invalid_client, a secret
    // re-read and one retry (6 s more), with margin. It stays below the 20 s lease, so an invocation killed at
    // its timeout never outlives the lease it holds (another container takes over 5 s later), and below API
    // Gateway's 29 s integration timeout, so callers get the broker's own 503, not a gateway 504.
    const common = {
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 512,
      timeout: Duration.seconds(15),
      role,
      logGroup: fnLogs,
      description: `token-broker ${stage.name}: broker`,
      environment: {
        [BROKER_ENV.table]: this.table.tableName,
        [BROKER_ENV.sealKeyArn]: this.sealKey.keyArn,
        [BROKER_ENV.configFile]: BUNDLE_CONFIG_FILE,
        POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL: stage.logLevel,
        NODE_OPTIONS: '--enable-source-maps',
      },
    } satisfies Partial<lambda.FunctionProps>;

    if (props.code) {
      this.fn = new lambda.Function(this, 'Broker', { ...common, code: props.code, handler: 'index.handler' });
    } else {
      const stagedConfig = stageBundleConfig(config);
      const entry = props.handlerEntry ?? join(props.projectRoot, 'functions/broker/handler.ts');
      this.fn = new NodejsFunction(this, 'Broker', {
        ...common,
        entry,
        handler: 'handler',
        projectRoot: props.projectRoot,
        depsLockFilePath: join(props.projectRoot, 'package-lock.json'),
        bundling: {
          format: OutputFormat.ESM,
          target: 'node22',
          minify: true,
          sourceMap: true,
          sourceMapMode: SourceMapMode.DEFAULT,
          sourcesContent: false,
          mainFields: ['module', 'main'],
          // Bundle everything, AWS SDK v3 included, so client versions are pinned by our lockfile and
          // tree-shaken; only node: builtins come from the runtime.
          externalModules: [],
          banner: "import { createRequire as __brokerCreateRequire } from 'node:module'; const require = __brokerCreateRequire(import.meta.url);",
          commandHooks: {
            beforeBundling: () => [],
            beforeInstall: () => [],
            afterBundling: (_inputDir: string, outputDir: string) => [copyConfigCommand(stagedConfig, outputDir)],
          },
        },
      });
    }

    // ---- API -----------------------------------------------------------------------------------------------
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', { retention: stage.logRetention, removalPolicy });
    const stageName = stage.name;
    const routes = ['GET/tokens/*', 'POST/tokens/*/invalidate'].map((r) => `execute-api:/${stageName}/${r}`);
    const denyAll = 'execute-api:/*';
    // Open the two routes only to principals that some connection's `callers` names (by account and
    // aws:PrincipalArn), and deny every other account explicitly, so neither a broader identity policy nor a
    // future allow statement can open the API. One statement for all connections keeps the policy within API
    // Gateway's 8 KB limit at 100 connections; which connection a caller may use is the broker's own, precise
    // check on every request (and the per-connection managed policies below).
    const statements: iam.PolicyStatement[] = [
      new iam.PolicyStatement({
        sid: 'AllowConfiguredCallers',
        principals: accounts.map((a) => new iam.AccountPrincipal(a)),
        actions: ['execute-api:Invoke'],
        resources: routes,
        conditions: { ArnLike: { 'aws:PrincipalArn': principalArnPatterns([...config.connections.values()].flatMap((c) => c.callers)) } },
      }),
      new iam.PolicyStatement({
        sid: 'DenyOtherAccounts',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['execute-api:Invoke'],
        resources: [denyAll],
        conditions: { StringNotEquals: { 'aws:PrincipalAccount': accounts } },
      }),
    ];
    if (stage.principalOrgId) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'DenyOutsideOrganisation',
          effect: iam.Effect.DENY,
          principals: [new iam.AnyPrincipal()],
          actions: ['execute-api:Invoke'],
          resources: [denyAll],
          conditions: { StringNotEquals: { 'aws:PrincipalOrgID': stage.principalOrgId } },
        }),
      );
    }
    if (stage.privateEndpoint) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'DenyOutsideVpcEndpoints',
          effect: iam.Effect.DENY,
          principals: [new iam.AnyPrincipal()],
          actions: ['execute-api:Invoke'],
          resources: [denyAll],
          conditions: { StringNotEquals: { 'aws:SourceVpce': [...stage.privateEndpoint.vpcEndpointIds] } },
        }),
      );
    }

    const resourcePolicy = new iam.PolicyDocument({ statements });
    this.api = new apigw.RestApi(this, 'Api', {
      restApiName: `TokenBroker-${stage.name}`,
      description: `token-broker ${stage.name}: GET /tokens/{connection}, POST /tokens/{connection}/invalidate`,
      endpointConfiguration: stage.privateEndpoint
        ? {
            types: [apigw.EndpointType.PRIVATE],
            vpcEndpoints: stage.privateEndpoint.vpcEndpointIds.map((vpcEndpointId) =>
              ec2.InterfaceVpcEndpoint.fromInterfaceVpcEndpointAttributes(this, `Vpce:${vpcEndpointId}`, {
                vpcEndpointId,
                port: 443,
              }),
            ),
          }
        : { types: [apigw.EndpointType.REGIONAL] },
      policy: resourcePolicy,
      cloudWatchRole: stage.apiGatewayAccountLogRole,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      defaultMethodOptions: { authorizationType: apigw.AuthorizationType.IAM },
      deployOptions: {
        stageName,
        dataTraceEnabled: false, // the response body is a token: never log it
        loggingLevel:
          stage.apiExecutionLogLevel === 'INFO' ? apigw.MethodLoggingLevel.INFO : apigw.MethodLoggingLevel.ERROR,
        metricsEnabled: true,
        throttlingRateLimit: stage.throttling.rateLimit,
        throttlingBurstLimit: stage.throttling.burstLimit,
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
      },
    });

    // A changed resource policy only takes effect with a new deployment: make it part of the deployment's identity.
    this.api.latestDeployment?.addToLogicalId({ resourcePolicy });

    const validator = new apigw.RequestValidator(this, 'Validator', {
      restApi: this.api,
      validateRequestParameters: true, // the {connection} path parameter
      validateRequestBody: true, // no models: the handler validates bodies with the contract's error shape
    });
    const integration = new apigw.LambdaIntegration(this.fn, { proxy: true, allowTestInvoke: false });
    const methodOptions: apigw.MethodOptions = {
      authorizationType: apigw.AuthorizationType.IAM,
      requestValidator: validator,
      requestParameters: { 'method.request.path.connection': true },
    };
    const connectionResource = this.api.root.addResource('tokens').addResource('{connection}');
    const getMethod = connectionResource.addMethod('GET', integration, methodOptions);
    const invalidateMethod = connectionResource.addResource('invalidate').addMethod('POST', integration, methodOptions);
    this.addGatewayResponses();

    // ---- Callers: one managed policy per connection ---------------------------------------------------------
    const outputIds = new Set<string>();
    const uniqueOutputId = (base: string): string => {
      let id = base;
      for (let n = 2; outputIds.has(id); n++) id = `${base}X${n}`;
      outputIds.add(id);
      return id;
    };
    for (const name of [...config.connections.keys()].sort()) {
      const [getSuffix, postSuffix] = routeArnSuffixes(name);
      const arns = [
        this.api.arnForExecuteApi('GET', `/tokens/${name}`, stageName),
        this.api.arnForExecuteApi('POST', `/tokens/${name}/invalidate`, stageName),
      ];
      const policy = new iam.ManagedPolicy(this, `CallerPolicy:${name}`, {
        managedPolicyName: `TokenBroker-${stage.name}-${name}-caller`,
        description: `Get and invalidate tokens of token-broker connection "${name}" (${stage.name}): ${getSuffix}, ${postSuffix}`,
        statements: [
          new iam.PolicyStatement({ sid: 'InvokeTokenBroker', actions: ['execute-api:Invoke'], resources: arns }),
        ],
      });
      new CfnOutput(this, uniqueOutputId(`CallerPolicyArn${pascal(name)}`), {
        description: `Managed policy a caller role attaches to use connection "${name}"`,
        value: policy.managedPolicyArn,
      });
    }

    // ---- Operations ---------------------------------------------------------------------------------------
    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', {
      displayName: `token-broker ${stage.name} alarms`,
      enforceSSL: true,
    });
    for (const email of stage.alarms.emails) this.alarmTopic.addSubscription(new EmailSubscription(email));
    this.addAlarmsAndDashboard(stage);

    // ---- Outputs ------------------------------------------------------------------------------------------
    new CfnOutput(this, 'ExecuteApiArnPrefix', {
      description:
        'Callers in other accounts cannot attach this account\'s managed policies: grant execute-api:Invoke on ' +
        '<prefix>/GET/tokens/NAME and <prefix>/POST/tokens/NAME/invalidate in their own account',
      value: this.formatArn({
        service: 'execute-api',
        resource: this.api.restApiId,
        resourceName: this.api.deploymentStage.stageName,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      }),
    });
    new CfnOutput(this, 'TableName', { value: this.table.tableName });
    new CfnOutput(this, 'SealKeyArn', { value: this.sealKey.keyArn });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarmTopic.topicArn });
    new CfnOutput(this, 'FunctionLogGroup', { value: fnLogs.logGroupName });
    new CfnOutput(this, 'ApiAccessLogGroup', { value: accessLogs.logGroupName });
    if (created.length > 0) {
      new CfnOutput(this, 'SecretsToFill', {
        description: 'Secrets this stack created with REPLACE_ME placeholders: fill them in in the console',
        value: created.join(', '),
      });
    }

    this.addNagSuppressions([getMethod, invalidateMethod]);
  }

  /** A created placeholder secret (name) or a referenced one (ARN); returns the ARN the function may read. */
  private secretFor(ref: SecretRef, stage: StageSettings, created: string[]): string {
    if (ref.kind === 'arn') return ref.arn;
    const secret = new secretsmanager.Secret(this, `Secret:${ref.name.replaceAll('/', ':')}`, {
      secretName: ref.name,
      description:
        `token-broker ${stage.name}: credentials for connection(s) ${ref.connections.join(', ')}. ` +
        `Replace every REPLACE_ME: ${Object.keys(ref.placeholder).join(', ')}`,
      // A placeholder, not a credential: ops put the real values in the console. CloudFormation only
      // rewrites the value if this placeholder's shape changes (e.g. a connection switches grant type).
      secretStringValue: SecretValue.unsafePlainText(JSON.stringify(ref.placeholder)),
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'Upstream client credentials are issued by the third party (Vitesse, Vertex); they cannot be rotated by a ' +
        'rotation Lambda. Ops rotate them in the console; the broker re-reads the secret on invalid_client.',
    });
    created.push(ref.name);
    // Name-based ARN with the 6-character suffix wildcard: covers this secret even if ops recreate it.
    return this.formatArn({
      service: 'secretsmanager',
      resource: 'secret',
      resourceName: `${ref.name}-??????`,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
  }

  private addGatewayResponses(): void {
    const headers = { 'Cache-Control': "'no-store'", 'Content-Type': "'application/json'" };
    const body = (code: string) => ({
      'application/json': `{"error":"${code}","message":$context.error.messageString}`,
    });
    const responses: [string, apigw.ResponseType, string, string?][] = [
      ['Default4xx', apigw.ResponseType.DEFAULT_4XX, 'invalid_request'],
      ['Default5xx', apigw.ResponseType.DEFAULT_5XX, 'internal'],
      ['AccessDenied', apigw.ResponseType.ACCESS_DENIED, 'forbidden', '403'],
      ['MissingAuth', apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, 'forbidden', '403'],
      ['InvalidSignature', apigw.ResponseType.INVALID_SIGNATURE, 'forbidden', '403'],
      ['ExpiredToken', apigw.ResponseType.EXPIRED_TOKEN, 'forbidden', '403'],
      ['NotFound', apigw.ResponseType.RESOURCE_NOT_FOUND, 'not_found', '404'],
      ['Throttled', apigw.ResponseType.THROTTLED, 'rate_limited', '429'],
    ];
    for (const [id, type, code, statusCode] of responses) {
      this.api.addGatewayResponse(id, {
        type,
        ...(statusCode ? { statusCode } : {}),
        responseHeaders: type === apigw.ResponseType.THROTTLED ? { ...headers, 'Retry-After': "'1'" } : headers,
        templates: body(code),
      });
    }
  }

  private addAlarmsAndDashboard(stage: StageSettings): void {
    const a = stage.alarms;
    const period = a.period;
    const broker = (metricName: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName,
        dimensionsMap: { service: SERVICE_NAME },
        statistic,
        period,
      });
    const GTE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD;
    const LTE = cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD;
    const specs: [string, cloudwatch.IMetric, number, cloudwatch.ComparisonOperator, string][] = [
      ['FunctionErrors', this.fn.metricErrors({ period, statistic: 'Sum' }), a.functionErrors, GTE, 'Broker function errors (unhandled or timeouts)'],
      ['FunctionThrottles', this.fn.metricThrottles({ period, statistic: 'Sum' }), a.functionThrottles, GTE, 'Broker function throttled (concurrency)'],
      ['Api5xx', this.api.metricServerError({ period, statistic: 'Sum' }), a.api5xx, GTE, 'API Gateway 5XX responses'],
      ['UpstreamErrors', broker('UpstreamError', 'Sum'), a.upstreamErrors, GTE, 'Upstream token endpoint refused or failed'],
      ['RateLimited', broker('RateLimited', 'Sum'), a.rateLimited, GTE, 'Callers refused: rate-limit ledger exhausted and no usable token'],
      ['LedgerRemaining', broker('LedgerRemaining', 'Minimum'), a.ledgerRemaining, LTE, 'Few upstream token requests left in the rate-limit window'],
      ['StaleToken', broker('StaleToken', 'Sum'), a.staleTokens, GTE, 'Refresh failed while a still-valid token was served'],
    ];
    const action = new SnsAction(this.alarmTopic);
    for (const [name, metric, threshold, comparisonOperator, description] of specs) {
      const alarm = new cloudwatch.Alarm(this, `Alarm${name}`, {
        alarmName: `TokenBroker-${stage.name}-${name}`,
        alarmDescription: `token-broker ${stage.name}: ${description}`,
        metric,
        threshold,
        comparisonOperator,
        evaluationPeriods: 1,
        datapointsToAlarm: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(action);
      alarm.addOkAction(action);
      this.alarms.push(alarm);
    }

    const w = (title: string, left: cloudwatch.IMetric[], right: cloudwatch.IMetric[] = []) =>
      new cloudwatch.GraphWidget({ title, left, right, width: 8, height: 6 });
    new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `TokenBroker-${stage.name}`,
      widgets: [
        [new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 3 })],
        [
          w('API requests and errors', [
            this.api.metricCount({ period }),
            this.api.metricClientError({ period }),
            this.api.metricServerError({ period }),
          ]),
          w('API latency (p50, p99)', [
            this.api.metricLatency({ period, statistic: 'p50' }),
            this.api.metricLatency({ period, statistic: 'p99' }),
          ]),
          w('Function', [
            this.fn.metricInvocations({ period }),
            this.fn.metricErrors({ period }),
            this.fn.metricThrottles({ period }),
          ], [this.fn.metricDuration({ period, statistic: 'p99' })]),
        ],
        [
          w('Upstream errors, rate limited, stale tokens', [
            broker('UpstreamError', 'Sum'),
            broker('RateLimited', 'Sum'),
            broker('StaleToken', 'Sum'),
          ]),
          w('Rate-limit ledger: slots left (min)', [broker('LedgerRemaining', 'Minimum')]),
          w('DynamoDB', [
            this.table.metricConsumedReadCapacityUnits({ period }),
            this.table.metricConsumedWriteCapacityUnits({ period }),
          ], [this.table.metric('ConditionalCheckFailedRequests', { period, statistic: 'Sum' })]),
        ],
      ],
    });
  }

  /** cdk-nag AwsSolutions findings that are deliberate, each with its reason. */
  private addNagSuppressions(methods: apigw.Method[]): void {
    for (const m of methods) {
      Validations.of(m).acknowledge({
        id: 'AwsSolutions-COG4',
        reason: 'Callers are AWS workloads: every method uses AWS_IAM (SigV4) authorisation, not Cognito.',
      });
    }
    Validations.of(this.api.deploymentStage).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason:
        'Internal, IAM-authorised API behind an account/organisation resource policy with stage throttling; ' +
        'a WAF web ACL adds cost without protecting anything SigV4 does not already.',
    });
    Validations.of(this.alarmTopic).acknowledge({
      id: 'AwsSolutions-SNS2',
      reason:
        'Alarm notifications carry alarm names and metric values only, never tokens or secrets; SSE with the ' +
        'aws/sns key cannot be used by CloudWatch alarms and a CMK for this topic adds nothing.',
    });
    const cloudWatchRole = this.api.node.tryFindChild('CloudWatchRole');
    if (cloudWatchRole) {
      Validations.of(cloudWatchRole).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason:
          "The account-level role API Gateway uses to write execution and access logs; AWS's managed policy is the " +
          'documented one for it and is limited to CloudWatch Logs.',
      });
    }
    Validations.of(this.fn).acknowledge({
      id: 'AwsSolutions-L1',
      reason: 'The broker contract pins Node.js 22 (Runtime.NODEJS_22_X); move deliberately, not on every CDK update.',
    });
  }
}

/**
 * Access log line: one JSON object per request, identity and outcome, no bodies or headers.
 * `$context.error.messageString` is already a quoted JSON string, so it goes in unquoted.
 */
const ACCESS_LOG_FORMAT = `{${[
  ['requestId', '$context.requestId'],
  ['extendedRequestId', '$context.extendedRequestId'],
  ['requestTime', '$context.requestTime'],
  ['httpMethod', '$context.httpMethod'],
  ['resourcePath', '$context.resourcePath'],
  ['path', '$context.path'],
  ['status', '$context.status'],
  ['protocol', '$context.protocol'],
  ['responseLength', '$context.responseLength'],
  ['responseLatency', '$context.responseLatency'],
  ['integrationLatency', '$context.integrationLatency'],
  ['integrationStatus', '$context.integrationStatus'],
  ['sourceIp', '$context.identity.sourceIp'],
  ['vpceId', '$context.identity.vpceId'],
  ['accountId', '$context.identity.accountId'],
  ['caller', '$context.identity.caller'],
  ['userArn', '$context.identity.userArn'],
  ['errorType', '$context.error.responseType'],
]
  .map(([k, v]) => `"${k}":"${v}"`)
  .join(',')},"errorMessage":$context.error.messageString}`;

function pascal(name: string): string {
  return name
    .split('-')
    .filter(Boolean)
    .map((p) => p.charAt(0).toUpperCase() + p.slice(1))
    .join('');
}
