/**
 * An in-memory TokenStore with the DynamoDB adapter's conditions (functions/adapters/dynamodb-store.ts), for
 * fast tests of the broker's branches. The invariants across processes stay proven on dynalite
 * (test/integration); this fake only has to agree with the adapter on each operation's outcome, which
 * test/adapters/memory-store.test.ts checks operation by operation against dynalite.
 */
import type {
  InvalidateResult,
  Lease,
  LeaseAttempt,
  PublishResult,
  ReleaseNote,
  SealedToken,
  TokenItem,
  TokenStore,
} from '../../functions/core/ports.js';

export type StoreOp = 'get' | 'acquireLease' | 'publish' | 'release' | 'invalidate' | 'reset';

const copy = (item: TokenItem): TokenItem => structuredClone(item);

export class MemoryTokenStore implements TokenStore {
  readonly items = new Map<string, TokenItem>();
  /** Calls per operation (reads per request, writes per refresh). */
  readonly calls: Record<StoreOp, number> = { get: 0, acquireLease: 0, publish: 0, release: 0, invalidate: 0, reset: 0 };
  /** Throws what it returns before an operation touches the item (a DynamoDB or network fault). */
  fault?: (op: StoreOp, connection: string) => unknown;

  /**
   * @param returnsItemOnFailure a lost lease write returns the item it found, as DynamoDB does
   *   (`ReturnValuesOnConditionCheckFailure`); false: as dynalite, which does not.
   */
  constructor(private readonly returnsItemOnFailure = true) {}

  private enter(op: StoreOp, connection: string): void {
    this.calls[op]++;
    const e = this.fault?.(op, connection);
    if (e !== undefined) throw e;
  }

  async get(connection: string): Promise<TokenItem | undefined> {
    this.enter('get', connection);
    const item = this.items.get(connection);
    return item ? copy(item) : undefined;
  }

  async acquireLease(connection: string, owner: string, now: number, until: number): Promise<LeaseAttempt> {
    this.enter('acquireLease', connection);
    const item = this.items.get(connection) ?? { ver: 0, fence: 0 };
    if (item.owner !== undefined && (item.leaseUntil ?? 0) > now) {
      if (!this.returnsItemOnFailure) return {};
      // Held. By this owner (the item shows it): the adapter takes it for its own write retried by the SDK.
      if (item.owner === owner) return { lease: { owner, fence: item.fence, until: item.leaseUntil ?? until }, item: copy(item) };
      return { item: copy(item) };
    }
    const next: TokenItem = { ...item, owner, leaseUntil: until, leaseAt: now, fence: item.fence + 1 };
    this.items.set(connection, next);
    return { lease: { owner, fence: next.fence, until }, item: copy(next) };
  }

  async publish(connection: string, lease: Lease, token: SealedToken): Promise<PublishResult> {
    this.enter('publish', connection);
    const item = this.items.get(connection);
    const later = item?.expiresAt !== undefined && item.expiresAt > token.expiresAt && !item.invalidated;
    if (!item || !this.ours(item, lease) || later) {
      // The adapter reads back: this token in place and the lease free is its own write retried by the SDK.
      return item && item.owner === undefined && item.fp === token.fp && item.expiresAt === token.expiresAt ? 'published' : 'superseded';
    }
    const { owner: _o, leaseUntil: _l, leaseAt: _a, invalidated: _i, backoff: _b, circuit: _c, demandBackoff: _d, ...kept } = item;
    this.items.set(connection, {
      ...kept,
      ver: item.ver + 1,
      sealed: token.sealed,
      expiresAt: token.expiresAt,
      issuedAt: token.issuedAt,
      fp: token.fp,
      reason: token.reason,
      ...(token.demandBackoff ? { demandBackoff: token.demandBackoff } : {}),
      ...(token.refreshMs !== undefined ? { refreshMs: token.refreshMs } : {}),
    });
    return 'published';
  }

  async release(connection: string, lease: Lease, note: ReleaseNote = {}): Promise<boolean> {
    this.enter('release', connection);
    const item = this.items.get(connection);
    if (!item || !this.ours(item, lease)) {
      // Read-back as in the adapter: the lease free at our fence, with our note, is our retried write.
      return (
        item !== undefined &&
        item.owner === undefined &&
        item.fence === lease.fence &&
        (!note.backoff || item.backoff?.until === note.backoff.until)
      );
    }
    const { owner: _o, leaseUntil: _l, leaseAt: _a, ...kept } = item;
    this.items.set(connection, {
      ...kept,
      ...(note.backoff ? { backoff: note.backoff } : {}),
      ...(note.demandBackoff ? { demandBackoff: note.demandBackoff } : {}),
      ...(note.circuit ? { circuit: note.circuit } : {}),
    });
    return true;
  }

  async invalidate(connection: string, fp: string, now: number, minGapMs?: number): Promise<InvalidateResult> {
    this.enter('invalidate', connection);
    const item = this.items.get(connection);
    if (!item || item.fp !== fp || item.invalidated) return { kind: 'not_current' };
    if (minGapMs !== undefined && item.invalidatedAt !== undefined && item.invalidatedAt > now - minGapMs) {
      return { kind: 'too_soon', until: item.invalidatedAt + minGapMs };
    }
    this.items.set(connection, { ...item, invalidated: true, invalidatedAt: now });
    return { kind: 'invalidated' };
  }

  async reset(connection: string): Promise<TokenItem | undefined> {
    this.enter('reset', connection);
    const item = this.items.get(connection);
    if (!item) return undefined;
    const { backoff: _b, demandBackoff: _d, circuit: _c, ...kept } = item;
    this.items.set(connection, kept);
    return copy(item);
  }

  private ours(item: TokenItem, lease: Lease): boolean {
    return item.owner === lease.owner && item.fence === lease.fence;
  }
}
