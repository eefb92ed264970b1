/**
 * Runs one parsed operator command against its target (loaded by main.ts only after the command line
 * parsed, so that --help and usage errors do not load the AWS SDK).
 */
import type { Connection } from '../core/config.js';
import { ledgerMarginMs } from '../core/ledger.js';
import { DEFAULT_MARGIN_PARTS } from '../core/limits.js';
import { OPS_LOG_MESSAGE } from '../contract/telemetry.js';
import { type AuditRecord, type AuditSink, type OpsAction, streamSink } from './audit.js';
import { type OpsDeps, type RefreshResult, type ResetResult, refresh, reset, status } from './commands.js';
import { OpsError, describeAwsError, errorLine } from './errors.js';
import type { OpsCommand } from './flags.js';
import { EXIT, type Io, type MainDeps } from './main.js';
import { refreshText, resetText, statusJson, statusText } from './output.js';
import { type Target, connectionOf, localTarget, onTable } from './target.js';

async function resolveTarget(cmd: OpsCommand, deps: MainDeps): Promise<Target> {
  if (cmd.target.kind === 'local') return localTarget(cmd.target);
  const { stageTarget, sdkEnv } = await import('./aws-target.js');
  return stageTarget(cmd.target, deps.aws ?? sdkEnv());
}

/**
 * Runs an action with its audit line: the operator's identity and every sink are checked first (nothing
 * is changed unaudited), the line is written whether the action worked or failed. Resolves to the result
 * and the sinks that could not take the line.
 */
async function runAction<R extends ResetResult | RefreshResult>(
  target: Target,
  connection: Connection,
  action: OpsAction,
  io: Io,
  now: () => number,
  run: () => Promise<R>,
): Promise<{ result: R; unaudited: string[] }> {
  const operator = await target.operator();
  const sinks: AuditSink[] = [streamSink(io.stderr), ...target.audit];
  for (const sink of sinks) {
    try {
      await sink.open();
    } catch (e) {
      throw new OpsError(`${describeAwsError(e, `opening the audit stream in ${sink.name}`)}; nothing was done`);
    }
  }
  const base = { message: OPS_LOG_MESSAGE, action, connection: connection.name, operator, target: target.name } as const;
  let record: AuditRecord;
  let result: R | undefined;
  let failure: unknown;
  try {
    result = await onTable(target, `${action} ${connection.name}`, run);
    const { connection: _c, result: outcome, ...details } = result;
    record = { ...base, result: outcome, ...details, timestamp: new Date(now()).toISOString() };
  } catch (e) {
    failure = e;
    record = { ...base, result: 'failed', error: errorLine(e), timestamp: new Date(now()).toISOString() };
  }
  const unaudited: string[] = [];
  for (const sink of sinks) {
    try {
      await sink.write(record);
    } catch (e) {
      unaudited.push(describeAwsError(e, `writing the audit line to ${sink.name}`));
    }
  }
  if (failure !== undefined || result === undefined) throw failure;
  return { result, unaudited };
}

/** An action was done but its audit line did not reach every sink: say so, exit 1. */
function reportUnaudited(io: Io, unaudited: string[]): number {
  for (const line of unaudited) io.stderr(`error: ${line} (the action itself was done; its audit line is above)\n`);
  return unaudited.length ? EXIT.failed : EXIT.done;
}

export async function runCommand(cmd: OpsCommand, io: Io, deps: MainDeps): Promise<number> {
  const now = deps.now ?? Date.now;
  let target: Target | undefined;
  try {
    target = await resolveTarget(cmd, deps);
    const t = target;
    const opsDeps: OpsDeps = { store: t.store, now, marginMs: ledgerMarginMs(DEFAULT_MARGIN_PARTS) };
    if (cmd.command === 'status') {
      const connections =
        cmd.connection !== undefined
          ? [connectionOf(t, cmd.connection)]
          : [...t.config.connections.values()].sort((a, b) => a.name.localeCompare(b.name));
      const statuses = await onTable(t, 'reading the connections', () => status(opsDeps, connections));
      io.stdout(
        cmd.json
          ? statusJson(statuses)
          : statuses.length
            ? statusText(statuses, now())
            : `no connections in ${t.name === 'local' ? 'the config file' : `stage ${t.name}`}\n`,
      );
      return EXIT.done;
    }
    const connection = connectionOf(t, cmd.connection!);
    if (cmd.command === 'reset') {
      const { result, unaudited } = await runAction(t, connection, 'reset', io, now, () => reset(opsDeps, connection));
      io.stdout(resetText(result));
      return reportUnaudited(io, unaudited);
    }
    const { result, unaudited } = await runAction(t, connection, 'refresh', io, now, () =>
      refresh(opsDeps, connection, { force: cmd.force }),
    );
    io.stdout(refreshText(result, now()));
    const code = reportUnaudited(io, unaudited);
    return result.result === 'deferred' || result.result === 'not_current' ? EXIT.failed : code;
  } catch (e) {
    io.stderr(`error: ${errorLine(e)}\n`);
    return EXIT.failed;
  } finally {
    target?.close();
  }
}
