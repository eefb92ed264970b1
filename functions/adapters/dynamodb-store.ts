/**
 * The token cache, lease and rate-limit ledger on one DynamoDB table (partition key `pk`), with
 * single-item conditional writes only (no transactions):
 *
 *   tok#<connection>  ver, fence, owner, leaseUntil, lat (lease taken at), rd (expected refresh duration),
 *                     ct (sealed token), exp, iat, fp, rr (refresh reason), inv, invAt, bo (backoff),
 *                     dbo (demand backoff), cb (credential circuit), ttl
 *   rl#<ledger key>   log (attemptId -> debit time), bo (upstream backoff until), hold#<connection>, ver, ttl
 *
 * Every read is strongly consistent and every write carries a condition. After a failed condition the
 * item is read back instead of trusting the exception: an SDK retry of a write that succeeded reports a
 * failed condition too. Attributes are (un)marshalled by @aws-sdk/util-dynamodb; the conditions are the
 * named clauses below, each said once. SDK failures that may clear by themselves leave as StoreThrottled or
 * StoreUnavailable (core/ports.ts) with the SDK's error as `cause`.
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type UpdateItemCommandInput,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { isServerError, isThrottlingError, isTransientError } from '@smithy/core/retry';
import { randomUUID } from 'node:crypto';
import {
  type Backoff,
  type Circuit,
  type InvalidateResult,
  type Lease,
  type LeaseAttempt,
  type LedgerState,
  type LedgerStore,
  type LedgerWriteResult,
  type PublishResult,
  type ReleaseNote,
  type SealedToken,
  StoreThrottled,
  StoreUnavailable,
  type TokenItem,
  type TokenStore,
} from '../core/ports.js';
import type { ErrorCode } from '../contract/errors.js';
import type { RefreshReason, Refusal } from '../core/errors.js';

type Item = Record<string, AttributeValue>;

const DAY_S = 86_400;
const tokenKey = (connection: string) => marshall({ pk: `tok#${connection}` });
const ledgerKey = (key: string) => marshall({ pk: `rl#${key}` });
/** Ledger item attributes `hold#<connection>`: no upstream request for that connection before the time. */
const HOLD_PREFIX = 'hold#';
const epochSeconds = (ms: number) => Math.ceil(ms / 1000);

// ---- the conditions of the writes, named ----

/** Nobody holds the lease, or its holder's time is up. */
const LEASE_FREE = '(attribute_not_exists(#owner) OR #leaseUntil <= :now)';
/** The writer still holds the lease it took (fencing: a holder that was taken over fails it). */
const STILL_OUR_LEASE = '(#owner = :me AND #fence = :fence)';
/** Invariant 4: the cached token does not expire later than the new one, unless it was invalidated. */
const NOT_REPLACING_A_LONGER_TOKEN = '(attribute_not_exists(#exp) OR #exp <= :exp OR attribute_exists(#inv))';
/** The reported token is the cached one and nobody has invalidated it yet. */
const REPORTED_TOKEN_IS_CURRENT = '(#fp = :fp AND attribute_not_exists(#inv))';
/** The last honoured invalidation was at least the gap ago (connections without rateLimit). */
const INVALIDATION_GAP_PASSED = '(attribute_not_exists(#invAt) OR #invAt <= :cut)';
/** The ledger is still at the version the debit was decided on. */
const LEDGER_AT_VERSION = '#ver = :expected';
const LEDGER_UNWRITTEN = '(attribute_not_exists(#ver) OR #ver = :expected)';
const and = (...clauses: string[]) => clauses.join(' AND ');

// ---- the stored shapes (short attribute names: every read carries them) ----

interface StoredBackoff {
  until: number;
  code: string;
  msg: string;
  ue?: string;
  rf?: string;
  n?: number;
}

interface StoredCircuit {
  ue: string;
  at: number;
  probe: number;
  probes: number;
  sv: string;
  /** The config hashes it failed under, comma-separated. */
  ch: string;
  chk: number;
}

interface StoredToken {
  ver?: number;
  fence?: number;
  owner?: string;
  leaseUntil?: number;
  lat?: number;
  rd?: number;
  ct?: Uint8Array;
  exp?: number;
  iat?: number;
  fp?: string;
  rr?: string;
  /** Set (to a random mark) while the cached token is invalidated. */
  inv?: unknown;
  invAt?: number;
  bo?: StoredBackoff;
  dbo?: StoredBackoff;
  cb?: StoredCircuit;
}

interface StoredLedger {
  ver?: number;
  log?: Record<string, number>;
  bo?: number;
  [hold: `${typeof HOLD_PREFIX}${string}`]: number;
}

function toBackoff(b: StoredBackoff | undefined): Backoff | undefined {
  if (!b) return undefined;
  return {
    until: b.until ?? 0,
    code: (b.code ?? 'unavailable') as ErrorCode,
    message: b.msg ?? 'upstream unavailable',
    ...(b.ue ? { upstreamError: b.ue } : {}),
    ...(b.rf ? { refusal: b.rf as Refusal } : {}),
    ...(b.n ? { failures: b.n } : {}),
  };
}

const storedBackoff = (b: Backoff): StoredBackoff => ({
  until: b.until,
  code: b.code,
  msg: b.message,
  ...(b.upstreamError ? { ue: b.upstreamError } : {}),
  ...(b.refusal ? { rf: b.refusal } : {}),
  ...(b.failures ? { n: b.failures } : {}),
});

function toCircuit(c: StoredCircuit | undefined): Circuit | undefined {
  if (!c) return undefined;
  return {
    upstreamError: c.ue ?? 'invalid_client',
    openedAt: c.at ?? 0,
    probeAt: c.probe ?? 0,
    probes: c.probes ?? 0,
    secretVersion: c.sv ?? '',
    configHashes: (c.ch ?? '').split(',').filter(Boolean),
    checkedAt: c.chk ?? 0,
  };
}

const storedCircuit = (c: Circuit): StoredCircuit => ({
  ue: c.upstreamError,
  at: c.openedAt,
  probe: c.probeAt,
  probes: c.probes,
  sv: c.secretVersion,
  ch: c.configHashes.join(','),
  chk: c.checkedAt,
});

/** @internal test/adapters/dynamodb-store.test.ts reads it. */
export function toTokenItem(item: Item): TokenItem {
  const s = unmarshall(item) as StoredToken;
  const t: TokenItem = { ver: s.ver ?? 0, fence: s.fence ?? 0 };
  if (s.owner) t.owner = s.owner;
  if (s.leaseUntil !== undefined) t.leaseUntil = s.leaseUntil;
  if (s.lat !== undefined) t.leaseAt = s.lat;
  if (s.rd !== undefined) t.refreshMs = s.rd;
  if (s.ct) t.sealed = s.ct;
  if (s.exp !== undefined) t.expiresAt = s.exp;
  if (s.iat !== undefined) t.issuedAt = s.iat;
  if (s.fp) t.fp = s.fp;
  if (s.inv) t.invalidated = true;
  if (s.invAt !== undefined) t.invalidatedAt = s.invAt;
  if (s.rr) t.reason = s.rr as RefreshReason;
  const backoff = toBackoff(s.bo);
  const demandBackoff = toBackoff(s.dbo);
  const circuit = toCircuit(s.cb);
  if (backoff) t.backoff = backoff;
  if (demandBackoff) t.demandBackoff = demandBackoff;
  if (circuit) t.circuit = circuit;
  return t;
}

function isConditionFailure(e: unknown): e is ConditionalCheckFailedException {
  return e instanceof ConditionalCheckFailedException || (e as { name?: string })?.name === 'ConditionalCheckFailedException';
}

/**
 * What an SDK failure means for the broker: throttled or unavailable (typed, may clear by itself), or as it
 * is (a missing table, denied access, an invalid request: configuration or a bug). Uses the SDK's own
 * retry classification.
 */
function storeFault(e: unknown): unknown {
  if (typeof e !== 'object' || e === null) return e;
  const err = e as Parameters<typeof isThrottlingError>[0] & Error;
  if (isThrottlingError(err)) return new StoreThrottled(`DynamoDB throttled the request (${err.name})`, { cause: e });
  if (err.$fault === 'server' || isTransientError(err) || isServerError(err))
    return new StoreUnavailable(`DynamoDB unavailable (${err.name})`, { cause: e });
  return e;
}

/** Placeholders `#name` stand for the attribute `name`; `extra` names the others (dynamic attribute names). */
function attributeNames(expressions: string[], extra: Record<string, string> = {}): Record<string, string> {
  const names: Record<string, string> = {};
  for (const e of expressions) for (const m of e.matchAll(/#(\w+)/g)) names[m[0]] = m[1]!;
  return { ...names, ...extra };
}

/** `{ me: 'x' }` -> `{ ':me': { S: 'x' } }`. */
function attributeValues(values: Record<string, unknown>): Item {
  const out: Item = {};
  for (const [k, v] of Object.entries(marshall(values, { removeUndefinedValues: true }))) out[`:${k}`] = v;
  return out;
}

interface Write {
  /** SET/REMOVE clauses. */
  update: string;
  condition: string;
  values?: Record<string, unknown>;
  /** Placeholders whose attribute is not their own name. */
  names?: Record<string, string>;
  returnNew?: boolean;
  /**
   * The caller needs the item after a failed condition only to recognise its own write retried by the SDK:
   * without a retry, a server that does not return the item is not asked again.
   */
  readBackOnlyAfterRetry?: boolean;
}

export class DynamoTokenStore implements TokenStore, LedgerStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
  ) {}

  private async getRaw(key: Item): Promise<Item | undefined> {
    try {
      const out = await this.client.send(new GetItemCommand({ TableName: this.table, Key: key, ConsistentRead: true }));
      return out.Item;
    } catch (e) {
      throw storeFault(e);
    }
  }

  /**
   * Runs a conditional update; on a failed condition returns the item as it stands: DynamoDB returns it with
   * the failure (ALL_OLD), a server that does not (dynalite) costs a consistent read-back.
   */
  private async conditionalUpdate(key: Item, w: Write): Promise<{ ok: boolean; item?: Item }> {
    const values = attributeValues(w.values ?? {});
    const input: UpdateItemCommandInput = {
      TableName: this.table,
      Key: key,
      UpdateExpression: w.update,
      ConditionExpression: w.condition,
      ExpressionAttributeNames: attributeNames([w.update, w.condition], w.names),
      ...(Object.keys(values).length ? { ExpressionAttributeValues: values } : {}),
      ...(w.returnNew ? { ReturnValues: 'ALL_NEW' as const } : {}),
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    };
    try {
      const out = await this.client.send(new UpdateItemCommand(input));
      return { ok: true, ...(out.Attributes ? { item: out.Attributes } : {}) };
    } catch (e) {
      if (!isConditionFailure(e)) throw storeFault(e);
      if (e.Item) return { ok: false, item: e.Item };
      // The SDK counts its attempts on the error; unknown counts as retried.
      if (w.readBackOnlyAfterRetry && e.$metadata?.attempts === 1) return { ok: false };
      const item = await this.getRaw(key);
      return { ok: false, ...(item ? { item } : {}) };
    }
  }

  // ---- token cache and lease ----

  async get(connection: string): Promise<TokenItem | undefined> {
    const item = await this.getRaw(tokenKey(connection));
    return item ? toTokenItem(item) : undefined;
  }

  async acquireLease(connection: string, owner: string, now: number, until: number): Promise<LeaseAttempt> {
    const r = await this.conditionalUpdate(tokenKey(connection), {
      update:
        'SET #owner = :me, #leaseUntil = :until, #lat = :now, #fence = if_not_exists(#fence, :zero) + :one, #ver = if_not_exists(#ver, :zero), #ttl = :ttl',
      condition: LEASE_FREE,
      // now + 2 days is never earlier than a live token's expiry + 1 day (tokens live at most 24 h).
      values: { me: owner, until, zero: 0, one: 1, now, ttl: epochSeconds(now) + 2 * DAY_S },
      returnNew: true,
      readBackOnlyAfterRetry: true,
    });
    const item = r.item ? toTokenItem(r.item) : undefined;
    // A failed condition whose item shows us as owner: our own write, retried by the SDK.
    if (!item || item.owner !== owner) return item ? { item } : {};
    return { lease: { owner, fence: item.fence, until: item.leaseUntil ?? until }, item };
  }

  async publish(connection: string, lease: Lease, token: SealedToken): Promise<PublishResult> {
    // The upstream just issued a token: any backoff and circuit are over. The demand backoff is replaced.
    const set = ['#ct = :ct', '#exp = :exp', '#iat = :iat', '#fp = :fp', '#rr = :rr', '#ver = #ver + :one', '#ttl = :ttl'];
    const remove = ['#owner', '#leaseUntil', '#lat', '#inv', '#bo', '#cb'];
    if (token.demandBackoff) set.push('#dbo = :dbo');
    else remove.push('#dbo');
    if (token.refreshMs !== undefined) set.push('#rd = :rd');
    const r = await this.conditionalUpdate(tokenKey(connection), {
      update: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
      condition: and(STILL_OUR_LEASE, NOT_REPLACING_A_LONGER_TOKEN),
      values: {
        ct: token.sealed,
        exp: token.expiresAt,
        iat: token.issuedAt,
        fp: token.fp,
        rr: token.reason,
        one: 1,
        ttl: epochSeconds(token.expiresAt) + DAY_S,
        me: lease.owner,
        fence: lease.fence,
        dbo: token.demandBackoff ? storedBackoff(token.demandBackoff) : undefined,
        rd: token.refreshMs,
      },
    });
    if (r.ok) return 'published';
    // Read-back: our token in place and the lease cleared means our (retried) write went through.
    const item = r.item ? toTokenItem(r.item) : undefined;
    return item && !item.owner && item.fp === token.fp && item.expiresAt === token.expiresAt ? 'published' : 'superseded';
  }

  async release(connection: string, lease: Lease, note: ReleaseNote = {}): Promise<boolean> {
    const set: string[] = [];
    if (note.backoff) set.push('#bo = :bo');
    if (note.demandBackoff) set.push('#dbo = :dbo');
    if (note.circuit) set.push('#cb = :cb');
    const r = await this.conditionalUpdate(tokenKey(connection), {
      update: `${set.length ? `SET ${set.join(', ')} ` : ''}REMOVE #owner, #leaseUntil, #lat`,
      condition: STILL_OUR_LEASE,
      values: {
        me: lease.owner,
        fence: lease.fence,
        bo: note.backoff ? storedBackoff(note.backoff) : undefined,
        dbo: note.demandBackoff ? storedBackoff(note.demandBackoff) : undefined,
        cb: note.circuit ? storedCircuit(note.circuit) : undefined,
      },
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
    const r = await this.conditionalUpdate(tokenKey(connection), {
      update: 'SET #inv = :mark, #invAt = :now',
      condition: gap ? and(REPORTED_TOKEN_IS_CURRENT, INVALIDATION_GAP_PASSED) : REPORTED_TOKEN_IS_CURRENT,
      values: { mark, fp, now, cut: gap ? now - minGapMs : undefined },
    });
    if (r.ok) return { kind: 'invalidated' };
    const item = r.item ? (unmarshall(r.item) as StoredToken) : undefined;
    if (item?.fp !== fp) return { kind: 'not_current' };
    if (item.inv) return item.inv === mark ? { kind: 'invalidated' } : { kind: 'not_current' };
    return { kind: 'too_soon', until: (item.invAt ?? now) + (minGapMs ?? 0) };
  }

  async reset(connection: string): Promise<TokenItem | undefined> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: tokenKey(connection),
          UpdateExpression: 'REMOVE #bo, #dbo, #cb',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: attributeNames(['#bo #dbo #cb #pk']),
          ReturnValues: 'ALL_OLD',
        }),
      );
      return out.Attributes ? toTokenItem(out.Attributes) : undefined;
    } catch (e) {
      if (isConditionFailure(e)) return undefined; // no item: nothing to reset
      throw storeFault(e);
    }
  }

  // ---- rate-limit ledger ----

  async read(key: string): Promise<LedgerState> {
    const raw = await this.getRaw(ledgerKey(key));
    const item = (raw ? unmarshall(raw) : {}) as StoredLedger;
    const holds: Record<string, number> = {};
    for (const [attr, until] of Object.entries(item))
      if (attr.startsWith(HOLD_PREFIX)) holds[attr.slice(HOLD_PREFIX.length)] = until as number;
    return {
      entries: { ...item.log },
      ver: item.ver ?? 0,
      ...(item.bo !== undefined ? { backoffUntil: item.bo } : {}),
      ...(Object.keys(holds).length ? { holds } : {}),
    };
  }

  async write(
    key: string,
    expectedVer: number,
    entries: Record<string, number>,
    attemptId: string,
    expiresAt: number,
  ): Promise<LedgerWriteResult> {
    const r = await this.conditionalUpdate(ledgerKey(key), {
      update: 'SET #log = :log, #ver = :next, #ttl = :ttl',
      condition: expectedVer === 0 ? LEDGER_UNWRITTEN : LEDGER_AT_VERSION,
      values: { log: entries, next: expectedVer + 1, expected: expectedVer, ttl: epochSeconds(expiresAt) + 3600 },
    });
    if (r.ok) return 'written';
    // Read-back: our attempt recorded means our (retried) write went through.
    const log = r.item ? (unmarshall(r.item) as StoredLedger).log : undefined;
    return log?.[attemptId] !== undefined ? 'written' : 'conflict';
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
    await this.conditionalUpdate(ledgerKey(key), {
      // Past the longest window (7 days) and the backoff: never earlier than what a debit set.
      update: 'SET #a = :until, #ttl = :ttl, #ver = if_not_exists(#ver, :zero) + :one',
      condition: '(attribute_not_exists(#a) OR #a < :until)',
      names: { '#a': attr },
      values: { until, ttl: epochSeconds(until) + 8 * DAY_S, zero: 0, one: 1 },
    });
  }

  async releaseHold(key: string, connection: string): Promise<void> {
    await this.conditionalUpdate(ledgerKey(key), {
      update: 'REMOVE #h SET #ver = #ver + :one',
      condition: 'attribute_exists(#h)',
      names: { '#h': `${HOLD_PREFIX}${connection}` },
      values: { one: 1 },
    });
  }

  async refund(key: string, attemptId: string): Promise<void> {
    await this.conditionalUpdate(ledgerKey(key), {
      update: 'REMOVE #log.#id SET #ver = #ver + :one',
      condition: 'attribute_exists(#log.#id)',
      names: { '#id': attemptId },
      values: { one: 1 },
    });
  }
}
