/**
 * The connection config the Lambda ships with (`config.json` beside index.mjs). Synth validates it, writes it
 * (cdk/src/connections.ts renderBundleConfig) and passes its SHA-256 in BROKER_CONFIG_SHA256
 * (cdk/src/units/function.ts). The Lambda takes exactly that document as synth validated it, without
 * validating it again: zod stays out of the cold start (docs/cold-start.md). Any other document (no digest,
 * or edited since synth) is validated in full at start, zod loaded only then: a bad one fails the init,
 * naming the connection and the field.
 */
import { readFileSync } from 'node:fs';
import { configDigest } from '../contract/config-digest.js';
import { type BrokerConfig, ConfigError, resolveConnections } from '../core/connection.js';

/** Reads the config file; validates it unless it is the document synth validated (`digest`). */
export async function loadConfigFile(path: string, digest?: string): Promise<BrokerConfig> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ConfigError(`cannot read config file ${path}`);
  }
  if (digest !== undefined && configDigest(text) === digest) {
    const doc = JSON.parse(text) as { connections: Parameters<typeof resolveConnections>[0] };
    return resolveConnections(doc.connections);
  }
  const { parseConfig, parseConfigText } = await import('../core/config.js');
  return parseConfig(parseConfigText(text, path), path);
}
