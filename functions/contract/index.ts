/**
 * The contract the broker Lambda, the CDK construct, the app, the operator CLI, local mode and the bench
 * share: error codes and statuses, routes, names, environment variables, telemetry, Retry-After.
 * Pure TypeScript: it imports nothing (no core, adapters, broker code or AWS SDK), so any part may import it.
 */
export * from './config-digest.js';
export * from './deployment.js';
export * from './env.js';
export * from './errors.js';
export * from './names.js';
export * from './retry-after.js';
export * from './routes.js';
export * from './telemetry.js';
