/** Parsing and caching of client credentials, shared by the Secrets Manager and local-file sources. */
import * as z from 'zod/mini';
import { BrokerError, misconfiguredCredentials } from '../core/errors.js';
import type { Clock, ClientCredentials, SecretSource, SecretValue } from '../core/ports.js';

const nonEmpty = () => z.string().check(z.minLength(1));
const CredentialsSchema = z.object({
  client_id: nonEmpty(),
  client_secret: nonEmpty(),
  username: z.optional(nonEmpty()),
  password: z.optional(nonEmpty()),
});

/**
 * Validates a secret's JSON value. The error names the secret and the missing fields, never a value.
 */
export function parseCredentials(name: string, value: unknown): ClientCredentials {
  let doc = value;
  if (typeof value === 'string') {
    try {
      doc = JSON.parse(value);
    } catch {
      throw misconfiguredCredentials(name, 'is not JSON');
    }
  }
  const r = CredentialsSchema.safeParse(doc);
  if (!r.success) {
    const fields = [...new Set(r.error.issues.map((i) => i.path.join('.') || '(root)'))].join(', ');
    throw misconfiguredCredentials(name, `is missing or has invalid fields: ${fields}`);
  }
  return r.data;
}

export interface CachedSecretOptions {
  /** Re-read after this long. */
  ttlMs: number;
  /** If a re-read fails, keep using the last good value for this long past its TTL. */
  graceMs: number;
}

const RETRY_AFTER_FAILURE_MS = 30_000;

/** A SecretSource over a raw fetch function: caches in memory, re-reads on TTL or on demand, serves stale within a grace period. */
export class CachedSecretSource implements SecretSource {
  private readonly cache = new Map<string, { value: SecretValue; fetchedAt: number; retryAt?: number }>();

  constructor(
    private readonly fetch: (name: string) => Promise<{ value: unknown; version: string }>,
    private readonly clock: Clock,
    private readonly options: CachedSecretOptions = { ttlMs: 5 * 60_000, graceMs: 60 * 60_000 },
  ) {}

  async get(name: string, opts: { forceRefresh?: boolean } = {}): Promise<SecretValue> {
    const now = this.clock.now();
    const cached = this.cache.get(name);
    // Within the TTL, or while a failed re-read waits to be tried again, the cached value serves.
    if (cached && !opts.forceRefresh && (now - cached.fetchedAt < this.options.ttlMs || now < (cached.retryAt ?? 0))) return cached.value;
    let raw: { value: unknown; version: string };
    try {
      raw = await this.fetch(name);
    } catch (e) {
      if (e instanceof BrokerError) throw e;
      if (cached && now - cached.fetchedAt < this.options.ttlMs + this.options.graceMs) {
        // Serve the last good value, and do not hammer a failing store on every request.
        cached.retryAt = now + RETRY_AFTER_FAILURE_MS;
        return cached.value;
      }
      throw new BrokerError('unavailable', 'credentials store unavailable', { retryAfterSeconds: 5 });
    }
    const value: SecretValue = { credentials: parseCredentials(name, raw.value), version: raw.version };
    this.cache.set(name, { value, fetchedAt: now });
    return value;
  }
}
