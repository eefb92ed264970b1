/** Helpers for the operator CLI's tests: captured output, a local config file, seeded store items, the CLI as a child. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DynamoTokenStore } from '../../functions/adapters/dynamodb-store.js';
import type { Backoff, Circuit, ReleaseNote } from '../../functions/core/ports.js';
import type { Io } from '../../functions/ops/main.js';
import { type Finished, ROOT, runToCompletion } from '../local/helpers.js';

export type { Finished };

export interface Captured {
  io: Io;
  out(): string;
  err(): string;
}

export function capture(): Captured {
  let out = '';
  let err = '';
  return { io: { stdout: (t) => void (out += t), stderr: (t) => void (err += t) }, out: () => out, err: () => err };
}

/** A token value that must never show up in anything the CLI prints. */
export const CANARY_TOKEN = 'CANARY-access-token-never-printed';

export const CALLER = { accessKeyId: 'AKIDLOCALOPS', secretAccessKey: 'local-ops-caller-secret' };

/**
 * The local config file npm start and the CLI read: `vertex` rate-limited like Vertex O Series (10 per 8 h),
 * `pay` without rateLimit, `circuit` and `guarded` rate-limited (for the circuit and refresh tests), all against `tokenUrl`.
 */
export function writeLocalConfig(dir: string, tokenUrl: string): string {
  const callers = ['arn:aws:iam::111122223333:role/payments-*'];
  const doc = {
    connections: {
      vertex: { tokenUrl, grantType: 'client_credentials', secret: 'local/vertex', callers, rateLimit: { max: 10, windowSeconds: 28800 } },
      pay: { tokenUrl, grantType: 'client_credentials', scope: 'API', secret: 'local/pay', callers },
      circuit: {
        tokenUrl,
        grantType: 'client_credentials',
        secret: 'local/circuit',
        callers,
        rateLimit: { max: 10, windowSeconds: 28800 },
      },
      guarded: {
        tokenUrl,
        grantType: 'client_credentials',
        secret: 'local/guarded',
        callers,
        rateLimit: { max: 10, windowSeconds: 28800 },
      },
    },
    secrets: {
      'local/vertex': { client_id: 'vertex-client', client_secret: 'vertex-secret' },
      'local/pay': { client_id: 'pay-client', client_secret: 'pay-secret' },
      'local/circuit': { client_id: 'circuit-client', client_secret: 'circuit-secret' },
      'local/guarded': { client_id: 'guarded-client', client_secret: 'guarded-secret' },
    },
    callers: {
      [CALLER.accessKeyId]: { secretAccessKey: CALLER.secretAccessKey, principal: 'arn:aws:iam::111122223333:role/payments-api' },
    },
  };
  const path = join(dir, 'local-config.json');
  writeFileSync(path, JSON.stringify(doc, null, 2));
  return path;
}

/** Publishes a (fake-sealed) token for `connection` as a lease holder would. */
export async function seedToken(
  store: DynamoTokenStore,
  connection: string,
  t: { now: number; expiresAt: number; fp: string; sealed?: Uint8Array },
): Promise<void> {
  const got = await store.acquireLease(connection, 'seeder', t.now, t.now + 20_000);
  if (!got.lease) throw new Error('lease taken');
  const r = await store.publish(connection, got.lease, {
    sealed: t.sealed ?? new Uint8Array(Buffer.from(CANARY_TOKEN)),
    expiresAt: t.expiresAt,
    issuedAt: t.now,
    fp: t.fp,
    reason: 'expired',
  });
  if (r !== 'published') throw new Error(r);
}

/** Leaves a circuit, backoff or demand backoff in the item as a failed lease holder would. */
export async function seedNote(store: DynamoTokenStore, connection: string, now: number, note: ReleaseNote): Promise<void> {
  const got = await store.acquireLease(connection, 'seeder', now, now + 20_000);
  if (!got.lease) throw new Error('lease taken');
  await store.release(connection, got.lease, note);
}

export const circuit = (now: number, configHash: string, over: Partial<Circuit> = {}): Circuit => ({
  upstreamError: 'invalid_client',
  openedAt: now - 60_000,
  probeAt: now + 4 * 60_000,
  probes: 0,
  secretVersion: 'v1',
  configHashes: [configHash],
  checkedAt: now - 1_000,
  ...over,
});

export const backoff = (until: number, over: Partial<Backoff> = {}): Backoff => ({
  until,
  code: 'unavailable',
  message: 'upstream token endpoint unavailable',
  ...over,
});

/**
 * Runs the CLI as a user does: `npm run --silent ops -- ARGS` (--silent keeps npm's own banner off stdout),
 * or the bin launcher directly with `via: 'bin'`.
 */
export function runOps(args: string[], via: 'npm' | 'bin' = 'npm', timeoutMs = 60_000): Promise<Finished> {
  const [cmd, argv] =
    via === 'npm'
      ? ['npm', ['run', '--silent', 'ops', '--', ...args]]
      : [process.execPath, [join(ROOT, 'bin', 'token-broker-ops.mjs'), ...args]];
  return runToCompletion(cmd as string, argv as string[], timeoutMs);
}

/** Stdout of `status --json`: one object per line. */
export function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
