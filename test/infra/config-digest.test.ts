/**
 * The function's BROKER_CONFIG_SHA256 names the config.json synth validated and staged beside the code, so
 * the function takes it without validating it again (functions/broker/config-file.ts).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configDigest } from '../../functions/contract/config-digest';
import { only, resources, synth } from './helpers';

describe('the config digest', () => {
  it('is the SHA-256 of the config.json in the function asset', () => {
    const { app, template } = synth('dev');
    const fn = only(resources(template, 'AWS::Lambda::Function'))[1].Properties;
    const digest = fn.Environment.Variables.BROKER_CONFIG_SHA256 as string;
    const staged = join(app.outdir, '.token-broker-lambda');
    const digests = readdirSync(staged).map((d) => configDigest(readFileSync(join(staged, d, 'config.json'), 'utf8')));
    expect(digests).toEqual([digest]);
  });
});
