/**
 * The routes of the HTTP contract (docs/design.md "HTTP API"): what the handler serves, the REST API and the
 * caller policies expose, local mode's gateway mirrors and the client calls.
 */

/** The path parameter naming the connection (`{connection}`; API Gateway `method.request.path.connection`). */
export const CONNECTION_PARAM = 'connection';

export const ROUTES = {
  /** Get a token: `?min_ttl=SECONDS`. */
  token: { method: 'GET', path: '/tokens/{connection}' },
  /** Report a rejected token: body `{"access_token": "..."}`. */
  invalidate: { method: 'POST', path: '/tokens/{connection}/invalidate' },
} as const;

export type RouteKind = keyof typeof ROUTES;

/** The routes, token first. */
export const ROUTE_KINDS: readonly RouteKind[] = ['token', 'invalidate'];

const PLACEHOLDER = `{${CONNECTION_PARAM}}`;

/** The route's path for one connection (or a pattern such as `*`): `/tokens/NAME`, `/tokens/NAME/invalidate`. */
export function routePath(kind: RouteKind, connection: string): string {
  return ROUTES[kind].path.replace(PLACEHOLDER, connection);
}

/** The route's path segments: `['tokens', '{connection}']`, `['tokens', '{connection}', 'invalidate']`. */
export function routeSegments(kind: RouteKind): string[] {
  return ROUTES[kind].path.split('/').filter(Boolean);
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const MATCHERS = ROUTE_KINDS.map((kind) => {
  const [before, after] = ROUTES[kind].path.split(PLACEHOLDER) as [string, string];
  return { kind, method: ROUTES[kind].method as string, pattern: new RegExp(`^${escape(before)}([^/]+)${escape(after)}/?$`) };
});

/**
 * The route a request is for (a trailing `/` is allowed), with the connection segment percent-decoded (as is
 * when it does not decode); undefined for any other method or path. The caller validates the name.
 */
export function matchRoute(method: string, path: string): { kind: RouteKind; connection: string } | undefined {
  for (const m of MATCHERS) {
    const found = m.pattern.exec(path);
    if (!found) continue;
    if (method !== m.method) continue;
    let connection: string;
    try {
      connection = decodeURIComponent(found[1]!);
    } catch {
      connection = found[1]!;
    }
    return { kind: m.kind, connection };
  }
  return undefined;
}

/** The token route's query parameter: the least lifetime, in seconds, the returned token must have left. */
export const MIN_TTL_PARAM = 'min_ttl';
export const DEFAULT_MIN_TTL_SECONDS = 60;
export const MAX_MIN_TTL_SECONDS = 86_400;

/** The largest request body the broker reads (the invalidate body); larger ones are refused (413). */
export const MAX_BODY_BYTES = 8 * 1024;
