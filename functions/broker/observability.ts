/**
 * Logging and metrics for the handler: one structured JSON line per request (Powertools Logger) and
 * CloudWatch embedded-metric-format counters (Powertools Metrics). Never a token or a secret: tokens
 * appear only as fingerprints.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';

export interface RequestLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface MetricSink {
  count(name: string, value?: number): void;
  gauge(name: string, value: number): void;
  latency(ms: number): void;
  flush(): void;
}

export const SERVICE = 'token-broker';

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
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'TokenBroker',
    serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE,
  });
  return {
    count: (name, value = 1) => metrics.addMetric(name, MetricUnit.Count, value),
    gauge: (name, value) => metrics.addMetric(name, MetricUnit.Count, value),
    latency: (ms) => metrics.addMetric('Latency', MetricUnit.Milliseconds, ms),
    flush: () => metrics.publishStoredMetrics(),
  };
}

export const noMetrics: MetricSink = { count: () => {}, gauge: () => {}, latency: () => {}, flush: () => {} };
