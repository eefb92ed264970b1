/**
 * The operator CLI as a function of its command line: `main(argv, io)` resolves to the exit code.
 * 0 done (including "nothing to reset" and "nothing cached"); 1 the operation failed or a refresh was
 * deferred by the budget guard, or the stage, table or connection was not found; 2 a bad command line.
 * functions/ops/cli.ts runs it as a process.
 */
import type { AwsEnv } from './aws-target.js';
import { type OpsCommand, USAGE, UsageError, parseOpsArgs } from './flags.js';

export interface Io {
  stdout(text: string): void;
  stderr(text: string): void;
}

export interface MainDeps {
  /** AWS clients, region and download for --stage (default: the SDK's, from the environment). */
  aws?: AwsEnv;
  now?: () => number;
}

/** Exit codes. */
export const EXIT = { done: 0, failed: 1, usage: 2 } as const;

export async function main(argv: readonly string[], io: Io, deps: MainDeps = {}): Promise<number> {
  let cmd: OpsCommand;
  try {
    const parsed = parseOpsArgs(argv);
    if (parsed.help) {
      io.stdout(`${USAGE}\n`);
      return EXIT.done;
    }
    cmd = parsed;
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`error: ${e.message}\n`);
      return EXIT.usage;
    }
    throw e;
  }
  const { runCommand } = await import('./run.js');
  return runCommand(cmd, io, deps);
}
