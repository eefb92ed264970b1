/**
 * Issue 11, the infrastructure: alarms and dashboard rows per connection on the broker's own metrics (named by
 * functions/contract/telemetry.ts), the budget gauge's schedule, saved Logs Insights queries, the operator policy.
 */
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it, vi } from 'vitest';
import { QUERIES } from '../../cdk/src/operations/queries';
import { BUDGET_GAUGE_EVENT, LOG_FIELDS, METRIC_NAMESPACE, METRICS, SERVICE } from '../../functions/contract/telemetry';
import { expectedNoise } from '../support/console';
import { configDirWith, connection, type Json, logicalId, only, resources, synth } from './helpers';

const dev = synth('dev');
const CONNECTIONS = ['vertex-cloud', 'vertex-oseries', 'vitesse'];

const alarmsOf = (template = dev.template) =>
  Object.fromEntries(
    Object.values(resources(template, 'AWS::CloudWatch::Alarm')).map((a) => [a.Properties.AlarmName as string, a.Properties]),
  );
/** Alarm dimensions as CloudFormation lists them (sorted by name). */
const dims = (connection: string, ledger?: string) =>
  [
    { Name: 'service', Value: SERVICE },
    { Name: 'connection', Value: connection },
    ...(ledger ? [{ Name: 'ledger', Value: ledger }] : []),
  ].sort((a, b) => a.Name.localeCompare(b.Name));
/** A dashboard metric's dimensions: [namespace, name, key, value, ..., options?]. */
const widgetDims = (m: Json[]) => {
  const pairs = m.slice(2).filter((x) => typeof x === 'string');
  return Object.fromEntries(Array.from({ length: pairs.length / 2 }, (_, i) => [pairs[2 * i], pairs[2 * i + 1]]));
};

describe('alarms', () => {
  it('the function and API alarms stay, and every alarm notifies and clears on the stage topic', () => {
    const topicId = logicalId(dev.template, 'AWS::SNS::Topic');
    const alarms = alarmsOf();
    expect(alarms['TokenBroker-dev-FunctionErrors']).toMatchObject({ Namespace: 'AWS/Lambda', MetricName: 'Errors', Threshold: 5 });
    expect(alarms['TokenBroker-dev-FunctionThrottles']).toMatchObject({ Namespace: 'AWS/Lambda', MetricName: 'Throttles', Threshold: 1 });
    expect(alarms['TokenBroker-dev-Api5xx']).toMatchObject({ Namespace: 'AWS/ApiGateway', MetricName: '5XXError', Threshold: 5 });
    for (const a of Object.values(alarms)) {
      expect(a.AlarmActions).toEqual([{ Ref: topicId }]);
      expect(a.OKActions).toEqual([{ Ref: topicId }]);
      expect(a.Period).toBe(300);
    }
  });

  it('per connection: upstream errors, stale tokens and circuit open, on that connection’s metrics', () => {
    const alarms = alarmsOf();
    for (const c of CONNECTIONS) {
      expect(alarms[`TokenBroker-dev-${c}-UpstreamErrors`]).toMatchObject({
        Namespace: METRIC_NAMESPACE,
        MetricName: METRICS.upstreamErrors,
        Dimensions: dims(c),
        Statistic: 'Sum',
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        Threshold: 5, // config/dev.json
        TreatMissingData: 'notBreaching',
      });
      expect(alarms[`TokenBroker-dev-${c}-StaleTokens`]).toMatchObject({
        MetricName: METRICS.staleToken,
        Dimensions: dims(c),
        Statistic: 'Sum',
        Threshold: 1,
        TreatMissingData: 'notBreaching',
      });
      expect(alarms[`TokenBroker-dev-${c}-CircuitOpen`]).toMatchObject({
        MetricName: METRICS.circuitOpen,
        Dimensions: dims(c),
        Statistic: 'Maximum',
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        Threshold: 1,
      });
    }
  });

  it('per rate-limited connection: budget at or below its reserve, on its ledger, and a missing gauge alarms too', () => {
    const alarms = alarmsOf();
    expect(alarms['TokenBroker-dev-vertex-oseries-Budget']).toMatchObject({
      Namespace: METRIC_NAMESPACE,
      MetricName: METRICS.ledgerRemaining,
      Dimensions: dims('vertex-oseries', 'vertex-oseries'),
      Statistic: 'Minimum',
      ComparisonOperator: 'LessThanOrEqualToThreshold',
      Threshold: 2, // ceil(10 / 5)
      TreatMissingData: 'breaching',
    });
    const budgets = Object.keys(alarms).filter((n) => n.endsWith('-Budget'));
    expect(budgets).toEqual(['TokenBroker-dev-vertex-oseries-Budget']); // vitesse and vertex-cloud have no ledger
  });

  it('connections sharing a ledger each watch it under its own name; thresholds and period come from the stage file', () => {
    const dir = configDirWith('x', {
      settings: { alarms: { periodMinutes: 1, upstreamErrors: 3, staleTokens: 2 } },
      connections: {
        a: connection({ rateLimit: { max: 20, windowSeconds: 3600, key: 'shared' } }),
        b: connection({ rateLimit: { max: 20, windowSeconds: 3600, key: 'shared' } }),
      },
    });
    const alarms = alarmsOf(synth('x', { configDir: dir }).template);
    expect(alarms['TokenBroker-x-a-Budget']).toMatchObject({ Dimensions: dims('a', 'shared'), Threshold: 4, Period: 60 });
    expect(alarms['TokenBroker-x-b-Budget']).toMatchObject({ Dimensions: dims('b', 'shared'), Threshold: 4 });
    expect(alarms['TokenBroker-x-a-UpstreamErrors']).toMatchObject({ Threshold: 3, Period: 60 });
    expect(alarms['TokenBroker-x-b-StaleTokens']).toMatchObject({ Threshold: 2 });
  });
});

describe('alarm subscribers', () => {
  /** `run`, and what it wrote with console.error (CDK's validation report), captured instead of printed. */
  function consoleErrors<T>(run: () => T): { result: T; errors: string[] } {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void errors.push(args.join(' ')));
    try {
      return { result: run(), errors };
    } finally {
      spy.mockRestore();
    }
  }

  it('none: synth warns that alarms notify nobody; the test run leaves that report out, and only that one', () => {
    const dir = configDirWith('x', { connections: { pay: connection() } });
    const { result: stack, errors } = consoleErrors(() => synth('x', { configDir: dir }).stack);
    expect(Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('alarms notify nobody'))).toHaveLength(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/no-alarm-subscribers/);
    expect(expectedNoise(errors[0]!)).toBe(true);
    // A report with any other finding is printed.
    const other = 'WARNING token-broker x: something else (Annotation)\n   TokenBroker-x/Broker/Api constructs.Construct\n';
    expect(expectedNoise(other + errors[0]!)).toBe(false);
    expect(expectedNoise(errors[0]!.replace('no-alarm-subscribers', 'other-warning'))).toBe(false);
    expect(expectedNoise('an unrelated console line')).toBe(false);
  });

  it('e-mail addresses subscribe to the stage topic', () => {
    const dir = configDirWith('x', {
      settings: { alarms: { emails: ['ops@example.com', 'tax@example.com'] } },
      connections: { pay: connection() },
    });
    const { result: template, errors } = consoleErrors(() => synth('x', { configDir: dir }).template);
    expect(errors).toEqual([]); // no warning, no report
    const topicId = logicalId(template, 'AWS::SNS::Topic');
    const subs = Object.values(resources(template, 'AWS::SNS::Subscription')).map((s) => s.Properties);
    expect(subs).toEqual([
      { Protocol: 'email', Endpoint: 'ops@example.com', TopicArn: { Ref: topicId } },
      { Protocol: 'email', Endpoint: 'tax@example.com', TopicArn: { Ref: topicId } },
    ]);
  });

  it('an existing topic instead: no topic created, every alarm notifies that ARN', () => {
    const arn = 'arn:aws:sns:eu-west-1:111122223333:platform-oncall';
    const dir = configDirWith('x', { settings: { alarms: { topicArn: arn } }, connections: { pay: connection() } });
    const { template } = synth('x', { configDir: dir });
    expect(resources(template, 'AWS::SNS::Topic')).toEqual({});
    for (const a of Object.values(alarmsOf(template))) expect(a.AlarmActions).toEqual([arn]);
    expect(template.findOutputs('AlarmTopicArn').AlarmTopicArn?.Value).toBe(arn);
  });
});

/** The dashboard body with CloudFormation tokens replaced by a placeholder, parsed. */
function dashboardBody(template = dev.template): { widgets: { properties: Json; width: number; y: number }[] } {
  const body = only(resources(template, 'AWS::CloudWatch::Dashboard'))[1].Properties.DashboardBody;
  const text =
    typeof body === 'string' ? body : (body['Fn::Join'][1] as unknown[]).map((p) => (typeof p === 'string' ? p : 'TOKEN')).join('');
  return JSON.parse(text);
}

describe('dashboard', () => {
  it('a row per connection: alarms, tokens served, upstream requests, refusals, invalidations, budget and circuit', () => {
    const { widgets } = dashboardBody();
    for (const c of CONNECTIONS) {
      const row = widgets.filter((w) => (w.properties.title as string).startsWith(`${c}:`));
      expect(row.map((w) => w.properties.title)).toEqual([
        `${c}: alarms`,
        `${c}: tokens served`,
        `${c}: upstream requests`,
        `${c}: refused`,
        `${c}: invalidations`,
        c === 'vertex-oseries' ? `${c}: budget (ledger vertex-oseries) and circuit` : `${c}: circuit`,
      ]);
      expect(new Set(row.map((w) => w.y)).size).toBe(1); // one row
      expect(row.reduce((sum, w) => sum + w.width, 0)).toBe(24);
      expect(row[0]!.properties.alarms).toHaveLength(c === 'vertex-oseries' ? 4 : 3);
      const metrics = row.slice(1).flatMap((w) => w.properties.metrics as Json[]);
      for (const m of metrics) {
        expect(m[0]).toBe(METRIC_NAMESPACE);
        expect(widgetDims(m)).toMatchObject({ service: SERVICE, connection: c });
      }
      const names = metrics.map((m) => m[1]);
      for (const name of [
        METRICS.memoryHit,
        METRICS.storeHit,
        METRICS.staleToken,
        METRICS.refreshExpired,
        METRICS.refreshAhead,
        METRICS.refreshMinTtl,
        METRICS.refreshRotation,
        METRICS.upstreamErrors,
        METRICS.refusedLedgerExhausted,
        METRICS.refusedReserve,
        METRICS.refusedSpacing,
        METRICS.refusedUpstream429,
        METRICS.circuitRefusals,
        METRICS.invalidated,
        METRICS.invalidationDeferred,
        METRICS.circuitOpen,
      ]) {
        expect(names, `${c} ${name}`).toContain(name);
      }
      const ledger = metrics.filter(
        (m) => m[1] === METRICS.ledgerRemaining || m[1] === METRICS.ledgerUsed || m[1] === METRICS.nextSlotSeconds,
      );
      if (c === 'vertex-oseries') {
        expect(ledger).toHaveLength(3);
        for (const m of ledger) expect(widgetDims(m)).toEqual({ service: SERVICE, connection: c, ledger: 'vertex-oseries' });
      } else {
        expect(ledger).toHaveLength(0);
      }
    }
  });

  it('keeps the API, function and DynamoDB widgets', () => {
    const titles = dashboardBody().widgets.map((w) => w.properties.title);
    expect(titles.slice(0, 5)).toEqual([
      'Function and API alarms',
      'API requests and errors',
      'API latency (p50, p99)',
      'Function',
      'DynamoDB',
    ]);
  });
});

describe('budget gauge schedule', () => {
  it('invokes the broker function itself every minute with BUDGET_GAUGE_EVENT, no retries', () => {
    const fnId = logicalId(dev.template, 'AWS::Lambda::Function');
    const [ruleId, rule] = only(resources(dev.template, 'AWS::Events::Rule'));
    expect(rule.Properties).toMatchObject({ ScheduleExpression: 'rate(1 minute)', State: 'ENABLED' });
    expect(rule.Properties.Targets).toEqual([
      {
        Id: 'Target0',
        Arn: { 'Fn::GetAtt': [fnId, 'Arn'] },
        Input: JSON.stringify(BUDGET_GAUGE_EVENT),
        RetryPolicy: { MaximumEventAgeInSeconds: 60, MaximumRetryAttempts: 0 },
      },
    ]);
    const perms = Object.values(resources(dev.template, 'AWS::Lambda::Permission')).filter(
      (p) => p.Properties.Principal === 'events.amazonaws.com',
    );
    expect(perms.map((p) => p.Properties)).toEqual([
      {
        Action: 'lambda:InvokeFunction',
        FunctionName: { 'Fn::GetAtt': [fnId, 'Arn'] },
        Principal: 'events.amazonaws.com',
        SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] },
      },
    ]);
    expect(resources(dev.template, 'AWS::Lambda::Function')).toHaveProperty(fnId); // no second function
  });
});

describe('saved Logs Insights queries', () => {
  const defs = () => Object.values(resources(dev.template, 'AWS::Logs::QueryDefinition')).map((q) => q.Properties);
  const byName = () => Object.fromEntries(defs().map((d) => [d.Name, d]));

  it('four, in folder TokenBroker-<stage>, on the broker function’s log group', () => {
    const logId = Object.keys(resources(dev.template, 'AWS::Logs::LogGroup')).find((k) => k.startsWith('BrokerLogs'))!;
    expect(
      defs()
        .map((d) => d.Name)
        .sort(),
    ).toEqual(
      ['invalidations', 'refused-429-and-502', 'tokens-served-per-caller', 'upstream-refreshes'].map((n) => `TokenBroker-dev/${n}`),
    );
    for (const d of defs()) expect(d.LogGroupNames).toEqual([{ Ref: logId }]);
  });

  it('each reads the request line’s fields (LOG_FIELDS) for its question', () => {
    const q = (name: string) => byName()[`TokenBroker-dev/${name}`].QueryString as string;
    const served = q('tokens-served-per-caller');
    expect(served).toMatch(/^filter message = "request" and route = "token" and status = 200$/m);
    expect(served).toMatch(
      new RegExp(
        `\\| stats count\\(\\*\\) as served, count_distinct\\(${LOG_FIELDS.tokenFp}\\).* by ${LOG_FIELDS.connection}, ${LOG_FIELDS.caller}`,
      ),
    );
    const refused = q('refused-429-and-502');
    expect(refused).toContain('| filter message = "request" and (status = 429 or status = 502)');
    for (const f of [LOG_FIELDS.cause, LOG_FIELDS.upstreamError, LOG_FIELDS.error, LOG_FIELDS.ledgerRemaining, LOG_FIELDS.caller])
      expect(refused).toContain(f);
    const refreshes = q('upstream-refreshes');
    expect(refreshes).toContain(`| filter message = "request" and ispresent(${LOG_FIELDS.refreshReason})`);
    expect(refreshes).toMatch(/^fields @timestamp, connection, refreshReason, outcome/);
    const invalidations = q('invalidations');
    expect(invalidations).toContain('| filter (message = "request" and route = "invalidate") or message = "ops"');
    for (const f of [LOG_FIELDS.tokenFp, LOG_FIELDS.invalidation]) expect(invalidations).toContain(f);
  });

  it('names only fields the broker logs', () => {
    const known = new Set<string>([...Object.values(LOG_FIELDS), '@timestamp']);
    for (const query of Object.values(QUERIES)) for (const f of query.fields ?? []) expect(known, f).toContain(f);
  });
});

describe('operator policy and outputs', () => {
  it('grants exactly what the operator CLI needs, nothing on the seal key', () => {
    const ids = {
      table: logicalId(dev.template, 'AWS::DynamoDB::Table'),
      fn: logicalId(dev.template, 'AWS::Lambda::Function'),
      tableKey: Object.keys(resources(dev.template, 'AWS::KMS::Key')).find((k) => k.startsWith('TableKey'))!,
      logGroup: (dev.template.findOutputs('FunctionLogGroup').FunctionLogGroup!.Value as { Ref: string }).Ref,
    };
    // The ARN of the broker's log group, and of what follows it (a stream), as CloudFormation joins it.
    const logGroupArn = (...tail: string[]) => ({
      'Fn::Join': [
        '',
        [
          'arn:',
          { Ref: 'AWS::Partition' },
          ':logs:',
          { Ref: 'AWS::Region' },
          ':',
          { Ref: 'AWS::AccountId' },
          ':log-group:',
          { Ref: ids.logGroup },
          ...tail,
        ],
      ],
    });
    const [id, policy] = Object.entries(resources(dev.template, 'AWS::IAM::ManagedPolicy')).find(
      ([, p]) => p.Properties.ManagedPolicyName === 'TokenBroker-dev-ops',
    )!;
    expect(policy.Properties.PolicyDocument.Statement).toEqual([
      { Sid: 'ReadStackOutputs', Effect: 'Allow', Action: 'cloudformation:DescribeStacks', Resource: { Ref: 'AWS::StackId' } },
      {
        Sid: 'TokenAndLedgerItems',
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
        Resource: { 'Fn::GetAtt': [ids.table, 'Arn'] },
        Condition: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['tok#*', 'rl#*'] } },
      },
      {
        Sid: 'TableKeyThroughDynamoDb',
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: { 'Fn::GetAtt': [ids.tableKey, 'Arn'] },
        Condition: {
          StringEquals: {
            'kms:ViaService': { 'Fn::Join': ['', ['dynamodb.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
            'kms:EncryptionContext:aws:dynamodb:tableName': { Ref: ids.table },
          },
        },
      },
      { Sid: 'ReadDeployedConfig', Effect: 'Allow', Action: 'lambda:GetFunction', Resource: { 'Fn::GetAtt': [ids.fn, 'Arn'] } },
      {
        Sid: 'AuditLines',
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: logGroupArn(':log-stream:ops-cli'),
      },
      {
        Sid: 'AuditStreamCreate',
        Effect: 'Allow',
        Action: 'logs:CreateLogStream',
        Resource: logGroupArn(),
      },
    ]);
    expect(dev.template.findOutputs('OpsPolicyArn').OpsPolicyArn?.Value).toEqual({ Ref: id });
  });

  it('outputs the names the CLI reads: TableName, FunctionName, ApiUrl', () => {
    const out = (name: string) => dev.template.findOutputs(name)[name]?.Value;
    expect(out('TableName')).toEqual({ Ref: logicalId(dev.template, 'AWS::DynamoDB::Table') });
    expect(out('FunctionName')).toEqual({ Ref: logicalId(dev.template, 'AWS::Lambda::Function') });
    expect(JSON.stringify(out('ApiUrl'))).toMatch(/^\{"Fn::Join":\["",\["https:\/\/",\{"Ref":"ApiF70053CD"\},".execute-api."/);
  });
});
