/** Local config file: validation messages, secrets re-read from the file, flags. */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../functions/core/config.js';
import type { Clock } from '../../functions/core/ports.js';
import {
  fileSecrets,
  loadLocalConfig,
  localSealKey,
  localSecretSource,
  parseLocalConfig,
  StartupError,
} from '../../functions/local/config.js';
import { DEFAULTS, parseFlags } from '../../functions/local/flags.js';
import { ROOT } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tb-local-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function valid() {
  return {
    connections: {
      pay: {
        tokenUrl: 'http://127.0.0.1:9/token',
        grantType: 'client_credentials',
        scope: 'API',
        secret: 'local/pay',
        callers: ['arn:aws:iam::111122223333:role/payments-*'],
      } as Record<string, unknown>,
    },
    secrets: { 'local/pay': { client_id: 'id', client_secret: 'secret' } } as Record<string, unknown>,
    callers: { AKIDLOCALTEST: { secretAccessKey: 'caller-secret', principal: 'arn:aws:iam::111122223333:role/payments-api' } } as Record<
      string,
      unknown
    >,
  };
}

function message(doc: unknown): string {
  try {
    parseLocalConfig(doc, 'test.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('local config', () => {
  it('accepts a valid file and the shipped example', () => {
    const c = parseLocalConfig(valid(), 'test.json');
    expect(c.broker.connections.get('pay')?.clientAuthentication).toBe('client_secret_post');
    expect(c.callers.get('AKIDLOCALTEST')?.principal).toBe('arn:aws:iam::111122223333:role/payments-api');
    const example = loadLocalConfig(join(ROOT, 'examples/local-config.json'));
    expect([...example.broker.connections.keys()]).toEqual(['vitesse-staging', 'vertex-oseries', 'vertex-cloud']);
    expect(example.broker.connections.get('vertex-oseries')?.rateLimit).toEqual({
      max: 10,
      windowSeconds: 28800,
      key: 'vertex-oseries',
      reserve: 2,
      minSpacingMs: 2_880_000,
    });
    expect(example.broker.connections.get('vertex-cloud')?.scope).toBe('vtms-public-api openid profile');
  });

  it('names the connection and field of a bad connection', () => {
    const doc = valid();
    doc.connections.pay!.tokenUrl = 'http://upstream.example.com/token';
    expect(message(doc)).toMatch(/^invalid config \(test\.json\):\n {2}connections\.pay\.tokenUrl: must be an https URL/);
  });

  it('names the connection whose secret is not in "secrets"', () => {
    const doc = valid();
    doc.connections.pay!.secret = 'local/missing';
    expect(message(doc)).toContain('connections.pay.secret: names secret "local/missing", which is not in "secrets"');
  });

  it('requires username and password in the secret of a password-grant connection', () => {
    const doc = valid();
    doc.connections.pay!.grantType = 'password';
    expect(message(doc)).toContain('connections.pay.secret: the password grant needs "username" and "password" in secret "local/pay"');
  });

  it('names bad secrets and callers without echoing their values', () => {
    const doc = valid();
    doc.secrets['local/pay'] = { client_id: 'id', client_secret: '' };
    doc.callers.AKIDLOCALTEST = { secretAccessKey: 'caller-secret', principal: 'arn:aws:iam::111122223333:root' };
    const m = message(doc);
    expect(m).toContain('secrets.local/pay: the credentials secret "local/pay" is missing or has invalid fields: client_secret');
    expect(m).toContain('callers.AKIDLOCALTEST.principal: must be an IAM role');
    expect(m).not.toContain('caller-secret');
  });

  it('refuses unknown top-level keys and an empty callers map', () => {
    expect(message({ ...valid(), extra: 1 })).toContain('extra');
    expect(message({ ...valid(), callers: {} })).toContain('callers: must define at least one caller access key');
  });

  it('reports an unreadable file and invalid JSON as ConfigError', () => {
    expect(() => loadLocalConfig(join(dir, 'nope.json'))).toThrow(/^cannot read config file .*nope\.json \(ENOENT\)$/);
    writeFileSync(join(dir, 'broken.json'), '{"connections": ');
    expect(() => loadLocalConfig(join(dir, 'broken.json'))).toThrow(/not valid JSON/);
  });

  it('derives one sealing key per table name', () => {
    expect(Buffer.from(localSealKey('t1')).equals(Buffer.from(localSealKey('t1')))).toBe(true);
    expect(Buffer.from(localSealKey('t1')).equals(Buffer.from(localSealKey('t2')))).toBe(false);
    expect(localSealKey('t1')).toHaveLength(32);
  });
});

describe('local secrets from the file', () => {
  let now = 1_000_000;
  const clock: Clock = { now: () => now, sleep: async () => {} };
  const path = join(dir, 'secrets.json');
  const write = (clientSecret: string) => {
    const doc = valid();
    doc.secrets['local/pay'] = { client_id: 'id', client_secret: clientSecret };
    writeFileSync(`${path}.tmp`, JSON.stringify(doc));
    renameSync(`${path}.tmp`, path);
  };

  it('re-reads the file after the TTL and on forceRefresh; an edit is a new version', async () => {
    write('v1');
    const source = localSecretSource(fileSecrets(path), clock, 5_000);
    const first = await source.get('local/pay');
    expect(first.credentials.client_secret).toBe('v1');
    write('v2');
    expect((await source.get('local/pay')).credentials.client_secret).toBe('v1'); // cached within the TTL
    const forced = await source.get('local/pay', { forceRefresh: true });
    expect(forced.credentials.client_secret).toBe('v2');
    expect(forced.version).not.toBe(first.version);
    write('v3');
    now += 5_001;
    expect((await source.get('local/pay')).credentials.client_secret).toBe('v3');
    // The same content is the same version.
    expect((await source.get('local/pay', { forceRefresh: true })).version).toBe(
      (await source.get('local/pay', { forceRefresh: true })).version,
    );
  });

  it('keeps the last good value while the file does not parse, and fails closed for an unknown secret', async () => {
    write('good');
    const source = localSecretSource(fileSecrets(path), clock, 5_000);
    expect((await source.get('local/pay')).credentials.client_secret).toBe('good');
    writeFileSync(path, readFileSync(path, 'utf8').slice(0, 20));
    now += 6_000;
    expect((await source.get('local/pay')).credentials.client_secret).toBe('good');
    await expect(source.get('local/other')).rejects.toThrow('credentials store unavailable');
    write('good');
    const missing = await source.get('local/other').catch((e: unknown) => e);
    // The caller's message does not name the secret; the log detail does.
    expect(missing).toMatchObject({
      code: 'internal',
      message: "the connection's credentials are misconfigured; the broker's logs say how",
    });
    expect((missing as { extra: { detail?: string } }).extra.detail).toBe(
      'the credentials secret "local/other" is not in the local config file',
    );
  });
});

describe('flags', () => {
  it('has the documented defaults', () => {
    expect(parseFlags([])).toEqual({ host: '127.0.0.1', port: 8787, table: DEFAULTS.table, region: 'us-east-1', help: false });
    expect(
      parseFlags([
        '--port=0',
        '--config',
        'c.json',
        '--dynamodb-endpoint',
        'http://127.0.0.1:8000',
        '--table',
        'tbl',
        '--region',
        'eu-west-1',
      ]),
    ).toEqual({
      config: 'c.json',
      host: '127.0.0.1',
      port: 0,
      dynamodbEndpoint: 'http://127.0.0.1:8000',
      table: 'tbl',
      region: 'eu-west-1',
      help: false,
    });
  });

  it('explains every mistake in one line', () => {
    const err = (argv: string[]) => {
      try {
        parseFlags(argv);
      } catch (e) {
        expect(e).toBeInstanceOf(StartupError);
        return (e as Error).message;
      }
      throw new Error('expected a StartupError');
    };
    expect(err(['--prot', '1'])).toBe('unknown flag --prot (see --help)');
    expect(err(['--port'])).toBe('flag --port needs a value (see --help)');
    expect(err(['--help=1'])).toBe('flag --help takes no value (see --help)');
    expect(err(['extra'])).toBe('unexpected argument extra (see --help)');
    expect(err(['--port', '70000'])).toBe('--port must be an integer from 0 to 65535, not "70000" (see --help)');
    expect(err(['--dynamodb-endpoint', 'localhost:8000'])).toMatch(/^--dynamodb-endpoint must be an http\(s\) URL/);
    expect(err(['--table', 'x'])).toMatch(/^--table must be 3 to 255/);
  });
});
