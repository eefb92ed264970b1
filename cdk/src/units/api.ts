import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { type ErrorCode, ERROR_STATUS } from '../../../functions/contract/errors.js';
import { formatRetryAfter, RETRY_AFTER_HEADER } from '../../../functions/contract/retry-after.js';
import { CONNECTION_PARAM, ROUTE_KINDS, ROUTES, routePath, routeSegments } from '../../../functions/contract/routes.js';
import type { BrokerConfig } from '../../../functions/core/config.js';
import { callerAccounts, principalArnPatterns } from '../connections.js';
import type { StageSettings } from '../settings.js';

/** What API Gateway's own 429 (stage throttling) tells a caller to wait. */
const THROTTLED_RETRY_AFTER_SECONDS = 1;

export interface BrokerApiProps {
  readonly stage: string;
  readonly settings: StageSettings;
  readonly removalPolicy: RemovalPolicy;
  readonly config: BrokerConfig;
  /** Where the config came from, for error messages. */
  readonly configSource: string;
  readonly handler: lambda.IFunction;
}

/**
 * The REST API: `GET /tokens/{connection}` and `POST /tokens/{connection}/invalidate`, both AWS_IAM, behind a
 * resource policy that admits only the configured callers and explicitly denies everyone else; JSON access
 * logs without bodies; gateway errors in the contract's `{"error","message"}` shape.
 */
export class BrokerApi extends Construct {
  readonly restApi: apigw.RestApi;
  readonly accessLogs: logs.LogGroup;

  constructor(scope: Construct, id: string, props: BrokerApiProps) {
    super(scope, id);
    const { stage, settings } = props;
    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', { retention: settings.logRetentionDays, removalPolicy: props.removalPolicy });
    const resourcePolicy = new iam.PolicyDocument({ statements: resourcePolicyStatements(props) });

    this.restApi = new apigw.RestApi(this, 'RestApi', {
      restApiName: `TokenBroker-${stage}`,
      description: `token-broker ${stage}: ${ROUTE_KINDS.map((kind) => `${ROUTES[kind].method} ${ROUTES[kind].path}`).join(', ')}`,
      endpointConfiguration: settings.privateEndpoint
        ? {
            types: [apigw.EndpointType.PRIVATE],
            vpcEndpoints: settings.privateEndpoint.vpcEndpointIds.map((vpcEndpointId) =>
              ec2.InterfaceVpcEndpoint.fromInterfaceVpcEndpointAttributes(this, `Vpce:${vpcEndpointId}`, { vpcEndpointId, port: 443 }),
            ),
          }
        : { types: [apigw.EndpointType.REGIONAL] },
      policy: resourcePolicy,
      // The account-wide role outlives the stack: other APIs of the account log through it too.
      ...(settings.apiGatewayAccountLogRole
        ? { cloudWatchRole: true, cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN }
        : { cloudWatchRole: false }),
      defaultMethodOptions: { authorizationType: apigw.AuthorizationType.IAM },
      deployOptions: {
        stageName: stage,
        dataTraceEnabled: false, // the response body is a token: never log it
        loggingLevel: settings.apiExecutionLogLevel === 'INFO' ? apigw.MethodLoggingLevel.INFO : apigw.MethodLoggingLevel.ERROR,
        metricsEnabled: true,
        throttlingRateLimit: settings.throttling.rateLimit,
        throttlingBurstLimit: settings.throttling.burstLimit,
        accessLogDestination: new apigw.LogGroupLogDestination(this.accessLogs),
        accessLogFormat: apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
      },
    });
    // A changed resource policy only takes effect with a new deployment: make it part of the deployment's identity.
    this.restApi.latestDeployment?.addToLogicalId({ resourcePolicy });

    const validator = new apigw.RequestValidator(this, 'Validator', {
      restApi: this.restApi,
      validateRequestParameters: true, // the {connection} path parameter
      validateRequestBody: true, // no models: the handler validates bodies with the contract's error shape
    });
    const integration = new apigw.LambdaIntegration(props.handler, { proxy: true, allowTestInvoke: false });
    const methodOptions: apigw.MethodOptions = {
      authorizationType: apigw.AuthorizationType.IAM,
      requestValidator: validator,
      requestParameters: { [`method.request.path.${CONNECTION_PARAM}`]: true },
    };
    // The contract's routes, resource by resource: /tokens/{connection} (GET), /tokens/{connection}/invalidate (POST).
    const resourceAt = (segments: string[]) =>
      segments.reduce<apigw.IResource>((parent, part) => parent.getResource(part) ?? parent.addResource(part), this.restApi.root);
    const methods = ROUTE_KINDS.map((kind) => resourceAt(routeSegments(kind)).addMethod(ROUTES[kind].method, integration, methodOptions));
    this.addGatewayResponses();
    this.acknowledgeNagFindings(methods);
  }

  private addGatewayResponses(): void {
    const headers = { 'Cache-Control': "'no-store'", 'Content-Type': "'application/json'" };
    // Fixed messages: API Gateway's own ($context.error.messageString) can quote the canonical request of a
    // bad signature, X-Amz-Security-Token included.
    // [id, type, the contract's code, message, answer with the code's status (else API Gateway's own 4xx/5xx)]
    const responses: [string, apigw.ResponseType, ErrorCode, string, boolean][] = [
      ['Default4xx', apigw.ResponseType.DEFAULT_4XX, 'invalid_request', 'request refused by API Gateway', false],
      ['Default5xx', apigw.ResponseType.DEFAULT_5XX, 'internal', 'internal error', false],
      ['AccessDenied', apigw.ResponseType.ACCESS_DENIED, 'forbidden', 'caller is not allowed to call this API', true],
      [
        'MissingAuth',
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        'forbidden',
        'unknown route, or the request is not signed (SigV4, service execute-api)',
        true,
      ],
      [
        'InvalidSignature',
        apigw.ResponseType.INVALID_SIGNATURE,
        'forbidden',
        'the request signature does not match (SigV4, service execute-api)',
        true,
      ],
      ['ExpiredToken', apigw.ResponseType.EXPIRED_TOKEN, 'forbidden', 'the credentials or the signature of the request have expired', true],
      ['NotFound', apigw.ResponseType.RESOURCE_NOT_FOUND, 'not_found', 'unknown route', true],
      [
        'Throttled',
        apigw.ResponseType.THROTTLED,
        'rate_limited',
        `too many requests; retry after ${THROTTLED_RETRY_AFTER_SECONDS} s`,
        true,
      ],
    ];
    for (const [id, type, code, message, withStatus] of responses) {
      this.restApi.addGatewayResponse(id, {
        type,
        ...(withStatus ? { statusCode: String(ERROR_STATUS[code]) } : {}),
        responseHeaders:
          type === apigw.ResponseType.THROTTLED
            ? { ...headers, [RETRY_AFTER_HEADER]: `'${formatRetryAfter(THROTTLED_RETRY_AFTER_SECONDS)}'` }
            : headers,
        templates: { 'application/json': JSON.stringify({ error: code, message }) },
      });
    }
  }

  /** cdk-nag AwsSolutions findings that are deliberate, each with its reason. */
  private acknowledgeNagFindings(methods: apigw.Method[]): void {
    for (const m of methods) {
      Validations.of(m).acknowledge({
        id: 'AwsSolutions-COG4',
        reason: 'Callers are AWS workloads: every method uses AWS_IAM (SigV4) authorisation, not Cognito.',
      });
    }
    Validations.of(this.restApi.deploymentStage).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason:
        'Internal, IAM-authorised API behind an account/organisation resource policy with stage throttling; ' +
        'a WAF web ACL adds cost without protecting anything SigV4 does not already.',
    });
    const cloudWatchRole = this.restApi.node.tryFindChild('CloudWatchRole');
    if (cloudWatchRole) {
      Validations.of(cloudWatchRole).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason:
          "The account-level role API Gateway uses to write execution and access logs; AWS's managed policy is the " +
          'documented one for it and is limited to CloudWatch Logs.',
      });
    }
  }
}

/**
 * Open the two routes only to principals that some connection's `callers` names (by account and
 * aws:PrincipalArn), and deny every other account explicitly, so neither a broader identity policy nor a
 * future allow statement can open the API. One statement for all connections keeps the policy within API
 * Gateway's 8 KB limit at 100 connections; which connection a caller may use is the broker's own, precise
 * check on every request (and the per-connection caller policies).
 */
function resourcePolicyStatements({ stage, settings, config, configSource }: BrokerApiProps): iam.PolicyStatement[] {
  const accounts = callerAccounts(config, configSource);
  const routes = ROUTE_KINDS.map((kind) => `execute-api:/${stage}/${ROUTES[kind].method}${routePath(kind, '*')}`);
  const deny = (sid: string, conditions: Record<string, unknown>) =>
    new iam.PolicyStatement({
      sid,
      effect: iam.Effect.DENY,
      principals: [new iam.AnyPrincipal()],
      actions: ['execute-api:Invoke'],
      resources: ['execute-api:/*'],
      conditions,
    });
  const statements = [
    new iam.PolicyStatement({
      sid: 'AllowConfiguredCallers',
      principals: accounts.map((a) => new iam.AccountPrincipal(a)),
      actions: ['execute-api:Invoke'],
      resources: routes,
      conditions: { ArnLike: { 'aws:PrincipalArn': principalArnPatterns([...config.connections.values()].flatMap((c) => c.callers)) } },
    }),
    deny('DenyOtherAccounts', { StringNotEquals: { 'aws:PrincipalAccount': accounts } }),
  ];
  if (settings.principalOrgId) {
    statements.push(deny('DenyOutsideOrganisation', { StringNotEquals: { 'aws:PrincipalOrgID': settings.principalOrgId } }));
  }
  if (settings.privateEndpoint) {
    statements.push(
      deny('DenyOutsideVpcEndpoints', { StringNotEquals: { 'aws:SourceVpce': [...settings.privateEndpoint.vpcEndpointIds] } }),
    );
  }
  return statements;
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
  // The type only: the message can quote a bad signature's canonical request, session token included.
  ['errorType', '$context.error.responseType'],
]
  .map(([k, v]) => `"${k}":"${v}"`)
  .join(',')}}`;
