import * as z from 'zod/mini';
import { en } from 'zod/locales';
import { CONNECTION_NAME } from '../contract/names.js';
import { type BrokerConfig, ConfigError, resolveConnections, resolveRateLimit } from './connection.js';

// The resolved config and its run-time checks, which need no zod.
export * from './connection.js';

// zod/mini ships no messages of its own: English ones, so errors say what is wrong.
z.config(en());

/**
 * Connection config: the schema of docs/design.md "Connection config". One file per stage; local mode adds
 * `secrets` and `callers` beside `connections` (see functions/local/config.ts).
 * Invalid config fails loudly, naming the connection and the field.
 *
 * Written with `zod/mini` (the same zod 4 core, tree-shakable): about 30 KB in a bundle instead of 440 KB.
 * The Lambda loads it only to validate a config.json that is not the one synth validated
 * (functions/broker/config-file.ts); what it needs at run time is in ./connection.ts.
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

const ConnectionSchema = z.strictObject({
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
            ctx.issues.push({
              code: 'custom',
              input: r.minSpacingSeconds,
              path: ['minSpacingSeconds'],
              message: `must be at most windowSeconds (${r.windowSeconds})`,
            });
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

const BrokerConfigSchema = z.strictObject({ connections: ConnectionsSchema });

export type ConnectionInput = z.input<typeof ConnectionSchema>;
/** A connection as the schema outputs it, before functions/core/connection.ts resolves its defaults. */
export type ParsedConnection = z.output<typeof ConnectionSchema>;
export type ParsedConnections = z.output<typeof ConnectionsSchema>;

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

/** Parses and validates a config document; throws ConfigError naming every bad field. */
export function parseConfig(doc: unknown, source = 'config'): BrokerConfig {
  const result = BrokerConfigSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error, source));
  return resolveConnections(result.data.connections);
}
