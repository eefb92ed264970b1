/**
 * Typed errors mirroring the broker's error codes (docs/design.md "HTTP API").
 *
 * Every error the client throws is a TokenBrokerError. `status` is the HTTP status the broker (or API
 * Gateway in front of it) answered with, or 0 when no response was received. Messages never carry a
 * token: they are built from the connection name and the broker's own `message`, which the contract
 * keeps free of secrets.
 */
import { ERROR_CODES, ERROR_STATUS, type TokenBrokerErrorCode } from './contract.js';

export type { TokenBrokerErrorCode };

export interface TokenBrokerErrorDetails {
  /** HTTP status received; 0 when there was no response (network error, timeout). */
  status?: number;
  /** Seconds the broker asked the caller to wait (`Retry-After`), when it said so. */
  retryAfterSeconds?: number;
  connection?: string;
  cause?: unknown;
}

export class TokenBrokerError extends Error {
  override name = 'TokenBrokerError';
  readonly code: TokenBrokerErrorCode;
  readonly status: number;
  readonly retryAfterSeconds?: number;
  readonly connection?: string;

  constructor(code: TokenBrokerErrorCode, message: string, details: TokenBrokerErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.status = details.status ?? ERROR_STATUS[code];
    if (details.retryAfterSeconds !== undefined) this.retryAfterSeconds = details.retryAfterSeconds;
    if (details.connection !== undefined) this.connection = details.connection;
  }
}

/** 400: bad `min_ttl`, bad body or bad connection name (also thrown locally, before any request). */
export class InvalidRequestError extends TokenBrokerError {
  override name = 'InvalidRequestError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('invalid_request', message, details);
  }
}

/** 403: unsigned/badly signed request, or the caller's role is not in the connection's `callers`. */
export class ForbiddenError extends TokenBrokerError {
  override name = 'ForbiddenError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('forbidden', message, details);
  }
}

/** 404: unknown connection or route (check the endpoint's stage path). */
export class NotFoundError extends TokenBrokerError {
  override name = 'NotFoundError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('not_found', message, details);
  }
}

/** 429: the connection's rate-limit ledger is exhausted and no cached token satisfies `minTtl`. */
export class RateLimitedError extends TokenBrokerError {
  override name = 'RateLimitedError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('rate_limited', message, details);
  }
}

/** 502: the upstream token endpoint refused; `upstreamError` carries its OAuth code (e.g. `invalid_client`). */
export class UpstreamError extends TokenBrokerError {
  override name = 'UpstreamError';
  readonly upstreamError?: string;
  constructor(message: string, details?: TokenBrokerErrorDetails & { upstreamError?: string }) {
    super('upstream_error', message, details);
    if (details?.upstreamError !== undefined) this.upstreamError = details.upstreamError;
  }
}

/** 503: upstream unreachable, or a refresh in progress elsewhere took too long. Retryable. */
export class UnavailableError extends TokenBrokerError {
  override name = 'UnavailableError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('unavailable', message, details);
  }
}

/** The broker could not be reached at all (connection error, timeout): `status` is 0, `cause` says why. */
export class BrokerUnreachableError extends UnavailableError {
  override name = 'BrokerUnreachableError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super(message, { status: 0, ...details });
  }
}

/** 500 (or an answer the client cannot make sense of): a bug somewhere. Not retried. */
export class InternalError extends TokenBrokerError {
  override name = 'InternalError';
  constructor(message: string, details?: TokenBrokerErrorDetails) {
    super('internal', message, details);
  }
}

const CODE_BY_STATUS: Record<number, TokenBrokerErrorCode> = {
  400: 'invalid_request',
  403: 'forbidden',
  404: 'not_found',
  429: 'rate_limited',
  502: 'upstream_error',
  503: 'unavailable',
  504: 'unavailable',
};

/**
 * Builds the typed error for a non-2xx broker answer. The body's `error` code wins when it is one of the
 * contract's codes; otherwise (API Gateway's own answers such as `{"message":"Forbidden"}`) the status decides.
 * A 502 without the broker's `upstream_error` code is API Gateway reporting a broken integration: internal.
 */
export function errorFromResponse(
  status: number,
  body: unknown,
  retryAfterSeconds: number | undefined,
  connection: string,
): TokenBrokerError {
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const bodyCode =
    typeof fields.error === 'string' && (ERROR_CODES as readonly string[]).includes(fields.error)
      ? (fields.error as TokenBrokerErrorCode)
      : undefined;
  let code = bodyCode ?? CODE_BY_STATUS[status] ?? 'internal';
  if (code === 'upstream_error' && bodyCode === undefined) code = 'internal';
  const brokerMessage =
    typeof fields.message === 'string' ? clip(fields.message) : typeof fields.Message === 'string' ? clip(fields.Message) : '';
  const message = `token broker answered ${status} ${code} for connection "${connection}"${brokerMessage ? `: ${brokerMessage}` : ''}`;
  const details: TokenBrokerErrorDetails = { status, connection };
  if (retryAfterSeconds !== undefined) details.retryAfterSeconds = retryAfterSeconds;
  switch (code) {
    case 'invalid_request':
      return new InvalidRequestError(message, details);
    case 'forbidden':
      return new ForbiddenError(message, details);
    case 'not_found':
      return new NotFoundError(message, details);
    case 'rate_limited':
      return new RateLimitedError(message, details);
    case 'upstream_error': {
      const upstreamError = typeof fields.upstream_error === 'string' ? clip(fields.upstream_error, 64) : undefined;
      return new UpstreamError(message, upstreamError === undefined ? details : { ...details, upstreamError });
    }
    case 'unavailable':
      return new UnavailableError(message, details);
    default:
      return new InternalError(message, details);
  }
}

function clip(text: string, max = 300): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}
