/**
 * The broker's telemetry vocabulary: metric names, dimensions and log fields. One source for the code that
 * emits them (functions/broker) and the infrastructure that alarms and queries on them (the CDK construct,
 * the operator CLI), so a renamed metric cannot silently orphan an alarm. Pure data.
 */

/** CloudWatch namespace of every broker metric (EMF). */
export const METRIC_NAMESPACE = 'TokenBroker';
/** Powertools `service` dimension (present on every metric). */
export const SERVICE = 'token-broker';

/**
 * Dimensions. Every per-request metric carries `{service, connection}`. Budget figures of a rate-limited
 * connection carry `{service, connection, ledger}` (ledger = the connection's `rateLimit.key`).
 */
export const DIMENSIONS = { service: 'service', connection: 'connection', ledger: 'ledger' } as const;

export const METRICS = {
  // ---- per request, {service, connection} ----
  /** GET answered from the container's memory / the store / a refresh this request made / another's refresh. */
  memoryHit: 'MemoryHit',
  storeHit: 'StoreHit',
  refreshed: 'Refreshed',
  waited: 'Waited',
  /** A refresh failed and a still-valid cached token was served instead. */
  staleToken: 'StaleToken',
  /** Upstream token requests sent, one metric per reason (docs/protocol.md "Refresh reasons"). */
  refreshExpired: 'RefreshExpired',
  refreshAhead: 'RefreshAhead',
  refreshMinTtl: 'RefreshMinTtl',
  refreshRotation: 'RefreshRotation',
  /** Any failed upstream token request (unreachable, 5xx, OAuth error, nonsense, 429). */
  upstreamErrors: 'UpstreamErrors',
  /** 429 answers, one metric per cause. */
  refusedLedgerExhausted: 'RefusedLedgerExhausted',
  refusedReserve: 'RefusedReserve',
  refusedSpacing: 'RefusedSpacing',
  refusedUpstream429: 'RefusedUpstream429',
  /** 503 answered because a token fetched by another container waits to be stored (the connection is held). */
  refusedHeld: 'RefusedHeld',
  /** 502 answered because the connection's credential circuit is open. */
  circuitRefusals: 'CircuitRefusals',
  /** Answers by error code. */
  rateLimited: 'RateLimited',
  upstreamError: 'UpstreamError',
  unavailable: 'Unavailable',
  internalError: 'InternalError',
  forbidden: 'Forbidden',
  clientError: 'ClientError',
  /** POST /invalidate answers. */
  invalidated: 'Invalidated',
  invalidationNotCurrent: 'InvalidationNotCurrent',
  invalidationDeferred: 'InvalidationDeferred',
  /** Handler latency, milliseconds. */
  latency: 'Latency',

  // ---- budget gauges, published at least once a minute (scheduled invocation) ----
  /** {service, connection, ledger}: slots used in the current window, slots left, seconds until the next slot frees (0 when one is free). */
  ledgerUsed: 'LedgerUsed',
  ledgerRemaining: 'LedgerRemaining',
  nextSlotSeconds: 'NextSlotSeconds',
  /** {service, connection}: 1 while the connection's credential circuit is open, else 0. */
  circuitOpen: 'CircuitOpen',
} as const;

export type MetricName = (typeof METRICS)[keyof typeof METRICS];

/**
 * Fields of the one JSON log line per request (Powertools Logger, message `request`), for Logs Insights
 * queries. Tokens appear only as fingerprints.
 */
export const LOG_FIELDS = {
  message: 'message',
  requestId: 'requestId',
  caller: 'caller',
  connection: 'connection',
  route: 'route',
  outcome: 'outcome',
  refreshReason: 'refreshReason',
  cause: 'cause',
  tokenFp: 'tokenFp',
  expiresIn: 'expiresIn',
  minTtl: 'minTtl',
  status: 'status',
  latencyMs: 'latencyMs',
  error: 'error',
  upstreamError: 'upstreamError',
  ledgerRemaining: 'ledgerRemaining',
  invalidation: 'invalidation',
} as const;

/** The `message` of the per-request log line, and of an operator action's audit line. */
export const REQUEST_LOG_MESSAGE = 'request';
export const OPS_LOG_MESSAGE = 'ops';
/** The stream of the broker's log group the operator CLI writes its audit lines to (and its policy allows). */
export const OPS_LOG_STREAM = 'ops-cli';

/**
 * The event a scheduled rule sends the broker function (every minute) so that it publishes the budget
 * gauges of every rate-limited connection and the circuit state of every connection, traffic or not.
 */
export const BUDGET_GAUGE_EVENT = { tokenBroker: 'publish-budget' } as const;
