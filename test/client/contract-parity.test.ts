/**
 * The client package keeps its own copy of the HTTP contract (client/src/contract.ts: it must not import
 * server code). This test fails when that copy and the server's (functions/contract/) disagree: error codes
 * and statuses, what is retried, the connection-name rule, the routes, `min_ttl`, and `Retry-After`.
 */
import { describe, expect, it } from 'vitest';
import * as client from '../../client/src/contract.js';
import { ERROR_CODES as CLIENT_ERROR_CODES } from '../../client/src/contract.js';
import { errorFromResponse } from '../../client/src/errors.js';
import * as server from '../../functions/contract/index.js';
import { ERROR_CODES as SERVER_ERROR_CODES, RETRYABLE_CODES as SERVER_RETRYABLE_CODES } from '../../functions/contract/errors.js';

/** Whole seconds, and one with a fraction (an HTTP-date has no fraction; the delay then does). */
const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const NOW_PLUS_MS = NOW + 500;

describe('the client copy of the contract', () => {
  it('has the same error codes, each with the same status', () => {
    expect([...CLIENT_ERROR_CODES].sort()).toEqual([...SERVER_ERROR_CODES].sort());
    expect(client.ERROR_STATUS).toEqual(server.ERROR_STATUS);
  });

  it('retries exactly the codes the broker answers with Retry-After', () => {
    expect([...client.RETRYABLE_CODES].sort()).toEqual([...SERVER_RETRYABLE_CODES].sort());
  });

  it('turns every answer of the broker into its code, and a status-only answer (API Gateway) into the code of that status', () => {
    for (const code of SERVER_ERROR_CODES) {
      const status = server.ERROR_STATUS[code];
      expect(errorFromResponse(status, { error: code, message: 'm' }, undefined, 'c'), code).toMatchObject({ code, status });
      // A 502 without the broker's code is API Gateway reporting a broken integration: internal, by design.
      const bare = code === 'upstream_error' ? 'internal' : code;
      expect(errorFromResponse(status, { message: 'Forbidden' }, undefined, 'c').code, `${status} without a code`).toBe(bare);
    }
  });

  it('takes a body code only when it is one of the contract codes (not an Object.prototype name)', () => {
    for (const bogus of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'nope']) {
      const e = errorFromResponse(503, { error: bogus, message: 'm' }, undefined, 'c');
      expect(e, bogus).toMatchObject({ code: 'unavailable', status: 503 });
    }
  });

  it('accepts and refuses the same connection names', () => {
    const names: [string, boolean][] = [
      ['a', true],
      ['0', true],
      ['-', true],
      ['vitesse-staging', true],
      ['tokens', true],
      ['invalidate', true],
      ['a'.repeat(64), true],
      ['a'.repeat(65), false],
      ['', false],
      ['A', false],
      ['Vitesse', false],
      ['a_b', false],
      ['a.b', false],
      ['a b', false],
      ['a/b', false],
      ['a\n', false],
      ['\na', false],
      ['é', false],
      ['%61', false],
      ['a%2Fb', false],
    ];
    for (const [name, valid] of names) {
      expect(server.CONNECTION_NAME.test(name), JSON.stringify(name)).toBe(valid);
      expect(client.CONNECTION_NAME.test(name), JSON.stringify(name)).toBe(valid);
    }
  });

  it('calls the routes the broker serves', () => {
    expect(Object.keys(client.ROUTES).sort()).toEqual([...server.ROUTE_KINDS].sort());
    for (const kind of server.ROUTE_KINDS) {
      expect(client.ROUTES[kind], kind).toEqual(server.ROUTES[kind]);
      for (const connection of ['vitesse-staging', 'invalidate', 'a'.repeat(64)]) {
        const path = client.routePath(kind, connection);
        expect(path).toBe(server.routePath(kind, connection));
        expect(server.matchRoute(client.ROUTES[kind].method, path)).toEqual({ kind, connection });
      }
    }
    expect(client.MIN_TTL_PARAM).toBe(server.MIN_TTL_PARAM);
    expect(client.DEFAULT_MIN_TTL_SECONDS).toBe(server.DEFAULT_MIN_TTL_SECONDS);
    expect(client.MAX_MIN_TTL_SECONDS).toBe(server.MAX_MIN_TTL_SECONDS);
  });

  it('reads back every Retry-After the broker writes', () => {
    expect(client.RETRY_AFTER_HEADER).toBe(server.RETRY_AFTER_HEADER.toLowerCase());
    for (const ms of [1, 999, 1_000, 1_001, 59_500, 60_000, 3_600_000, 86_400_000]) {
      const seconds = server.retryAfterSeconds(ms);
      expect(client.parseRetryAfter(server.formatRetryAfter(seconds), NOW), `${ms} ms`).toBe(seconds);
    }
  });

  it('parses Retry-After values as the broker does', () => {
    const values = [
      '0',
      '1',
      '120',
      ' 7 ',
      '86400',
      '999999999',
      '',
      '   ',
      'soon',
      '1e3',
      '0x10',
      '5s',
      '-1',
      '1.5',
      '+5',
      '1234567890',
      'Wednesday, 21-Oct-15 07:28:00 GMT',
      'Wed Oct 21 07:28:00 2015',
      'Wed, 21 Oct 2015 07:28:00 GMT',
      new Date(NOW).toUTCString(),
      new Date(NOW + 90_000).toUTCString(),
      new Date(NOW + 86_400_000).toUTCString(),
    ];
    for (const now of [NOW, NOW_PLUS_MS]) {
      for (const value of values) {
        const ms = server.parseRetryAfter(value, now);
        const expected = ms === undefined ? undefined : Math.ceil(ms / 1000);
        expect(client.parseRetryAfter(value, now), `${JSON.stringify(value)} at ${now}`).toBe(expected);
      }
    }
    expect(client.parseRetryAfter(undefined, NOW)).toBe(server.parseRetryAfter(undefined, NOW));
    expect(client.parseRetryAfter(['30', '60'], NOW)).toBe(30);
  });
});
