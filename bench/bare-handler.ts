/**
 * The cold-start baseline: the least a Lambda that reads one DynamoDB item per request can be. It creates
 * a DynamoDBClient at init and does one consistent GetItem per invocation.
 */
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { BROKER_ENV } from '../functions/contract/env.js';

const client = new DynamoDBClient({ maxAttempts: 3 });
const table = process.env[BROKER_ENV.table] ?? 'token-broker';

export const handler = async (): Promise<{ statusCode: number; body: string }> => {
  const out = await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: 'tok#main' } }, ConsistentRead: true }));
  return { statusCode: out.Item ? 200 : 404, body: '' };
};
