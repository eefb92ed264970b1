/**
 * Client credentials from AWS Secrets Manager. Only AWSCURRENT is read (no VersionStage is ever sent), so a
 * secret ops rotate in the console is picked up on the next re-read: on TTL, or at once after an upstream
 * `invalid_client`/`invalid_grant` (the core compares VersionIds and retries once if it changed).
 */
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Clock } from '../core/ports.js';
import { BrokerError } from '../core/errors.js';
import { CachedSecretSource, type CachedSecretOptions } from './credentials.js';

export function secretsManagerSource(client: SecretsManagerClient, clock: Clock, options?: CachedSecretOptions): CachedSecretSource {
  return new CachedSecretSource(
    async (name) => {
      const out = await client.send(new GetSecretValueCommand({ SecretId: name }));
      if (out.SecretString === undefined) throw new BrokerError('internal', `the credentials secret "${name}" has no string value`);
      return { value: out.SecretString, version: out.VersionId ?? '' };
    },
    clock,
    options,
  );
}
