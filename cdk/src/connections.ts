import { ConfigError, type BrokerConfig, type Connection, configDocument } from '../../functions/core/config.js';

/**
 * What the infrastructure derives from the validated connections: the `config.json` the function ships,
 * the secrets to create or reference, the caller accounts and principal patterns of the resource policy.
 */

/**
 * The document written as `config.json` into the function bundle: `{ "connections": { NAME: {...} } }`, the
 * schema of docs/design.md "Connection config" with every default resolved. Parsing it again with `parseConfig` gives the same config.
 * @internal test/infra/config.test.ts reads it.
 */
export function bundleConfigDocument(config: BrokerConfig): ReturnType<typeof configDocument> {
  return configDocument(config);
}

/** `config.json` text: deterministic (sorted connections), so an unchanged config keeps the asset hash. */
export function renderBundleConfig(config: BrokerConfig): string {
  return `${JSON.stringify(bundleConfigDocument(config), null, 2)}\n`;
}

/** File name the handler resolves against LAMBDA_TASK_ROOT (env `BROKER_CONFIG_FILE`). */
export const BUNDLE_CONFIG_FILE = 'config.json';

// ---------------------------------------------------------------------------------------------------------
// Secrets

/** Secrets Manager secret names: letters, digits and /_+=.@- (no wildcards that would widen the grant). */
const SECRET_NAME = /^[A-Za-z0-9/_+=.@-]{1,512}$/;
/** A complete secret ARN, ending in the 6-character suffix Secrets Manager appends. */
const SECRET_ARN = /^arn:(aws|aws-cn|aws-us-gov):secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;

export type SecretRef =
  | { readonly kind: 'arn'; readonly arn: string; readonly connections: readonly string[] }
  | {
      readonly kind: 'name';
      readonly name: string;
      readonly connections: readonly string[];
      /** The JSON the secret must hold; a placeholder with these keys tells ops what to fill in. */
      readonly placeholder: Readonly<Record<string, string>>;
    };

/** One entry per distinct `secret` value, in name order; ConfigError for a malformed name or ARN. */
export function secretRefs(config: BrokerConfig, source = 'config'): SecretRef[] {
  const bySecret = new Map<string, Connection[]>();
  for (const c of config.connections.values()) {
    const list = bySecret.get(c.secret) ?? [];
    list.push(c);
    bySecret.set(c.secret, list);
  }
  const refs: SecretRef[] = [];
  for (const [secret, conns] of [...bySecret].sort(([a], [b]) => a.localeCompare(b))) {
    const names = conns.map((c) => c.name).sort();
    if (secret.startsWith('arn:')) {
      if (!SECRET_ARN.test(secret)) {
        throw new ConfigError(
          `invalid config (${source}):\n  connections.${names[0]}.secret: "${secret}" is not a complete Secrets Manager ARN ` +
            '(arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX); give the full ARN or just the name',
        );
      }
      refs.push({ kind: 'arn', arn: secret, connections: names });
    } else {
      if (!SECRET_NAME.test(secret)) {
        throw new ConfigError(
          `invalid config (${source}):\n  connections.${names[0]}.secret: "${secret}" is not a valid Secrets Manager name ` +
            '(letters, digits and /_+=.@-)',
        );
      }
      const placeholder: Record<string, string> = { client_id: 'REPLACE_ME', client_secret: 'REPLACE_ME' };
      if (conns.some((c) => c.grantType === 'password')) {
        placeholder.username = 'REPLACE_ME';
        placeholder.password = 'REPLACE_ME';
      }
      refs.push({ kind: 'name', name: secret, connections: names, placeholder });
    }
  }
  return refs;
}

// ---------------------------------------------------------------------------------------------------------
// Callers

/**
 * The 12-digit accounts of every connection's `callers`, sorted. The schema only admits role/user ARNs with
 * a literal account, so this is total; the check guards against the schema loosening.
 */
export function callerAccounts(config: BrokerConfig, source = 'config'): string[] {
  const accounts = new Set<string>();
  for (const c of config.connections.values()) {
    c.callers.forEach((pattern, i) => {
      const account = pattern.split(':')[4] ?? '';
      if (!/^\d{12}$/.test(account)) {
        throw new ConfigError(
          `invalid config (${source}):\n  connections.${c.name}.callers.${i}: account "${account}" must be a 12-digit account id`,
        );
      }
      accounts.add(account);
    });
  }
  return [...accounts].sort();
}

/**
 * `aws:PrincipalArn` patterns (IAM ArnLike) for a connection's `callers`, for the API resource policy. An
 * assumed-role caller's aws:PrincipalArn is its role ARN with the role's path, while the broker matches
 * roles by account and name (path ignored, see README.md, section "Connection config"): each role pattern is allowed with any path.
 * IAM's `*` also crosses `/`, so this is at least as permissive as the broker's own check, never more
 * than the accounts and names configured; the broker's check stays the precise one.
 */
export function principalArnPatterns(callers: readonly string[]): string[] {
  const out = new Set<string>();
  for (const pattern of callers) {
    const m = /^(arn:[^:]+:iam::\d{12}:role\/)(?:.*\/)?([^/]+)$/.exec(pattern);
    if (m) {
      out.add(`${m[1]}${m[2]}`);
      out.add(`${m[1]}*/${m[2]}`);
    } else {
      out.add(pattern);
    }
  }
  return [...out];
}
