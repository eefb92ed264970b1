/**
 * Sealing cached tokens at rest with the AWS Encryption SDK (envelope encryption). In AWS the data keys
 * come from KMS (KmsKeyringNode); locally and in tests from a raw AES key. The encryption context names
 * the connection and is checked on open, so a token copied onto another connection's item never serves.
 * Data keys are cached (NodeCachingMaterialsManager) so a warm container does not call KMS per request.
 */
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  KmsKeyringNode,
  NodeCachingMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  getLocalCryptographicMaterialsCache,
  type KeyringNode,
} from '@aws-crypto/client-node';
import { isServerError, isThrottlingError, isTransientError } from '@smithy/core/retry';
import { type Sealer, SealerUnavailable, type Token } from '../core/ports.js';
import { SEAL_PURPOSE } from '../core/limits.js';

export { SEAL_PURPOSE };
const SUITE = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY;

const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);

export class SealError extends Error {
  override readonly name = 'SealError';
}

/** What the Encryption SDK writes into its message when a keyring's KMS call failed in a way that may clear. */
const FOLDED_KMS_OUTAGE = /Throttl|TooManyRequests|LimitExceeded|ServiceUnavailable|InternalFailure|KMSInternal|Timeout|ECONN|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|socket hang up|NetworkingError/i;

/**
 * KMS throttled or unreachable (SealerUnavailable, the original as `cause`: the sealed token may be fine), as
 * opposed to a blob that does not open here (tampered, another connection, another key) or a KMS refusal.
 * The SDK's own classification where the error reaches us as it is (GenerateDataKey); the Encryption SDK
 * folds a keyring's Decrypt errors into its message, so there the message is read.
 */
function kmsFault(e: unknown): unknown {
  if (e instanceof SealError || typeof e !== 'object' || e === null) return e;
  const err = e as Parameters<typeof isThrottlingError>[0] & Error;
  const outage = isThrottlingError(err) || isTransientError(err) || isServerError(err) || err.$fault === 'server' || FOLDED_KMS_OUTAGE.test(err.message ?? '');
  return outage ? new SealerUnavailable('KMS unavailable', { cause: e }) : e;
}

interface SealedPayload {
  t: string;
  ty: string;
  s?: string;
  e: number;
  i: number;
  f: string;
}

export class EnvelopeSealer implements Sealer {
  private readonly cmm: NodeCachingMaterialsManager;

  constructor(keyring: KeyringNode, options: { maxAgeMs?: number; cacheEntries?: number } = {}) {
    this.cmm = new NodeCachingMaterialsManager({
      backingMaterials: keyring,
      cache: getLocalCryptographicMaterialsCache(options.cacheEntries ?? 256),
      maxAge: options.maxAgeMs ?? 5 * 60_000,
      maxMessagesEncrypted: 10_000,
    });
  }

  static context(connection: string): Record<string, string> {
    return { purpose: SEAL_PURPOSE, connection };
  }

  async seal(connection: string, token: Token): Promise<Uint8Array> {
    const payload: SealedPayload = { t: token.accessToken, ty: token.tokenType, e: token.expiresAt, i: token.issuedAt, f: token.fp };
    if (token.scope) payload.s = token.scope;
    const plaintext = Buffer.from(JSON.stringify(payload), 'utf8');
    const { result } = await encrypt(this.cmm, plaintext, {
      encryptionContext: EnvelopeSealer.context(connection),
      suiteId: SUITE,
      plaintextLength: plaintext.length,
    }).catch((e: unknown) => {
      throw kmsFault(e);
    });
    return new Uint8Array(result);
  }

  async open(connection: string, sealed: Uint8Array): Promise<Token> {
    const { plaintext, messageHeader } = await decrypt(this.cmm, sealed, { maxBodySize: 64 * 1024 }).catch((e: unknown) => {
      throw kmsFault(e);
    });
    const ctx = messageHeader.encryptionContext;
    if (ctx.purpose !== SEAL_PURPOSE || ctx.connection !== connection) {
      throw new SealError('sealed token belongs to another connection');
    }
    const p = JSON.parse(plaintext.toString('utf8')) as SealedPayload;
    return { accessToken: p.t, tokenType: p.ty, ...(p.s ? { scope: p.s } : {}), expiresAt: p.e, issuedAt: p.i, fp: p.f };
  }
}

/** AWS: data keys from the KMS key `keyArn`. */
export function kmsSealer(keyArn: string): EnvelopeSealer {
  return new EnvelopeSealer(new KmsKeyringNode({ generatorKeyId: keyArn }));
}

/** Local mode and tests: a raw 256-bit AES wrapping key. */
export function rawAesSealer(key: Uint8Array, keyName = 'local'): EnvelopeSealer {
  if (key.length !== 32) throw new Error('the local sealing key must be 32 bytes');
  return new EnvelopeSealer(
    new RawAesKeyringNode({
      keyNamespace: 'token-broker',
      keyName,
      unencryptedMasterKey: new Uint8Array(key),
      wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
    }),
  );
}
