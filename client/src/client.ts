/**
 * TokenBrokerClient: what a microservice uses to get an upstream OAuth token from the broker.
 *
 * - Signs each request with SigV4 (service `execute-api`; `@smithy/signature-v4` with node:crypto's SHA-256)
 *   using the given credentials or, lazily, the default AWS credential chain
 *   (`@aws-sdk/credential-provider-node`, loaded on first use only).
 * - Keeps one token per connection in process memory and serves it while it has at least
 *   `minTtl + skewSeconds` left; concurrent `getToken` calls for one connection share one broker request.
 * - Retries 429/503 and network failures with full jitter, honouring `Retry-After`, and never sleeps
 *   past the call's deadline. 400/403/404/500/502 are not retried.
 * - Never logs; no error message carries a token.
 *
 * - HTTP: the runtime's built-in fetch (undici inside Node, keep-alive global Agent) unless an undici
 *   `dispatcher` is given. The dispatcher is typed structurally (`BrokerDispatcher`), so neither this
 *   module's code nor its types need the undici package.
 *
 * Imports nothing from functions/: a caller's bundle gets this package and the AWS signing bits.
 */
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import {
  CONNECTION_NAME,
  DEFAULT_MIN_TTL_SECONDS,
  MAX_MIN_TTL_SECONDS,
  MIN_TTL_PARAM,
  parseRetryAfter,
  RETRY_AFTER_HEADER,
  RETRYABLE_CODES,
  ROUTES,
  routePath,
} from './contract.js';
import {
  BrokerUnreachableError,
  ForbiddenError,
  InternalError,
  InvalidRequestError,
  TokenBrokerError,
  UnavailableError,
  errorFromResponse,
} from './errors.js';
import { NodeSha256 } from './sha256.js';

/**
 * The part of an undici `Dispatcher` the client uses: `request()`. Any undici 7 `Agent`, `Pool` or `MockAgent`
 * fits; declared here so that callers who do not use undici need neither the package nor its types.
 */
export interface BrokerDispatcher {
  request(options: {
    origin: string;
    path: string;
    method: 'GET' | 'POST';
    headers: Record<string, string>;
    body: string | null;
    signal: AbortSignal;
  }): Promise<{
    statusCode: number;
    headers: Record<string, string | string[] | undefined>;
    body: { text(): Promise<string> };
  }>;
}

export interface TokenBrokerClientOptions {
  /** Base URL of the broker API, stage path included: `https://abc.execute-api.eu-west-1.amazonaws.com/prod`. */
  endpoint: string | URL;
  /** Signing region. Default: parsed from an `execute-api` hostname, else `AWS_REGION`, else `AWS_DEFAULT_REGION`. */
  region?: string;
  /** Credentials or a provider. Default: the AWS default credential chain, loaded lazily on first request. */
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /**
   * undici dispatcher for broker requests (an Agent/Pool with your keep-alive settings, or a MockAgent in
   * tests). Default: the runtime's built-in fetch, which is undici with a keep-alive global Agent, so the
   * client does not pull the undici package (~520 KB minified) into bundles that do not already have it.
   */
  dispatcher?: BrokerDispatcher;
  /** Default `minTtl` for getToken, in seconds. Default 60 (the broker's default). */
  minTtl?: number;
  /** Extra seconds a cached token must have left beyond `minTtl` (covers clock drift and latency). Default 5. */
  skewSeconds?: number;
  /** Default time budget of one getToken/invalidate call, retries included. Default 10 000 ms. */
  deadlineMs?: number;
  /** Time limit of one HTTP attempt (capped by what is left of the deadline). Default 5 000 ms. */
  attemptTimeoutMs?: number;
  /** Full-jitter backoff: attempt n sleeps random() * min(maxDelayMs, baseDelayMs * 2^n). Defaults 100 / 2 000 ms. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Injectable clock, sleep and randomness (tests). */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

export interface GetTokenOptions {
  /** Seconds the token must still be valid for when returned (0..86400). Default: the client's `minTtl`. */
  minTtl?: number;
  /** Time budget of this call, retries included. Default: the client's `deadlineMs`. */
  deadlineMs?: number;
}

export interface InvalidateOptions {
  deadlineMs?: number;
}

export interface BrokerToken {
  accessToken: string;
  /** As the broker reports it; use `Bearer` in the Authorization header. */
  tokenType: string;
  /** Computed locally: time this client sent the request that fetched the token + `expires_in`. */
  expiresAt: Date;
  /** Whole seconds left at the time getToken returned. */
  expiresIn: number;
  scope?: string;
}

/**
 * What the broker did with a reported token (`POST /tokens/{connection}/invalidate`, 200):
 * - `invalidated: true`: it was the cached token; the broker stops serving it.
 * - `reason: 'not_current'`: the broker already serves another token; nothing changed.
 * - `reason: 'deferred'`: the budget guard will not spend a token request on it now; the broker keeps
 *   serving this token until it expires or, `retryAfterSeconds` from now, a new report can be honoured.
 */
export type InvalidateResult =
  | { invalidated: true }
  | { invalidated: false; reason: 'not_current' }
  | { invalidated: false; reason: 'deferred'; retryAfterSeconds: number };

/** What the interceptor needs from a client (lets tests and callers substitute their own). */
export interface TokenSource {
  getToken(connection: string, options?: GetTokenOptions): Promise<BrokerToken>;
  invalidate(connection: string, accessToken: string, options?: InvalidateOptions): Promise<InvalidateResult>;
}

interface CachedToken {
  accessToken: string;
  tokenType: string;
  expiresAtMs: number;
  scope?: string;
}

interface Flight {
  /** The min_ttl (seconds, skew excluded) the flight asked for: a joiner needing more must not join. */
  minTtl: number;
  promise: Promise<CachedToken>;
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

const REJECTED_PER_CONNECTION = 16;
const REPORTED_MAX = 64;

export class TokenBrokerClient implements TokenSource {
  readonly #url: URL;
  readonly #basePath: string;
  readonly #region: string;
  readonly #signer: SignatureV4;
  readonly #dispatcher: BrokerDispatcher | undefined;
  readonly #minTtl: number;
  readonly #skewMs: number;
  readonly #deadlineMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #random: () => number;
  readonly #cache = new Map<string, CachedToken>();
  readonly #flights = new Map<string, Flight>();
  readonly #invalidations = new Map<string, Promise<InvalidateResult>>();
  /** Reports the broker honoured or found stale (`connection\ntoken`), so that a token is reported once. */
  readonly #reported = new Set<string>();
  /** Reports the broker deferred (`connection\ntoken` → epoch ms until which it said so): answered locally until then. */
  readonly #deferred = new Map<string, number>();
  /** Tokens this process reported as rejected, per connection: never cached or served again. */
  readonly #rejected = new Map<string, Set<string>>();

  constructor(options: TokenBrokerClientOptions) {
    this.#url = parseEndpoint(options.endpoint);
    this.#basePath = this.#url.pathname.replace(/\/+$/, '');
    this.#region = options.region ?? regionFromHost(this.#url.hostname) ?? envRegion() ?? missingRegion();
    this.#signer = new SignatureV4({
      service: 'execute-api',
      region: this.#region,
      sha256: NodeSha256,
      credentials: options.credentials ?? lazyDefaultCredentials(),
    });
    this.#dispatcher = options.dispatcher;
    this.#minTtl = checkTtl(options.minTtl ?? DEFAULT_MIN_TTL_SECONDS, 'minTtl');
    this.#skewMs = Math.max(0, options.skewSeconds ?? 5) * 1000;
    this.#deadlineMs = options.deadlineMs ?? 10_000;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 5_000;
    this.#baseDelayMs = options.baseDelayMs ?? 100;
    this.#maxDelayMs = options.maxDelayMs ?? 2_000;
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? defaultSleep;
    this.#random = options.random ?? Math.random;
  }

  /** The signing region in use. */
  get region(): string {
    return this.#region;
  }

  /**
   * A token for `connection` with at least `minTtl` seconds left: from this process's cache when it has
   * `minTtl + skewSeconds` left, else from the broker (one request per connection however many callers wait).
   */
  async getToken(connection: string, options: GetTokenOptions = {}): Promise<BrokerToken> {
    checkConnection(connection);
    const minTtl = checkTtl(options.minTtl ?? this.#minTtl, 'minTtl');
    for (;;) {
      const cached = this.#fresh(connection, minTtl);
      if (cached) return view(cached, this.#now());
      const flight = this.#flights.get(connection);
      if (!flight) break;
      if (flight.minTtl >= minTtl) return view(await flight.promise, this.#now());
      // A flight asking for less may bring a token too short for us: wait for it, then look again.
      await flight.promise.catch(() => undefined);
    }
    const deadline = this.#now() + (options.deadlineMs ?? this.#deadlineMs);
    const promise = this.#withRetries(connection, deadline, (timeoutMs) => this.#fetchToken(connection, minTtl, timeoutMs));
    const flight: Flight = { minTtl, promise };
    this.#flights.set(connection, flight);
    try {
      const token = await promise;
      this.#cache.set(connection, token);
      return view(token, this.#now());
    } finally {
      if (this.#flights.get(connection) === flight) this.#flights.delete(connection);
    }
  }

  /**
   * Reports a token the upstream rejected (HTTP 401) and resolves with what the broker did (`InvalidateResult`).
   * - This process stops serving the token at once, and refuses it if the broker hands it out again while
   *   the invalidation spreads, unless the broker answers `deferred`: it then keeps serving that token, and so
   *   does this process.
   * - Concurrent reports of one token share one request. A token the broker honoured or found stale is not
   *   reported again (the answer is `not_current`); a deferred report is answered locally, `deferred` with the
   *   seconds left, until its `retry_after` has passed.
   */
  async invalidate(connection: string, accessToken: string, options: InvalidateOptions = {}): Promise<InvalidateResult> {
    checkConnection(connection);
    if (typeof accessToken !== 'string' || accessToken.length === 0) {
      throw new InvalidRequestError('invalidate needs the rejected access token', { status: 0, connection });
    }
    const key = `${connection}\n${accessToken}`;
    // One report per token is enough: the broker ignores reports of a token it no longer serves.
    if (this.#reported.has(key)) return { invalidated: false, reason: 'not_current' };
    const deferredUntil = this.#deferred.get(key);
    if (deferredUntil !== undefined) {
      const left = Math.ceil((deferredUntil - this.#now()) / 1000);
      if (left > 0) return { invalidated: false, reason: 'deferred', retryAfterSeconds: left };
      this.#deferred.delete(key);
    }
    const pending = this.#invalidations.get(key);
    if (pending) return pending;
    const dropped = this.#reject(connection, accessToken);
    const deadline = this.#now() + (options.deadlineMs ?? this.#deadlineMs);
    const body = JSON.stringify({ access_token: accessToken });
    const promise = this.#withRetries(connection, deadline, async (timeoutMs) => {
      const res = await this.#exchange(
        connection,
        ROUTES.invalidate.method,
        routePath('invalidate', connection),
        undefined,
        body,
        timeoutMs,
      );
      if (res.status === 200) return parseInvalidateResult(res.text, connection);
      throw redact(this.#errorFor(res, connection), accessToken);
    })
      .then(
        (result) => {
          if (!result.invalidated && result.reason === 'deferred') {
            // The broker keeps serving this token: so does this process (a new report may be honoured later).
            this.#keep(connection, accessToken, dropped);
            remember(this.#deferred, key, this.#now() + result.retryAfterSeconds * 1000);
          } else {
            remember(this.#reported, key);
          }
          return result;
        },
        (e: unknown) => {
          // The report did not get through (403, 5xx, time): the broker may still serve this token. Ask it again
          // (it may have a newer one), but do not refuse this one: that would fail every getToken of the
          // connection until it expires.
          this.#rejected.get(connection)?.delete(accessToken);
          throw e;
        },
      )
      .finally(() => this.#invalidations.delete(key));
    this.#invalidations.set(key, promise);
    return promise;
  }

  /** Drops cached tokens (all connections, or one). */
  clear(connection?: string): void {
    if (connection === undefined) this.#cache.clear();
    else this.#cache.delete(connection);
  }

  #fresh(connection: string, minTtl: number): CachedToken | undefined {
    const token = this.#cache.get(connection);
    if (!token) return undefined;
    if (token.expiresAtMs - this.#now() >= minTtl * 1000 + this.#skewMs) return token;
    if (token.expiresAtMs <= this.#now()) this.#cache.delete(connection);
    return undefined;
  }

  /** Stops serving a reported token in this process; returns the cache entry it dropped, if any. */
  #reject(connection: string, accessToken: string): CachedToken | undefined {
    const cached = this.#cache.get(connection);
    const dropped = cached?.accessToken === accessToken ? cached : undefined;
    if (dropped) this.#cache.delete(connection);
    let rejected = this.#rejected.get(connection);
    if (!rejected) this.#rejected.set(connection, (rejected = new Set()));
    rejected.delete(accessToken);
    rejected.add(accessToken);
    if (rejected.size > REJECTED_PER_CONNECTION) {
      const oldest = rejected.values().next().value;
      if (oldest !== undefined) rejected.delete(oldest);
    }
    return dropped;
  }

  /** Takes a reported token back into service in this process (the broker did not stop serving it). */
  #keep(connection: string, accessToken: string, dropped: CachedToken | undefined): void {
    this.#rejected.get(connection)?.delete(accessToken);
    if (dropped && !this.#cache.has(connection)) this.#cache.set(connection, dropped);
  }

  async #fetchToken(connection: string, minTtl: number, timeoutMs: number): Promise<CachedToken> {
    // Ask the broker for the skew too, so that a fresh token also satisfies the cache rule above.
    const minTtlQuery = Math.min(MAX_MIN_TTL_SECONDS, minTtl + Math.ceil(this.#skewMs / 1000));
    const sentAt = this.#now();
    const res = await this.#exchange(
      connection,
      ROUTES.token.method,
      routePath('token', connection),
      { [MIN_TTL_PARAM]: String(minTtlQuery) },
      undefined,
      timeoutMs,
    );
    if (res.status !== 200) throw this.#errorFor(res, connection);
    const token = parseToken(res.text, sentAt, connection);
    if (this.#rejected.get(connection)?.has(token.accessToken)) {
      // The broker's invalidation has not reached the container that answered (the contract allows a few
      // seconds): retryable, with backoff, within the deadline.
      throw new UnavailableError(`token broker still serves the token this process reported as rejected for connection "${connection}"`, {
        status: 200,
        connection,
      });
    }
    return token;
  }

  #errorFor(res: RawResponse, connection: string): TokenBrokerError {
    let body: unknown;
    try {
      body = JSON.parse(res.text);
    } catch {
      body = undefined;
    }
    return errorFromResponse(res.status, body, parseRetryAfter(res.headers[RETRY_AFTER_HEADER], this.#now()), connection);
  }

  async #withRetries<T>(connection: string, deadline: number, attempt: (timeoutMs: number) => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      const remaining = deadline - this.#now();
      if (remaining <= 0) {
        throw new BrokerUnreachableError(`token broker call for connection "${connection}" ran out of time`, { connection });
      }
      let error: TokenBrokerError;
      try {
        return await attempt(Math.min(this.#attemptTimeoutMs, remaining));
      } catch (e) {
        if (!(e instanceof TokenBrokerError) || !retryable(e)) throw e;
        error = e;
      }
      const jitter = this.#random() * Math.min(this.#maxDelayMs, this.#baseDelayMs * 2 ** n);
      const delay = error.retryAfterSeconds !== undefined ? error.retryAfterSeconds * 1000 + this.#random() * this.#baseDelayMs : jitter;
      // Never sleep past the deadline: if the wait does not fit, the caller gets the error now.
      if (this.#now() + delay >= deadline) throw error;
      await this.#sleep(delay);
    }
  }

  async #exchange(
    connection: string,
    method: 'GET' | 'POST',
    route: string,
    query: Record<string, string> | undefined,
    body: string | undefined,
    timeoutMs: number,
  ): Promise<RawResponse> {
    const path = this.#basePath + route;
    const headers: Record<string, string> = { host: this.#url.host, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let signed;
    try {
      signed = await this.#signer.sign(
        {
          method,
          protocol: this.#url.protocol,
          hostname: this.#url.hostname,
          ...(this.#url.port ? { port: Number(this.#url.port) } : {}),
          path,
          query: query ?? {},
          headers,
          ...(body !== undefined ? { body } : {}),
        },
        { signingDate: new Date(this.#now()) },
      );
    } catch (e) {
      throw new ForbiddenError(`cannot sign the token broker request for connection "${connection}": no usable AWS credentials`, {
        status: 0,
        connection,
        cause: e,
      });
    }
    const search = query ? `?${new URLSearchParams(query).toString()}` : '';
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`attempt timed out after ${timeoutMs} ms`)), timeoutMs);
    timer.unref?.();
    try {
      if (this.#dispatcher) {
        const res = await this.#dispatcher.request({
          origin: this.#url.origin,
          path: path + search,
          method,
          headers: signed.headers,
          body: body ?? null,
          signal: abort.signal,
        });
        const text = await res.body.text();
        return { status: res.statusCode, headers: res.headers, text };
      }
      // fetch derives Host from the URL (the very value that was signed) and ignores a host header: leave it out.
      const { host: _host, ...fetchHeaders } = signed.headers;
      const res = await fetch(this.#url.origin + path + search, {
        method,
        headers: fetchHeaders,
        ...(body !== undefined ? { body } : {}),
        signal: abort.signal,
        redirect: 'manual',
      });
      const text = await res.text();
      return { status: res.status, headers: { [RETRY_AFTER_HEADER]: res.headers.get(RETRY_AFTER_HEADER) ?? undefined }, text };
    } catch (e) {
      const why = abort.signal.aborted ? `timed out after ${timeoutMs} ms` : describe(e);
      throw new BrokerUnreachableError(`token broker unreachable for connection "${connection}": ${why}`, { connection, cause: e });
    } finally {
      clearTimeout(timer);
    }
  }
}

function retryable(e: TokenBrokerError): boolean {
  return RETRYABLE_CODES.includes(e.code);
}

function parseToken(text: string, sentAt: number, connection: string): CachedToken {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const { access_token: accessToken, token_type: tokenType, expires_in: expiresIn, scope } = fields;
  if (typeof accessToken !== 'string' || accessToken.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
    // Never echo the body: it may hold a token.
    throw new InternalError(`token broker answered 200 with an unusable body for connection "${connection}"`, { status: 200, connection });
  }
  const token: CachedToken = {
    accessToken,
    tokenType: typeof tokenType === 'string' && tokenType ? tokenType : 'Bearer',
    expiresAtMs: sentAt + expiresIn * 1000,
  };
  if (typeof scope === 'string') token.scope = scope;
  return token;
}

/** The 200 body of POST /invalidate. Anything else is an InternalError (never echoing the body). */
function parseInvalidateResult(text: string, connection: string): InvalidateResult {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  if (fields.invalidated === true) return { invalidated: true };
  if (fields.invalidated === false && fields.reason === 'not_current') return { invalidated: false, reason: 'not_current' };
  const retryAfter = fields.retry_after;
  if (
    fields.invalidated === false &&
    fields.reason === 'deferred' &&
    typeof retryAfter === 'number' &&
    Number.isInteger(retryAfter) &&
    retryAfter >= 0
  ) {
    return { invalidated: false, reason: 'deferred', retryAfterSeconds: retryAfter };
  }
  throw new InternalError(`token broker answered the invalidation for connection "${connection}" with an unusable body`, {
    status: 200,
    connection,
  });
}

/** Adds to a bounded Set or Map (oldest entry dropped first). */
function remember(into: Set<string>, key: string): void;
function remember(into: Map<string, number>, key: string, value: number): void;
function remember(into: Set<string> | Map<string, number>, key: string, value?: number): void {
  if (into instanceof Map) {
    into.delete(key);
    into.set(key, value as number);
  } else {
    into.add(key);
  }
  if (into.size > REPORTED_MAX) into.delete(into.keys().next().value as string);
}

const REDACTED = '[token redacted]';

/** A token-bearing result that does not print its token when logged or serialised by accident. */
function view(token: CachedToken, now: number): BrokerToken {
  const result: BrokerToken = {
    accessToken: token.accessToken,
    tokenType: token.tokenType,
    expiresAt: new Date(token.expiresAtMs),
    expiresIn: Math.max(0, Math.floor((token.expiresAtMs - now) / 1000)),
  };
  if (token.scope !== undefined) result.scope = token.scope;
  const safe = () => ({ ...result, accessToken: REDACTED });
  Object.defineProperty(result, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(result, Symbol.for('nodejs.util.inspect.custom'), { value: safe, enumerable: false });
  return result;
}

function redact(error: TokenBrokerError, accessToken: string): TokenBrokerError {
  if (error.message.includes(accessToken)) error.message = error.message.split(accessToken).join(REDACTED);
  return error;
}

function checkConnection(connection: string): void {
  if (typeof connection !== 'string' || !CONNECTION_NAME.test(connection)) {
    throw new InvalidRequestError(
      `invalid connection name ${JSON.stringify(String(connection).slice(0, 80))}: lowercase letters, digits and '-', at most 64 characters`,
      { status: 0 },
    );
  }
}

function checkTtl(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_MIN_TTL_SECONDS) {
    throw new InvalidRequestError(`${name} must be an integer number of seconds in 0..${MAX_MIN_TTL_SECONDS}`, { status: 0 });
  }
  return value;
}

function parseEndpoint(endpoint: string | URL): URL {
  let url: URL;
  try {
    url = new URL(String(endpoint));
  } catch {
    throw new TypeError('TokenBrokerClient: endpoint must be an absolute URL');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
    throw new TypeError('TokenBrokerClient: endpoint must use https (http only for loopback)');
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new TypeError('TokenBrokerClient: endpoint must not carry a query, fragment or credentials');
  }
  return url;
}

export function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(hostname);
}

/** `abc.execute-api.eu-west-1.amazonaws.com` (also `.vpce.` and `.com.cn` forms) → `eu-west-1`. */
function regionFromHost(hostname: string): string | undefined {
  return /\.execute-api\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$/.exec(hostname.toLowerCase())?.[1];
}

function envRegion(): string | undefined {
  return process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || undefined;
}

function missingRegion(): never {
  throw new TypeError('TokenBrokerClient: no region: pass `region`, use an execute-api hostname, or set AWS_REGION');
}

/** The default credential chain, imported on first use only (callers that pass credentials never load it). */
function lazyDefaultCredentials(): AwsCredentialIdentityProvider {
  let provider: Promise<AwsCredentialIdentityProvider> | undefined;
  return async () => {
    provider ??= import('@aws-sdk/credential-provider-node').then((m) => m.defaultProvider());
    try {
      return await (
        await provider
      )();
    } catch (e) {
      provider = undefined;
      throw e;
    }
  };
}

function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}` : e.name;
  }
  return 'network error';
}
