import { describe, expect, it } from 'vitest';
import { matchRoute, ROUTE_KINDS, ROUTES, routePath, routeSegments } from '../../functions/contract/routes.js';

describe('contract routes', () => {
  it('builds each route for a connection, and its resource path segments', () => {
    expect(ROUTE_KINDS.map((kind) => `${ROUTES[kind].method} ${routePath(kind, 'vitesse')}`)).toEqual([
      'GET /tokens/vitesse',
      'POST /tokens/vitesse/invalidate',
    ]);
    expect(routePath('invalidate', '*')).toBe('/tokens/*/invalidate');
    expect(routeSegments('token')).toEqual(['tokens', '{connection}']);
    expect(routeSegments('invalidate')).toEqual(['tokens', '{connection}', 'invalidate']);
  });

  it('matches the two routes, with or without a trailing slash, and nothing else', () => {
    const table: [string, string, ReturnType<typeof matchRoute>][] = [
      ['GET', '/tokens/vitesse', { kind: 'token', connection: 'vitesse' }],
      ['GET', '/tokens/vitesse/', { kind: 'token', connection: 'vitesse' }],
      ['POST', '/tokens/vitesse/invalidate', { kind: 'invalidate', connection: 'vitesse' }],
      ['POST', '/tokens/vitesse/invalidate/', { kind: 'invalidate', connection: 'vitesse' }],
      // A connection may be called "invalidate": /tokens/invalidate is its token route.
      ['GET', '/tokens/invalidate', { kind: 'token', connection: 'invalidate' }],
      ['POST', '/tokens/invalidate/invalidate', { kind: 'invalidate', connection: 'invalidate' }],
      ['POST', '/tokens/vitesse', undefined],
      ['GET', '/tokens/vitesse/invalidate', undefined],
      ['PUT', '/tokens/vitesse', undefined],
      ['get', '/tokens/vitesse', undefined],
      ['GET', '/tokens', undefined],
      ['GET', '/tokens/', undefined],
      ['GET', '/tokens//', undefined],
      ['GET', '/tokens/a/b', undefined],
      ['POST', '/tokens/a/invalidate/x', undefined],
      ['GET', '/tokens/vitesse//', undefined],
      ['GET', '/prod/tokens/vitesse', undefined],
      ['GET', 'tokens/vitesse', undefined],
    ];
    for (const [method, path, expected] of table) expect(matchRoute(method, path), `${method} ${path}`).toEqual(expected);
  });

  it('returns the connection segment percent-decoded, or as is when it does not decode (the caller validates it)', () => {
    expect(matchRoute('GET', '/tokens/my%2Dconn')).toEqual({ kind: 'token', connection: 'my-conn' });
    expect(matchRoute('POST', '/tokens/a%20b/invalidate')).toEqual({ kind: 'invalidate', connection: 'a b' });
    expect(matchRoute('GET', '/tokens/%E0%A4%A')).toEqual({ kind: 'token', connection: '%E0%A4%A' });
  });
});
