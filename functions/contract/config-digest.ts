/**
 * How the stack tells the Lambda that its config.json is the document synth validated: the SHA-256 of the
 * file's text, in the environment variable BROKER_ENV.configDigest. Both sides compute it with this function.
 */
import { createHash } from 'node:crypto';

/** SHA-256 (hex) of the config file's text. */
export function configDigest(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
