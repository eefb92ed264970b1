/**
 * The audit trail of operator actions (`reset`, `refresh`): one JSON line per action, `message: "ops"`
 * (contract/telemetry.ts OPS_LOG_MESSAGE), written to stderr always and, for a deployed stage, to the broker's
 * own log group (audit-cloudwatch.ts) so that Logs Insights finds it beside the broker's request lines. Never a token or secret:
 * tokens appear only as fingerprints.
 */
import { OPS_LOG_MESSAGE } from '../contract/telemetry.js';

export type OpsAction = 'reset' | 'refresh';

export interface AuditRecord {
  message: typeof OPS_LOG_MESSAGE;
  action: OpsAction;
  connection: string;
  /** What happened: `reset`, `nothing_to_reset`, `invalidated`, `deferred`, `nothing_cached`, ..., or `failed`. */
  result: string;
  /** Who: the caller ARN from sts:GetCallerIdentity, or `local` in local mode. */
  operator: string;
  /** The stage (`--stage NAME`), or `local`. */
  target: string;
  /** When the action finished, ISO 8601. */
  timestamp: string;
  /** Action details (what was cleared, the token's fingerprint, a deferral's retry time, an error). */
  [detail: string]: unknown;
}

export interface AuditSink {
  /** Where lines go, for error messages. */
  readonly name: string;
  /** Called before the action: throws if lines cannot be written, so that nothing is done unaudited. */
  open(): Promise<void>;
  write(record: AuditRecord): Promise<void>;
}

export function auditLine(record: AuditRecord): string {
  return JSON.stringify(record);
}

/** Lines to a stream (stderr): stdout stays the command's own output. */
export function streamSink(write: (line: string) => void, name = 'stderr'): AuditSink {
  return {
    name,
    open: async () => {},
    write: async (record) => write(`${auditLine(record)}\n`),
  };
}
