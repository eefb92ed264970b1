import { describe, expect, it } from 'vitest';
import { UsageError, USAGE, parseOpsArgs } from '../../functions/ops/flags.js';
import { main } from '../../functions/ops/main.js';
import { capture } from './support.js';

const LOCAL = ['--config', 'c.json', '--dynamodb-endpoint', 'http://127.0.0.1:8000'];

function usageError(argv: string[]): string {
  try {
    parseOpsArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

describe('parseOpsArgs', () => {
  it('parses each command with a local target and its defaults', () => {
    expect(parseOpsArgs(['status', ...LOCAL])).toEqual({
      help: false,
      command: 'status',
      json: false,
      force: false,
      target: { kind: 'local', config: 'c.json', endpoint: 'http://127.0.0.1:8000', table: 'token-broker-local', region: 'us-east-1' },
    });
    expect(parseOpsArgs(['status', 'vertex', '--json', ...LOCAL, '--table', 'shared'])).toMatchObject({
      connection: 'vertex',
      json: true,
      target: { table: 'shared' },
    });
    expect(parseOpsArgs(['reset', 'vertex', ...LOCAL])).toMatchObject({ command: 'reset', connection: 'vertex' });
    expect(parseOpsArgs(['refresh', 'vertex', '--force', ...LOCAL])).toMatchObject({
      command: 'refresh',
      connection: 'vertex',
      force: true,
    });
  });

  it('parses a stage target, with or without --region', () => {
    expect(parseOpsArgs(['status', '--stage', 'prod'])).toMatchObject({ target: { kind: 'stage', stage: 'prod' } });
    expect(parseOpsArgs(['status', '--stage', 'prod'])).not.toHaveProperty('target.region');
    expect(parseOpsArgs(['reset', 'vertex', '--stage', 'dev', '--region', 'eu-west-1'])).toMatchObject({
      target: { kind: 'stage', stage: 'dev', region: 'eu-west-1' },
    });
  });

  it('--help and -h win over anything else on the line', () => {
    expect(parseOpsArgs(['--help'])).toEqual({ help: true });
    expect(parseOpsArgs(['reset', '-h'])).toEqual({ help: true });
    expect(parseOpsArgs(['bogus', '--nope', '--help'])).toEqual({ help: true });
  });

  const cases: Array<[string, string[], RegExp]> = [
    ['no command', [], /missing command/],
    ['unknown command', ['stats', ...LOCAL], /unknown command "stats"/],
    ['reset without a connection', ['reset', ...LOCAL], /reset needs a CONNECTION/],
    ['refresh without a connection', ['refresh', ...LOCAL], /refresh needs a CONNECTION/],
    ['a bad connection name', ['reset', 'Vertex_O', ...LOCAL], /"Vertex_O" is not a connection name/],
    ['an extra argument', ['reset', 'a', 'b', ...LOCAL], /unexpected argument "b"/],
    ['an unknown flag', ['status', '--stag', 'prod'], /unknown flag --stag/],
    ['a flag without its value', ['status', '--stage'], /flag --stage needs a value/],
    ['a value for a boolean flag', ['status', '--json=yes', ...LOCAL], /flag --json takes no value/],
    ['--json on an action', ['reset', 'a', '--json', ...LOCAL], /--json applies to status only/],
    ['--force on status', ['status', '--force', ...LOCAL], /--force applies to refresh only/],
    ['--force on reset', ['reset', 'a', '--force', ...LOCAL], /--force applies to refresh only/],
    ['no target', ['status'], /no target: give --stage NAME, or --config FILE --dynamodb-endpoint URL/],
    ['local without an endpoint', ['status', '--config', 'c.json'], /local mode needs --dynamodb-endpoint/],
    ['local without a config', ['status', '--dynamodb-endpoint', 'http://127.0.0.1:8000'], /local mode needs --config/],
    ['an empty config', ['status', '--config', '', '--dynamodb-endpoint', 'http://127.0.0.1:8000'], /local mode needs --config/],
    [
      'a bad endpoint',
      ['status', '--config', 'c.json', '--dynamodb-endpoint', 'localhost:8000'],
      /--dynamodb-endpoint must be an http\(s\) URL/,
    ],
    ['a bad table', ['status', ...LOCAL, '--table', 'a/b'], /--table must be/],
    ['stage and local flags', ['status', '--stage', 'prod', '--table', 't'], /--stage cannot be combined with --table/],
    ['stage and config', ['status', '--stage', 'prod', ...LOCAL], /--stage cannot be combined with --config, --dynamodb-endpoint/],
    ['a bad stage', ['status', '--stage', 'Prod!'], /--stage must be lowercase/],
    ['a too long stage', ['status', '--stage', 'a'.repeat(21)], /--stage must be/],
    ['a bad region', ['status', '--stage', 'prod', '--region', 'Europe'], /--region must look like/],
  ];

  for (const [name, argv, message] of cases) {
    it(`refuses ${name}`, () => {
      const m = usageError(argv);
      expect(m).toMatch(message);
      expect(m).toMatch(/\(see --help\)$/);
      expect(m).not.toContain('\n');
    });
  }
});

describe('main: usage errors and help', () => {
  for (const [name, argv] of cases()) {
    it(`exits 2 with one line on stderr and nothing on stdout for ${name}`, async () => {
      const c = capture();
      expect(await main(argv, c.io)).toBe(2);
      expect(c.out()).toBe('');
      expect(c.err()).toMatch(/^error: .+ \(see --help\)\n$/);
      expect(c.err().trim().split('\n')).toHaveLength(1);
    });
  }

  it('--help prints the usage on stdout and exits 0', async () => {
    const c = capture();
    expect(await main(['--help'], c.io)).toBe(0);
    expect(c.out()).toBe(`${USAGE}\n`);
    expect(c.err()).toBe('');
    for (const word of [
      'status',
      'reset',
      'refresh',
      '--stage',
      '--config',
      '--dynamodb-endpoint',
      '--table',
      '--json',
      '--force',
      'exit codes',
    ]) {
      expect(USAGE).toContain(word);
    }
  });

  function cases(): Array<[string, string[]]> {
    return [
      ['no arguments', []],
      ['an unknown command', ['purge', ...LOCAL]],
      ['an unknown flag', ['status', '--verbose', ...LOCAL]],
      ['a missing target', ['status']],
    ];
  }
});
