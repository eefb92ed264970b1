import { Aws, Duration, type RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

/** The encryption-context purpose the broker puts on every sealed token; the seal key policy requires it. */
import { SEAL_PURPOSE } from '../../../functions/contract/names.js';

/** Key administration without key use: enough to manage, rotate, tag and delete a key, never to decrypt. */
const KEY_ADMIN_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:PutKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:RotateKeyOnDemand',
  'kms:ListKeyRotations',
  'kms:ListResourceTags',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:ListGrants',
  'kms:RevokeGrant',
  'kms:ListAliases',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
];

/** `kms:ViaService` of DynamoDB in this stack's region. */
export const DYNAMODB_VIA_SERVICE = `dynamodb.${Aws.REGION}.amazonaws.com`;

export interface BrokerKeysProps {
  readonly stage: string;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The two customer-managed keys: the table's SSE key (usable only through DynamoDB) and the seal key for the
 * envelope encryption of cached tokens (usable only by the function, only with the broker's context). The
 * account administers both and uses neither directly.
 */
export class BrokerKeys extends Construct {
  readonly tableKey: kms.Key;
  readonly sealKey: kms.Key;
  /** The condition every use of the seal key carries. */
  readonly sealContext = { 'kms:EncryptionContext:purpose': SEAL_PURPOSE };

  constructor(scope: Construct, id: string, props: BrokerKeysProps) {
    super(scope, id);
    const accountAdmin = () =>
      new iam.PolicyStatement({
        sid: 'KeyAdministrationWithoutUse',
        principals: [new iam.AccountRootPrincipal()],
        actions: KEY_ADMIN_ACTIONS,
        resources: ['*'],
      });
    const common = { enableKeyRotation: true, removalPolicy: props.removalPolicy, pendingWindow: Duration.days(7) };

    // Table SSE key: usable only through DynamoDB (by principals IAM allows: the function, CloudFormation,
    // the operator CLI, backup/restore operators), never directly.
    this.tableKey = new kms.Key(this, 'TableKey', {
      ...common,
      description: `token-broker ${props.stage}: DynamoDB table encryption`,
      policy: new iam.PolicyDocument({
        statements: [
          accountAdmin(),
          new iam.PolicyStatement({
            sid: 'UseThroughDynamoDbOnly',
            principals: [new iam.AccountRootPrincipal()],
            actions: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:CreateGrant', 'kms:DescribeKey'],
            resources: ['*'],
            conditions: { StringEquals: { 'kms:ViaService': DYNAMODB_VIA_SERVICE, 'kms:CallerAccount': Aws.ACCOUNT_ID } },
          }),
          new iam.PolicyStatement({
            sid: 'DynamoDbDescribesKey',
            principals: [new iam.ServicePrincipal('dynamodb.amazonaws.com')],
            actions: ['kms:DescribeKey', 'kms:GetKeyPolicy', 'kms:ListGrants'],
            resources: ['*'],
          }),
        ],
      }),
    });

    // Seal key: envelope encryption of cached tokens (KMS data keys and AES-256-GCM, docs/sealing.md). Only the
    // function may use it (allowSealing), and only with the broker's encryption context.
    this.sealKey = new kms.Key(this, 'SealKey', {
      ...common,
      description: `token-broker ${props.stage}: seals cached tokens (envelope encryption)`,
      policy: new iam.PolicyDocument({ statements: [accountAdmin()] }),
    });
  }

  /** Lets `role` (the function's, and no other) seal and open tokens with the seal key. */
  allowSealing(role: iam.IRole): void {
    this.sealKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'BrokerFunctionSealsTokens',
        principals: [new iam.ArnPrincipal(role.roleArn)],
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: ['*'],
        conditions: { StringEquals: this.sealContext },
      }),
    );
  }
}
