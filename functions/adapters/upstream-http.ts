/**
 * The upstream token endpoint over undici: client_credentials and password grants, client_secret_post
 * and client_secret_basic (RFC 6749 section 2.3.1: id and secret form-urlencoded before base64), scope
 * and extraParams in a form body; connect/headers/body timeouts, an overall deadline (the signal) and a
 * cap on the response size. Answers become UpstreamTokens or typed UpstreamErrors; bodies are never logged.
 */
import { Agent, type Dispatcher, request } from 'undici';
import { type Connection, requireGrantFields } from '../core/connection.js';
import { DEFAULT_MARGIN_PARTS } from '../core/limits.js';
import { parseRetryAfter } from '../contract/retry-after.js';
import type { Clock, ClientCredentials, Upstream, UpstreamToken } from '../core/ports.js';
import { systemClock } from './system.js';
import { parseOAuthError, parseTokenResponse } from '../core/token-response.js';
import { UpstreamError } from '../core/upstream-errors.js';

export interface HttpUpstreamOptions {
  dispatcher?: Dispatcher;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  maxResponseBytes?: number;
  clock?: Clock;
}

/** @internal application/x-www-form-urlencoded encoding of one value (space as '+'). */
export function formEncode(value: string): string {
  return new URLSearchParams([['', value]]).toString().slice(1);
}

/** @internal */
export function basicAuthorization(clientId: string, clientSecret: string): string {
  return `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`, 'utf8').toString('base64')}`;
}

/** @internal The request an upstream receives for this connection and these credentials. */
export function tokenRequest(connection: Connection, credentials: ClientCredentials): { headers: Record<string, string>; body: string } {
  const form = new URLSearchParams();
  form.set('grant_type', connection.grantType);
  if (connection.grantType === 'password') {
    requireGrantFields(connection, credentials);
    form.set('username', credentials.username!);
    form.set('password', credentials.password!);
  }
  if (connection.scope) form.set('scope', connection.scope);
  for (const [k, v] of Object.entries(connection.extraParams ?? {})) form.set(k, v);
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
    'user-agent': 'token-broker/1',
  };
  if (connection.clientAuthentication === 'client_secret_basic') {
    headers.authorization = basicAuthorization(credentials.client_id, credentials.client_secret);
  } else {
    form.set('client_id', credentials.client_id);
    form.set('client_secret', credentials.client_secret);
  }
  return { headers, body: form.toString() };
}

export class HttpUpstream implements Upstream {
  private readonly dispatcher: Dispatcher;
  private readonly maxResponseBytes: number;
  private readonly clock: Clock;

  constructor(options: HttpUpstreamOptions = {}) {
    this.dispatcher =
      options.dispatcher ??
      new Agent({
        connect: { timeout: options.connectTimeoutMs ?? DEFAULT_MARGIN_PARTS.connectTimeoutMs },
        headersTimeout: options.headersTimeoutMs ?? 5_000,
        bodyTimeout: options.bodyTimeoutMs ?? 5_000,
        keepAliveTimeout: 30_000,
      });
    this.maxResponseBytes = options.maxResponseBytes ?? 64 * 1024;
    this.clock = options.clock ?? systemClock;
  }

  async requestToken(connection: Connection, credentials: ClientCredentials, signal: AbortSignal): Promise<UpstreamToken> {
    const { headers, body } = tokenRequest(connection, credentials);
    let status: number;
    let responseHeaders: Record<string, string | string[] | undefined>;
    let text: string;
    try {
      const res = await request(connection.tokenUrl, { method: 'POST', headers, body, signal, dispatcher: this.dispatcher });
      status = res.statusCode;
      responseHeaders = res.headers;
      text = await this.readCapped(res.body, status);
    } catch (e) {
      if (e instanceof UpstreamError) throw e;
      throw new UpstreamError({ kind: 'unavailable', detail: describeNetworkError(e) });
    }
    if (status === 200) return parseTokenResponse(status, text);
    if (status === 429) {
      const header = responseHeaders['retry-after'];
      const ms = parseRetryAfter(Array.isArray(header) ? header[0] : header, this.clock.now());
      return Promise.reject(
        new UpstreamError({ kind: 'rate_limited', status: 429, ...(ms !== undefined ? { retryAfterSeconds: Math.ceil(ms / 1000) } : {}) }),
      );
    }
    const code = parseOAuthError(text) ?? (status === 401 ? 'invalid_client' : undefined);
    // 5xx, and the OAuth codes for a transient server condition, are worth retrying later.
    if (status >= 500 || code === 'server_error' || code === 'temporarily_unavailable') {
      throw new UpstreamError({ kind: 'unavailable', status, detail: `status ${status}` });
    }
    if (code) throw new UpstreamError({ kind: 'oauth', status, error: code });
    throw new UpstreamError({ kind: 'invalid_response', status, detail: `status ${status} without an OAuth error` });
  }

  private async readCapped(body: Dispatcher.ResponseData['body'], status: number): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > this.maxResponseBytes) {
        body.destroy();
        throw new UpstreamError({ kind: 'invalid_response', status, detail: `response larger than ${this.maxResponseBytes} bytes` });
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}

function describeNetworkError(e: unknown): string {
  const err = e as { name?: string; code?: string };
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return 'timed out';
  return err?.code ?? err?.name ?? 'network error';
}
