/**
 * Issue 11's runtime half: one stdout line per request carrying its EMF metrics with a `connection`
 * dimension and the audit fields; the scheduled budget gauges for every connection. The real logger
 * and metrics (functions/broker/observability.ts), real store (dynalite), output captured from stdout. Never a token.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { buildAwsEntry } from '../../functions/broker/compose.js';
import { publishBudgetGauges } from '../../functions/broker/gauges.js';
import { createHttpHandler, type HttpHandler } from '../../functions/broker/http.js';
import { jsonLogger, emfMetrics } from '../../functions/broker/observability.js';
import { configDocument } from '../../functions/core/config.js';
import { ledgerMarginMs } from '../../functions/core/ledger.js';
import { DEFAULT_MARGIN_PARTS } from '../../functions/core/limits.js';
import { BUDGET_GAUGE_EVENT } from '../../functions/contract/telemetry.js';
import { localDynamoClient } from '../../functions/local/dynamodb.js';
import { apiEvent } from '../../functions/local/api-event.js';
import { realClock } from '../support/clock.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { issue } from '../../testkit/idp.js';

type Line = Record<string, unknown> & {
  _aws?: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] };
};

let world: World;
let handler: HttpHandler;
let output: string[] = [];
const tokens: string[] = [];

const event = (method: string, target: string, body: string | null = null) => apiEvent(method, target, { userArn: CALLER, body });

/** The JSON lines written to stdout by `run`. */
async function lines<T>(run: () => Promise<T>): Promise<{ result: T; lines: Line[] }> {
  output = [];
  const result = await run();
  const text = output.join('');
  return {
    result,
    lines: text.trim()
      ? text
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Line)
      : [],
  };
}
const metricNames = (l: Line) => l._aws!.CloudWatchMetrics[0]!.Metrics.map((m) => m.Name);
const dims = (l: Line) => l._aws!.CloudWatchMetrics[0]!.Dimensions;

beforeAll(async () => {
  world = await startWorld(issue(1200));
  const config = connections(world.idp, { pay: {}, vertex: { rateLimit: { max: 10, windowSeconds: 28800 } } });
  const { broker } = instance(world, { clock: realClock, config });
  handler = createHttpHandler({ broker, logger: jsonLogger(), metrics: emfMetrics() });
  // Both streams: in Lambda, stderr lands in the same log group (a warning there is a second line too).
  for (const stream of [process.stdout, process.stderr]) {
    vi.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
      output.push(String(chunk));
      return true;
    });
  }
});
afterAll(async () => {
  vi.restoreAllMocks();
  await world.close();
});
beforeEach(() => {
  output = [];
});

describe('one line per request, with its metrics', () => {
  it('a served request writes exactly one stdout line: the audit fields and the EMF metrics with a connection dimension', async () => {
    const request = event('GET', '/tokens/vertex');
    const { result, lines: out } = await lines(() => handler(request));
    expect(result.statusCode).toBe(200);
    tokens.push(JSON.parse(result.body).access_token as string);
    expect(out).toHaveLength(1);
    const line = out[0]!;
    expect(line).toMatchObject({
      message: 'request',
      requestId: request.requestContext.requestId,
      caller: CALLER, // with its session name
      role: 'arn:aws:iam::111122223333:role/payments-api',
      connection: 'vertex',
      route: 'token',
      outcome: 'refreshed',
      refreshReason: 'expired',
      tokenFp: expect.any(String),
      expiresIn: expect.any(Number),
      minTtl: 60,
      status: 200,
      latencyMs: expect.any(Number),
      ledgerRemaining: 9,
      RefreshExpired: 1,
      Refreshed: 1,
      LedgerRemaining: 9,
    });
    expect(line._aws!.CloudWatchMetrics[0]!.Namespace).toBe('TokenBroker');
    // The `service` dimension's value is the logger's own `service` field.
    expect(line.service).toBe('token-broker');
    expect(dims(line)).toEqual([['service', 'connection']]);
    expect(metricNames(line)).toEqual(expect.arrayContaining(['Refreshed', 'RefreshExpired', 'LedgerRemaining', 'Latency']));
  });

  it('every kind of answer is one line: a memory hit, an invalidation answer, an error, an unknown connection', async () => {
    const memory = await lines(() => handler(event('GET', '/tokens/vertex')));
    expect(memory.lines).toHaveLength(1);
    expect(memory.lines[0]).toMatchObject({ outcome: 'memory', MemoryHit: 1 });

    const inv = await lines(() => handler(event('POST', '/tokens/vertex/invalidate', JSON.stringify({ access_token: tokens[0] }))));
    expect(inv.lines).toHaveLength(1);
    expect(inv.lines[0]).toMatchObject({
      route: 'invalidate',
      invalidation: 'deferred',
      tokenFp: expect.any(String),
      InvalidationDeferred: 1,
    });

    const refused = await lines(() => handler(event('GET', '/tokens/vertex?min_ttl=1199')));
    expect(refused.lines).toHaveLength(1);

    const unknown = await lines(() => handler(event('GET', '/tokens/no-such-connection')));
    expect(unknown.result.statusCode).toBe(404);
    expect(unknown.lines).toHaveLength(1);
    // A name that is not configured never becomes a metric dimension (no series per typo).
    expect(dims(unknown.lines[0]!)).toEqual([['service']]);
    const all = JSON.stringify([memory, inv, refused, unknown].flatMap((x) => x.lines));
    for (const t of tokens) expect(all).not.toContain(t);
  });

  it('a refused demand says why: cause in the line, RefusedSpacing and RateLimited counted', async () => {
    const { result, lines: out } = await lines(() => handler(event('GET', '/tokens/vertex?min_ttl=1199')));
    expect(result.statusCode).toBe(429);
    expect(out[0]).toMatchObject({ status: 429, error: 'rate_limited', cause: 'spacing', RefusedSpacing: 1, RateLimited: 1 });
  });
});

describe('budget gauges (scheduled, every minute, traffic or not)', () => {
  it('publish LedgerUsed, LedgerRemaining and NextSlotSeconds per rate-limited connection and CircuitOpen per connection', async () => {
    const config = connections(world.idp, { pay: {}, vertex: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    const store = new DynamoTokenStore(localDynamoClient(world.dynamo.endpoint), world.table);
    const { lines: out, result } = await lines(() =>
      publishBudgetGauges({
        config,
        store,
        ledger: store,
        logger: jsonLogger(),
        metrics: emfMetrics(),
        clock: realClock,
        marginMs: ledgerMarginMs(DEFAULT_MARGIN_PARTS),
      }),
    );
    expect(result).toEqual({ connections: 2, failed: [] });
    const budget = out.filter((l) => l.message === 'budget');
    const circuit = budget.filter((l) => metricNames(l).includes('CircuitOpen'));
    expect(circuit.map((l) => l.connection).sort()).toEqual(['pay', 'vertex']);
    for (const l of circuit) {
      expect(l).toMatchObject({ CircuitOpen: 0, circuit: 'closed' });
      expect(dims(l)).toEqual([['service', 'connection']]);
    }
    const ledger = budget.filter((l) => metricNames(l).includes('LedgerUsed'));
    expect(ledger).toHaveLength(1);
    // One token request so far on `vertex` (the first test's): 1 used, 9 left, a slot free now.
    expect(ledger[0]).toMatchObject({
      connection: 'vertex',
      ledgerKey: 'vertex',
      used: 1,
      remaining: 9,
      LedgerUsed: 1,
      LedgerRemaining: 9,
      NextSlotSeconds: 0,
    });
    expect(dims(ledger[0]!)).toEqual([['service', 'connection', 'ledger']]);
    expect(ledger[0]!.ledger).toBe('vertex');
  });

  it('the Lambda entry answers the scheduled event with the gauges, not an HTTP response', async () => {
    const config = connections(world.idp, { vertex: { rateLimit: { max: 10, windowSeconds: 28800 } } });
    const dir = mkdtempSync(join(tmpdir(), 'broker-gauges-'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(configDocument(config)));
    // The SDK's service-specific endpoint variable points the function's DynamoDB client at dynalite.
    const endpoint = process.env.AWS_ENDPOINT_URL_DYNAMODB;
    process.env.AWS_ENDPOINT_URL_DYNAMODB = world.dynamo.endpoint;
    process.env.AWS_ACCESS_KEY_ID ??= 'local';
    process.env.AWS_SECRET_ACCESS_KEY ??= 'local';
    process.env.AWS_REGION ??= 'us-east-1';
    try {
      const entry = await buildAwsEntry({
        LAMBDA_TASK_ROOT: dir,
        BROKER_TABLE: world.table,
        BROKER_SEAL_KEY_ARN: 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000',
        AWS_REGION: 'us-east-1',
      });
      const { result, lines: out } = await lines(() => entry({ ...BUDGET_GAUGE_EVENT }));
      expect(result).toEqual({ connections: 1, failed: [] });
      expect(out.filter((l) => l.message === 'budget' && l.LedgerUsed === 1)).toHaveLength(1);
    } finally {
      if (endpoint === undefined) delete process.env.AWS_ENDPOINT_URL_DYNAMODB;
      else process.env.AWS_ENDPOINT_URL_DYNAMODB = endpoint;
    }
  });
});
