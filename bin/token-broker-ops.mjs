#!/usr/bin/env node
// The operator CLI's launcher (package.json "bin": token-broker-ops; `npm run ops` runs it too). The repo
// runs its TypeScript through tsx, without a build step: register tsx's ESM loader in this process, then
// load the CLI. Resolved from this file's real path, so a linked or globally installed bin works as well.
import { register } from 'tsx/esm/api';

register();
await import('../functions/ops/cli.ts');
