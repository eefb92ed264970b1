/**
 * The local gateway's SigV4 verification against two independent signers (aws4 and @smithy/signature-v4),
 * plus canonicalisation edge cases pinned to exact strings.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import aws4 from 'aws4';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  amzDate,
  canonicalPath,
  canonicalQuery,
  canonicalRequest,
  headerValues,
  parseAuthorization,
  type SignedRequest,
  SigV4Error,
  verifySigV4,
} from '../../functions/local/sigv4.js';

const AKID = 'AKIDUNITTEST';
const SECRET = 'unit-test-secret-access-key';
const HOST = '127.0.0.1:8787';
const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

interface Aws4Input {
  method?: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  secret?: string;
  region?: string;
  service?: string;
  at?: number;
  sessionToken?: string;
}

/** Signs with aws4 and returns the request as the gateway would see it. */
function aws4Signed(i: Aws4Input): SignedRequest {
  const headers: Record<string, string> = { 'X-Amz-Date': amzDate(i.at ?? T0), ...(i.headers ?? {}) };
  const signed = aws4.sign(
    {
      host: HOST,
      method: i.method ?? 'GET',
      path: i.path,
      headers,
      ...(i.body !== undefined ? { body: i.body } : {}),
      service: i.service ?? 'execute-api',
      region: i.region ?? 'us-east-1',
    },
    { accessKeyId: AKID, secretAccessKey: i.secret ?? SECRET, ...(i.sessionToken ? { sessionToken: i.sessionToken } : {}) },
  );
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(signed.headers ?? {})) out[k] = String(v);
  return { method: signed.method ?? 'GET', target: signed.path!, headers: out, body: Buffer.from(i.body ?? '') };
}

const opts = (over: Partial<Parameters<typeof verifySigV4>[1]> = {}) => ({
  region: 'us-east-1',
  now: T0,
  secretFor: (k: string) => (k === AKID ? SECRET : undefined),
  ...over,
});

function refusal(req: SignedRequest, o = opts()): string {
  try {
    verifySigV4(req, o);
  } catch (e) {
    expect(e).toBeInstanceOf(SigV4Error);
    return (e as Error).message;
  }
  throw new Error('expected the request to be refused');
}

describe('canonicalisation', () => {
  it('sorts query pairs by name, then by value, and gives a bare name an empty value', () => {
    expect(canonicalQuery('min_ttl=60')).toBe('min_ttl=60');
    expect(canonicalQuery('b=2&a=1&a=0&c')).toBe('a=0&a=1&b=2&c=');
    expect(canonicalQuery('a=z&a=b&a=m')).toBe('a=b&a=m&a=z');
    // Sorting is by name first: "a" < "a-b" although "a=" > "a-b=" as strings.
    expect(canonicalQuery('a-b=1&a=2')).toBe('a=2&a-b=1');
    expect(canonicalQuery('')).toBe('');
    expect(canonicalQuery('&&x=1&')).toBe('x=1');
  });

  it('re-encodes query values with RFC 3986 (space %20, + kept literal, reserved marks encoded)', () => {
    expect(canonicalQuery('x=a%20b')).toBe('x=a%20b');
    expect(canonicalQuery('x=a%2Bb')).toBe('x=a%2Bb');
    expect(canonicalQuery('x=a+b')).toBe('x=a%2Bb');
    expect(canonicalQuery("x=!'()*")).toBe('x=%21%27%28%29%2A');
    expect(canonicalQuery('x=%7e~')).toBe('x=~~');
    expect(canonicalQuery('%E2%82%AC=1')).toBe('%E2%82%AC=1');
    expect(canonicalQuery('bad=%zz')).toBe('bad=%25zz');
  });

  it('normalises the path and URI-encodes each segment again (non-S3 rule)', () => {
    expect(canonicalPath('/tokens/demo')).toBe('/tokens/demo');
    expect(canonicalPath('/tokens/a%20b')).toBe('/tokens/a%2520b');
    expect(canonicalPath('/tokens/a%2Fb/invalidate')).toBe('/tokens/a%252Fb/invalidate');
    expect(canonicalPath('/a/./b/../c//d/')).toBe('/a/c/d/');
    expect(canonicalPath('/')).toBe('/');
    expect(canonicalPath('')).toBe('/');
    expect(canonicalPath("/x/it's")).toBe('/x/it%27s');
  });

  it('hashes an empty body as the sha256 of nothing, and canonicalises header values', () => {
    const headers = headerValues({ Host: HOST, 'X-Amz-Date': '20261123T120000Z', 'X-Multi': ['  a   b ', 'c'] });
    const canonical = canonicalRequest(
      'get',
      '/tokens/demo?b=1&a=2',
      headers,
      ['host', 'x-amz-date', 'x-multi'],
      createHash('sha256').update('').digest('hex'),
    );
    expect(canonical).toBe(
      [
        'GET',
        '/tokens/demo',
        'a=2&b=1',
        `host:${HOST}`,
        'x-amz-date:20261123T120000Z',
        'x-multi:a b,c',
        '',
        'host;x-amz-date;x-multi',
        EMPTY_SHA256,
      ].join('\n'),
    );
  });

  it('parses the Authorization header', () => {
    expect(
      parseAuthorization(
        'AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/execute-api/aws4_request, SignedHeaders=host;X-Amz-Date, Signature=abc',
      ),
    ).toEqual({
      accessKeyId: 'AKID',
      date: '20261123',
      region: 'us-east-1',
      service: 'execute-api',
      signedHeaders: ['host', 'x-amz-date'],
      signature: 'abc',
    });
    expect(() => parseAuthorization('Bearer abc')).toThrow(SigV4Error);
    expect(() =>
      parseAuthorization('AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/execute-api, SignedHeaders=host, Signature=a'),
    ).toThrow(/Credential/);
    expect(() => parseAuthorization('AWS4-HMAC-SHA256 SignedHeaders=host, Signature=a')).toThrow(/requires/);
  });
});

describe('verifySigV4 against aws4', () => {
  it('accepts a GET with a query', () => {
    expect(verifySigV4(aws4Signed({ path: '/tokens/demo?min_ttl=60' }), opts())).toEqual({ accessKeyId: AKID });
  });

  it('accepts unsorted, repeated and bare query names, and an encoded path', () => {
    expect(verifySigV4(aws4Signed({ path: '/tokens/demo?b=2&a=1&a=0&flag=' }), opts()).accessKeyId).toBe(AKID);
    expect(verifySigV4(aws4Signed({ path: '/tokens/a%20b?x=%2B%20' }), opts()).accessKeyId).toBe(AKID);
  });

  it('accepts a POST body and refuses it once the body changes', () => {
    const req = aws4Signed({
      method: 'POST',
      path: '/tokens/demo/invalidate',
      body: '{"access_token":"abc"}',
      headers: { 'content-type': 'application/json' },
    });
    expect(verifySigV4(req, opts()).accessKeyId).toBe(AKID);
    expect(refusal({ ...req, body: Buffer.from('{"access_token":"abd"}') })).toMatch(/signature we calculated does not match/);
  });

  it('uses x-amz-content-sha256 when present and refuses one that does not match the body', () => {
    const body = '{"access_token":"abc"}';
    const sha = createHash('sha256').update(body).digest('hex');
    expect(
      verifySigV4(aws4Signed({ method: 'POST', path: '/p', body, headers: { 'x-amz-content-sha256': sha } }), opts()).accessKeyId,
    ).toBe(AKID);
    expect(refusal(aws4Signed({ method: 'POST', path: '/p', body, headers: { 'x-amz-content-sha256': EMPTY_SHA256 } }))).toMatch(
      /x-amz-content-sha256/,
    );
  });

  it('refuses altered path, altered query, wrong secret, unknown key, wrong region and wrong service', () => {
    const req = aws4Signed({ path: '/tokens/demo?min_ttl=60' });
    expect(refusal({ ...req, target: '/tokens/other?min_ttl=60' })).toMatch(/does not match/);
    expect(refusal({ ...req, target: '/tokens/demo?min_ttl=61' })).toMatch(/does not match/);
    expect(refusal({ ...req, method: 'POST' })).toMatch(/does not match/);
    expect(refusal(aws4Signed({ path: '/tokens/demo', secret: 'not-the-secret' }))).toMatch(/does not match/);
    expect(refusal(req, opts({ secretFor: () => undefined }))).toBe('The security token included in the request is invalid');
    expect(refusal(aws4Signed({ path: '/tokens/demo', region: 'eu-west-1' }))).toMatch(/valid region, not 'eu-west-1'/);
    expect(refusal(aws4Signed({ path: '/tokens/demo', service: 'execute-apis' }))).toMatch(/correct service: 'execute-api'/);
  });

  it('never reveals the expected signature', () => {
    const good = aws4Signed({ path: '/tokens/demo' });
    const expected = /Signature=([0-9a-f]{64})/.exec(String(good.headers.Authorization))![1]!;
    const message = refusal(aws4Signed({ path: '/tokens/demo', secret: 'wrong-secret' }));
    expect(message).not.toContain(expected);
  });

  it('refuses a date more than 15 minutes from the server clock, either way', () => {
    const req = aws4Signed({ path: '/tokens/demo', at: T0 });
    expect(verifySigV4(req, opts({ now: T0 + 14 * 60_000 })).accessKeyId).toBe(AKID);
    expect(verifySigV4(req, opts({ now: T0 - 14 * 60_000 })).accessKeyId).toBe(AKID);
    expect(refusal(req, opts({ now: T0 + 20 * 60_000 }))).toMatch(/^Signature expired/);
    expect(refusal(req, opts({ now: T0 - 16 * 60_000 }))).toMatch(/^Signature not yet current/);
  });

  it('accepts a Date header in place of X-Amz-Date when it is signed', () => {
    const headers = { Host: HOST, Date: new Date(T0).toUTCString() };
    const signed = aws4.sign(
      { host: HOST, path: '/tokens/demo', headers, service: 'execute-api', region: 'us-east-1', doNotModifyHeaders: true },
      { accessKeyId: AKID, secretAccessKey: SECRET },
    );
    const req = { method: 'GET', target: signed.path!, headers: signed.headers as Record<string, string>, body: Buffer.alloc(0) };
    expect(String(req.headers.Authorization)).toContain('SignedHeaders=date;host');
    expect(verifySigV4(req, opts()).accessKeyId).toBe(AKID);
  });

  it('refuses a credential scope dated another day than the request, and an unsigned Date header', () => {
    const req = aws4Signed({ path: '/tokens/demo' });
    const auth = String(req.headers.Authorization).replace(/\/\d{8}\/us-east-1\//, '/20261122/us-east-1/');
    expect(auth).toContain('/20261122/');
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: auth } })).toBe(
      'Date in Credential scope does not match YYYYMMDD from the request date',
    );
    const headers = { Host: HOST, Date: new Date(T0).toUTCString() };
    const signed = aws4.sign(
      { host: HOST, path: '/tokens/demo', headers, service: 'execute-api', region: 'us-east-1', doNotModifyHeaders: true },
      { accessKeyId: AKID, secretAccessKey: SECRET },
    );
    const dateless = String(signed.headers!.Authorization).replace('SignedHeaders=date;host', 'SignedHeaders=host');
    const unsignedDate = {
      method: 'GET',
      target: signed.path!,
      headers: { ...(signed.headers as Record<string, string>), Authorization: dateless },
      body: Buffer.alloc(0),
    };
    expect(refusal(unsignedDate)).toBe("'date' must be a signed header");
  });

  it('requires host, the date and a session token to be signed', () => {
    const req = aws4Signed({ path: '/tokens/demo', sessionToken: 'session-token' });
    expect(verifySigV4(req, opts())).toEqual({ accessKeyId: AKID, sessionToken: 'session-token' });
    const auth = String(req.headers.Authorization);
    const without = (name: string) =>
      auth.replace(/SignedHeaders=[^,]+/, (m) => m.replace(new RegExp(`(^SignedHeaders=|;)${name}(?=;|$)`), '$1').replace('=;', '='));
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: without('host') } })).toBe("'Host' must be a signed header");
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: without('x-amz-date') } })).toBe(
      "'x-amz-date' must be a signed header",
    );
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: without('x-amz-security-token') } })).toBe(
      "'X-Amz-Security-Token' must be a signed header",
    );
  });

  it('refuses a missing or malformed signature', () => {
    const req = aws4Signed({ path: '/tokens/demo' });
    const { Authorization: _auth, ...unsigned } = req.headers as Record<string, string>;
    expect(refusal({ ...req, headers: unsigned })).toBe('Missing Authentication Token');
    const auth = String(req.headers.Authorization);
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: auth.replace(/Signature=\w+/, 'Signature=zz') } })).toMatch(
      /does not match/,
    );
    expect(
      refusal({ ...req, headers: { ...req.headers, Authorization: auth.replace(/Signature=\w+/, `Signature=${'0'.repeat(64)}`) } }),
    ).toMatch(/does not match/);
  });
});

describe('verifySigV4 against @smithy/signature-v4', () => {
  const signer = (secretAccessKey = SECRET, sessionToken?: string) =>
    new SignatureV4({
      credentials: { accessKeyId: AKID, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) },
      region: 'us-east-1',
      service: 'execute-api',
      sha256: Sha256,
    });

  async function smithySigned(
    path: string,
    query: Record<string, string | string[]>,
    body?: string,
    sessionToken?: string,
  ): Promise<SignedRequest> {
    const signed = await signer(SECRET, sessionToken).sign(
      {
        method: body ? 'POST' : 'GET',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 8787,
        path,
        query,
        headers: { host: HOST },
        ...(body ? { body } : {}),
      },
      { signingDate: new Date(T0) },
    );
    // The wire form of the query, as an HTTP client would serialise it (unsorted on purpose).
    const q = Object.entries(query)
      .reverse()
      .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${encodeURIComponent(k)}=${encodeURIComponent(x)}`))
      .join('&');
    return { method: signed.method, target: q ? `${path}?${q}` : path, headers: signed.headers, body: Buffer.from(body ?? '') };
  }

  it('accepts its signatures, repeated query values and a session token included', async () => {
    expect(verifySigV4(await smithySigned('/tokens/demo', { min_ttl: '60' }), opts()).accessKeyId).toBe(AKID);
    expect(verifySigV4(await smithySigned('/tokens/a%20b', { z: '1', a: ['y', 'x'], e: 'é &' }), opts()).accessKeyId).toBe(AKID);
    expect(verifySigV4(await smithySigned('/tokens/demo/invalidate', {}, '{"access_token":"t"}', 'tok'), opts())).toEqual({
      accessKeyId: AKID,
      sessionToken: 'tok',
    });
  });

  it('refuses a request whose query was changed after signing', async () => {
    const req = await smithySigned('/tokens/demo', { min_ttl: '60' });
    expect(refusal({ ...req, target: '/tokens/demo?min_ttl=60&extra=1' })).toMatch(/does not match/);
  });
});

describe('verifySigV4: presigned requests (signature in the query string)', () => {
  /** Presigns with aws4 (`signQuery`) and returns the request as the gateway would see it. */
  function aws4Presigned(i: Aws4Input & { expires?: number }): SignedRequest {
    const [path, query = ''] = i.path.split('?') as [string, string?];
    const params = new URLSearchParams(query);
    params.set('X-Amz-Date', amzDate(i.at ?? T0));
    if (i.expires !== undefined) params.set('X-Amz-Expires', String(i.expires));
    const signed = aws4.sign(
      {
        host: HOST,
        method: i.method ?? 'GET',
        path: `${path}?${params.toString()}`,
        headers: i.headers ?? {},
        ...(i.body !== undefined ? { body: i.body } : {}),
        service: i.service ?? 'execute-api',
        region: i.region ?? 'us-east-1',
        signQuery: true,
      },
      { accessKeyId: AKID, secretAccessKey: i.secret ?? SECRET, ...(i.sessionToken ? { sessionToken: i.sessionToken } : {}) },
    );
    const headers: Record<string, string> = { Host: HOST };
    for (const [k, v] of Object.entries(signed.headers ?? {})) headers[k] = String(v);
    return { method: signed.method ?? 'GET', target: signed.path!, headers, body: Buffer.from(i.body ?? '') };
  }

  const withQuery = (req: SignedRequest, change: (q: URLSearchParams) => void): SignedRequest => {
    const [path, query = ''] = req.target.split('?') as [string, string?];
    const q = new URLSearchParams(query);
    change(q);
    return { ...req, target: `${path}?${q.toString()}` };
  };

  it('accepts an aws4 presigned GET (X-Amz-Signature in the query, no Authorization header) and a session token in the query', () => {
    const req = aws4Presigned({ path: '/tokens/demo?min_ttl=60' });
    expect(req.target).toMatch(/[?&]X-Amz-Signature=[0-9a-f]{64}/);
    expect(Object.keys(req.headers).map((h) => h.toLowerCase())).not.toContain('authorization');
    expect(verifySigV4(req, opts())).toEqual({ accessKeyId: AKID });
    expect(verifySigV4(aws4Presigned({ path: '/tokens/demo', sessionToken: 'session-q' }), opts())).toEqual({
      accessKeyId: AKID,
      sessionToken: 'session-q',
    });
  });

  it('accepts an @smithy/signature-v4 presigned request, with X-Amz-Expires', async () => {
    const signer = new SignatureV4({
      credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
      region: 'us-east-1',
      service: 'execute-api',
      sha256: Sha256,
    });
    const presigned = await signer.presign(
      {
        method: 'GET',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 8787,
        path: '/tokens/demo',
        query: { min_ttl: '60' },
        headers: { host: HOST },
      },
      { signingDate: new Date(T0), expiresIn: 300 },
    );
    const q = Object.entries(presigned.query ?? {})
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    const req = { method: 'GET', target: `/tokens/demo?${q}`, headers: presigned.headers, body: Buffer.alloc(0) };
    expect(q).toContain('X-Amz-Expires=300');
    expect(verifySigV4(req, opts({ now: T0 + 299_000 })).accessKeyId).toBe(AKID);
    expect(refusal(req, opts({ now: T0 + 301_000 }))).toMatch(/^Request has expired/);
  });

  it('covers the query, the path, the body and the signed headers like the header form', () => {
    const req = aws4Presigned({ path: '/tokens/demo?min_ttl=60' });
    expect(refusal(withQuery(req, (q) => q.set('min_ttl', '61')))).toMatch(/does not match/);
    expect(refusal(withQuery(req, (q) => q.append('extra', '1')))).toMatch(/does not match/);
    expect(refusal({ ...req, target: req.target.replace('/tokens/demo', '/tokens/other') })).toMatch(/does not match/);
    expect(refusal(aws4Presigned({ path: '/tokens/demo', secret: 'not-the-secret' }))).toMatch(/does not match/);
    const post = aws4Presigned({ method: 'POST', path: '/tokens/demo/invalidate', body: '{"access_token":"abc"}' });
    expect(verifySigV4(post, opts()).accessKeyId).toBe(AKID);
    expect(refusal({ ...post, body: Buffer.from('{"access_token":"abd"}') })).toMatch(/does not match/);
  });

  it('applies the 15-minute rule without X-Amz-Expires, and X-Amz-Expires when given, never beyond 15 minutes', () => {
    const plain = aws4Presigned({ path: '/tokens/demo' });
    expect(verifySigV4(plain, opts({ now: T0 + 14 * 60_000 })).accessKeyId).toBe(AKID);
    expect(refusal(plain, opts({ now: T0 + 16 * 60_000 }))).toMatch(/^Signature expired/);
    expect(refusal(plain, opts({ now: T0 - 16 * 60_000 }))).toMatch(/^Signature not yet current/);
    const minute = aws4Presigned({ path: '/tokens/demo', expires: 60 });
    expect(verifySigV4(minute, opts({ now: T0 + 59_000 })).accessKeyId).toBe(AKID);
    expect(refusal(minute, opts({ now: T0 + 61_000 }))).toMatch(/^Request has expired/);
    // A leaked URL that asks for an hour (or a week) is still dead after 15 minutes.
    const hour = aws4Presigned({ path: '/tokens/demo', expires: 3600 });
    expect(verifySigV4(hour, opts({ now: T0 + 14 * 60_000 })).accessKeyId).toBe(AKID);
    expect(refusal(hour, opts({ now: T0 + 16 * 60_000 }))).toMatch(/^Request has expired/);
    expect(refusal(aws4Presigned({ path: '/tokens/demo', expires: 604_801 }))).toMatch(/X-Amz-Expires/);
    expect(refusal(aws4Presigned({ path: '/tokens/demo', expires: 0 }))).toMatch(/X-Amz-Expires/);
  });

  it('refuses incomplete or repeated signing parameters, another algorithm, and both forms in one request', () => {
    const req = aws4Presigned({ path: '/tokens/demo' });
    expect(refusal(withQuery(req, (q) => q.delete('X-Amz-Credential')))).toMatch(/requires 'X-Amz-Algorithm'/);
    expect(refusal(withQuery(req, (q) => q.delete('X-Amz-SignedHeaders')))).toMatch(/requires/);
    expect(refusal(withQuery(req, (q) => q.append('X-Amz-Signature', '0'.repeat(64))))).toBe("'X-Amz-Signature' must be given once");
    expect(refusal(withQuery(req, (q) => q.set('X-Amz-Algorithm', 'AWS4-HMAC-SHA1')))).toMatch(/Unsupported X-Amz-Algorithm/);
    expect(refusal(withQuery(req, (q) => q.set('X-Amz-SignedHeaders', 'x-amz-date')))).toBe("'Host' must be a signed header");
    const headerSigned = aws4Signed({ path: '/tokens/demo' });
    expect(refusal({ ...req, headers: { ...req.headers, Authorization: String(headerSigned.headers.Authorization) } })).toMatch(
      /^Only one auth mechanism allowed/,
    );
  });
});
