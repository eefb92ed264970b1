/** The environment the Lambda reads at cold start (set by the CDK construct, cdk/src/units/function.ts; local mode does not use them). */
export const BROKER_ENV = {
  /** DynamoDB table name. */
  table: 'BROKER_TABLE',
  /** KMS key ARN for the token envelope encryption. */
  sealKeyArn: 'BROKER_SEAL_KEY_ARN',
  /** The connection config shipped in the bundle, relative to LAMBDA_TASK_ROOT (default config.json). */
  configFile: 'BROKER_CONFIG_FILE',
  /** SHA-256 of the config file as synth validated and wrote it: that document is not validated again at start. */
  configDigest: 'BROKER_CONFIG_SHA256',
  /** Optional: how long a container answers from memory, 0..5000 ms (default 5000). */
  memoryMaxAgeMs: 'BROKER_MEMORY_MAX_AGE_MS',
} as const;
