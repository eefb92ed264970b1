/**
 * examples/python/get_token.py (botocore SigV4Auth + requests) against the running local broker, which
 * verifies SigV4 as API Gateway does: if the script stopped signing (or signed wrongly) these tests fail
 * with the broker's 403. Its module-level rules (Retry-After, the one report on a 401, `deferred`) are run
 * against a fake broker with an injected clock and sleep, so nothing waits for real.
 *
 * The interpreter: $TOKEN_BROKER_PYTHON, else `python3`, else `/usr/bin/python3`, the first that imports
 * botocore and requests (`.ci/run` installs Debian's python3-botocore and python3-requests when none does).
 * Without one the suite is skipped locally and fails on CI.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySigV4 } from '../../functions/local/sigv4.js';
import { listen, type LocalServer } from '../client/support.js';
import { ROOT, startBroker, type RunningBroker } from '../local/helpers.js';

const SCRIPT = join(ROOT, 'examples/python/get_token.py');
const CALLER = { accessKeyId: 'AKIDPYTHONCALLER', secretAccessKey: 'python-caller-secret' };

function findPython(): string | undefined {
  const candidates = [process.env.TOKEN_BROKER_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c));
  return candidates.find((c) => spawnSync(c, ['-c', 'import botocore, requests'], { stdio: 'ignore' }).status === 0);
}

const PYTHON = findPython();
if (!PYTHON && process.env.CI)
  throw new Error('no python3 with botocore and requests: .ci/run installs python3-botocore and python3-requests');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs python with only the AWS variables given (no ~/.aws files, no instance metadata). */
function python(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      PYTHON!,
      args,
      {
        cwd: ROOT,
        timeout: 60_000,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: tmpdir(),
          AWS_CONFIG_FILE: '/dev/null',
          AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
          AWS_EC2_METADATA_DISABLED: 'true',
          PYTHONDONTWRITEBYTECODE: '1',
          ...env,
        },
      },
      (e, stdout, stderr) =>
        resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

const creds = (c = CALLER) => ({ AWS_ACCESS_KEY_ID: c.accessKeyId, AWS_SECRET_ACCESS_KEY: c.secretAccessKey, AWS_REGION: 'us-east-1' });

describe.skipIf(!PYTHON)('examples/python/get_token.py', () => {
  let broker: RunningBroker | undefined;
  let oauth: LocalServer;
  let api: LocalServer;
  let dir = '';
  let issued = 0;
  const apiTokens: string[] = [];
  const apiKeys: string[] = [];

  beforeAll(async () => {
    oauth = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ access_token: `py-tok-${++issued}`, token_type: 'Bearer', expires_in: 900, scope: 'API' }));
    });
    // An upstream API that rejects the first token it sees.
    api = await listen((req, res) => {
      const token = req.headers.authorization?.replace(/^Bearer /, '') ?? '';
      apiTokens.push(token);
      apiKeys.push(String(req.headers['idempotency-key'] ?? ''));
      const ok = token !== '' && token !== apiTokens[0];
      res
        .writeHead(ok ? 200 : 401, { 'content-type': 'application/json' })
        .end(JSON.stringify(ok ? { ok: true } : { error: 'invalid_token' }));
    });
    const config = {
      connections: {
        'py-demo': {
          tokenUrl: `${oauth.url}/token`,
          grantType: 'client_credentials',
          scope: 'API',
          secret: 'py/demo',
          callers: ['arn:aws:iam::111122223333:role/python-*'],
        },
      },
      secrets: { 'py/demo': { client_id: 'py', client_secret: 'py-secret' } },
      callers: {
        [CALLER.accessKeyId]: { secretAccessKey: CALLER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/python-app' },
      },
    };
    dir = mkdtempSync(join(tmpdir(), 'python-example-'));
    writeFileSync(join(dir, 'broker.json'), JSON.stringify(config));
    broker = await startBroker(['--config', join(dir, 'broker.json'), '--port', '0']);
  }, 90_000);

  afterAll(async () => {
    await broker?.stop();
    await oauth?.close();
    await api?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints the broker’s 200 JSON on stdout and exits 0 (signed with the env credentials, session token included)', async () => {
    const r = await python([SCRIPT, broker!.url, 'py-demo', '120'], { ...creds(), AWS_SESSION_TOKEN: 'python-session-token' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const body = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['access_token', 'connection', 'expires_at', 'expires_in', 'scope', 'token_type']);
    expect(body).toMatchObject({ access_token: 'py-tok-1', token_type: 'Bearer', scope: 'API', connection: 'py-demo' });
    // It asked for MIN_TTL plus the 5 s skew, as the TypeScript client does.
    expect(body.expires_in).toBeGreaterThanOrEqual(125);
    expect(r.stdout.trim()).toBe(JSON.stringify(body));
  });

  it('on an error prints the broker’s error JSON on stderr and exits non-zero: wrong secret (403), unknown connection (404)', async () => {
    const forbidden = await python([SCRIPT, broker!.url, 'py-demo'], creds({ ...CALLER, secretAccessKey: 'not-the-secret' }));
    expect(forbidden.code).toBe(1);
    expect(forbidden.stdout).toBe('');
    expect(JSON.parse(forbidden.stderr)).toMatchObject({ error: 'forbidden', message: expect.stringMatching(/signature/) });

    const missing = await python([SCRIPT, broker!.url, 'no-such-connection'], creds());
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stderr)).toEqual({ error: 'not_found', message: expect.any(String) });

    const usage = await python([SCRIPT, broker!.url], creds());
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('get_token.py ENDPOINT CONNECTION [MIN_TTL]');
  });

  it('call_upstream heals a 401 once: reports the token to the broker and retries with a new one', async () => {
    const snippet = [
      'import json, sys',
      "sys.path.insert(0, 'examples/python')",
      'from get_token import BrokerClient',
      `client = BrokerClient(${JSON.stringify(broker!.url)})`,
      `res = client.call_upstream('py-demo', 'GET', ${JSON.stringify(`${api.url}/payments`)}, headers={'Idempotency-Key': 'k-1'})`,
      "print(json.dumps({'status': res.status_code, 'body': res.json()}))",
    ].join('\n');
    const before = issued;
    apiKeys.length = 0;
    const r = await python(['-c', snippet], creds());
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ status: 200, body: { ok: true } });
    expect(apiTokens).toHaveLength(2);
    expect(apiTokens[1]).not.toBe(apiTokens[0]);
    // The replay carries the caller's headers too.
    expect(apiKeys).toEqual(['k-1', 'k-1']);
    // The broker honoured the report: one more upstream token request.
    expect(issued).toBe(before + 1);
  });

  describe('rules, against a fake broker with an injected clock', () => {
    let fake: LocalServer;
    let always401: LocalServer;
    const seen: Array<{ method: string; url: string; signed: boolean }> = [];
    let upstreamHits = 0;
    let gets = 0;

    beforeAll(async () => {
      fake = await listen((req, res, body) => {
        let signed = false;
        try {
          signed =
            verifySigV4(
              {
                method: req.method ?? 'GET',
                target: req.url ?? '/',
                headers: req.headers as Record<string, string>,
                body: Buffer.from(body),
              },
              { region: 'eu-west-1', now: Date.now(), secretFor: (k) => (k === CALLER.accessKeyId ? CALLER.secretAccessKey : undefined) },
            ).accessKeyId === CALLER.accessKeyId;
        } catch {
          signed = false;
        }
        seen.push({ method: req.method ?? '', url: req.url ?? '', signed });
        res.setHeader('content-type', 'application/json');
        if (req.method === 'POST') {
          res.writeHead(200).end(JSON.stringify({ invalidated: false, reason: 'deferred', retry_after: 30 }));
        } else if (++gets === 1) {
          res.writeHead(503, { 'retry-after': '7' }).end(JSON.stringify({ error: 'unavailable', message: 'refresh in progress' }));
        } else {
          res.writeHead(200).end(
            JSON.stringify({
              access_token: 'fake-tok',
              token_type: 'Bearer',
              expires_in: 300,
              expires_at: new Date().toISOString(),
              connection: 'py-demo',
            }),
          );
        }
      });
      always401 = await listen((_req, res) => {
        upstreamHits++;
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_token"}');
      });
    });

    afterAll(async () => {
      await fake?.close();
      await always401?.close();
    });

    it('waits Retry-After (+ jitter) on a 503, returns the 401 without replaying it on a deferred report, and caches while min_ttl + skew is left', async () => {
      const snippet = [
        'import json, sys',
        "sys.path.insert(0, 'examples/python')",
        'from botocore.credentials import Credentials',
        'from get_token import BrokerClient',
        'clock = [1000.0]',
        'sleeps = []',
        'def sleep(s):',
        '    sleeps.append(round(s, 3))',
        '    clock[0] += s',
        `client = BrokerClient(${JSON.stringify(`${fake.url}/prod`)}, region='eu-west-1', credentials=Credentials(${JSON.stringify(CALLER.accessKeyId)}, ${JSON.stringify(CALLER.secretAccessKey)}),`,
        '                      now=lambda: clock[0], sleep=sleep, rand=lambda: 0.5)',
        `res = client.call_upstream('py-demo', 'GET', ${JSON.stringify(`${always401.url}/x`)})`,
        "again = client.invalidate('py-demo', 'fake-tok')",
        // The deferred token stays cached: it was sent at 7.05 s and lives 300 s, to 307.05 s. Cached while it has
        // min_ttl 60 + skew 5 left: 222 s later 78 s are left (hit); 15 s more leave 63 s (miss: a third GET).
        "client.get_token('py-demo'); clock[0] += 222; client.get_token('py-demo'); clock[0] += 15; client.get_token('py-demo')",
        "print(json.dumps({'status': res.status_code, 'sleeps': sleeps, 'again': again}))",
      ].join('\n');
      const r = await python(['-c', snippet]);
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({
        status: 401,
        // Retry-After 7 s plus rand() * base delay (0.5 * 0.1 s).
        sleeps: [7.05],
        // A second report of the deferred token is answered from memory.
        again: { invalidated: false, reason: 'deferred', retry_after: 30 },
      });
      expect(upstreamHits).toBe(1);
      expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
        'GET /prod/tokens/py-demo?min_ttl=65',
        'GET /prod/tokens/py-demo?min_ttl=65',
        'POST /prod/tokens/py-demo/invalidate',
        'GET /prod/tokens/py-demo?min_ttl=65',
      ]);
      expect(seen.every((s) => s.signed)).toBe(true);
    });
  });
});
