/**
 * @token-broker/cdk as a platform team gets it: built, packed, installed from the tarball into a CDK app
 * outside this repository (with aws-cdk-lib and constructs from the npm cache), synthesised from an inline
 * config. The Lambda in the tarball is the one the run's global setup built from this checkout.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildLibrary } from '../../cdk/scripts/build';
import { PROJECT_ROOT } from '../../infra/build';
import type { Json } from './helpers';

const npm = (args: string[], cwd: string) =>
  execFileSync('npm', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' },
  });

const PEERS = (() => {
  const lock = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version: string }>;
  };
  return ['aws-cdk-lib', 'constructs'].map((p) => `${p}@${lock.packages[`node_modules/${p}`]!.version}`);
})();

const CONFIG = {
  settings: { removalPolicy: 'destroy', alarms: { emails: ['ops@example.com'] } },
  connections: {
    vitesse: {
      tokenUrl: 'https://identity.vitessepsp.com/connect/token',
      grantType: 'client_credentials',
      scope: 'API',
      secret: 'payments/vitesse',
      callers: ['arn:aws:iam::444455556666:role/payments-*'],
    },
    'vertex-oseries': {
      tokenUrl: 'https://auth.vertexsmb.com/identity/connect/token',
      grantType: 'client_credentials',
      secret: 'tax/vertex-oseries',
      callers: ['arn:aws:iam::444455556666:role/tax-*'],
      rateLimit: { max: 10, windowSeconds: 28800 },
    },
  },
};

const CJS_APP = `
const { App, Stack } = require('aws-cdk-lib');
const { TokenBroker } = require('@token-broker/cdk');
const app = new App({ outdir: process.argv[2] });
const stack = new Stack(app, 'Platform');
const broker = new TokenBroker(stack, 'Broker', { stage: 'prod', config: ${JSON.stringify(CONFIG)} });
broker.callerPolicy('vitesse');
app.synth();
`;

const ESM_APP = `
import { App, Stack } from 'aws-cdk-lib';
import { TokenBroker } from '@token-broker/cdk';
const app = new App({ outdir: process.argv[2] });
new TokenBroker(new Stack(app, 'Platform'), 'Broker', { config: ${JSON.stringify({ connections: CONFIG.connections })} });
app.synth();
`;

const TYPED_APP = `
import { App, Stack } from 'aws-cdk-lib';
import { TokenBroker, type TokenBrokerConfig } from '@token-broker/cdk';
const config: TokenBrokerConfig = ${JSON.stringify(CONFIG)};
const broker = new TokenBroker(new Stack(new App(), 'S'), 'B', { config });
export const url: string = broker.url;
// @ts-expect-error grantType is one of the broker's grants
export const badGrant: TokenBrokerConfig = { connections: { x: { ...config.connections.vitesse, grantType: 'implicit' } } };
// @ts-expect-error removalPolicy is retain or destroy
export const badSetting: TokenBrokerConfig = { connections: {}, settings: { removalPolicy: 'keep' } };
`;

describe('@token-broker/cdk from its tarball, in a CDK app outside the repository', () => {
  let app: string;
  let files: string[];

  beforeAll(() => {
    const packDir = mkdtempSync(join(tmpdir(), 'broker-pack-'));
    return buildLibrary().then(() => {
      const [packed] = JSON.parse(
        npm(['pack', '--json', '--ignore-scripts', '--pack-destination', packDir, '-w', '@token-broker/cdk'], PROJECT_ROOT),
      ) as {
        filename: string;
        files: { path: string }[];
      }[];
      files = packed!.files.map((f) => f.path);
      app = mkdtempSync(join(tmpdir(), 'platform-cdk-app-'));
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'platform-cdk-app', private: true, type: 'commonjs' }));
      npm(['install', '--prefer-offline', '--no-package-lock', join(packDir, packed!.filename), ...PEERS], app);
    });
  }, 300_000);

  it('the tarball holds the built library, its types, the prebuilt Lambda, README and licence: no source, no tests', () => {
    expect(files).toEqual(
      expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/index.cjs', 'dist/index.d.cts', 'lambda/index.mjs']),
    );
    expect(files.filter((f) => f.startsWith('lambda/chunks/refresh-adapters-'))).toHaveLength(2); // the chunk and its source map
    for (const f of files) {
      expect(f).toMatch(
        /^(package\.json|README\.md|LICENSE|dist\/index\.(cjs|d\.cts)|lambda\/(index\.mjs(\.map)?|chunks\/[\w-]+\.mjs(\.map)?))$/,
      );
    }
  });

  it('the library loads only its peer dependencies, its dependency and node builtins', () => {
    const code = readFileSync(join(app, 'node_modules/@token-broker/cdk/dist/index.cjs'), 'utf8');
    const required = new Set([...code.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]!));
    for (const r of required) expect(r).toMatch(/^(node:[a-z_/]+|aws-cdk-lib(\/[a-z0-9-]+)?|constructs|zod(\/[a-z]+)?)$/);
  });

  it('synthesises new TokenBroker(stack, "Broker", { config }): IAM auth, denying resource policy, CMK table with PITR, the prebuilt asset', () => {
    writeFileSync(join(app, 'app.cjs'), CJS_APP);
    const out = join(app, 'cdk.out');
    mkdirSync(out);
    execFileSync(process.execPath, ['app.cjs', out], { cwd: app, encoding: 'utf8' });
    const template = JSON.parse(readFileSync(join(out, 'Platform.template.json'), 'utf8')) as {
      Resources: Record<string, { Type: string; Properties: Json }>;
    };
    const of = (type: string) => Object.entries(template.Resources).filter(([, r]) => r.Type === type);
    const one = (type: string) => {
      const all = of(type);
      expect(all, type).toHaveLength(1);
      return all[0]![1].Properties;
    };

    const methods = of('AWS::ApiGateway::Method').map(([, r]) => r.Properties);
    expect(methods.map((m) => m.HttpMethod).sort()).toEqual(['GET', 'POST']);
    for (const m of methods) expect(m.AuthorizationType).toBe('AWS_IAM');

    const statements = one('AWS::ApiGateway::RestApi').Policy.Statement as Json[];
    expect(statements.find((s) => s.Sid === 'DenyOtherAccounts')).toMatchObject({
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Action: 'execute-api:Invoke',
      Condition: { StringNotEquals: { 'aws:PrincipalAccount': ['444455556666'] } },
    });

    const table = one('AWS::DynamoDB::Table');
    const keyId = of('AWS::KMS::Key').find(([id]) => id.includes('TableKey'))![0];
    expect(table.SSESpecification).toEqual({ SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } });
    expect(table.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });

    const fn = one('AWS::Lambda::Function');
    expect(fn).toMatchObject({ Handler: 'index.handler', Runtime: 'nodejs22.x' });
    const asset = join(out, `asset.${(fn.Code.S3Key as string).replace(/\.zip$/, '')}`);
    const installed = join(app, 'node_modules/@token-broker/cdk/lambda');
    const list = (dir: string) => readdirSync(dir, { recursive: true }).map(String).sort();
    expect(list(asset)).toEqual([...list(installed), 'config.json'].sort());
    expect(readFileSync(join(asset, 'index.mjs'))).toEqual(readFileSync(join(installed, 'index.mjs')));
    expect(Object.keys(JSON.parse(readFileSync(join(asset, 'config.json'), 'utf8')).connections)).toEqual(['vertex-oseries', 'vitesse']);
  }, 120_000);

  it('loads from an ESM app too', () => {
    writeFileSync(join(app, 'app.mjs'), ESM_APP);
    const out = mkdtempSync(join(tmpdir(), 'platform-esm-out-'));
    execFileSync(process.execPath, ['app.mjs', out], { cwd: app, encoding: 'utf8' });
    expect(readdirSync(out)).toContain('Platform.template.json');
  }, 120_000);

  it('its types check a consumer’s config', () => {
    writeFileSync(join(app, 'typed.ts'), TYPED_APP);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
        files: ['typed.ts'],
      }),
    );
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'node_modules/typescript/bin/tsc'), '-p', app], { encoding: 'utf8' });
  }, 120_000);
});
