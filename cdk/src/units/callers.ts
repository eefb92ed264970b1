import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { ROUTE_KINDS, ROUTES, routePath } from '../../../functions/contract/routes.js';
import { stableOutput } from '../outputs.js';

/** The two routes of a connection, as API Gateway method ARN suffixes: `GET/tokens/NAME`, `POST/tokens/NAME/invalidate`. */
const routeArnSuffixes = (connection: string): string[] =>
  ROUTE_KINDS.map((kind) => `${ROUTES[kind].method}${routePath(kind, connection)}`);

export interface CallerPoliciesProps {
  readonly stage: string;
  readonly connections: readonly string[];
  readonly restApi: apigw.RestApi;
}

/**
 * One managed policy per connection: `execute-api:Invoke` on that connection's two routes in this stage,
 * for caller roles in this account to attach (output `CallerPolicyArn<Connection>`).
 */
export class CallerPolicies extends Construct {
  private readonly policies = new Map<string, iam.ManagedPolicy>();
  private readonly restApi: apigw.RestApi;
  private readonly stage: string;

  constructor(scope: Construct, id: string, props: CallerPoliciesProps) {
    super(scope, id);
    this.restApi = props.restApi;
    this.stage = props.stage;
    const outputIds = new Set<string>();
    for (const name of [...props.connections].sort()) {
      const policy = new iam.ManagedPolicy(this, name, {
        managedPolicyName: `TokenBroker-${props.stage}-${name}-caller`,
        description: `Get and invalidate tokens of token-broker connection "${name}" (${props.stage}): ${routeArnSuffixes(name).join(', ')}`,
        statements: [
          new iam.PolicyStatement({ sid: 'InvokeTokenBroker', actions: ['execute-api:Invoke'], resources: this.routeArns(name) }),
        ],
      });
      this.policies.set(name, policy);
      // Distinct connection names can share a PascalCase form (a-b, ab-): number the later ones.
      let outputId = `CallerPolicyArn${pascal(name)}`;
      for (let n = 2; outputIds.has(outputId); n++) outputId = `CallerPolicyArn${pascal(name)}X${n}`;
      outputIds.add(outputId);
      stableOutput(this, outputId, policy.managedPolicyArn, `Managed policy a caller role attaches to use connection "${name}"`);
    }
  }

  /** The execute-api ARNs of a connection's two routes in this stage. */
  routeArns(connection: string): string[] {
    return ROUTE_KINDS.map((kind) => this.restApi.arnForExecuteApi(ROUTES[kind].method, routePath(kind, connection), this.stage));
  }

  policy(connection: string): iam.ManagedPolicy | undefined {
    return this.policies.get(connection);
  }
}

function pascal(name: string): string {
  return name
    .split('-')
    .filter(Boolean)
    .map((p) => p.charAt(0).toUpperCase() + p.slice(1))
    .join('');
}
