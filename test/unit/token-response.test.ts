import { describe, expect, it } from 'vitest';
import { jwtExpiry, MAX_TOKEN_LIFETIME_SECONDS, parseOAuthError, parseTokenResponse } from '../../functions/core/token-response.js';
import { UpstreamError } from '../../functions/core/upstream-errors.js';
import { CANARY, jwt } from './fakes.js';

const ok = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ access_token: CANARY.accessToken, token_type: 'Bearer', expires_in: 3600, ...extra });

/** The UpstreamError thrown by parseTokenResponse, failing the test if it parses. */
function rejection(body: string, status = 200): UpstreamError {
  try {
    parseTokenResponse(status, body);
  } catch (e) {
    expect(e).toBeInstanceOf(UpstreamError);
    return e as UpstreamError;
  }
  throw new Error('body parsed but should not have');
}

describe('parseTokenResponse', () => {
  it('parses a well-formed response', () => {
    expect(parseTokenResponse(200, ok({ scope: 'API' }))).toEqual({
      accessToken: CANARY.accessToken,
      tokenType: 'Bearer',
      expiresInSeconds: 3600,
      scope: 'API',
    });
  });

  describe('C1: not a JSON object', () => {
    it.each([
      ['HTML', `<html><body>Service temporarily down ${CANARY.accessToken}</body></html>`],
      ['truncated JSON', ok().slice(0, 30)],
      ['empty', ''],
      ['array', `[${ok()}]`],
      ['string', JSON.stringify(CANARY.accessToken)],
      ['number', '42'],
      ['null', 'null'],
    ])('rejects %s as invalid_response without echoing the body', (_label, body) => {
      const err = rejection(body);
      expect(err.failure).toMatchObject({ kind: 'invalid_response', status: 200 });
      expect(err.message).not.toContain(CANARY.accessToken);
      expect(err.message).not.toContain('<html');
    });
  });

  describe('C2: access_token and token_type', () => {
    it.each([
      ['missing access_token', { access_token: undefined }],
      ['empty access_token', { access_token: '' }],
      ['numeric access_token', { access_token: 12345 }],
      ['oversized access_token', { access_token: 'a'.repeat(16_385) }],
      ['token_type mac', { token_type: 'mac' }],
      ['token_type DPoP', { token_type: 'DPoP' }],
      ['token_type absent', { token_type: undefined }],
      ['token_type empty', { token_type: '' }],
      ['token_type not a string', { token_type: true }],
    ])('rejects %s', (_label, patch) => {
      const err = rejection(ok(patch));
      expect(err.failure.kind).toBe('invalid_response');
      expect(err.message).not.toContain(CANARY.accessToken);
    });

    it.each(['Bearer', 'bearer', 'BEARER', 'bEaReR'])('accepts token_type %s and normalises it to Bearer', (tokenType) => {
      expect(parseTokenResponse(200, ok({ token_type: tokenType })).tokenType).toBe('Bearer');
    });
  });

  describe('A4: expires_in', () => {
    it('missing or null leaves the expiry to JWT exp or the default TTL', () => {
      expect(parseTokenResponse(200, ok({ expires_in: undefined })).expiresInSeconds).toBeUndefined();
      expect(parseTokenResponse(200, ok({ expires_in: null })).expiresInSeconds).toBeUndefined();
    });

    it.each([
      ['"3600" (numeric string)', '3600', 3600],
      ['" 1200 " (padded string)', ' 1200 ', 1200],
      ['float', 1199.9, 1199],
      ['float string', '59.5', 59],
      ['1e12 (clamped to 24 h)', 1e12, MAX_TOKEN_LIFETIME_SECONDS],
      ['86401', 86_401, MAX_TOKEN_LIFETIME_SECONDS],
      ['1', 1, 1],
    ])('accepts %s', (_label, value, expected) => {
      expect(parseTokenResponse(200, ok({ expires_in: value })).expiresInSeconds).toBe(expected);
    });

    it.each([
      ['0', 0],
      ['-5', -5],
      ['"-5"', '-5'],
      ['0.5 (floors to 0)', 0.5],
      ['"abc"', 'abc'],
      ['""', ''],
      ['"1e3"', '1e3'],
      ['true', true],
      ['object', { s: 1 }],
    ])('rejects %s as invalid_response', (_label, value) => {
      expect(rejection(ok({ expires_in: value })).failure.kind).toBe('invalid_response');
    });

    it('rejects non-finite numbers that JSON cannot carry but a lenient parser might', () => {
      expect(rejection(ok().replace('3600', '1e400')).failure.kind).toBe('invalid_response'); // parses to Infinity
    });
  });

  it('C8: ignores a refresh_token and other extra fields', () => {
    const t = parseTokenResponse(200, ok({ refresh_token: 'CANARY-refresh-token', id_token: 'x', foo: 'bar' }));
    expect(t).toEqual({ accessToken: CANARY.accessToken, tokenType: 'Bearer', expiresInSeconds: 3600 });
    expect(JSON.stringify(t)).not.toContain('CANARY-refresh-token');
  });

  it('normalises the granted scope and drops an empty one', () => {
    expect(parseTokenResponse(200, ok({ scope: ' vtms-public-api  openid\tprofile ' })).scope).toBe('vtms-public-api openid profile');
    expect(parseTokenResponse(200, ok({ scope: '  ' })).scope).toBeUndefined();
    expect(parseTokenResponse(200, ok({ scope: 7 })).scope).toBeUndefined();
  });
});

describe('parseOAuthError', () => {
  it('reads the error code of an RFC 6749 error body', () => {
    expect(parseOAuthError('{"error":"invalid_client"}')).toBe('invalid_client');
    expect(parseOAuthError('{"error":"invalid_grant","error_description":"bad password"}')).toBe('invalid_grant');
  });

  it.each([
    ['empty body', ''],
    ['HTML', '<html>nope</html>'],
    ['no error field', '{"message":"nope"}'],
    ['non-string error', '{"error":42}'],
    ['array', '[{"error":"invalid_client"}]'],
    ['error with a quote', '{"error":"bad\\"code"}'],
    ['error with a backslash', '{"error":"bad\\\\code"}'],
    ['error with a newline', '{"error":"bad\\ncode"}'],
    ['overlong error', JSON.stringify({ error: 'x'.repeat(65) })],
    ['empty error', '{"error":""}'],
  ])('returns undefined for %s', (_label, body) => {
    expect(parseOAuthError(body)).toBeUndefined();
  });
});

describe('jwtExpiry', () => {
  it('reads exp from a JWT payload', () => {
    expect(jwtExpiry(jwt({ exp: 1_900_000_000, sub: 'svc' }))).toBe(1_900_000_000);
  });

  it.each([
    ['opaque token', 'opaque-token'],
    ['two segments', 'a.b'],
    ['four segments', 'a.b.c.d'],
    ['payload not JSON', `x.${Buffer.from('not json').toString('base64url')}.y`],
    ['payload not base64url JSON', 'x.!!!.y'],
    ['exp as a string', jwt({ exp: '1900000000' })],
    ['no exp', jwt({ sub: 'svc' })],
    ['exp null', jwt({ exp: null })],
  ])('is undefined for %s', (_label, token) => {
    expect(jwtExpiry(token)).toBeUndefined();
  });
});
