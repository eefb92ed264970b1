/**
 * The JSON logger and EMF metrics of functions/broker/observability.ts, which replaced Powertools Logger and
 * Metrics: the same line shape, levels and environment variables, and EMF that CloudWatch accepts.
 */
import { describe, expect, it, vi } from 'vitest';
import { emfMetrics, jsonLogger } from '../../functions/broker/observability.js';
import { METRICS } from '../../functions/contract/telemetry.js';

const T = Date.UTC(2026, 10, 25, 12, 0, 0);

function capture(env: NodeJS.ProcessEnv = {}) {
  const out: { level: string; line: Record<string, unknown>; raw: string }[] = [];
  const log = jsonLogger({
    env,
    now: () => T,
    write: (raw, level) => out.push({ level, raw, line: JSON.parse(raw) as Record<string, unknown> }),
  });
  return { log, out };
}

describe('jsonLogger', () => {
  it('writes one JSON line: level, message, timestamp, service, trace id, then the fields', () => {
    const { log, out } = capture({
      POWERTOOLS_SERVICE_NAME: 'svc',
      _X_AMZN_TRACE_ID: 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1',
    });
    log.info('request', { connection: 'vertex', status: 200, skipped: undefined });
    expect(out).toHaveLength(1);
    expect(out[0]!.raw).not.toContain('\n');
    expect(Object.keys(out[0]!.line)).toEqual(['level', 'message', 'timestamp', 'service', 'xray_trace_id', 'connection', 'status']);
    expect(out[0]!.line).toEqual({
      level: 'INFO',
      message: 'request',
      timestamp: '2026-11-25T12:00:00.000Z',
      service: 'svc',
      xray_trace_id: '1-5759e988-bd862e3fe1be46a994272793',
      connection: 'vertex',
      status: 200,
    });
  });

  it('the service defaults to token-broker; no trace id outside Lambda', () => {
    const { log, out } = capture();
    log.warn('w');
    expect(out[0]!.line).toEqual({ level: 'WARN', message: 'w', timestamp: '2026-11-25T12:00:00.000Z', service: 'token-broker' });
  });

  it('a field cannot replace the standard keys', () => {
    const { log, out } = capture();
    log.info('request', { level: 'DEBUG', message: 'forged', service: 'other', timestamp: 'x', extra: 1 });
    expect(out[0]!.line).toMatchObject({
      level: 'INFO',
      message: 'request',
      service: 'token-broker',
      timestamp: '2026-11-25T12:00:00.000Z',
      extra: 1,
    });
  });

  it('honours POWERTOOLS_LOG_LEVEL, and AWS_LAMBDA_LOG_LEVEL over it', () => {
    const levels = (env: NodeJS.ProcessEnv) => {
      const { log, out } = capture(env);
      log.info('i');
      log.warn('w');
      log.error('e');
      return out.map((o) => o.level);
    };
    expect(levels({})).toEqual(['INFO', 'WARN', 'ERROR']);
    expect(levels({ POWERTOOLS_LOG_LEVEL: 'DEBUG' })).toEqual(['INFO', 'WARN', 'ERROR']);
    expect(levels({ POWERTOOLS_LOG_LEVEL: 'WARN' })).toEqual(['WARN', 'ERROR']);
    expect(levels({ POWERTOOLS_LOG_LEVEL: 'error' })).toEqual(['ERROR']);
    expect(levels({ POWERTOOLS_LOG_LEVEL: 'INFO', AWS_LAMBDA_LOG_LEVEL: 'ERROR' })).toEqual(['ERROR']);
    expect(levels({ POWERTOOLS_LOG_LEVEL: 'nonsense' })).toEqual(['INFO', 'WARN', 'ERROR']);
  });

  it('INFO goes to stdout, WARN and ERROR to stderr', () => {
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const log = jsonLogger({ env: {} });
      log.info('i');
      log.warn('w');
      log.error('e');
      expect(stdout.mock.calls.map((c) => JSON.parse(String(c[0])).message)).toEqual(['i']);
      expect(stderr.mock.calls.map((c) => JSON.parse(String(c[0])).message)).toEqual(['w', 'e']);
      expect(String(stdout.mock.calls[0]![0]).endsWith('}\n')).toBe(true);
    } finally {
      vi.restoreAllMocks();
    }
  });

  it('writes what JSON cannot: errors by name and message, bigints as strings, a cycle left out', () => {
    const { log, out } = capture();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    log.warn('odd', { err: new TypeError('boom'), big: 10n, cyclic });
    expect(out[0]!.line).toMatchObject({ err: { name: 'TypeError', message: 'boom' }, big: '10', cyclic: { a: 1 } });
  });
});

describe('emfMetrics', () => {
  it('nothing recorded: no EMF fields', () => {
    expect(emfMetrics({ env: {} }).take({ connection: 'x' })).toEqual({});
  });

  it('one EMF object per take: namespace, {service, ...dimensions}, names and units, values; then cleared', () => {
    const m = emfMetrics({ env: {}, now: () => T });
    m.count(METRICS.refreshed);
    m.gauge(METRICS.ledgerRemaining, 9);
    m.latency(3.5);
    expect(m.take({ connection: 'vertex', ledger: 'shared' })).toEqual({
      _aws: {
        Timestamp: T,
        CloudWatchMetrics: [
          {
            Namespace: 'TokenBroker',
            Dimensions: [['service', 'connection', 'ledger']],
            Metrics: [
              { Name: 'Refreshed', Unit: 'Count' },
              { Name: 'LedgerRemaining', Unit: 'Count' },
              { Name: 'Latency', Unit: 'Milliseconds' },
            ],
          },
        ],
      },
      connection: 'vertex',
      ledger: 'shared',
      Refreshed: 1,
      LedgerRemaining: 9,
      Latency: 3.5,
    });
    expect(m.take()).toEqual({});
  });

  it('a metric recorded twice has both values (an EMF array); the namespace comes from POWERTOOLS_METRICS_NAMESPACE', () => {
    const m = emfMetrics({ env: { POWERTOOLS_METRICS_NAMESPACE: 'Custom' } });
    m.count(METRICS.upstreamErrors);
    m.count(METRICS.upstreamErrors, 2);
    const emf = m.take() as { _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][] }[] }; UpstreamErrors: unknown };
    expect(emf.UpstreamErrors).toEqual([1, 2]);
    expect(emf._aws.CloudWatchMetrics[0]).toMatchObject({ Namespace: 'Custom', Dimensions: [['service']] });
  });

  it('a log line with the EMF fields is what CloudWatch reads: every dimension and metric named in _aws is a top-level field', () => {
    const { log, out } = capture();
    const m = emfMetrics({ env: {} });
    m.count(METRICS.memoryHit);
    log.info('request', { connection: 'vertex', ...m.take({ connection: 'vertex' }) });
    const line = out[0]!.line as Record<string, unknown> & {
      _aws: { CloudWatchMetrics: { Dimensions: string[][]; Metrics: { Name: string }[] }[] };
    };
    const d = line._aws.CloudWatchMetrics[0]!;
    for (const name of [...d.Dimensions.flat(), ...d.Metrics.map((x) => x.Name)]) expect(line[name], name).toBeDefined();
    expect(line.service).toBe('token-broker');
  });
});
