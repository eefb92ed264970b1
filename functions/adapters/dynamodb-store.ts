/**
 * The token cache, lease and rate-limit ledger on one DynamoDB table (partition key `pk`), with
 * single-item conditional writes only (no transactions):
 *
 *   tok#<connection>  ver, fence, owner, leaseUntil, ct (sealed token), exp, iat, fp, rr (refresh reason),
 *                     inv, invAt, bo (backoff), dbo (demand backoff), cb (credential circuit), ttl
 *   rl#<ledger key>   log (attemptId -> debit time), bo (upstream backoff until), hold#<connection>, ver, ttl
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
import { randomUUID } from 'node:crypto';
import type {
  Backoff,
  Circuit,
  InvalidateResult,
  Lease,
  LedgerState,
  LedgerStore,
  LedgerWriteResult,
  PublishResult,
  ReleaseNote,
  SealedToken,
  TokenItem,
  TokenStore,
} from '../core/ports.js';
import type { ErrorCode, RefreshReason, Refusal } from '../core/errors.js';

type Item = Record<string, AttributeValue>;

const DAY_S = 86_400;
const tokenKey = (connection: string) => ({ pk: { S: `tok#${connection}` } });
const ledgerKey = (key: string) => ({ pk: { S: `rl#${key}` } });
/** Ledger item attributes `hold#<connection>`: no upstream request for that connection before the time. */
const HOLD_PREFIX = 'hold#';

const n = (v: number): AttributeValue => ({ N: String(v) });
const s = (v: string): AttributeValue => ({ S: v });
const num = (a: AttributeValue | undefined): number | undefined => (a?.N !== undefined ? Number(a.N) : undefined);
const str = (a: AttributeValue | undefined): string | undefined => a?.S;
const epochSeconds = (ms: number) => Math.ceil(ms / 1000);

function toBackoff(bo: Record<string, AttributeValue> | undefined): Backoff | undefined {
  if (!bo) return undefined;
  return {
    until: num(bo.until) ?? 0,
    code: (str(bo.code) ?? 'unavailable') as ErrorCode,
    message: str(bo.msg) ?? 'upstream unavailable',
    ...(str(bo.ue) ? { upstreamError: str(bo.ue)! } : {}),
    ...(str(bo.rf) ? { refusal: str(bo.rf) as Refusal } : {}),
    ...(num(bo.n) ? { failures: num(bo.n)! } : {}),
  };
}

function fromBackoff(b: Backoff): AttributeValue {
  return {
    M: {
      until: n(b.until),
      code: s(b.code),
      msg: s(b.message),
      ...(b.upstreamError ? { ue: s(b.upstreamError) } : {}),
      ...(b.refusal ? { rf: s(b.refusal) } : {}),
      ...(b.failures ? { n: n(b.failures) } : {}),
    },
  };
}

function toCircuit(cb: Record<string, AttributeValue> | undefined): Circuit | undefined {
  if (!cb) return undefined;
  return {
    upstreamError: str(cb.ue) ?? 'invalid_client',
    openedAt: num(cb.at) ?? 0,
    probeAt: num(cb.probe) ?? 0,
    probes: num(cb.probes) ?? 0,
    secretVersion: str(cb.sv) ?? '',
    configHashes: (str(cb.ch) ?? '').split(',').filter(Boolean),
    checkedAt: num(cb.chk) ?? 0,
  };
}

function fromCircuit(c: Circuit): AttributeValue {
  return {
    M: {
      ue: s(c.upstreamError),
      at: n(c.openedAt),
      probe: n(c.probeAt),
      probes: n(c.probes),
      sv: s(c.secretVersion),
      ch: s(c.configHashes.join(',')),
      chk: n(c.checkedAt),
    },
  };
}

export function toTokenItem(item: Item): TokenItem {
  const backoff = toBackoff(item.bo?.M);
  const demandBackoff = toBackoff(item.dbo?.M);
  const circuit = toCircuit(item.cb?.M);
  const t: TokenItem = { ver: num(item.ver) ?? 0, fence: num(item.fence) ?? 0 };
  if (item.owner?.S) t.owner = item.owner.S;
  if (item.leaseUntil) t.leaseUntil = num(item.leaseUntil)!;
  if (item.ct?.B) t.sealed = item.ct.B;
  if (item.exp) t.expiresAt = num(item.exp)!;
  if (item.iat) t.issuedAt = num(item.iat)!;
  if (item.fp?.S) t.fp = item.fp.S;
  if (item.inv) t.invalidated = true;
  if (item.invAt) t.invalidatedAt = num(item.invAt)!;
  if (item.rr?.S) t.reason = item.rr.S as RefreshReason;
  if (backoff) t.backoff = backoff;
  if (demandBackoff) t.demandBackoff = demandBackoff;
  if (circuit) t.circuit = circuit;
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
    const names: Record<string, string> = {
      '#ct': 'ct', '#exp': 'exp', '#iat': 'iat', '#fp': 'fp', '#rr': 'rr', '#ver': 'ver', '#ttl': 'ttl',
      '#owner': 'owner', '#lu': 'leaseUntil', '#inv': 'inv', '#bo': 'bo', '#cb': 'cb', '#dbo': 'dbo', '#fence': 'fence',
    };
    const values: Item = {
      ':ct': { B: token.sealed }, ':exp': n(token.expiresAt), ':iat': n(token.issuedAt), ':fp': s(token.fp), ':rr': s(token.reason),
      ':one': n(1), ':ttl': n(epochSeconds(token.expiresAt) + DAY_S), ':me': s(lease.owner), ':fence': n(lease.fence),
    };
    // The upstream just issued a token: any backoff and circuit are over. The demand backoff is replaced.
    let set = 'SET #ct = :ct, #exp = :exp, #iat = :iat, #fp = :fp, #rr = :rr, #ver = #ver + :one, #ttl = :ttl';
    let remove = 'REMOVE #owner, #lu, #inv, #bo, #cb';
    if (token.demandBackoff) {
      values[':dbo'] = fromBackoff(token.demandBackoff);
      set += ', #dbo = :dbo';
    } else {
      remove += ', #dbo';
    }
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: `${set} ${remove}`,
      ConditionExpression: '#owner = :me AND #fence = :fence AND (attribute_not_exists(#exp) OR #exp <= :exp OR attribute_exists(#inv))',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    });
    if (r.ok) return 'published';
    // Read-back: our token in place and the lease cleared means our (retried) write went through.
    const item = r.item ? toTokenItem(r.item) : undefined;
    return item && !item.owner && item.fp === token.fp && item.expiresAt === token.expiresAt ? 'published' : 'superseded';
  }

  async release(connection: string, lease: Lease, note: ReleaseNote = {}): Promise<boolean> {
    const names: Record<string, string> = { '#owner': 'owner', '#lu': 'leaseUntil', '#fence': 'fence' };
    const values: Item = { ':me': s(lease.owner), ':fence': n(lease.fence) };
    const set: string[] = [];
    const put = (attr: string, value: AttributeValue) => {
      names[`#${attr}`] = attr;
      values[`:${attr}`] = value;
      set.push(`#${attr} = :${attr}`);
    };
    if (note.backoff) put('bo', fromBackoff(note.backoff));
    if (note.demandBackoff) put('dbo', fromBackoff(note.demandBackoff));
    if (note.circuit) put('cb', fromCircuit(note.circuit));
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: `${set.length ? `SET ${set.join(', ')} ` : ''}REMOVE #owner, #lu`,
      ConditionExpression: '#owner = :me AND #fence = :fence',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    });
    if (r.ok) return true;
    // Read-back: our own write retried by the SDK leaves the lease free at our fence and our note in place.
    const item = r.item ? toTokenItem(r.item) : undefined;
    return item !== undefined && !item.owner && item.fence === lease.fence && (!note.backoff || item.backoff?.until === note.backoff.until);
  }

  async invalidate(connection: string, fp: string, now: number, minGapMs?: number): Promise<InvalidateResult> {
    const gap = minGapMs !== undefined;
    // A random mark tells our own write (retried by the SDK) from a concurrent report of the same token.
    const mark = randomUUID();
    const r = await this.conditionalUpdate({
      Key: tokenKey(connection),
      UpdateExpression: 'SET #inv = :mark, #invAt = :now',
      ConditionExpression: `#fp = :fp AND attribute_not_exists(#inv)${gap ? ' AND (attribute_not_exists(#invAt) OR #invAt <= :cut)' : ''}`,
      ExpressionAttributeNames: { '#inv': 'inv', '#invAt': 'invAt', '#fp': 'fp' },
      ExpressionAttributeValues: { ':mark': s(mark), ':fp': s(fp), ':now': n(now), ...(gap ? { ':cut': n(now - minGapMs) } : {}) },
    });
    if (r.ok) return { kind: 'invalidated' };
    if (r.item?.fp?.S !== fp) return { kind: 'not_current' };
    if (r.item.inv) return r.item.inv.S === mark ? { kind: 'invalidated' } : { kind: 'not_current' };
    return { kind: 'too_soon', until: (num(r.item.invAt) ?? now) + (minGapMs ?? 0) };
  }

  async reset(connection: string): Promise<TokenItem | undefined> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: tokenKey(connection),
          UpdateExpression: 'REMOVE #bo, #dbo, #cb',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: { '#bo': 'bo', '#dbo': 'dbo', '#cb': 'cb', '#pk': 'pk' },
          ReturnValues: 'ALL_OLD',
        }),
      );
      return out.Attributes ? toTokenItem(out.Attributes) : undefined;
    } catch (e) {
      if (isConditionFailure(e)) return undefined; // no item: nothing to reset
      throw e;
    }
  }

  // ---- rate-limit ledger ----

  async read(key: string): Promise<LedgerState> {
    const item = await this.getRaw(ledgerKey(key));
    const entries: Record<string, number> = {};
    for (const [id, v] of Object.entries(item?.log?.M ?? {})) entries[id] = Number(v.N);
    const holds: Record<string, number> = {};
    for (const [attr, v] of Object.entries(item ?? {})) if (attr.startsWith(HOLD_PREFIX)) holds[attr.slice(HOLD_PREFIX.length)] = Number(v.N);
    const backoffUntil = num(item?.bo);
    return {
      entries,
      ver: num(item?.ver) ?? 0,
      ...(backoffUntil !== undefined ? { backoffUntil } : {}),
      ...(Object.keys(holds).length ? { holds } : {}),
    };
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
    await this.raise(key, 'bo', until);
  }

  async hold(key: string, connection: string, until: number): Promise<void> {
    await this.raise(key, `${HOLD_PREFIX}${connection}`, until);
  }

  /**
   * Raises a time attribute of the ledger item (never lowers it) and bumps its version, so a debit decided
   * on the item as it was loses its conditional write and decides again.
   */
  private async raise(key: string, attr: string, until: number): Promise<void> {
    await this.conditionalUpdate({
      Key: ledgerKey(key),
      // Past the longest window (7 days) and the backoff: never earlier than what a debit set.
      UpdateExpression: 'SET #a = :until, #ttl = :ttl, #ver = if_not_exists(#ver, :zero) + :one',
      ConditionExpression: 'attribute_not_exists(#a) OR #a < :until',
      ExpressionAttributeNames: { '#a': attr, '#ttl': 'ttl', '#ver': 'ver' },
      ExpressionAttributeValues: { ':until': n(until), ':ttl': n(epochSeconds(until) + 8 * DAY_S), ':zero': n(0), ':one': n(1) },
    });
  }

  async releaseHold(key: string, connection: string): Promise<void> {
    await this.conditionalUpdate({
      Key: ledgerKey(key),
      UpdateExpression: 'REMOVE #h SET #ver = #ver + :one',
      ConditionExpression: 'attribute_exists(#h)',
      ExpressionAttributeNames: { '#h': `${HOLD_PREFIX}${connection}`, '#ver': 'ver' },
      ExpressionAttributeValues: { ':one': n(1) },
    });
  }

  async refund(key: string, attemptId: string): Promise<void> {
    await this.conditionalUpdate({
      Key: ledgerKey(key),
      UpdateExpression: 'REMOVE #log.#id SET #ver = #ver + :one',
      ConditionExpression: 'attribute_exists(#log.#id)',
      ExpressionAttributeNames: { '#log': 'log', '#id': attemptId, '#ver': 'ver' },
      ExpressionAttributeValues: { ':one': n(1) },
    });
  }
}
