/**
 * DynamoDB for local mode and tests: dynalite in process (in memory), or an external DynamoDB-API
 * endpoint shared by several broker processes. Creates the broker's table when missing, tolerating
 * another process creating it at the same moment.
 */
import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceInUseException,
  ResourceNotFoundException,
} from '@aws-sdk/client-dynamodb';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import dynalite from 'dynalite';

export interface EmbeddedDynamo {
  endpoint: string;
  close(): Promise<void>;
}

/** Starts dynalite on a free loopback port, in memory. */
export async function startDynalite(): Promise<EmbeddedDynamo> {
  const server: Server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A DynamoDB client for a local endpoint (dummy credentials: dynalite does not check them). */
export function localDynamoClient(endpoint: string, region = 'us-east-1', maxAttempts = 3): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region,
    maxAttempts,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
}

/** Creates the broker table (partition key `pk`) unless it exists, then waits until it is ACTIVE. */
export async function ensureTable(client: DynamoDBClient, table: string): Promise<void> {
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  } catch (e) {
    if (!(e instanceof ResourceInUseException)) throw e; // someone else created it: fine
  }
  for (let i = 0; i < 100; i++) {
    try {
      const out = await client.send(new DescribeTableCommand({ TableName: table }));
      if (out.Table?.TableStatus === 'ACTIVE') return;
    } catch (e) {
      if (!(e instanceof ResourceNotFoundException)) throw e;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`table ${table} did not become ACTIVE`);
}
