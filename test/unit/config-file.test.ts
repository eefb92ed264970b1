/**
 * The Lambda's config.json (functions/broker/config-file.ts): the document synth validated, named by its
 * digest, is taken without validating it again (no zod at cold start); any other is validated in full.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderBundleConfig } from '../../cdk/src/connections.js';
import { loadConfigFile } from '../../functions/broker/config-file.js';
import { configDigest } from '../../functions/contract/config-digest.js';
import { type ConnectionInput, ConfigError, parseConfig } from '../../functions/core/config.js';

const dir = mkdtempSync(join(tmpdir(), 'broker-config-file-'));
let n = 0;
function file(text: string): string {
  const path = join(dir, `config-${n++}.json`);
  writeFileSync(path, text);
  return path;
}

const callers = ['arn:aws:iam::111122223333:role/payments-*'];
const base = { tokenUrl: 'https://idp.example.com/oauth/token', grantType: 'client_credentials', secret: 'tb/x', callers } as const;
/** Connections that exercise every default and resolution: rate limits (shared, explicit spacing), grants, scope. */
const CONFIGS: Record<string, ConnectionInput>[] = [
  { plain: { ...base } },
  {
    pay: {
      ...base,
      scope: '  read   write ',
      clientAuthentication: 'client_secret_basic',
      defaultTtlSeconds: 900,
      refreshBeforeSeconds: 30,
    },
    ledger: { ...base, rateLimit: { max: 7, windowSeconds: 3600 } },
    shared1: { ...base, rateLimit: { max: 3, windowSeconds: 20, key: 'shared', reserve: 1, minSpacingSeconds: 5 } },
    shared2: { ...base, secret: 'tb/y', rateLimit: { max: 3, windowSeconds: 20, key: 'shared', reserve: 1, minSpacingSeconds: 5 } },
    pw: { ...base, grantType: 'password', extraParams: { audience: 'api://x' } },
  },
];

describe('loadConfigFile', () => {
  it('the document synth wrote, with its digest, gives exactly the config synth validated (hashes included)', async () => {
    for (const connections of CONFIGS) {
      const config = parseConfig({ connections });
      const text = renderBundleConfig(config);
      expect(await loadConfigFile(file(text), configDigest(text))).toEqual(config);
    }
  });

  it('takes that document as synth validated it: it is not validated again', async () => {
    // Only synth writes the digest; a document it names is taken as is. (This one would not pass the schema.)
    const text = JSON.stringify({ connections: { 'Not-A-Name': { ...base, tokenUrl: 'ftp://x' } } });
    const config = await loadConfigFile(file(text), configDigest(text));
    expect(config.connections.get('Not-A-Name')?.tokenUrl).toBe('ftp://x');
  });

  it('a document edited after synth (the digest does not match) is validated in full, and a bad one fails naming the connection and field', async () => {
    const good = renderBundleConfig(parseConfig({ connections: CONFIGS[1]! }));
    const bad = good.replace('https://idp.example.com/oauth/token', 'ftp://idp.example.com/token');
    await expect(loadConfigFile(file(bad), configDigest(good))).rejects.toThrow(/connections\.\w+\.tokenUrl: must be an https URL/);
    const edited = good.replace('"defaultTtlSeconds": 900', '"defaultTtlSeconds": 600');
    expect(edited).not.toBe(good);
    expect((await loadConfigFile(file(edited), configDigest(good))).connections.get('pay')?.defaultTtlSeconds).toBe(600);
  });

  it('without a digest the document is validated in full (defaults resolved as parseConfig does)', async () => {
    const text = JSON.stringify({ connections: CONFIGS[1] });
    expect(await loadConfigFile(file(text))).toEqual(parseConfig({ connections: CONFIGS[1] }));
    await expect(loadConfigFile(file('{"connections": {"x": {}}}'))).rejects.toThrow(/connections\.x\.tokenUrl/);
    await expect(loadConfigFile(file('{ not json'))).rejects.toThrow(/not valid JSON at line 1/);
  });

  it('a missing file is a ConfigError naming it', async () => {
    const missing = join(dir, 'missing.json');
    await expect(loadConfigFile(missing, 'x')).rejects.toThrow(ConfigError);
    await expect(loadConfigFile(missing)).rejects.toThrow(missing);
  });

  it('configDigest is the SHA-256 of the text', () => {
    expect(configDigest('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});
