/**
 * Logging and metrics for the handler: ONE structured JSON line per request that also carries the request's
 * CloudWatch embedded-metric-format (EMF) fields, so a request costs one stdout line, not a log line plus an
 * EMF flush. Metrics carry the `service` dimension plus the dimensions the caller gives (`connection`, `ledger`).
 * Never a token or a secret: tokens appear only as fingerprints.
 *
 * Written here, not with Powertools Logger and Metrics (which wrote the same lines before): the two libraries
 * were about 31 KB of the code read at every cold start, for one JSON line and one EMF object (docs/cold-start.md).
 * The line keeps Powertools' shape (`level`, `message`, `timestamp`, `service`, `xray_trace_id`, then the
 * fields) and its environment variables: POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE,
 * POWERTOOLS_LOG_LEVEL (AWS_LAMBDA_LOG_LEVEL, Lambda's own log-level control, wins when set).
 */
import { DIMENSIONS, METRIC_NAMESPACE, METRICS, type MetricName, SERVICE } from '../contract/telemetry.js';

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

const LEVELS = { DEBUG: 8, INFO: 12, WARN: 16, ERROR: 20, CRITICAL: 24, SILENT: 28 } as const;
type Level = 'INFO' | 'WARN' | 'ERROR';

export interface LoggerOptions {
  env?: NodeJS.ProcessEnv;
  /** Where a line goes (default: INFO to stdout, WARN and ERROR to stderr, as Powertools did). */
  write?: (line: string, level: Level) => void;
  now?: () => number;
}

function threshold(env: NodeJS.ProcessEnv): number {
  for (const name of ['AWS_LAMBDA_LOG_LEVEL', 'POWERTOOLS_LOG_LEVEL', 'LOG_LEVEL']) {
    const v = env[name]?.toUpperCase();
    if (v && v in LEVELS) return LEVELS[v as keyof typeof LEVELS];
  }
  return LEVELS.INFO;
}

/** The trace id Lambda sets per invocation (`Root=1-...;Parent=...;Sampled=1`), as Powertools logs it. */
function traceId(env: NodeJS.ProcessEnv): string | undefined {
  return env._X_AMZN_TRACE_ID?.split(';')[0]?.replace('Root=', '') || undefined;
}

/** Values JSON cannot write as they are: errors by name and message, bigints as strings, cycles left out. */
function safeJson(line: Record<string, unknown>): string {
  const replace = (_k: string, v: unknown) =>
    typeof v === 'bigint' ? v.toString() : v instanceof Error ? { name: v.name, message: v.message, stack: v.stack } : v;
  try {
    return JSON.stringify(line, replace);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(line, (k, v: unknown) => {
      const r = replace(k, v);
      if (typeof r === 'object' && r !== null) {
        if (seen.has(r)) return undefined;
        seen.add(r);
      }
      return r;
    });
  }
}

const defaultWrite = (line: string, level: Level) => (level === 'INFO' ? process.stdout : process.stderr).write(line + '\n');

/** Structured JSON lines: `level`, `message`, `timestamp`, `service`, `xray_trace_id`, then the fields. */
export function jsonLogger(o: LoggerOptions = {}): RequestLog {
  const env = o.env ?? process.env;
  const service = env.POWERTOOLS_SERVICE_NAME || SERVICE;
  const min = threshold(env);
  const write = o.write ?? defaultWrite;
  const now = o.now ?? Date.now;
  const at =
    (level: Level) =>
    (message: string, fields?: Record<string, unknown>): void => {
      if (LEVELS[level] < min) return;
      const trace = traceId(env);
      const line: Record<string, unknown> = {
        level,
        message,
        timestamp: new Date(now()).toISOString(),
        service,
        ...(trace ? { xray_trace_id: trace } : {}),
      };
      // The standard keys are the logger's own: a field of the same name does not replace them.
      if (fields) for (const k of Object.keys(fields)) if (!(k in line)) line[k] = fields[k];
      write(safeJson(line), level);
    };
  return { info: at('INFO'), warn: at('WARN'), error: at('ERROR') };
}

type Unit = 'Count' | 'Milliseconds';

/**
 * EMF metrics, taken per log line: `_aws` (timestamp, namespace, one dimension set: `service` then the given
 * dimensions, the metric names and units), the dimension values, and each metric's value (an array when a
 * metric was recorded more than once, as EMF allows).
 */
export function emfMetrics(o: { env?: NodeJS.ProcessEnv; now?: () => number } = {}): MetricSink {
  const env = o.env ?? process.env;
  const namespace = env.POWERTOOLS_METRICS_NAMESPACE || METRIC_NAMESPACE;
  const now = o.now ?? Date.now;
  let recorded = new Map<string, { unit: Unit; values: number[] }>();
  const add = (name: MetricName, unit: Unit, value: number) => {
    const m = recorded.get(name);
    if (m) m.values.push(value);
    else recorded.set(name, { unit, values: [value] });
  };
  return {
    count: (name, value = 1) => add(name, 'Count', value),
    gauge: (name, value) => add(name, 'Count', value),
    latency: (ms) => add(METRICS.latency, 'Milliseconds', ms),
    take: (dimensions = {}) => {
      if (recorded.size === 0) return {};
      const metrics = [...recorded];
      recorded = new Map();
      const names = [DIMENSIONS.service, ...Object.keys(dimensions).filter((k) => k !== DIMENSIONS.service && dimensions[k])];
      // The `service` dimension's value is the log line's own `service` field (the same name).
      return {
        _aws: {
          Timestamp: now(),
          CloudWatchMetrics: [{ Namespace: namespace, Dimensions: [names], Metrics: metrics.map(([Name, m]) => ({ Name, Unit: m.unit })) }],
        },
        ...Object.fromEntries(names.slice(1).map((k) => [k, dimensions[k]])),
        ...Object.fromEntries(metrics.map(([name, m]) => [name, m.values.length === 1 ? m.values[0] : m.values])),
      };
    },
  };
}

export const noMetrics: MetricSink = { count: () => {}, gauge: () => {}, latency: () => {}, take: () => ({}) };
