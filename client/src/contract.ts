/**
 * The client's copy of the broker's HTTP contract (the server's is functions/contract/): error codes and
 * statuses, which answers are retried, the connection-name rule, the routes, `min_ttl` and `Retry-After`.
 * A copy because this package must not import server code; test/client/contract-parity.test.ts fails when
 * the two disagree. Internal: not an entry point of the package.
 */

/** The broker's error codes, each with the HTTP status it is answered with. */
const CODES_AND_STATUSES = [
  ['invalid_request', 400],
  ['forbidden', 403],
  ['not_found', 404],
  ['rate_limited', 429],
  ['upstream_error', 502],
  ['unavailable', 503],
  ['internal', 500],
] as const;

export type TokenBrokerErrorCode = (typeof CODES_AND_STATUSES)[number][0];

export const ERROR_CODES: readonly TokenBrokerErrorCode[] = CODES_AND_STATUSES.map(([code]) => code);

/** The HTTP status the broker answers each code with. */
export const ERROR_STATUS = Object.fromEntries(CODES_AND_STATUSES) as Readonly<Record<TokenBrokerErrorCode, number>>;

/** The codes the client retries (with backoff, honouring Retry-After). */
export const RETRYABLE_CODES: readonly TokenBrokerErrorCode[] = ['rate_limited', 'unavailable'];

/** Lowercase letters, digits and `-`, 1 to 64 characters. */
export const CONNECTION_NAME = /^[a-z0-9-]{1,64}$/;

export const ROUTES = {
  token: { method: 'GET', path: '/tokens/{connection}' },
  invalidate: { method: 'POST', path: '/tokens/{connection}/invalidate' },
} as const;

export type RouteKind = keyof typeof ROUTES;

/** The route's path for a connection (already checked against CONNECTION_NAME, so nothing to encode). */
export function routePath(kind: RouteKind, connection: string): string {
  return ROUTES[kind].path.replace('{connection}', connection);
}

/** The token route's query parameter, its default and its largest value (seconds). */
export const MIN_TTL_PARAM = 'min_ttl';
export const DEFAULT_MIN_TTL_SECONDS = 60;
export const MAX_MIN_TTL_SECONDS = 86_400;

/** The header name as received (lowercase). */
export const RETRY_AFTER_HEADER = 'retry-after';

/**
 * Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP-date, relative to `now`); undefined
 * when there is none or it is not understood.
 */
export function parseRetryAfter(header: string | string[] | undefined, now: number): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const v = value?.trim();
  if (!v) return undefined;
  // delta-seconds, or an IMF-fixdate; anything else ('-1', '1.5', other date formats) is not a delay the
  // broker would send, and is ignored rather than read as "retry at once".
  if (/^\d{1,9}$/.test(v)) return Number(v);
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) return undefined;
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}
