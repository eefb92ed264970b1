import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../functions/core/config';
import {
  bundleConfigDocument,
  callerAccounts,
  copyConfigCommand,
  loadStageConfig,
  renderBundleConfig,
  secretRefs,
  stageBundleConfig,
  principalArnPatterns,
} from '../../infra/broker-config';
import { PROJECT_ROOT } from '../../infra/build';
import { getStage, StageError, STAGES, validateStage } from '../../infra/stages';
import { asArray, bySid, configDirWith, connection, only, resources, synth, type Json, type Statement } from './helpers';

const CONFIG_DIR = join(PROJECT_ROOT, 'config');

describe('stages', () => {
  it('knows dev and prod, with the settings that differ between them', () => {
    expect(Object.keys(STAGES).sort()).toEqual(['dev', 'prod']);
    expect(getStage('prod')).toMatchObject({ deletionProtection: true, apiExecutionLogLevel: 'ERROR', logLevel: 'INFO' });
    expect(getStage('dev')).toMatchObject({ deletionProtection: false, apiExecutionLogLevel: 'INFO' });
  });

  it('refuses a missing or unknown stage with one clear message', () => {
    expect(() => getStage(undefined)).toThrow(new StageError('no stage given: run with -c stage=NAME (known stages: dev, prod)'));
    expect(() => getStage('staging')).toThrow(new StageError('unknown stage "staging" (known stages: dev, prod)'));
    expect(() => getStage('toString')).toThrow(StageError);
  });

  it('validates settings: org id, VPC endpoint ids', () => {
    const dev = STAGES.dev!;
    expect(() => validateStage({ ...dev, principalOrgId: 'org-1' })).toThrow('stage "dev": principalOrgId "org-1" is not an organization id');
    expect(() => validateStage({ ...dev, privateEndpoint: { vpcEndpointIds: [] } })).toThrow('at least one vpcEndpointId');
    expect(() => validateStage({ ...dev, privateEndpoint: { vpcEndpointIds: ['vpc-123'] } })).toThrow('"vpc-123" is not a VPC endpoint id');
  });
});

describe('stage config files', () => {
  it('config/dev.json and config/prod.json are valid and cover the three upstreams', () => {
    for (const stage of ['dev', 'prod']) {
      const { config } = loadStageConfig(stage, CONFIG_DIR);
      const c = (n: string) => config.connections.get(n)!;
      expect([...config.connections.keys()].sort()).toEqual(['vertex-cloud', 'vertex-oseries', 'vitesse']);
      expect(c('vitesse')).toMatchObject({ grantType: 'client_credentials', scope: 'API' });
      expect(c('vitesse').tokenUrl).toBe(
        stage === 'dev'
          ? 'https://staging-identity.vitessepsp.com/connect/token'
          : 'https://identity.vitessepsp.com/connect/token',
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

  it('a missing config file is a StageError naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'empty-'));
    expect(() => loadStageConfig('dev', dir, dir)).toThrow(new StageError('stage "dev": connection config dev.json not found'));
  });

  it('an invalid config is a ConfigError naming the connection and field', () => {
    const dir = configDirWith('dev', { connections: { pay: connection({ tokenUrl: 'http://idp.example.com/token' }) } });
    expect(() => loadStageConfig('dev', dir, dir)).toThrow(ConfigError);
    expect(() => loadStageConfig('dev', dir, dir)).toThrow(
      'invalid config (dev.json):\n  connections.pay.tokenUrl: must be an https URL (http is allowed only for loopback hosts)',
    );
    const bad = configDirWith('dev', '{ "connections": ');
    expect(() => loadStageConfig('dev', bad, bad)).toThrow(/^invalid config \(dev\.json\): not valid JSON/);
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
});

describe('config.json in the bundle', () => {
  const { config } = loadStageConfig('prod', CONFIG_DIR);

  it('is the validated connections document, and parses back to the same config', () => {
    const text = renderBundleConfig(config);
    const doc = JSON.parse(text) as { connections: Record<string, unknown> };
    expect(Object.keys(doc)).toEqual(['connections']);
    expect(Object.keys(doc.connections)).toEqual(['vertex-cloud', 'vertex-oseries', 'vitesse']);
    expect(doc.connections.vitesse).not.toHaveProperty('name');
    expect(parseConfig(doc, 'config.json')).toEqual(config);
    expect(bundleConfigDocument(config)).toEqual(doc);
    expect(renderBundleConfig(loadStageConfig('prod', CONFIG_DIR).config)).toBe(text); // deterministic
  });

  it('holds 100 connections (far beyond the 4 KB env var limit)', () => {
    const many = parseConfig({
      connections: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`conn-${i}`, connection({ secret: `tb/${i}` })])),
    });
    const text = renderBundleConfig(many);
    expect(text.length).toBeGreaterThan(4096);
    expect(parseConfig(JSON.parse(text)).connections.size).toBe(100);
  });

  it('the afterBundling command copies the staged file into the bundle output dir', () => {
    const staged = stageBundleConfig(config, mkdtempSync(join(tmpdir(), 'staged-')));
    expect(staged).toMatch(/config-[0-9a-f]{16}\.json$/);
    const out = mkdtempSync(join(tmpdir(), 'bundle-out-'));
    execFileSync('bash', ['-c', copyConfigCommand(staged, out)]);
    expect(readFileSync(join(out, 'config.json'), 'utf8')).toBe(renderBundleConfig(config));
  });

  it('esbuild bundle: index.mjs (ESM, createRequire banner), source map and config.json side by side', () => {
    const stub = join(PROJECT_ROOT, 'test/infra/fixtures/stub-handler.ts');
    const { app, stack } = synth('dev', { code: undefined, handlerEntry: stub });
    const assembly = app.synth();
    const assets = readdirSync(assembly.directory).filter((d) => d.startsWith('asset.'));
    expect(assets).toHaveLength(1);
    const dir = join(assembly.directory, assets[0]!);
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'index.mjs', 'index.mjs.map']);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))).toEqual(bundleConfigDocument(loadStageConfig('dev', CONFIG_DIR).config));
    expect(readFileSync(join(dir, 'index.mjs'), 'utf8')).toMatch(/^import\{createRequire as \w+\}from"node:module";|^import \{ createRequire/);
    const template = JSON.parse(readFileSync(join(assembly.directory, `${stack.artifactId}.template.json`), 'utf8'));
    const lambda = Object.values(template.Resources as Record<string, { Type: string; Properties: Json }>).find(
      (r) => r.Type === 'AWS::Lambda::Function',
    )!;
    expect(lambda.Properties.Handler).toBe('index.handler');
  }, 120_000);
});

describe('stage options in the stack', () => {
  const orgStage = { ...STAGES.prod!, name: 'org', principalOrgId: 'o-abcdefghij', privateEndpoint: { vpcEndpointIds: ['vpce-0123456789abcdef0'] } };

  it('organisation and private endpoint: PRIVATE endpoint, explicit denies on aws:PrincipalOrgID and aws:SourceVpce', () => {
    const dir = configDirWith('org', { connections: { pay: connection() } });
    const { template } = synth('org', { stages: { org: orgStage }, configDir: dir });
    const api = only(resources(template, 'AWS::ApiGateway::RestApi'))[1].Properties;
    expect(api.EndpointConfiguration).toEqual({ Types: ['PRIVATE'], VpcEndpointIds: ['vpce-0123456789abcdef0'] });
    const s = bySid(api.Policy.Statement as Statement[]);
    expect(Object.keys(s).sort()).toEqual(['AllowConfiguredCallers', 'DenyOtherAccounts', 'DenyOutsideOrganisation', 'DenyOutsideVpcEndpoints']);
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
    const dir = configDirWith('org', { connections: { pay: connection() } });
    const stage = { ...STAGES.dev!, name: 'org', principalOrgId: 'o-abcdefghij' };
    const { template } = synth('org', { stages: { org: stage }, configDir: dir });
    const api = only(resources(template, 'AWS::ApiGateway::RestApi'))[1].Properties;
    expect(api.EndpointConfiguration).toEqual({ Types: ['REGIONAL'] });
    const s = bySid(api.Policy.Statement as Statement[]);
    expect(Object.keys(s).sort()).toEqual(['AllowConfiguredCallers', 'DenyOtherAccounts', 'DenyOutsideOrganisation']);
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
    expect(r.stderr).toContain('token-broker: no stage given: run with -c stage=NAME');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 30_000);

  it('a missing handler entry: exit 1 naming the file', () => {
    const r = run({ stage: 'dev', handlerEntry: '/nonexistent/handler.ts' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(
      'token-broker: handler entry /nonexistent/handler.ts not found (synth with a stub: -c handlerEntry=PATH)',
    );
    expect(existsSync('/nonexistent')).toBe(false);
  }, 30_000);

  it('a handler entry outside the repository: exit 1', () => {
    const r = run({ stage: 'dev', handlerEntry: join(tmpdir()) });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/^token-broker: handler entry .* must be inside the repository/);
  }, 30_000);
});

describe('resource-policy principal patterns', () => {
  it('allow a role with any path (the broker matches roles by account and name), users as given, no duplicates', () => {
    expect(
      principalArnPatterns([
        'arn:aws:iam::111122223333:role/service-role/App',
        'arn:aws:iam::111122223333:role/App',
        'arn:aws:iam::111122223333:user/ops/alice',
      ]),
    ).toEqual([
      'arn:aws:iam::111122223333:role/App',
      'arn:aws:iam::111122223333:role/*/App',
      'arn:aws:iam::111122223333:user/ops/alice',
    ]);
  });
});
