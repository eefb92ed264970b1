/**
 * The adapters only a refresh uses: the upstream client (undici) and the Secrets Manager client. compose.ts
 * loads this module on a container's first refresh, which needs both (the secret, then the token request).
 * One lazy module rather than one each: esbuild puts the code a lazy module shares with the init path into
 * chunks, one per combination of lazy modules sharing it, and every chunk is one more file to load at cold start.
 */
export { HttpUpstream } from '../adapters/upstream-http.js';
export { awsSecretsSource } from '../adapters/secrets-manager.js';
