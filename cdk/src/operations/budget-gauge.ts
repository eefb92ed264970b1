import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import { BUDGET_GAUGE_EVENT } from '../../../functions/contract/telemetry.js';

export interface BudgetGaugeProps {
  readonly stage: string;
  readonly handler: lambda.IFunction;
}

/**
 * Every minute, the broker function itself is invoked with BUDGET_GAUGE_EVENT and publishes the budget gauges
 * of every rate-limited connection and the circuit state of every connection, traffic or not: what the budget
 * alarms and dashboard rows read. No second function to deploy. A missed minute is not retried (the next one
 * comes a minute later); a gauge that stops altogether trips the budget alarms (missing data is breaching).
 */
export class BudgetGauge extends Construct {
  readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: BudgetGaugeProps) {
    super(scope, id);
    this.rule = new events.Rule(this, 'Schedule', {
      description: `token-broker ${props.stage}: publish budget and circuit gauges every minute`,
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [
        new targets.LambdaFunction(props.handler, {
          event: events.RuleTargetInput.fromObject(BUDGET_GAUGE_EVENT),
          retryAttempts: 0,
          maxEventAge: Duration.minutes(1),
        }),
      ],
    });
  }
}
