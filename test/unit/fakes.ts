/**
 * Test doubles shared by test/unit and test/adapters: an in-memory LedgerStore that
 * behaves like the DynamoDB one (optimistic concurrency on `ver`).
 */
import type { LedgerState, LedgerStore, LedgerWriteResult } from '../../functions/core/ports.js';

interface LedgerRecord {
  entries: Record<string, number>;
  backoffUntil?: number;
  holds?: Record<string, number>;
  ver: number;
}

/** An in-memory LedgerStore; `beforeWrite` lets a test interleave a competing writer. */
export class MemoryLedgerStore implements LedgerStore {
  readonly items = new Map<string, LedgerRecord>();
  readonly writes: { key: string; expectedVer: number; entries: Record<string, number>; attemptId: string; result: LedgerWriteResult }[] =
    [];
  reads = 0;
  beforeWrite?: (key: string) => void;

  async read(key: string): Promise<LedgerState> {
    this.reads++;
    const r = this.items.get(key);
    if (!r) return { entries: {}, ver: 0 };
    return {
      entries: { ...r.entries },
      ver: r.ver,
      ...(r.backoffUntil !== undefined ? { backoffUntil: r.backoffUntil } : {}),
      ...(r.holds ? { holds: { ...r.holds } } : {}),
    };
  }

  async write(key: string, expectedVer: number, entries: Record<string, number>, attemptId: string): Promise<LedgerWriteResult> {
    this.beforeWrite?.(key);
    const r = this.items.get(key);
    const ver = r?.ver ?? 0;
    const result: LedgerWriteResult = ver === expectedVer ? 'written' : 'conflict';
    if (result === 'written') this.items.set(key, { ...r, entries: { ...entries }, ver: ver + 1 });
    this.writes.push({ key, expectedVer, entries: { ...entries }, attemptId, result });
    return result;
  }

  async setBackoff(key: string, until: number): Promise<void> {
    const r = this.items.get(key) ?? { entries: {}, ver: 0 };
    if (r.backoffUntil === undefined || r.backoffUntil < until) this.items.set(key, { ...r, backoffUntil: until, ver: r.ver + 1 });
  }

  async hold(key: string, connection: string, until: number): Promise<void> {
    const r = this.items.get(key) ?? { entries: {}, ver: 0 };
    if ((r.holds?.[connection] ?? 0) < until) this.items.set(key, { ...r, holds: { ...r.holds, [connection]: until }, ver: r.ver + 1 });
  }

  async releaseHold(key: string, connection: string): Promise<void> {
    const r = this.items.get(key);
    if (!r?.holds?.[connection]) return;
    const { [connection]: _gone, ...holds } = r.holds;
    this.items.set(key, { ...r, holds, ver: r.ver + 1 });
  }

  readonly refunds: string[] = [];
  async refund(key: string, attemptId: string): Promise<void> {
    const r = this.items.get(key);
    if (!r || !(attemptId in r.entries)) return;
    const { [attemptId]: _gone, ...entries } = r.entries;
    this.refunds.push(attemptId);
    this.items.set(key, { ...r, entries, ver: r.ver + 1 });
  }

  /** Simulates another writer committing an entry. */
  commit(key: string, attemptId: string, at: number): void {
    const r = this.items.get(key) ?? { entries: {}, ver: 0 };
    this.items.set(key, { ...r, entries: { ...r.entries, [attemptId]: at }, ver: r.ver + 1 });
  }
}

/** Canary values: if one of these shows up in an error message, a secret leaked. */
export const CANARY = {
  clientId: 'canary-client-id-7f3a',
  clientSecret: 'CANARY-secret-9d1e:%+ é',
  username: 'canary-user-42',
  password: 'CANARY-pass-word-5b6c',
  accessToken: 'CANARY-access-token-0c8f2a',
} as const;

/** An unsigned JWT with the given claims (the broker never verifies; it only reads `exp`). */
export function jwt(claims: Record<string, unknown>): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'RS256', typ: 'JWT' })}.${enc(claims)}.c2lnbmF0dXJl`;
}
