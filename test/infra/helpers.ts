import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { TokenBroker } from '../../cdk/src/index.js';
import { buildStage, PROJECT_ROOT, type BuildOptions } from '../../infra/build';
import type { TokenBrokerStack } from '../../infra/stack';

/** The feature flags of cdk.json, so tests synthesise what `cdk synth` synthesises. */
export function cdkContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
  return cdkJson.context;
}

export interface Synth {
  app: App;
  stack: TokenBrokerStack;
  broker: TokenBroker;
  template: Template;
}

/** Synthesises one stage as `cdk synth -c stage=NAME` does (prebuilt Lambda, cdk-nag). */
export function synth(stage: string, opts: Omit<BuildOptions, 'stage'> = {}): Synth {
  const app = new App({ context: cdkContext(), outdir: mkdtempSync(join(tmpdir(), 'broker-cdk-')) });
  const { stack, broker } = buildStage(app, { ...opts, stage });
  return { app, stack, broker, template: Template.fromStack(stack) };
}

/** A temp config dir holding `<stage>.json` with this document. */
export function configDirWith(stage: string, doc: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-config-'));
  writeFileSync(join(dir, `${stage}.json`), typeof doc === 'string' ? doc : JSON.stringify(doc));
  return dir;
}

/** Synthesised CloudFormation is untyped JSON; tests index into it freely and assert exact values. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export interface CfnResource {
  Properties: Record<string, Json>;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
  Metadata?: Record<string, Json>;
}

/** The resources of one type, as logical id -> resource. */
export function resources(template: Template, type: string): Record<string, CfnResource> {
  return template.findResources(type) as Record<string, CfnResource>;
}

export function only<T>(record: Record<string, T>): [string, T] {
  const entries = Object.entries(record);
  if (entries.length !== 1) throw new Error(`expected exactly one, got ${entries.length}`);
  return entries[0]!;
}

/** Logical id of the single resource of a type. */
export function logicalId(template: Template, type: string): string {
  return only(resources(template, type))[0];
}

export type Statement = {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Principal?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
};

export const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

/** Statements by Sid (every statement the stack writes has one). */
export function bySid(statements: Statement[]): Record<string, Statement> {
  return Object.fromEntries(statements.map((s) => [s.Sid ?? '(none)', s]));
}

/** A minimal valid connection for synthetic configs. */
export const connection = (over: Record<string, unknown> = {}) => ({
  tokenUrl: 'https://idp.example.com/token',
  grantType: 'client_credentials',
  secret: 'token-broker/test/x',
  callers: ['arn:aws:iam::111122223333:role/app'],
  ...over,
});
