/**
 * `npm start` as a new user runs it: the CLI as a real process in demo mode (oidc-provider upstream,
 * embedded dynalite), its printed curl line run as printed, and the ways it must refuse to start.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, curlHasSigV4, logRecords, type RunningBroker, runCli, sh, startBroker } from './helpers.js';

const CURL_LINE =
  /^curl --aws-sigv4 "aws:amz:us-east-1:execute-api" --user "AKIDLOCALDEMO:([0-9a-f]{40})" "http:\/\/127\.0\.0\.1:(\d+)\/tokens\/demo\?min_ttl=60"$/;

let demo: RunningBroker;
const dir = mkdtempSync(join(tmpdir(), 'tb-local-demo-'));

beforeAll(async () => {
  demo = await startBroker(['--port', '0']);
});

afterAll(async () => {
  await demo?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function curlLine(): { line: string; secret: string } {
  const line = demo.stdout.find((l) => l.startsWith('curl '));
  expect(line).toBeDefined();
  const m = CURL_LINE.exec(line!);
  expect(m, line).not.toBeNull();
  expect(Number(m![2])).toBe(demo.port);
  return { line: line!, secret: m![1]! };
}

function expectDemoToken(body: Record<string, unknown> | undefined) {
  expect(body).toMatchObject({ token_type: 'Bearer', scope: 'api', connection: 'demo' });
  expect(String(body?.access_token).split('.')).toHaveLength(3); // a JWT from oidc-provider
  expect(body?.expires_in).toBeGreaterThanOrEqual(890);
  expect(body?.expires_in).toBeLessThanOrEqual(900);
  expect(Date.parse(String(body?.expires_at)) - Date.now()).toBeGreaterThan(880_000);
}

describe('demo mode', () => {
  it('prints the banner, a curl line with the real port, then "listening on http://127.0.0.1:PORT"', () => {
    expect(demo.url).toBe(`http://127.0.0.1:${demo.port}`);
    expect(demo.port).toBeGreaterThan(0);
    expect(demo.stdout.at(-1)).toBe(`listening on ${demo.url}`);
    curlLine();
  });

  it.skipIf(!curlHasSigV4())('serves a token to the printed curl line, run exactly as printed', async () => {
    const { line } = curlLine();
    const first = await sh(line);
    expect(first.code).toBe(0);
    const body = JSON.parse(first.stdout) as Record<string, unknown>;
    expectDemoToken(body);
    const again = JSON.parse((await sh(line)).stdout) as Record<string, unknown>;
    expect(again.access_token).toBe(body.access_token);
  });

  it('serves the same cached token to an aws4-signed request, and refuses a wrong secret', async () => {
    const { secret } = curlLine();
    const ok = await call(demo.url, { path: '/tokens/demo?min_ttl=120', sign: { accessKeyId: 'AKIDLOCALDEMO', secretAccessKey: secret } });
    expect(ok.status).toBe(200);
    expect(ok.headers['cache-control']).toBe('no-store');
    expectDemoToken(ok.json);
    const again = await call(demo.url, { path: '/tokens/demo', sign: { accessKeyId: 'AKIDLOCALDEMO', secretAccessKey: secret } });
    expect(again.json?.access_token).toBe(ok.json?.access_token);
    const bad = await call(demo.url, { path: '/tokens/demo', sign: { accessKeyId: 'AKIDLOCALDEMO', secretAccessKey: `${secret}x` } });
    expect(bad.status).toBe(403);
    expect(bad.json?.error).toBe('forbidden');
  });

  it('logs one JSON line per request, never the token, and keeps stderr clean', async () => {
    const { secret } = curlLine();
    const before = logRecords(demo.stdout).filter((r) => r.message === 'request').length;
    const r = await call(demo.url, { path: '/tokens/demo', sign: { accessKeyId: 'AKIDLOCALDEMO', secretAccessKey: secret } });
    const requestLines = () => logRecords(demo.stdout).filter((rec) => rec.message === 'request');
    await expect.poll(() => requestLines().length).toBe(before + 1); // the log line arrives on stdout
    const requests = requestLines();
    expect(requests.at(-1)).toMatchObject({ connection: 'demo', status: 200, caller: 'arn:aws:iam::111122223333:role/demo-caller' });
    const token = String(r.json?.access_token);
    expect(demo.stdout.some((l) => l.includes(token))).toBe(false);
    expect(demo.stderr()).toBe('');
  });

  it('exits 1 with one clear line when the port is in use', async () => {
    const r = await runCli(['--port', String(demo.port)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `error: port ${demo.port} on 127.0.0.1 is already in use (EADDRINUSE); stop the other process or choose another with --port\n`,
    );
    expect(r.stdout).not.toContain('listening on');
  });
});

describe('refusing to start', () => {
  const file = (name: string, doc: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof doc === 'string' ? doc : JSON.stringify(doc));
    return path;
  };
  const connection = {
    tokenUrl: 'http://127.0.0.1:9/token',
    grantType: 'client_credentials',
    secret: 'local/pay',
    callers: ['arn:aws:iam::111122223333:role/payments-*'],
  };
  const callers = { AKIDLOCALTEST: { secretAccessKey: 'caller-secret', principal: 'arn:aws:iam::111122223333:role/payments-api' } };
  const secrets = { 'local/pay': { client_id: 'id', client_secret: 'secret' } };

  it('exits 1 naming the connection and field for a bad config, and an unreadable or unknown-flag start, without a stack trace', async () => {
    const badField = file('bad-field.json', { connections: { pay: { ...connection, grantType: 'implicit' } }, secrets, callers });
    const missingSecret = file('missing-secret.json', { connections: { pay: { ...connection, secret: 'local/nope' } }, secrets, callers });
    const [a, b, c, d, e] = await Promise.all([
      runCli(['--config', badField, '--port', '0']),
      runCli(['--config', missingSecret, '--port', '0']),
      runCli(['--config', join(dir, 'does-not-exist.json')]),
      runCli(['--config', file('not-json.json', '{"connections": {'), '--port', '0']),
      runCli(['--port', '0', '--verbose']),
    ]);
    for (const r of [a, b, c, d, e]) {
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n')).toHaveLength(2); // one line and its newline
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(a.stderr).toBe(
      `error: invalid config (${badField}): connections.pay.grantType: Invalid option: expected one of "client_credentials"|"password"\n`,
    );
    expect(b.stderr).toBe(
      `error: invalid config (${missingSecret}): connections.pay.secret: names secret "local/nope", which is not in "secrets"\n`,
    );
    expect(c.stderr).toBe(`error: cannot read config file ${join(dir, 'does-not-exist.json')} (ENOENT)\n`);
    expect(d.stderr).toMatch(/^error: invalid config \(.*not-json\.json\): not valid JSON/);
    expect(e.stderr).toBe('error: unknown flag --verbose (see --help)\n');
  });
});

describe('shutdown', () => {
  it('exits 0 on SIGINT after closing everything', async () => {
    const other = await startBroker(['--port', '0']);
    expect(await other.stop('SIGINT')).toBe(0);
    expect(other.stderr()).toBe('');
  });
});
