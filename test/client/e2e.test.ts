/**
 * End to end: the client against the real local broker (`functions/local/cli.ts`, spawned as a child
 * process), which verifies SigV4 like API Gateway and fetches tokens from a fake OAuth token endpoint.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent, request, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForbiddenError, TokenBrokerClient } from '@token-broker/client';
import { tokenInterceptor } from '@token-broker/client/interceptor';
import { listen, type LocalServer } from './support.js';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'functions/local/cli.ts');

const PAYMENTS = { accessKeyId: 'AKIDPAYMENTSE2E', secretAccessKey: 'payments-secret-e2e' };
const REPORTING = { accessKeyId: 'AKIDREPORTINGE2E', secretAccessKey: 'reporting-secret-e2e' };

describe.skipIf(!existsSync(CLI))('client against the local broker (e2e)', () => {
  let oauth: LocalServer;
  let api: LocalServer;
  /** Token requests the fake OAuth server received, per client_id. */
  const issued = new Map<string, number>();
  const rejected = new Set<string>();
  let serial = 0;
  let child: ChildProcess | undefined;
  let output = '';
  let endpoint = '';
  let dir = '';
  const agents: Agent[] = [];

  /** A client with its own cache and a dispatcher that counts broker requests. */
  function client(credentials = PAYMENTS) {
    const counter = { requests: 0 };
    const agent = new Agent();
    agents.push(agent);
    const dispatcher = agent.compose((dispatch: Dispatcher.Dispatch) => (opts, handler) => {
      counter.requests++;
      return dispatch(opts, handler);
    });
    return { counter, client: new TokenBrokerClient({ endpoint, region: 'us-east-1', credentials, dispatcher }) };
  }

  beforeAll(async () => {
    oauth = await listen((req, res, body) => {
      if (req.method !== 'POST') {
        res.writeHead(405).end();
        return;
      }
      const clientId = new URLSearchParams(body).get('client_id') ?? 'basic';
      issued.set(clientId, (issued.get(clientId) ?? 0) + 1);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ access_token: `tok-${++serial}`, token_type: 'Bearer', expires_in: 300 }));
    });
    api = await listen((req, res) => {
      const token = req.headers.authorization?.replace(/^Bearer /, '');
      const status = !token || rejected.has(token) ? 401 : 200;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status === 200 ? { ok: true } : { error: 'invalid_token' }));
    });

    const connection = (clientSecret: string) => ({
      tokenUrl: `${oauth.url}/connect/token`,
      grantType: 'client_credentials',
      scope: 'API',
      clientAuthentication: 'client_secret_post',
      secret: `e2e/${clientSecret}`,
      callers: ['arn:aws:iam::111122223333:role/payments-*'],
    });
    const config = {
      connections: {
        'e2e-cache': connection('cache'),
        'e2e-concurrent': connection('concurrent'),
        'e2e-heal': connection('heal'),
      },
      secrets: {
        'e2e/cache': { client_id: 'cache', client_secret: 's1' },
        'e2e/concurrent': { client_id: 'concurrent', client_secret: 's2' },
        'e2e/heal': { client_id: 'heal', client_secret: 's3' },
      },
      callers: {
        [PAYMENTS.accessKeyId]: { secretAccessKey: PAYMENTS.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/payments-api' },
        [REPORTING.accessKeyId]: { secretAccessKey: REPORTING.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/reporting' },
      },
    };
    dir = mkdtempSync(join(tmpdir(), 'client-e2e-'));
    const file = join(dir, 'broker.json');
    writeFileSync(file, JSON.stringify(config, null, 2));

    // Same as `npm start -- --config FILE --port 0`, without npm and tsx's extra process in between.
    const proc = spawn(process.execPath, ['--import', 'tsx', CLI, '--config', file, '--port', '0'], {
      cwd: ROOT,
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    endpoint = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`local broker did not start:\n${output}`)), 45_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString('utf8');
        const match = /listening on (http:\/\/\S+)/.exec(output);
        if (match?.[1]) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onData);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`local broker exited with ${code}:\n${output}`));
      });
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child?.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    await oauth?.close();
    await api?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('gets a token through a SigV4-verifying broker', async () => {
    const { client: c } = client();
    const token = await c.getToken('e2e-cache');
    expect(token.accessToken).toMatch(/^tok-\d+$/);
    expect(token.tokenType.toLowerCase()).toBe('bearer');
    expect(token.expiresIn).toBeGreaterThan(60);
    expect(token.expiresIn).toBeLessThanOrEqual(300);
    expect(token.expiresAt.getTime()).toBeGreaterThan(Date.now() + 60_000);
  });

  it('caches across calls: the broker and the upstream are hit once', async () => {
    const { client: c, counter } = client();
    const before = issued.get('cache') ?? 0;
    const first = await c.getToken('e2e-cache', { minTtl: 30 });
    const second = await c.getToken('e2e-cache', { minTtl: 30 });
    const third = await c.getToken('e2e-cache', { minTtl: 30 });
    expect(new Set([first.accessToken, second.accessToken, third.accessToken]).size).toBe(1);
    expect(counter.requests).toBe(1);
    // The first test may have fetched this connection's token already; either way at most one upstream request.
    expect(issued.get('cache')).toBe(Math.max(before, 1));
  });

  it('collapses concurrent calls into one broker request and one upstream request', async () => {
    const { client: c, counter } = client();
    const tokens = await Promise.all(Array.from({ length: 25 }, () => c.getToken('e2e-concurrent')));
    expect(new Set(tokens.map((t) => t.accessToken)).size).toBe(1);
    expect(counter.requests).toBe(1);
    expect(issued.get('concurrent')).toBe(1);
  });

  it('a caller whose principal is not in the connection callers gets ForbiddenError', async () => {
    const { client: c } = client(REPORTING);
    const error = await c.getToken('e2e-cache').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ForbiddenError);
    expect(error).toMatchObject({ code: 'forbidden', status: 403 });
  });

  it('a request signed with an unknown key gets ForbiddenError', async () => {
    const { client: c } = client({ accessKeyId: 'AKIDUNKNOWN', secretAccessKey: 'nope' });
    await expect(c.getToken('e2e-cache')).rejects.toBeInstanceOf(ForbiddenError);
  });

  it('the interceptor heals a 401: the token is invalidated at the broker and a new one fetched upstream', async () => {
    const { client: c } = client();
    const first = await c.getToken('e2e-heal');
    rejected.add(first.accessToken);
    const upstreamAgent = new Agent();
    agents.push(upstreamAgent);
    const dispatcher = upstreamAgent.compose(tokenInterceptor(c, { connection: 'e2e-heal', origin: api.url }));

    const res = await request(`${api.url}/payments`, { dispatcher, method: 'POST', body: JSON.stringify({ amount: 1 }) });
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toEqual({ ok: true });
    expect(issued.get('heal')).toBe(2);

    // Another process (fresh client) now gets the new token from the broker, not the rejected one.
    const other = client().client;
    const second = await other.getToken('e2e-heal');
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(issued.get('heal')).toBe(2);

    // invalidate() returns what the broker did: the rejected token is no longer current; the new one is, but
    // the budget guard honours one invalidation per 10 s on a connection without rateLimit: deferred.
    expect(await other.invalidate('e2e-heal', first.accessToken)).toEqual({ invalidated: false, reason: 'not_current' });
    const again = await other.invalidate('e2e-heal', second.accessToken);
    expect(again).toMatchObject({ invalidated: false, reason: 'deferred' });
    expect(again.invalidated === false && again.reason === 'deferred' && again.retryAfterSeconds).toBeLessThanOrEqual(10);
  });

  it('the example payments Lambda works against it, signing with the default credential chain from the environment', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      TOKEN_BROKER_URL: endpoint,
      VITESSE_API_URL: api.url,
      VITESSE_CONNECTION: 'e2e-cache',
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: PAYMENTS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: PAYMENTS.secretAccessKey,
    });
    delete process.env.AWS_PROFILE;
    delete process.env.AWS_SESSION_TOKEN;
    try {
      const { handler } = await import('../../examples/payments-lambda.js');
      const event = { body: JSON.stringify({ orderId: 'o-1', amount: 1200, currency: 'EUR' }) } as Parameters<typeof handler>[0];
      const result = await handler(event);
      expect(result).toMatchObject({ statusCode: 201 });
      expect(issued.get('cache')).toBe(1);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });
});
