/**
 * SigV4 verification as API Gateway does it for AWS_IAM methods, in both forms AWS accepts:
 * - header: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/execute-api/aws4_request,
 *   SignedHeaders=..., Signature=...` with the date in `X-Amz-Date` (or `Date`);
 * - query (presigned URL): `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-SignedHeaders`,
 *   `X-Amz-Signature`, optional `X-Amz-Expires` (seconds; good for at most 15 minutes) and `X-Amz-Security-Token` in the
 *   query string. Every query parameter but `X-Amz-Signature` is part of the canonical query. Both forms in
 *   one request are refused, as AWS does.
 * The expected signature is computed here with node:crypto from the request as received; tests sign with
 * other implementations (aws4, @smithy/signature-v4, curl --aws-sigv4, botocore).
 *
 * Canonicalisation (non-S3 rules):
 * - path: `.`/`..` and empty segments removed, each segment URI-encoded again (so `%20` is `%2520`);
 * - query: pairs decoded then RFC 3986-encoded, sorted by name then value; a bare name is `name=`;
 * - headers: the signed ones, lower-case, values trimmed, inner whitespace collapsed, repeats joined by `,`;
 * - payload: `x-amz-content-sha256` if present (it must then match the body), else the body's sha256.
 * Failures carry a message for the caller, never the expected signature.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

const ALGORITHM = 'AWS4-HMAC-SHA256';
const SERVICE = 'execute-api';
/** A signature more than this far from the server clock is refused, as AWS does. */
const MAX_SKEW_MS = 15 * 60_000;
/** The longest `X-Amz-Expires` AWS accepts on a presigned request: 7 days. */
const MAX_PRESIGN_EXPIRES_SECONDS = 604_800;

export class SigV4Error extends Error {
  override readonly name = 'SigV4Error';
}

type HeaderMap = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface SignedRequest {
  method: string;
  /** The request target exactly as received: raw path and optional `?query`. */
  target: string;
  headers: HeaderMap;
  body: Uint8Array;
}

interface AuthorizationParts {
  accessKeyId: string;
  /** YYYYMMDD */
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

export interface VerifyOptions {
  region: string;
  service?: string;
  /** Server time, epoch ms. */
  now: number;
  /** The secret access key of a known access key id, else undefined. */
  secretFor(accessKeyId: string): string | undefined;
  maxSkewMs?: number;
}

export interface Verified {
  accessKeyId: string;
  sessionToken?: string;
}

const hex = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Uint8Array, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

/** RFC 3986 encoding: everything but A-Z a-z 0-9 - _ . ~ is percent-encoded (upper-case hex). */
function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Percent-decoding that leaves a malformed escape as it is. */
export function uriDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Lower-cased header names, each with its values in the order received. @internal */
export function headerValues(headers: HeaderMap): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const key = name.toLowerCase();
    const list = out.get(key) ?? [];
    list.push(...(typeof value === 'string' ? [value] : value));
    out.set(key, list);
  }
  return out;
}

/** @internal */
export function parseAuthorization(header: string): AuthorizationParts {
  const m = /^(\S+)\s+(.*)$/s.exec(header.trim());
  if (!m) throw new SigV4Error("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters");
  if (m[1] !== ALGORITHM) throw new SigV4Error(`Unsupported authorization type; sign requests with ${ALGORITHM}`);
  const params = new Map<string, string>();
  for (const part of m[2]!.split(',')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new SigV4Error('Invalid key=value pair in Authorization header');
    const key = p.slice(0, eq);
    if (params.has(key)) throw new SigV4Error(`Authorization header has '${key}' more than once`);
    params.set(key, p.slice(eq + 1));
  }
  const credential = params.get('Credential');
  const signedHeaders = params.get('SignedHeaders');
  const signature = params.get('Signature');
  if (!credential || !signedHeaders || !signature) {
    throw new SigV4Error("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters");
  }
  return { ...parseCredential(credential), signedHeaders: signedHeaders.split(';').map((h) => h.toLowerCase()), signature };
}

/** `AKID/YYYYMMDD/REGION/SERVICE/aws4_request`, as in the header's `Credential=` and the query's `X-Amz-Credential`. */
function parseCredential(credential: string): Pick<AuthorizationParts, 'accessKeyId' | 'date' | 'region' | 'service'> {
  const scope = credential.split('/');
  if (scope.length !== 5 || scope.some((s) => !s) || scope[4] !== 'aws4_request') {
    throw new SigV4Error('Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request');
  }
  const [accessKeyId, date, region, service] = scope as [string, string, string, string, string];
  if (!/^\d{8}$/.test(date)) throw new SigV4Error('Credential date must be YYYYMMDD');
  return { accessKeyId, date, region, service };
}

/** The query parameters of a presigned request. */
const QUERY_AUTH = {
  algorithm: 'X-Amz-Algorithm',
  credential: 'X-Amz-Credential',
  date: 'X-Amz-Date',
  expires: 'X-Amz-Expires',
  signedHeaders: 'X-Amz-SignedHeaders',
  signature: 'X-Amz-Signature',
  securityToken: 'X-Amz-Security-Token',
} as const;

interface QueryAuthParts extends AuthorizationParts {
  /** X-Amz-Date as given. */
  requestDate: string;
  /** X-Amz-Expires in seconds, when given. */
  expiresSeconds?: number;
  sessionToken?: string;
}

/** True if the query carries any presigned-request parameter (then it must carry all of them). */
function hasQueryAuth(rawQuery: string): boolean {
  const names = new Set<string>([QUERY_AUTH.algorithm, QUERY_AUTH.credential, QUERY_AUTH.signature]);
  return queryPairs(rawQuery).some(([k]) => names.has(k));
}

/** Parses the signing parameters of a presigned request's query string. */
function parseQueryAuth(rawQuery: string): QueryAuthParts {
  const values = new Map<string, string[]>();
  for (const [k, v] of queryPairs(rawQuery)) values.set(k, [...(values.get(k) ?? []), v]);
  const one = (name: string): string | undefined => {
    const list = values.get(name);
    if (list && list.length > 1) throw new SigV4Error(`'${name}' must be given once`);
    return list?.[0];
  };
  const algorithm = one(QUERY_AUTH.algorithm);
  const credential = one(QUERY_AUTH.credential);
  const requestDate = one(QUERY_AUTH.date);
  const signedHeaders = one(QUERY_AUTH.signedHeaders);
  const signature = one(QUERY_AUTH.signature);
  const expires = one(QUERY_AUTH.expires);
  const sessionToken = one(QUERY_AUTH.securityToken);
  if (!algorithm || !credential || !requestDate || !signedHeaders || !signature) {
    throw new SigV4Error(
      "A presigned request requires 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-SignedHeaders' and 'X-Amz-Signature' query parameters",
    );
  }
  if (algorithm !== ALGORITHM) throw new SigV4Error(`Unsupported X-Amz-Algorithm; sign requests with ${ALGORITHM}`);
  let expiresSeconds: number | undefined;
  if (expires !== undefined) {
    if (!/^\d{1,6}$/.test(expires) || Number(expires) < 1 || Number(expires) > MAX_PRESIGN_EXPIRES_SECONDS) {
      throw new SigV4Error(`X-Amz-Expires must be a number of seconds from 1 to ${MAX_PRESIGN_EXPIRES_SECONDS}`);
    }
    expiresSeconds = Number(expires);
  }
  return {
    ...parseCredential(credential),
    signedHeaders: signedHeaders.split(';').map((h) => h.toLowerCase()),
    signature,
    requestDate,
    ...(expiresSeconds !== undefined ? { expiresSeconds } : {}),
    ...(sessionToken !== undefined ? { sessionToken } : {}),
  };
}

/** The canonical URI of a raw (as received, percent-encoded) path. @internal */
export function canonicalPath(rawPath: string): string {
  const segments: string[] = [];
  for (const segment of rawPath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && rawPath.endsWith('/') ? '/' : '';
  return `/${segments.map(uriEncode).join('/')}${trailing}`;
}

/** The decoded name/value pairs of a raw query string, in order (a bare name has value ''). */
export function queryPairs(rawQuery: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const part of rawQuery.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const name = uriDecode(eq < 0 ? part : part.slice(0, eq));
    if (!name) continue;
    pairs.push([name, eq < 0 ? '' : uriDecode(part.slice(eq + 1))]);
  }
  return pairs;
}

/** The canonical query string: encoded pairs sorted by name, then by value (`exclude`: a name left out). @internal */
export function canonicalQuery(rawQuery: string, exclude?: string): string {
  const encoded = queryPairs(rawQuery)
    .filter(([k]) => k !== exclude)
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const);
  encoded.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return encoded.map(([k, v]) => `${k}=${v}`).join('&');
}

function canonicalHeaders(headers: Map<string, string[]>, signed: readonly string[]): string {
  return signed
    .map((name) => {
      const values = headers.get(name);
      if (!values) throw new SigV4Error(`signed header '${name}' is not in the request`);
      return `${name}:${values.map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}\n`;
    })
    .join('');
}

/** The canonical request; for a presigned request pass `excludeQuery: 'X-Amz-Signature'`. @internal */
export function canonicalRequest(
  method: string,
  target: string,
  headers: Map<string, string[]>,
  signed: readonly string[],
  payloadHash: string,
  excludeQuery?: string,
): string {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  return [
    method.toUpperCase(),
    canonicalPath(path),
    canonicalQuery(query, excludeQuery),
    canonicalHeaders(headers, signed),
    signed.join(';'),
    payloadHash,
  ].join('\n');
}

function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate, scope, hex(canonical)].join('\n');
}

function signingKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), 'aws4_request');
}

/** `YYYYMMDDTHHMMSSZ` for an epoch-ms time. @internal */
export function amzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]|\.\d{3}/g, '');
}

function parseAmzDate(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, se] = m.map(Number) as [number, number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  return amzDate(t) === s ? t : undefined;
}

function single(headers: Map<string, string[]>, name: string): string | undefined {
  const v = headers.get(name);
  return v && v.length > 0 ? v[v.length - 1] : undefined;
}

/** Verifies a request's SigV4 signature (header or presigned form); throws SigV4Error (with a message for the caller) if it fails. */
export function verifySigV4(req: SignedRequest, opts: VerifyOptions): Verified {
  const service = opts.service ?? SERVICE;
  const headers = headerValues(req.headers);
  const q = req.target.indexOf('?');
  const rawQuery = q < 0 ? '' : req.target.slice(q + 1);
  const authorization = single(headers, 'authorization');
  const presigned = hasQueryAuth(rawQuery);
  if (authorization !== undefined && presigned)
    throw new SigV4Error(
      'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified',
    );
  if (authorization === undefined && !presigned) throw new SigV4Error('Missing Authentication Token');

  let auth: AuthorizationParts;
  let requestDate: string;
  let sessionToken: string | undefined;
  let expiresSeconds: number | undefined;
  if (presigned) {
    const query = parseQueryAuth(rawQuery);
    ({ requestDate, sessionToken, expiresSeconds } = query);
    auth = query;
  } else {
    auth = parseAuthorization(authorization!);
    const xAmzDate = single(headers, 'x-amz-date');
    if (xAmzDate !== undefined) {
      requestDate = xAmzDate;
    } else {
      const httpDate = single(headers, 'date');
      if (httpDate === undefined)
        throw new SigV4Error("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header");
      const t = Date.parse(httpDate);
      if (Number.isNaN(t)) throw new SigV4Error("the 'Date' header is not a valid HTTP date");
      requestDate = amzDate(t);
    }
    sessionToken = single(headers, 'x-amz-security-token');
  }

  if (auth.service !== service) throw new SigV4Error(`Credential should be scoped to correct service: '${service}'`);
  if (auth.region !== opts.region) throw new SigV4Error(`Credential should be scoped to a valid region, not '${auth.region}'`);

  const time = parseAmzDate(requestDate);
  if (time === undefined) throw new SigV4Error("X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'");
  const maxSkew = opts.maxSkewMs ?? MAX_SKEW_MS;
  if (time - opts.now > maxSkew)
    throw new SigV4Error(`Signature not yet current: ${requestDate} is more than 15 minutes after the server time ${amzDate(opts.now)}`);
  if (expiresSeconds !== undefined) {
    // A presigned request is good until its date plus X-Amz-Expires, but never longer than 15 minutes: a signature
    // more than 15 minutes from the clock is refused (docs/design.md "Local mode"), and API Gateway expires
    // presigned URLs early.
    const validMs = Math.min(expiresSeconds * 1000, maxSkew);
    if (opts.now > time + validMs)
      throw new SigV4Error(
        `Request has expired: ${requestDate} plus ${validMs / 1000} s (X-Amz-Expires, at most 15 minutes) is before the server time ${amzDate(opts.now)}`,
      );
  } else if (opts.now - time > maxSkew) {
    throw new SigV4Error(`Signature expired: ${requestDate} is more than 15 minutes before the server time ${amzDate(opts.now)}`);
  }
  if (auth.date !== requestDate.slice(0, 8)) throw new SigV4Error('Date in Credential scope does not match YYYYMMDD from the request date');

  const signed = auth.signedHeaders;
  if (!signed.includes('host')) throw new SigV4Error("'Host' must be a signed header");
  if (!presigned) {
    // In the header form the date and the session token travel in headers, so they must be signed; in the
    // query form they are query parameters, which the canonical query covers.
    const dateHeader = single(headers, 'x-amz-date') !== undefined ? 'x-amz-date' : 'date';
    if (!signed.includes(dateHeader)) throw new SigV4Error(`'${dateHeader}' must be a signed header`);
    if (sessionToken !== undefined && !signed.includes('x-amz-security-token'))
      throw new SigV4Error("'X-Amz-Security-Token' must be a signed header");
  }

  const bodyHash = hex(req.body);
  const declared = single(headers, 'x-amz-content-sha256');
  if (declared !== undefined && declared.toLowerCase() !== bodyHash)
    throw new SigV4Error('x-amz-content-sha256 does not match the request body');

  const secret = opts.secretFor(auth.accessKeyId);
  if (secret === undefined) throw new SigV4Error('The security token included in the request is invalid');

  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const canonical = canonicalRequest(
    req.method,
    req.target,
    headers,
    signed,
    declared ?? bodyHash,
    presigned ? QUERY_AUTH.signature : undefined,
  );
  const expected = createHmac('sha256', signingKey(secret, auth.date, auth.region, auth.service))
    .update(stringToSign(requestDate, scope, canonical), 'utf8')
    .digest();
  const wellFormed = /^[0-9a-f]{64}$/.test(auth.signature);
  // A malformed signature is still compared (against zeros), so timing says nothing either way.
  const given = wellFormed ? Buffer.from(auth.signature, 'hex') : Buffer.alloc(expected.length);
  const match = timingSafeEqual(expected, given) && wellFormed;
  if (!match) {
    throw new SigV4Error(
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    );
  }
  return { accessKeyId: auth.accessKeyId, ...(sessionToken !== undefined ? { sessionToken } : {}) };
}
