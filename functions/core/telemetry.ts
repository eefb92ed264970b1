// shim: remove at merge. The telemetry vocabulary moved to functions/contract/telemetry.ts; this re-export
// serves functions/broker/{observability,gauges,compose}.ts and cdk/src/units/function.ts until they import it.
export * from '../contract/telemetry.js';
