/**
 * The REST API proxy event API Gateway (AWS_IAM auth, Lambda proxy integration) hands the Lambda: built
 * here once, for the local gateway (from a request whose SigV4 it verified) and for tests and the bench
 * (which call the handler directly, as if API Gateway had verified the caller).
 */
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { createHash, randomUUID } from 'node:crypto';
import { principalFromArn } from '../core/authz.js';
import { CONNECTION_PARAM, matchRoute, ROUTE_KINDS, ROUTES } from '../contract/routes.js';
import { queryPairs, uriDecode } from './sigv4.js';

/** The account that "owns" the local API (requestContext.accountId). */
const LOCAL_API_ACCOUNT = '000000000000';

export interface LocalCaller {
  secretAccessKey: string;
  /** The IAM principal ARN this key signs as (requestContext.identity.userArn). */
  principal: string;
}

/**
 * A record without a prototype: names that come from the request (`constructor`, `__proto__`,
 * `hasOwnProperty`, ...) are plain keys in it, as they are in the JSON event API Gateway sends.
 */
export function nameRecord<T>(entries: Iterable<readonly [string, T]>): Record<string, T> {
  const out = Object.create(null) as Record<string, T>;
  for (const [k, v] of entries) out[k] = v;
  return out;
}

/** Groups name/value pairs by name, keeping every value in order (a Map: request names are never object keys). */
export function grouped(pairs: Iterable<readonly [string, string]>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of pairs) {
    const list = out.get(k);
    if (list) list.push(v);
    else out.set(k, [v]);
  }
  return out;
}

/** A stable fake unique id (AROA... for roles, AIDA... for users), as API Gateway reports `caller`/`user`. */
function uniqueId(prefix: string, arn: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const digest = createHash('sha256').update(arn).digest();
  let id = prefix;
  for (let i = 0; i < 17; i++) id += alphabet[digest[i]! % 32];
  return id;
}

type Identity = APIGatewayProxyEvent['requestContext']['identity'];

/** requestContext.identity for a verified access key signing as `principal` (null: no IAM identity at all). */
function identityFor(accessKeyId: string, principal: string | null, sourceIp: string, userAgent: string | null): Identity {
  const p = principalFromArn(principal);
  const user =
    principal === null
      ? null
      : p?.kind === 'user'
        ? uniqueId('AIDA', principal)
        : `${uniqueId('AROA', principal)}:${p?.kind === 'role' ? (p.sessionName ?? 'local') : 'local'}`;
  return {
    accessKey: principal === null ? null : accessKeyId,
    accountId: p?.account ?? null,
    caller: user,
    user,
    userArn: principal,
    sourceIp,
    userAgent,
    apiKey: null,
    apiKeyId: null,
    clientCert: null,
    cognitoAuthenticationProvider: null,
    cognitoAuthenticationType: null,
    cognitoIdentityId: null,
    cognitoIdentityPoolId: null,
    principalOrgId: null,
  };
}

/** The API Gateway resource a path falls under (the broker's two resources, else a catch-all). */
function resourceOf(path: string): { resource: string; pathParameters: Record<string, string> | null } {
  for (const kind of ROUTE_KINDS) {
    const r = matchRoute(ROUTES[kind].method, path);
    if (r) return { resource: ROUTES[r.kind].path, pathParameters: { [CONNECTION_PARAM]: r.connection } };
  }
  return { resource: '/{proxy+}', pathParameters: path === '/' ? null : { proxy: uriDecode(path.slice(1)) } };
}

/** `dd/MMM/yyyy:HH:mm:ss +0000`, API Gateway's requestTime. */
function requestTime(ms: number): string {
  const d = new Date(ms);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

export interface EventInput {
  method: string;
  /** Path and query as sent (`/tokens/x?min_ttl=60`). */
  target: string;
  /** Header names as sent, each with all its values. */
  headers: Record<string, string[]>;
  body: Buffer;
  accessKeyId: string;
  /** The verified caller's IAM principal ARN (null: a request without IAM identity). */
  principal: string | null;
  sourceIp: string;
  requestId: string;
  now: number;
}

/** The REST API proxy event API Gateway would send for this verified request. */
export function buildEvent(i: EventInput): APIGatewayProxyEvent {
  const q = i.target.indexOf('?');
  const path = q < 0 ? i.target : i.target.slice(0, q);
  const pairs = q < 0 ? [] : queryPairs(i.target.slice(q + 1));
  const byName = grouped(pairs);
  const multiQuery = nameRecord(byName);
  const query = nameRecord([...byName].map(([k, v]) => [k, v[v.length - 1]!] as const));
  const headerEntries = Object.entries(i.headers);
  const headers = nameRecord(headerEntries.map(([k, v]) => [k, v[v.length - 1]!] as const));
  const multiHeaders = nameRecord(headerEntries);
  const userAgent = headerEntries.find(([k]) => k.toLowerCase() === 'user-agent')?.[1][0] ?? null;
  const host = headerEntries.find(([k]) => k.toLowerCase() === 'host')?.[1][0] ?? 'localhost';
  const { resource, pathParameters } = resourceOf(path);
  return {
    resource,
    path,
    httpMethod: i.method,
    headers,
    multiValueHeaders: multiHeaders,
    queryStringParameters: pairs.length ? query : null,
    multiValueQueryStringParameters: pairs.length ? multiQuery : null,
    pathParameters,
    stageVariables: null,
    body: i.body.length ? i.body.toString('utf8') : null,
    isBase64Encoded: false,
    requestContext: {
      accountId: LOCAL_API_ACCOUNT,
      apiId: 'local',
      authorizer: null,
      domainName: host,
      extendedRequestId: i.requestId,
      httpMethod: i.method,
      identity: identityFor(i.accessKeyId, i.principal, i.sourceIp, userAgent),
      path: `/local${path}`,
      protocol: 'HTTP/1.1',
      requestId: i.requestId,
      requestTime: requestTime(i.now),
      requestTimeEpoch: i.now,
      resourceId: 'local',
      resourcePath: resource,
      stage: 'local',
    },
  };
}

export interface ApiEventOptions {
  /** The caller's IAM principal ARN, as API Gateway verified it (null: a request without IAM identity). */
  userArn: string | null;
  /** Headers as sent; a list for a repeated header. */
  headers?: Record<string, string | string[]>;
  body?: string | null;
  /** Epoch ms of the request (default: now). */
  now?: number;
}

/**
 * The event for a request that API Gateway has already verified, for callers of the handler itself (tests,
 * the bench): `apiEvent('GET', '/tokens/x?min_ttl=60', { userArn })`.
 */
export function apiEvent(method: string, target: string, o: ApiEventOptions): APIGatewayProxyEvent {
  return buildEvent({
    method,
    target,
    headers: nameRecord(Object.entries(o.headers ?? {}).map(([k, v]) => [k, Array.isArray(v) ? v : [v]] as const)),
    body: Buffer.from(o.body ?? '', 'utf8'),
    accessKeyId: 'ASIALOCALEXAMPLE',
    principal: o.userArn,
    sourceIp: '127.0.0.1',
    requestId: randomUUID(),
    now: o.now ?? Date.now(),
  });
}
