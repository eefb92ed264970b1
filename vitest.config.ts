import { defineConfig } from 'vitest/config';
import { expectedNoise } from './test/support/console.js';

/**
 * Workspace packages (`@token-broker/client`) resolve to their TypeScript sources through the
 * `@token-broker/source` export condition, so tests need no build; the pack test checks the built package.
 */
const SOURCE_CONDITION = '@token-broker/source';

export default defineConfig({
  // Only ours: node_modules packages stay external and Node resolves them with its own conditions.
  ssr: { resolve: { conditions: [SOURCE_CONDITION] } },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    // The CDK tests synthesise the package's prebuilt Lambda: build it from this checkout first.
    globalSetup: ['test/support/prebuilt-lambda.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The AWS SDK warns about Node 20 at import; it is noise in test output.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    // Tests capture the log lines they assert on; what is left and expected is not printed (test/support/console.ts).
    onConsoleLog: (log) => (expectedNoise(log) ? false : undefined),
  },
});
