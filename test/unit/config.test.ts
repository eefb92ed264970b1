import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, parseConfigText } from '../../functions/core/config.js';

const CALLER = 'arn:aws:iam::111122223333:role/payments-*';

const vitesse = {
  tokenUrl: 'https://staging-identity.vitessepsp.com/connect/token',
  grantType: 'client_credentials',
  scope: 'API',
  secret: 'token-broker/dev/vitesse',
  callers: [CALLER],
};
const oseries = {
  tokenUrl: 'https://auth.vertexsmb.com/identity/connect/token',
  grantType: 'client_credentials',
  secret: 'token-broker/dev/vertex-oseries',
  callers: ['arn:aws:iam::111122223333:role/tax-*'],
  rateLimit: { max: 10, windowSeconds: 28800 },
};
const vertexCloud = {
  tokenUrl: 'https://auth.vertexsmb.com/identity/connect/token',
  grantType: 'password',
  scope: 'vtms-public-api openid profile',
  secret: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:token-broker/dev/vertex-cloud-AbCdEf',
  callers: ['arn:aws:iam::111122223333:role/tax-adjustments-*'],
};

const one = (name: string, c: Record<string, unknown>) => parseConfig({ connections: { [name]: c } }).connections.get(name)!;

/** The ConfigError message for a document, failing the test if it parses. */
function configError(doc: unknown): string {
  try {
    parseConfig(doc);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('config parsed but should not have');
}

describe('parseConfig: valid examples', () => {
  it('parses the three upstreams with their defaults resolved', () => {
    const cfg = parseConfig({ connections: { 'vitesse-staging': vitesse, 'vertex-oseries': oseries, 'vertex-cloud': vertexCloud } });
    expect([...cfg.connections.keys()]).toEqual(['vitesse-staging', 'vertex-oseries', 'vertex-cloud']);

    const v = cfg.connections.get('vitesse-staging')!;
    expect(v).toMatchObject({
      name: 'vitesse-staging',
      grantType: 'client_credentials',
      scope: 'API',
      clientAuthentication: 'client_secret_post',
      defaultTtlSeconds: 300,
      refreshBeforeSeconds: 60,
    });
    expect(v.rateLimit).toBeUndefined();

    const o = cfg.connections.get('vertex-oseries')!;
    // The budget guard's defaults: reserve ceil(10 / 5) = 2, spacing 28800 / 10 = 2880 s.
    expect(o.rateLimit).toEqual({ max: 10, windowSeconds: 28800, key: 'vertex-oseries', reserve: 2, minSpacingMs: 2_880_000 });
    expect(o.refreshBeforeSeconds).toBe(0); // rate-limited: use each token as long as callers allow
    expect(o.scope).toBeUndefined();

    const c = cfg.connections.get('vertex-cloud')!;
    expect(c).toMatchObject({ grantType: 'password', scope: 'vtms-public-api openid profile', refreshBeforeSeconds: 60 });
    expect(c.secret).toBe(vertexCloud.secret);
  });

  it('keeps explicit values over defaults', () => {
    const c = one('x', {
      ...vitesse,
      clientAuthentication: 'client_secret_basic',
      refreshBeforeSeconds: 120,
      defaultTtlSeconds: 900,
      extraParams: { audience: 'https://api.example' },
      rateLimit: { max: 3, windowSeconds: 60, key: 'shared' },
    });
    expect(c).toMatchObject({
      clientAuthentication: 'client_secret_basic',
      refreshBeforeSeconds: 120,
      defaultTtlSeconds: 900,
      extraParams: { audience: 'https://api.example' },
    });
    expect(c.rateLimit).toEqual({ max: 3, windowSeconds: 60, key: 'shared', reserve: 1, minSpacingMs: 20_000 });
    expect(one('y', { ...oseries, refreshBeforeSeconds: 30 }).refreshBeforeSeconds).toBe(30);
  });

  it('normalises whitespace in scope', () => {
    expect(one('x', { ...vitesse, scope: '  vtms-public-api   openid\tprofile ' }).scope).toBe('vtms-public-api openid profile');
  });

  it('accepts http only for loopback token URLs', () => {
    for (const u of ['http://localhost:8080/token', 'http://127.0.0.1/token', 'http://[::1]:9000/token']) {
      expect(one('x', { ...vitesse, tokenUrl: u }).tokenUrl).toBe(u);
    }
  });

  it('lets connections share a ledger key with the same limit', () => {
    const cfg = parseConfig({
      connections: {
        a: { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, key: 'vertex' } },
        b: { ...vertexCloud, rateLimit: { max: 10, windowSeconds: 28800, key: 'vertex' } },
      },
    });
    expect(cfg.connections.get('a')!.rateLimit!.key).toBe('vertex');
    expect(cfg.connections.get('b')!.rateLimit!.key).toBe('vertex');
  });

  it('parses 100 connections', () => {
    const connections = Object.fromEntries(
      Array.from({ length: 100 }, (_, i) => [`conn-${i}`, { ...oseries, secret: `token-broker/dev/c${i}` }]),
    );
    const cfg = parseConfig({ connections });
    expect(cfg.connections.size).toBe(100);
    expect(cfg.connections.get('conn-99')).toMatchObject({
      name: 'conn-99',
      secret: 'token-broker/dev/c99',
      rateLimit: { key: 'conn-99' },
    });
  });

  it('accepts a 64-character name', () => {
    const name = 'a'.repeat(64);
    expect(one(name, vitesse).name).toBe(name);
  });
});

describe('parseConfig: errors name the connection and the field', () => {
  it.each([
    ['upper case', 'Vitesse'],
    ['underscore', 'vitesse_staging'],
    ['65 characters', 'a'.repeat(65)],
    ['empty', ''],
    ['dot', 'vitesse.staging'],
  ])('rejects a bad connection name (%s)', (_label, name) => {
    const msg = configError({ connections: { [name]: vitesse } });
    expect(msg).toContain(`connections.${name}`);
    expect(msg).toMatch(/lowercase letters, digits and -/);
  });

  it('rejects an http tokenUrl on a non-loopback host', () => {
    const msg = configError({
      connections: { 'vitesse-staging': { ...vitesse, tokenUrl: 'http://staging-identity.vitessepsp.com/connect/token' } },
    });
    expect(msg).toContain('connections.vitesse-staging.tokenUrl');
    expect(msg).toMatch(/https/);
  });

  it('rejects a tokenUrl that is not a URL or carries credentials', () => {
    expect(configError({ connections: { x: { ...vitesse, tokenUrl: 'not a url' } } })).toContain('connections.x.tokenUrl');
    const msg = configError({ connections: { x: { ...vitesse, tokenUrl: 'https://user:CANARYPASS@idp.example/token' } } });
    expect(msg).toContain('connections.x.tokenUrl');
    expect(msg).not.toContain('CANARYPASS');
  });

  it('rejects an unknown field, naming it', () => {
    const msg = configError({ connections: { 'vitesse-staging': { ...vitesse, clientSecret: 'oops' } } });
    expect(msg).toContain('connections.vitesse-staging');
    expect(msg).toContain('clientSecret');
  });

  it('rejects an unknown field inside rateLimit and at the top level', () => {
    expect(configError({ connections: { o: { ...oseries, rateLimit: { max: 1, windowSeconds: 1, burst: 2 } } } })).toMatch(
      /connections\.o\.rateLimit[\s\S]*burst/,
    );
    expect(configError({ connections: {}, extra: true })).toContain('extra');
  });

  it('rejects empty callers (deny by default must be explicit)', () => {
    const msg = configError({ connections: { 'vitesse-staging': { ...vitesse, callers: [] } } });
    expect(msg).toContain('connections.vitesse-staging.callers');
  });

  it('rejects a caller pattern that is not an IAM role or user ARN', () => {
    for (const bad of ['*', 'arn:aws:iam::111122223333:root', 'arn:aws:sts::111122223333:assumed-role/App/s', 'arn:aws:iam::*:role/App']) {
      expect(configError({ connections: { v: { ...vitesse, callers: [bad] } } })).toContain('connections.v.callers.0');
    }
  });

  it.each(['grant_type', 'client_id', 'client_secret', 'username', 'password', 'scope'])('rejects reserved extraParams key %s', (key) => {
    const msg = configError({ connections: { v: { ...vitesse, extraParams: { [key]: 'x' } } } });
    expect(msg).toContain('connections.v.extraParams');
    expect(msg).toContain(key);
  });

  it('rejects a shared ledger key with a different max or window, naming both connections', () => {
    const msg = configError({
      connections: {
        'vertex-oseries': { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, key: 'vertex' } },
        'vertex-cloud': { ...vertexCloud, rateLimit: { max: 20, windowSeconds: 28800, key: 'vertex' } },
      },
    });
    expect(msg).toContain('connections.vertex-cloud.rateLimit');
    expect(msg).toContain('vertex-oseries');
    expect(msg).toContain('"vertex"');
    expect(
      configError({
        connections: {
          a: { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, key: 'k' } },
          b: { ...oseries, rateLimit: { max: 10, windowSeconds: 3600, key: 'k' } },
        },
      }),
    ).toContain('connections.b.rateLimit');
  });

  it('budget guard fields: reserve below max, spacing within the window, defaults resolved, errors name the connection and field', () => {
    expect(
      one('o', { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, reserve: 0, minSpacingSeconds: 60 } }).rateLimit,
    ).toMatchObject({ reserve: 0, minSpacingMs: 60_000 });
    // max 1: the reserve can only be 0, and the default spacing is the whole window.
    expect(one('o', { ...oseries, rateLimit: { max: 1, windowSeconds: 600 } }).rateLimit).toMatchObject({
      reserve: 0,
      minSpacingMs: 600_000,
    });
    // max 3 per 20 s: reserve ceil(3 / 5) = 1, spacing 6.666 s in whole ms.
    expect(one('o', { ...oseries, rateLimit: { max: 3, windowSeconds: 20 } }).rateLimit).toMatchObject({ reserve: 1, minSpacingMs: 6_666 });
    const reserve = configError({
      connections: { 'vertex-oseries': { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, reserve: 10 } } },
    });
    expect(reserve).toContain('connections.vertex-oseries.rateLimit.reserve');
    expect(reserve).toContain('less than max (10)');
    const spacing = configError({
      connections: { 'vertex-oseries': { ...oseries, rateLimit: { max: 10, windowSeconds: 600, minSpacingSeconds: 601 } } },
    });
    expect(spacing).toContain('connections.vertex-oseries.rateLimit.minSpacingSeconds');
    expect(spacing).toContain('at most windowSeconds (600)');
    for (const bad of [-1, 1.5, '2']) {
      expect(configError({ connections: { o: { ...oseries, rateLimit: { max: 10, windowSeconds: 600, reserve: bad } } } })).toContain(
        'connections.o.rateLimit.reserve',
      );
      expect(
        configError({ connections: { o: { ...oseries, rateLimit: { max: 10, windowSeconds: 600, minSpacingSeconds: bad } } } }),
      ).toContain('connections.o.rateLimit.minSpacingSeconds');
    }
  });

  it('connections on one ledger must agree on its guard too', () => {
    const msg = configError({
      connections: {
        a: { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, key: 'k', reserve: 1 } },
        b: { ...oseries, rateLimit: { max: 10, windowSeconds: 28800, key: 'k' } },
      },
    });
    expect(msg).toContain('connections.b.rateLimit');
    expect(msg).toContain('reserve');
  });

  it('a config hash changes with the connection settings and not with key order', () => {
    const a = one('o', oseries).configHash;
    expect(one('o', { ...oseries }).configHash).toBe(a);
    expect(one('o', Object.fromEntries(Object.entries(oseries).reverse())).configHash).toBe(a);
    expect(one('o', { ...oseries, scope: 'other' }).configHash).not.toBe(a);
    expect(a).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });

  it('treats an omitted key as the connection name when checking shared ledgers', () => {
    const msg = configError({
      connections: {
        a: { ...oseries, rateLimit: { max: 10, windowSeconds: 60 } },
        b: { ...oseries, rateLimit: { max: 5, windowSeconds: 60, key: 'a' } },
      },
    });
    expect(msg).toContain('connections.b.rateLimit');
  });

  it.each([
    ['grantType', { grantType: 'authorization_code' }],
    ['clientAuthentication', { clientAuthentication: 'private_key_jwt' }],
    ['secret', { secret: '' }],
    ['scope', { scope: '   ' }],
    ['rateLimit.max', { rateLimit: { max: 0, windowSeconds: 60 } }],
    ['rateLimit.windowSeconds', { rateLimit: { max: 1, windowSeconds: 1.5 } }],
    ['defaultTtlSeconds', { defaultTtlSeconds: 0 }],
    ['refreshBeforeSeconds', { refreshBeforeSeconds: -1 }],
  ])('names the field %s', (field, patch) => {
    expect(configError({ connections: { v: { ...vitesse, ...patch } } })).toContain(`connections.v.${field}`);
  });

  it('reports every bad field at once', () => {
    const msg = configError({ connections: { a: { ...vitesse, grantType: 'x' }, b: { ...vitesse, callers: [] } } });
    expect(msg).toContain('connections.a.grantType');
    expect(msg).toContain('connections.b.callers');
  });

  it('names the source', () => {
    expect(() => parseConfig({}, 'config/dev.json')).toThrow(/config\/dev\.json/);
  });
});

describe('parseConfigText', () => {
  it('parses JSON and reports a syntax error as a ConfigError naming the source', () => {
    expect(parseConfigText('{"connections":{}}')).toEqual({ connections: {} });
    expect(() => parseConfigText('{"connections":', 'stage.json')).toThrow(ConfigError);
    expect(() => parseConfigText('{"connections":', 'stage.json')).toThrow(/stage\.json/);
  });
});

describe('parseConfigText', () => {
  it('reports invalid JSON without quoting the file (it may hold secrets)', () => {
    const text = `{"secrets": {"s": {"client_secret": 'CANARY-IN-QUOTES', "x": 1}}}`;
    let message = '';
    try {
      parseConfigText(text, 'local.json');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      message = (e as Error).message;
    }
    expect(message).toMatch(/^invalid config \(local\.json\): not valid JSON/);
    expect(message).not.toContain('CANARY');
    expect(message).not.toContain('client_secret');
  });
});
