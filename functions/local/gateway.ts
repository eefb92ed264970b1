/**
 * The local stand-in for API Gateway (REST API, AWS_IAM auth, Lambda proxy integration): verifies SigV4
 * the way API Gateway does, then hands the real handler the proxy event API Gateway would build, with
 * the caller's identity taken only from the verified access key, never from headers or the body.
 */
import type { APIGatewayProxyResult } from 'aws-lambda';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MAX_BODY_BYTES } from '../contract/routes.js';
import type { HttpHandler } from '../broker/http.js';
import type { RequestLog } from '../broker/observability.js';
import { buildEvent, grouped, type LocalCaller, nameRecord } from './api-event.js';
import { StartupError } from './config.js';
import { SigV4Error, verifySigV4 } from './sigv4.js';

/** API Gateway's integration timeout: the handler's time budget per request. */
const INTEGRATION_TIMEOUT_MS = 29_000;

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

/** Header names as sent, each with all its values (the Node parser's rawHeaders keep repeats). */
function rawHeaderMap(req: IncomingMessage): Record<string, string[]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  return nameRecord(grouped(pairs));
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
      const event = buildEvent({
        method,
        target,
        headers,
        body,
        accessKeyId,
        principal: caller.principal,
        sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
        requestId,
        now: started,
      });
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
      if (e.code === 'EADDRINUSE')
        reject(
          new StartupError(
            `port ${opts.port} on ${opts.host} is already in use (EADDRINUSE); stop the other process or choose another with --port`,
          ),
        );
      else if (e.code === 'EACCES')
        reject(new StartupError(`not allowed to listen on ${where} (EACCES); choose a port above 1023 with --port`));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND')
        reject(new StartupError(`cannot listen on ${where}: no such local address (${e.code}); check --host`));
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
