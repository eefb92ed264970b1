import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

/**
 * Every stage-dependent setting of the broker, typed and in one place. The stack reads these values and
 * nothing else: no `if (stage === 'prod')` anywhere outside this file.
 * The connection config (upstreams, secrets, callers) lives in `config/<stage>.json`.
 */
export interface StageSettings {
  /** Stack `TokenBroker-<name>`; also the API Gateway stage name. */
  readonly name: string;
  /** Pin the stack to an account/region. Unset: environment-agnostic, the CLI's credentials decide. */
  readonly env?: { readonly account?: string; readonly region?: string };

  /** Table, KMS keys and log groups: RETAIN keeps them when the stack is deleted. Secrets are always RETAIN. */
  readonly removalPolicy: RemovalPolicy.RETAIN | RemovalPolicy.DESTROY;
  /** DynamoDB deletion protection (a delete of the table is refused until turned off). */
  readonly deletionProtection: boolean;
  /** Retention of the function log group and the API access log group. */
  readonly logRetention: RetentionDays;
  /** Broker log level (`POWERTOOLS_LOG_LEVEL`). Tokens and secrets are never logged at any level. */
  readonly logLevel: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** API Gateway execution logging level. Data tracing (request/response bodies) is always off. */
  readonly apiExecutionLogLevel: 'ERROR' | 'INFO';
  /** API Gateway stage throttling (steady requests per second, burst). */
  readonly throttling: { readonly rateLimit: number; readonly burstLimit: number };

  /**
   * Also deny callers outside this AWS Organization (`aws:PrincipalOrgID`), on top of the resource policy's
   * "caller accounts only" (accounts derived from the connections' `callers`).
   */
  readonly principalOrgId?: string;
  /**
   * Private endpoint: the API is reachable only through these execute-api interface VPC endpoints
   * (endpoint type PRIVATE, and the resource policy denies any other `aws:SourceVpce`).
   * Unset: a REGIONAL endpoint.
   */
  readonly privateEndpoint?: { readonly vpcEndpointIds: readonly string[] };

  /**
   * Create the account-level role that lets API Gateway write execution logs (`AWS::ApiGateway::Account`).
   * It is one setting per account and region: turn it off where the platform already manages it.
   */
  readonly apiGatewayAccountLogRole: boolean;

  /** Alarm thresholds; each alarm notifies the stage's SNS topic. */
  readonly alarms: {
    /** Evaluation period of every alarm. */
    readonly period: Duration;
    /** Lambda `Errors` (sum per period) at or above this. */
    readonly functionErrors: number;
    /** Lambda `Throttles` (sum per period) at or above this. */
    readonly functionThrottles: number;
    /** API Gateway `5XXError` (sum per period) at or above this. */
    readonly api5xx: number;
    /** Broker `UpstreamError` (sum per period) at or above this. */
    readonly upstreamErrors: number;
    /** Broker `RateLimited` (sum per period) at or above this. */
    readonly rateLimited: number;
    /** Broker `LedgerRemaining` (minimum per period) at or below this. */
    readonly ledgerRemaining: number;
    /** Broker `StaleToken` (sum per period) at or above this. */
    readonly staleTokens: number;
    /** E-mail addresses subscribed to the alarm topic (they must confirm the subscription). */
    readonly emails: readonly string[];
  };
}

const DEFAULT_ALARMS: StageSettings['alarms'] = {
  period: Duration.minutes(5),
  functionErrors: 1,
  functionThrottles: 1,
  api5xx: 1,
  upstreamErrors: 1,
  rateLimited: 1,
  ledgerRemaining: 2,
  staleTokens: 1,
  emails: [],
};

/** The stages `cdk deploy -c stage=NAME` knows. Add a stage here and a `config/<name>.json` beside it. */
export const STAGES: Readonly<Record<string, StageSettings>> = {
  dev: {
    name: 'dev',
    removalPolicy: RemovalPolicy.DESTROY,
    deletionProtection: false,
    logRetention: RetentionDays.TWO_WEEKS,
    logLevel: 'DEBUG',
    apiExecutionLogLevel: 'INFO',
    throttling: { rateLimit: 50, burstLimit: 100 },
    apiGatewayAccountLogRole: true,
    // A noisy dev upstream should not page anyone: alarm only on repeated failures.
    alarms: { ...DEFAULT_ALARMS, functionErrors: 5, api5xx: 5, upstreamErrors: 5 },
  },
  prod: {
    name: 'prod',
    removalPolicy: RemovalPolicy.RETAIN,
    deletionProtection: true,
    logRetention: RetentionDays.ONE_YEAR,
    logLevel: 'INFO',
    apiExecutionLogLevel: 'ERROR',
    throttling: { rateLimit: 500, burstLimit: 1000 },
    apiGatewayAccountLogRole: true,
    // principalOrgId: 'o-exampleorgid',
    // privateEndpoint: { vpcEndpointIds: ['vpce-0123456789abcdef0'] },
    alarms: DEFAULT_ALARMS,
  },
};

/** A stage that does not exist or whose settings are inconsistent; the app prints the message and exits 1. */
export class StageError extends Error {
  override readonly name = 'StageError';
}

const STAGE_NAME = /^[a-z][a-z0-9-]{0,19}$/;
const ORG_ID = /^o-[a-z0-9]{10,32}$/;
const VPCE_ID = /^vpce-[0-9a-f]{8,17}$/;

/** Checks one stage's settings; throws StageError naming the stage and the setting. */
export function validateStage(s: StageSettings): StageSettings {
  const fail = (msg: string): never => {
    throw new StageError(`stage "${s.name}": ${msg}`);
  };
  if (!STAGE_NAME.test(s.name)) fail('name must be lowercase letters, digits and -, at most 20 characters');
  if (s.principalOrgId !== undefined && !ORG_ID.test(s.principalOrgId)) {
    fail(`principalOrgId "${s.principalOrgId}" is not an organization id (o-...)`);
  }
  if (s.privateEndpoint) {
    if (s.privateEndpoint.vpcEndpointIds.length === 0) fail('privateEndpoint needs at least one vpcEndpointId');
    for (const id of s.privateEndpoint.vpcEndpointIds) {
      if (!VPCE_ID.test(id)) fail(`privateEndpoint: "${id}" is not a VPC endpoint id (vpce-...)`);
    }
  }
  const { rateLimit, burstLimit } = s.throttling;
  if (!(rateLimit > 0 && Number.isInteger(burstLimit) && burstLimit >= 1)) {
    fail('throttling needs rateLimit > 0 and an integer burstLimit >= 1');
  }
  return s;
}

/** The settings of a named stage; StageError for a missing or unknown name. */
export function getStage(name: unknown, stages: Readonly<Record<string, StageSettings>> = STAGES): StageSettings {
  const known = Object.keys(stages).join(', ');
  if (typeof name !== 'string' || name === '') {
    throw new StageError(`no stage given: run with -c stage=NAME (known stages: ${known})`);
  }
  const settings = Object.hasOwn(stages, name) ? stages[name] : undefined;
  if (!settings) throw new StageError(`unknown stage "${name}" (known stages: ${known})`);
  if (settings.name !== name) throw new StageError(`stage "${name}": settings.name is "${settings.name}"`);
  return validateStage(settings);
}
