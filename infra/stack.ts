import { type CfnElement, Names, Stack, type StackProps } from 'aws-cdk-lib';
import { Construct } from 'constructs';

/**
 * Where the broker's resources sat in this app's stacks before they moved into the TokenBroker construct's
 * units: [path under the construct, path under the stack]. Their logical IDs are computed from the old paths,
 * so an upgrade replaces nothing (test/infra/logical-ids.test.ts). Resources added since keep their natural IDs.
 */
const MOVES: readonly [RegExp, string][] = [
  [/^Keys\/(TableKey|SealKey)\//, '$1/'],
  [/^Table\/Table\//, 'Table/'],
  [/^Secrets\//, ''],
  [/^Function\/Role\//, 'BrokerRole/'],
  [/^Function\/Logs\//, 'BrokerLogs/'],
  [/^Function\/Handler\//, 'Broker/'],
  [/^Api\/AccessLogs\//, 'ApiAccessLogs/'],
  [/^Api\/RestApi\//, 'Api/'],
  [/^Api\/Validator\//, 'Validator/'],
  [/^Callers\/([^/]+)\//, 'CallerPolicy:$1/'],
  [/^Operations\/(AlarmTopic|AlarmFunctionErrors|AlarmFunctionThrottles|AlarmApi5xx|Dashboard)\//, '$1/'],
];

/** The logical ID CloudFormation element at `path` (IDs below a stack) gets: the same function CDK applies. */
function logicalIdAt(path: readonly string[]): string {
  let node = new Construct(undefined as unknown as Construct, '');
  for (const id of path) node = new Construct(node, id);
  return Names.uniqueId(node);
}

export interface TokenBrokerStackProps extends StackProps {
  /** The construct ID of the TokenBroker in this stack. */
  readonly brokerId: string;
}

/** Stack `TokenBroker-<stage>` of this repository's app: logical IDs as deployed before the construct existed. */
export class TokenBrokerStack extends Stack {
  private readonly brokerId: string;

  constructor(scope: Construct, id: string, props: TokenBrokerStackProps) {
    super(scope, id, props);
    this.brokerId = props.brokerId;
  }

  protected override allocateLogicalId(element: CfnElement): string {
    const scopes = element.node.scopes;
    const path = scopes.slice(scopes.indexOf(this) + 1).map((s) => s.node.id);
    if (path[0] !== this.brokerId) return super.allocateLogicalId(element);
    const under = `${path.slice(1).join('/')}/`;
    const move = MOVES.find(([from]) => from.test(under));
    if (!move) return super.allocateLogicalId(element);
    return logicalIdAt(under.replace(move[0], move[1]).split('/').filter(Boolean));
  }
}
