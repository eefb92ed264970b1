import type { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type { Connection } from '../../../functions/core/config.js';
import { DIMENSIONS, METRIC_NAMESPACE, type MetricName, SERVICE } from '../../../functions/core/telemetry.js';

/**
 * The broker's own metrics (EMF), named by functions/core/telemetry.ts: every one carries
 * `service=token-broker` and `connection`; the budget gauges add `ledger` (the connection's ledger key).
 */
export function connectionMetric(
  metricName: MetricName,
  connection: string,
  statistic: string,
  period: Duration,
  extra: { ledger?: string; label?: string } = {},
): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRIC_NAMESPACE,
    metricName,
    dimensionsMap: {
      [DIMENSIONS.service]: SERVICE,
      [DIMENSIONS.connection]: connection,
      ...(extra.ledger !== undefined ? { [DIMENSIONS.ledger]: extra.ledger } : {}),
    },
    statistic,
    period,
    ...(extra.label ? { label: extra.label } : {}),
  });
}

/**
 * Slots a rate-limited connection keeps for `expired` refreshes (DESIGN.md "Budget guard"):
 * `rateLimit.reserve`, by default ceil(max / 5), at most max - 1.
 */
export function budgetReserve(rateLimit: { readonly max: number; readonly reserve?: number }): number {
  return rateLimit.reserve ?? Math.min(Math.ceil(rateLimit.max / 5), rateLimit.max - 1);
}

/** The connections that have a rate-limit ledger, with their ledger key. */
export function rateLimited(connections: Iterable<Connection>): (Connection & { rateLimit: NonNullable<Connection['rateLimit']> })[] {
  return [...connections].filter((c): c is Connection & { rateLimit: NonNullable<Connection['rateLimit']> } => c.rateLimit !== undefined);
}
