/**
 * Example: a payments microservice Lambda that calls a Vitesse-style API with a token from the broker.
 *
 * Environment:
 *   TOKEN_BROKER_URL     broker API base URL with stage, e.g. https://abc.execute-api.eu-west-1.amazonaws.com/prod
 *   VITESSE_API_URL      upstream API origin, e.g. the Vitesse Transaction API base URL for your environment
 *   VITESSE_CONNECTION   broker connection name (default vitesse-staging)
 *
 * The Lambda's execution role must be allowed by the connection's `callers` and by the broker API's resource
 * policy (execute-api:Invoke). Credentials come from the Lambda environment via the default AWS chain.
 *
 * Everything is created once per container, outside the handler: the token cache and the keep-alive
 * connections then survive across invocations, and a warm invocation does not call the broker at all.
 *
 * Bundling (esbuild or CDK NodejsFunction, ESM): undici is CommonJS, so give the bundle the banner
 * `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);`
 * (client/README.md, "Bundle size"); without it the Lambda fails at start with
 * `Dynamic require of "node:assert" is not supported`.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2 } from 'aws-lambda';
import { Agent, request } from 'undici';
import { TokenBrokerClient, TokenBrokerError } from '@token-broker/client';
import { tokenInterceptor } from '@token-broker/client/interceptor';

const VITESSE_API_URL = required('VITESSE_API_URL');
const CONNECTION = process.env.VITESSE_CONNECTION ?? 'vitesse-staging';

const broker = new TokenBrokerClient({ endpoint: required('TOKEN_BROKER_URL') });

// Requests to VITESSE_API_URL get `Authorization: Bearer <token>`; a 401 reports the token to the broker,
// fetches a fresh one and replays the request once (string/Buffer bodies are replayable).
const vitesse = new Agent({ keepAliveTimeout: 30_000 }).compose(
  tokenInterceptor(broker, { connection: CONNECTION, origin: VITESSE_API_URL, minTtl: 30 }),
);

interface PaymentRequest {
  orderId: string;
  amount: number;
  currency: string;
}

export async function handler(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyResultV2> {
  let input: PaymentRequest;
  try {
    input = parsePayment(event.body);
  } catch (e) {
    return json(400, { error: (e as Error).message });
  }

  try {
    const res = await request(new URL('/v1/paymentRequests', VITESSE_API_URL), {
      dispatcher: vitesse,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ reference: input.orderId, amount: input.amount, currency: input.currency }),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const payload = await res.body.text();
    if (res.statusCode >= 200 && res.statusCode < 300)
      return { statusCode: 201, headers: { 'content-type': 'application/json' }, body: payload };
    console.warn('payment request refused', { orderId: input.orderId, status: res.statusCode });
    return json(502, { error: 'payment provider refused the request', status: res.statusCode });
  } catch (e) {
    if (e instanceof TokenBrokerError) {
      // Typed broker failures: retryable ones (429/503) become 503 with the broker's Retry-After.
      // The error's message and fields never contain a token, so it is safe to log.
      console.error('token broker', { code: e.code, status: e.status, message: e.message });
      const retryable = e.code === 'unavailable' || e.code === 'rate_limited';
      return {
        statusCode: retryable ? 503 : 500,
        headers: {
          'content-type': 'application/json',
          ...(e.retryAfterSeconds !== undefined ? { 'retry-after': String(e.retryAfterSeconds) } : {}),
        },
        body: JSON.stringify({ error: retryable ? 'payment provider temporarily unavailable' : 'internal error' }),
      };
    }
    console.error('payment request failed', { orderId: input.orderId, error: (e as Error).name });
    return json(503, { error: 'payment provider unreachable' });
  }
}

function parsePayment(body: string | undefined): PaymentRequest {
  const value = JSON.parse(body ?? '{}') as Partial<PaymentRequest>;
  if (typeof value.orderId !== 'string' || typeof value.amount !== 'number' || typeof value.currency !== 'string') {
    throw new Error('expected {"orderId": string, "amount": number, "currency": string}');
  }
  return { orderId: value.orderId, amount: value.amount, currency: value.currency };
}

function json(statusCode: number, body: unknown): APIGatewayProxyResultV2 {
  return { statusCode, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}
