/**
 * Logical IDs are resource identity in CloudFormation: a changed ID deletes the old resource and creates a
 * new one. For the table, the keys, the secrets and the log groups that is data loss (or, for a named
 * secret, a failed deployment); for the API it is a new URL and new execute-api ARNs in every caller's
 * policy; for named resources (caller policies, alarms, dashboard) a name collision. These are the IDs of
 * the stacks deployed before the broker became a construct library: they must never change.
 */
import { describe, expect, it } from 'vitest';
import { resources, synth } from './helpers';

const STATEFUL: Record<string, Record<string, string[]>> = {
  dev: {
    'AWS::DynamoDB::Table': ['TableCD117FA1'],
    'AWS::KMS::Key': ['SealKey94782D95', 'TableKeyF581D96F'],
    'AWS::SecretsManager::Secret': [
      'SecrettokenbrokerdevvertexcloudA9DA807B',
      'SecrettokenbrokerdevvertexoseriesB41B428B',
      'Secrettokenbrokerdevvitesse1017D921',
    ],
    'AWS::Logs::LogGroup': ['ApiAccessLogsE9DF007D', 'BrokerLogs003CD6FC'],
  },
  prod: {
    'AWS::DynamoDB::Table': ['TableCD117FA1'],
    'AWS::KMS::Key': ['SealKey94782D95', 'TableKeyF581D96F'],
    'AWS::SecretsManager::Secret': [
      'SecrettokenbrokerprodvertexcloudB1FDD2F2',
      'SecrettokenbrokerprodvertexoseriesA58FA621',
      'Secrettokenbrokerprodvitesse2590CEC6',
    ],
    'AWS::Logs::LogGroup': ['ApiAccessLogsE9DF007D', 'BrokerLogs003CD6FC'],
  },
};

/** Not stateful, but replacing them breaks callers (the API's URL and ARNs) or collides on their names. */
const IDENTITY = {
  'AWS::ApiGateway::RestApi': ['ApiF70053CD'],
  'AWS::IAM::ManagedPolicy': ['CallerPolicyvertexcloudC1EAC440', 'CallerPolicyvertexoseriesB9D7D1AA', 'CallerPolicyvitesseA632FD25'],
  'AWS::IAM::Role': ['BrokerRole44A4F849'],
  'AWS::Lambda::Function': ['BrokerE1355FD6'],
  'AWS::SNS::Topic': ['AlarmTopicD01E77F9'],
  'AWS::CloudWatch::Dashboard': ['Dashboard9E4231ED'],
  'AWS::CloudWatch::Alarm': ['AlarmApi5xx9B44E702', 'AlarmFunctionErrors93096A0A', 'AlarmFunctionThrottles83B4B730'],
};

describe.each(['dev', 'prod'])('logical IDs of stack TokenBroker-%s', (stage) => {
  const { template } = synth(stage);

  it('stateful resources (table, KMS keys, secrets, log groups) keep the IDs they were deployed with', () => {
    for (const [type, ids] of Object.entries(STATEFUL[stage]!)) {
      expect(Object.keys(resources(template, type)).sort(), type).toEqual(ids);
    }
  });

  it('the API, the function and its role, caller policies, topic, dashboard and the function/API alarms keep theirs', () => {
    for (const [type, ids] of Object.entries(IDENTITY)) {
      expect(Object.keys(resources(template, type)), type).toEqual(expect.arrayContaining(ids));
    }
  });
});
