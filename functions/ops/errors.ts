/**
 * The operator CLI's failures: an OpsError is one line for stderr and exit code 1 (the flags were fine,
 * but the stage, table, connection or an AWS call was not). Usage errors (exit 2) are flags.ts UsageError.
 */
import { ConfigError } from '../core/config.js';
import { oneLine } from '../local/args.js';

export class OpsError extends Error {
  override readonly name = 'OpsError';
}

interface AwsLikeError {
  name?: string;
  code?: string;
  message?: string;
  cause?: { code?: string };
  $metadata?: { httpStatusCode?: number };
}

const NETWORK = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Says what went wrong with an AWS (or DynamoDB-API) call, in one line: `doing` names what the CLI was
 * doing ("reading stack TokenBroker-prod"). AWS error messages name actions and resources, never secrets.
 */
export function describeAwsError(e: unknown, doing: string): string {
  const err = (e ?? {}) as AwsLikeError;
  const code = err.code ?? err.cause?.code;
  const name = err.name ?? 'Error';
  const message = oneLine(err.message ?? String(e));
  if (code && NETWORK.has(code)) return `${doing}: cannot reach the endpoint (${code})`;
  if (name === 'CredentialsProviderError') return `${doing}: no AWS credentials found (set AWS_PROFILE or log in): ${message}`;
  if (/^(ExpiredToken|ExpiredTokenException|RequestExpired)$/.test(name))
    return `${doing}: your AWS credentials have expired; log in again`;
  if (/AccessDenied|UnauthorizedOperation|NotAuthorized/.test(name)) return `${doing}: access denied: ${message}`;
  if (/UnrecognizedClient|InvalidClientTokenId|InvalidSignature/.test(name)) return `${doing}: AWS refused your credentials (${name})`;
  return `${doing}: ${name}: ${message}`;
}

/** The line to print for any error: ours as they are, a config error on one line, anything else described. */
export function errorLine(e: unknown): string {
  if (e instanceof OpsError || e instanceof ConfigError) return oneLine(e.message);
  const err = e as Error;
  return oneLine(`${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`);
}
