/**
 * An undici 7 interceptor (`Dispatcher.compose` style) that authenticates requests to one upstream API with
 * a broker token and heals a rejected token:
 *
 *   const upstream = new Agent().compose(tokenInterceptor(client, {
 *     connection: 'vitesse-staging', origin: 'https://api.vitessepsp.com' }));
 *   await request('https://api.vitessepsp.com/payments', { dispatcher: upstream, method: 'POST', body });
 *   await fetch('https://api.vitessepsp.com/payments/1', { dispatcher: upstream }); // undici's fetch
 *
 * - Only requests whose origin is one of `origin` get `Authorization: Bearer <token>` (replacing any the
 *   caller set); everything else passes through untouched, so the token never leaks to another host.
 * - On a 401 from that origin it reports the token (`invalidate`), gets a fresh one and sends the request
 *   again, once. The 401 is held back meanwhile; the caller gets that 401 if no fresh token can be had, if
 *   the broker defers the report (`deferred`: it keeps serving that token), or if the token handed back is
 *   the one just reported. It never replays a request with the token the upstream rejected.
 * - Replay needs the body again. Strings, Buffers/Uint8Arrays, FormData and empty bodies are replayable.
 *   Stream bodies (Readable, async iterables, web ReadableStream, and every body undici's `fetch()` sends)
 *   are buffered up to `maxReplayBodyBytes` (default 1 MiB) before the first send; a larger body is sent
 *   unbuffered and a 401 for it is passed to the caller (the token is still reported, so the next
 *   request gets a fresh one).
 */
import type { Dispatcher } from 'undici';
import { isLoopback, type TokenSource } from './client.js';
import { RateLimitedError } from './errors.js';

export interface TokenInterceptorOptions {
  /** Broker connection whose token the upstream accepts. */
  connection: string;
  /** Upstream origin(s) to authenticate, e.g. `https://api.vitessepsp.com`. https only (http for loopback). */
  origin: string | URL | Array<string | URL>;
  /** minTtl passed to getToken (seconds). Default: the client's. */
  minTtl?: number;
  /** Largest stream body buffered so that it can be replayed after a 401. Default 1 MiB. */
  maxReplayBodyBytes?: number;
  /** Largest 401 body held back while healing; a larger one is passed on and the request is not replayed. Default 64 KiB. */
  maxHeldResponseBytes?: number;
  /**
   * Told when healing fails (the caller then gets the original 401), including a report the broker deferred
   * (a `RateLimitedError` with `retryAfterSeconds`). Errors here never carry a token.
   */
  onHealError?: (error: unknown) => void;
}

type Headers = NonNullable<Dispatcher.DispatchOptions['headers']>;
type Body = NonNullable<Dispatcher.DispatchOptions['body']>;

export function tokenInterceptor(tokens: TokenSource, options: TokenInterceptorOptions): Dispatcher.DispatcherComposeInterceptor {
  const origins = new Set((Array.isArray(options.origin) ? options.origin : [options.origin]).map(normaliseOrigin));
  const settings: Settings = {
    tokens,
    connection: options.connection,
    getOptions: options.minTtl === undefined ? {} : { minTtl: options.minTtl },
    maxReplayBodyBytes: options.maxReplayBodyBytes ?? 1024 * 1024,
    maxHeldResponseBytes: options.maxHeldResponseBytes ?? 64 * 1024,
    onHealError: options.onHealError ?? (() => undefined),
  };
  return (dispatch) =>
    function authenticate(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      const origin = opts.origin === undefined ? undefined : safeOrigin(opts.origin);
      if (origin === undefined || !origins.has(origin)) return dispatch(opts, handler);
      new Exchange(dispatch, opts, handler, settings).start().catch(noop);
      return true;
    };
}

interface Settings {
  tokens: TokenSource;
  connection: string;
  getOptions: { minTtl?: number };
  maxReplayBodyBytes: number;
  maxHeldResponseBytes: number;
  onHealError: (error: unknown) => void;
}

/** One caller request: up to two dispatches (the second only after a 401), one downstream handler. */
class Exchange {
  readonly controller = new StableController();
  opts: Dispatcher.DispatchOptions;
  replayable = true;

  constructor(
    readonly dispatch: Dispatcher.Dispatch,
    opts: Dispatcher.DispatchOptions,
    readonly downstream: Dispatcher.DispatchHandler,
    readonly settings: Settings,
  ) {
    this.opts = opts;
  }

  async start(): Promise<void> {
    // The caller's handler learns of the request now, so that an abort during the token fetch is seen.
    this.downstream.onRequestStart?.(this.controller, {});
    let token: string;
    try {
      await this.prepareBody();
      token = (await this.settings.tokens.getToken(this.settings.connection, this.settings.getOptions)).accessToken;
    } catch (e) {
      this.fail(e);
      return;
    }
    this.send(token, 1);
  }

  send(token: string, attempt: 1 | 2): void {
    if (this.controller.aborted) {
      this.fail(this.controller.reason ?? new Error('request aborted'));
      return;
    }
    const opts = { ...this.opts, headers: withAuthorization(this.opts.headers, `Bearer ${token}`) };
    try {
      this.dispatch(opts, new Attempt(this, token, attempt));
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * After a 401 on attempt 1: report the token, get a fresh one, send again. The caller gets the held 401
   * instead when the broker defers the report (it keeps serving that very token), when no token can be had,
   * or when the token handed back is the one just reported: replaying with a rejected token is pointless.
   */
  async heal(token: string, held: HeldResponse): Promise<void> {
    const { tokens, connection, onHealError } = this.settings;
    let fresh: string;
    try {
      const answer = await tokens.invalidate(connection, token).catch((e: unknown) => {
        onHealError(e);
        return undefined;
      });
      if (answer && !answer.invalidated && answer.reason === 'deferred') {
        onHealError(
          new RateLimitedError(
            `token broker deferred the report of a rejected token for connection "${connection}": it stays in service for up to ${answer.retryAfterSeconds} s, so the 401 is passed on`,
            { status: 200, connection, retryAfterSeconds: answer.retryAfterSeconds },
          ),
        );
        held.deliver(this);
        return;
      }
      fresh = (await tokens.getToken(connection, this.settings.getOptions)).accessToken;
    } catch (e) {
      onHealError(e);
      held.deliver(this);
      return;
    }
    if (fresh === token) {
      held.deliver(this);
      return;
    }
    this.send(fresh, 2);
  }

  fail(e: unknown): void {
    this.downstream.onResponseError?.(this.controller, e instanceof Error ? e : new Error(String(e)));
  }

  /** Makes the body replayable: buffers one-shot stream bodies up to the limit (see the module comment). */
  async prepareBody(): Promise<void> {
    const body = this.opts.body as unknown;
    if (body == null || typeof body === 'string' || body instanceof Uint8Array || !isAsyncIterable(body)) return;
    const iterator = body[Symbol.asyncIterator]();
    const chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      const chunk = toBuffer(next.value);
      chunks.push(chunk);
      size += chunk.length;
      if (size > this.settings.maxReplayBodyBytes) {
        this.replayable = false;
        this.opts = { ...this.opts, body: resume(chunks, iterator) as unknown as Body };
        return;
      }
    }
    this.opts = { ...this.opts, body: Buffer.concat(chunks) };
  }
}

/** Handler for one dispatch of an Exchange. */
class Attempt implements Dispatcher.DispatchHandler {
  held: HeldResponse | undefined;

  constructor(
    readonly exchange: Exchange,
    readonly token: string,
    readonly attempt: 1 | 2,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.exchange.controller.attach(controller);
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    socket: import('node:stream').Duplex,
  ): void {
    this.exchange.downstream.onRequestUpgrade?.(this.exchange.controller, statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode === 401 && this.attempt === 1) {
      if (this.exchange.replayable) {
        this.held = new HeldResponse(statusCode, headers, statusMessage);
        return;
      }
      // Cannot replay: pass the 401 on, but still report the token so the next request gets a fresh one.
      const { tokens, connection, onHealError } = this.exchange.settings;
      tokens.invalidate(connection, this.token).catch(onHealError);
    }
    this.exchange.downstream.onResponseStart?.(this.exchange.controller, statusCode, headers, statusMessage);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.held) {
      if (this.held.add(chunk, this.exchange.settings.maxHeldResponseBytes)) return;
      // Too big to hold: give up healing, pass on what we have and stream the rest.
      const held = this.held;
      this.held = undefined;
      held.start(this.exchange);
      const { tokens, connection, onHealError } = this.exchange.settings;
      tokens.invalidate(connection, this.token).catch(onHealError);
      return;
    }
    this.exchange.downstream.onResponseData?.(this.exchange.controller, chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.held) {
      this.held.trailers = trailers;
      this.exchange.heal(this.token, this.held).catch(noop);
      return;
    }
    this.exchange.downstream.onResponseEnd?.(this.exchange.controller, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.exchange.downstream.onResponseError?.(this.exchange.controller, error);
  }
}

/** A 401 held back while healing, delivered as is if healing fails. */
class HeldResponse {
  chunks: Buffer[] = [];
  size = 0;
  trailers: Record<string, string | string[] | undefined> = {};

  constructor(
    readonly statusCode: number,
    readonly headers: Record<string, string | string[] | undefined>,
    readonly statusMessage: string | undefined,
  ) {}

  add(chunk: Buffer, max: number): boolean {
    this.chunks.push(chunk);
    this.size += chunk.length;
    return this.size <= max;
  }

  start(exchange: Exchange): void {
    const { downstream, controller } = exchange;
    downstream.onResponseStart?.(controller, this.statusCode, this.headers, this.statusMessage);
    for (const chunk of this.chunks) downstream.onResponseData?.(controller, chunk);
  }

  deliver(exchange: Exchange): void {
    try {
      this.start(exchange);
      exchange.downstream.onResponseEnd?.(exchange.controller, this.trailers);
    } catch (e) {
      exchange.fail(e);
    }
  }
}

/**
 * The controller the caller's handler sees for the whole exchange. It forwards to the current dispatch's
 * controller and remembers an abort made between dispatches (while a token is being fetched).
 */
class StableController implements Dispatcher.DispatchController {
  #target: Dispatcher.DispatchController | undefined;
  #paused = false;
  #reason: Error | null = null;
  #aborted = false;

  attach(target: Dispatcher.DispatchController): void {
    this.#target = target;
    if (this.#aborted) target.abort(this.#reason ?? new Error('request aborted'));
    else if (this.#paused) target.pause();
  }

  get aborted(): boolean {
    return this.#aborted || (this.#target?.aborted ?? false);
  }
  get paused(): boolean {
    return this.#paused;
  }
  get reason(): Error | null {
    return this.#reason ?? this.#target?.reason ?? null;
  }
  abort(reason: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason ?? new Error('request aborted');
    this.#target?.abort(this.#reason);
  }
  pause(): void {
    this.#paused = true;
    this.#target?.pause();
  }
  resume(): void {
    this.#paused = false;
    this.#target?.resume();
  }
}

/** Sets `authorization` on any of undici's header shapes (object, flat array, iterable of pairs). */
export function withAuthorization(headers: Headers | null | undefined, value: string): Headers {
  if (headers == null) return { authorization: value };
  const isAuth = (name: unknown) => String(name).toLowerCase() === 'authorization';
  if (Array.isArray(headers)) {
    const out: string[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (!isAuth(headers[i])) out.push(headers[i] as string, headers[i + 1] as string);
    }
    out.push('authorization', value);
    return out;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    const out: string[] = [];
    for (const [name, v] of headers as Iterable<[string, string | string[] | undefined]>) {
      if (isAuth(name) || v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) out.push(name, one);
    }
    out.push('authorization', value);
    return out;
  }
  const out: Record<string, string | string[]> = {};
  for (const [name, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (!isAuth(name) && v !== undefined) out[name] = v;
  }
  out.authorization = value;
  return out;
}

// Failures inside an exchange are delivered to the caller's handler; a handler that itself throws must not
// crash the process with an unhandled rejection.
function noop(): void {}

function normaliseOrigin(origin: string | URL): string {
  const url = new URL(String(origin));
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
    throw new TypeError('tokenInterceptor: origin must use https (http only for loopback)');
  }
  return url.origin;
}

function safeOrigin(origin: string | URL): string | undefined {
  try {
    return new URL(String(origin)).origin;
  } catch {
    return undefined;
  }
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}

function toBuffer(chunk: unknown): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk);
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return Buffer.from(chunk);
  throw new TypeError('tokenInterceptor: request body chunks must be strings or bytes');
}

async function* resume(chunks: Buffer[], rest: AsyncIterator<unknown>): AsyncGenerator<Buffer> {
  yield* chunks;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield toBuffer(next.value);
  }
}
