import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/*
 * Layering, enforced here (test/lint/layering.test.ts proves each rule fires):
 * - functions/core: the pure core. No adapter, broker, local or ops code, no AWS SDK or HTTP client, and no
 *   wall clock, timer or randomness except through its ports (functions/core/ports.ts). Hashing
 *   (node:crypto createHash) stays allowed.
 * - functions/**: nothing from test/ or bench/.
 * - client/**: the published caller package: nothing from the server, the infrastructure, bench or tests.
 * - infra/** and cdk/src/**: from functions/ only the contract (functions/contract/) and the config schema.
 * - bench/**: nothing from test/ (fakes it shares with the tests live in testkit/).
 * - testkit/**: fakes shared by tests and bench: nothing from test/ or bench/.
 * Each layer's rules are one list of import regexes, checked on static imports, re-exports and import().
 */

/** An import restriction: a regex on the import specifier, and why. */
const forbid = (regex, message) => ({ regex, message });

const NOT_TESTS = [forbid('(^|/)(test|testkit|bench)/', 'server code imports nothing from test/, testkit/ or bench/.')];

const CORE_IMPORTS = [
  ...NOT_TESTS,
  forbid(
    '(^|/)(adapters|broker|local|ops)(/|$)',
    'functions/core imports no adapter, broker, local or ops code: depend on a port (core/ports.ts).',
  ),
  forbid(
    '^@aws-sdk/|^@smithy/|^@aws-crypto/|^@aws-lambda-powertools/|^undici$|^aws-lambda$',
    'functions/core imports no AWS SDK, HTTP client or Lambda runtime library: that belongs in an adapter.',
  ),
];

/** Wall clock, timers and randomness: the core gets them only through its injected ports. */
const CORE_CLOCK_IMPORTS = [
  forbid('^(node:)?(timers|timers/promises|perf_hooks)$', 'functions/core uses the injected Clock, not timers or perf_hooks.'),
];
const CORE_CLOCK_PATHS = ['node:crypto', 'crypto'].map((name) => ({
  name,
  importNames: ['randomUUID', 'randomBytes', 'randomInt', 'getRandomValues', 'webcrypto'],
  message: 'functions/core takes ids and randomness from its ports; node:crypto is for hashing here.',
}));
const CORE_CLOCK_GLOBALS = [
  ...['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval'].map((name) => ({
    name,
    message: 'functions/core waits through the injected Clock (clock.sleep).',
  })),
  { name: 'performance', message: 'functions/core reads time from the injected Clock.' },
  { name: 'crypto', message: 'functions/core takes ids and randomness from its ports.' },
];
const CORE_CLOCK_PROPERTIES = [
  { object: 'Date', property: 'now', message: 'functions/core reads time from the injected Clock (clock.now()).' },
  { object: 'Math', property: 'random', message: 'functions/core takes randomness from its ports (or derives it from an id).' },
  { object: 'AbortSignal', property: 'timeout', message: 'functions/core times out through the injected Clock.' },
  { object: 'performance', property: 'now', message: 'functions/core reads time from the injected Clock.' },
  { object: 'process', property: 'hrtime', message: 'functions/core reads time from the injected Clock.' },
  ...['setTimeout', 'setInterval', 'setImmediate', 'crypto', 'performance'].map((property) => ({
    object: 'globalThis',
    property,
    message: 'functions/core uses its ports for time and randomness.',
  })),
];
const CORE_CLOCK_SYNTAX = [
  {
    selector: "NewExpression[callee.name='Date'][arguments.length=0]",
    message: 'functions/core reads time from the injected Clock: new Date(clock.now()).',
  },
  { selector: "CallExpression[callee.name='Date']", message: 'functions/core reads time from the injected Clock: new Date(clock.now()).' },
];

const CLIENT_IMPORTS = [
  forbid(
    '(^|/)(functions|cdk|infra|bench|test)/',
    '@token-broker/client is published alone: it imports nothing from functions/, cdk/, infra/, bench/ or test/.',
  ),
];

/** functions/ paths infra and the CDK construct may import, besides the contract. */
const INFRA_ALLOWED = ['contract/', 'core/config(\\.js)?$'];
// TEMP until wip/contract merges: the construct still reads these from the server code.
const INFRA_ALLOWED_TEMP = ['core/telemetry(\\.js)?$', 'core/limits(\\.js)?$', 'broker/env(\\.js)?$'];
const INFRA_IMPORTS = [
  forbid('(^|/)(test|bench)/', 'infra and the CDK construct import nothing from test/ or bench/.'),
  forbid(
    `(^|/)functions/(?!${[...INFRA_ALLOWED, ...INFRA_ALLOWED_TEMP].join('|')})`,
    'infra and the CDK construct import from functions/ only the contract (functions/contract/) and the config schema (functions/core/config).',
  ),
];

const BENCH_IMPORTS = [forbid('(^|/)test/', 'bench imports no test files: fakes it shares with the tests live in testkit/.')];
const TESTKIT_IMPORTS = [forbid('(^|/)(test|bench)/', 'testkit/ serves tests and bench: it imports from neither.')];

/** The rules for one layer: its import regexes on static imports and import(), plus extra restrictions. */
function layer(files, imports, extra = {}) {
  const dynamic = imports.map(({ regex, message }) => ({
    selector: `ImportExpression > Literal.source[value=/${regex.replaceAll('/', '\\/')}/]`,
    message,
  }));
  return {
    files,
    rules: {
      'no-restricted-imports': ['error', { paths: extra.paths ?? [], patterns: imports.map(({ regex, message }) => ({ regex, message })) }],
      'no-restricted-syntax': ['error', ...dynamic, ...(extra.syntax ?? [])],
      ...(extra.globals ? { 'no-restricted-globals': ['error', ...extra.globals] } : {}),
      ...(extra.properties ? { 'no-restricted-properties': ['error', ...extra.properties] } : {}),
    },
  };
}

const NO_LAZY_LOAD = {
  selector: 'ImportExpression',
  message: 'functions/core loads nothing lazily: the broker composes adapters (functions/broker).',
};

/** The core's rules; `clock: false` keeps the layering but not the clock and randomness rules. */
function coreLayer(files) {
  return layer(files, [...CORE_IMPORTS, ...CORE_CLOCK_IMPORTS], {
    paths: CORE_CLOCK_PATHS,
    globals: CORE_CLOCK_GLOBALS,
    properties: CORE_CLOCK_PROPERTIES,
    syntax: [NO_LAZY_LOAD, ...CORE_CLOCK_SYNTAX],
  });
}

const SOURCE = ['**/*.ts', '**/*.js', '**/*.mjs'];
const inside = (dir) => SOURCE.map((p) => `${dir}/${p}`);

export default tseslint.config(
  { ignores: ['node_modules/', 'cdk.out/', 'dist/', 'client/dist/', 'cdk/dist/', 'cdk/lambda/', 'coverage/', '.scratch/', 'bench/.work/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        Buffer: 'readonly',
        console: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        URL: 'readonly',
        AbortSignal: 'readonly',
        AbortController: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  layer(inside('functions'), NOT_TESTS),
  coreLayer(inside('functions/core')),
  layer(inside('client'), CLIENT_IMPORTS),
  layer([...inside('infra'), ...inside('cdk/src')], INFRA_IMPORTS),
  layer(inside('bench'), BENCH_IMPORTS),
  layer(inside('testkit'), TESTKIT_IMPORTS),
);
