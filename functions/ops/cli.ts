/**
 * `npm run ops -- COMMAND` / `token-broker-ops COMMAND`: the operator CLI as a process (see main.ts and
 * `--help`). Exits with main's code once its output is written.
 */
import { main } from './main.js';

// The AWS SDK warns about Node 20 when a client is built; it says nothing an operator can act on.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const io = {
  stdout: (text: string) => void process.stdout.write(text),
  stderr: (text: string) => void process.stderr.write(text),
};

main(process.argv.slice(2), io).then(
  (code) => {
    // Exit at once (SDK keep-alive sockets would hold the process), after stdout has taken everything.
    process.stdout.write('', () => process.exit(code));
  },
  (e: unknown) => {
    process.stderr.write(`error: ${(e as Error)?.name ?? 'Error'}: ${(e as Error)?.message ?? String(e)}\n`);
    if (process.env.DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
    process.exit(1);
  },
);
