/**
 * The broker's error vocabulary. Every failure that reaches a caller is a BrokerError with one of the
 * contract's codes (functions/contract/errors.ts, docs/design.md "HTTP API"); anything else is a bug and becomes
 * 500 `internal`.
 * Messages are written for callers: they never carry a token, a secret or an internal detail.
 */
import { type ErrorCode, ERROR_STATUS } from '../contract/errors.js';

/**
 * Why a request was refused without a token: the 429 causes, the open credential circuit (502), and a
 * connection held while a fetched token waits to be stored (503). Logged and counted.
 */
export type Refusal = 'ledger_exhausted' | 'reserve' | 'spacing' | 'upstream_429' | 'circuit_open' | 'held';

/** Why an upstream token request was made (docs/protocol.md "Refresh reasons"). */
export type RefreshReason = 'expired' | 'ahead' | 'min_ttl' | 'rotation';

export interface BrokerErrorExtra {
  retryAfterSeconds?: number;
  upstreamError?: string;
  status?: number;
  /** For the broker's own log only, never the response: e.g. which secret is misconfigured. */
  detail?: string;
  refusal?: Refusal;
  /** Upstream token requests this request sent before failing, by reason (log line and metrics). */
  sent?: RefreshReason[];
  /** The upstream token request failed (unreachable, 5xx, 429, an OAuth error, nonsense): `UpstreamErrors`. */
  fromUpstream?: boolean;
}

export class BrokerError extends Error {
  override readonly name = 'BrokerError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: BrokerErrorExtra = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  get status(): number {
    return this.extra.status ?? ERROR_STATUS[this.code];
  }
}

export const invalidRequest = (message: string) => new BrokerError('invalid_request', message);
export const forbidden = (message = 'caller is not allowed to use this connection') => new BrokerError('forbidden', message);
export const notFound = (message: string) => new BrokerError('not_found', message);
export const unavailable = (message: string, retryAfterSeconds: number, cause?: unknown) =>
  new BrokerError('unavailable', message, { retryAfterSeconds }, cause === undefined ? undefined : { cause });
export const rateLimited = (message: string, retryAfterSeconds: number, refusal: Refusal) =>
  new BrokerError('rate_limited', message, { retryAfterSeconds, refusal });

/**
 * A connection's credentials secret is unusable (missing, unreadable, malformed). The caller learns only
 * that; the log line names the secret and the fields (never a value).
 */
export const misconfiguredCredentials = (secretName: string, what: string) =>
  new BrokerError('internal', "the connection's credentials are misconfigured; the broker's logs say how", {
    detail: `the credentials secret "${secretName}" ${what}`,
  });
