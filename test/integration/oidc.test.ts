/**
 * Against a real OAuth 2.0 server (oidc-provider, in process): both client authentication methods with a
 * secret full of characters that need form-urlencoding (C7), JWT access tokens whose expiry the broker
 * computes, a wrong secret refused as invalid_client, and recovery when the secret is rotated (D2).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { principalFromArn } from '../../functions/core/authz.js';
import { jwtExpiry } from '../../functions/core/token-response.js';
import { type DemoUpstream, startDemoUpstream } from '../../functions/local/demo-upstream.js';
import { FakeClock, realClock } from '../support/clock.js';
import { ALLOWED, CALLER, instance, startWorld, type World } from '../support/env.js';
import { parseConfig } from '../../functions/core/config.js';

const principal = principalFromArn(CALLER);
// oidc-provider accepts only printable ASCII secrets (RFC 6749 VSCHAR); non-ASCII is covered with MockAgent.
const SECRET = 'CANARY:pa%ss+wo rd/&=?';
let world: World;
const servers: DemoUpstream[] = [];

beforeAll(async () => {
  world = await startWorld();
  for (const method of ['client_secret_post', 'client_secret_basic'] as const) {
    servers.push(
      await startDemoUpstream({
        clientId: `client:${method}`,
        clientSecret: SECRET,
        clientAuthentication: method,
        accessTokenTtlSeconds: 600,
      }),
    );
  }
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await world.close();
});

function config(up: DemoUpstream, method: 'client_secret_post' | 'client_secret_basic', secret: string) {
  return parseConfig({
    connections: {
      [secret.replace(/[^a-z-]/g, '-')]: {
        tokenUrl: up.tokenUrl,
        grantType: 'client_credentials',
        scope: 'api',
        clientAuthentication: method,
        secret,
        callers: ALLOWED,
      },
    },
  });
}

describe('a real OAuth server (oidc-provider)', () => {
  it.each([0, 1])('gets a JWT access token with %s client authentication and a secret that needs encoding (C7)', async (i) => {
    const up = servers[i]!;
    const method = i === 0 ? 'client_secret_post' : 'client_secret_basic';
    const name = `oidc/${method}`;
    world.secrets.set(name, { client_id: up.clientId, client_secret: SECRET });
    const { broker } = instance(world, { clock: realClock, config: config(up, method, name) });
    const sent = Date.now();
    const served = await broker.getToken({ connection: name.replace(/[^a-z-]/g, '-'), principal, minTtlSeconds: 60 });
    expect(served.outcome).toBe('refreshed');
    expect(served.token.scope).toBe('api');
    const exp = jwtExpiry(served.token.accessToken);
    expect(exp).toBeDefined();
    // expires_in from the request time, and never later than the JWT's own exp.
    expect(served.token.expiresAt).toBeLessThanOrEqual(exp! * 1000);
    expect(served.token.expiresAt).toBeGreaterThanOrEqual(sent + 599_000);
    expect(served.token.expiresAt).toBeLessThanOrEqual(Date.now() + 600_000);
  });

  it('a wrong secret is invalid_client (502); once ops rotate it, the cached secret is re-read and the refresh retried (D2)', async () => {
    const up = servers[1]!;
    const clock = new FakeClock(Date.now());
    world.secrets.set('oidc/rotating', { client_id: up.clientId, client_secret: 'CANARY-WRONG' });
    const { broker } = instance(world, { clock, config: config(up, 'client_secret_basic', 'oidc/rotating') });
    const err = await broker.getToken({ connection: 'oidc-rotating', principal, minTtlSeconds: 0 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'upstream_error', extra: { upstreamError: 'invalid_client' } });
    expect((err as Error).message).not.toContain('CANARY');
    // Ops fix the secret in the console; this container still caches the wrong one (TTL 60 s).
    world.secrets.set('oidc/rotating', { client_id: up.clientId, client_secret: SECRET });
    clock.advance(16_000); // past the backoff (at most 15 s without a rate limit)
    const reads = world.secrets.reads;
    const served = await broker.getToken({ connection: 'oidc-rotating', principal, minTtlSeconds: 0 });
    expect(served.outcome).toBe('refreshed');
    expect(world.secrets.reads).toBe(reads + 1); // the forced re-read after invalid_client
  });
});
