import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../infra/build';
import { DYNAMODB_ACTIONS } from '../../cdk/src/units/function';
import { asArray, bySid, logicalId, only, resources, synth, type Statement } from './helpers';

const dev = synth('dev');
const prod = synth('prod');

const CONNECTIONS = ['vertex-cloud', 'vertex-oseries', 'vitesse'];

describe('stacks per stage', () => {
  it('names the stack TokenBroker-<stage>', () => {
    expect(dev.stack.stackName).toBe('TokenBroker-dev');
    expect(prod.stack.stackName).toBe('TokenBroker-prod');
    expect(dev.stack.node.id).toBe('TokenBroker-dev');
  });
});

describe('API', () => {
  it('has exactly GET /tokens/{connection} and POST /tokens/{connection}/invalidate, both AWS_IAM', () => {
    for (const { template } of [dev, prod]) {
      const methods = Object.values(resources(template, 'AWS::ApiGateway::Method'));
      expect(methods.map((m) => m.Properties.HttpMethod).sort()).toEqual(['GET', 'POST']);
      for (const m of methods) {
        expect(m.Properties.AuthorizationType).toBe('AWS_IAM');
        expect(m.Properties.Integration.Type).toBe('AWS_PROXY');
        expect(m.Properties.RequestParameters).toEqual({ 'method.request.path.connection': true });
      }
      const parts = Object.values(resources(template, 'AWS::ApiGateway::Resource')).map((r) => r.Properties.PathPart);
      // No {proxy+} or ANY: unknown routes reach nothing.
      expect(parts.sort()).toEqual(['invalidate', 'tokens', '{connection}']);
    }
  });

  it('routes both methods to the broker function only', () => {
    const fnId = logicalId(dev.template, 'AWS::Lambda::Function');
    const perms = Object.values(resources(dev.template, 'AWS::Lambda::Permission')).filter(
      (p) => p.Properties.Principal === 'apigateway.amazonaws.com',
    );
    expect(perms).toHaveLength(2); // no test-invoke permissions
    for (const p of perms) {
      expect(p.Properties.FunctionName).toEqual({ 'Fn::GetAtt': [fnId, 'Arn'] });
      expect(p.Properties.Principal).toBe('apigateway.amazonaws.com');
      const arn = JSON.stringify(p.Properties.SourceArn);
      expect(arn).toContain('{"Ref":"ApiDeploymentStagedev');
      expect(arn).toMatch(/"\/(GET\/tokens\/\*|POST\/tokens\/\*\/invalidate)"\]\]\}$/);
    }
  });

  it('resource policy: allows only the configured callers (any role path) on the two routes and denies every other account', () => {
    const policy = only(resources(dev.template, 'AWS::ApiGateway::RestApi'))[1].Properties.Policy;
    const s = bySid(policy.Statement as Statement[]);
    expect(Object.keys(s).sort()).toEqual(['AllowConfiguredCallers', 'DenyOtherAccounts']);
    expect(s.AllowConfiguredCallers).toMatchObject({
      Effect: 'Allow',
      Action: 'execute-api:Invoke',
      Resource: ['execute-api:/dev/GET/tokens/*', 'execute-api:/dev/POST/tokens/*/invalidate'],
    });
    expect(JSON.stringify(s.AllowConfiguredCallers!.Principal)).toContain(':iam::111122223333:root');
    // Not every principal of the account: only the configured role patterns, with any role path.
    expect(s.AllowConfiguredCallers!.Condition).toEqual({
      ArnLike: {
        'aws:PrincipalArn': [
          'arn:aws:iam::111122223333:role/payments-*',
          'arn:aws:iam::111122223333:role/*/payments-*',
          'arn:aws:iam::111122223333:role/tax-*',
          'arn:aws:iam::111122223333:role/*/tax-*',
          'arn:aws:iam::111122223333:role/tax-adjustments-*',
          'arn:aws:iam::111122223333:role/*/tax-adjustments-*',
        ],
      },
    });
    expect(s.DenyOtherAccounts).toEqual({
      Sid: 'DenyOtherAccounts',
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Action: 'execute-api:Invoke',
      Resource: 'execute-api:/*',
      Condition: { StringNotEquals: { 'aws:PrincipalAccount': ['111122223333'] } },
    });

    const prodPolicy = only(resources(prod.template, 'AWS::ApiGateway::RestApi'))[1].Properties.Policy;
    const ps = bySid(prodPolicy.Statement as Statement[]);
    expect(ps.DenyOtherAccounts!.Condition).toEqual({
      StringNotEquals: { 'aws:PrincipalAccount': ['444455556666', '777788889999'] },
    });
    const principals = JSON.stringify(ps.AllowConfiguredCallers!.Principal);
    expect(principals).toContain(':iam::444455556666:root');
    expect(principals).toContain(':iam::777788889999:root');
    expect(principals).not.toContain('111122223333');
  });

  it('is a REGIONAL endpoint unless the stage asks for a private one', () => {
    dev.template.hasResourceProperties('AWS::ApiGateway::RestApi', {
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
  });

  it('stage: data tracing off, execution log level per stage, throttling, metrics', () => {
    for (const [{ template }, level, rate, burst] of [
      [dev, 'INFO', 50, 100],
      [prod, 'ERROR', 500, 1000],
    ] as const) {
      const stage = only(resources(template, 'AWS::ApiGateway::Stage'))[1].Properties;
      expect(stage.MethodSettings).toEqual([
        {
          DataTraceEnabled: false,
          HttpMethod: '*',
          LoggingLevel: level,
          MetricsEnabled: true,
          ResourcePath: '/*',
          ThrottlingBurstLimit: burst,
          ThrottlingRateLimit: rate,
        },
      ]);
    }
  });

  it('access logs: JSON lines to their own log group, identity and outcome, no bodies', () => {
    const stage = only(resources(dev.template, 'AWS::ApiGateway::Stage'))[1].Properties;
    const groups = resources(dev.template, 'AWS::Logs::LogGroup');
    const accessGroup = Object.keys(groups).find((id) => id.startsWith('ApiAccessLogs'))!;
    expect(JSON.stringify(stage.AccessLogSetting.DestinationArn)).toMatch(
      new RegExp(`":log-group:",\\{"Ref":"${accessGroup}"\\}\\]\\]\\}$`),
    );
    const format: string = stage.AccessLogSetting.Format;
    const parsed = JSON.parse(format) as Record<string, string>;
    expect(parsed).toMatchObject({
      requestId: '$context.requestId',
      status: '$context.status',
      userArn: '$context.identity.userArn',
      resourcePath: '$context.resourcePath',
    });
    expect(format).not.toMatch(/\$input|requestOverride|responseOverride|\.body/);
    // A bad signature's message quotes the canonical request, X-Amz-Security-Token included: never logged.
    expect(format).not.toContain('messageString');
    expect(parsed.errorType).toBe('$context.error.responseType');
  });

  it('gateway errors use the contract error shape with fixed messages and are not cached', () => {
    dev.template.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
      ResponseType: 'MISSING_AUTHENTICATION_TOKEN',
      StatusCode: '403',
      ResponseTemplates: {
        'application/json': JSON.stringify({
          error: 'forbidden',
          message: 'unknown route, or the request is not signed (SigV4, service execute-api)',
        }),
      },
      ResponseParameters: Match.objectLike({ 'gatewayresponse.header.Cache-Control': "'no-store'" }),
    });
    // API Gateway's own message (a bad signature's canonical request, session token included) never reaches a caller.
    for (const [, r] of Object.entries(resources(dev.template, 'AWS::ApiGateway::GatewayResponse'))) {
      expect(JSON.stringify(r.Properties.ResponseTemplates)).not.toContain('$context.error');
    }
    dev.template.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
      ResponseType: 'THROTTLED',
      StatusCode: '429',
      ResponseParameters: Match.objectLike({ 'gatewayresponse.header.Retry-After': "'1'" }),
    });
  });
});

describe('function', () => {
  it('Node.js 22 on arm64, 512 MB, 15 s, with exactly the environment the handler reads', () => {
    const fn = only(resources(dev.template, 'AWS::Lambda::Function'))[1].Properties;
    expect(fn).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], MemorySize: 512, Timeout: 15 });
    const tableId = logicalId(dev.template, 'AWS::DynamoDB::Table');
    const sealId = Object.keys(resources(dev.template, 'AWS::KMS::Key')).find((id) => id.startsWith('SealKey'))!;
    expect(fn.Environment.Variables).toEqual({
      BROKER_TABLE: { Ref: tableId },
      BROKER_SEAL_KEY_ARN: { 'Fn::GetAtt': [sealId, 'Arn'] },
      BROKER_CONFIG_FILE: 'config.json',
      BROKER_CONFIG_SHA256: expect.stringMatching(/^[0-9a-f]{64}$/),
      POWERTOOLS_SERVICE_NAME: 'token-broker',
      POWERTOOLS_METRICS_NAMESPACE: 'TokenBroker',
      POWERTOOLS_LOG_LEVEL: 'DEBUG',
    });
    const prodFn = only(resources(prod.template, 'AWS::Lambda::Function'))[1].Properties;
    expect(prodFn.Environment.Variables.POWERTOOLS_LOG_LEVEL).toBe('INFO');
  });

  it('logs to its own log group with the stage retention', () => {
    for (const [{ template }, days, policy] of [
      [dev, 14, 'Delete'],
      [prod, 365, 'Retain'],
    ] as const) {
      const fn = only(resources(template, 'AWS::Lambda::Function'))[1].Properties;
      const groups = resources(template, 'AWS::Logs::LogGroup');
      const id = Object.keys(groups).find((k) => k.startsWith('BrokerLogs'))!;
      expect(fn.LoggingConfig).toEqual({ LogGroup: { Ref: id } });
      expect(groups[id]!.Properties.RetentionInDays).toBe(days);
      expect(groups[id]!.DeletionPolicy).toBe(policy);
      for (const g of Object.values(groups)) expect(g.Properties.RetentionInDays).toBe(days);
    }
  });
});

describe('function role: least privilege', () => {
  const role = () => {
    const roles = resources(dev.template, 'AWS::IAM::Role');
    const roleId = Object.keys(roles).find((id) => id.startsWith('BrokerRole'))!;
    const policies = Object.values(resources(dev.template, 'AWS::IAM::Policy')).filter((p) =>
      (p.Properties.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: roleId })),
    );
    return { roleId, role: roles[roleId]!, policies };
  };

  it('has no managed policies and one inline policy with exactly five statements', () => {
    const { role: r, policies } = role();
    expect(r.Properties.ManagedPolicyArns).toBeUndefined();
    expect(r.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
    ]);
    expect(policies).toHaveLength(1);
    const statements = policies[0]!.Properties.PolicyDocument.Statement as Statement[];
    expect(Object.keys(bySid(statements)).sort()).toEqual([
      'CacheLeaseLedgerItems',
      'ReadConnectionSecrets',
      'SealTokens',
      'TableKeyThroughDynamoDb',
      'WriteOwnLogs',
    ]);
  });

  it('names exact actions on exact resources: no "*" resource anywhere', () => {
    const { policies } = role();
    const s = bySid(policies[0]!.Properties.PolicyDocument.Statement as Statement[]);
    const tableId = logicalId(dev.template, 'AWS::DynamoDB::Table');
    const keys = Object.keys(resources(dev.template, 'AWS::KMS::Key'));
    const sealId = keys.find((k) => k.startsWith('SealKey'))!;
    const tableKeyId = keys.find((k) => k.startsWith('TableKey'))!;
    const logId = Object.keys(resources(dev.template, 'AWS::Logs::LogGroup')).find((k) => k.startsWith('BrokerLogs'))!;

    expect(s.WriteOwnLogs).toMatchObject({
      Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      Resource: { 'Fn::GetAtt': [logId, 'Arn'] },
    });
    expect(s.CacheLeaseLedgerItems).toMatchObject({
      Action: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
      Resource: { 'Fn::GetAtt': [tableId, 'Arn'] },
    });
    expect(s.CacheLeaseLedgerItems!.Condition).toBeUndefined();
    expect(s.TableKeyThroughDynamoDb).toMatchObject({
      Action: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey'],
      Resource: { 'Fn::GetAtt': [tableKeyId, 'Arn'] },
      Condition: { StringEquals: { 'kms:ViaService': { 'Fn::Join': ['', ['dynamodb.', { Ref: 'AWS::Region' }, '.amazonaws.com']] } } },
    });
    expect(s.SealTokens).toEqual({
      Sid: 'SealTokens',
      Effect: 'Allow',
      Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
      Resource: { 'Fn::GetAtt': [sealId, 'Arn'] },
      Condition: { StringEquals: { 'kms:EncryptionContext:purpose': 'token-broker-cache' } },
    });
    expect(s.ReadConnectionSecrets!.Action).toBe('secretsmanager:GetSecretValue');
    const secretArns = asArray(s.ReadConnectionSecrets!.Resource).map((r) => JSON.stringify(r));
    expect(secretArns).toHaveLength(3);
    for (const [i, name] of ['vertex-cloud', 'vertex-oseries', 'vitesse'].entries()) {
      expect(secretArns[i]).toContain(`:secretsmanager:`);
      expect(secretArns[i]).toContain(`:secret:token-broker/dev/${name}-??????"`);
    }

    for (const st of Object.values(s)) {
      for (const r of asArray(st.Resource)) {
        expect(r).not.toBe('*');
        expect(JSON.stringify(r)).not.toContain('*');
      }
      for (const a of asArray(st.Action)) expect(a).not.toContain('*');
    }
  });

  it('grants exactly the DynamoDB commands the store adapter sends', () => {
    const src = readFileSync(join(PROJECT_ROOT, 'functions/adapters/dynamodb-store.ts'), 'utf8');
    const block = /import\s*\{([^}]*)\}\s*from\s*'@aws-sdk\/client-dynamodb'/.exec(src)?.[1] ?? '';
    const commands = [...block.matchAll(/\b([A-Z][A-Za-z]+)Command\b/g)].map((m) => `dynamodb:${m[1]}`);
    expect(commands.length).toBeGreaterThan(0);
    expect([...new Set(commands)].sort()).toEqual([...DYNAMODB_ACTIONS].sort());
    // No other Lambda-side module sends DynamoDB commands (local mode has its own store).
    for (const dir of ['functions/adapters', 'functions/broker', 'functions/core']) {
      for (const f of readdirSync(join(PROJECT_ROOT, dir)).filter((n) => n.endsWith('.ts') && n !== 'dynamodb-store.ts')) {
        const text = readFileSync(join(PROJECT_ROOT, dir, f), 'utf8');
        for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'@aws-sdk\/(?:client|lib)-dynamodb'/g)) {
          expect(/Command\b/.test(m[1]!), `${dir}/${f} sends DynamoDB commands`).toBe(false);
        }
      }
    }
  });
});

describe('table', () => {
  it('pk (S) only, on demand, TTL on ttl, PITR, SSE with the customer-managed table key', () => {
    for (const { template } of [dev, prod]) {
      const tableKeyId = Object.keys(resources(template, 'AWS::KMS::Key')).find((k) => k.startsWith('TableKey'))!;
      const t = only(resources(template, 'AWS::DynamoDB::Table'))[1].Properties;
      expect(t.KeySchema).toEqual([{ AttributeName: 'pk', KeyType: 'HASH' }]);
      expect(t.AttributeDefinitions).toEqual([{ AttributeName: 'pk', AttributeType: 'S' }]);
      expect(t.BillingMode).toBe('PAY_PER_REQUEST');
      expect(t.TimeToLiveSpecification).toEqual({ AttributeName: 'ttl', Enabled: true });
      expect(t.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
      expect(t.SSESpecification).toEqual({
        SSEEnabled: true,
        SSEType: 'KMS',
        KMSMasterKeyId: { 'Fn::GetAtt': [tableKeyId, 'Arn'] },
      });
      expect(t.GlobalSecondaryIndexes).toBeUndefined();
      expect(t.StreamSpecification).toBeUndefined();
    }
  });

  it('prod: deletion protection and RETAIN; dev: DESTROY', () => {
    const p = only(resources(prod.template, 'AWS::DynamoDB::Table'))[1];
    expect(p.Properties.DeletionProtectionEnabled).toBe(true);
    expect(p.DeletionPolicy).toBe('Retain');
    expect(p.UpdateReplacePolicy).toBe('Retain');
    const d = only(resources(dev.template, 'AWS::DynamoDB::Table'))[1];
    expect(d.Properties.DeletionProtectionEnabled).toBe(false);
    expect(d.DeletionPolicy).toBe('Delete');
    for (const k of Object.values(resources(prod.template, 'AWS::KMS::Key'))) expect(k.DeletionPolicy).toBe('Retain');
    for (const k of Object.values(resources(dev.template, 'AWS::KMS::Key'))) expect(k.DeletionPolicy).toBe('Delete');
  });
});

describe('KMS key policies', () => {
  const keys = (template = dev.template) => {
    const all = resources(template, 'AWS::KMS::Key');
    const id = (p: string) => Object.keys(all).find((k) => k.startsWith(p))!;
    return { seal: all[id('SealKey')]!.Properties, table: all[id('TableKey')]!.Properties };
  };
  const USE = /^kms:(\*|Encrypt|Decrypt|ReEncrypt|GenerateDataKey|CreateGrant)/;

  it('both keys rotate', () => {
    const { seal, table } = keys();
    expect(seal.EnableKeyRotation).toBe(true);
    expect(table.EnableKeyRotation).toBe(true);
  });

  it('seal key: only the function role may use it, only with purpose=token-broker-cache', () => {
    const roleId = Object.keys(resources(dev.template, 'AWS::IAM::Role')).find((id) => id.startsWith('BrokerRole'))!;
    const s = bySid(keys().seal.KeyPolicy.Statement as Statement[]);
    expect(Object.keys(s).sort()).toEqual(['BrokerFunctionSealsTokens', 'KeyAdministrationWithoutUse']);
    expect(s.BrokerFunctionSealsTokens).toEqual({
      Sid: 'BrokerFunctionSealsTokens',
      Effect: 'Allow',
      Principal: { AWS: { 'Fn::GetAtt': [roleId, 'Arn'] } },
      Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
      Resource: '*',
      Condition: { StringEquals: { 'kms:EncryptionContext:purpose': 'token-broker-cache' } },
    });
    // The account administers the key but cannot use it (nor grant itself use).
    for (const a of asArray(s.KeyAdministrationWithoutUse!.Action)) expect(a).not.toMatch(USE);
  });

  it('table key: use only through DynamoDB in this account', () => {
    const statements = keys().table.KeyPolicy.Statement as Statement[];
    for (const st of statements) {
      const uses = asArray(st.Action).some((a) => USE.test(a));
      if (!uses) continue;
      expect(st.Condition?.StringEquals?.['kms:ViaService']).toEqual({
        'Fn::Join': ['', ['dynamodb.', { Ref: 'AWS::Region' }, '.amazonaws.com']],
      });
      expect(st.Condition?.StringEquals?.['kms:CallerAccount']).toEqual({ Ref: 'AWS::AccountId' });
    }
    expect(statements.filter((st) => asArray(st.Action).some((a) => USE.test(a)))).toHaveLength(1);
  });
});

describe('secrets', () => {
  it('creates a placeholder per named secret, RETAIN, with username/password only for password grants', () => {
    const secrets = Object.values(resources(dev.template, 'AWS::SecretsManager::Secret'));
    const byName = Object.fromEntries(secrets.map((s) => [s.Properties.Name, s]));
    expect(Object.keys(byName).sort()).toEqual(CONNECTIONS.map((c) => `token-broker/dev/${c}`));
    for (const s of secrets) {
      expect(s.DeletionPolicy).toBe('Retain');
      expect(s.Properties.GenerateSecretString).toBeUndefined();
    }
    expect(JSON.parse(byName['token-broker/dev/vitesse']!.Properties.SecretString)).toEqual({
      client_id: 'REPLACE_ME',
      client_secret: 'REPLACE_ME',
    });
    expect(JSON.parse(byName['token-broker/dev/vertex-cloud']!.Properties.SecretString)).toEqual({
      client_id: 'REPLACE_ME',
      client_secret: 'REPLACE_ME',
      username: 'REPLACE_ME',
      password: 'REPLACE_ME',
    });
  });
});

describe('callers', () => {
  it('one managed policy per connection, Invoke on that connection’s two routes in this stage only', () => {
    const apiId = logicalId(dev.template, 'AWS::ApiGateway::RestApi');
    const policies = Object.entries(resources(dev.template, 'AWS::IAM::ManagedPolicy')).filter(([, p]) =>
      (p.Properties.ManagedPolicyName as string).endsWith('-caller'),
    );
    expect(policies.map(([, p]) => p.Properties.ManagedPolicyName).sort()).toEqual(CONNECTIONS.map((c) => `TokenBroker-dev-${c}-caller`));
    for (const [id, p] of policies) {
      const name = CONNECTIONS.find((c) => p.Properties.ManagedPolicyName === `TokenBroker-dev-${c}-caller`)!;
      const [st, ...rest] = p.Properties.PolicyDocument.Statement as Statement[];
      expect(rest).toHaveLength(0);
      expect(st!.Effect).toBe('Allow');
      expect(st!.Action).toBe('execute-api:Invoke');
      const arns = asArray(st!.Resource).map((r) => JSON.stringify(r));
      expect(arns).toHaveLength(2);
      expect(arns[0]).toContain(JSON.stringify({ Ref: apiId }));
      expect(arns[0]).toMatch(new RegExp(`"/dev/GET/tokens/${name}"`));
      expect(arns[1]).toMatch(new RegExp(`"/dev/POST/tokens/${name}/invalidate"`));
      expect(arns.join()).not.toContain('*');
      // and a stack output with its ARN
      const outputs = dev.template.findOutputs('*', { Value: { Ref: id } });
      expect(Object.keys(outputs)).toHaveLength(1);
    }
    expect(Object.keys(dev.template.findOutputs('CallerPolicyArnVitesse'))).toHaveLength(1);
    // Callers in other accounts build their own policy from this prefix.
    const prefix = JSON.stringify(dev.template.findOutputs('ExecuteApiArnPrefix').ExecuteApiArnPrefix?.Value);
    expect(prefix).toContain(':execute-api:');
    expect(prefix).toContain(JSON.stringify({ Ref: apiId }));
  });
});
