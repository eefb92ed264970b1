/**
 * TEMP: the fake IdP moved to testkit/idp.ts (bench may not import test files). This re-export serves
 * bench/run.ts until it imports ../testkit/idp.js; then delete this file and its exception in eslint.config.js.
 */
export { issue, startIdp } from '../../testkit/idp.js';
