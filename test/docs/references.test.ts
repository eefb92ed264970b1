/**
 * Dangling references: whoever clones the repository alone can follow every reference in it.
 *  - every `*.md` / `*.yaml` file that code, help text and docs name exists;
 *  - no file cites the team's shared documents that live outside the repository (the design is in docs/);
 *  - every `FILE.md "Heading"` reference (`docs/protocol.md "Budget guard"`, `README.md, section "..."`)
 *    names a heading of that file, and every markdown link `FILE.md#anchor` an anchor of it.
 * Files are every repository file, minus what .gitignore leaves out (node_modules, dist, cdk/lambda...).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { USAGE } from '../../functions/local/flags.js';

const ROOT = join(import.meta.dirname, '..', '..');
const SELF = relative(ROOT, import.meta.filename);

/** The team's shared documents beside the repository: the shared design, its test plan, the shared folder. */
const SHARED_CITATION = /\bDESIGN\b|\bTEST-PLAN\b|(?:\.\.|\/work)\/shared\//;

/** .gitignore as simple matchers: `dir/` (a directory name or path), `*.ext`, a name, or a path. */
const IGNORED = readFileSync(join(ROOT, '.gitignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

function ignored(path: string, isDir: boolean): boolean {
  const name = basename(path);
  if (name === '.git') return true;
  return IGNORED.some((pattern) => {
    const dirOnly = pattern.endsWith('/');
    const p = pattern.replace(/^\/|\/$/g, '');
    if (dirOnly && !isDir) return false;
    if (p.startsWith('*.')) return name.endsWith(p.slice(1));
    return p.includes('/') ? path === p : name === p;
  });
}

/** Every repository file (relative to ROOT), read once. Files that vanish mid-walk (a test's build) are skipped. */
function walk(path: string): string[] {
  const full = join(ROOT, path);
  let stat;
  try {
    stat = statSync(full);
  } catch {
    return [];
  }
  if (path && ignored(path, stat.isDirectory())) return [];
  if (!stat.isDirectory()) return [path];
  return readdirSync(full).flatMap((name) => walk(path ? join(path, name) : name));
}

const TEXT = /\.(ts|mts|mjs|js|cjs|md|py|sh|json|yaml|yml|txt)$|(^|\/)(run|LICENSE|\.gitignore)$/;
const FILES = new Map<string, string>();
for (const file of walk('')) {
  if (!TEXT.test(file)) continue;
  try {
    FILES.set(file, readFileSync(join(ROOT, file), 'utf8'));
  } catch {
    // gone meanwhile
  }
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to `-`, repeats numbered. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/ /g, '-');
}

/** The headings of a markdown file, outside fenced code blocks. */
function headingsOf(file: string): string[] {
  return headingsIn(FILES.get(file) ?? readFileSync(join(ROOT, file), 'utf8'));
}

function headingsIn(text: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of text.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    else if (!fenced && /^#{1,6} /.test(line))
      out.push(
        line
          .replace(/^#+ /, '')
          .replace(/\s+#+\s*$/, '')
          .trim(),
      );
  }
  return out;
}

function anchorsOf(file: string): Set<string> {
  return anchorsIn(headingsOf(file));
}

function anchorsIn(headings: string[]): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const h of headings) {
    const base = slug(h);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n ? `${base}-${n}` : base);
  }
  return anchors;
}

/** What a reference from `from` to `ref` may mean: a path from the repository root, or from the naming file. */
const candidates = (from: string, ref: string) => [normalize(ref), normalize(join(dirname(from), ref))].filter((c) => !c.startsWith('..'));

/** Where the reference points, if the file exists. */
function resolve(from: string, ref: string): string | undefined {
  return candidates(from, ref).find((c) => existsSync(join(ROOT, c)));
}

describe('reading markdown', () => {
  it('headings outside fenced code, anchored as GitHub does', () => {
    const md = [
      '# A title',
      '```sh',
      '# not a heading',
      '```',
      '## Local mode (`npm start`) ##',
      '## Notes',
      '### Notes',
      'text # no',
    ].join('\n');
    const headings = headingsIn(md);
    expect(headings).toEqual(['A title', 'Local mode (`npm start`)', 'Notes', 'Notes']);
    expect([...anchorsIn(headings)]).toEqual(['a-title', 'local-mode-npm-start', 'notes', 'notes-1']);
  });
});

describe('references', () => {
  it('every repository file a source or doc names exists (relative to the repo root or to the naming file)', () => {
    expect(FILES.size).toBeGreaterThan(100);
    const missing: string[] = [];
    for (const [file, text] of FILES) {
      if (file === SELF || !/\.(ts|md|py|sh|json|yaml)$|\/run$/.test(file) || file === 'package-lock.json') continue;
      for (const m of text.matchAll(/(?<![\w@/.-])((?:\.\.?\/)*(?:[\w-]+\/)*[\w-]+\.(?:md|yaml))(?![\w/-])/g)) {
        const ref = m[1]!;
        if (ref.includes('/tmp') || /^(?:my-|your-)/.test(ref)) continue;
        if (!resolve(file, ref)) missing.push(`${file}: ${ref}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('no file cites the shared documents outside the repository (the design is docs/)', () => {
    const citing = [...FILES].filter(([file, text]) => file !== SELF && SHARED_CITATION.test(text)).map(([file]) => file);
    expect(citing).toEqual([]);
  });

  it('every `FILE.md "Heading"` reference names a heading of that file', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const [file, text] of FILES) {
      if (file === SELF) continue;
      for (const m of text.matchAll(/(?<![\w@/.-])((?:\.\.?\/)*(?:[\w-]+\/)*[\w-]+\.md)(?:,? section)? "((?:[^"\n\\]|\\.)+)"/g)) {
        const [ref, heading] = [m[1]!, m[2]!.replace(/\\(.)/g, '$1')];
        const target = resolve(file, ref);
        if (!target) {
          bad.push(`${file}: ${ref} does not exist`);
          continue;
        }
        checked++;
        if (!headingsOf(target).includes(heading)) bad.push(`${file}: ${ref} has no heading "${heading}"`);
      }
    }
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(20);
  });

  it('every markdown link to `FILE.md#anchor` (or `#anchor`) names a heading of that file', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const [file, text] of FILES) {
      if (!file.endsWith('.md')) continue;
      for (const m of text.matchAll(/\]\(([^)\s#]*)#([^)\s]+)\)/g)) {
        const [ref, anchor] = [m[1]!, m[2]!];
        if (/^[a-z]+:/.test(ref)) continue; // another site
        const target = ref ? resolve(file, ref) : file;
        if (!target) {
          bad.push(`${file}: ${ref} does not exist`);
          continue;
        }
        checked++;
        if (!anchorsOf(target).has(anchor)) bad.push(`${file}: ${ref || '(self)'}#${anchor} is no heading`);
      }
    }
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(5);
  });

  it('README sections named by `npm start -- --help` exist', () => {
    const named = [...USAGE.matchAll(/README\.md, section "([^"]+)"/g)].map((m) => m[1]!.replace(/\\`/g, '`'));
    expect(named.length).toBeGreaterThan(0);
    for (const section of named) expect(headingsOf('README.md')).toContain(section);
  });
});
