/**
 * The token cache, lease and rate-limit ledger on one DynamoDB table (partition key `pk`), with
 * single-item conditional writes only (no transactions):
 *
 *   tok#<connection>  ver, fence, owner, leaseUntil, ct (sealed token), exp, iat, fp, inv, bo, ttl
 *   rl#<ledger key>   log (attemptId -> debit time), bo (backoff until), ver, ttl
 *
 * Every read is strongly consistent and every write carries a condition. After a failed condition the
 * item is read back instead of trusting the exception: an SDK retry of a write that succeeded reports a
 * failed condition too.
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type UpdateItemCommandInput,
} from '@aws-sdk/client-dynamodb';
import type {
  Backoff,
  Lease,
  LedgerState,
  LedgerStore,
  LedgerWriteResult,
  PublishResult,
  SealedToken,
  TokenItem,
  TokenStore,
} from '../core/ports.js';
import type { ErrorCode } from '../core/errors.js';

type Item = Record<string, AttributeValue>;

const DAY_S = 86_400;
const tokenKey = (connection: string) => ({ pk: { S: `tok#${connection}` } });
const ledgerKey = (key: string) => ({ pk: { S: `rl#${key}` } });

const n = (v: number): AttributeValue => ({ N: String(v) });
const s = (v: string): AttributeValue => ({ S: v });
const num = (a: AttributeValue | undefined): number | undefined => (a?.N !== undefined ? Number(a.N) : undefined);
const str = (a: AttributeValue | undefined): string | undefined => a?.S;
const epochSeconds = (ms: number) => Math.ceil(ms / 1000);

export function toTokenItem(item: Item): TokenItem {
  const bo = item.bo?.M;
  const backoff: Backoff | undefined = bo
    ? {
        until: num(bo.until) ?? 0,
        code: (str(bo.code) ?? 'unavailable') as ErrorCode,
        message: str(bo.msg) ?? 'upstream unavailable',
        ...(str(bo.ue) ? { upstreamError: str(bo.ue)! } : {}),
      }
    : undefined;
  const t: TokenItem = { ver: num(item.ver) ?? 0, fence: num(item.fence) ?? 0 };
  if (item.owner?.S) t.owner = item.owner.S;
  if (item.leaseUntil) t.leaseUntil = num(item.leaseUntil)!;
  if (item.ct?.B) t.sealed = item.ct.B;
  if (item.exp) t.expiresAt = num(item.exp)!;
  if (item.iat) t.issuedAt = num(item.iat)!;
  if (item.fp?.S) t.fp = item.fp.S;
  if (item.inv) t.invalidated = true;
  if (backoff) t.backoff = backoff;
  return t;
}

function isConditionFailure(e: unknown): e is ConditionalCheckFailedException {
  return e instanceof ConditionalCheckFailedException || (e as { name?: string })?.name === 'ConditionalCheckFailedException';
}

export class DynamoTokenStore implements TokenStore, LedgerStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
  ) {}

  private async getRaw(key: Item): Promise<Item | undefined> {
    const out = await this.client.send(new GetItemCommand({ TableName: this.table, Key: key, ConsistentRead: true }));
    return out.Item;
  }

  /** Runs a conditional update; on a failed condition returns the item as it stands (read back if need be). */
  private async conditionalUpdate(input: Omit<UpdateItemCommandInput, 'TableName'>): Promise<{ ok: true; item?: Item } | { ok: false; item?: Item }> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({ ...input, TableName: this.table, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' }),
      );
      return { ok: true, ...(out.Attributes ? { item: out.Attributes } : {}) };
    } catch (e) {
      if (!isConditionFailure(e)) throw e;
      const item = e.Item ?? (await this.getRaw(input.Key!));
      return { ok: false, ...(item ? { item } : {}) };
    }
  }

  // ---- token cache and lease ----

  async get(connection: string): Promise<TokenItem | undefined> {
    const item = await this.getRaw(tokenKey(connection));
    return item ? toTokenItem(item) : undefined;
  }

  async acquireLease(connection: string, owner: string, now: number, until: number): Promise<{ lease: Lease; item: TokenItem } | undefined> {
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression:
        'SET #owner = :me, #lu = :until, #fence = if_not_exists(#fence, :zero) + :one, #ver = if_not_exists(#ver, :zero), #ttl = :ttl',
      ConditionExpression: 'attribute_not_exists(#owner) OR #lu <= :now',
      ExpressionAttributeNames: { '#owner': 'owner', '#lu': 'leaseUntil', '#fence': 'fence', '#ver': 'ver', '#ttl': 'ttl' },
      // now + 2 days is never earlier than a live token's expiry + 1 day (tokens live at most 24 h).
      ExpressionAttributeValues: { ':me': s(owner), ':until': n(until), ':zero': n(0), ':one': n(1), ':now': n(now), ':ttl': n(epochSeconds(now) + 2 * DAY_S) },
      ReturnValues: 'ALL_NEW',
    });
    const item = r.item ? toTokenItem(r.item) : undefined;
    // A failed condition whose read-back shows us as owner: our own write, retried by the SDK.
    if (!item || item.owner !== owner) return undefined;
    return { lease: { owner, fence: item.fence, until: item.leaseUntil ?? until }, item };
  }

  async publish(connection: string, lease: Lease, token: SealedToken): Promise<PublishResult> {
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: 'SET #ct = :ct, #exp = :exp, #iat = :iat, #fp = :fp, #ver = #ver + :one, #ttl = :ttl REMOVE #owner, #lu, #inv, #bo',
      ConditionExpression: '#owner = :me AND #fence = :fence AND (attribute_not_exists(#exp) OR #exp <= :exp OR attribute_exists(#inv))',
      ExpressionAttributeNames: {
        '#ct': 'ct', '#exp': 'exp', '#iat': 'iat', '#fp': 'fp', '#ver': 'ver', '#ttl': 'ttl',
        '#owner': 'owner', '#lu': 'leaseUntil', '#inv': 'inv', '#bo': 'bo', '#fence': 'fence',
      },
      ExpressionAttributeValues: {
        ':ct': { B: token.sealed }, ':exp': n(token.expiresAt), ':iat': n(token.issuedAt), ':fp': s(token.fp),
        ':one': n(1), ':ttl': n(epochSeconds(token.expiresAt) + DAY_S), ':me': s(lease.owner), ':fence': n(lease.fence),
      },
    });
    if (r.ok) return 'published';
    // Read-back: our token in place and the lease cleared means our (retried) write went through.
    const item = r.item ? toTokenItem(r.item) : undefined;
    return item && !item.owner && item.fp === token.fp && item.expiresAt === token.expiresAt ? 'published' : 'superseded';
  }

  async release(connection: string, lease: Lease, backoff?: Backoff): Promise<void> {
    const names: Record<string, string> = { '#owner': 'owner', '#lu': 'leaseUntil', '#fence': 'fence' };
    const values: Item = { ':me': s(lease.owner), ':fence': n(lease.fence) };
    let update = 'REMOVE #owner, #lu';
    if (backoff) {
      names['#bo'] = 'bo';
      values[':bo'] = {
        M: {
          until: n(backoff.until),
          code: s(backoff.code),
          msg: s(backoff.message),
          ...(backoff.upstreamError ? { ue: s(backoff.upstreamError) } : {}),
        },
      };
      update = `SET #bo = :bo ${update}`;
    }
    await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: update,
      ConditionExpression: '#owner = :me AND #fence = :fence',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    });
  }

  async invalidate(connection: string, fp: string): Promise<boolean> {
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: 'SET #inv = :true',
      ConditionExpression: '#fp = :fp AND attribute_not_exists(#inv)',
      ExpressionAttributeNames: { '#inv': 'inv', '#fp': 'fp' },
      ExpressionAttributeValues: { ':true': { BOOL: true }, ':fp': s(fp) },
    });
    return r.ok;
  }

  // ---- rate-limit ledger ----

  async read(key: string): Promise<LedgerState> {
    const item = await this.getRaw(ledgerKey(key));
    const entries: Record<string, number> = {};
    for (const [id, v] of Object.entries(item?.log?.M ?? {})) entries[id] = Number(v.N);
    const backoffUntil = num(item?.bo);
    return { entries, ver: num(item?.ver) ?? 0, ...(backoffUntil !== undefined ? { backoffUntil } : {}) };
  }

  async write(key: string, expectedVer: number, entries: Record<string, number>, attemptId: string, expiresAt: number): Promise<LedgerWriteResult> {
    const log: Item = {};
    for (const [id, at] of Object.entries(entries)) log[id] = n(at);
    const r = await this.conditionalUpdate({
      Key: ledgerKey(key),
      UpdateExpression: 'SET #log = :log, #ver = :next, #ttl = :ttl',
      ConditionExpression: expectedVer === 0 ? 'attribute_not_exists(#ver) OR #ver = :expected' : '#ver = :expected',
      ExpressionAttributeNames: { '#log': 'log', '#ver': 'ver', '#ttl': 'ttl' },
      ExpressionAttributeValues: { ':log': { M: log }, ':next': n(expectedVer + 1), ':expected': n(expectedVer), ':ttl': n(epochSeconds(expiresAt) + 3600) },
    });
    if (r.ok) return 'written';
    // Read-back: our attempt recorded means our (retried) write went through.
    return r.item?.log?.M?.[attemptId] ? 'written' : 'conflict';
  }

  async setBackoff(key: string, until: number): Promise<void> {
    await this.conditionalUpdate({
      Key: ledgerKey(key),
      // Past the longest window (7 days) and the backoff: never earlier than what a debit set.
      UpdateExpression: 'SET #bo = :until, #ttl = :ttl',
      ConditionExpression: 'attribute_not_exists(#bo) OR #bo < :until',
      ExpressionAttributeNames: { '#bo': 'bo', '#ttl': 'ttl' },
      ExpressionAttributeValues: { ':until': n(until), ':ttl': n(epochSeconds(until) + 8 * DAY_S) },
    });
  }
}
