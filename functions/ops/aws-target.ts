/**
 * A deployed stage as the operator CLI finds it, with the operator's own AWS credentials:
 *
 *   cloudformation:DescribeStacks  TokenBroker-<stage>  outputs TableName, FunctionName (and the log group:
 *                                                       LogGroupName, else FunctionLogGroup, else
 *                                                       /aws/lambda/<FunctionName>)
 *   lambda:GetFunction             FunctionName         Code.Location: the deployed code package, whose
 *                                                       config.json (root) is the config the broker runs with
 *   dynamodb:GetItem, UpdateItem   TableName            the items themselves
 *   sts:GetCallerIdentity                               the operator, for audit lines (actions only)
 *   logs:CreateLogStream, PutLogEvents  the log group   stream ops-cli (actions only)
 *
 * Loaded only for --stage, so local mode never loads these clients.
 */
import { CloudFormationClient, DescribeStacksCommand, type Output } from '@aws-sdk/client-cloudformation';
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetFunctionCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { DynamoTokenStore } from '../adapters/dynamodb-store.js';
import { STACK_OUTPUTS as OUTPUTS, stackName } from '../contract/deployment.js';
import { BROKER_ENV } from '../contract/env.js';
import { type BrokerConfig, ConfigError, parseConfig, parseConfigText } from '../core/config.js';
import { cloudWatchSink } from './audit-cloudwatch.js';
import { OpsError, describeAwsError } from './errors.js';
import type { TargetFlags } from './flags.js';
import type { Target } from './target.js';
import { ZipError, readZipEntry } from './zip.js';

/** The stack outputs the CLI reads (infra: the ops policy and the outputs must match). */
const STACK_OUTPUTS = {
  table: OUTPUTS.table,
  function: OUTPUTS.function,
  /** The first present names the broker's log group; without either, /aws/lambda/<FunctionName>. */
  logGroup: ['LogGroupName', OUTPUTS.functionLogGroup],
} as const;

/** Larger than any Lambda code package (250 MB unzipped): a cap, not an expectation. */
const MAX_PACKAGE_BYTES = 256 * 1024 * 1024;
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
const DOWNLOAD_TIMEOUT_MS = 120_000;

interface AwsClients {
  cloudformation: CloudFormationClient;
  lambda: LambdaClient;
  sts: STSClient;
  logs: CloudWatchLogsClient;
  dynamodb: DynamoDBClient;
}

export interface AwsEnv {
  /** Clients for `region`. */
  clients(region: string): AwsClients;
  /** The region from the environment and the AWS profile, when --region is not given. */
  defaultRegion(): Promise<string | undefined>;
  /** Downloads the function's code package (a presigned S3 URL). */
  download(url: string): Promise<Uint8Array>;
}

/** The SDK's clients, sharing one credential chain (so an SSO or MFA profile is resolved once). */
export function sdkEnv(): AwsEnv {
  const credentials = defaultProvider();
  return {
    clients: (region) => ({
      cloudformation: new CloudFormationClient({ region, credentials }),
      lambda: new LambdaClient({ region, credentials }),
      sts: new STSClient({ region, credentials }),
      logs: new CloudWatchLogsClient({ region, credentials }),
      dynamodb: new DynamoDBClient({ region, credentials, maxAttempts: 3 }),
    }),
    defaultRegion: async () => {
      const probe = new STSClient({});
      try {
        return await probe.config.region();
      } catch {
        return undefined;
      } finally {
        probe.destroy();
      }
    },
    download: downloadPackage,
  };
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Downloads the deployed code package from GetFunction's presigned URL: https only (loopback http for
 * tests), no redirects, at most MAX_PACKAGE_BYTES read. Errors never quote the URL: it carries a presigned
 * credential.
 * @internal
 */
export async function downloadPackage(url: string): Promise<Uint8Array> {
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  if (!parsed || !(parsed.protocol === 'https:' || (parsed.protocol === 'http:' && LOOPBACK.has(parsed.hostname)))) {
    throw new Error('the code package location is not an https URL');
  }
  let res: Response;
  try {
    res = await fetch(parsed, { redirect: 'error', signal: AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS) });
  } catch (e) {
    // Never the fetch error's message: it may quote the URL.
    const err = e as Error & { cause?: { code?: string } };
    throw new Error(err.cause?.code ?? err.name);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new Error(`HTTP ${res.status}`);
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > MAX_PACKAGE_BYTES) {
    await res.body.cancel();
    throw new Error(`the package is ${declared} bytes, more than ${MAX_PACKAGE_BYTES}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > MAX_PACKAGE_BYTES) throw new Error(`the package is more than ${MAX_PACKAGE_BYTES} bytes`);
    chunks.push(chunk);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

function output(outputs: Output[], key: string): string | undefined {
  const v = outputs.find((o) => o.OutputKey === key)?.OutputValue;
  return v ? v : undefined;
}

/** The config file the function reads (BROKER_CONFIG_FILE, relative to its code root; default config.json). */
function configPath(env: Record<string, string> | undefined): string {
  const file = env?.[BROKER_ENV.configFile];
  if (!file) return 'config.json';
  return file.replace(/^\.\//, '');
}

/** Reads and validates the config the deployed function runs with. */
async function deployedConfig(aws: AwsEnv, lambda: LambdaClient, functionName: string): Promise<BrokerConfig> {
  let location: string | undefined;
  let path: string;
  try {
    const fn = await lambda.send(new GetFunctionCommand({ FunctionName: functionName }));
    location = fn.Code?.Location;
    path = configPath(fn.Configuration?.Environment?.Variables);
    if (fn.Code?.ImageUri && !location) throw new OpsError(`function ${functionName} is a container image; cannot read its config.json`);
  } catch (e) {
    if (e instanceof OpsError) throw e;
    if ((e as { name?: string })?.name === 'ResourceNotFoundException')
      throw new OpsError(`function ${functionName} (stack output ${STACK_OUTPUTS.function}) not found`);
    throw new OpsError(describeAwsError(e, `reading function ${functionName}`));
  }
  if (!location) throw new OpsError(`function ${functionName}: GetFunction gave no code location`);
  let zip: Uint8Array;
  try {
    zip = await aws.download(location);
  } catch (e) {
    const err = e as { name?: string; message?: string; cause?: { code?: string } };
    throw new OpsError(`cannot download the code package of function ${functionName}: ${err.cause?.code ?? err.message ?? err.name}`);
  }
  let bytes: Uint8Array | undefined;
  try {
    bytes = readZipEntry(zip, path, MAX_CONFIG_BYTES);
  } catch (e) {
    if (e instanceof ZipError) throw new OpsError(`the code package of function ${functionName}: ${e.message}`);
    throw e;
  }
  if (!bytes) throw new OpsError(`the code package of function ${functionName} has no ${path} at its root`);
  const source = `${path} of function ${functionName}`;
  try {
    return parseConfig(parseConfigText(new TextDecoder('utf-8', { fatal: false }).decode(bytes), source), source);
  } catch (e) {
    if (e instanceof ConfigError) throw new OpsError(e.message);
    throw e;
  }
}

export async function stageTarget(flags: Extract<TargetFlags, { kind: 'stage' }>, aws: AwsEnv = sdkEnv()): Promise<Target> {
  const region = flags.region ?? (await aws.defaultRegion());
  if (!region) throw new OpsError('no AWS region: pass --region or set AWS_REGION (or a region in your AWS profile)');
  const clients = aws.clients(region);
  const close = () => {
    for (const c of Object.values(clients)) c.destroy();
  };
  try {
    const stack = stackName(flags.stage);
    let outputs: Output[];
    try {
      const out = await clients.cloudformation.send(new DescribeStacksCommand({ StackName: stack }));
      outputs = out.Stacks?.[0]?.Outputs ?? [];
    } catch (e) {
      const err = e as { name?: string; message?: string };
      if (err.name === 'ValidationError' && /does not exist/.test(err.message ?? '')) {
        throw new OpsError(`stack ${stack} not found in ${region}: is stage "${flags.stage}" deployed there? (--region)`);
      }
      throw new OpsError(describeAwsError(e, `reading stack ${stack} in ${region}`));
    }
    const need = (key: string) => {
      const v = output(outputs, key);
      if (!v) throw new OpsError(`stack ${stack} (${region}) has no output ${key}: deploy the stage with this version of token-broker`);
      return v;
    };
    const table = need(STACK_OUTPUTS.table);
    const functionName = need(STACK_OUTPUTS.function);
    const logGroup = STACK_OUTPUTS.logGroup.map((k) => output(outputs, k)).find((v) => v !== undefined) ?? `/aws/lambda/${functionName}`;
    const config = await deployedConfig(aws, clients.lambda, functionName);
    return {
      name: flags.stage,
      where: `table ${table} (stack ${stack}, ${region})`,
      missingTableHint: `the stack's ${STACK_OUTPUTS.table} output names it, but DynamoDB does not know it`,
      config,
      table,
      dynamodb: clients.dynamodb,
      store: new DynamoTokenStore(clients.dynamodb, table),
      operator: async () => {
        try {
          const id = await clients.sts.send(new GetCallerIdentityCommand({}));
          if (!id.Arn) throw new Error('no Arn in the answer');
          return id.Arn;
        } catch (e) {
          throw new OpsError(describeAwsError(e, 'finding who you are (sts:GetCallerIdentity)'));
        }
      },
      audit: [cloudWatchSink(clients.logs, logGroup)],
      close,
    };
  } catch (e) {
    close();
    throw e;
  }
}
