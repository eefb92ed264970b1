/**
 * What the test run does not print (vitest.config.ts, onConsoleLog): only output a test causes on purpose
 * that says nothing about a failure. Today that is CDK's validation report when its one finding is the
 * warning for a stage synthesised without alarm subscribers (test/infra/operations.test.ts checks the
 * warning, and that a report with any other finding is still printed).
 */
import { stripVTControlCharacters } from 'node:util';

const NO_SUBSCRIBERS_REPORT = [
  /^WARNING token-broker \S+: alarms notify nobody: set settings\.alarms\.emails or settings\.alarms\.topicArn \(Annotation\)$/,
  /^\s+\S+\/Operations constructs\.Construct$/,
  /^\s+Acknowledge with 'Annotation::@token-broker\/cdk:no-alarm-subscribers'$/,
  /^A copy of this report can be found in: \S+$/,
];

/** True for a console message that is expected noise; anything else is printed as usual. */
export function expectedNoise(log: string): boolean {
  const lines = stripVTControlCharacters(log)
    .split('\n')
    .filter((l) => l.trim() !== '');
  return lines.some((l) => l.startsWith('A copy of this report')) && lines.every((l) => NO_SUBSCRIBERS_REPORT.some((re) => re.test(l)));
}
