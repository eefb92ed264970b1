/** Command-line flags of local mode (`npm start -- FLAGS`): parsed strictly, every mistake one clear line. */
import { parseArgs } from 'node:util';
import { StartupError } from './config.js';
import { argsProblem } from './args.js';

export interface LocalFlags {
  /** Config file; without it local mode runs the demo. */
  config?: string;
  host: string;
  port: number;
  dynamodbEndpoint?: string;
  table: string;
  region: string;
  help: boolean;
}

/** @internal */
export const DEFAULTS = { host: '127.0.0.1', port: 8787, table: 'token-broker-local', region: 'us-east-1' } as const;

export const USAGE = `usage: npm start -- [flags]

Runs the token broker locally: SigV4-checking gateway, embedded DynamoDB, secrets from a file.
Without --config it runs a demo (a local OAuth server, one connection, printed caller credentials).

  --config FILE             connections, secrets and callers (README.md, section "The local config file")
  --port N                  port to listen on (default ${DEFAULTS.port}; 0 picks a free one)
  --host HOST               address to listen on (default ${DEFAULTS.host})
  --dynamodb-endpoint URL   use this DynamoDB-API endpoint instead of the embedded one (shared store)
  --table NAME              DynamoDB table (default ${DEFAULTS.table}; created if missing)
  --region NAME             region requests must be signed for (default ${DEFAULTS.region})
  -h, --help                show this help

More: README.md, section "Local mode (\`npm start\`)".`;

const OPTIONS = {
  config: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'dynamodb-endpoint': { type: 'string' },
  table: { type: 'string' },
  region: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function fail(message: string): never {
  throw new StartupError(`${message} (see --help)`);
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    return fail(argsProblem(e));
  }
}

export function parseFlags(argv: readonly string[]): LocalFlags {
  const values = parse(argv);
  const port = values.port ?? String(DEFAULTS.port);
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) fail(`--port must be an integer from 0 to 65535, not "${port}"`);
  const host = values.host ?? DEFAULTS.host;
  if (!host) fail('--host must not be empty');
  const table = values.table ?? DEFAULTS.table;
  if (!/^[A-Za-z0-9_.-]{3,255}$/.test(table)) fail(`--table must be 3 to 255 letters, digits, _ . or -, not "${table}"`);
  const region = values.region ?? DEFAULTS.region;
  if (!/^[a-z0-9-]{2,32}$/.test(region)) fail(`--region must look like us-east-1, not "${region}"`);
  const endpoint = values['dynamodb-endpoint'];
  if (endpoint !== undefined && !/^https?:$/.test(URL.canParse(endpoint) ? new URL(endpoint).protocol : '')) {
    fail(`--dynamodb-endpoint must be an http(s) URL such as http://127.0.0.1:8000, not "${endpoint}"`);
  }
  if (values.config === '') fail('--config needs a file name');

  return {
    ...(values.config !== undefined ? { config: values.config } : {}),
    host,
    port: Number(port),
    ...(endpoint !== undefined ? { dynamodbEndpoint: endpoint } : {}),
    table,
    region,
    help: values.help ?? false,
  };
}
