/** What can go wrong talking to an upstream token endpoint, as data the core can decide on. */

/** OAuth error codes (RFC 6749 section 5.2) that mean "the credentials are wrong": re-read the secret. */
export const CREDENTIAL_ERRORS = new Set(['invalid_client', 'invalid_grant']);

export type UpstreamFailure =
  /** The upstream answered with an OAuth error body (status != 200). */
  | { kind: 'oauth'; status: number; error: string }
  /** Status 429: the upstream's own rate limit. retryAfterSeconds from its header, if it parsed. */
  | { kind: 'rate_limited'; status: 429; retryAfterSeconds?: number }
  /** Unreachable, timed out, reset, or a 5xx. */
  | { kind: 'unavailable'; status?: number; detail: string }
  /** It answered, but not with a usable token (HTML, truncated JSON, no access_token, bad expires_in...). */
  | { kind: 'invalid_response'; status: number; detail: string };

export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(readonly failure: UpstreamFailure) {
    super(describe(failure));
  }
}

function describe(f: UpstreamFailure): string {
  switch (f.kind) {
    case 'oauth':
      return `upstream refused the token request (${f.status} ${f.error})`;
    case 'rate_limited':
      return 'upstream rate-limited the token request (429)';
    case 'unavailable':
      return `upstream unavailable: ${f.detail}`;
    case 'invalid_response':
      return `upstream answered with an unusable token response (${f.status}): ${f.detail}`;
  }
}
