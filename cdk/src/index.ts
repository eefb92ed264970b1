/**
 * @token-broker/cdk: the token broker as a CDK construct.
 *
 *   new TokenBroker(stack, 'Broker', { stage: 'prod', config: { connections: { ... }, settings: { ... } } });
 */
export { TokenBroker, type TokenBrokerProps } from './token-broker.js';
export {
  BrokerDocumentSchema,
  parseBrokerDocument,
  StageError,
  type ParsedDocument,
  type StageSettings,
  type StageSettingsInput,
  type TokenBrokerConfig,
} from './settings.js';
export { ConfigError, type BrokerConfig, type Connection, type ConnectionInput } from '../../functions/core/config.js';
export { BUDGET_GAUGE_EVENT, DIMENSIONS, METRIC_NAMESPACE, METRICS, SERVICE } from '../../functions/contract/telemetry.js';
