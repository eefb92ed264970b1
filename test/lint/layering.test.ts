/**
 * The layering rules of eslint.config.js, under test: ESLint's Node API lints small snippets as if they stood
 * in each folder, and each wrong-way import (or clock, timer, randomness in the core) must be refused by
 * the layering rules, while the allowed ones pass.
 */
import { ESLint } from 'eslint';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LAYERING = new Set(['no-restricted-imports', 'no-restricted-globals', 'no-restricted-properties', 'no-restricted-syntax']);

let eslint: ESLint;
beforeAll(() => {
  eslint = new ESLint({ cwd: ROOT });
});

/** The layering rules that refuse `code` if it stood at `filePath` (relative to the repository root). */
async function refusals(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${ROOT}${filePath}` });
  const fatal = result!.messages.filter((m) => m.fatal);
  expect(fatal, 'the snippet parses').toEqual([]);
  return result!.messages.filter((m) => m.ruleId && LAYERING.has(m.ruleId)).map((m) => m.ruleId!);
}

describe('functions/core', () => {
  const CORE = 'functions/core/example.ts';

  it.each([
    ["import { DynamoTokenStore } from '../adapters/dynamodb-store.js';", 'no-restricted-imports'],
    ["import type { HttpHandler } from '../broker/http.js';", 'no-restricted-imports'],
    ["import { startGateway } from '../local/gateway.js';", 'no-restricted-imports'],
    ["export { main } from '../ops/main.js';", 'no-restricted-imports'],
    ["import { DynamoDBClient } from '@aws-sdk/client-dynamodb';", 'no-restricted-imports'],
    ["import { SignatureV4 } from '@smithy/signature-v4';", 'no-restricted-imports'],
    ["import { request } from 'undici';", 'no-restricted-imports'],
    ["import { Logger } from '@aws-lambda-powertools/logger';", 'no-restricted-imports'],
    ["import { randomUUID } from 'node:crypto';", 'no-restricted-imports'],
    ["import { randomBytes } from 'crypto';", 'no-restricted-imports'],
    ["import { setTimeout as wait } from 'node:timers/promises';", 'no-restricted-imports'],
    ["import { performance } from 'node:perf_hooks';", 'no-restricted-imports'],
    ['export const id = crypto.randomUUID();', 'no-restricted-globals'],
    ['export const r = Math.random();', 'no-restricted-properties'],
    ['export const t = Date.now();', 'no-restricted-properties'],
    ['export const d = new Date();', 'no-restricted-syntax'],
    ['export const s = Date();', 'no-restricted-syntax'],
    ['export const p = performance.now();', 'no-restricted-globals'],
    ['setTimeout(() => undefined, 10);', 'no-restricted-globals'],
    ['setInterval(() => undefined, 10);', 'no-restricted-globals'],
    ['export const s = AbortSignal.timeout(10);', 'no-restricted-properties'],
    ["export const m = () => import('../adapters/upstream-http.js');", 'no-restricted-syntax'],
    ["export const m = () => import('../../test/support/env.js');", 'no-restricted-syntax'],
    ["import { FakeClock } from '../../test/support/clock.js';", 'no-restricted-imports'],
  ])('refuses %s', async (code, rule) => {
    expect(await refusals(CORE, code)).toContain(rule);
  });

  it.each([
    "import { createHash } from 'node:crypto';\nexport const h = createHash('sha256').update('x').digest('hex');",
    "import type { Clock } from './ports.js';\nexport const at = (clock: Clock) => new Date(clock.now()).toISOString();",
    "import { BrokerError } from './errors.js';\nexport const e = new BrokerError('internal', 'x');",
    "import * as z from 'zod/mini';\nexport const s = z.string();",
    "import type { Served } from './broker.js';\nexport type S = Served;",
  ])('allows %s', async (code) => {
    expect(await refusals(CORE, code)).toEqual([]);
  });
});

describe('functions/ outside the core', () => {
  it.each([
    ['functions/local/example.ts', "import { issue } from '../../test/support/idp.js';"],
    ['functions/broker/example.ts', "import { apiEvent } from '../../bench/lib.js';"],
    ['functions/ops/example.ts', "import { issue } from '../../testkit/idp.js';"],
    ['functions/adapters/example.ts', "export const m = () => import('../../test/support/env.js');"],
  ])('%s: refuses %s', async (file, code) => {
    expect(await refusals(file, code)).toEqual([expect.stringMatching(/^no-restricted-(imports|syntax)$/)]);
  });

  it('may use adapters, Node and the AWS SDK', async () => {
    const code =
      "import { randomUUID } from 'node:crypto';\nimport { DynamoDBClient } from '@aws-sdk/client-dynamodb';\nimport { HttpUpstream } from '../adapters/upstream-http.js';\nexport const x = [randomUUID(), Date.now(), DynamoDBClient, HttpUpstream];";
    expect(await refusals('functions/broker/example.ts', code)).toEqual([]);
  });
});

describe('client/', () => {
  it.each([
    "import { parseConfig } from '../../functions/core/config.js';",
    "import type { TokenBroker } from '../../cdk/src/index.js';",
    "import { loadStage } from '../../infra/stages.js';",
    "import { median } from '../../bench/lib.js';",
    "import { FakeClock } from '../../test/support/clock.js';",
  ])('refuses %s', async (code) => {
    expect(await refusals('client/src/example.ts', code)).toEqual(['no-restricted-imports']);
  });

  it('may import its own modules and its dependencies', async () => {
    expect(
      await refusals(
        'client/src/example.ts',
        "import { SignatureV4 } from '@smithy/signature-v4';\nimport { TokenBrokerError } from './errors.js';\nexport { SignatureV4, TokenBrokerError };",
      ),
    ).toEqual([]);
  });
});

describe('infra/ and cdk/src/', () => {
  it.each([
    ['cdk/src/example.ts', "import { TokenBroker } from '../../functions/core/broker.js';"],
    ['cdk/src/units/example.ts', "import type { Token } from '../../../functions/core/ports.js';"],
    ['cdk/src/example.ts', "import { handler } from '../../functions/broker/handler.js';"],
    ['infra/example.ts', "import { DynamoTokenStore } from '../functions/adapters/dynamodb-store.js';"],
    ['infra/example.ts', "import { CALLER } from '../test/support/env.js';"],
    ['infra/example.ts', "import { median } from '../bench/lib.js';"],
  ])('%s: refuses %s', async (file, code) => {
    expect(await refusals(file, code)).toEqual(['no-restricted-imports']);
  });

  it.each([
    ['infra/example.ts', "import { ConfigError } from '../functions/core/config.js';\nexport { ConfigError };"],
    ['cdk/src/units/example.ts', "import type { BrokerConfig } from '../../../functions/core/config.js';\nexport type C = BrokerConfig;"],
    ['cdk/src/example.ts', "import { ROUTES } from '../../functions/contract/http.js';\nexport { ROUTES };"],
    ['infra/example.ts', "import { TokenBroker } from '../cdk/src/index.js';\nexport { TokenBroker };"],
  ])('%s: allows %s', async (file, code) => {
    expect(await refusals(file, code)).toEqual([]);
  });
});

describe('bench/', () => {
  it('refuses test files', async () => {
    expect(await refusals('bench/example.ts', "import { FakeClock } from '../test/support/clock.js';")).toEqual(['no-restricted-imports']);
  });

  it('may import the server code and the shared fakes', async () => {
    expect(
      await refusals(
        'bench/example.ts',
        "import { issue } from '../testkit/idp.js';\nimport { apiEvent } from '../functions/local/api-event.js';\nexport { issue, apiEvent };",
      ),
    ).toEqual([]);
  });
});

describe('testkit/', () => {
  it('refuses test and bench files', async () => {
    expect(await refusals('testkit/example.ts', "import { CALLER } from '../test/support/env.js';")).toEqual(['no-restricted-imports']);
    expect(await refusals('testkit/example.ts', "import { median } from '../bench/lib.js';")).toEqual(['no-restricted-imports']);
  });
});
