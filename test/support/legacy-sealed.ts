/**
 * A token sealed in the PREVIOUS format: an AWS Encryption SDK message (@aws-crypto/client-node 5.0.2,
 * suite ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY, raw AES-256 keyring `token-broker`/`local`), for the
 * connection `main`, as a cache item written before the sealer moved to its own format (docs/sealing.md).
 *
 * Generated once, at the commit that added this file, with that commit's sealer:
 *   `await rawAesSealer(Buffer.from(LEGACY_SEALED.key, 'hex')).seal('main', LEGACY_SEALED.token)`
 * and checked then to open to `token` with the same key; the Encryption SDK is no longer a dependency, so
 * the bytes are kept here rather than made per run.
 */
import type { Token } from '../../functions/core/ports.js';

export const LEGACY_SEALED = {
  connection: 'main',
  /** The raw AES wrapping key it was sealed under (local mode's key, hex). */
  key: '1d5a2e2b7070a3df07033d0a21062296c60f61ed3b6da1f9ca9fce22d5ddf9ee',
  token: {
    accessToken: 'legacy-esdk-sealed-token-0001',
    tokenType: 'Bearer',
    scope: 'API',
    expiresAt: 1795611600000, // 2026-11-25T13:00:00Z
    issuedAt: 1795604400000, // 2026-11-25T11:00:00Z
    fp: 'aHl2J77SyPE4BAOw',
  } satisfies Token,
  sealed: Buffer.from(
    'AgR4ny/2+qFFZpSG5e5dJTHISh5XyGnFxGcadYV2mLeaMZEAMQACAApjb25uZWN0aW9uAARtYWluAAdwdXJwb3NlABJ0b2tlbi1icm9rZXItY2FjaGUAAQAMdG9rZW4tYnJva2VyABlsb2NhbAAAAIAAAAAM9K3p18s4DaHvKpZLADDUbEjpDjSKdl6wsBAYpN0kl9ErOJpQOtGbbpplP0eC6k09aLnJMWgIOsa/lZuoIUkCAAAQAM6duTCiszfAd5sRKOvPDHOfyrP3hCL31rOZYY75oaqyv/Hgbo6JMd9a/+mvB5sj3P////8AAAABAAAAAAAAAAAAAAABAAAAeA25TEfgQSXMcebC80JnRinJ8iJ96gJbuDrWq5i7C4SzHg2vyG/+47Nz+XmbjupkYic5VoYu1JjwwWSPMCv/FEHQ+n3t8eGYjlrQ3oq3rls2Cga98k+iOonYN7GQC+w39zywq3s9FRB/Nszsa3rhKOMosRt83K+FjQbpxtasrJ5xf6R9FtlQlgM=',
    'base64',
  ),
};
