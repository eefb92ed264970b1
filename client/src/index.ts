/**
 * `@token-broker/client`: the token-broker caller client. See the package README (client/README.md).
 *
 *   const broker = new TokenBrokerClient({ endpoint: process.env.TOKEN_BROKER_URL! });
 *   const { accessToken } = await broker.getToken('vitesse-staging');
 *
 * The undici interceptor is a separate entry point, `@token-broker/client/interceptor`, so that this one
 * needs neither undici nor its types.
 */
export {
  TokenBrokerClient,
  type TokenBrokerClientOptions,
  type GetTokenOptions,
  type InvalidateOptions,
  type InvalidateResult,
  type BrokerToken,
  type BrokerDispatcher,
  type TokenSource,
} from './client.js';
export {
  TokenBrokerError,
  InvalidRequestError,
  ForbiddenError,
  NotFoundError,
  RateLimitedError,
  UpstreamError,
  UnavailableError,
  BrokerUnreachableError,
  InternalError,
  type TokenBrokerErrorCode,
  type TokenBrokerErrorDetails,
} from './errors.js';
