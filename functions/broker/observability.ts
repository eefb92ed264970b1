/**
 * Logging and metrics for the handler: ONE structured JSON line per request (Powertools Logger) that also
 * carries the request's CloudWatch embedded-metric-format (EMF) fields (Powertools Metrics serialises them;
 * the logger writes them), so a request costs one stdout line, not a log line plus an EMF flush. Metrics
 * carry the `service` dimension plus the dimensions the caller gives (`connection`, `ledger`).
 * Never a token or a secret: tokens appear only as fingerprints.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { DIMENSIONS, METRIC_NAMESPACE, METRICS, type MetricName, SERVICE } from '../core/telemetry.js';

export interface RequestLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface MetricSink {
  count(name: MetricName, value?: number): void;
  gauge(name: MetricName, value: number): void;
  latency(ms: number): void;
  /**
   * The EMF fields (`_aws` and the values) of the metrics recorded since the last call, under these
   * dimensions, to merge into one log line; clears them. Empty when nothing was recorded.
   */
  take(dimensions?: Record<string, string>): Record<string, unknown>;
}

export { SERVICE };

export function powertoolsLogger(logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE })): RequestLog {
  const at =
    (level: 'info' | 'warn' | 'error') =>
    (message: string, fields?: Record<string, unknown>): void => {
      if (fields) logger[level](message, fields);
      else logger[level](message);
    };
  return { info: at('info'), warn: at('warn'), error: at('error') };
}

export function powertoolsMetrics(): MetricSink {
  const metrics = new Metrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? METRIC_NAMESPACE,
    serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE,
  });
  let recorded = 0;
  const add = (name: MetricName, unit: (typeof MetricUnit)[keyof typeof MetricUnit], value: number) => {
    metrics.addMetric(name, unit, value);
    recorded++;
  };
  return {
    count: (name, value = 1) => add(name, MetricUnit.Count, value),
    gauge: (name, value) => add(name, MetricUnit.Count, value),
    latency: (ms) => add(METRICS.latency, MetricUnit.Milliseconds, ms),
    take: (dimensions = {}) => {
      if (recorded === 0) return {};
      for (const [k, v] of Object.entries(dimensions)) metrics.addDimension(k, v);
      const { [DIMENSIONS.service]: _service, ...emf } = metrics.serializeMetrics() as unknown as Record<string, unknown>;
      metrics.clearMetrics();
      metrics.clearDimensions();
      recorded = 0;
      // The `service` dimension's value is the logger's own `service` field (the same name): the logger writes
      // it, and would drop (and warn about) a second one.
      return emf;
    },
  };
}

export const noMetrics: MetricSink = { count: () => {}, gauge: () => {}, latency: () => {}, take: () => ({}) };
