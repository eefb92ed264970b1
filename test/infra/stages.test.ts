import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBrokerDocument, RETENTION_DAYS, StageError } from '../../cdk/src/settings';
import { ConfigError } from '../../functions/core/config';
import { CONFIG_DIR, PROJECT_ROOT } from '../../infra/build';
import { knownStages, loadStage } from '../../infra/stages';
import { configDirWith, connection, synth } from './helpers';

/** The settings of a stage that sets none: retained, protected, a year of logs, throttled. */
const SECURE_DEFAULTS = {
  removalPolicy: 'retain',
  deletionProtection: true,
  logRetentionDays: 365,
  logLevel: 'INFO',
  apiExecutionLogLevel: 'ERROR',
  throttling: { rateLimit: 500, burstLimit: 1000 },
};

describe('stages are files: config/<stage>.json', () => {
  it('dev and prod, with the settings that differ between them', () => {
    expect(knownStages(CONFIG_DIR)).toEqual(['dev', 'prod']);
    // prod keeps the secure defaults of a config that sets nothing.
    expect(loadStage('prod', CONFIG_DIR).settings).toMatchObject(SECURE_DEFAULTS);
    expect(loadStage('dev', CONFIG_DIR).settings).toMatchObject({
      removalPolicy: 'destroy',
      deletionProtection: false,
      logRetentionDays: 14,
      logLevel: 'DEBUG',
      apiExecutionLogLevel: 'INFO',
      alarms: { functionErrors: 5, api5xx: 5, upstreamErrors: 5, functionThrottles: 1, staleTokens: 1 },
    });
  });

  it('refuses a missing or unknown stage with one clear message', () => {
    expect(() => loadStage(undefined, CONFIG_DIR)).toThrow(
      new StageError('no stage given: run with -c stage=NAME (known stages: dev, prod)'),
    );
    expect(() => loadStage('staging', CONFIG_DIR)).toThrow(new StageError('unknown stage "staging" (known stages: dev, prod)'));
    expect(() => loadStage('toString', CONFIG_DIR)).toThrow(StageError);
  });

  it('adding a stage is adding a file', () => {
    const dir = configDirWith('staging', { settings: { logRetentionDays: 30 }, connections: { pay: connection() } });
    expect(knownStages(dir)).toEqual(['staging']);
    const { stack, template } = synth('staging', { configDir: dir });
    expect(stack.stackName).toBe('TokenBroker-staging');
    template.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: 'staging' });
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  it('an invalid connection names the file and the field', () => {
    const dir = configDirWith('dev', { connections: { pay: connection({ tokenUrl: 'http://idp.example.com/token' }) } });
    expect(() => loadStage('dev', dir, dir)).toThrow(
      new ConfigError(
        'invalid config (dev.json):\n  connections.pay.tokenUrl: must be an https URL (http is allowed only for loopback hosts)',
      ),
    );
    const bad = configDirWith('dev', '{ "connections": ');
    expect(() => loadStage('dev', bad, bad)).toThrow(/^invalid config \(dev\.json\): not valid JSON/);
  });
});

describe('stage settings', () => {
  const parse = (settings: unknown) => parseBrokerDocument({ settings, connections: { pay: connection() } }, 'config/x.json');

  it('every setting has a secure default: { connections } alone is a complete config', () => {
    expect(parseBrokerDocument({ connections: { pay: connection() } }).settings).toEqual({
      ...SECURE_DEFAULTS,
      apiGatewayAccountLogRole: true,
      alarms: { periodMinutes: 5, functionErrors: 1, functionThrottles: 1, api5xx: 1, upstreamErrors: 1, staleTokens: 1, emails: [] },
    });
  });

  it.each([
    [{ principalOrgId: 'org-1' }, 'settings.principalOrgId: must be an AWS Organizations id (o-...)'],
    [{ privateEndpoint: { vpcEndpointIds: [] } }, 'settings.privateEndpoint.vpcEndpointIds: needs at least one VPC endpoint id'],
    [
      { privateEndpoint: { vpcEndpointIds: ['vpc-123'] } },
      'settings.privateEndpoint.vpcEndpointIds.0: must be a VPC endpoint id (vpce-...)',
    ],
    [{ throttling: { rateLimit: 0, burstLimit: 10 } }, 'settings.throttling.rateLimit: must be greater than 0'],
    [{ throttling: { rateLimit: 10, burstLimit: 0.5 } }, 'settings.throttling.burstLimit: Invalid input: expected int, received number'],
    [{ logRetentionDays: 10 }, `settings.logRetentionDays: must be one of ${RETENTION_DAYS.join(', ')}`],
    [{ removalPolicy: 'keep' }, 'settings.removalPolicy: Invalid option: expected one of "retain"|"destroy"'],
    [{ logLevel: 'TRACE' }, 'settings.logLevel: Invalid option: expected one of "DEBUG"|"INFO"|"WARN"|"ERROR"'],
    [{ deletionProtection: 'yes' }, 'settings.deletionProtection: Invalid input: expected boolean, received string'],
    [{ env: { account: '1234' } }, 'settings.env.account: must be a 12-digit account id'],
    [{ env: { region: 'Europe' } }, 'settings.env.region: must be a region name such as eu-west-1'],
    [{ alarms: { emails: ['ops'] } }, 'settings.alarms.emails.0: must be an e-mail address'],
    [
      { alarms: { topicArn: 'arn:aws:sqs:eu-west-1:111122223333:q' } },
      'settings.alarms.topicArn: must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)',
    ],
    [
      { alarms: { emails: ['ops@example.com'], topicArn: 'arn:aws:sns:eu-west-1:111122223333:oncall' } },
      'settings.alarms.topicArn: give either emails (the stack creates a topic) or topicArn (an existing topic), not both',
    ],
    [{ alarms: { upstreamErrors: 0 } }, 'settings.alarms.upstreamErrors: Too small: expected number to be >=1'],
    [{ alarms: { periodMinutes: 90 } }, 'settings.alarms.periodMinutes: Too big: expected number to be <=60'],
    [{ logLevl: 'INFO' }, 'settings: Unrecognized key: "logLevl"'],
  ])('%j fails with one line naming the file and the field', (settings, line) => {
    expect(() => parse(settings)).toThrow(new ConfigError(`invalid config (config/x.json):\n  ${line}`));
  });

  it('a misspelt top-level key is refused', () => {
    expect(() => parseBrokerDocument({ setings: {}, connections: {} }, 'config/x.json')).toThrow(
      new ConfigError('invalid config (config/x.json):\n  (root): Unrecognized key: "setings"'),
    );
  });

  it('bad settings fail the synth of a stage, naming its file', () => {
    const dir = configDirWith('dev', { settings: { logRetentionDays: 10 }, connections: { pay: connection() } });
    expect(() => synth('dev', { configDir: dir })).toThrow(
      /^invalid config \(.*dev\.json\):\n {2}settings\.logRetentionDays: must be one of/,
    );
  });
});

describe('the CDK app entry (infra/app.ts)', () => {
  const run = (context: Record<string, unknown>) =>
    spawnSync(join(PROJECT_ROOT, 'node_modules/.bin/tsx'), [join(PROJECT_ROOT, 'infra/app.ts')], {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify(context), CDK_OUTDIR: mkdtempSync(join(tmpdir(), 'cdk-out-')) },
    });

  it('an unknown stage: exit 1, one line, no stack trace', () => {
    const r = run({ stage: 'staging' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('token-broker: unknown stage "staging" (known stages: dev, prod)');
  }, 30_000);

  it('no stage: exit 1 with the usage hint', () => {
    const r = run({});
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('token-broker: no stage given: run with -c stage=NAME (known stages: dev, prod)');
  }, 30_000);
});
