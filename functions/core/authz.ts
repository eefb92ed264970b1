/**
 * Caller authorisation: who is calling (from the IAM identity API Gateway verified) and whether a
 * connection's `callers` patterns admit them. Deny by default.
 *
 * - An assumed-role session `arn:PART:sts::ACCT:assumed-role/NAME/SESSION` is the role
 *   `arn:PART:iam::ACCT:role/NAME`. Assumed-role ARNs drop the role's path, so a configured role pattern
 *   with a path (`role/service-role/App`) matches such a caller by partition, account and role name.
 * - IAM users match user patterns (path included).
 * - Root, federated users, anything unparsable and a missing identity are refused.
 * - `*` in a pattern matches within one ARN segment: never across `:` or `/`.
 */

export type Principal =
  | { kind: 'role'; partition: string; account: string; name: string; sessionName?: string }
  | { kind: 'user'; partition: string; account: string; path: string; name: string };

const ASSUMED_ROLE = /^arn:(aws|aws-cn|aws-us-gov):sts::(\d{12}):assumed-role\/([\w+=,.@-]{1,64})\/([\w+=,.@-]{1,64})$/;
const IAM_ROLE = /^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role\/((?:[\x21-\x7e]*\/)?)([\w+=,.@-]{1,64})$/;
const IAM_USER = /^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):user\/((?:[\x21-\x7e]*\/)?)([\w+=,.@-]{1,64})$/;

/** The principal behind a verified caller ARN, or undefined for one the broker never serves. */
export function principalFromArn(arn: string | null | undefined): Principal | undefined {
  if (typeof arn !== 'string' || arn.length > 2048) return undefined;
  let m = ASSUMED_ROLE.exec(arn);
  if (m) return { kind: 'role', partition: m[1]!, account: m[2]!, name: m[3]!, sessionName: m[4]! };
  m = IAM_ROLE.exec(arn);
  if (m) return { kind: 'role', partition: m[1]!, account: m[2]!, name: m[4]! };
  m = IAM_USER.exec(arn);
  if (m) return { kind: 'user', partition: m[1]!, account: m[2]!, path: m[3]!, name: m[4]! };
  return undefined; // root, federated-user, service principals, garbage
}

/** The principal as an ARN for logs: the role, not the session. */
export function principalArn(p: Principal): string {
  return p.kind === 'role'
    ? `arn:${p.partition}:iam::${p.account}:role/${p.name}`
    : `arn:${p.partition}:iam::${p.account}:user/${p.path}${p.name}`;
}

const compiled = new Map<string, RegExp>();

function globSegment(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  let re = compiled.get(pattern);
  if (!re) {
    re = new RegExp(`^${pattern.split('*').map(escapeRegExp).join('[^:/]*')}$`);
    compiled.set(pattern, re);
  }
  return re.test(value);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Splits an ARN pattern into partition, service, account and resource; undefined if not one. */
function parsePattern(pattern: string) {
  const parts = pattern.split(':');
  if (parts.length !== 6 || parts[0] !== 'arn') return undefined;
  return { partition: parts[1]!, service: parts[2]!, account: parts[4]!, resource: parts[5]! };
}

/** @internal */
export function matchesPattern(principal: Principal, pattern: string): boolean {
  const p = parsePattern(pattern);
  if (!p || p.service !== 'iam') return false;
  if (!globSegment(p.partition, principal.partition) || !globSegment(p.account, principal.account)) return false;
  const segments = p.resource.split('/');
  const [type, ...rest] = segments;
  if (rest.length === 0) return false;
  if (principal.kind === 'role') {
    if (type !== 'role') return false;
    // The caller's session ARN has no path: match the role name only (path ignored).
    return globSegment(rest[rest.length - 1]!, principal.name);
  }
  if (type !== 'user') return false;
  const valueSegments = [...principal.path.split('/').filter(Boolean), principal.name];
  return rest.length === valueSegments.length && rest.every((s, i) => globSegment(s, valueSegments[i]!));
}

export function isAllowed(principal: Principal | undefined, patterns: readonly string[]): principal is Principal {
  return principal !== undefined && patterns.some((pattern) => matchesPattern(principal, pattern));
}
