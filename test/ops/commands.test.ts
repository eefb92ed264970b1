/**
 * The CLI in process against a real DynamoDB API (dynalite), local mode, with a fixed clock: status, reset
 * and refresh as the operator sees them (stdout, the audit line on stderr, exit codes) and what they do to
 * the stored items. Each test has its own table.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import type { Connection } from '../../functions/core/config.js';
import { loadLocalConfig } from '../../functions/local/config.js';
import { type EmbeddedDynamo, ensureTable, localDynamoClient, startDynalite } from '../../functions/local/dynamodb.js';
import { main } from '../../functions/ops/main.js';
import { CANARY_TOKEN, backoff, capture, circuit, jsonLines, seedNote, seedToken, writeLocalConfig } from './support.js';

const T0 = Date.UTC(2026, 10, 30, 9, 0, 0);
const HOUR = 3_600_000;

let dynamo: EmbeddedDynamo;
let client: DynamoDBClient;
let dir: string;
let configPath: string;
let connections: ReadonlyMap<string, Connection>;
let table: string;
let store: DynamoTokenStore;
let tables = 0;

beforeAll(async () => {
  dynamo = await startDynalite();
  client = localDynamoClient(dynamo.endpoint);
  dir = mkdtempSync(join(tmpdir(), 'tb-ops-'));
  configPath = writeLocalConfig(dir, 'http://127.0.0.1:9/token');
  connections = loadLocalConfig(configPath).broker.connections;
});

afterAll(async () => {
  client?.destroy();
  await dynamo?.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  table = `ops-test-${++tables}`;
  await ensureTable(client, table);
  store = new DynamoTokenStore(client, table);
});

const target = () => ['--config', configPath, '--dynamodb-endpoint', dynamo.endpoint, '--table', table];

async function ops(...args: string[]) {
  const c = capture();
  const code = await main([...args, ...target()], c.io, { now: () => T0 });
  return { code, stdout: c.out(), stderr: c.err() };
}

function auditOf(stderr: string): Record<string, unknown> {
  const lines = stderr.split('\n').filter((l) => l.startsWith('{'));
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

const vertex = () => connections.get('vertex')!;

/** One ledger debit `agoMs` before T0 on vertex's ledger. */
async function debit(id: string, agoMs: number): Promise<void> {
  const state = await store.read('vertex');
  const entries = { ...state.entries, [id]: T0 - agoMs };
  expect(await store.write('vertex', state.ver, entries, id, T0 + 9 * HOUR)).toBe('written');
}

describe('status', () => {
  it('--json prints one object per connection, sorted, with the contract fields, on an empty table', async () => {
    const r = await ops('status', '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = jsonLines(r.stdout);
    expect(lines.map((l) => l.connection)).toEqual(['circuit', 'guarded', 'pay', 'vertex']);
    const v = lines[3]!;
    expect(v).toMatchObject({
      connection: 'vertex',
      tokenFp: null,
      expiresAt: null,
      backoffUntil: null,
      circuit: { state: 'closed' },
      ledger: { key: 'vertex', used: 0, max: 10, windowSeconds: 28800, nextSlotAt: null, remaining: 10 },
    });
    expect(lines[2]).toMatchObject({ connection: 'pay', ledger: null });
  });

  it('shows the cached token by fingerprint, the ledger and the circuit, and never the token', async () => {
    await seedToken(store, 'vertex', { now: T0 - HOUR, expiresAt: T0 + HOUR, fp: 'fp-vertex-1' });
    await debit('a1', HOUR);
    const json = await ops('status', 'vertex', '--json');
    expect(json.code).toBe(0);
    const [s] = jsonLines(json.stdout);
    expect(jsonLines(json.stdout)).toHaveLength(1);
    expect(s).toMatchObject({
      connection: 'vertex',
      tokenFp: 'fp-vertex-1',
      expiresAt: new Date(T0 + HOUR).toISOString(),
      ageSeconds: 3600,
      lastRefresh: { reason: 'expired', at: new Date(T0 - HOUR).toISOString() },
      ledger: { used: 1, max: 10, windowSeconds: 28800, remaining: 9 },
    });
    // The oldest debit leaves the window 8 h (+ the margin) after it was made.
    expect(Date.parse((s!.ledger as { nextSlotAt: string }).nextSlotAt)).toBeGreaterThanOrEqual(T0 - HOUR + 8 * HOUR);

    const human = await ops('status', 'vertex');
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^vertex\n/);
    expect(human.stdout).toContain('fp fp-vertex-1, expires 2026-11-30T10:00:00.000Z (in 1h)');
    expect(human.stdout).toContain('age 1h');
    expect(human.stdout).toContain('reason expired');
    expect(human.stdout).toMatch(/ledger +vertex \(10 per 8h, reserve 2, spacing 48m\): 1 used, 9 left; next slot frees /);
    expect(human.stdout).toMatch(/circuit +closed/);
    for (const out of [json.stdout, human.stdout, json.stderr, human.stderr]) expect(out).not.toContain(CANARY_TOKEN);
  });

  it('shows an open circuit as state "open" with its upstream error', async () => {
    await seedNote(store, 'circuit', T0, { circuit: circuit(T0, connections.get('circuit')!.configHash) });
    const r = await ops('status', 'circuit', '--json');
    expect(jsonLines(r.stdout)[0]).toMatchObject({ circuit: { state: 'open', upstreamError: 'invalid_client', probes: 0 } });
    const human = await ops('status', 'circuit');
    expect(human.stdout).toMatch(/circuit +OPEN on invalid_client since .*: callers get 502; reset circuit closes it/);
  });

  it('an unknown connection is one line, exit 1, naming the known ones', async () => {
    const r = await ops('status', 'nope');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('error: unknown connection "nope" in the config file (connections: circuit, guarded, pay, vertex)\n');
  });
});

describe('reset', () => {
  it('closes the circuit, clears the backoffs and the hold, keeps the ledger log, and writes the audit line', async () => {
    const c = vertex();
    await seedToken(store, 'vertex', { now: T0 - HOUR, expiresAt: T0 + HOUR, fp: 'fp-v' });
    await seedNote(store, 'vertex', T0, {
      circuit: circuit(T0, c.configHash),
      backoff: backoff(T0 + 30_000, { upstreamError: 'invalid_client', code: 'upstream_error' }),
      demandBackoff: backoff(T0 + 600_000, { code: 'rate_limited', refusal: 'spacing' }),
    });
    await debit('a1', HOUR);
    await debit('a2', 60_000);
    await store.hold('vertex', 'vertex', T0 + 5 * 60_000);
    const ledgerBefore = await store.read('vertex');

    const r = await ops('reset', 'vertex');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'reset vertex: closed the circuit (invalid_client, open since 2026-11-30T08:59:00.000Z); ' +
        'cleared the backoff (invalid_client, until 2026-11-30T09:00:30.000Z); ' +
        'cleared the demand backoff (spacing, until 2026-11-30T09:10:00.000Z); ' +
        'released the ledger hold (until 2026-11-30T09:05:00.000Z). Ledger vertex untouched: 2 of 10 used.\n',
    );
    const item = await store.get('vertex');
    expect(item?.circuit).toBeUndefined();
    expect(item?.backoff).toBeUndefined();
    expect(item?.demandBackoff).toBeUndefined();
    expect(item?.fp).toBe('fp-v'); // the token stays
    const ledgerAfter = await store.read('vertex');
    expect(ledgerAfter.entries).toEqual(ledgerBefore.entries); // spent slots stay spent
    expect(ledgerAfter.holds).toBeUndefined();

    const audit = auditOf(r.stderr);
    expect(audit).toMatchObject({
      message: 'ops',
      action: 'reset',
      connection: 'vertex',
      result: 'reset',
      operator: 'local',
      target: 'local',
      timestamp: new Date(T0).toISOString(),
    });
    expect((audit.cleared as Array<{ what: string }>).map((x) => x.what)).toEqual(['circuit', 'backoff', 'demand_backoff', 'hold']);
    expect(audit.ledger).toEqual({ key: 'vertex', used: 2, max: 10 });
    expect(r.stderr).not.toContain(CANARY_TOKEN);
  });

  it('with nothing to clear says so and exits 0', async () => {
    const r = await ops('reset', 'pay');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('reset pay: nothing to reset (no circuit, backoff, demand backoff or hold).\n');
    expect(auditOf(r.stderr)).toMatchObject({ action: 'reset', connection: 'pay', result: 'nothing_to_reset', cleared: [] });
  });

  it('removes a circuit opened under another config, saying it no longer applied', async () => {
    await seedNote(store, 'pay', T0, { circuit: circuit(T0, 'another-config') });
    const r = await ops('reset', 'pay');
    expect(r.stdout).toContain('removed a circuit that no longer applied (invalid_client, opened under another config)');
    expect((await store.get('pay'))?.circuit).toBeUndefined();
  });
});

describe('refresh', () => {
  it('with nothing cached says so, exits 0 and writes the audit line', async () => {
    const r = await ops('refresh', 'vertex');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('refresh vertex: nothing cached; the next request fetches a token anyway.\n');
    expect(auditOf(r.stderr)).toMatchObject({ action: 'refresh', connection: 'vertex', result: 'nothing_cached' });
  });

  it('is deferred by the guard right after a request (spacing), exit 1, and --force invalidates', async () => {
    await seedToken(store, 'vertex', { now: T0 - 60_000, expiresAt: T0 + HOUR, fp: 'fp-v' });
    await debit('a1', 60_000);
    const r = await ops('refresh', 'vertex');
    expect(r.code).toBe(1);
    // Default spacing: 28800 s / 10 = 2880 s after the last request, which was 60 s ago.
    expect(r.stdout).toBe(
      'refresh vertex: deferred by the budget guard (token requests on demand are spaced at least 2880 s apart (spacing; budget 10 per 28800 s)): ' +
        'it can be honoured 2026-11-30T09:47:00.000Z (in 47m). Token fp fp-v stays in service meanwhile; --force skips the guard.\n',
    );
    expect(auditOf(r.stderr)).toMatchObject({
      action: 'refresh',
      result: 'deferred',
      tokenFp: 'fp-v',
      retryAfterSeconds: 2820,
      retryAt: '2026-11-30T09:47:00.000Z',
    });
    expect((await store.get('vertex'))?.invalidated).toBeUndefined();

    const forced = await ops('refresh', 'vertex', '--force');
    expect(forced.code).toBe(0);
    expect(forced.stdout).toBe(
      'refresh vertex: invalidated token fp fp-v (--force: the budget guard was skipped); the next request fetches a new one.\n',
    );
    expect(auditOf(forced.stderr)).toMatchObject({ action: 'refresh', result: 'invalidated', tokenFp: 'fp-v', forced: true });
    expect((await store.get('vertex'))?.invalidated).toBe(true);
    expect(Object.keys((await store.read('vertex')).entries)).toEqual(['a1']); // an invalidation spends nothing

    const again = await ops('refresh', 'vertex');
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('refresh vertex: token fp fp-v is already invalidated; the next request fetches a new one.\n');
  });

  it('is honoured without --force when the guard allows a request now', async () => {
    await seedToken(store, 'vertex', { now: T0 - 4 * HOUR, expiresAt: T0 + HOUR, fp: 'fp-old' });
    await debit('a1', 4 * HOUR);
    const r = await ops('refresh', 'vertex');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('refresh vertex: invalidated token fp fp-old; the next request fetches a new one.\n');
    expect((await store.get('vertex'))?.invalidated).toBe(true);
  });

  it('names the rule that defers it: the spacing the broker left in the item, or the reserve', async () => {
    await seedToken(store, 'vertex', { now: T0 - 60_000, expiresAt: T0 + HOUR, fp: 'fp-v' });
    await seedNote(store, 'vertex', T0, {
      demandBackoff: backoff(T0 + 600_000, {
        code: 'rate_limited',
        refusal: 'spacing',
        message: 'token requests on demand are spaced at least 2880 s apart (spacing; budget 10 per 28800 s)',
      }),
    });
    const spacing = await ops('refresh', 'vertex');
    expect(spacing.code).toBe(1);
    expect(spacing.stdout).toContain(
      'deferred by the budget guard (token requests on demand are spaced at least 2880 s apart (spacing; budget 10 per 28800 s)): it can be honoured 2026-11-30T09:10:00.000Z (in 10m)',
    );

    await ops('reset', 'vertex');
    // 8 of 10 spent, the last an hour ago (past the spacing): a demand request would leave fewer than 2.
    for (let i = 0; i < 8; i++) await debit(`r${i}`, 2 * HOUR - i * 60_000);
    const reserve = await ops('refresh', 'vertex');
    expect(reserve.code).toBe(1);
    expect(reserve.stdout).toContain(
      'deferred by the budget guard (the last 2 token requests of the budget (10 per 28800 s) are kept for expiring tokens (reserve))',
    );
  });

  it('is deferred while the circuit is open, saying reset closes it', async () => {
    await seedToken(store, 'circuit', { now: T0 - 4 * HOUR, expiresAt: T0 + HOUR, fp: 'fp-c' });
    await seedNote(store, 'circuit', T0, { circuit: circuit(T0, connections.get('circuit')!.configHash) });
    const r = await ops('refresh', 'circuit');
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      'deferred by the budget guard (upstream refused the credentials (invalid_client); no token requests until the secret or the config changes; reset circuit closes it)',
    );
    const forced = await ops('refresh', 'circuit', '--force');
    expect(forced.code).toBe(0);
    expect(forced.stdout).toContain('But the credential circuit is open: callers get 502 until it closes (reset circuit closes it).');
  });

  it('on a connection without rateLimit honours one invalidation', async () => {
    await seedToken(store, 'pay', { now: T0 - 60_000, expiresAt: T0 + HOUR, fp: 'fp-p' });
    const r = await ops('refresh', 'pay');
    expect(r.code).toBe(0);
    expect((await store.get('pay'))?.invalidated).toBe(true);
  });
});

describe('failures are one line, exit 1', () => {
  it('an unknown table; an action on it still writes its audit line, result failed', async () => {
    const c = capture();
    const args = ['--config', configPath, '--dynamodb-endpoint', dynamo.endpoint, '--table', 'no-such-table'];
    expect(await main(['status', ...args], c.io)).toBe(1);
    expect(c.err()).toBe(
      `error: reading the connections: table no-such-table at ${dynamo.endpoint}: table not found (npm start --dynamodb-endpoint creates it; check --table)\n`,
    );

    const a = capture();
    expect(await main(['reset', 'vertex', ...args], a.io)).toBe(1);
    const [audit, error] = a.err().trim().split('\n');
    expect(JSON.parse(audit!)).toMatchObject({
      message: 'ops',
      action: 'reset',
      connection: 'vertex',
      result: 'failed',
      error: expect.stringContaining('table not found'),
    });
    expect(error).toBe(
      `error: reset vertex: table no-such-table at ${dynamo.endpoint}: table not found (npm start --dynamodb-endpoint creates it; check --table)`,
    );
  });

  it('an unreachable endpoint', async () => {
    const c = capture();
    expect(await main(['status', '--config', configPath, '--dynamodb-endpoint', 'http://127.0.0.1:9'], c.io)).toBe(1);
    expect(c.err()).toMatch(
      /^error: reading the connections \(table token-broker-local at http:\/\/127\.0\.0\.1:9\): cannot reach the endpoint \(ECONNREFUSED\)\n$/,
    );
  });

  it('an unreadable or invalid config file', async () => {
    const missing = capture();
    expect(await main(['status', '--config', join(dir, 'nope.json'), '--dynamodb-endpoint', dynamo.endpoint], missing.io)).toBe(1);
    expect(missing.err()).toBe(`error: cannot read config file ${join(dir, 'nope.json')} (ENOENT)\n`);
  });
});
