/**
 * `--stage NAME`: the stack's outputs, the deployed function's config.json (a zip the test builds, served by a
 * loopback HTTP server standing in for Code.Location) and the audit line in CloudWatch Logs, with mocked
 * CloudFormation, Lambda, STS and CloudWatch Logs clients (aws-sdk-client-mock) and the table on dynalite.
 * No real AWS.
 */
import { CloudFormationClient, CloudFormationServiceException, DescribeStacksCommand, type Output } from '@aws-sdk/client-cloudformation';
import {
  CloudWatchLogsClient,
  CloudWatchLogsServiceException,
  CreateLogStreamCommand,
  PutLogEventsCommand,
  ResourceAlreadyExistsException,
} from '@aws-sdk/client-cloudwatch-logs';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetFunctionCommand, LambdaClient, ResourceNotFoundException } from '@aws-sdk/client-lambda';
import { GetCallerIdentityCommand, STSClient, STSServiceException } from '@aws-sdk/client-sts';
import { mockClient } from 'aws-sdk-client-mock';
import { zipSync, strToU8 } from 'fflate';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import { configDocument, parseConfig } from '../../functions/core/config.js';
import { type EmbeddedDynamo, ensureTable, localDynamoClient, startDynalite } from '../../functions/local/dynamodb.js';
import { type AwsEnv, downloadPackage } from '../../functions/ops/aws-target.js';
import { main } from '../../functions/ops/main.js';
import { capture, circuit, jsonLines, seedNote } from './support.js';

const T0 = Date.UTC(2026, 10, 30, 9, 0, 0);
const FN = 'TokenBroker-dev-Broker1234';
const OPERATOR = 'arn:aws:sts::111122223333:assumed-role/ops-admin/alice';
const callers = ['arn:aws:iam::111122223333:role/tax-*'];

/** The config as the deployed bundle carries it: every default written out (core/config.ts configDocument). */
const deployed = configDocument(
  parseConfig({
    connections: {
      'vertex-o': {
        tokenUrl: 'https://auth.vertexsmb.com/oauth20/token',
        grantType: 'client_credentials',
        secret: 'token-broker/dev/vertex',
        callers,
        rateLimit: { max: 10, windowSeconds: 28800 },
      },
      vitesse: {
        tokenUrl: 'https://identity.vitessepsp.com/connect/token',
        grantType: 'client_credentials',
        scope: 'API',
        secret: 'token-broker/dev/vitesse',
        callers,
      },
    },
  }),
);
const configHash = parseConfig(deployed).connections.get('vertex-o')!.configHash;

const cfn = mockClient(CloudFormationClient);
const lambda = mockClient(LambdaClient);
const sts = mockClient(STSClient);
const logs = mockClient(CloudWatchLogsClient);

let dynamo: EmbeddedDynamo;
let ddb: DynamoDBClient;
let server: Server;
let base: string;
/** What the code-package server answers: path -> [status, body]. */
const packages = new Map<string, [number, Uint8Array]>();
let table: string;
let tables = 0;
let regions: string[];
let defaultRegion: string | undefined;

const aws = (): AwsEnv => ({
  clients: (region) => {
    regions.push(region);
    const credentials = { accessKeyId: 'x', secretAccessKey: 'y' };
    return {
      cloudformation: new CloudFormationClient({ region, credentials }),
      lambda: new LambdaClient({ region, credentials }),
      sts: new STSClient({ region, credentials }),
      logs: new CloudWatchLogsClient({ region, credentials }),
      dynamodb: localDynamoClient(dynamo.endpoint, region),
    };
  },
  defaultRegion: async () => defaultRegion,
  download: downloadPackage,
});

const zip = (files: Record<string, string>) => zipSync(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, strToU8(v)])));

function serve(path: string, body: Uint8Array, status = 200): string {
  packages.set(path, [status, body]);
  return `${base}${path}?X-Amz-Signature=abc`;
}

function stack(outputs: Record<string, string>) {
  const Outputs: Output[] = Object.entries(outputs).map(([OutputKey, OutputValue]) => ({ OutputKey, OutputValue }));
  cfn
    .on(DescribeStacksCommand)
    .resolves({ Stacks: [{ StackName: 'TokenBroker-dev', StackStatus: 'UPDATE_COMPLETE', CreationTime: new Date(), Outputs }] });
}

beforeAll(async () => {
  dynamo = await startDynalite();
  ddb = localDynamoClient(dynamo.endpoint);
  server = createServer((req, res) => {
    const [status, body] = packages.get((req.url ?? '').split('?')[0]!) ?? [404, new Uint8Array()];
    res.writeHead(status, { 'content-type': 'application/zip', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  cfn.restore();
  lambda.restore();
  sts.restore();
  logs.restore();
  ddb?.destroy();
  await new Promise((r) => server?.close(r));
  await dynamo?.close();
});

beforeEach(async () => {
  for (const m of [cfn, lambda, sts, logs]) m.reset();
  packages.clear();
  regions = [];
  defaultRegion = 'eu-central-1';
  table = `stage-test-${++tables}`;
  await ensureTable(ddb, table);
  stack({ TableName: table, FunctionName: FN, FunctionLogGroup: `/aws/lambda/${FN}`, LogGroupName: '/token-broker/dev/broker' });
  lambda.on(GetFunctionCommand).resolves({
    Configuration: { FunctionName: FN },
    Code: {
      RepositoryType: 'S3',
      Location: serve('/code.zip', zip({ 'index.mjs': 'export const handler = () => {};', 'config.json': JSON.stringify(deployed) })),
    },
  });
  sts.on(GetCallerIdentityCommand).resolves({ Arn: OPERATOR, Account: '111122223333', UserId: 'AROAEXAMPLE:alice' });
  logs.on(CreateLogStreamCommand).resolves({});
  logs.on(PutLogEventsCommand).resolves({});
});

async function ops(...args: string[]) {
  const c = capture();
  const code = await main(args, c.io, { aws: aws(), now: () => T0 });
  return { code, stdout: c.out(), stderr: c.err() };
}

describe('--stage: finding the table and config from the stack', () => {
  it('reads the stack outputs and the deployed config.json, then the table', async () => {
    const r = await ops('status', '--stage', 'dev', '--region', 'eu-west-1', '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((s) => [s.connection, (s.ledger as { max: number } | null)?.max ?? null])).toEqual([
      ['vertex-o', 10],
      ['vitesse', null],
    ]);
    expect(regions).toEqual(['eu-west-1']);
    expect(cfn.commandCalls(DescribeStacksCommand)[0]!.args[0].input).toEqual({ StackName: 'TokenBroker-dev' });
    expect(lambda.commandCalls(GetFunctionCommand)[0]!.args[0].input).toEqual({ FunctionName: FN });
    // status is no action: no identity asked, no audit line.
    expect(sts.calls()).toHaveLength(0);
    expect(logs.calls()).toHaveLength(0);
  });

  it('takes the region from the environment without --region', async () => {
    const r = await ops('status', '--stage', 'dev');
    expect(r.code).toBe(0);
    expect(regions).toEqual(['eu-central-1']);
  });

  it('reads the config file the function is told to (BROKER_CONFIG_FILE)', async () => {
    lambda.on(GetFunctionCommand).resolves({
      Configuration: { FunctionName: FN, Environment: { Variables: { BROKER_CONFIG_FILE: 'conf/broker.json' } } },
      Code: { Location: serve('/code2.zip', zip({ 'config.json': '{"connections": {}}', 'conf/broker.json': JSON.stringify(deployed) })) },
    });
    const r = await ops('status', '--stage', 'dev', '--json');
    expect(jsonLines(r.stdout)).toHaveLength(2);
  });

  const failures: Array<[string, () => void, string[], RegExp]> = [
    [
      'no region anywhere',
      () => void (defaultRegion = undefined),
      ['status', '--stage', 'dev'],
      /^error: no AWS region: pass --region or set AWS_REGION/,
    ],
    [
      'a stage that is not deployed',
      () =>
        cfn.on(DescribeStacksCommand).rejects(
          new CloudFormationServiceException({
            name: 'ValidationError',
            $fault: 'client',
            message: 'Stack with id TokenBroker-dev does not exist',
            $metadata: {},
          }),
        ),
      ['status', '--stage', 'dev', '--region', 'eu-west-1'],
      /^error: stack TokenBroker-dev not found in eu-west-1: is stage "dev" deployed there\? \(--region\)$/,
    ],
    [
      'no permission to read the stack',
      () =>
        cfn.on(DescribeStacksCommand).rejects(
          new CloudFormationServiceException({
            name: 'AccessDenied',
            $fault: 'client',
            message: 'User: arn:... is not authorized to perform: cloudformation:DescribeStacks',
            $metadata: {},
          }),
        ),
      ['status', '--stage', 'dev'],
      /^error: reading stack TokenBroker-dev in eu-central-1: access denied: User: arn:\.\.\. is not authorized to perform: cloudformation:DescribeStacks$/,
    ],
    [
      'a missing TableName output',
      () => stack({ FunctionName: FN }),
      ['status', '--stage', 'dev'],
      /^error: stack TokenBroker-dev \(eu-central-1\) has no output TableName: deploy the stage/,
    ],
    [
      'a missing FunctionName output',
      () => stack({ TableName: 't' }),
      ['status', '--stage', 'dev'],
      /^error: stack TokenBroker-dev \(eu-central-1\) has no output FunctionName/,
    ],
    [
      'a function that is gone',
      () => lambda.on(GetFunctionCommand).rejects(new ResourceNotFoundException({ message: 'Function not found', $metadata: {} })),
      ['status', '--stage', 'dev'],
      /^error: function TokenBroker-dev-Broker1234 \(stack output FunctionName\) not found$/,
    ],
    [
      'a code package that cannot be downloaded',
      () => lambda.on(GetFunctionCommand).resolves({ Code: { Location: serve('/expired.zip', new Uint8Array(), 403) } }),
      ['status', '--stage', 'dev'],
      /^error: cannot download the code package of function TokenBroker-dev-Broker1234: HTTP 403$/,
    ],
    [
      'a package without config.json',
      () => lambda.on(GetFunctionCommand).resolves({ Code: { Location: serve('/bare.zip', zip({ 'index.mjs': '' })) } }),
      ['status', '--stage', 'dev'],
      /^error: the code package of function TokenBroker-dev-Broker1234 has no config.json at its root$/,
    ],
    [
      'a package that is not a zip',
      () =>
        lambda.on(GetFunctionCommand).resolves({ Code: { Location: serve('/junk.zip', new Uint8Array(Buffer.from('not a zip at all'))) } }),
      ['status', '--stage', 'dev'],
      /^error: the code package of function TokenBroker-dev-Broker1234: not a readable zip archive/,
    ],
    [
      'an invalid config.json',
      () =>
        lambda
          .on(GetFunctionCommand)
          .resolves({ Code: { Location: serve('/bad.zip', zip({ 'config.json': '{"connections": {"x": {"grantType": "magic"}}}' })) } }),
      ['status', '--stage', 'dev'],
      /^error: invalid config \(config.json of function TokenBroker-dev-Broker1234\): connections\.x\.tokenUrl: .*; connections\.x\.grantType: /,
    ],
    [
      'an unknown connection',
      () => {},
      ['status', 'nope', '--stage', 'dev'],
      /^error: unknown connection "nope" in stage dev \(connections: vertex-o, vitesse\)$/,
    ],
    [
      'a table that is not there',
      () => stack({ TableName: 'gone', FunctionName: FN }),
      ['status', '--stage', 'dev'],
      /^error: reading the connections: table gone \(stack TokenBroker-dev, eu-central-1\): table not found \(the stack's TableName output names it, but DynamoDB does not know it\)$/,
    ],
  ];

  for (const [name, arrange, argv, message] of failures) {
    it(`${name}: one line, exit 1`, async () => {
      arrange();
      const r = await ops(...argv);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^error: [^\n]+\n$/);
      expect(r.stderr.trimEnd()).toMatch(message);
    });
  }
});

describe('--stage: actions are audited in the broker log group', () => {
  const store = () => new DynamoTokenStore(ddb, table);

  it('reset writes the same audit line to stderr and to the log group, with the operator from sts', async () => {
    await seedNote(store(), 'vertex-o', T0, { circuit: circuit(T0, configHash) });
    const r = await ops('reset', 'vertex-o', '--stage', 'dev');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^reset vertex-o: closed the circuit \(invalid_client/);
    expect((await store().get('vertex-o'))?.circuit).toBeUndefined();

    const line = r.stderr.trim();
    const audit = JSON.parse(line) as Record<string, unknown>;
    expect(audit).toMatchObject({
      message: 'ops',
      action: 'reset',
      connection: 'vertex-o',
      result: 'reset',
      operator: OPERATOR,
      target: 'dev',
      timestamp: new Date(T0).toISOString(),
    });
    expect(logs.commandCalls(CreateLogStreamCommand)[0]!.args[0].input).toEqual({
      logGroupName: '/token-broker/dev/broker',
      logStreamName: 'ops-cli',
    });
    const put = logs.commandCalls(PutLogEventsCommand);
    expect(put).toHaveLength(1);
    expect(put[0]!.args[0].input).toEqual({
      logGroupName: '/token-broker/dev/broker',
      logStreamName: 'ops-cli',
      logEvents: [{ timestamp: T0, message: line }],
    });
  });

  it('uses FunctionLogGroup without LogGroupName, and /aws/lambda/<FunctionName> without either', async () => {
    stack({ TableName: table, FunctionName: FN, FunctionLogGroup: '/custom/broker' });
    expect((await ops('refresh', 'vitesse', '--stage', 'dev')).code).toBe(0);
    expect(logs.commandCalls(PutLogEventsCommand)[0]!.args[0].input.logGroupName).toBe('/custom/broker');
    logs.resetHistory();
    stack({ TableName: table, FunctionName: FN });
    expect((await ops('refresh', 'vitesse', '--stage', 'dev')).code).toBe(0);
    expect(logs.commandCalls(PutLogEventsCommand)[0]!.args[0].input.logGroupName).toBe(`/aws/lambda/${FN}`);
  });

  it('an existing ops-cli stream is fine', async () => {
    logs
      .on(CreateLogStreamCommand)
      .rejects(new ResourceAlreadyExistsException({ message: 'The specified log stream already exists', $metadata: {} }));
    const r = await ops('reset', 'vertex-o', '--stage', 'dev');
    expect(r.code).toBe(0);
    expect(logs.commandCalls(PutLogEventsCommand)).toHaveLength(1);
  });

  it('does nothing when the audit stream cannot be opened', async () => {
    await seedNote(store(), 'vertex-o', T0, { circuit: circuit(T0, configHash) });
    logs.on(CreateLogStreamCommand).rejects(
      new CloudWatchLogsServiceException({
        name: 'AccessDeniedException',
        $fault: 'client',
        message: 'not authorized to perform: logs:CreateLogStream',
        $metadata: {},
      }),
    );
    const r = await ops('reset', 'vertex-o', '--stage', 'dev');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'error: opening the audit stream in log group /token-broker/dev/broker: access denied: not authorized to perform: logs:CreateLogStream; nothing was done\n',
    );
    expect((await store().get('vertex-o'))?.circuit).toBeDefined();
  });

  it('does nothing when the operator cannot be identified', async () => {
    await seedNote(store(), 'vertex-o', T0, { circuit: circuit(T0, configHash) });
    sts.on(GetCallerIdentityCommand).rejects(
      new STSServiceException({
        name: 'ExpiredToken',
        $fault: 'client',
        message: 'The security token included in the request is expired',
        $metadata: {},
      }),
    );
    const r = await ops('reset', 'vertex-o', '--stage', 'dev');
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('error: finding who you are (sts:GetCallerIdentity): your AWS credentials have expired; log in again\n');
    expect((await store().get('vertex-o'))?.circuit).toBeDefined();
  });

  it('an action whose audit line the log group refused is done, but exits 1 saying so', async () => {
    await seedNote(store(), 'vertex-o', T0, { circuit: circuit(T0, configHash) });
    logs
      .on(PutLogEventsCommand)
      .rejects(
        new CloudWatchLogsServiceException({ name: 'ServiceUnavailableException', $fault: 'server', message: 'try again', $metadata: {} }),
      );
    const r = await ops('reset', 'vertex-o', '--stage', 'dev');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^reset vertex-o: closed the circuit/);
    const [audit, error] = r.stderr.trim().split('\n');
    expect(JSON.parse(audit!)).toMatchObject({ message: 'ops', result: 'reset' });
    expect(error).toBe(
      'error: writing the audit line to log group /token-broker/dev/broker: ServiceUnavailableException: try again (the action itself was done; its audit line is above)',
    );
    expect((await store().get('vertex-o'))?.circuit).toBeUndefined();
  });
});

describe('downloadPackage', () => {
  it('takes only https (loopback http for tests) and never quotes the presigned URL in an error', async () => {
    const failure = (url: string): Promise<Error> =>
      downloadPackage(url).then(
        () => new Error('downloaded'),
        (e: unknown) => e as Error,
      );
    const secretUrl = 'http://example.com/pkg.zip?X-Amz-Security-Token=CANARY-SESSION&X-Amz-Signature=abc';
    expect((await failure(secretUrl)).message).toBe('the code package location is not an https URL');
    expect((await failure('not a url')).message).not.toContain('not a url');
    const refused = await failure('http://127.0.0.1:1/pkg.zip?X-Amz-Security-Token=CANARY-SESSION');
    expect(refused.message).not.toBe('downloaded');
    expect(refused.message).not.toContain('CANARY');
  });
});
