/**
 * Shared by the benchmark runner (bench/run.ts) and its worker processes (bench/worker.ts): the jobs a
 * worker runs, how a worker composes a broker "container", API Gateway events, a load driver and
 * latency statistics.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { CachedSecretSource } from '../functions/adapters/credentials.js';
import { DynamoTokenStore } from '../functions/adapters/dynamodb-store.js';
import { rawAesSealer } from '../functions/adapters/sealer.js';
import { HttpUpstream } from '../functions/adapters/upstream-http.js';
import { createHttpHandler, type ProxyEvent } from '../functions/broker/http.js';
import { noMetrics, jsonLogger, emfMetrics, type RequestLog } from '../functions/broker/observability.js';
import { type BrokerOptions, TokenBroker } from '../functions/core/broker.js';
import { type ConnectionInput, parseConfig } from '../functions/core/config.js';
import { randomIds, systemClock, systemTimers } from '../functions/adapters/system.js';
import { MIN_TTL_PARAM, routePath } from '../functions/contract/routes.js';
import { apiEvent } from '../functions/local/api-event.js';

export const CALLER = 'arn:aws:sts::111122223333:assumed-role/payments-api/bench';
const ALLOWED = ['arn:aws:iam::111122223333:role/payments-*'];
const SECRET_NAME = 'bench/credentials';
export const CREDENTIALS = { client_id: 'bench-client', client_secret: 'bench-secret' };

/** What every worker needs to build its broker "container". */
export interface Env {
  endpoint: string;
  table: string;
  sealKeyHex: string;
  connections: Record<string, ConnectionInput>;
  options: Partial<BrokerOptions>;
}

export interface Load {
  concurrency: number;
  durationMs: number;
  /** Pause of each loop between requests (0: just yield to the event loop). */
  thinkMs: number;
  minTtl: number;
}

/** broker: the handler; process-cache: an OAuth library's cache in each process; no-cache: upstream per call. */
export type StormMode = 'broker' | 'process-cache' | 'no-cache';

export type Job =
  | { kind: 'storm'; env: Env; load: Load; mode: StormMode }
  | { kind: 'ledger'; env: Env; load: Load }
  | { kind: 'hot'; env: Env; rounds: number; perRound: number; refreshes: number }
  /** `warm`: a connection this process refreshes once before the storms (its upstream client and secrets load). */
  | { kind: 'waiters'; env: Env; requests: number; minTtl: number; warm: string };

/** Calls made and their outcomes (`200`, `429`, `short` for a token below min_ttl, `error:Name`, ...). */
export interface Tally {
  calls: number;
  outcomes: Record<string, number>;
  /** Ledger debits written by this process (epoch ms, as recorded in the ledger). */
  debits?: number[];
  /**
   * Distinct tokens served by this process: access token -> expiry (epoch ms) as served. The broker's expiry is
   * the time it sent the token request + expires_in, so it dates each token by its request, however late the
   * request reached the upstream (a stalled worker).
   */
  tokens?: Record<string, number>;
}

/** One refresh storm as one worker saw it (`waiters` job). */
export interface StormRound {
  /** Epoch ms at which this process sent its requests (all at once). */
  startedAt: number;
  /** Epoch ms at which each request of this process was answered. */
  servedAt: number[];
  outcomes: Record<string, number>;
  /** Consistent reads (GetItem) of the token item this process made during the storm. */
  reads: number;
  /** When each of those reads was sent and answered (epoch ms). */
  readTimes: [number, number][];
  /** Set in the process that refreshed: when its publish returned (epoch ms; all processes share one clock). */
  publishedAt?: number;
}

export interface LatencyStats {
  n: number;
  p50Ms: number;
  p99Ms: number;
}

export interface HotResult {
  latency: Record<string, LatencyStats>;
  /** DynamoDB calls per run of each probe (counted in an untimed pass before the timed ones). */
  dbCallsPerRun: Record<string, number>;
  /** Bytes and lines written to stdout and stderr per run of each probe (the log line and its EMF metrics), counted in that pass. */
  logBytesPerRun: Record<string, number>;
  logLinesPerRun: Record<string, number>;
}

export type WorkerResult = Tally | HotResult | { rounds: number };

/** Messages from the runner to a worker, and back. A `waiters` worker answers each `storm` until `stop`. */
export type ToWorker = { type: 'job'; job: Job } | { type: 'go' } | { type: 'storm' } | { type: 'stop' };
export type Done<R = WorkerResult> = { type: 'result'; result: R; maxStallMs: number; runMs: number };
export type FromWorker = { type: 'ready' } | Done | { type: 'failed'; error: string } | { type: 'storm'; round: StormRound };

export function connectionDoc(tokenUrl: string, extra: Partial<ConnectionInput> = {}): ConnectionInput {
  return { tokenUrl, grantType: 'client_credentials', secret: SECRET_NAME, callers: ALLOWED, ...extra } as ConnectionInput;
}

/** The settings of localDynamoClient (functions/local/dynamodb.ts), without pulling dynalite into the worker bundle. */
function dynamoClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    maxAttempts: 3,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
}

const silentLog: RequestLog = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * One broker container as compose.ts builds it for Lambda, with local adapters: its own DynamoDB client
 * to the shared endpoint, a raw-AES sealer with the shared key, secrets from memory. `quiet` swaps
 * the JSON logging and EMF metrics (written to this process's stdout) for no-ops.
 */
export function container(env: Env, o: { options?: Partial<BrokerOptions>; quiet?: boolean } = {}) {
  const config = parseConfig({ connections: env.connections });
  const client = dynamoClient(env.endpoint);
  const store = new DynamoTokenStore(client, env.table);
  const sealer = rawAesSealer(Buffer.from(env.sealKeyHex, 'hex'));
  const secrets = new CachedSecretSource(async () => ({ value: CREDENTIALS, version: '1' }), systemClock);
  const logger = o.quiet ? silentLog : jsonLogger();
  const broker = new TokenBroker({
    config,
    store,
    ledger: store,
    secrets,
    sealer,
    upstream: new HttpUpstream(),
    clock: systemClock,
    ids: randomIds,
    timers: systemTimers,
    log: logger,
    options: { ...env.options, ...o.options },
  });
  const handler = createHttpHandler({ broker, logger, metrics: o.quiet ? noMetrics : emfMetrics() });
  return { config, client, store, sealer, broker, handler };
}

const getEvents = new Map<string, ProxyEvent>();

/**
 * The proxy event API Gateway sends for a verified GET of a token (functions/local/api-event.ts, as the local
 * gateway and the tests build it). Built once per connection and min_ttl: building one hashes and draws a
 * request id, which the timed loops must not count.
 */
export function getEvent(connection: string, minTtl: number): ProxyEvent {
  const target = `${routePath('token', connection)}?${MIN_TTL_PARAM}=${minTtl}`;
  let event = getEvents.get(target);
  if (!event) getEvents.set(target, (event = apiEvent('GET', target, { userArn: CALLER })));
  return event;
}

export const invalidateEvent = (connection: string, accessToken: string): ProxyEvent =>
  apiEvent('POST', routePath('invalidate', connection), { userArn: CALLER, body: JSON.stringify({ access_token: accessToken }) });

/** The outcome of a GET /tokens response: `200`, `short` if the token has less than min_ttl left, else status and message. */
export function tokenOutcome(res: APIGatewayProxyResult, minTtl: number): { outcome: string; accessToken?: string; expiresAt?: number } {
  if (res.statusCode !== 200)
    return { outcome: `${res.statusCode} ${(JSON.parse(res.body) as { message?: string }).message ?? ''}`.trim() };
  const body = JSON.parse(res.body) as { access_token: string; expires_in: number; expires_at: string };
  const expiresAt = Date.parse(body.expires_at);
  const short = body.expires_in < minTtl || expiresAt - Date.now() < minTtl * 1000;
  return { outcome: short ? 'short' : '200', accessToken: body.access_token, expiresAt };
}

/** Remembers the distinct tokens a process served (at most `cap`: a no-cache run serves one per call). */
export function tokenLog(cap = 5_000) {
  const tokens: Record<string, number> = {};
  let size = 0;
  return {
    tokens,
    add(accessToken: string | undefined, expiresAt: number | undefined) {
      if (accessToken === undefined || expiresAt === undefined || accessToken in tokens || size >= cap) return;
      tokens[accessToken] = expiresAt;
      size++;
    },
  };
}

/**
 * Counts the bytes and lines this process writes to stdout and stderr (the handler's log lines) until
 * `restore` puts the streams' own `write` back. The counting costs time per line: no timed run goes through it.
 */
export function outputBytes(): { read: () => { bytes: number; lines: number }; restore: () => void } {
  const out = { bytes: 0, lines: 0 };
  const streams = [process.stdout, process.stderr];
  const own = streams.map((stream) => stream.write);
  for (const stream of streams) {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      out.bytes += buf.byteLength;
      for (const b of buf) if (b === 10) out.lines++;
      return write(chunk, ...rest);
    }) as typeof stream.write;
  }
  return {
    read: () => ({ ...out }),
    restore: () => streams.forEach((stream, i) => (stream.write = own[i]!)),
  };
}

/** Runs `concurrency` loops of `action` until `durationMs` has passed; every call's outcome is tallied. */
export async function drive(action: () => Promise<string>, load: Pick<Load, 'concurrency' | 'durationMs' | 'thinkMs'>): Promise<Tally> {
  const tally: Tally = { calls: 0, outcomes: {} };
  const end = Date.now() + load.durationMs;
  const loop = async () => {
    while (Date.now() < end) {
      const outcome = await action().catch((e: unknown) => `error:${(e as Error)?.name ?? typeof e}`);
      tally.calls++;
      tally.outcomes[outcome] = (tally.outcomes[outcome] ?? 0) + 1;
      await (load.thinkMs > 0 ? sleep(load.thinkMs) : yieldTurn());
    }
  };
  await Promise.all(Array.from({ length: load.concurrency }, loop));
  return tally;
}

export function mergeTallies(tallies: Tally[]): Tally {
  const out: Tally = { calls: 0, outcomes: {}, debits: [], tokens: {} };
  for (const t of tallies) {
    out.calls += t.calls;
    out.debits!.push(...(t.debits ?? []));
    Object.assign(out.tokens!, t.tokens);
    for (const [k, v] of Object.entries(t.outcomes)) out.outcomes[k] = (out.outcomes[k] ?? 0) + v;
  }
  return out;
}

/** A measured operation: `prepare` runs untimed before each timed `run`; `perRound` overrides the default count. */
export interface Probe {
  name: string;
  run: () => Promise<unknown>;
  prepare?: () => Promise<unknown>;
  perRound?: number;
}

/** A repeatable stream of numbers in [0, 1) (mulberry32): the same seed, the same order. */
export function seededRandom(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Times each probe one call at a time, call by call in turn (a probe with a larger `perRound` takes its extra
 * calls spread evenly between the others'), in a new random order each turn (seeded: repeatable): a ratio of two
 * probes then compares calls made moments apart, not minutes apart; drift (GC, a busy neighbour, the server's
 * state) falls on all of them alike; and no probe always follows the same one (a DynamoDB call just before
 * warms the connection and the server). The first round is warm-up and is discarded.
 */
export async function measure(probes: Probe[], rounds: number, perRound: number): Promise<Record<string, LatencyStats>> {
  const samples = new Map<string, number[]>(probes.map((p) => [p.name, []]));
  const counts = probes.map((p) => p.perRound ?? perRound);
  const turns = Math.max(...counts);
  const random = seededRandom(0x5eed);
  const order = probes.map((_, i) => i);
  for (let round = 0; round <= rounds; round++) {
    for (let turn = 0; turn < turns; turn++) {
      // Fisher-Yates shuffle of this turn's order.
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (const i of order) {
        const p = probes[i]!;
        const n = counts[i]!;
        // This probe's calls in this turn: n per round, spread over the turns.
        const calls = Math.floor(((turn + 1) * n) / turns) - Math.floor((turn * n) / turns);
        const out = samples.get(p.name)!;
        for (let c = 0; c < calls; c++) {
          await p.prepare?.();
          const t0 = performance.now();
          await p.run();
          const ms = performance.now() - t0;
          if (round > 0) out.push(ms);
        }
      }
    }
  }
  return Object.fromEntries([...samples].map(([name, xs]) => [name, stats(xs)]));
}

/** A sorted copy, smallest first. */
export function ascending(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** The p-th percentile (nearest rank) of values sorted smallest first. */
export function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : NaN;
}

function stats(xs: number[]): LatencyStats {
  const sorted = ascending(xs);
  return { n: sorted.length, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99) };
}

export function median(xs: number[]): number {
  return percentile(ascending(xs), 50);
}
