/**
 * A fake upstream token endpoint on loopback that logs every request it receives: the ground truth for
 * counting upstream requests. Each answer comes from a programmable responder. Shared by the tests and the
 * bench (testkit/ imports nothing from test/ or bench/).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Receipt {
  at: number;
  params: URLSearchParams;
  authorization?: string;
}

export interface Answer {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Delay before answering (real ms). */
  delayMs?: number;
  /** Destroy the socket instead of answering. */
  reset?: boolean;
}

export type Responder = (receipt: Receipt, index: number) => Answer | Promise<Answer>;

export interface FakeIdp {
  url: string;
  receipts: Receipt[];
  respond: Responder;
  /** The clock receipts are stamped with (a test's fake clock, or real time). */
  now: () => number;
  /** Counts of requests per client_id. */
  count(clientId?: string): number;
  close(): Promise<void>;
}

let tokenCounter = 0;

/** A default responder: a fresh opaque token per request. */
export const issue =
  (expiresIn: number | string | undefined = 300, extra: Record<string, unknown> = {}): Responder =>
  () => ({
    body: {
      access_token: `tok-${++tokenCounter}-${Math.random().toString(36).slice(2)}`,
      token_type: 'Bearer',
      ...(expiresIn !== undefined ? { expires_in: expiresIn } : {}),
      ...extra,
    },
  });

export async function startIdp(respond: Responder = issue(), now: () => number = Date.now): Promise<FakeIdp> {
  const receipts: Receipt[] = [];
  const idp: FakeIdp = {
    url: '',
    receipts,
    respond,
    now,
    count: (clientId) => (clientId ? receipts.filter((r) => clientIdOf(r) === clientId).length : receipts.length),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const receipt: Receipt = {
        at: idp.now(),
        params: new URLSearchParams(Buffer.concat(chunks).toString('utf8')),
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      };
      const index = receipts.push(receipt) - 1;
      void Promise.resolve(idp.respond(receipt, index)).then(async (a) => {
        if (a.delayMs) await new Promise((r) => setTimeout(r, a.delayMs));
        if (a.reset) {
          req.socket.destroy();
          return;
        }
        const body = typeof a.body === 'string' ? a.body : JSON.stringify(a.body ?? {});
        res.writeHead(a.status ?? 200, { 'content-type': 'application/json', ...a.headers });
        res.end(body);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  idp.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return idp;
}

/** The client_id of a receipt, from the body or a Basic header. */
export function clientIdOf(r: Receipt): string | undefined {
  const fromBody = r.params.get('client_id');
  if (fromBody) return fromBody;
  if (r.authorization?.startsWith('Basic ')) {
    const decoded = Buffer.from(r.authorization.slice(6), 'base64').toString('utf8');
    return decodeURIComponent(decoded.split(':')[0]!.replace(/\+/g, ' '));
  }
  return undefined;
}

export function secretOf(r: Receipt): string | undefined {
  return r.params.get('client_secret') ?? undefined;
}
