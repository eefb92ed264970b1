import { Annotations, Duration, Validations } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import type { BrokerConfig } from '../../../functions/core/config.js';
import { StageError, type StageSettings } from '../settings.js';
import { brokerAlarm, ConnectionAlarms } from './alarms.js';
import { BudgetGauge } from './budget-gauge.js';
import { connectionRow, stageRows } from './dashboard.js';
import { opsPolicy } from './ops-policy.js';
import { BrokerQueries } from './queries.js';

/** CloudWatch's limit of widgets on one dashboard. */
const MAX_DASHBOARD_WIDGETS = 500;

export interface OperationsProps {
  readonly stage: string;
  readonly settings: StageSettings;
  readonly config: BrokerConfig;
  readonly restApi: apigw.RestApi;
  readonly handler: lambda.Function;
  readonly logGroup: logs.ILogGroup;
  readonly table: dynamodb.Table;
  readonly tableKey: kms.IKey;
}

/**
 * Running the broker: the alarm topic (or the stage's existing one), the function/API alarms and the
 * per-connection alarms, a dashboard with a row per connection, the budget gauge's schedule, saved Logs
 * Insights queries, and the operator CLI's policy.
 */
export class Operations extends Construct {
  readonly alarmTopic: sns.ITopic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly opsPolicy: iam.ManagedPolicy;
  readonly budgetGauge: BudgetGauge;

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    const { stage, settings, restApi, handler } = props;
    const alarmSettings = settings.alarms;
    const period = Duration.minutes(alarmSettings.periodMinutes);
    this.alarmTopic = this.topic(props);
    const action = new SnsAction(this.alarmTopic);

    const GTE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD;
    const stageAlarms = [
      brokerAlarm(
        this,
        'AlarmFunctionErrors',
        stage,
        'FunctionErrors',
        {
          metric: handler.metricErrors({ period, statistic: 'Sum' }),
          threshold: alarmSettings.functionErrors,
          comparisonOperator: GTE,
          description: 'Broker function errors (unhandled or timeouts)',
        },
        action,
      ),
      brokerAlarm(
        this,
        'AlarmFunctionThrottles',
        stage,
        'FunctionThrottles',
        {
          metric: handler.metricThrottles({ period, statistic: 'Sum' }),
          threshold: alarmSettings.functionThrottles,
          comparisonOperator: GTE,
          description: 'Broker function throttled (concurrency)',
        },
        action,
      ),
      brokerAlarm(
        this,
        'AlarmApi5xx',
        stage,
        'Api5xx',
        {
          metric: restApi.metricServerError({ period, statistic: 'Sum' }),
          threshold: alarmSettings.api5xx,
          comparisonOperator: GTE,
          description: 'API Gateway 5XX responses',
        },
        action,
      ),
    ];
    this.alarms.push(...stageAlarms);

    const rows = stageRows({ period, api: restApi, handler, table: props.table, alarms: stageAlarms });
    for (const connection of [...props.config.connections.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const { alarms } = new ConnectionAlarms(this, `Alarms:${connection.name}`, { stage, connection, settings, period, action });
      this.alarms.push(...alarms);
      rows.push(connectionRow(connection, period, alarms));
    }
    const widgets = rows.reduce((n, row) => n + row.length, 0);
    if (widgets > MAX_DASHBOARD_WIDGETS) {
      throw new StageError(
        `stage "${stage}": ${props.config.connections.size} connections need ${widgets} dashboard widgets and CloudWatch allows ` +
          `${MAX_DASHBOARD_WIDGETS}: split the connections across stages`,
      );
    }
    new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `TokenBroker-${stage}`, widgets: rows });

    this.budgetGauge = new BudgetGauge(this, 'BudgetGauge', { stage, handler });
    new BrokerQueries(this, 'Queries', { stage, logGroup: props.logGroup });
    this.opsPolicy = opsPolicy(this, 'OpsPolicy', {
      stage,
      table: props.table,
      tableKey: props.tableKey,
      handler,
      logGroup: props.logGroup,
    });
  }

  /** The stage's existing topic (settings.alarms.topicArn), or a new one with the e-mail subscribers. */
  private topic({ stage, settings }: OperationsProps): sns.ITopic {
    const { topicArn, emails } = settings.alarms;
    if (topicArn) return sns.Topic.fromTopicArn(this, 'AlarmTopic', topicArn);
    const topic = new sns.Topic(this, 'AlarmTopic', { displayName: `token-broker ${stage} alarms`, enforceSSL: true });
    for (const email of emails) topic.addSubscription(new EmailSubscription(email));
    if (emails.length === 0) {
      Annotations.of(this).addWarningV2(
        '@token-broker/cdk:no-alarm-subscribers',
        `token-broker ${stage}: alarms notify nobody: set settings.alarms.emails or settings.alarms.topicArn`,
      );
    }
    Validations.of(topic).acknowledge({
      id: 'AwsSolutions-SNS2',
      reason:
        'Alarm notifications carry alarm names and metric values only, never tokens or secrets; SSE with the ' +
        'aws/sns key cannot be used by CloudWatch alarms and a CMK for this topic adds nothing.',
    });
    return topic;
  }
}
