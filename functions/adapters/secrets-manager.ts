/**
 * Client credentials from AWS Secrets Manager. Only AWSCURRENT is read (no VersionStage is ever sent), so a
 * secret ops rotate in the console is picked up on the next re-read: on TTL, or at once after an upstream
 * `invalid_client`/`invalid_grant` (the core compares VersionIds and retries once if it changed).
 */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Clock } from '../core/ports.js';
import { misconfiguredCredentials } from '../core/errors.js';
import { CachedSecretSource, type CachedSecretOptions } from './credentials.js';

const CONFIGURATION_ERRORS = new Set([
  'ResourceNotFoundException',
  'AccessDeniedException',
  'DecryptionFailure',
  'InvalidRequestException',
]);

/** @internal A SecretSource over this client (tests give it a mocked one; the Lambda uses awsSecretsSource). */
export function secretsManagerSource(client: SecretsManagerClient, clock: Clock, options?: CachedSecretOptions): CachedSecretSource {
  return new CachedSecretSource(
    async (name) => {
      let out;
      try {
        out = await client.send(new GetSecretValueCommand({ SecretId: name }));
      } catch (e) {
        // A missing or unreadable secret is a configuration problem, not an outage: say which, never retry-loop.
        const kind = (e as { name?: string }).name ?? '';
        if (CONFIGURATION_ERRORS.has(kind)) throw misconfiguredCredentials(name, `cannot be read (${kind})`);
        throw e;
      }
      if (out.SecretString === undefined) throw misconfiguredCredentials(name, 'has no string value');
      return { value: out.SecretString, version: out.VersionId ?? '' };
    },
    clock,
    options,
  );
}

/** The Lambda's source: a Secrets Manager client from the environment's region and credentials. */
export function awsSecretsSource(clock: Clock): CachedSecretSource {
  return secretsManagerSource(new SecretsManagerClient({ maxAttempts: 3 }), clock);
}
