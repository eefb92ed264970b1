import { createHash } from 'node:crypto';

/** A short, non-reversible fingerprint of a token or secret, safe for logs and for matching invalidations. */
export function fingerprint(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('base64url').slice(0, 16);
}
