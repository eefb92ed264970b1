/**
 * The operator CLI's command line (`npm run ops -- COMMAND [CONNECTION] [flags]`), parsed strictly: every
 * mistake is one line and exit code 2. Only what can be checked from the command line itself is a usage
 * error; whether a stage, table or connection exists is found out later (exit 1).
 */
import { parseArgs } from 'node:util';
import { STAGE_NAME } from '../contract/deployment.js';
import { CONNECTION_NAME } from '../contract/names.js';
import { argsProblem } from '../local/args.js';

const COMMANDS = ['status', 'reset', 'refresh'] as const;
type Command = (typeof COMMANDS)[number];

const REGION = /^[a-z]{2}(-[a-z0-9]+){1,4}$/;
const TABLE = /^[A-Za-z0-9_.-]{3,255}$/;

const LOCAL_DEFAULTS = { table: 'token-broker-local', region: 'us-east-1' } as const;

export type TargetFlags =
  /** A deployed stage: stack `TokenBroker-<stage>` in `region` (else the environment's region). */
  | { kind: 'stage'; stage: string; region?: string }
  /** Local mode: the config file `npm start` reads, its shared DynamoDB-API endpoint and table. */
  | { kind: 'local'; config: string; endpoint: string; table: string; region: string };

export interface OpsCommand {
  command: Command;
  connection?: string;
  json: boolean;
  force: boolean;
  target: TargetFlags;
}

export type Parsed = { help: true } | ({ help: false } & OpsCommand);

/** A bad command line: exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `usage: npm run ops -- COMMAND [CONNECTION] TARGET [flags]
       token-broker-ops COMMAND [CONNECTION] TARGET [flags]

Shows and steers each connection's token, circuit and rate-limit budget, straight from the broker's
DynamoDB table with your own credentials. Never prints or decrypts a token.

commands:
  status [CONNECTION] [--json]  cached token (fingerprint, expiry, age), last refresh, lease, backoffs,
                                circuit and ledger of every connection, or of one; --json prints one JSON
                                object per line
  reset CONNECTION              closes the credential circuit, clears the backoff, the demand backoff and
                                the connection's ledger hold; never the ledger's log (spent slots stay spent)
  refresh CONNECTION [--force]  invalidates the cached token so the next request fetches a new one, if the
                                budget guard allows a request now (else says when it will); --force skips
                                the guard

target (one of):
  --stage NAME                  deployed stack TokenBroker-NAME (AWS credentials and region from the
                                environment, or --region)
  --config FILE --dynamodb-endpoint URL [--table NAME]
                                local mode: the config file npm start reads, the DynamoDB-API endpoint the
                                brokers share, and their table (default ${LOCAL_DEFAULTS.table})

flags:
  --region NAME                 AWS region (--stage: default from the environment; local: ${LOCAL_DEFAULTS.region})
  --json                        status only: newline-delimited JSON, one object per connection
  --force                       refresh only: skip the budget guard
  -h, --help                    show this help

reset and refresh write an audit line (JSON, "message":"ops") to stderr, and with --stage also to the
broker's log group (stream ops-cli).
exit codes: 0 done; 1 failed, or refresh deferred by the budget guard; 2 bad command line.`;

const OPTIONS = {
  stage: { type: 'string' },
  region: { type: 'string' },
  config: { type: 'string' },
  'dynamodb-endpoint': { type: 'string' },
  table: { type: 'string' },
  json: { type: 'boolean' },
  force: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function fail(message: string): never {
  throw new UsageError(`${message} (see --help)`);
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    return fail(argsProblem(e));
  }
}

function target(values: ReturnType<typeof parse>['values']): TargetFlags {
  const { stage, region, config, table } = values;
  const endpoint = values['dynamodb-endpoint'];
  if (region !== undefined && !REGION.test(region)) fail(`--region must look like eu-west-1, not "${region}"`);
  if (stage !== undefined) {
    const local = [
      config !== undefined && '--config',
      endpoint !== undefined && '--dynamodb-endpoint',
      table !== undefined && '--table',
    ].filter(Boolean);
    if (local.length) fail(`--stage cannot be combined with ${local.join(', ')} (those select local mode)`);
    if (!STAGE_NAME.test(stage))
      fail(`--stage must be lowercase letters, digits and -, starting with a letter, at most 20 characters, not "${stage}"`);
    return { kind: 'stage', stage, ...(region !== undefined ? { region } : {}) };
  }
  if (config === undefined && endpoint === undefined) fail('no target: give --stage NAME, or --config FILE --dynamodb-endpoint URL');
  if (config === undefined || config === '') fail('local mode needs --config FILE (the file npm start reads)');
  if (endpoint === undefined) fail('local mode needs --dynamodb-endpoint URL (the endpoint the brokers share)');
  if (!/^https?:$/.test(URL.canParse(endpoint) ? new URL(endpoint).protocol : '')) {
    fail(`--dynamodb-endpoint must be an http(s) URL such as http://127.0.0.1:8000, not "${endpoint}"`);
  }
  const t = table ?? LOCAL_DEFAULTS.table;
  if (!TABLE.test(t)) fail(`--table must be 3 to 255 letters, digits, _ . or -, not "${t}"`);
  return { kind: 'local', config, endpoint, table: t, region: region ?? LOCAL_DEFAULTS.region };
}

export function parseOpsArgs(argv: readonly string[]): Parsed {
  // Help wins over any other mistake on the line.
  const end = argv.indexOf('--');
  if ((end === -1 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h')) return { help: true };
  const { values, positionals } = parse(argv);
  const [command, connection, ...extra] = positionals;
  if (command === undefined) fail('missing command: status, reset or refresh');
  if (!(COMMANDS as readonly string[]).includes(command)) fail(`unknown command "${command}": use status, reset or refresh`);
  const cmd = command as Command;
  if (extra.length) fail(`unexpected argument "${extra[0]}"`);
  if (connection === undefined && cmd !== 'status') fail(`${cmd} needs a CONNECTION`);
  if (connection !== undefined && !CONNECTION_NAME.test(connection)) {
    fail(`"${connection}" is not a connection name (lowercase letters, digits and -, at most 64)`);
  }
  if (values.json && cmd !== 'status') fail('--json applies to status only');
  if (values.force && cmd !== 'refresh') fail('--force applies to refresh only');
  return {
    help: false,
    command: cmd,
    ...(connection !== undefined ? { connection } : {}),
    json: values.json ?? false,
    force: values.force ?? false,
    target: target(values),
  };
}
