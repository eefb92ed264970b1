/**
 * The thin HTTP layer: turns an API Gateway proxy event (REST v1; v2 is handled identically) into a
 * request for the core, and the core's answer or error into the contract's HTTP response
 * (docs/design.md "HTTP API"). The caller's identity comes only from the request context that API Gateway
 * filled after verifying SigV4, never from headers or the body.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2, APIGatewayProxyResult, Context } from 'aws-lambda';
import type { ErrorCode } from '../contract/errors.js';
import { CONNECTION_NAME } from '../contract/names.js';
import { formatRetryAfter, RETRY_AFTER_HEADER } from '../contract/retry-after.js';
import { DEFAULT_MIN_TTL_SECONDS, matchRoute, MAX_BODY_BYTES, MAX_MIN_TTL_SECONDS, MIN_TTL_PARAM } from '../contract/routes.js';
import { DIMENSIONS, METRICS, type MetricName, REQUEST_LOG_MESSAGE } from '../contract/telemetry.js';
import { principalArn, principalFromArn } from '../core/authz.js';
import type { InvalidationAnswer, TokenBroker } from '../core/broker.js';
import { BrokerError, invalidRequest, notFound, type RefreshReason, type Refusal } from '../core/errors.js';
import { expiresInSeconds } from '../core/freshness.js';
import type { MetricSink, RequestLog } from './observability.js';

export type ProxyEvent = APIGatewayProxyEvent | APIGatewayProxyEventV2;
export type HttpHandler = (event: ProxyEvent, context?: Pick<Context, 'getRemainingTimeInMillis'>) => Promise<APIGatewayProxyResult>;

/** Time kept back from the Lambda's remaining time to write the response. */
const RESPONSE_MARGIN_MS = 500;

const OUTCOME_METRIC = {
  memory: METRICS.memoryHit,
  store: METRICS.storeHit,
  refreshed: METRICS.refreshed,
  waited: METRICS.waited,
} as const;
const ERROR_METRIC: Partial<Record<ErrorCode, MetricName>> = {
  rate_limited: METRICS.rateLimited,
  upstream_error: METRICS.upstreamError,
  unavailable: METRICS.unavailable,
  internal: METRICS.internalError,
  forbidden: METRICS.forbidden,
};
/** Upstream token requests, by reason (docs/protocol.md "Refresh reasons"). */
const REASON_METRIC: Record<RefreshReason, MetricName> = {
  expired: METRICS.refreshExpired,
  ahead: METRICS.refreshAhead,
  min_ttl: METRICS.refreshMinTtl,
  rotation: METRICS.refreshRotation,
};
/** Refusals, by cause: why a caller got 429 (or 502 for the open circuit, 503 while a fetched token waits). */
const REFUSAL_METRIC: Partial<Record<Refusal, MetricName>> = {
  ledger_exhausted: METRICS.refusedLedgerExhausted,
  reserve: METRICS.refusedReserve,
  spacing: METRICS.refusedSpacing,
  upstream_429: METRICS.refusedUpstream429,
  circuit_open: METRICS.circuitRefusals,
  held: METRICS.refusedHeld,
};
const INVALIDATION_METRIC = {
  invalidated: METRICS.invalidated,
  not_current: METRICS.invalidationNotCurrent,
  deferred: METRICS.invalidationDeferred,
} as const;

const BASE_HEADERS = {
  'Content-Type': 'application/json',
  'Cache-Control': 'no-store',
  Pragma: 'no-cache',
  'X-Content-Type-Options': 'nosniff',
};

export interface HttpDeps {
  broker: TokenBroker;
  logger: RequestLog;
  metrics: MetricSink;
  now?: () => number;
}

function requestShape(event: ProxyEvent) {
  if ('version' in event && event.version === '2.0') {
    const e = event as APIGatewayProxyEventV2 & { requestContext: { authorizer?: { iam?: { userArn?: string } } } };
    return {
      method: e.requestContext.http.method,
      path: e.rawPath,
      query: e.queryStringParameters ?? {},
      multi: {} as Record<string, string[] | undefined>,
      userArn: e.requestContext.authorizer?.iam?.userArn,
      requestId: e.requestContext.requestId,
      body: e.body,
      base64: e.isBase64Encoded,
    };
  }
  const e = event as APIGatewayProxyEvent;
  return {
    method: e.httpMethod,
    path: e.path,
    query: e.queryStringParameters ?? {},
    multi: e.multiValueQueryStringParameters ?? {},
    userArn: e.requestContext?.identity?.userArn,
    requestId: e.requestContext?.requestId as string | undefined,
    body: e.body,
    base64: e.isBase64Encoded,
  };
}

/** Parses `min_ttl`: an integer 0..86400, default 60 (contract/routes.ts). */
function parseMinTtl(query: Record<string, string | undefined>, multi: Record<string, string[] | undefined>): number {
  if ((multi[MIN_TTL_PARAM]?.length ?? 0) > 1) throw invalidRequest(`${MIN_TTL_PARAM} must be given once`);
  const raw = query[MIN_TTL_PARAM];
  if (raw === undefined) return DEFAULT_MIN_TTL_SECONDS;
  if (!/^\d{1,5}$/.test(raw) || Number(raw) > MAX_MIN_TTL_SECONDS)
    throw invalidRequest(`${MIN_TTL_PARAM} must be an integer from 0 to ${MAX_MIN_TTL_SECONDS}`);
  return Number(raw);
}

/** Parses the invalidate body `{"access_token": "..."}`. */
function parseInvalidateBody(body: string | null | undefined, base64: boolean): string {
  if (!body) throw invalidRequest('body must be JSON {"access_token": "..."}');
  const text = base64 ? Buffer.from(body, 'base64').toString('utf8') : body;
  if (Buffer.byteLength(text, 'utf8') > MAX_BODY_BYTES)
    throw new BrokerError('invalid_request', 'body is larger than 8 KB', { status: 413 });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw invalidRequest('body must be JSON {"access_token": "..."}');
  }
  const token = (doc as { access_token?: unknown } | null)?.access_token;
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_BODY_BYTES) {
    throw invalidRequest('access_token must be a non-empty string');
  }
  return token;
}

/** The 200 body of POST /invalidate: `{"invalidated": true}` or `{"invalidated": false, "reason": ..., "retry_after"?: N}`. */
function invalidationBody(answer: InvalidationAnswer): Record<string, unknown> {
  if (answer.invalidated) return { invalidated: true };
  if (answer.reason === 'deferred') return { invalidated: false, reason: 'deferred', retry_after: answer.retryAfterSeconds };
  return { invalidated: false, reason: answer.reason };
}

function errorResponse(e: BrokerError): APIGatewayProxyResult {
  const headers: Record<string, string> = { ...BASE_HEADERS };
  if (e.extra.retryAfterSeconds !== undefined) headers[RETRY_AFTER_HEADER] = formatRetryAfter(e.extra.retryAfterSeconds);
  return {
    statusCode: e.status,
    headers,
    body: JSON.stringify({
      error: e.code,
      message: e.message,
      ...(e.extra.upstreamError ? { upstream_error: e.extra.upstreamError } : {}),
    }),
  };
}

export function createHttpHandler(deps: HttpDeps): HttpHandler {
  const now = deps.now ?? Date.now;
  return async (event, context) => {
    // The global `performance`: importing node:perf_hooks would load about ten more Node modules at cold start.
    const started = performance.now();
    const req = requestShape(event);
    const principal = principalFromArn(req.userArn);
    // The audit fields: API Gateway's request id (joins the access log), the verified caller with its session
    // name, and the role it was matched as.
    const fields: Record<string, unknown> = {
      requestId: req.requestId,
      method: req.method,
      caller: req.userArn,
      role: principal ? principalArn(principal) : undefined,
    };
    /** The upstream requests this request made: the log line names the last reason, metrics count each. */
    const countSent = (sent: readonly RefreshReason[] | undefined) => {
      if (!sent?.length) return;
      fields.refreshReason = sent[sent.length - 1];
      if (sent.length > 1) fields.refreshReasons = sent;
      for (const reason of sent) deps.metrics.count(REASON_METRIC[reason]);
    };
    let response: APIGatewayProxyResult;
    try {
      const r = matchRoute(req.method, req.path);
      if (!r) throw notFound('unknown route');
      fields.route = r.kind;
      if (!CONNECTION_NAME.test(r.connection))
        throw invalidRequest('connection names are lowercase letters, digits and -, at most 64 characters');
      fields.connection = r.connection;
      if (r.kind === 'token') {
        const minTtlSeconds = parseMinTtl(req.query, req.multi);
        const remaining = context?.getRemainingTimeInMillis?.();
        const served = await deps.broker.getToken({
          connection: r.connection,
          principal,
          minTtlSeconds,
          ...(remaining !== undefined ? { deadline: now() + remaining - RESPONSE_MARGIN_MS } : {}),
        });
        const t = served.token;
        const expiresIn = expiresInSeconds(t.expiresAt, now());
        Object.assign(fields, { outcome: served.outcome, tokenFp: t.fp, expiresIn, minTtl: minTtlSeconds });
        countSent(served.sent);
        deps.metrics.count(OUTCOME_METRIC[served.outcome]);
        if (served.ledgerRemaining !== undefined) deps.metrics.gauge(METRICS.ledgerRemaining, served.ledgerRemaining);
        if (served.ledgerRemaining !== undefined) fields.ledgerRemaining = served.ledgerRemaining;
        if (served.staleAfter) {
          fields.refreshError = served.staleAfter;
          deps.metrics.count(METRICS.staleToken);
          if (served.upstreamFailed) deps.metrics.count(METRICS.upstreamErrors);
        }
        response = {
          statusCode: 200,
          headers: { ...BASE_HEADERS },
          body: JSON.stringify({
            access_token: t.accessToken,
            token_type: t.tokenType,
            expires_in: expiresIn,
            expires_at: new Date(t.expiresAt).toISOString(),
            ...(t.scope ? { scope: t.scope } : {}),
            connection: r.connection,
          }),
        };
      } else {
        // Deny before reading the body: an unauthorised caller learns nothing from it (403, not 400).
        deps.broker.authorize(r.connection, principal);
        const accessToken = parseInvalidateBody(req.body, req.base64 ?? false);
        const answer = await deps.broker.invalidate({ connection: r.connection, principal, accessToken });
        const outcome = answer.invalidated ? 'invalidated' : answer.reason;
        Object.assign(fields, { outcome, invalidation: outcome, tokenFp: answer.fp });
        deps.metrics.count(INVALIDATION_METRIC[outcome]);
        response = { statusCode: 200, headers: { ...BASE_HEADERS }, body: JSON.stringify(invalidationBody(answer)) };
      }
    } catch (e) {
      const err = e instanceof BrokerError ? e : new BrokerError('internal', 'internal error');
      if (!(e instanceof BrokerError)) fields.errorName = (e as Error)?.name ?? typeof e;
      Object.assign(fields, { outcome: err.code === 'rate_limited' ? 'rate_limited' : 'error', error: err.code });
      if (err.extra.fromUpstream) deps.metrics.count(METRICS.upstreamErrors);
      if (err.extra.upstreamError) fields.upstreamError = err.extra.upstreamError;
      if (err.extra.detail) fields.detail = err.extra.detail;
      if (err.extra.refusal) {
        fields.cause = err.extra.refusal;
        const refused = REFUSAL_METRIC[err.extra.refusal];
        if (refused) deps.metrics.count(refused);
      }
      countSent(err.extra.sent);
      deps.metrics.count(ERROR_METRIC[err.code] ?? METRICS.clientError);
      response = errorResponse(err);
    }
    const latencyMs = Math.round((performance.now() - started) * 1000) / 1000;
    deps.metrics.latency(latencyMs);
    // Per-connection metrics only for configured connections: a caller's typo must not mint a metric series.
    const connection = typeof fields.connection === 'string' && deps.broker.knows(fields.connection) ? fields.connection : undefined;
    const emf = deps.metrics.take(connection ? { [DIMENSIONS.connection]: connection } : {});
    const line = { ...fields, status: response.statusCode, latencyMs, ...emf };
    if (response.statusCode >= 500 && fields.error === 'internal') deps.logger.error(REQUEST_LOG_MESSAGE, line);
    else deps.logger.info(REQUEST_LOG_MESSAGE, line);
    return response;
  };
}
