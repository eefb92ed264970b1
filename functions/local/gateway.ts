/**
 * The local stand-in for API Gateway (REST API, AWS_IAM auth, Lambda proxy integration): verifies SigV4
 * the way API Gateway does, then hands the real handler the proxy event API Gateway would build, with
 * the caller's identity taken only from the verified access key, never from headers or the body.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CONNECTION_PARAM, matchRoute, MAX_BODY_BYTES, ROUTE_KINDS, ROUTES } from '../contract/routes.js';
import { principalFromArn } from '../core/authz.js';
import type { HttpHandler } from '../broker/http.js';
import type { RequestLog } from '../broker/observability.js';
import { StartupError } from './config.js';
import { queryPairs, SigV4Error, uriDecode, verifySigV4 } from './sigv4.js';

/** API Gateway's integration timeout: the handler's time budget per request. */
export const INTEGRATION_TIMEOUT_MS = 29_000;
/** The account that "owns" the local API (requestContext.accountId). */
export const LOCAL_API_ACCOUNT = '000000000000';

export interface LocalCaller {
  secretAccessKey: string;
  /** The IAM principal ARN this key signs as (requestContext.identity.userArn). */
  principal: string;
}

export interface GatewayOptions {
  host: string;
  port: number;
  region: string;
  callers: ReadonlyMap<string, LocalCaller>;
  handler: HttpHandler;
  logger: RequestLog;
  /** Epoch ms; injected by tests. */
  now?: () => number;
}

export interface Gateway {
  /** `http://HOST:PORT` with the port actually bound. */
  url: string;
  port: number;
  close(): Promise<void>;
}

class GatewayReject extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const JSON_HEADERS = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };

/** Reads the body, refusing (413) one over 8 KB without buffering more than that. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  const tooLarge = () => new GatewayReject(413, 'invalid_request', 'body is larger than 8 KB');
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(chunk);
      req.off('data', onData);
      req.pause();
      reject(tooLarge());
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
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
function grouped(pairs: Iterable<readonly [string, string]>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of pairs) {
    const list = out.get(k);
    if (list) list.push(v);
    else out.set(k, [v]);
  }
  return out;
}

/** Header names as sent, each with all its values (the Node parser's rawHeaders keep repeats). */
function rawHeaderMap(req: IncomingMessage): Record<string, string[]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  return nameRecord(grouped(pairs));
}

/** A stable fake unique id (AROA... for roles, AIDA... for users), as API Gateway reports `caller`/`user`. */
function uniqueId(prefix: string, arn: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const digest = createHash('sha256').update(arn).digest();
  let id = prefix;
  for (let i = 0; i < 17; i++) id += alphabet[digest[i]! % 32];
  return id;
}

export function identityFor(accessKeyId: string, caller: LocalCaller, sourceIp: string, userAgent: string | null): APIGatewayProxyEvent['requestContext']['identity'] {
  const p = principalFromArn(caller.principal);
  const user = p?.kind === 'user' ? uniqueId('AIDA', caller.principal) : `${uniqueId('AROA', caller.principal)}:${p?.kind === 'role' ? (p.sessionName ?? 'local') : 'local'}`;
  return {
    accessKey: accessKeyId,
    accountId: p?.account ?? null,
    caller: user,
    user,
    userArn: caller.principal,
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
  target: string;
  headers: Record<string, string[]>;
  body: Buffer;
  accessKeyId: string;
  caller: LocalCaller;
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
      identity: identityFor(i.accessKeyId, i.caller, i.sourceIp, userAgent),
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

function send(res: ServerResponse, result: APIGatewayProxyResult, requestId: string): void {
  const headers = nameRecord<string | string[]>([['x-amzn-RequestId', requestId]]);
  for (const [k, v] of Object.entries(result.headers ?? {})) headers[k] = String(v);
  for (const [k, v] of Object.entries(result.multiValueHeaders ?? {})) headers[k] = v.map(String);
  const body = result.isBase64Encoded ? Buffer.from(result.body, 'base64') : Buffer.from(result.body ?? '', 'utf8');
  headers['Content-Length'] = String(body.length);
  res.writeHead(result.statusCode, headers);
  res.end(body);
}

function sendRejection(res: ServerResponse, e: GatewayReject, requestId: string): void {
  const result = { statusCode: e.status, headers: { ...JSON_HEADERS }, body: JSON.stringify({ error: e.code, message: e.message }) };
  if (e.status === 413) {
    // The rest of the body is not read: close the connection after answering.
    res.setHeader('Connection', 'close');
    res.once('finish', () => res.req.destroy());
  }
  send(res, result, requestId);
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const now = opts.now ?? Date.now;

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const method = req.method ?? 'GET';
    const target = req.url ?? '/';
    const started = now();
    try {
      const body = await readBody(req);
      const headers = rawHeaderMap(req);
      let accessKeyId: string;
      try {
        ({ accessKeyId } = verifySigV4(
          { method, target, headers, body },
          { region: opts.region, now: now(), secretFor: (akid) => opts.callers.get(akid)?.secretAccessKey },
        ));
      } catch (e) {
        if (e instanceof SigV4Error) throw new GatewayReject(403, 'forbidden', e.message);
        throw e;
      }
      const caller = opts.callers.get(accessKeyId)!;
      const event = buildEvent({ method, target, headers, body, accessKeyId, caller, sourceIp: req.socket.remoteAddress ?? '127.0.0.1', requestId, now: started });
      const deadline = started + INTEGRATION_TIMEOUT_MS;
      const result = await opts.handler(event, { getRemainingTimeInMillis: () => Math.max(0, deadline - now()) });
      send(res, result, requestId);
    } catch (e) {
      const rejection = e instanceof GatewayReject ? e : new GatewayReject(500, 'internal', 'internal error');
      opts.logger[rejection.status >= 500 ? 'error' : 'warn']('request rejected by the gateway', {
        method,
        path: target.split('?')[0],
        status: rejection.status,
        reason: rejection.message,
        ...(e instanceof GatewayReject ? {} : { errorName: (e as Error)?.name }),
        requestId,
      });
      if (!res.headersSent) sendRejection(res, rejection, requestId);
      else res.destroy();
    }
  }

  const server: Server = createServer((req, res) => void serve(req, res));
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const where = `${opts.host}:${opts.port}`;
      if (e.code === 'EADDRINUSE') reject(new StartupError(`port ${opts.port} on ${opts.host} is already in use (EADDRINUSE); stop the other process or choose another with --port`));
      else if (e.code === 'EACCES') reject(new StartupError(`not allowed to listen on ${where} (EACCES); choose a port above 1023 with --port`));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') reject(new StartupError(`cannot listen on ${where}: no such local address (${e.code}); check --host`));
      else reject(new StartupError(`cannot listen on ${where}: ${e.code ?? e.message}`));
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
