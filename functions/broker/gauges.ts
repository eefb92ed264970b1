/**
 * The budget gauges: a scheduled invocation of the broker function itself (every minute, `BUDGET_GAUGE_EVENT`)
 * publishes, for every connection, whether its credential circuit is open and, for every rate-limited one,
 * the ledger's used and remaining slots and the seconds until the next slot frees, traffic or not. One log
 * line with its EMF metrics per connection and dimension set; no token is read or opened.
 */
import type { BrokerConfig } from '../core/config.js';
import type { Clock, LedgerState, LedgerStore, TokenStore } from '../core/ports.js';
import { connectionStatus } from '../core/status.js';
import { BUDGET_GAUGE_EVENT, DIMENSIONS, METRICS } from '../contract/telemetry.js';
import type { MetricSink, RequestLog } from './observability.js';

export interface GaugeDeps {
  config: BrokerConfig;
  store: TokenStore;
  ledger: LedgerStore;
  logger: RequestLog;
  metrics: MetricSink;
  clock: Clock;
  marginMs: number;
}

export interface GaugeReport {
  connections: number;
  failed: string[];
}

export function isBudgetGaugeEvent(event: unknown): boolean {
  return (event as { tokenBroker?: unknown } | null)?.tokenBroker === BUDGET_GAUGE_EVENT.tokenBroker;
}

export async function publishBudgetGauges(deps: GaugeDeps): Promise<GaugeReport> {
  const { config, store, ledger, logger, metrics, clock, marginMs } = deps;
  const ledgers = new Map<string, Promise<LedgerState>>();
  const readLedger = (key: string) => {
    let p = ledgers.get(key);
    if (!p) ledgers.set(key, (p = ledger.read(key)));
    return p;
  };
  const failed: string[] = [];
  const connections = [...config.connections.values()];
  const read = await Promise.allSettled(
    connections.map(async (c) => ({
      c,
      item: await store.get(c.name),
      state: c.rateLimit ? await readLedger(c.rateLimit.key) : undefined,
    })),
  );
  const now = clock.now();
  read.forEach((r, i) => {
    const name = connections[i]!.name;
    if (r.status === 'rejected') {
      failed.push(name);
      const err = r.reason as Error;
      logger.warn('budget gauge failed', { connection: name, error: err?.name ?? 'Error', detail: err?.message });
      return;
    }
    const s = connectionStatus(r.value.c, r.value.item, r.value.state, now, marginMs);
    metrics.gauge(METRICS.circuitOpen, s.circuit.state === 'open' ? 1 : 0);
    logger.info('budget', { connection: name, circuit: s.circuit.state, ...metrics.take({ [DIMENSIONS.connection]: name }) });
    if (!s.ledger) return;
    const l = s.ledger;
    metrics.gauge(METRICS.ledgerUsed, l.used);
    metrics.gauge(METRICS.ledgerRemaining, l.remaining);
    metrics.gauge(METRICS.nextSlotSeconds, l.nextSlotSeconds);
    logger.info('budget', {
      connection: name,
      ledgerKey: l.key,
      used: l.used,
      max: l.max,
      remaining: l.remaining,
      nextSlotAt: l.nextSlotAt,
      ...metrics.take({ [DIMENSIONS.connection]: name, [DIMENSIONS.ledger]: l.key }),
    });
  });
  return { connections: connections.length, failed };
}
