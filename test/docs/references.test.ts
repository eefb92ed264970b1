/**
 * Dangling references: every `*.md` / `*.yaml` file that code, help text and docs name exists, and every
 * README section that help text names (`README.md, section "..."`) is a heading of README.md.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { USAGE } from '../../functions/local/flags.js';

const ROOT = join(import.meta.dirname, '..', '..');
const SOURCES = ['functions', 'client', 'examples', 'bench', 'infra', 'test', '.ci', 'README.md'];
const SKIP = new Set(['node_modules', 'dist', 'cdk.out', '.work']);

function files(path: string): string[] {
  const full = join(ROOT, path);
  if (!existsSync(full)) return [];
  if (statSync(full).isFile()) return [path];
  return readdirSync(full).flatMap((name) => (SKIP.has(name) ? [] : files(join(path, name))));
}

const headings = readFileSync(join(ROOT, 'README.md'), 'utf8')
  .split('\n')
  .filter((l) => /^#{1,4} /.test(l))
  .map((l) => l.replace(/^#+ /, '').trim());

describe('references', () => {
  it('every repository file a source or doc names exists (relative to the repo root or to the naming file)', () => {
    const missing: string[] = [];
    for (const file of SOURCES.flatMap(files).filter((f) => /\.(ts|md|py|sh|json|yaml)$|\/run$/.test(f))) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const m of text.matchAll(/(?<![\w@/.-])((?:\.\.?\/)*(?:[\w-]+\/)*[\w-]+\.(?:md|yaml))(?![\w/-])/g)) {
        const ref = m[1]!;
        if (/^(?:DESIGN|TEST-PLAN)\.md$/.test(ref) || ref.startsWith('../shared/')) continue; // the shared docs live beside the repo
        if (ref.includes('/tmp') || /^(?:my-|your-)/.test(ref)) continue;
        const candidates = [join(ROOT, ref), join(ROOT, dirname(file), ref)];
        if (!candidates.some((c) => existsSync(c))) missing.push(`${file}: ${ref}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('README sections named by `npm start -- --help` exist', () => {
    const named = [...USAGE.matchAll(/README\.md, section "([^"]+)"/g)].map((m) => m[1]!.replace(/\\`/g, '`'));
    expect(named.length).toBeGreaterThan(0);
    for (const section of named) expect(headings).toContain(section);
  });
});
