/**
 * Helpers for local-mode end-to-end tests: run the real CLI as a child process, and sign requests with
 * aws4 (an implementation other than the gateway's own) or curl --aws-sigv4.
 */
import aws4 from 'aws4';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = ['--import', 'tsx', 'functions/local/cli.ts'];

/** The child's environment: without the SDK-warning switch the test runner sets, so the CLI must quiet it itself. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  delete env.NODE_OPTIONS;
  return env;
}

export interface RunningBroker {
  url: string;
  port: number;
  proc: ChildProcess;
  stdout: string[];
  stderr: () => string;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts the CLI and resolves once it prints `listening on http://HOST:PORT`. */
export function startBroker(args: string[], timeoutMs = 45_000): Promise<RunningBroker> {
  const proc = spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  let err = '';
  let partial = '';
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`broker did not start in ${timeoutMs} ms; stderr: ${err}`));
    }, timeoutMs);
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    proc.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        stdout.push(line);
        const m = /^listening on (http:\/\/[^\s]+:(\d+))$/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({
            url: m[1]!,
            port: Number(m[2]),
            proc,
            stdout,
            stderr: () => err,
            stop: async (signal = 'SIGTERM') => {
              if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
              const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
              const code = await exited;
              clearTimeout(kill);
              return code;
            },
          });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code} before listening; stderr: ${err}`));
    });
  });
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion in the repository, with the child environment, and collects its output. */
export function runToCompletion(cmd: string, argv: readonly string[], timeoutMs: number): Promise<Finished> {
  return new Promise((resolve) => {
    const proc = spawn(cmd, [...argv], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the CLI to completion (for the cases where it must refuse to start). */
export function runCli(args: string[], timeoutMs = 45_000): Promise<Finished> {
  return runToCompletion(process.execPath, [...CLI, ...args], timeoutMs);
}

export interface Signing {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  region?: string;
  service?: string;
  /** Sign as of this time (default now). */
  date?: Date;
  /** Presign: put the signature in the query string (`X-Amz-Signature`) instead of an Authorization header. */
  query?: boolean;
  /** With `query`: `X-Amz-Expires` in seconds. */
  expires?: number;
}

export interface Call {
  method?: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  /** Sign with these credentials; none sends the request unsigned. */
  sign?: Signing;
  /** Change the request after signing (to prove the signature covers it). */
  tamper?: (req: { path: string; headers: Record<string, string> }) => void;
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Record<string, unknown> | undefined;
}

/** Sends one request to `baseUrl`, SigV4-signed by aws4 when `sign` is given. */
export function call(baseUrl: string, c: Call): Promise<Reply> {
  const u = new URL(baseUrl);
  const headers: Record<string, string> = { ...(c.headers ?? {}) };
  if (c.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type'))
    headers['content-type'] = 'application/json';
  let path = c.path;
  if (c.sign) {
    const date = c.sign.date?.toISOString().replace(/[:-]|\.\d{3}/g, '');
    let unsignedPath = c.path;
    if (c.sign.query) {
      const params: Array<[string, string]> = [];
      if (date) params.push(['X-Amz-Date', date]);
      if (c.sign.expires !== undefined) params.push(['X-Amz-Expires', String(c.sign.expires)]);
      if (params.length) unsignedPath += (unsignedPath.includes('?') ? '&' : '?') + new URLSearchParams(params).toString();
    } else if (date) {
      headers['X-Amz-Date'] = date;
    }
    const signed = aws4.sign(
      {
        host: u.host,
        method: c.method ?? 'GET',
        path: unsignedPath,
        ...(c.sign.query ? { signQuery: true } : {}),
        headers,
        ...(c.body !== undefined ? { body: c.body } : {}),
        service: c.sign.service ?? 'execute-api',
        region: c.sign.region ?? 'us-east-1',
      },
      {
        accessKeyId: c.sign.accessKeyId,
        secretAccessKey: c.sign.secretAccessKey,
        ...(c.sign.sessionToken ? { sessionToken: c.sign.sessionToken } : {}),
      },
    );
    path = signed.path!;
    Object.assign(headers, signed.headers as Record<string, string>);
  }
  const req = { path, headers };
  c.tamper?.(req);
  return new Promise((resolve, reject) => {
    const r = request({ host: u.hostname, port: u.port, method: c.method ?? 'GET', path: req.path, headers: req.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, unknown> | undefined;
        try {
          json = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    r.on('error', reject);
    if (c.body !== undefined) r.write(c.body);
    r.end();
  });
}

/** True if this machine's curl can sign requests (--aws-sigv4, curl >= 7.75). */
export function curlHasSigV4(): boolean {
  const r = spawnSync('curl', ['--help', 'all'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('--aws-sigv4');
}

/** Runs a shell command line exactly as printed. */
export function sh(line: string, timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', line], { timeout: timeoutMs }, (e, stdout, stderr) => {
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Stdout lines that are JSON log records. */
export function logRecords(lines: readonly string[]): Array<Record<string, unknown>> {
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}
