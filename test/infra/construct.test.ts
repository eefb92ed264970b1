/**
 * TokenBroker used as another CDK app uses it (a plain Stack, config inline, defaults for everything else).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import { describe, expect, it } from 'vitest';
import { ConfigError, StageError, TokenBroker, type TokenBrokerConfig } from '../../cdk/src/index';
import { type CfnResource, cdkContext, connection, resources } from './helpers';

const stack = () => new Stack(new App({ context: cdkContext(), outdir: mkdtempSync(join(tmpdir(), 'construct-')) }), 'Platform');
/** The helper's connections are loosely typed JSON, as a config file is. */
const asConfig = (doc: unknown) => doc as TokenBrokerConfig;
const config = asConfig({
  connections: { pay: connection(), tax: connection({ secret: 'tb/tax', rateLimit: { max: 5, windowSeconds: 3600 } }) },
});

describe('TokenBroker in a plain stack', () => {
  it('defaults: stage "default", data retained, deletion protection on, logs kept a year', () => {
    const s = stack();
    const broker = new TokenBroker(s, 'Broker', { config });
    expect(broker.stage).toBe('default');
    const t = Template.fromStack(s);
    const [table] = Object.values(resources(t, 'AWS::DynamoDB::Table')) as CfnResource[];
    expect(table!.DeletionPolicy).toBe('Retain');
    expect(table!.Properties.DeletionProtectionEnabled).toBe(true);
    for (const g of Object.values(resources(t, 'AWS::Logs::LogGroup'))) expect(g.Properties.RetentionInDays).toBe(365);
    t.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: 'default' });
    t.hasResourceProperties('AWS::SSM::Parameter', { Name: '/token-broker/default/url', Type: 'String' });
    t.hasResourceProperties('AWS::SSM::Parameter', { Name: '/token-broker/default/execute-api-arn-prefix' });
  });

  it('logical IDs of its stateful resources, so that upgrading the package never replaces them', () => {
    const s = stack();
    new TokenBroker(s, 'Broker', { stage: 'prod', config });
    const t = Template.fromStack(s);
    const ids = (type: string) => Object.keys(resources(t, type)).sort();
    expect(ids('AWS::DynamoDB::Table')).toEqual(['BrokerTable3D793508']);
    expect(ids('AWS::KMS::Key')).toEqual(['BrokerKeysSealKey42EC4FE6', 'BrokerKeysTableKey8F07F810']);
    expect(ids('AWS::Logs::LogGroup')).toEqual(['BrokerApiAccessLogs6A00B414', 'BrokerFunctionLogsCBF242F4']);
    expect(ids('AWS::SecretsManager::Secret')).toEqual(['BrokerSecretsSecrettbtax86D059F1', 'BrokerSecretsSecrettokenbrokertestx96E7FA9A']);
    expect(ids('AWS::ApiGateway::RestApi')).toEqual(['BrokerApiRestApiE2A50EBA']);
  });

  it('refuses a stage name that cannot name an API stage, and a bad config, with their messages', () => {
    expect(() => new TokenBroker(stack(), 'Broker', { stage: 'Prod_1', config })).toThrow(
      new StageError('stage "Prod_1": a stage name is lowercase letters, digits and -, starting with a letter, at most 20 characters'),
    );
    expect(
      () =>
        new TokenBroker(stack(), 'Broker', {
          config: asConfig({ connections: { pay: connection({ callers: [] }) } }),
          configSource: 'inline',
        }),
    ).toThrow(new ConfigError('invalid config (inline):\n  connections.pay.callers: must list at least one caller (deny by default)'));
  });

  it('callerPolicy(connection) and grantInvoke(grantee, connection): the connection’s two routes, unknown connections refused', () => {
    const s = stack();
    const broker = new TokenBroker(s, 'Broker', { config });
    expect(broker.callerPolicy('pay').node.id).toBe('pay');
    expect(() => broker.callerPolicy('nope')).toThrow('token-broker: no connection "nope" (connections: pay, tax)');
    const role = new iam.Role(s, 'Payments', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    broker.grantInvoke(role, 'pay');
    expect(() => broker.grantInvoke(role, 'nope')).toThrow(/no connection "nope"/);
    const t = Template.fromStack(s);
    const [policy] = Object.values(resources(t, 'AWS::IAM::Policy')).filter((p) => JSON.stringify(p.Properties.Roles).includes('Payments'));
    const [statement] = policy!.Properties.PolicyDocument.Statement;
    expect(statement.Action).toBe('execute-api:Invoke');
    const arns = (statement.Resource as unknown[]).map((r) => JSON.stringify(r));
    expect(arns).toHaveLength(2);
    expect(arns[0]).toContain('"/default/GET/tokens/pay"');
    expect(arns[1]).toContain('"/default/POST/tokens/pay/invalidate"');
  });

  it('a stage whose dashboard would exceed CloudWatch’s 500 widgets is refused at synth, not at deploy', () => {
    const arn = (i: number) => `arn:aws:secretsmanager:eu-west-1:111122223333:secret:tb/${i}-AbCdEf`;
    const many = (n: number) =>
      asConfig({ connections: Object.fromEntries(Array.from({ length: n }, (_, i) => [`c${i}`, connection({ secret: arn(i) })])) });
    expect(() => new TokenBroker(stack(), 'Broker', { stage: 'big', config: many(82) })).not.toThrow(); // 5 + 82 * 6 widgets
    expect(() => new TokenBroker(stack(), 'Broker', { stage: 'big', config: many(83) })).toThrow(
      new StageError(
        'stage "big": 83 connections need 503 dashboard widgets and CloudWatch allows 500: split the connections across stages',
      ),
    );
  }, 60_000);

  it('one TokenBroker per stack (its outputs have fixed names): a second one is refused, saying why', () => {
    const s = stack();
    new TokenBroker(s, 'A', { stage: 'a', config });
    expect(() => new TokenBroker(s, 'B', { stage: 'b', config })).toThrow(
      new StageError(
        'token-broker: Platform/A is already in this stack; its outputs (ApiUrl, TableName...) have fixed names, so stage "b" needs a stack of its own',
      ),
    );
  });
});
