/** The audit sink of a deployed stage: the broker's own CloudWatch Logs group (loaded only for --stage). */
import { CreateLogStreamCommand, PutLogEventsCommand, type CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { OPS_LOG_STREAM } from '../contract/telemetry.js';
import { type AuditSink, auditLine } from './audit.js';

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
        new PutLogEventsCommand({
          logGroupName,
          logStreamName,
          logEvents: [{ timestamp: Date.parse(record.timestamp), message: auditLine(record) }],
        }),
      );
      const rejected = out.rejectedLogEventsInfo;
      if (rejected && Object.values(rejected).some((v) => v !== undefined)) {
        throw new Error(`CloudWatch Logs rejected the audit line (${JSON.stringify(rejected)})`);
      }
    },
  };
}
