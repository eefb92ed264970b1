/**
 * What the CLI operates on: the connection config the brokers run with, their DynamoDB table, who the
 * operator is and where audit lines go besides stderr. Local mode reads the file `npm start` reads; a
 * stage is found from its stack (functions/ops/aws-target.ts, loaded only then).
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoTokenStore } from '../adapters/dynamodb-store.js';
import { type BrokerConfig, ConfigError, type Connection } from '../core/config.js';
import { loadLocalConfig } from '../local/config.js';
import { localDynamoClient } from '../local/dynamodb.js';
import type { AuditSink } from './audit.js';
import { OpsError, describeAwsError } from './errors.js';
import type { TargetFlags } from './flags.js';

export interface Target {
  /** The audit line's `target`: the stage name, or `local`. */
  name: string;
  /** Where the table is, for messages: `table X at http://...` or `table X (stack TokenBroker-prod, eu-west-1)`. */
  where: string;
  /** Said after "table not found". */
  missingTableHint: string;
  config: BrokerConfig;
  table: string;
  dynamodb: DynamoDBClient;
  store: DynamoTokenStore;
  /** The operator's identity for audit lines (asked only for actions). */
  operator(): Promise<string>;
  /** Audit sinks besides stderr (a stage's log group). */
  audit: AuditSink[];
  close(): void;
}

export function localTarget(flags: Extract<TargetFlags, { kind: 'local' }>, client?: DynamoDBClient): Target {
  let config: BrokerConfig;
  try {
    config = loadLocalConfig(flags.config).broker;
  } catch (e) {
    if (e instanceof ConfigError) throw new OpsError(e.message);
    throw e;
  }
  const dynamodb = client ?? localDynamoClient(flags.endpoint, flags.region, 2);
  return {
    name: 'local',
    where: `table ${flags.table} at ${flags.endpoint}`,
    missingTableHint: 'npm start --dynamodb-endpoint creates it; check --table',
    config,
    table: flags.table,
    dynamodb,
    store: new DynamoTokenStore(dynamodb, flags.table),
    operator: async () => 'local',
    audit: [],
    close: () => dynamodb.destroy(),
  };
}

/** The connection named on the command line, or a clear error listing what the target has. */
export function connectionOf(target: Target, name: string): Connection {
  const c = target.config.connections.get(name);
  if (c) return c;
  const known = [...target.config.connections.keys()].sort();
  const list = known.length > 12 ? `${known.slice(0, 12).join(', ')}, ... (${known.length} in all)` : known.join(', ');
  throw new OpsError(
    `unknown connection "${name}" in ${target.name === 'local' ? 'the config file' : `stage ${target.name}`}${known.length ? ` (connections: ${list})` : ' (it has none)'}`,
  );
}

/** Runs a store call, turning a missing table or an unreachable endpoint into one clear line. */
export async function onTable<T>(target: Target, doing: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if ((e as { name?: string })?.name === 'ResourceNotFoundException')
      throw new OpsError(`${doing}: ${target.where}: table not found (${target.missingTableHint})`);
    throw new OpsError(describeAwsError(e, `${doing} (${target.where})`));
  }
}
