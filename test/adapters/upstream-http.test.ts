import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MockAgent } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { basicAuthorization, formEncode, HttpUpstream, tokenRequest } from '../../functions/adapters/upstream-http.js';
import { type Connection, parseConfig } from '../../functions/core/config.js';
import { BrokerError } from '../../functions/core/errors.js';
import type { ClientCredentials } from '../../functions/core/ports.js';
import { UpstreamError } from '../../functions/core/upstream-errors.js';
import { CANARY } from '../unit/fakes.js';
import { FakeClock } from '../support/clock.js';

const ORIGIN = 'https://idp.example';
const CALLERS = ['arn:aws:iam::111122223333:role/app'];

function connection(patch: Record<string, unknown> = {}, name = 'vitesse'): Connection {
  const c = {
    tokenUrl: `${ORIGIN}/connect/token`,
    grantType: 'client_credentials',
    scope: 'API',
    secret: 'token-broker/dev/vitesse',
    callers: CALLERS,
    ...patch,
  };
  return parseConfig({ connections: { [name]: c } }).connections.get(name)!;
}

const creds: ClientCredentials = { client_id: CANARY.clientId, client_secret: CANARY.clientSecret };
const pwCreds: ClientCredentials = { ...creds, username: CANARY.username, password: CANARY.password };
const okBody = JSON.stringify({ access_token: CANARY.accessToken, token_type: 'Bearer', expires_in: 1200 });

interface Captured {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

function headersOf(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  const entries: [string, unknown][] = h instanceof Headers ? [...h.entries()] : Object.entries(h as Record<string, unknown>);
  for (const [k, v] of entries) out[k.toLowerCase()] = String(v);
  return out;
}

let agent: MockAgent;
let captured: Captured[];

beforeEach(() => {
  agent = new MockAgent();
  agent.disableNetConnect();
  captured = [];
});

afterEach(async () => {
  await agent.close();
});

/** Intercepts one POST to the token endpoint, recording what was sent. */
function reply(statusCode: number, data: string | Buffer = '', headers: Record<string, string> = {}) {
  agent
    .get(ORIGIN)
    .intercept({ path: '/connect/token', method: 'POST' })
    .reply((opts) => {
      captured.push({ method: opts.method, path: opts.path, headers: headersOf(opts.headers), body: String(opts.body ?? '') });
      return { statusCode, data, responseOptions: { headers: { 'content-type': 'application/json', ...headers } } };
    });
}

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(UpstreamError);
    assertNoSecrets(e as Error);
    return e as UpstreamError;
  }
  throw new Error('expected the token request to fail');
}

function assertNoSecrets(e: Error) {
  const text = `${e.message} ${JSON.stringify(e)} ${String(e.stack)}`;
  for (const canary of [CANARY.clientSecret, formEncode(CANARY.clientSecret), CANARY.password, CANARY.accessToken]) {
    expect(text).not.toContain(canary);
  }
}

const signal = () => new AbortController().signal;

describe('token request shape', () => {
  it('client_credentials with client_secret_post: form body with grant, scope and credentials', async () => {
    reply(200, okBody);
    const up = new HttpUpstream({ dispatcher: agent });
    const token = await up.requestToken(connection(), creds, signal());
    expect(token).toEqual({ accessToken: CANARY.accessToken, tokenType: 'Bearer', expiresInSeconds: 1200 });
    expect(captured).toHaveLength(1);
    const req = captured[0]!;
    expect(req.method).toBe('POST');
    expect(req.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(req.headers['accept']).toBe('application/json');
    expect(req.headers).not.toHaveProperty('authorization');
    const form = new URLSearchParams(req.body);
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'client_credentials',
      scope: 'API',
      client_id: CANARY.clientId,
      client_secret: CANARY.clientSecret,
    });
  });

  it('password grant (Vertex Cloud): username, password and a scope with spaces', async () => {
    reply(200, okBody);
    const up = new HttpUpstream({ dispatcher: agent });
    await up.requestToken(connection({ grantType: 'password', scope: 'vtms-public-api openid profile' }), pwCreds, signal());
    const req = captured[0]!;
    expect(req.body).toContain('scope=vtms-public-api+openid+profile');
    expect(Object.fromEntries(new URLSearchParams(req.body))).toEqual({
      grant_type: 'password',
      username: CANARY.username,
      password: CANARY.password,
      scope: 'vtms-public-api openid profile',
      client_id: CANARY.clientId,
      client_secret: CANARY.clientSecret,
    });
  });

  it('password grant without username/password fails before sending, naming the secret but no value', async () => {
    reply(200, okBody);
    const up = new HttpUpstream({ dispatcher: agent });
    const p = up.requestToken(connection({ grantType: 'password' }), { ...creds, password: CANARY.password }, signal());
    await expect(p).rejects.toBeInstanceOf(BrokerError);
    const err = (await p.catch((e: unknown) => e)) as BrokerError;
    expect(err.extra.detail).toContain('token-broker/dev/vitesse');
    expect(err.extra.detail).toContain('username');
    expect(err.message).not.toContain('token-broker/dev/vitesse');
    expect(`${err.message} ${err.extra.detail}`).not.toContain(CANARY.password);
    expect(err.message).not.toContain(CANARY.clientSecret);
    expect(captured).toHaveLength(0);
  });

  it('no scope and no extras: only what the grant needs', async () => {
    reply(200, okBody);
    await new HttpUpstream({ dispatcher: agent }).requestToken(connection({ scope: undefined }), creds, signal());
    expect([...new URLSearchParams(captured[0]!.body).keys()]).toEqual(['grant_type', 'client_id', 'client_secret']);
  });

  it('sends extraParams in the form body', async () => {
    reply(200, okBody);
    await new HttpUpstream({ dispatcher: agent }).requestToken(
      connection({ extraParams: { audience: 'https://api.example/v1', resource: 'a b&c=d' } }),
      creds,
      signal(),
    );
    const form = new URLSearchParams(captured[0]!.body);
    expect(form.get('audience')).toBe('https://api.example/v1');
    expect(form.get('resource')).toBe('a b&c=d');
  });

  it('client_secret_basic: Authorization header, no credentials in the body', async () => {
    reply(200, okBody);
    await new HttpUpstream({ dispatcher: agent }).requestToken(
      connection({ clientAuthentication: 'client_secret_basic' }),
      creds,
      signal(),
    );
    const req = captured[0]!;
    expect(req.headers.authorization).toMatch(/^Basic [A-Za-z0-9+/=]+$/);
    const form = new URLSearchParams(req.body);
    expect(form.has('client_id')).toBe(false);
    expect(form.has('client_secret')).toBe(false);
    expect(req.body).not.toContain(formEncode(CANARY.clientSecret));
  });

  it('C7: Basic credentials are form-urlencoded before base64 (RFC 6749 2.3.1) and decode back', async () => {
    const tricky: ClientCredentials = { client_id: 'my client:1', client_secret: 'a:b%c+d é€/=?&' };
    reply(200, okBody);
    await new HttpUpstream({ dispatcher: agent }).requestToken(
      connection({ clientAuthentication: 'client_secret_basic' }),
      tricky,
      signal(),
    );
    const header = captured[0]!.headers.authorization!;
    // Independently computed: encodeURIComponent plus '+' for space is the urlencoded form for these characters.
    const enc = (v: string) => encodeURIComponent(v).replace(/%20/g, '+');
    expect(header).toBe(`Basic ${Buffer.from(`${enc(tricky.client_id)}:${enc(tricky.client_secret)}`).toString('base64')}`);
    // Pinned literal for the spec example characters.
    expect(basicAuthorization('client id', 'a:b%c+d é')).toBe(`Basic ${Buffer.from('client+id:a%3Ab%25c%2Bd+%C3%A9').toString('base64')}`);
    // As an IdP decodes it: split at the first ':', then form-decode each half.
    const decoded = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    const dec = (v: string) => decodeURIComponent(v.replace(/\+/g, ' '));
    expect(dec(decoded.slice(0, i))).toBe(tricky.client_id);
    expect(dec(decoded.slice(i + 1))).toBe(tricky.client_secret);
  });

  it('tokenRequest is what requestToken sends', () => {
    const { headers, body } = tokenRequest(connection(), creds);
    expect(headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(new URLSearchParams(body).get('client_secret')).toBe(CANARY.clientSecret);
  });
});

describe('responses', () => {
  it('parses a 200 with a string expires_in and a granted scope', async () => {
    reply(
      200,
      JSON.stringify({
        access_token: CANARY.accessToken,
        token_type: 'bearer',
        expires_in: '3600',
        scope: 'API',
        refresh_token: 'CANARY-refresh',
      }),
    );
    const t = await new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal());
    expect(t).toEqual({ accessToken: CANARY.accessToken, tokenType: 'Bearer', expiresInSeconds: 3600, scope: 'API' });
  });

  it('400 {"error":"invalid_client"} is an oauth failure with the code', async () => {
    reply(400, JSON.stringify({ error: 'invalid_client', error_description: `bad secret ${CANARY.clientSecret}` }));
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toEqual({ kind: 'oauth', status: 400, error: 'invalid_client' });
  });

  it.each(['invalid_grant', 'invalid_scope', 'unauthorized_client', 'unsupported_grant_type', 'invalid_request'])(
    '400 %s is an oauth failure',
    async (code) => {
      reply(400, JSON.stringify({ error: code }));
      const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
      expect(e.failure).toEqual({ kind: 'oauth', status: 400, error: code });
    },
  );

  it('401 with WWW-Authenticate and no body is invalid_client', async () => {
    reply(401, '', { 'www-authenticate': 'Basic realm="token"' });
    const e = await failure(
      new HttpUpstream({ dispatcher: agent }).requestToken(connection({ clientAuthentication: 'client_secret_basic' }), creds, signal()),
    );
    expect(e.failure).toEqual({ kind: 'oauth', status: 401, error: 'invalid_client' });
  });

  it('429 with Retry-After seconds', async () => {
    reply(429, '', { 'retry-after': '120' });
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toEqual({ kind: 'rate_limited', status: 429, retryAfterSeconds: 120 });
  });

  it('429 with a Retry-After HTTP-date, relative to the injected clock', async () => {
    const clock = new FakeClock();
    reply(429, JSON.stringify({ error: 'slow_down' }), { 'retry-after': new Date(clock.now() + 90_000).toUTCString() });
    const e = await failure(new HttpUpstream({ dispatcher: agent, clock }).requestToken(connection(), creds, signal()));
    expect(e.failure).toEqual({ kind: 'rate_limited', status: 429, retryAfterSeconds: 90 });
  });

  it('429 with a garbage Retry-After leaves the delay to the default backoff', async () => {
    reply(429, '', { 'retry-after': 'in a while' });
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toEqual({ kind: 'rate_limited', status: 429 });
  });

  it.each([
    ['500', 500, '<html>oops</html>'],
    ['503', 503, ''],
    ['502 with an OAuth body', 502, JSON.stringify({ error: 'invalid_client' })],
    ['503 temporarily_unavailable', 503, JSON.stringify({ error: 'temporarily_unavailable' })],
    ['400 temporarily_unavailable', 400, JSON.stringify({ error: 'temporarily_unavailable' })],
    ['400 server_error', 400, JSON.stringify({ error: 'server_error' })],
  ])('%s is unavailable', async (_label, status, body) => {
    reply(status, body);
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toMatchObject({ kind: 'unavailable', status });
  });

  it('HTML 200 is invalid_response, body not echoed', async () => {
    reply(200, `<html><body>Login ${CANARY.accessToken}</body></html>`, { 'content-type': 'text/html' });
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toMatchObject({ kind: 'invalid_response', status: 200 });
    expect(e.message).not.toContain('<html');
  });

  it('a non-200, non-error status without an OAuth body is invalid_response', async () => {
    reply(302, '', { location: 'https://login.example' });
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toMatchObject({ kind: 'invalid_response', status: 302 });
  });

  it('a response over maxResponseBytes is invalid_response', async () => {
    const big = JSON.stringify({ access_token: CANARY.accessToken, token_type: 'Bearer', expires_in: 60, pad: 'x'.repeat(10_000) });
    reply(200, big);
    const e = await failure(new HttpUpstream({ dispatcher: agent, maxResponseBytes: 1024 }).requestToken(connection(), creds, signal()));
    expect(e.failure).toMatchObject({ kind: 'invalid_response', status: 200 });
    expect(e.message).toMatch(/larger than 1024 bytes/);
    // The same body is fine under the default cap (64 KiB).
    reply(200, big);
    await expect(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal())).resolves.toMatchObject({
      accessToken: CANARY.accessToken,
    });
  });

  it('a network error is unavailable', async () => {
    agent
      .get(ORIGIN)
      .intercept({ path: '/connect/token', method: 'POST' })
      .replyWithError(Object.assign(new Error(`connect ECONNREFUSED ${CANARY.clientSecret}`), { code: 'ECONNREFUSED' }));
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure).toEqual({ kind: 'unavailable', detail: 'ECONNREFUSED' });
  });

  it('an aborted signal (deadline) is unavailable "timed out"', async () => {
    reply(200, okBody);
    const ac = new AbortController();
    ac.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, ac.signal));
    expect(e.failure).toEqual({ kind: 'unavailable', detail: 'timed out' });
  });

  it('no request with netConnect disabled and no interceptor: unavailable, never a hang or a crash', async () => {
    const e = await failure(new HttpUpstream({ dispatcher: agent }).requestToken(connection(), creds, signal()));
    expect(e.failure.kind).toBe('unavailable');
  });
});

describe('C6: a real slow server', () => {
  let server: Server;
  let base: string;
  const stalled: ServerResponse[] = [];

  beforeEach(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        stalled.push(res);
        if (req.url === '/slow-body') {
          // Slow-loris: headers and the first bytes of the body, then nothing.
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
          res.write('{"access_token":"');
        }
        // '/no-headers': never answers at all.
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterEach(async () => {
    for (const r of stalled.splice(0)) r.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const conn = (path: string) => connection({ tokenUrl: `${base}${path}` });

  it('the body timeout fires on a stalled body', async () => {
    const up = new HttpUpstream({ bodyTimeoutMs: 200, headersTimeoutMs: 60_000 });
    const e = await failure(up.requestToken(conn('/slow-body'), creds, AbortSignal.timeout(60_000)));
    expect(e.failure).toEqual({ kind: 'unavailable', detail: 'UND_ERR_BODY_TIMEOUT' });
  });

  it('the headers timeout fires when no response comes', async () => {
    const up = new HttpUpstream({ headersTimeoutMs: 200, bodyTimeoutMs: 60_000 });
    const e = await failure(up.requestToken(conn('/no-headers'), creds, AbortSignal.timeout(60_000)));
    expect(e.failure).toEqual({ kind: 'unavailable', detail: 'UND_ERR_HEADERS_TIMEOUT' });
  });

  it('the overall deadline (AbortSignal) fires while the body trickles', async () => {
    const up = new HttpUpstream({ headersTimeoutMs: 60_000, bodyTimeoutMs: 60_000 });
    const e = await failure(up.requestToken(conn('/slow-body'), creds, AbortSignal.timeout(200)));
    expect(e.failure).toEqual({ kind: 'unavailable', detail: 'timed out' });
  });
});
