/**
 * The audit trail of operator actions (`reset`, `refresh`): one JSON line per action, `message: "ops"`
 * (core/telemetry.ts OPS_LOG_MESSAGE), written to stderr always and, for a deployed stage, to the broker's
 * own log group so that Logs Insights finds it beside the broker's request lines. Never a token or secret:
 * tokens appear only as fingerprints.
 */
import { CreateLogStreamCommand, PutLogEventsCommand, type CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { OPS_LOG_MESSAGE } from '../core/telemetry.js';

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

/** The stream in the broker's log group that operator actions go to. */
export const OPS_LOG_STREAM = 'ops-cli';

/**
 * Lines to a CloudWatch Logs group, stream `ops-cli` (created on first use; logs:CreateLogStream and
 * logs:PutLogEvents). Several operators may write at once: PutLogEvents needs no sequence token.
 */
export function cloudWatchSink(client: CloudWatchLogsClient, logGroupName: string, logStreamName = OPS_LOG_STREAM): AuditSink {
  return {
    name: `log group ${logGroupName}`,
    open: async () => {
      try {
        await client.send(new CreateLogStreamCommand({ logGroupName, logStreamName }));
      } catch (e) {
        if ((e as { name?: string })?.name !== 'ResourceAlreadyExistsException') throw e;
      }
    },
    write: async (record) => {
      const out = await client.send(
        new PutLogEventsCommand({ logGroupName, logStreamName, logEvents: [{ timestamp: Date.parse(record.timestamp), message: auditLine(record) }] }),
      );
      const rejected = out.rejectedLogEventsInfo;
      if (rejected && Object.values(rejected).some((v) => v !== undefined)) {
        throw new Error(`CloudWatch Logs rejected the audit line (${JSON.stringify(rejected)})`);
      }
    },
  };
}
