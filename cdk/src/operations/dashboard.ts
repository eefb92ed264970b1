import type { Duration } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type { Connection } from '../../../functions/core/config.js';
import { METRICS, type MetricName } from '../../../functions/contract/telemetry.js';
import { connectionMetric } from './metrics.js';

const graph = (title: string, left: cloudwatch.IMetric[], right: cloudwatch.IMetric[] = [], width = 8) =>
  new cloudwatch.GraphWidget({ title, left, right, width, height: 6 });

export interface DashboardRowsProps {
  readonly period: Duration;
  readonly api: apigw.RestApi;
  readonly handler: lambda.Function;
  readonly table: dynamodb.Table;
  /** The stage-wide alarms (function, API). */
  readonly alarms: cloudwatch.IAlarm[];
}

/** The stage's rows: alarms, API, function, DynamoDB. */
export function stageRows({ period, api, handler, table, alarms }: DashboardRowsProps): cloudwatch.IWidget[][] {
  return [
    [new cloudwatch.AlarmStatusWidget({ title: 'Function and API alarms', alarms, width: 24, height: 3 })],
    [
      graph('API requests and errors', [api.metricCount({ period }), api.metricClientError({ period }), api.metricServerError({ period })]),
      graph('API latency (p50, p99)', [api.metricLatency({ period, statistic: 'p50' }), api.metricLatency({ period, statistic: 'p99' })]),
      graph(
        'Function',
        [handler.metricInvocations({ period }), handler.metricErrors({ period }), handler.metricThrottles({ period })],
        [handler.metricDuration({ period, statistic: 'p99' })],
      ),
    ],
    [
      graph(
        'DynamoDB',
        [table.metricConsumedReadCapacityUnits({ period }), table.metricConsumedWriteCapacityUnits({ period })],
        [table.metric('ConditionalCheckFailedRequests', { period, statistic: 'Sum' })],
        24,
      ),
    ],
  ];
}

/**
 * One row per connection: its alarms; tokens served (by source) and latency; upstream requests by reason
 * and their failures; answers refused (by cause) and invalidation answers; budget and circuit.
 */
export function connectionRow(c: Connection, period: Duration, alarms: cloudwatch.IAlarm[]): cloudwatch.IWidget[] {
  const sum = (name: MetricName) => connectionMetric(name, c.name, 'Sum', period);
  const budget: cloudwatch.IMetric[] = c.rateLimit
    ? [
        connectionMetric(METRICS.ledgerRemaining, c.name, 'Minimum', period, { ledger: c.rateLimit.key, label: 'LedgerRemaining (min)' }),
        connectionMetric(METRICS.ledgerUsed, c.name, 'Maximum', period, { ledger: c.rateLimit.key, label: 'LedgerUsed (max)' }),
      ]
    : [];
  const right: cloudwatch.IMetric[] = [
    ...(c.rateLimit
      ? [connectionMetric(METRICS.nextSlotSeconds, c.name, 'Maximum', period, { ledger: c.rateLimit.key, label: 'NextSlotSeconds (max)' })]
      : []),
    connectionMetric(METRICS.circuitOpen, c.name, 'Maximum', period, { label: 'CircuitOpen (max)' }),
  ];
  const w = 4;
  return [
    new cloudwatch.AlarmStatusWidget({ title: `${c.name}: alarms`, alarms, width: w, height: 6 }),
    graph(
      `${c.name}: tokens served`,
      [METRICS.memoryHit, METRICS.storeHit, METRICS.refreshed, METRICS.waited, METRICS.staleToken].map(sum),
      [connectionMetric(METRICS.latency, c.name, 'p99', period, { label: 'Latency p99 (ms)' })],
      w,
    ),
    graph(
      `${c.name}: upstream requests`,
      [METRICS.refreshExpired, METRICS.refreshAhead, METRICS.refreshMinTtl, METRICS.refreshRotation, METRICS.upstreamErrors].map(sum),
      [],
      w,
    ),
    graph(
      `${c.name}: refused`,
      [
        METRICS.rateLimited,
        METRICS.refusedLedgerExhausted,
        METRICS.refusedReserve,
        METRICS.refusedSpacing,
        METRICS.refusedUpstream429,
        METRICS.upstreamError,
        METRICS.circuitRefusals,
        METRICS.unavailable,
        METRICS.internalError,
      ].map(sum),
      [],
      w,
    ),
    graph(`${c.name}: invalidations`, [METRICS.invalidated, METRICS.invalidationNotCurrent, METRICS.invalidationDeferred].map(sum), [], w),
    graph(c.rateLimit ? `${c.name}: budget (ledger ${c.rateLimit.key}) and circuit` : `${c.name}: circuit`, budget, right, w),
  ];
}
