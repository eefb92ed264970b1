/**
 * token-broker caller client. See client/README.md.
 *
 *   const broker = new TokenBrokerClient({ endpoint: process.env.TOKEN_BROKER_URL! });
 *   const { accessToken } = await broker.getToken('vitesse-staging');
 */
export {
  TokenBrokerClient,
  type TokenBrokerClientOptions,
  type GetTokenOptions,
  type InvalidateOptions,
  type BrokerToken,
  type TokenSource,
} from './client.js';
export { tokenInterceptor, type TokenInterceptorOptions } from './interceptor.js';
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
