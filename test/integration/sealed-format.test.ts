/**
 * A cache item sealed in the previous format (the AWS Encryption SDK's, before docs/sealing.md's own format) is
 * a miss after the deploy that changes the format: never served, replaced by a fresh token under the budget guard.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { principalFromArn } from '../../functions/core/authz.js';
import { FakeClock } from '../support/clock.js';
import { CALLER, connections, instance, startWorld, type World } from '../support/env.js';
import { LEGACY_SEALED } from '../support/legacy-sealed.js';

const principal = principalFromArn(CALLER)!;
let world: World;

beforeAll(async () => {
  world = await startWorld();
  // The key the legacy item was sealed under: only the format differs, not the key.
  world.sealKey = Buffer.from(LEGACY_SEALED.key, 'hex');
});
afterAll(async () => world.close());

describe('an item sealed in the previous format', () => {
  it('is not served: it is replaced by a fresh token (one upstream request), and later requests are served from the new item', async () => {
    const clock = new FakeClock(LEGACY_SEALED.token.issuedAt + 30 * 60_000); // the legacy token has 90 min left
    const config = connections(world.idp, { [LEGACY_SEALED.connection]: { rateLimit: { max: 5, windowSeconds: 3600 } } });
    const name = LEGACY_SEALED.connection;
    const { broker: first, client } = instance(world, { clock, config });
    await first.getToken({ connection: name, principal, minTtlSeconds: 60 });
    expect(world.idp.count()).toBe(1);

    // The item as the previous release left it: the legacy sealed token and its plaintext attributes.
    await client.send(
      new UpdateItemCommand({
        TableName: world.table,
        Key: { pk: { S: `tok#${name}` } },
        UpdateExpression: 'SET ct = :ct, #exp = :exp, iat = :iat, fp = :fp',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeNames: { '#exp': 'exp' },
        ExpressionAttributeValues: {
          ':ct': { B: new Uint8Array(LEGACY_SEALED.sealed) },
          ':exp': { N: String(LEGACY_SEALED.token.expiresAt) },
          ':iat': { N: String(LEGACY_SEALED.token.issuedAt) },
          ':fp': { S: LEGACY_SEALED.token.fp },
        },
      }),
    );

    // Later, after the deploy: the budget guard's spacing since the first request has passed.
    clock.advance(20 * 60_000);
    const fresh = instance(world, { clock, config }).broker;
    const served = await fresh.getToken({ connection: name, principal, minTtlSeconds: 60 });
    expect(served.token.accessToken).not.toBe(LEGACY_SEALED.token.accessToken);
    expect(served.outcome).toBe('refreshed');
    expect(world.idp.count()).toBe(2);
    expect(world.logs.some((l) => l.message.includes('did not open') && l.fields?.fp === LEGACY_SEALED.token.fp)).toBe(true);

    // The replacement opens everywhere: another container serves it from the store, with no upstream request.
    const other = instance(world, { clock, config }).broker;
    const again = await other.getToken({ connection: name, principal, minTtlSeconds: 60 });
    expect(again).toMatchObject({ outcome: 'store', token: { accessToken: served.token.accessToken } });
    expect(world.idp.count()).toBe(2);
  });
});
