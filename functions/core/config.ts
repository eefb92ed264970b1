import * as z from 'zod/mini';
import { en } from 'zod/locales';
import { CONNECTION_NAME } from '../contract/names.js';
import { misconfiguredCredentials } from './errors.js';
import { fingerprint } from './fingerprint.js';

// zod/mini ships no messages of its own: English ones, so errors say what is wrong.
z.config(en());

/**
 * Connection config: the schema of docs/design.md "Connection config". One file per stage; local mode adds
 * `secrets` and `callers` beside `connections` (see functions/local/config.ts).
 * Invalid config fails loudly, naming the connection and the field.
 *
 * Written with `zod/mini` (the same zod 4 core, tree-shakable): about 20 KB in the Lambda bundle
 * instead of 440 KB, which is cold-start time on every container.
 */

const RESERVED_PARAMS = ['grant_type', 'client_id', 'client_secret', 'username', 'password', 'scope'];

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** zod 4 runs every refinement even after the URL check failed, so these must not throw on a non-URL. */
const parseUrl = (u: string): URL | undefined => (URL.canParse(u) ? new URL(u) : undefined);

const tokenUrl = z.url().check(
  z.refine(
    (u) => {
      const url = parseUrl(u);
      return !url || url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
    },
    { message: 'must be an https URL (http is allowed only for loopback hosts)' },
  ),
  z.refine((u) => !parseUrl(u)?.username && !parseUrl(u)?.password, {
    message: 'must not carry credentials; put them in the secret',
  }),
);

/** `*` matches within one ARN segment; anything else is literal. */
const callerPattern = z.string().check(
  z.regex(/^arn:(aws|aws-cn|aws-us-gov):iam::\d{12}:(role|user)\/[^:]+$/, {
    message: 'must be an IAM role or user ARN pattern such as arn:aws:iam::111122223333:role/payments-*',
  }),
);

const boundedInt = (min: number, max: number) => z.int().check(z.gte(min), z.lte(max));

export const ConnectionSchema = z.strictObject({
  tokenUrl,
  grantType: z.enum(['client_credentials', 'password']),
  scope: z.optional(
    z.pipe(
      z.string().check(z.trim(), z.minLength(1), z.maxLength(1024)),
      z.transform((s: string) => s.split(/\s+/).join(' ')),
    ),
  ),
  clientAuthentication: z._default(z.enum(['client_secret_post', 'client_secret_basic']), 'client_secret_post'),
  secret: z.string().check(z.minLength(1), z.maxLength(2048)),
  callers: z.array(callerPattern).check(z.minLength(1, { message: 'must list at least one caller (deny by default)' })),
  rateLimit: z.optional(
    z
      .strictObject({
        max: boundedInt(1, 1000),
        windowSeconds: boundedInt(1, 7 * 24 * 3600),
        key: z.optional(z.string().check(z.regex(/^[A-Za-z0-9_.-]{1,128}$/))),
        /** Slots kept for `expired` and `rotation` refreshes (docs/protocol.md "Budget guard"). Default ceil(max / 5), at most max - 1. */
        reserve: z.optional(boundedInt(0, 999)),
        /** Least time between the ledger's last request and a demand refresh. Default windowSeconds / max. */
        minSpacingSeconds: z.optional(boundedInt(0, 7 * 24 * 3600)),
      })
      .check(
        z.superRefine((r, ctx) => {
          if (r.reserve !== undefined && r.reserve >= r.max) {
            ctx.issues.push({ code: 'custom', input: r.reserve, path: ['reserve'], message: `must be less than max (${r.max})` });
          }
          if (r.minSpacingSeconds !== undefined && r.minSpacingSeconds > r.windowSeconds) {
            ctx.issues.push({ code: 'custom', input: r.minSpacingSeconds, path: ['minSpacingSeconds'], message: `must be at most windowSeconds (${r.windowSeconds})` });
          }
        }),
      ),
  ),
  refreshBeforeSeconds: z.optional(boundedInt(0, 3600)),
  defaultTtlSeconds: z._default(boundedInt(1, 86400), 300),
  extraParams: z.optional(
    z.record(z.string(), z.string().check(z.maxLength(2048))).check(
      z.refine((p) => Object.keys(p).every((k) => !RESERVED_PARAMS.includes(k)), {
        message: `must not set ${RESERVED_PARAMS.join(', ')}`,
      }),
    ),
  ),
});

export const ConnectionsSchema = z
  .record(
    z.string().check(z.regex(CONNECTION_NAME, { message: 'connection names are lowercase letters, digits and -, at most 64' })),
    ConnectionSchema,
  )
  .check(
    z.superRefine((connections, ctx) => {
      // Connections on one ledger share one budget, so they must agree on it and on its guard.
      const ledgers = new Map<string, { limit: string; by: string }>();
      for (const [name, c] of Object.entries(connections)) {
        if (!c.rateLimit) continue;
        const key = c.rateLimit.key ?? name;
        const r = resolveRateLimit(name, c.rateLimit);
        const limit = JSON.stringify([r.max, r.windowSeconds, r.reserve, r.minSpacingMs]);
        const seen = ledgers.get(key);
        if (!seen) {
          ledgers.set(key, { limit, by: name });
        } else if (seen.limit !== limit) {
          ctx.issues.push({
            code: 'custom',
            input: c.rateLimit,
            path: [name, 'rateLimit'],
            message: `shares ledger key "${key}" with "${seen.by}" but has a different max, windowSeconds, reserve or minSpacingSeconds`,
          });
        }
      }
    }),
  );

export const BrokerConfigSchema = z.strictObject({ connections: ConnectionsSchema });

export type ConnectionInput = z.input<typeof ConnectionSchema>;
type ParsedConnection = z.output<typeof ConnectionSchema>;

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

/** Formats zod issues as `connections.NAME.field: message` lines. */
export function formatIssues(error: { issues: readonly z.core.$ZodIssue[] }, source: string): string {
  const lines = error.issues.map((i) => {
    const path = i.path.map(String).join('.');
    // zod reports a bad record key as "Invalid key in record"; the reason is in the nested issues.
    const message = i.code === 'invalid_key' && i.issues.length ? i.issues.map((k) => k.message).join('; ') : i.message;
    return `  ${path || '(root)'}: ${message}`;
  });
  return `invalid config (${source}):\n${lines.join('\n')}`;
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

export function resolveConnection(name: string, c: ParsedConnection): Connection {
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
 * The config document (docs/design.md "Connection config") of a validated config, every default written
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

export function resolveConnections(parsed: z.output<typeof ConnectionsSchema>): BrokerConfig {
  return {
    connections: new Map(Object.entries(parsed).map(([name, c]) => [name, resolveConnection(name, c)])),
  };
}

/** Parses and validates a config document; throws ConfigError naming every bad field. */
export function parseConfig(doc: unknown, source = 'config'): BrokerConfig {
  const result = BrokerConfigSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error, source));
  return resolveConnections(result.data.connections);
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
export const PLACEHOLDER = 'REPLACE_ME';

/**
 * Throws unless the secret can be sent upstream: the grant's fields are there and none still holds the
 * placeholder. Checked before any ledger slot is spent: a placeholder is never sent.
 */
export function requireUsableCredentials(
  connection: Connection,
  credentials: { client_id: string; client_secret: string; username?: string; password?: string },
): void {
  requireGrantFields(connection, credentials);
  const used = connection.grantType === 'password' ? (['client_id', 'client_secret', 'username', 'password'] as const) : (['client_id', 'client_secret'] as const);
  const placeholders = used.filter((f) => credentials[f]?.includes(PLACEHOLDER));
  if (placeholders.length) {
    throw misconfiguredCredentials(connection.secret, `still holds the placeholder ${PLACEHOLDER} in: ${placeholders.join(', ')}`);
  }
}

function lineAndColumn(text: string, position: number): string {
  const before = text.slice(0, position).split('\n');
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}
