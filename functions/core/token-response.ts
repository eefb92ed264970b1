import type { UpstreamToken } from './ports.js';
import { UpstreamError } from './upstream-errors.js';

/** Upper bound on a token lifetime the broker believes; larger `expires_in` values are clamped. */
export const MAX_TOKEN_LIFETIME_SECONDS = 86_400;

const OAUTH_ERROR_CODE = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/; // RFC 6749 error charset, bounded

function invalid(status: number, detail: string): UpstreamError {
  return new UpstreamError({ kind: 'invalid_response', status, detail });
}

/**
 * Strictly parses a 200 token response body (RFC 6749 section 5.1). Rejects non-JSON, a missing or
 * empty `access_token`, a `token_type` other than Bearer (case-insensitive), and an `expires_in` that is
 * not a positive finite number (a numeric string is accepted). A `refresh_token` is ignored.
 */
export function parseTokenResponse(status: number, body: string): UpstreamToken {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    throw invalid(status, 'body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid(status, 'body is not a JSON object');
  const o = doc as Record<string, unknown>;
  const accessToken = o.access_token;
  if (typeof accessToken !== 'string' || accessToken.length === 0 || accessToken.length > 16_384) {
    throw invalid(status, 'access_token missing or not a string');
  }
  const tokenType = o.token_type;
  if (typeof tokenType !== 'string' || tokenType.toLowerCase() !== 'bearer') {
    throw invalid(status, 'token_type is not Bearer');
  }
  const token: UpstreamToken = { accessToken, tokenType: 'Bearer' };
  if (o.expires_in !== undefined && o.expires_in !== null) {
    const n = typeof o.expires_in === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(o.expires_in) ? Number(o.expires_in) : o.expires_in;
    if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) throw invalid(status, 'expires_in is not a positive number');
    token.expiresInSeconds = Math.min(Math.floor(n), MAX_TOKEN_LIFETIME_SECONDS);
    if (token.expiresInSeconds <= 0) throw invalid(status, 'expires_in is not a positive number');
  }
  if (typeof o.scope === 'string' && o.scope.trim()) token.scope = o.scope.trim().split(/\s+/).join(' ');
  return token;
}

/** The OAuth `error` code of an error body (RFC 6749 section 5.2), or undefined if it has none. */
export function parseOAuthError(body: string): string | undefined {
  try {
    const doc = JSON.parse(body) as unknown;
    if (typeof doc === 'object' && doc !== null && typeof (doc as { error?: unknown }).error === 'string') {
      const code = (doc as { error: string }).error;
      return OAUTH_ERROR_CODE.test(code) ? code : undefined;
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/** The `exp` claim of a JWT access token in epoch seconds, without verifying it (we only read our own token). */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' && Number.isFinite(payload.exp) ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}
