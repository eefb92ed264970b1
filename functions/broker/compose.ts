/**
 * Builds the broker's dependencies once per container (cold start) from the environment. The same
 * core and HTTP layer serve local mode (functions/local), with local adapters instead.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { isAbsolute, join } from 'node:path';
import { DynamoTokenStore } from '../adapters/dynamodb-store.js';
import { kmsSealer } from '../adapters/sealer.js';
import { type BrokerOptions, TokenBroker } from '../core/broker.js';
import { ConfigError } from '../core/connection.js';
import type { SecretSource, Upstream } from '../core/ports.js';
import { randomIds, systemClock, systemTimers } from '../adapters/system.js';
import { loadConfigFile } from './config-file.js';
import { BROKER_ENV } from '../contract/env.js';
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import { ledgerMarginMs } from '../core/ledger.js';
import { BUDGET_GAUGE_EVENT } from '../contract/telemetry.js';
import { type GaugeReport, isBudgetGaugeEvent, publishBudgetGauges } from './gauges.js';
import { createHttpHandler, type HttpHandler, type ProxyEvent } from './http.js';
import { jsonLogger, emfMetrics } from './observability.js';

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new ConfigError(`environment variable ${name} is not set`);
  return v;
}

/**
 * Loads a module on first use. The upstream client (undici) and the Secrets Manager client are needed only
 * by a container that refreshes a token, and the fleet refreshes once per token lifetime: most containers
 * never load them, and none pays for them at cold start.
 */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    loaded ??= load().catch((e: unknown) => {
      loaded = undefined;
      throw e;
    });
    return loaded;
  };
}

const refreshAdapters = once(() => import('./refresh-adapters.js'));

/** @internal */
export function lazyUpstream(): Upstream {
  const get = once(async () => new (await refreshAdapters()).HttpUpstream());
  return { requestToken: async (connection, credentials, signal) => (await get()).requestToken(connection, credentials, signal) };
}

/** @internal */
export function lazySecrets(): SecretSource {
  const get = once(async () => (await refreshAdapters()).awsSecretsSource(systemClock));
  return { get: async (name, options) => (await get()).get(name, options) };
}

/** Optional numeric tuning from the environment (e.g. BROKER_MEMORY_MAX_AGE_MS). */
function tuning(env: NodeJS.ProcessEnv): Partial<BrokerOptions> {
  const out: Partial<BrokerOptions> = {};
  const memory = env[BROKER_ENV.memoryMaxAgeMs];
  if (memory !== undefined) {
    const v = Number(memory);
    if (!Number.isInteger(v) || v < 0 || v > 5000) throw new ConfigError(`${BROKER_ENV.memoryMaxAgeMs} must be an integer from 0 to 5000`);
    out.memoryMaxAgeMs = v;
  }
  return out;
}

/** The Lambda's entry: API Gateway requests, and the scheduled budget-gauge event. */
export type AwsEntry = (
  event: ProxyEvent | typeof BUDGET_GAUGE_EVENT,
  context?: Pick<Context, 'getRemainingTimeInMillis'>,
) => Promise<APIGatewayProxyResult | GaugeReport>;

/** @internal The HTTP side of buildAwsEntry, for test/integration/compose.test.ts. */
export async function buildAwsHandler(env: NodeJS.ProcessEnv = process.env): Promise<HttpHandler> {
  return (await buildAws(env)).http;
}

export async function buildAwsEntry(env: NodeJS.ProcessEnv = process.env): Promise<AwsEntry> {
  const { http, gauges } = await buildAws(env);
  return (event, context) => (isBudgetGaugeEvent(event) ? gauges() : http(event as ProxyEvent, context));
}

async function buildAws(env: NodeJS.ProcessEnv): Promise<{ http: HttpHandler; gauges: () => Promise<GaugeReport> }> {
  const file = env[BROKER_ENV.configFile] ?? 'config.json';
  const config = await loadConfigFile(
    isAbsolute(file) ? file : join(env.LAMBDA_TASK_ROOT ?? process.cwd(), file),
    env[BROKER_ENV.configDigest],
  );
  const logger = jsonLogger();
  const store = new DynamoTokenStore(new DynamoDBClient({ maxAttempts: 3 }), required(env, BROKER_ENV.table));
  const options = tuning(env);
  const broker = new TokenBroker({
    config,
    store,
    ledger: store,
    secrets: lazySecrets(),
    sealer: kmsSealer(required(env, BROKER_ENV.sealKeyArn)),
    upstream: lazyUpstream(),
    clock: systemClock,
    ids: randomIds,
    timers: systemTimers,
    log: logger,
    options,
  });
  const metrics = emfMetrics();
  const marginMs = ledgerMarginMs(broker.options.margin);
  return {
    http: createHttpHandler({ broker, logger, metrics }),
    gauges: () => publishBudgetGauges({ config, store, ledger: store, logger, metrics, clock: systemClock, marginMs }),
  };
}
