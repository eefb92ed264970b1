import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MockAgent } from 'undici';
import { TokenBrokerClient, type TokenBrokerClientOptions } from '@token-broker/client';

export const ORIGIN = 'https://abc123.execute-api.eu-west-1.amazonaws.com';
export const ENDPOINT = `${ORIGIN}/prod`;
export const CREDENTIALS = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
  sessionToken: 'session-token-example',
};
/** 2026-01-02T03:04:05Z */
export const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);

export interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
}

export function mockBroker() {
  const agent = new MockAgent();
  agent.disableNetConnect();
  const pool = agent.get(ORIGIN);
  const seen: SeenRequest[] = [];
  return { agent, pool, seen };
}

/** Records a request as the MockAgent reply callback sees it. */
export function record(seen: SeenRequest[], opts: { method: string; path: string; headers?: unknown; body?: unknown }): void {
  seen.push({
    method: opts.method,
    path: opts.path,
    headers: lowerHeaders(opts.headers),
    body: typeof opts.body === 'string' ? opts.body : undefined,
  });
}

function lowerHeaders(headers: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  const entries: Array<[string, unknown]> = Array.isArray(headers)
    ? Array.from({ length: headers.length / 2 }, (_, i) => [String(headers[2 * i]), headers[2 * i + 1]] as [string, unknown])
    : typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function'
      ? [...(headers as Iterable<[string, unknown]>)]
      : Object.entries(headers as Record<string, unknown>);
  for (const [k, v] of entries) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
  return out;
}

export function tokenBody(token: string, expiresIn = 300, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    access_token: token,
    token_type: 'Bearer',
    expires_in: expiresIn,
    expires_at: new Date(T0 + expiresIn * 1000).toISOString(),
    scope: 'API',
    connection: 'vitesse-staging',
    ...extra,
  });
}

export function errorBody(error: string, message: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ error, message, ...extra });
}

export function newClient(options: Partial<TokenBrokerClientOptions> & { dispatcher: TokenBrokerClientOptions['dispatcher'] }) {
  return new TokenBrokerClient({ endpoint: ENDPOINT, credentials: CREDENTIALS, random: () => 0, ...options });
}

export interface LocalServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function listen(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<LocalServer> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
