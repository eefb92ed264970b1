/**
 * The demo's upstream: a real OAuth 2.0 server (oidc-provider) on loopback with one confidential
 * client allowed the client_credentials grant for scope `api`. Through resource indicators it issues
 * JWT access tokens (like Vitesse's) with `expires_in`. Everything is in memory and in process.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const DEMO_SCOPE = 'api';
const DEMO_RESOURCE = 'urn:token-broker:demo-api';

export interface DemoUpstreamOptions {
  host?: string;
  port?: number;
  clientId?: string;
  clientSecret?: string;
  clientAuthentication?: 'client_secret_post' | 'client_secret_basic';
  accessTokenTtlSeconds?: number;
}

export interface DemoUpstream {
  issuer: string;
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

type Stored = Map<string, { payload: Record<string, unknown>; expiresAt?: number }>;

/**
 * oidc-provider's storage interface, in memory (its own in-memory adapter warns on every start). Each
 * provider gets its own store (memoryAdapter below), dropped with it.
 */
class MemoryAdapter {
  constructor(
    private readonly model: string,
    private readonly store: Stored,
  ) {}

  private key(id: string): string {
    return `${this.model}:${id}`;
  }

  async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
    this.store.set(this.key(id), { payload, ...(expiresIn ? { expiresAt: Date.now() + expiresIn * 1000 } : {}) });
  }

  async find(id: string): Promise<Record<string, unknown> | undefined> {
    const entry = this.store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    for (const [k, v] of this.store) if (k.startsWith(`${this.model}:`) && v.payload.uid === uid) return v.payload;
    return undefined;
  }

  async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
    for (const [k, v] of this.store) if (k.startsWith(`${this.model}:`) && v.payload.userCode === userCode) return v.payload;
    return undefined;
  }

  async consume(id: string): Promise<void> {
    const entry = this.store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id: string): Promise<void> {
    this.store.delete(this.key(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    for (const [k, v] of this.store) if (v.payload.grantId === grantId) this.store.delete(k);
  }
}

/** Imports oidc-provider without its "unsupported runtime" notice on Node 20 (local mode runs there too). */
async function importProvider() {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
    warn(...args);
  };
  try {
    return (await import('oidc-provider')).default;
  } finally {
    console.warn = warn;
  }
}

export async function startDemoUpstream(options: DemoUpstreamOptions = {}): Promise<DemoUpstream> {
  const Provider = await importProvider();
  const host = options.host ?? '127.0.0.1';
  const clientId = options.clientId ?? 'demo-client';
  const clientSecret = options.clientSecret ?? randomBytes(24).toString('hex');
  const ttl = options.accessTokenTtlSeconds ?? 900;

  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const provider = new Provider(issuer, {
    adapter: memoryAdapter(),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        scope: DEMO_SCOPE,
        token_endpoint_auth_method: options.clientAuthentication ?? 'client_secret_post',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'ES256', kid: 'demo' }] },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: [DEMO_SCOPE],
    ttl: { ClientCredentials: ttl },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => DEMO_RESOURCE,
        getResourceServerInfo: () => ({
          scope: DEMO_SCOPE,
          audience: DEMO_RESOURCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ttl,
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
  server.on('request', provider.callback());

  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    clientId,
    clientSecret,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** An adapter class bound to one store, as oidc-provider wants a constructor taking the model name. */
function memoryAdapter(): new (model: string) => MemoryAdapter {
  const store: Stored = new Map();
  return class extends MemoryAdapter {
    constructor(model: string) {
      super(model, store);
    }
  };
}
