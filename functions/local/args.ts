/**
 * What `npm start` and the operator CLI share about their command lines and what they print.
 */

/** Why node:util `parseArgs` refused a command line, in the CLI's words (the flag named, no stack). */
export function argsProblem(e: unknown): string {
  const err = e as { code?: string; message: string };
  const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown flag ${quoted}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return err.message.includes('does not take')
        ? `flag ${quoted.split(', ').pop()} takes no value`
        : `flag ${quoted.split(' ')[0]} needs a value`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${quoted}`;
    default:
      return err.message.split('\n')[0]!;
  }
}

/** One line for stderr: a multi-line message (a config error lists every field) becomes `head issue; issue`. */
export function oneLine(message: string): string {
  const [head, ...rest] = message
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return rest.length ? `${head} ${rest.join('; ')}` : (head ?? message);
}
