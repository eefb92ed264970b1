/**
 * Builds the broker's dependencies once per container (cold start) from the environment. The same
 * core and HTTP layer serve local mode (functions/local), with local adapters instead.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { DynamoTokenStore } from '../adapters/dynamodb-store.js';
import { secretsManagerSource } from '../adapters/secrets-manager.js';
import { kmsSealer } from '../adapters/sealer.js';
import { HttpUpstream } from '../adapters/upstream-http.js';
import { type BrokerOptions, TokenBroker } from '../core/broker.js';
import { type BrokerConfig, ConfigError, parseConfig, parseConfigText } from '../core/config.js';
import { systemClock } from '../core/ports.js';
import { createHttpHandler, type HttpHandler } from './http.js';
import { powertoolsLogger, powertoolsMetrics } from './observability.js';

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new ConfigError(`environment variable ${name} is not set`);
  return v;
}

/** Reads and validates the config file shipped in the bundle (100 connections do not fit a 4 KB env var). */
export function loadConfigFile(path: string): BrokerConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ConfigError(`cannot read config file ${path}`);
  }
  return parseConfig(parseConfigText(text, path), path);
}

/** Optional numeric tuning from the environment (e.g. BROKER_MEMORY_MAX_AGE_MS). */
function tuning(env: NodeJS.ProcessEnv): Partial<BrokerOptions> {
  const out: Partial<BrokerOptions> = {};
  const memory = env.BROKER_MEMORY_MAX_AGE_MS;
  if (memory !== undefined) {
    const v = Number(memory);
    if (!Number.isInteger(v) || v < 0 || v > 5000) throw new ConfigError('BROKER_MEMORY_MAX_AGE_MS must be an integer from 0 to 5000');
    out.memoryMaxAgeMs = v;
  }
  return out;
}

export function buildAwsHandler(env: NodeJS.ProcessEnv = process.env): HttpHandler {
  const file = env.BROKER_CONFIG_FILE ?? 'config.json';
  const config = loadConfigFile(isAbsolute(file) ? file : join(env.LAMBDA_TASK_ROOT ?? process.cwd(), file));
  const logger = powertoolsLogger();
  const store = new DynamoTokenStore(new DynamoDBClient({ maxAttempts: 3 }), required(env, 'BROKER_TABLE'));
  const broker = new TokenBroker({
    config,
    store,
    ledger: store,
    secrets: secretsManagerSource(new SecretsManagerClient({ maxAttempts: 3 }), systemClock),
    sealer: kmsSealer(required(env, 'BROKER_SEAL_KEY_ARN')),
    upstream: new HttpUpstream(),
    clock: systemClock,
    log: logger,
    options: tuning(env),
  });
  return createHttpHandler({ broker, logger, metrics: powertoolsMetrics() });
}
