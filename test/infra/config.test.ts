import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bundleConfigDocument, callerAccounts, principalArnPatterns, renderBundleConfig, secretRefs } from '../../cdk/src/connections';
import { PREBUILT_LAMBDA_DIR, stageLambdaCode } from '../../cdk/src/lambda-code';
import { parseConfig } from '../../functions/core/config';
import { CONFIG_DIR } from '../../infra/build';
import { loadStage } from '../../infra/stages';
import { asArray, bySid, configDirWith, connection, only, resources, synth, type Json, type Statement } from './helpers';

describe('connections -> infrastructure', () => {
  it('config/dev.json and config/prod.json are valid and cover the three upstreams', () => {
    for (const stage of ['dev', 'prod']) {
      const { config } = loadStage(stage, CONFIG_DIR);
      const c = (n: string) => config.connections.get(n)!;
      expect([...config.connections.keys()].sort()).toEqual(['vertex-cloud', 'vertex-oseries', 'vitesse']);
      expect(c('vitesse')).toMatchObject({ grantType: 'client_credentials', scope: 'API' });
      expect(c('vitesse').tokenUrl).toBe(
        stage === 'dev' ? 'https://staging-identity.vitessepsp.com/connect/token' : 'https://identity.vitessepsp.com/connect/token',
      );
      expect(c('vertex-oseries')).toMatchObject({
        grantType: 'client_credentials',
        tokenUrl: 'https://auth.vertexsmb.com/identity/connect/token',
        rateLimit: { max: 10, windowSeconds: 28800 },
      });
      expect(c('vertex-cloud')).toMatchObject({ grantType: 'password', scope: 'vtms-public-api openid profile' });
      for (const conn of config.connections.values()) expect(conn.secret).toMatch(new RegExp(`^token-broker/${stage}/`));
    }
  });

  it('secrets: names become placeholders, complete ARNs are referenced, anything else is refused', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:shared/vertex-AbCdEf';
    const config = parseConfig({
      connections: {
        a: connection({ secret: 'tb/a' }),
        b: connection({ secret: 'tb/a', grantType: 'password' }),
        c: connection({ secret: arn }),
      },
    });
    expect(secretRefs(config)).toEqual([
      { kind: 'arn', arn, connections: ['c'] },
      {
        kind: 'name',
        name: 'tb/a',
        connections: ['a', 'b'],
        placeholder: { client_id: 'REPLACE_ME', client_secret: 'REPLACE_ME', username: 'REPLACE_ME', password: 'REPLACE_ME' },
      },
    ]);
    const partial = parseConfig({ connections: { x: connection({ secret: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:foo' }) } });
    expect(() => secretRefs(partial, 'config/dev.json')).toThrow(/connections\.x\.secret: .* is not a complete Secrets Manager ARN/);
    const wild = parseConfig({ connections: { x: connection({ secret: 'tb/*' }) } });
    expect(() => secretRefs(wild)).toThrow(/connections\.x\.secret: "tb\/\*" is not a valid Secrets Manager name/);
  });

  it('caller accounts come from the callers ARNs', () => {
    const config = parseConfig({
      connections: {
        a: connection({ callers: ['arn:aws:iam::222233334444:role/x', 'arn:aws:iam::111122223333:role/y-*'] }),
        b: connection({ callers: ['arn:aws:iam::111122223333:user/z'] }),
      },
    });
    expect(callerAccounts(config)).toEqual(['111122223333', '222233334444']);
  });

  it('resource-policy principal patterns: a role with any path (the broker matches roles by account and name), users as given', () => {
    expect(
      principalArnPatterns([
        'arn:aws:iam::111122223333:role/service-role/App',
        'arn:aws:iam::111122223333:role/App',
        'arn:aws:iam::111122223333:user/ops/alice',
      ]),
    ).toEqual(['arn:aws:iam::111122223333:role/App', 'arn:aws:iam::111122223333:role/*/App', 'arn:aws:iam::111122223333:user/ops/alice']);
  });
});

describe('the Lambda asset: prebuilt code + config.json', () => {
  const { config } = loadStage('prod', CONFIG_DIR);

  it('config.json is the validated connections document (and nothing else), and parses back to the same config', () => {
    const text = renderBundleConfig(config);
    const doc = JSON.parse(text) as { connections: Record<string, unknown> };
    expect(Object.keys(doc)).toEqual(['connections']);
    expect(Object.keys(doc.connections)).toEqual(['vertex-cloud', 'vertex-oseries', 'vitesse']);
    expect(doc.connections.vitesse).not.toHaveProperty('name');
    expect(parseConfig(doc, 'config.json')).toEqual(config);
    expect(bundleConfigDocument(config)).toEqual(doc);
    expect(renderBundleConfig(loadStage('prod', CONFIG_DIR).config)).toBe(text); // deterministic
  });

  it('holds 100 connections (far beyond the 4 KB environment variable limit)', () => {
    const many = parseConfig({
      connections: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`conn-${i}`, connection({ secret: `tb/${i}` })])),
    });
    const text = renderBundleConfig(many);
    expect(text.length).toBeGreaterThan(4096);
    expect(parseConfig(JSON.parse(text)).connections.size).toBe(100);
  });

  it('stages the prebuilt files and config.json in a directory named by their content', () => {
    const prebuilt = mkdtempSync(join(tmpdir(), 'prebuilt-'));
    writeFileSync(join(prebuilt, 'index.mjs'), 'export const handler = async () => 1;');
    const root = mkdtempSync(join(tmpdir(), 'staging-'));
    const dir = stageLambdaCode(config, root, prebuilt);
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'index.mjs']);
    expect(readFileSync(join(dir, 'config.json'), 'utf8')).toBe(renderBundleConfig(config));
    expect(stageLambdaCode(config, root, prebuilt)).toBe(dir); // same content, same directory
    const other = parseConfig({ connections: { pay: connection() } });
    expect(stageLambdaCode(other, root, prebuilt)).not.toBe(dir); // another config is another asset
    writeFileSync(join(prebuilt, 'index.mjs'), 'export const handler = async () => 2;');
    expect(stageLambdaCode(config, root, prebuilt)).not.toBe(dir); // and so is other code
  });

  it('refuses to synthesise without the prebuilt code, saying how to build it', () => {
    const empty = mkdtempSync(join(tmpdir(), 'no-prebuilt-'));
    expect(() => stageLambdaCode(config, mkdtempSync(join(tmpdir(), 'staging-')), empty)).toThrow(
      `token-broker: the prebuilt Lambda code is missing (${join(empty, 'index.mjs')}): build @token-broker/cdk first (npm run build)`,
    );
  });

  it('the synthesised function runs the package prebuilt code: index.handler, chunks and config.json in its asset', () => {
    const { app, stack } = synth('dev');
    const assembly = app.synth();
    const template = JSON.parse(readFileSync(join(assembly.directory, stack.templateFile), 'utf8'));
    const fn = Object.values(template.Resources as Record<string, { Type: string; Properties: Json }>).find(
      (r) => r.Type === 'AWS::Lambda::Function',
    )!;
    expect(fn.Properties.Handler).toBe('index.handler');
    const assetDir = join(assembly.directory, `asset.${(fn.Properties.Code.S3Key as string).replace(/\.zip$/, '')}`);
    expect(existsSync(assetDir)).toBe(true);
    const prebuilt = readdirSync(PREBUILT_LAMBDA_DIR, { recursive: true }).map(String).sort();
    expect(readdirSync(assetDir, { recursive: true }).map(String).sort()).toEqual([...prebuilt, 'config.json'].sort());
    expect(readFileSync(join(assetDir, 'index.mjs'), 'utf8')).toBe(readFileSync(join(PREBUILT_LAMBDA_DIR, 'index.mjs'), 'utf8'));
    expect(JSON.parse(readFileSync(join(assetDir, 'config.json'), 'utf8'))).toEqual(
      bundleConfigDocument(loadStage('dev', CONFIG_DIR).config),
    );
  });
});

describe('stage options in the stack', () => {
  const org = { principalOrgId: 'o-abcdefghij' };
  const vpce = { privateEndpoint: { vpcEndpointIds: ['vpce-0123456789abcdef0'] } };

  it('organisation and private endpoint: PRIVATE endpoint, explicit denies on aws:PrincipalOrgID and aws:SourceVpce', () => {
    const dir = configDirWith('org', { settings: { ...org, ...vpce }, connections: { pay: connection() } });
    const { template } = synth('org', { configDir: dir });
    const api = only(resources(template, 'AWS::ApiGateway::RestApi'))[1].Properties;
    expect(api.EndpointConfiguration).toEqual({ Types: ['PRIVATE'], VpcEndpointIds: ['vpce-0123456789abcdef0'] });
    const s = bySid(api.Policy.Statement as Statement[]);
    expect(Object.keys(s).sort()).toEqual([
      'AllowConfiguredCallers',
      'DenyOtherAccounts',
      'DenyOutsideOrganisation',
      'DenyOutsideVpcEndpoints',
    ]);
    expect(s.DenyOutsideOrganisation).toMatchObject({
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Resource: 'execute-api:/*',
      Condition: { StringNotEquals: { 'aws:PrincipalOrgID': 'o-abcdefghij' } },
    });
    expect(s.DenyOutsideVpcEndpoints).toMatchObject({
      Effect: 'Deny',
      Condition: { StringNotEquals: { 'aws:SourceVpce': ['vpce-0123456789abcdef0'] } },
    });
  });

  it('organisation without private endpoint: accounts allowed, other accounts and non-members denied', () => {
    const dir = configDirWith('org', { settings: org, connections: { pay: connection() } });
    const { template } = synth('org', { configDir: dir });
    const api = only(resources(template, 'AWS::ApiGateway::RestApi'))[1].Properties;
    expect(api.EndpointConfiguration).toEqual({ Types: ['REGIONAL'] });
    expect(Object.keys(bySid(api.Policy.Statement as Statement[])).sort()).toEqual([
      'AllowConfiguredCallers',
      'DenyOtherAccounts',
      'DenyOutsideOrganisation',
    ]);
  });

  it('no account log role where the platform manages it', () => {
    const dir = configDirWith('x', { settings: { apiGatewayAccountLogRole: false }, connections: { pay: connection() } });
    expect(resources(synth('x', { configDir: dir }).template, 'AWS::ApiGateway::Account')).toEqual({});
    expect(Object.keys(resources(synth('dev').template, 'AWS::ApiGateway::Account'))).toHaveLength(1);
  });

  it('an invalid config fails the synth with the file named as given', () => {
    const dir = configDirWith('dev', { connections: { pay: connection({ callers: [] }) } });
    expect(() => synth('dev', { configDir: dir })).toThrow(
      /^invalid config \(.*dev\.json\):\n {2}connections\.pay\.callers: must list at least one caller/,
    );
  });

  it('a resource policy change forces a new API deployment (else it would not take effect)', () => {
    const deployment = (account: string) => {
      const dir = configDirWith('dev', { connections: { pay: connection({ callers: [`arn:aws:iam::${account}:role/app`] }) } });
      return Object.keys(resources(synth('dev', { configDir: dir }).template, 'AWS::ApiGateway::Deployment'));
    };
    const a = deployment('111122223333');
    expect(a).toHaveLength(1);
    expect(deployment('111122223333')).toEqual(a);
    expect(deployment('222233334444')).not.toEqual(a);
  });

  it('a secret given by ARN is referenced, not created, and is exactly what the function may read', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:shared/vertex-AbCdEf';
    const dir = configDirWith('dev', { connections: { pay: connection({ secret: arn }) } });
    const { template } = synth('dev', { configDir: dir });
    expect(resources(template, 'AWS::SecretsManager::Secret')).toEqual({});
    const statements = Object.values(resources(template, 'AWS::IAM::Policy')).flatMap(
      (p) => p.Properties.PolicyDocument.Statement as Statement[],
    );
    const read = statements.filter((st) => asArray(st.Action).includes('secretsmanager:GetSecretValue'));
    expect(read).toHaveLength(1);
    expect(read[0]!.Resource).toBe(arn);
  });
});

describe('cdk-nag (AwsSolutions)', () => {
  it('dev and prod synthesise with no unacknowledged finding', async () => {
    const { AwsSolutionsChecks } = await import('cdk-nag');
    for (const stage of ['dev', 'prod']) {
      const { stack } = synth(stage);
      const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
      expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join()}`)).toEqual([]);
      expect(report.success).toBe(true);
    }
  });

  it('acknowledges exactly these rules, each with a reason', () => {
    const { template } = synth('prod');
    const acks = new Map<string, string>();
    for (const r of Object.values(template.toJSON().Resources as Record<string, { Metadata?: Json }>)) {
      for (const rule of r.Metadata?.cdk_nag?.rules_to_suppress ?? []) acks.set(rule.id, rule.reason);
    }
    expect([...acks.keys()].sort()).toEqual([
      'AwsSolutions-APIG3',
      'AwsSolutions-COG4',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      'AwsSolutions-L1',
      'AwsSolutions-SMG4',
      'AwsSolutions-SNS2',
    ]);
    for (const reason of acks.values()) expect(reason.length).toBeGreaterThan(40);
  });
});
