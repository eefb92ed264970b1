import type { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type { IAlarmAction } from 'aws-cdk-lib/aws-cloudwatch';
import { Construct } from 'constructs';
import type { Connection } from '../../../functions/core/config.js';
import { METRICS } from '../../../functions/contract/telemetry.js';
import type { StageSettings } from '../settings.js';
import { connectionMetric } from './metrics.js';

const GTE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD;
const LTE = cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD;

export interface AlarmSpec {
  readonly metric: cloudwatch.IMetric;
  readonly threshold: number;
  readonly comparisonOperator: cloudwatch.ComparisonOperator;
  readonly description: string;
  /** Default NOT_BREACHING: no data means nothing happened. */
  readonly treatMissingData?: cloudwatch.TreatMissingData;
}

/** An alarm named `TokenBroker-<stage>-<name>` that notifies (and clears) on `action`. */
export function brokerAlarm(
  scope: Construct,
  id: string,
  stage: string,
  name: string,
  spec: AlarmSpec,
  action: IAlarmAction,
): cloudwatch.Alarm {
  const alarm = new cloudwatch.Alarm(scope, id, {
    alarmName: `TokenBroker-${stage}-${name}`,
    alarmDescription: `token-broker ${stage}: ${spec.description}`,
    metric: spec.metric,
    threshold: spec.threshold,
    comparisonOperator: spec.comparisonOperator,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    treatMissingData: spec.treatMissingData ?? cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  alarm.addAlarmAction(action);
  alarm.addOkAction(action);
  return alarm;
}

/**
 * What to alarm on for one connection. Every connection: upstream errors, stale tokens served, circuit open
 * (a credential error locks out every caller of any connection, rate-limited or not). A rate-limited one
 * also: budget at or below its reserve. The budget gauge is published every minute by the scheduled
 * invocation, so no data there means the gauge itself is broken: that alarms too.
 */
function connectionAlarmSpecs(c: Connection, alarms: StageSettings['alarms'], period: Duration): Record<string, AlarmSpec> {
  const m = (name: Parameters<typeof connectionMetric>[0], statistic: string, ledger?: string) =>
    connectionMetric(name, c.name, statistic, period, ledger === undefined ? {} : { ledger });
  const specs: Record<string, AlarmSpec> = {
    UpstreamErrors: {
      metric: m(METRICS.upstreamErrors, 'Sum'),
      threshold: alarms.upstreamErrors,
      comparisonOperator: GTE,
      description: `connection ${c.name}: upstream token requests failed (unreachable, 5xx, OAuth error, 429)`,
    },
    StaleTokens: {
      metric: m(METRICS.staleToken, 'Sum'),
      threshold: alarms.staleTokens,
      comparisonOperator: GTE,
      description: `connection ${c.name}: a refresh failed and a still-valid cached token was served instead`,
    },
    CircuitOpen: {
      metric: m(METRICS.circuitOpen, 'Maximum'),
      threshold: 1,
      comparisonOperator: GTE,
      description: `connection ${c.name}: credential circuit open, callers get 502 until the secret is fixed (npm run ops -- status ${c.name})`,
    },
  };
  if (c.rateLimit) {
    // The guard's reserve as the config resolved it (docs/protocol.md "Refresh reasons"): below it only expiries may spend.
    const reserve = c.rateLimit.reserve;
    specs.Budget = {
      metric: m(METRICS.ledgerRemaining, 'Minimum', c.rateLimit.key),
      threshold: reserve,
      comparisonOperator: LTE,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      description:
        `connection ${c.name}: ${reserve} or fewer of ${c.rateLimit.max} upstream token requests left in the ` +
        `${c.rateLimit.windowSeconds} s window of ledger ${c.rateLimit.key} (or no budget gauge published)`,
    };
  }
  return specs;
}

export interface ConnectionAlarmsProps {
  readonly stage: string;
  readonly connection: Connection;
  readonly settings: StageSettings;
  readonly period: Duration;
  readonly action: IAlarmAction;
}

/** The alarms of one connection (connectionAlarmSpecs), named `TokenBroker-<stage>-<connection>-<what>`. */
export class ConnectionAlarms extends Construct {
  readonly alarms: cloudwatch.Alarm[];

  constructor(scope: Construct, id: string, props: ConnectionAlarmsProps) {
    super(scope, id);
    const { stage, connection } = props;
    this.alarms = Object.entries(connectionAlarmSpecs(connection, props.settings.alarms, props.period)).map(([what, spec]) =>
      brokerAlarm(this, what, stage, `${connection.name}-${what}`, spec, props.action),
    );
  }
}
