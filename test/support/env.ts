/**
 * A test world: a real DynamoDB-API server (dynalite, in process), a fake IdP that logs what it receives,
 * secrets in memory, and any number of independent broker instances (each its own DynamoDB client,
 * sealer, secret cache and memory: what separate Lambda containers have).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CachedSecretSource } from '../../functions/adapters/credentials.js';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { rawAesSealer } from '../../functions/adapters/sealer.js';
import { randomIds, systemTimers } from '../../functions/adapters/system.js';
import { HttpUpstream } from '../../functions/adapters/upstream-http.js';
import { type BrokerOptions, TokenBroker } from '../../functions/core/broker.js';
import { type ConnectionInput, parseConfig } from '../../functions/core/config.js';
import type { Clock, ClientCredentials } from '../../functions/core/ports.js';
import { ensureTable, localDynamoClient, startDynalite, type EmbeddedDynamo } from '../../functions/local/dynamodb.js';
import { type FakeIdp, type Responder, startIdp, issue } from '../../testkit/idp.js';

export const CALLER = 'arn:aws:sts::111122223333:assumed-role/payments-api/session-1';
export const ALLOWED = ['arn:aws:iam::111122223333:role/payments-*'];

interface LogLine {
  message: string;
  fields?: Record<string, unknown>;
}

class SecretsMap {
  private readonly values = new Map<string, { value: ClientCredentials; version: string }>();
  reads = 0;
  set(name: string, value: ClientCredentials): void {
    this.values.set(name, { value, version: randomUUID() });
  }
  fetch = async (name: string) => {
    this.reads++;
    const v = this.values.get(name);
    if (!v) throw Object.assign(new Error('ResourceNotFoundException'), { name: 'ResourceNotFoundException' });
    return { value: JSON.stringify(v.value), version: v.version };
  };
}

export interface World {
  dynamo: EmbeddedDynamo;
  idp: FakeIdp;
  table: string;
  secrets: SecretsMap;
  sealKey: Uint8Array;
  logs: LogLine[];
  close(): Promise<void>;
}

export async function startWorld(respond: Responder = issue()): Promise<World> {
  const dynamo = await startDynalite();
  const idp = await startIdp(respond);
  const table = `broker-${randomUUID().slice(0, 8)}`;
  const admin = localDynamoClient(dynamo.endpoint);
  await ensureTable(admin, table);
  admin.destroy();
  const secrets = new SecretsMap();
  secrets.set('sec/main', { client_id: 'broker-client', client_secret: 'CANARY-SECRET-0001' });
  const clients: DynamoDBClient[] = [];
  const world: World & { clients: DynamoDBClient[] } = {
    dynamo,
    idp,
    table,
    secrets,
    sealKey: randomBytes(32),
    logs: [],
    clients,
    async close() {
      for (const c of clients) c.destroy();
      await idp.close();
      await dynamo.close();
    },
  };
  return world;
}

export function connections(idp: FakeIdp, overrides: Record<string, Partial<ConnectionInput>> = { main: {} }) {
  const doc: Record<string, ConnectionInput> = {};
  for (const [name, o] of Object.entries(overrides)) {
    doc[name] = { tokenUrl: idp.url, grantType: 'client_credentials', secret: 'sec/main', callers: ALLOWED, ...o } as ConnectionInput;
  }
  return parseConfig({ connections: doc });
}

export interface InstanceOptions {
  clock: Clock;
  config: ReturnType<typeof connections>;
  options?: Partial<BrokerOptions>;
  /** Wraps the DynamoDB client (fault injection, spies). */
  onClient?: (client: DynamoDBClient) => void;
  maxAttempts?: number;
}

/** One broker "container": its own clients, caches and memory over the shared store. */
export function instance(world: World, o: InstanceOptions): { broker: TokenBroker; client: DynamoDBClient } {
  const client = localDynamoClient(world.dynamo.endpoint, 'us-east-1', o.maxAttempts ?? 3);
  (world as World & { clients: DynamoDBClient[] }).clients.push(client);
  o.onClient?.(client);
  const store = new DynamoTokenStore(client, world.table);
  const broker = new TokenBroker({
    config: o.config,
    store,
    ledger: store,
    secrets: new CachedSecretSource(world.secrets.fetch, o.clock, { ttlMs: 60_000, graceMs: 600_000 }),
    sealer: rawAesSealer(world.sealKey),
    upstream: new HttpUpstream({ clock: o.clock }),
    clock: o.clock,
    ids: randomIds,
    timers: systemTimers,
    log: { warn: (message, fields) => world.logs.push({ message, ...(fields ? { fields } : {}) }) },
    options: { ...o.options },
  });
  return { broker, client };
}
