/**
 * Local mode's config file: the stage config's `connections` (same schema, core/config.ts) plus
 * `secrets` (what Secrets Manager would hold) and `callers` (access keys standing in for IAM).
 * Secrets are re-read from the file whenever the broker would re-read Secrets Manager, so editing the
 * file is how a local user rotates a secret.
 *
 * Local mode is not secure storage: secrets sit in a plain file, and the key that seals cached tokens
 * is derived from the table name, so anyone with the store can open them.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { CachedSecretSource, parseCredentials } from '../adapters/credentials.js';
import { principalFromArn } from '../core/authz.js';
import { type BrokerConfig, ConfigError, ConnectionsSchema, formatIssues, parseConfigText, resolveConnections } from '../core/config.js';
import { BrokerError, misconfiguredCredentials } from '../core/errors.js';
import type { Clock } from '../core/ports.js';
import type { LocalCaller } from './api-event.js';

/** A problem that stops local mode from starting, reported as one line without a stack trace. */
export class StartupError extends Error {
  override readonly name = 'StartupError';
}

/** How long a secret read from the file is used before the file is read again. */
const SECRET_TTL_MS = 5_000;

const CallerSchema = z
  .object({
    secretAccessKey: z.string().min(8, { message: 'must be at least 8 characters' }).max(128),
    principal: z.string().refine((arn) => principalFromArn(arn) !== undefined, {
      message: 'must be an IAM role, assumed-role session or user ARN such as arn:aws:iam::111122223333:role/payments-api',
    }),
  })
  .strict();

const LocalConfigSchema = z
  .object({
    connections: ConnectionsSchema,
    secrets: z.record(z.string().min(1), z.unknown()),
    callers: z
      .record(z.string().regex(/^\w{4,128}$/, { message: 'access key ids are 4 to 128 letters, digits or _' }), CallerSchema)
      .refine((c) => Object.keys(c).length > 0, { message: 'must define at least one caller access key' }),
  })
  .strict()
  .superRefine((doc, ctx) => {
    const valid = new Map<string, ReturnType<typeof parseCredentials>>();
    for (const [name, value] of Object.entries(doc.secrets)) {
      try {
        valid.set(name, parseCredentials(name, value));
      } catch (e) {
        // The operator starting the broker may see which secret and fields (never a value).
        ctx.addIssue({
          code: 'custom',
          path: ['secrets', name],
          message: e instanceof BrokerError ? (e.extra.detail ?? e.message) : (e as Error).message,
        });
      }
    }
    for (const [name, c] of Object.entries(doc.connections)) {
      if (!(c.secret in doc.secrets)) {
        ctx.addIssue({
          code: 'custom',
          path: ['connections', name, 'secret'],
          message: `names secret "${c.secret}", which is not in "secrets"`,
        });
        continue;
      }
      const creds = valid.get(c.secret);
      if (creds && c.grantType === 'password' && (!creds.username || !creds.password)) {
        ctx.addIssue({
          code: 'custom',
          path: ['connections', name, 'secret'],
          message: `the password grant needs "username" and "password" in secret "${c.secret}"`,
        });
      }
    }
  });

export interface LocalConfig {
  broker: BrokerConfig;
  callers: ReadonlyMap<string, LocalCaller>;
  /** The `secrets` section as validated at start (later reads go to the file). */
  secrets: Readonly<Record<string, unknown>>;
}

/** Validates a local config document; throws ConfigError naming every bad field. */
export function parseLocalConfig(doc: unknown, source: string): LocalConfig {
  const r = LocalConfigSchema.safeParse(doc);
  if (!r.success) throw new ConfigError(formatIssues(r.error, source));
  return {
    broker: resolveConnections(r.data.connections),
    callers: new Map(Object.entries(r.data.callers)),
    secrets: r.data.secrets,
  };
}

export function loadLocalConfig(path: string): LocalConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read config file ${path}${code ? ` (${code})` : ''}`);
  }
  return parseLocalConfig(parseConfigText(text, path), path);
}

/** Reads the `secrets` section of the config file afresh. */
export function fileSecrets(path: string): () => Promise<Record<string, unknown>> {
  return async () => {
    const doc = JSON.parse(await readFile(path, 'utf8')) as { secrets?: unknown };
    if (typeof doc?.secrets !== 'object' || doc.secrets === null) throw new Error('no "secrets" object');
    return doc.secrets as Record<string, unknown>;
  };
}

/**
 * A SecretSource over local secrets: cached for `ttlMs`, re-read on TTL and on forceRefresh (after an
 * upstream `invalid_client`). The version is the sha256 of the secret's JSON, so an edit is a rotation.
 * A file that does not parse (say, mid-edit) keeps the last good value for a minute.
 */
export function localSecretSource(read: () => Promise<Record<string, unknown>>, clock: Clock, ttlMs = SECRET_TTL_MS): CachedSecretSource {
  return new CachedSecretSource(
    async (name) => {
      const secrets = await read();
      // The caller's 500 does not name the secret; the broker's log line does (as with Secrets Manager).
      if (!Object.hasOwn(secrets, name)) throw misconfiguredCredentials(name, 'is not in the local config file');
      const value = secrets[name];
      return { value, version: createHash('sha256').update(JSON.stringify(value)).digest('hex') };
    },
    clock,
    { ttlMs, graceMs: 60_000 },
  );
}

/**
 * The key sealing cached tokens locally. Every process sharing a --dynamodb-endpoint and table must
 * open the others' tokens, so it is derived from the table name: local mode is not secure storage.
 */
export function localSealKey(table: string): Uint8Array {
  return createHash('sha256').update(`token-broker-local:${table}`).digest();
}
