/**
 * Brokers over in-memory fakes (store, ledger, sealer, secrets, upstream) and one FakeClock: the core's
 * branches in milliseconds. Several brokers over one `FastWorld` are separate containers sharing a store.
 */
import { randomIds, systemTimers } from '../../functions/adapters/system.js';
import { TokenBroker, type BrokerOptions } from '../../functions/core/broker.js';
import { type ConnectionInput, parseConfig } from '../../functions/core/config.js';
import type { ClientCredentials, Sealer, SecretSource, SecretValue, Token, Upstream, UpstreamToken } from '../../functions/core/ports.js';
import { UpstreamError, type UpstreamFailure } from '../../functions/core/upstream-errors.js';
import { MemoryLedgerStore } from '../unit/fakes.js';
import { FakeClock } from './clock.js';
import { MemoryTokenStore } from './memory-store.js';

export const FAST_CALLER = 'arn:aws:sts::111122223333:assumed-role/payments-api/session-1';
const ALLOWED = ['arn:aws:iam::111122223333:role/payments-*'];

/** Seals as JSON bound to the connection: opening it for another connection, or opening garbage, throws. */
export class MemorySealer implements Sealer {
  async seal(connection: string, token: Token): Promise<Uint8Array> {
    return new TextEncoder().encode(JSON.stringify({ connection, token }));
  }
  async open(connection: string, sealed: Uint8Array): Promise<Token> {
    const { connection: sealedFor, token } = JSON.parse(new TextDecoder().decode(sealed)) as { connection: string; token: Token };
    if (sealedFor !== connection) throw new Error('sealed for another connection');
    return token;
  }
}

class MemorySecrets implements SecretSource {
  private readonly values = new Map<string, SecretValue>();
  reads = 0;
  private versions = 0;
  set(name: string, credentials: ClientCredentials): void {
    this.values.set(name, { credentials, version: `v${++this.versions}` });
  }
  async get(name: string): Promise<SecretValue> {
    this.reads++;
    const v = this.values.get(name);
    if (!v) throw new Error(`no secret ${name}`);
    return v;
  }
}

/** What the fake upstream does with its n-th request (0-based): a token, or a failure. */
type Answer = { expiresIn: number } | UpstreamFailure;

class ScriptedUpstream implements Upstream {
  readonly requests: { connection: string; clientSecret: string; at: number }[] = [];
  constructor(
    private readonly clock: FakeClock,
    public answer: (n: number) => Answer = () => ({ expiresIn: 300 }),
  ) {}
  async requestToken(connection: { name: string }, credentials: ClientCredentials): Promise<UpstreamToken> {
    const n = this.requests.length;
    this.requests.push({ connection: connection.name, clientSecret: credentials.client_secret, at: this.clock.now() });
    const a = this.answer(n);
    if ('kind' in a) throw new UpstreamError(a);
    return { accessToken: `token-${n}`, tokenType: 'Bearer', expiresInSeconds: a.expiresIn };
  }
}

export interface FastWorld {
  clock: FakeClock;
  store: MemoryTokenStore;
  ledger: MemoryLedgerStore;
  secrets: MemorySecrets;
  upstream: ScriptedUpstream;
  config: ReturnType<typeof parseConfig>;
  /** A new container over the shared store (own memory, own in-process single flight). */
  broker(options?: Partial<BrokerOptions>): TokenBroker;
}

export function fastWorld(connections: Record<string, Partial<ConnectionInput>> = { main: {} }): FastWorld {
  const clock = new FakeClock();
  const secrets = new MemorySecrets();
  secrets.set('sec/main', { client_id: 'broker-client', client_secret: 'CANARY-SECRET-0001' });
  const doc: Record<string, ConnectionInput> = {};
  for (const [name, o] of Object.entries(connections)) {
    doc[name] = {
      tokenUrl: 'https://idp.example/token',
      grantType: 'client_credentials',
      secret: 'sec/main',
      callers: ALLOWED,
      ...o,
    } as ConnectionInput;
  }
  const world: Omit<FastWorld, 'broker'> = {
    clock,
    store: new MemoryTokenStore(),
    ledger: new MemoryLedgerStore(),
    secrets,
    upstream: new ScriptedUpstream(clock),
    config: parseConfig({ connections: doc }),
  };
  return {
    ...world,
    broker: (options = {}) => new TokenBroker({ ...world, sealer: new MemorySealer(), ids: randomIds, timers: systemTimers, options }),
  };
}
