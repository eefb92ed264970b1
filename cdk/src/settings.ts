/**
 * The broker's config document: `config/<stage>.json` in this repository, `props.config` of the construct.
 * `connections` is the broker's own schema (functions/core/config.ts, the same one the Lambda validates
 * with); `settings` is everything about the deployment that differs between stages. Every setting has a
 * default, so `{ connections }` alone is a complete config. Errors are reported in the broker's format:
 * `invalid config (FILE):` and one line per bad field, `settings.alarms.emails.0: ...`.
 */
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as z from 'zod/mini';
import { STAGE_NAME } from '../../functions/contract/deployment.js';
import { type BrokerConfig, ConfigError, ConnectionsSchema, formatIssues, resolveConnections } from '../../functions/core/config.js';

const boundedInt = (min: number, max: number) => z.int().check(z.gte(min), z.lte(max));
const pattern = (re: RegExp, message: string) => z.string().check(z.regex(re, { message }));

/** CloudWatch Logs retention periods, in days (never-expire is not offered: logs cost money forever). @internal */
export const RETENTION_DAYS: readonly number[] = Object.values(RetentionDays).filter(
  (d): d is number => typeof d === 'number' && d !== RetentionDays.INFINITE,
);

const threshold = (fallback: number) => z._default(boundedInt(1, 1_000_000), fallback);

const AlarmSettingsSchema = z
  .strictObject({
    /** Evaluation period of every alarm, minutes. */
    periodMinutes: z._default(boundedInt(1, 60), 5),
    /** Lambda `Errors` (sum per period) at or above this. */
    functionErrors: threshold(1),
    /** Lambda `Throttles` (sum per period) at or above this. */
    functionThrottles: threshold(1),
    /** API Gateway `5XXError` (sum per period) at or above this. */
    api5xx: threshold(1),
    /** Per connection: failed upstream token requests (sum per period) at or above this. */
    upstreamErrors: threshold(1),
    /** Per connection: stale tokens served after a failed refresh (sum per period) at or above this. */
    staleTokens: threshold(1),
    /** Subscribers of a new alarm topic (each must confirm the subscription e-mail). */
    emails: z._default(z.array(z.email({ message: 'must be an e-mail address' })), []),
    /** An existing SNS topic to notify instead of a new one (e.g. the platform's on-call topic). */
    topicArn: z.optional(
      pattern(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/, 'must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)'),
    ),
  })
  .check(
    z.refine((a) => !(a.topicArn && a.emails.length > 0), {
      message: 'give either emails (the stack creates a topic) or topicArn (an existing topic), not both',
      path: ['topicArn'],
    }),
  );

const StageSettingsSchema = z.strictObject({
  /** Pin this repository's stack to an account and region (the construct ignores it: your stack decides). */
  env: z.optional(
    z.strictObject({
      account: z.optional(pattern(/^\d{12}$/, 'must be a 12-digit account id')),
      region: z.optional(pattern(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be a region name such as eu-west-1')),
    }),
  ),
  /** Table, KMS keys and log groups: `retain` keeps them when the stack is deleted. Secrets are always retained. */
  removalPolicy: z._default(z.enum(['retain', 'destroy']), 'retain'),
  /** DynamoDB deletion protection. */
  deletionProtection: z._default(z.boolean(), true),
  /** Retention of the function and API access log groups, days. */
  logRetentionDays: z._default(
    z.number().check(z.refine((d) => RETENTION_DAYS.includes(d), { message: `must be one of ${RETENTION_DAYS.join(', ')}` })),
    365,
  ),
  /** The broker's log level (POWERTOOLS_LOG_LEVEL). Tokens and secrets are never logged at any level. */
  logLevel: z._default(z.enum(['DEBUG', 'INFO', 'WARN', 'ERROR']), 'INFO'),
  /** API Gateway execution logs. Data tracing (bodies) is always off. */
  apiExecutionLogLevel: z._default(z.enum(['ERROR', 'INFO']), 'ERROR'),
  /** API Gateway stage throttling: steady requests per second and burst. */
  throttling: z._default(
    z.strictObject({
      rateLimit: z.number().check(z.gt(0, { message: 'must be greater than 0' })),
      burstLimit: boundedInt(1, 1_000_000),
    }),
    { rateLimit: 500, burstLimit: 1000 },
  ),
  /** Also deny callers outside this AWS Organization (aws:PrincipalOrgID). */
  principalOrgId: z.optional(pattern(/^o-[a-z0-9]{10,32}$/, 'must be an AWS Organizations id (o-...)')),
  /** Make the API PRIVATE, reachable only through these execute-api interface VPC endpoints. */
  privateEndpoint: z.optional(
    z.strictObject({
      vpcEndpointIds: z
        .array(pattern(/^vpce-[0-9a-f]{8,17}$/, 'must be a VPC endpoint id (vpce-...)'))
        .check(z.minLength(1, { message: 'needs at least one VPC endpoint id' })),
    }),
  ),
  /**
   * Create the account-wide role API Gateway writes execution logs with (AWS::ApiGateway::Account). One per
   * account and region: turn it off where the platform manages it.
   */
  apiGatewayAccountLogRole: z._default(z.boolean(), true),
  alarms: z.prefault(AlarmSettingsSchema, {}),
});

/** The whole document: `config/<stage>.json`, or the construct's `config` prop. */
export const BrokerDocumentSchema = z.strictObject({
  settings: z.prefault(StageSettingsSchema, {}),
  connections: ConnectionsSchema,
});

/** What you write: every setting optional. */
export type TokenBrokerConfig = z.input<typeof BrokerDocumentSchema>;
export type StageSettingsInput = z.input<typeof StageSettingsSchema>;
/** With every default resolved. */
export type StageSettings = z.output<typeof StageSettingsSchema>;

export interface ParsedDocument {
  readonly config: BrokerConfig;
  readonly settings: StageSettings;
}

/** Validates a config document; ConfigError naming `source` and every bad field. */
export function parseBrokerDocument(doc: unknown, source = 'config'): ParsedDocument {
  const result = BrokerDocumentSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error, source));
  return { config: resolveConnections(result.data.connections), settings: result.data.settings };
}

/** A stage name that cannot be used (API Gateway stage, resource names). */
export class StageError extends Error {
  override readonly name = 'StageError';
}

export function validateStageName(name: string): string {
  if (!STAGE_NAME.test(name)) {
    throw new StageError(`stage "${name}": a stage name is lowercase letters, digits and -, starting with a letter, at most 20 characters`);
  }
  return name;
}
