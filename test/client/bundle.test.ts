/**
 * What the client costs a caller's bundle (esbuild, platform node, esm, minify). Budgets, not benchmarks:
 * they fail when a change drags in a heavy dependency or the broker's own server code.
 */
import { describe, expect, it } from 'vitest';
import { CREDENTIAL_CHAIN, measure } from '../../client/bundle-size.js';

describe('client bundle', () => {
  it('imports nothing from functions/ and no undici at runtime (it is type-only: fetch or the caller’s dispatcher)', async () => {
    const m = await measure('client', 'client/src/index.ts', { mainFields: ['module', 'main'] });
    expect(Object.keys(m.byPackage).filter((p) => p === 'functions' || p === 'undici')).toEqual([]);
  });

  it('loads the AWS credential chain only through a dynamic import (callers passing credentials never evaluate it)', async () => {
    const m = await measure('client', 'client/src/index.ts', { mainFields: ['module', 'main'] });
    expect(m.dynamicOnly).toEqual(expect.arrayContaining(CREDENTIAL_CHAIN));
    expect(m.byPackage['@aws-sdk/credential-provider-node']).toBeGreaterThan(0);
  });

  it('stays small without the credential chain', async () => {
    const m = await measure('client', 'client/src/index.ts', { mainFields: ['module', 'main'], external: CREDENTIAL_CHAIN });
    expect(m.byPackage.client ?? 0).toBeLessThan(20 * 1024);
    expect(m.bytes).toBeLessThan(32 * 1024);
  });
});
