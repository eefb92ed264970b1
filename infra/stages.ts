import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { STAGE_NAME } from '../functions/contract/deployment.js';
import { parseConfigText } from '../functions/core/config.js';
import { parseBrokerDocument, type ParsedDocument, StageError } from '../cdk/src/settings.js';

/**
 * Stages are data: `config/<stage>.json` holds a stage's connections and settings (the schema of
 * cdk/src/settings.ts). Adding a stage is adding a file.
 */
export interface Stage extends ParsedDocument {
  readonly name: string;
  /** The file as shown in messages (relative to the working directory). */
  readonly source: string;
  /** The document as written (the construct validates it again). */
  readonly document: unknown;
}

/** The stages `dir` holds: the names of its `<stage>.json` files. @internal */
export function knownStages(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .filter((name) => STAGE_NAME.test(name))
    .sort();
}

/**
 * Loads and validates stage `name` from `dir`: StageError for no name or an unknown one, ConfigError (from
 * functions/core/config.ts, naming the file and each bad field) for an invalid file.
 */
export function loadStage(name: unknown, dir: string, cwd = process.cwd()): Stage {
  const known = knownStages(dir);
  const list = `(known stages: ${known.join(', ') || 'none'})`;
  if (typeof name !== 'string' || name === '') throw new StageError(`no stage given: run with -c stage=NAME ${list}`);
  if (!known.includes(name)) throw new StageError(`unknown stage "${name}" ${list}`);
  const file = join(dir, `${name}.json`);
  const source = relative(cwd, file) || file;
  const document = parseConfigText(readFileSync(file, 'utf8'), source);
  return { name, source, document, ...parseBrokerDocument(document, source) };
}
