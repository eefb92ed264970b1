import {
  CloudWatchLogsClient,
  CreateLogStreamCommand,
  PutLogEventsCommand,
  ResourceAlreadyExistsException,
  ResourceNotFoundException,
} from '@aws-sdk/client-cloudwatch-logs';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { type AuditRecord, auditLine, streamSink } from '../../functions/ops/audit.js';
import { cloudWatchSink } from '../../functions/ops/audit-cloudwatch.js';

const logs = mockClient(CloudWatchLogsClient);
const client = new CloudWatchLogsClient({ region: 'eu-west-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
const record: AuditRecord = {
  message: 'ops',
  action: 'refresh',
  connection: 'vertex-o',
  result: 'deferred',
  operator: 'arn:aws:sts::111122223333:assumed-role/ops/alice',
  target: 'prod',
  timestamp: '2026-11-30T09:00:00.000Z',
  tokenFp: 'fp-1',
  retryAfterSeconds: 60,
};

beforeEach(() => logs.reset());
afterAll(() => logs.restore());

describe('audit sinks', () => {
  it('a stream sink writes the record as one JSON line', async () => {
    const lines: string[] = [];
    const sink = streamSink((l) => lines.push(l));
    await sink.open();
    await sink.write(record);
    expect(lines).toEqual([`${JSON.stringify(record)}\n`]);
    expect(JSON.parse(lines[0]!)).toEqual(record);
  });

  it('the CloudWatch sink creates stream ops-cli in the group, then puts the line with the record time', async () => {
    logs.on(CreateLogStreamCommand).resolves({});
    logs.on(PutLogEventsCommand).resolves({});
    const sink = cloudWatchSink(client, '/aws/lambda/broker');
    await sink.open();
    await sink.write(record);
    expect(logs.commandCalls(CreateLogStreamCommand).map((c) => c.args[0].input)).toEqual([
      { logGroupName: '/aws/lambda/broker', logStreamName: 'ops-cli' },
    ]);
    expect(logs.commandCalls(PutLogEventsCommand).map((c) => c.args[0].input)).toEqual([
      {
        logGroupName: '/aws/lambda/broker',
        logStreamName: 'ops-cli',
        logEvents: [{ timestamp: Date.parse(record.timestamp), message: auditLine(record) }],
      },
    ]);
    expect(sink.name).toBe('log group /aws/lambda/broker');
  });

  it('an existing stream is fine; a missing log group is not', async () => {
    logs.on(CreateLogStreamCommand).rejects(new ResourceAlreadyExistsException({ message: 'exists', $metadata: {} }));
    await expect(cloudWatchSink(client, 'g').open()).resolves.toBeUndefined();
    logs
      .on(CreateLogStreamCommand)
      .rejects(new ResourceNotFoundException({ message: 'The specified log group does not exist.', $metadata: {} }));
    await expect(cloudWatchSink(client, 'g').open()).rejects.toThrow('The specified log group does not exist.');
  });

  it('a line CloudWatch rejects (too old, too new, expired) is an error, not silence', async () => {
    logs.on(PutLogEventsCommand).resolves({ rejectedLogEventsInfo: { tooOldLogEventEndIndex: 0 } });
    await expect(cloudWatchSink(client, 'g').write(record)).rejects.toThrow(/rejected the audit line/);
  });
});
