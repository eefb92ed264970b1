/**
 * Issue 11 "Done when", end to end: two `npm start` processes share one DynamoDB-API server (dynalite in this
 * test process) and a config file whose connections are rate-limited like Vertex O Series (10 per 8 h),
 * against a loopback upstream this test controls and counts. The operator CLI runs as users run it,
 * `npm run ops -- ...` for the issue's own commands, the bin launcher (`token-broker-ops`, one process less)
 * for the rest, always as a child process. Requests are signed with aws4.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedDynamo, startDynalite } from '../../functions/local/dynamodb.js';
import { clientIdOf, type FakeIdp, startIdp } from '../../testkit/idp.js';
import { call, type RunningBroker, type Signing, startBroker } from '../local/helpers.js';
import { CALLER, type Finished, jsonLines, runOps, writeLocalConfig } from './support.js';

const SIGN: Signing = CALLER;
const TABLE = 'ops-e2e';

/** client_id -> how the upstream answers it now. */
const answers = new Map<string, 'token' | 'invalid_client'>();
const issued: string[] = [];
let idp: FakeIdp;
let dynamo: EmbeddedDynamo;
let dir: string;
let configPath: string;
let b1: RunningBroker;
let b2: RunningBroker;

beforeAll(async () => {
  idp = await startIdp((receipt) => {
    const id = clientIdOf(receipt) ?? '';
    if (answers.get(id) === 'invalid_client') return { status: 401, body: { error: 'invalid_client', error_description: 'bad client' } };
    const token = `tok-${id}-${issued.length + 1}`;
    issued.push(token);
    return { body: { access_token: token, token_type: 'Bearer', expires_in: 3600 } };
  });
  dynamo = await startDynalite();
  dir = mkdtempSync(join(tmpdir(), 'tb-ops-e2e-'));
  configPath = writeLocalConfig(dir, idp.url);
  const args = ['--config', configPath, '--port', '0', '--dynamodb-endpoint', dynamo.endpoint, '--table', TABLE];
  [b1, b2] = await Promise.all([startBroker(args), startBroker(args)]);
}, 120_000);

afterAll(async () => {
  const codes = await Promise.all([b1?.stop(), b2?.stop()]);
  await Promise.all([idp?.close(), dynamo?.close()]);
  rmSync(dir, { recursive: true, force: true });
  expect(codes).toEqual([0, 0]);
});

const target = () => ['--config', configPath, '--dynamodb-endpoint', dynamo.endpoint, '--table', TABLE];
const receipts = (clientId: string) => idp.receipts.filter((r) => clientIdOf(r) === clientId).length;

/** Nothing the CLI printed holds a token the upstream issued. */
function noToken(...runs: Finished[]): void {
  for (const r of runs) for (const t of issued) expect(r.stdout + r.stderr).not.toContain(t);
}

async function statusOf(connection: string, via: 'npm' | 'bin' = 'npm'): Promise<Record<string, unknown>> {
  const r = await runOps(['status', connection, '--json', ...target()], via);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  noToken(r);
  const lines = jsonLines(r.stdout);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('npm run ops against two local brokers on one store', () => {
  it('status --json shows ledger.used go from 0 to 1 after one token request on a rate-limited connection', async () => {
    const all = await runOps(['status', '--json', ...target()]);
    expect(all.code).toBe(0);
    const before = jsonLines(all.stdout).find((s) => s.connection === 'vertex')!;
    expect(before).toMatchObject({
      expiresAt: null,
      tokenFp: null,
      backoffUntil: null,
      circuit: { state: 'closed' },
      ledger: { used: 0, max: 10, windowSeconds: 28800, nextSlotAt: null },
    });

    const got = await call(b1.url, { path: '/tokens/vertex', sign: SIGN });
    expect(got.status).toBe(200);
    expect(receipts('vertex-client')).toBe(1);

    const after = await statusOf('vertex');
    expect(after).toMatchObject({
      connection: 'vertex',
      expiresAt: got.json!.expires_at,
      ledger: { used: 1, max: 10, windowSeconds: 28800 },
      circuit: { state: 'closed' },
    });
    expect(Date.parse((after.ledger as { nextSlotAt: string }).nextSlotAt)).toBeGreaterThan(Date.now() + 7 * 3_600_000);
    expect(after.tokenFp).toEqual(expect.any(String));

    const human = await runOps(['status', ...target()], 'bin');
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^vertex\n {2}token {5}fp \S+, expires /m);
    expect(human.stdout).toMatch(/ledger +vertex \(10 per 8h, reserve 2, spacing 48m\): 1 used, 9 left/);
    noToken(all, human);
  }, 180_000);

  it('an invalid_client opens the circuit (502, no upstream call); reset closes it and the next request goes upstream', async () => {
    answers.set('circuit-client', 'invalid_client');
    const failed = await call(b1.url, { path: '/tokens/circuit', sign: SIGN });
    expect(failed.status).toBe(502);
    expect(failed.json).toMatchObject({ error: 'upstream_error', upstream_error: 'invalid_client' });
    expect(receipts('circuit-client')).toBe(1); // the secret was re-read, unchanged: no retry

    expect(await statusOf('circuit')).toMatchObject({ circuit: { state: 'open', upstreamError: 'invalid_client' }, ledger: { used: 1 } });
    const refused = await call(b1.url, { path: '/tokens/circuit', sign: SIGN });
    expect(refused.status).toBe(502);
    expect(receipts('circuit-client')).toBe(1);

    answers.set('circuit-client', 'token'); // the upstream takes the unchanged secret again
    const reset = await runOps(['reset', 'circuit', ...target()]);
    expect(reset.code).toBe(0);
    expect(reset.stdout).toMatch(
      /^reset circuit: closed the circuit \(invalid_client, open since [^)]+\)\. Ledger circuit untouched: 1 of 10 used\.\n$/,
    );
    const audit = JSON.parse(reset.stderr.trim()) as Record<string, unknown>;
    expect(audit).toMatchObject({
      message: 'ops',
      action: 'reset',
      connection: 'circuit',
      result: 'reset',
      operator: 'local',
      target: 'local',
    });
    expect(Date.parse(audit.timestamp as string)).toBeGreaterThan(0);
    expect(await statusOf('circuit')).toMatchObject({ circuit: { state: 'closed' }, ledger: { used: 1 } }); // spent slots stay spent

    // b2 has never answered for this connection, so it reads the store (b1 may answer from memory for 5 s).
    const served = await call(b2.url, { path: '/tokens/circuit', sign: SIGN });
    expect(served.status).toBe(200);
    expect(receipts('circuit-client')).toBe(2);
    noToken(reset);
  }, 180_000);

  it('refresh is deferred by the guard (default spacing, exit 1); --force invalidates and the next request refreshes', async () => {
    const first = await call(b1.url, { path: '/tokens/guarded', sign: SIGN });
    expect(first.status).toBe(200);
    expect(receipts('guarded-client')).toBe(1);

    const deferred = await runOps(['refresh', 'guarded', ...target()], 'bin');
    expect(deferred.code).toBe(1);
    expect(deferred.stdout).toMatch(
      /^refresh guarded: deferred by the budget guard \(token requests on demand are spaced at least 2880 s apart \(spacing; budget 10 per 28800 s\)\): it can be honoured \S+ \(in 4\dm( \d+s)?\)\./,
    );
    expect(JSON.parse(deferred.stderr.trim())).toMatchObject({
      message: 'ops',
      action: 'refresh',
      connection: 'guarded',
      result: 'deferred',
    });
    expect(await statusOf('guarded', 'bin')).toMatchObject({ invalidated: false, ledger: { used: 1 } });

    const forced = await runOps(['refresh', 'guarded', '--force', ...target()], 'bin');
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(
      /^refresh guarded: invalidated token fp \S+ \(--force: the budget guard was skipped\); the next request fetches a new one\.\n$/,
    );
    expect(JSON.parse(forced.stderr.trim())).toMatchObject({ action: 'refresh', result: 'invalidated', forced: true });
    expect(await statusOf('guarded', 'bin')).toMatchObject({ invalidated: true, ledger: { used: 1 } });

    // b2 has never answered for this connection, so it reads the store (b1 may answer from memory for 5 s,
    // the staleness the contract allows): it finds the token invalidated and refreshes (reason expired).
    const refreshed = await call(b2.url, { path: '/tokens/guarded', sign: SIGN });
    expect(refreshed.status).toBe(200);
    expect(refreshed.json?.access_token).not.toBe(first.json?.access_token);
    expect(receipts('guarded-client')).toBe(2);
    expect(await statusOf('guarded', 'bin')).toMatchObject({ invalidated: false, lastRefresh: { reason: 'expired' }, ledger: { used: 2 } });
    noToken(deferred, forced);
  }, 180_000);

  it('--help through npm run ops, and a bad flag exits 2 with one line', async () => {
    const help = await runOps(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: npm run ops -- COMMAND/);
    const bad = await runOps(['status', '--stage', 'prod', '--table', 'x'], 'bin');
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toBe('error: --stage cannot be combined with --table (those select local mode) (see --help)\n');
  }, 120_000);
});
