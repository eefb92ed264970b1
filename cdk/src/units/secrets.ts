import { ArnFormat, RemovalPolicy, SecretValue, Stack, Validations } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { SecretRef } from '../connections.js';

export interface ConnectionSecretsProps {
  readonly stage: string;
  /** One per distinct `secret` of the connections (connections.ts `secretRefs`). */
  readonly refs: readonly SecretRef[];
}

/**
 * The connections' credentials: a `secret` given by name is created here with a REPLACE_ME placeholder that
 * ops fill in; one given by full ARN is referenced. `readableArns` is exactly what the function may read.
 */
export class ConnectionSecrets extends Construct {
  readonly readableArns: string[] = [];
  /** Names of the secrets created with placeholders. */
  readonly created: string[] = [];

  constructor(scope: Construct, id: string, props: ConnectionSecretsProps) {
    super(scope, id);
    for (const ref of props.refs) {
      if (ref.kind === 'arn') {
        this.readableArns.push(ref.arn);
        continue;
      }
      const secret = new secretsmanager.Secret(this, `Secret:${ref.name.replaceAll('/', ':')}`, {
        secretName: ref.name,
        description:
          `token-broker ${props.stage}: credentials for connection(s) ${ref.connections.join(', ')}. ` +
          `Replace every REPLACE_ME: ${Object.keys(ref.placeholder).join(', ')}`,
        // A placeholder, not a credential: ops put the real values in the console. CloudFormation only
        // rewrites the value if this placeholder's shape changes (e.g. a connection switches grant type).
        secretStringValue: SecretValue.unsafePlainText(JSON.stringify(ref.placeholder)),
        removalPolicy: RemovalPolicy.RETAIN,
      });
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'Upstream client credentials are issued by the third party (Vitesse, Vertex); they cannot be rotated by a ' +
          'rotation Lambda. Ops rotate them in the console; the broker re-reads the secret on invalid_client.',
      });
      this.created.push(ref.name);
      // Name-based ARN with the 6-character suffix wildcard: covers this secret even if ops recreate it.
      this.readableArns.push(
        Stack.of(this).formatArn({
          service: 'secretsmanager',
          resource: 'secret',
          resourceName: `${ref.name}-??????`,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        }),
      );
    }
  }
}
