/**
 * `npm start`: the token broker offline. See README.md, section "Local mode (`npm start`)", and `npm start -- --help`.
 * Prints `listening on http://HOST:PORT` once it serves; exits 1 with one line for any startup problem,
 * and 0 after SIGINT/SIGTERM once the server, DynamoDB and the demo upstream are closed.
 */
import { ConfigError } from '../core/config.js';
import { oneLine } from './args.js';
import { loadLocalConfig, StartupError } from './config.js';
import { parseFlags, USAGE } from './flags.js';

// The AWS SDK warns about Node 20 when a client is built; it says nothing to a local user.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

function die(e: unknown): never {
  if (e instanceof ConfigError || e instanceof StartupError) {
    process.stderr.write(`error: ${oneLine(e.message)}\n`);
  } else {
    const err = e as Error;
    process.stderr.write(`error: ${oneLine(`${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`)}\n`);
    if (process.env.DEBUG) process.stderr.write(`${err?.stack}\n`);
  }
  process.exit(1);
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  if (flags.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // Validate the config before loading the AWS SDK and friends: a mistake is reported at once.
  const config = flags.config !== undefined ? { path: flags.config, content: loadLocalConfig(flags.config) } : undefined;
  const { startLocalBroker } = await import('./server.js');
  const broker = await startLocalBroker({
    host: flags.host,
    port: flags.port,
    region: flags.region,
    table: flags.table,
    ...(flags.dynamodbEndpoint !== undefined ? { dynamodbEndpoint: flags.dynamodbEndpoint } : {}),
    ...(config ? { config } : {}),
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => {
      process.stderr.write(`shutdown after ${signal} took too long; exiting\n`);
      process.exit(1);
    }, 5_000);
    force.unref();
    broker.close().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`shutdown after ${signal} failed: ${(e as Error)?.name ?? 'error'}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  process.stdout.write(`${broker.banner.join('\n')}\nlistening on ${broker.url}\n`);
}

main().catch(die);
