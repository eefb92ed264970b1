import { defineConfig } from 'vitest/config';

export default defineConfig({
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
  },
});
