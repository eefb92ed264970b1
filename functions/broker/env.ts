// shim: remove at merge. BROKER_ENV moved to functions/contract/env.ts; this re-export serves
// functions/broker/compose.ts and cdk/src/units/function.ts until they import it from there.
export { BROKER_ENV } from '../contract/env.js';
