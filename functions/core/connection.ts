/**
 * The validated connection config at run time: the resolved types, defaults and hashes, and the checks on a
 * connection's credentials. No zod here: functions/core/config.ts holds the schema (and re-exports this
 * module), so code that only uses a validated config (the Lambda, once synth has validated its config.json:
 * functions/broker/config-file.ts) does not load zod.
 */
import type { ConnectionInput, ParsedConnection, ParsedConnections } from './config.js';
import { misconfiguredCredentials } from './errors.js';
import { fingerprint } from './fingerprint.js';

/** A connection's rate limit with every default resolved. */
export interface RateLimit {
  max: number;
  windowSeconds: number;
  /** The ledger item's key: connections that share credentials share a ledger. */
  key: string;
  /** Slots a demand refresh (`ahead`, `min_ttl`) or an invalidation must leave for `expired` and `rotation`. */
  reserve: number;
  /** Least time from the ledger's last request to a demand refresh or an honoured invalidation. */
  minSpacingMs: number;
}

/** A validated connection with every default resolved. */
export interface Connection extends Omit<ParsedConnection, 'rateLimit' | 'refreshBeforeSeconds'> {
  name: string;
  refreshBeforeSeconds: number;
  rateLimit?: RateLimit;
  /**
   * Fingerprint of the connection's settings: a credential circuit opened under one config is closed by
   * a config change (docs/protocol.md "Credential circuit").
   */
  configHash: string;
}

export interface BrokerConfig {
  connections: ReadonlyMap<string, Connection>;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type RateLimitInput = NonNullable<ParsedConnection['rateLimit']>;

/** The budget guard's defaults: reserve ceil(max / 5) (at most max - 1), spacing windowSeconds / max. */
export function resolveRateLimit(name: string, r: RateLimitInput): RateLimit {
  return {
    max: r.max,
    windowSeconds: r.windowSeconds,
    key: r.key ?? name,
    reserve: r.reserve ?? Math.min(Math.ceil(r.max / 5), r.max - 1),
    minSpacingMs: r.minSpacingSeconds !== undefined ? r.minSpacingSeconds * 1000 : Math.floor((r.windowSeconds * 1000) / r.max),
  };
}

function resolveConnection(name: string, c: ParsedConnection): Connection {
  const { rateLimit, refreshBeforeSeconds, ...rest } = c;
  const resolved = {
    ...rest,
    // Rate-limited connections use each token for as much of its lifetime as callers allow.
    refreshBeforeSeconds: refreshBeforeSeconds ?? (rateLimit ? 0 : 60),
    ...(rateLimit ? { rateLimit: resolveRateLimit(name, rateLimit) } : {}),
  };
  // Of the resolved settings, so that a config written out with its defaults (the Lambda bundle) hashes alike.
  return { ...resolved, name, configHash: fingerprint(stableJson(resolved)) };
}

/**
 * The config document (docs/design.md "Connection config" schema) of a validated config, every default written
 * out: what the Lambda bundle carries. `parseConfig` of it gives the same connections, hashes included.
 */
export function configDocument(config: BrokerConfig): { connections: Record<string, ConnectionInput> } {
  const connections: Record<string, ConnectionInput> = {};
  for (const [name, c] of [...config.connections].sort(([a], [b]) => a.localeCompare(b))) {
    const { name: _name, configHash: _hash, rateLimit, ...rest } = c;
    connections[name] = { ...rest, ...(rateLimit ? { rateLimit: rateLimitDocument(rateLimit) } : {}) };
  }
  return { connections };
}

function rateLimitDocument(r: RateLimit): NonNullable<ConnectionInput['rateLimit']> {
  const { minSpacingMs, ...rest } = r;
  // A default spacing may be a fraction of a second (20 s / 3): it is written only when it was set.
  const isDefault = minSpacingMs === resolveRateLimit(r.key, { max: r.max, windowSeconds: r.windowSeconds }).minSpacingMs;
  return { ...rest, ...(isDefault ? {} : { minSpacingSeconds: minSpacingMs / 1000 }) };
}

/** JSON with object keys sorted, so equal settings give equal text. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function resolveConnections(parsed: ParsedConnections): BrokerConfig {
  return {
    connections: new Map(Object.entries(parsed).map(([name, c]) => [name, resolveConnection(name, c)])),
  };
}

/** Parses JSON text, reporting a syntax error as a ConfigError. */
export function parseConfigText(text: string, source = 'config'): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    // Not the parser's message: Node quotes the text around the error, which may be a secret.
    const at = /position (\d+)/.exec((e as Error).message)?.[1];
    const where = at === undefined ? '' : ` at ${lineAndColumn(text, Number(at))}`;
    throw new ConfigError(`invalid config (${source}): not valid JSON${where}`);
  }
}

/** Throws if the secret lacks what the connection's grant needs (the password grant: username and password). */
export function requireGrantFields(connection: Connection, credentials: { username?: string; password?: string }): void {
  if (connection.grantType === 'password' && (!credentials.username || !credentials.password)) {
    throw misconfiguredCredentials(connection.secret, 'is missing or has invalid fields: username, password');
  }
}

/** What a secret holds until ops fill it in (the stack creates secrets with it; the examples use it). */
const PLACEHOLDER = 'REPLACE_ME';

/**
 * Throws unless the secret can be sent upstream: the grant's fields are there and none still holds the
 * placeholder. Checked before any ledger slot is spent: a placeholder is never sent.
 */
export function requireUsableCredentials(
  connection: Connection,
  credentials: { client_id: string; client_secret: string; username?: string; password?: string },
): void {
  requireGrantFields(connection, credentials);
  const used =
    connection.grantType === 'password'
      ? (['client_id', 'client_secret', 'username', 'password'] as const)
      : (['client_id', 'client_secret'] as const);
  const placeholders = used.filter((f) => credentials[f]?.includes(PLACEHOLDER));
  if (placeholders.length) {
    throw misconfiguredCredentials(connection.secret, `still holds the placeholder ${PLACEHOLDER} in: ${placeholders.join(', ')}`);
  }
}

function lineAndColumn(text: string, position: number): string {
  const before = text.slice(0, position).split('\n');
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}
