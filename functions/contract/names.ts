/** Names the parts agree on that are neither routes, errors nor telemetry. */

/**
 * A connection name: lowercase letters, digits and `-`, 1 to 64 characters. It appears in paths, IAM
 * resource ARNs, DynamoDB keys and metric dimensions.
 */
export const CONNECTION_NAME = /^[a-z0-9-]{1,64}$/;

/**
 * The encryption-context `purpose` of every sealed token; the seal key's policy allows the key only with it.
 * Here (no dependencies) so the CDK construct can use it without loading the Encryption SDK at synth.
 */
export const SEAL_PURPOSE = 'token-broker-cache';
