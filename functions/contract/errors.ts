/**
 * The error codes of the HTTP contract (docs/design.md "HTTP API") and the status each is answered with. Every
 * error a caller gets is JSON `{"error": CODE, "message": TEXT}` with one of these codes.
 * The client package keeps its own copy (client/src/contract.ts); test/client/contract-parity.test.ts
 * fails when the two disagree.
 */
/** @internal the parity test (test/client/contract-parity.test.ts) reads it. */
export const ERROR_CODES = [
  'invalid_request',
  'forbidden',
  'not_found',
  'rate_limited',
  'upstream_error',
  'unavailable',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The HTTP status of each code (a few answers override it, e.g. 413 for an oversized body). */
export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = {
  invalid_request: 400,
  forbidden: 403,
  not_found: 404,
  rate_limited: 429,
  upstream_error: 502,
  unavailable: 503,
  internal: 500,
};

/** @internal The codes a caller may retry: they carry `Retry-After` (429 and 503). The parity test reads it. */
export const RETRYABLE_CODES: readonly ErrorCode[] = ['rate_limited', 'unavailable'];
