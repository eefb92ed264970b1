import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { LOG_FIELDS as F, OPS_LOG_MESSAGE, REQUEST_LOG_MESSAGE } from '../../../functions/contract/telemetry.js';

const isRequest = `${F.message} = "${REQUEST_LOG_MESSAGE}"`;

/**
 * Saved Logs Insights queries on the broker's log group, over the one JSON line the broker writes per request
 * (functions/contract/telemetry.ts LOG_FIELDS) and the operator CLI's audit lines. Each answers one operator
 * question; to narrow one to a connection, add `| filter connection = "NAME"`.
 * @internal test/infra/operations.test.ts reads it.
 */
export const QUERIES: Record<string, logs.QueryStringProps> = {
  // Who fetched tokens: per connection and caller (role and session), tokens served and distinct tokens
  'tokens-served-per-caller': {
    filterStatements: [`${isRequest} and ${F.route} = "token" and ${F.status} = 200`],
    statsStatements: [
      `count(*) as served, count_distinct(${F.tokenFp}) as tokens, min(${F.expiresIn}) as minExpiresIn, latest(@timestamp) as last by ${F.connection}, ${F.caller}`,
    ],
    sort: 'served desc',
  },
  // Why callers got 429 or 502: the cause (ledger_exhausted, reserve, spacing, upstream_429), the upstream error, the budget left
  'refused-429-and-502': {
    fields: [
      '@timestamp',
      F.connection,
      F.caller,
      F.status,
      F.error,
      F.cause,
      F.upstreamError,
      F.refreshReason,
      F.minTtl,
      F.ledgerRemaining,
      F.requestId,
    ],
    filterStatements: [`${isRequest} and (${F.status} = 429 or ${F.status} = 502)`],
    sort: '@timestamp desc',
    limit: 1000,
  },
  // Every upstream token request with its reason (expired, ahead, min_ttl, rotation) and result
  'upstream-refreshes': {
    fields: [
      '@timestamp',
      F.connection,
      F.refreshReason,
      F.outcome,
      F.status,
      F.upstreamError,
      F.tokenFp,
      F.expiresIn,
      F.ledgerRemaining,
      F.caller,
      F.requestId,
    ],
    filterStatements: [`${isRequest} and ispresent(${F.refreshReason})`],
    sort: '@timestamp desc',
    limit: 1000,
  },
  // Invalidation reports and their answers (invalidated, not_current, deferred), and operator actions
  invalidations: {
    fields: ['@timestamp', F.message, F.connection, F.caller, F.tokenFp, F.invalidation, F.status, F.requestId],
    filterStatements: [`(${isRequest} and ${F.route} = "invalidate") or ${F.message} = "${OPS_LOG_MESSAGE}"`],
    sort: '@timestamp desc',
    limit: 1000,
  },
};

export interface BrokerQueriesProps {
  readonly stage: string;
  readonly logGroup: logs.ILogGroup;
}

/** The QUERIES as saved queries, in the Logs Insights folder `TokenBroker-<stage>`. */
export class BrokerQueries extends Construct {
  constructor(scope: Construct, id: string, props: BrokerQueriesProps) {
    super(scope, id);
    for (const [name, query] of Object.entries(QUERIES)) {
      new logs.QueryDefinition(this, name, {
        queryDefinitionName: `TokenBroker-${props.stage}/${name}`,
        queryString: new logs.QueryString(query),
        logGroups: [props.logGroup],
      });
    }
  }
}
