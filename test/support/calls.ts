/**
 * Calls on broker instances as the budget-guard suites make them, and the faults they inject: one caller
 * identity, answers or errors as values, a fake clock that also stamps the IdP's receipts.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { principalFromArn } from '../../functions/core/authz.js';
import type { Served, TokenBroker } from '../../functions/core/broker.js';
import type { BrokerError } from '../../functions/core/errors.js';
import { FakeClock } from './clock.js';
import { CALLER, type World } from './env.js';
import { issue } from '../../testkit/idp.js';

const principal = principalFromArn(CALLER);
export const S = 1_000;
export const MIN = 60 * S;
/** Vertex O Series' budget: 10 token requests per 8 hours (reserve 2, spacing 2880 s by default). */
export const vertex = { rateLimit: { max: 10, windowSeconds: 28_800 } };

export const get = (b: TokenBroker, connection: string, minTtlSeconds = 60) => b.getToken({ connection, principal, minTtlSeconds });
export const report = (b: TokenBroker, connection: string, accessToken: string) => b.invalidate({ connection, principal, accessToken });
/** A getToken that resolves with the answer or the BrokerError. */
export const attempt = (b: TokenBroker, connection: string, minTtlSeconds = 60): Promise<Served | BrokerError> =>
  get(b, connection, minTtlSeconds).catch((e: BrokerError) => e);
export const isError = (r: Served | BrokerError): r is BrokerError => r instanceof Error;

/** A fake clock that also stamps the IdP's receipts, so spacing is measured in the test's time. */
export function fakeClock(world: World): FakeClock {
  const clock = new FakeClock(Date.now());
  world.idp.now = () => clock.now();
  return clock;
}

/** Puts the world's IdP back to its defaults after a test. */
export function resetIdp(world: World): void {
  world.idp.respond = issue();
  world.idp.receipts.length = 0;
  world.idp.now = Date.now;
}

/** Fails DynamoDB calls of one client while `when` says so (a throttled hot partition, an outage). */
export function faults(when: (command: string, input: { Key?: { pk?: { S?: string } }; UpdateExpression?: string }) => boolean) {
  return (c: DynamoDBClient) =>
    c.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (when(ctx.commandName ?? '', args.input as never)) {
          throw Object.assign(new Error('InternalServerError'), {
            name: 'InternalServerError',
            $fault: 'server',
            $metadata: { httpStatusCode: 500 },
          });
        }
        return next(args);
      },
      { step: 'initialize', priority: 'high' },
    );
}
