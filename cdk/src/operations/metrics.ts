import type { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { DIMENSIONS, METRIC_NAMESPACE, type MetricName, SERVICE } from '../../../functions/contract/telemetry.js';

/**
 * The broker's own metrics (EMF), named by functions/contract/telemetry.ts: every one carries
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
