/**
 * Command lines of `npm start` and the operator CLI: why node:util `parseArgs` refused one, in the CLI's
 * words (the flag named, no stack), for the caller to throw as its own usage error.
 */
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
