/**
 * Local mode's composition: the Lambda's own core and handler (TokenBroker + createHttpHandler) behind
 * the local gateway, with DynamoDB from dynalite (or a shared endpoint), secrets from the config file,
 * tokens sealed with a local key, and, without a config file, a demo upstream and demo caller.
 */
import { randomBytes } from 'node:crypto';
import { DynamoTokenStore } from '../adapters/dynamodb-store.js';
import { rawAesSealer } from '../adapters/sealer.js';
import { DEFAULT_MIN_TTL_SECONDS, MIN_TTL_PARAM, routePath } from '../contract/routes.js';
import { HttpUpstream } from '../adapters/upstream-http.js';
import { isAllowed, principalFromArn } from '../core/authz.js';
import { TokenBroker } from '../core/broker.js';
import { randomIds, systemClock, systemTimers } from '../adapters/system.js';
import { createHttpHandler } from '../broker/http.js';
import { noMetrics, type RequestLog } from '../broker/observability.js';
import { fileSecrets, type LocalConfig, localSealKey, localSecretSource, parseLocalConfig, StartupError } from './config.js';
import { startDemoUpstream, DEMO_SCOPE } from './demo-upstream.js';
import { ensureTable, localDynamoClient, startDynalite } from './dynamodb.js';
import { startGateway } from './gateway.js';

const DEMO_CONNECTION = 'demo';
const DEMO_ACCESS_KEY_ID = 'AKIDLOCALDEMO';
const DEMO_PRINCIPAL = 'arn:aws:iam::111122223333:role/demo-caller';
const DEMO_SECRET_NAME = 'token-broker/local/demo';

export interface LocalBrokerOptions {
  host: string;
  port: number;
  region: string;
  table: string;
  dynamodbEndpoint?: string;
  /** The config file and its validated content; without it, the demo. */
  config?: { path: string; content: LocalConfig };
  /** Where log lines go (default stdout). */
  write?: (line: string) => void;
}

export interface LocalBroker {
  /** `http://HOST:PORT` with the port actually bound. */
  url: string;
  /** What to tell the user: where things are and a ready curl line. */
  banner: string[];
  close(): Promise<void>;
}

/** One JSON line per log record. Fields never hold a token or a secret (the handler logs fingerprints). */
function jsonLogger(write: (line: string) => void): RequestLog {
  const at =
    (level: string) =>
    (message: string, fields: Record<string, unknown> = {}): void =>
      write(JSON.stringify({ level, message, timestamp: new Date().toISOString(), service: 'token-broker-local', ...fields }));
  return { info: at('INFO'), warn: at('WARN'), error: at('ERROR') };
}

function curlLine(region: string, accessKeyId: string, secret: string, url: string, connection: string): string {
  return `curl --aws-sigv4 "aws:amz:${region}:execute-api" --user "${accessKeyId}:${secret}" "${url}${routePath('token', connection)}?${MIN_TTL_PARAM}=${DEFAULT_MIN_TTL_SECONDS}"`;
}

/** The URL a client on this machine uses (a wildcard listen address is not one to connect to). */
function clientUrl(url: string): string {
  return url.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:');
}

function describe(e: unknown): string {
  const err = e as { code?: string; name?: string; message?: string; cause?: { code?: string } };
  return err?.code ?? err?.cause?.code ?? (err?.name && err.name !== 'Error' ? err.name : undefined) ?? err?.message ?? String(e);
}

export async function startLocalBroker(opts: LocalBrokerOptions): Promise<LocalBroker> {
  const closers: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  };
  const write = opts.write ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const banner: string[] = [];
  try {
    let config: LocalConfig;
    let readSecrets: () => Promise<Record<string, unknown>>;
    let demoCallerSecret: string | undefined;
    if (opts.config) {
      config = opts.config.content;
      readSecrets = fileSecrets(opts.config.path);
      banner.push(
        `token-broker local mode: config ${opts.config.path}`,
        `  connections: ${[...config.broker.connections.keys()].join(', ')}`,
      );
    } else {
      const upstream = await startDemoUpstream();
      closers.push(upstream.close);
      demoCallerSecret = randomBytes(20).toString('hex');
      const secrets = { [DEMO_SECRET_NAME]: { client_id: upstream.clientId, client_secret: upstream.clientSecret } };
      config = parseLocalConfig(
        {
          connections: {
            [DEMO_CONNECTION]: {
              tokenUrl: upstream.tokenUrl,
              grantType: 'client_credentials',
              scope: DEMO_SCOPE,
              clientAuthentication: 'client_secret_post',
              secret: DEMO_SECRET_NAME,
              callers: [DEMO_PRINCIPAL],
            },
          },
          secrets,
          callers: { [DEMO_ACCESS_KEY_ID]: { secretAccessKey: demoCallerSecret, principal: DEMO_PRINCIPAL } },
        },
        'demo',
      );
      readSecrets = async () => secrets;
      banner.push(
        'token-broker local mode: demo (no --config given)',
        `  upstream:    oidc-provider at ${upstream.tokenUrl} (client_credentials, scope ${DEMO_SCOPE})`,
        `  connection:  ${DEMO_CONNECTION}`,
        `  caller:      ${DEMO_ACCESS_KEY_ID} signs as ${DEMO_PRINCIPAL}`,
      );
    }

    let endpoint = opts.dynamodbEndpoint;
    if (endpoint) {
      banner.push(`  DynamoDB:    ${endpoint}, table ${opts.table}`);
    } else {
      const embedded = await startDynalite();
      closers.push(embedded.close);
      endpoint = embedded.endpoint;
      banner.push(`  DynamoDB:    embedded dynalite (in memory), table ${opts.table}`);
    }
    const client = localDynamoClient(endpoint, opts.region);
    closers.push(async () => client.destroy());
    try {
      await ensureTable(client, opts.table);
    } catch (e) {
      throw new StartupError(`cannot use DynamoDB at ${endpoint} (table ${opts.table}): ${describe(e)}`);
    }

    const logger = jsonLogger(write);
    const store = new DynamoTokenStore(client, opts.table);
    const broker = new TokenBroker({
      config: config.broker,
      store,
      ledger: store,
      secrets: localSecretSource(readSecrets, systemClock),
      sealer: rawAesSealer(localSealKey(opts.table)),
      upstream: new HttpUpstream(),
      clock: systemClock,
      ids: randomIds,
      timers: systemTimers,
      log: logger,
    });
    const handler = createHttpHandler({ broker, logger, metrics: noMetrics });
    const gateway = await startGateway({ host: opts.host, port: opts.port, region: opts.region, callers: config.callers, handler, logger });
    closers.push(gateway.close);

    const url = clientUrl(gateway.url);
    if (demoCallerSecret !== undefined) {
      banner.push('Get a token:', curlLine(opts.region, DEMO_ACCESS_KEY_ID, demoCallerSecret, url, DEMO_CONNECTION));
    } else {
      const [connection] = config.broker.connections.values();
      const caller = connection && [...config.callers].find(([, c]) => isAllowed(principalFromArn(c.principal), connection.callers));
      banner.push(`  callers:     ${[...config.callers.keys()].join(', ')}`);
      if (connection && caller) {
        banner.push(
          `Get a token (with ${caller[0]}'s secretAccessKey from the file):`,
          curlLine(opts.region, caller[0], 'SECRET_ACCESS_KEY', url, connection.name),
        );
      }
    }
    return { url: gateway.url, banner, close: closeAll };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
