/**
 * Every ```ts snippet in README.md and docs/*.md compiles: each is written to
 * its own module and type-checked with the project's compiler options, with
 * `physmem` and its subpaths mapped to lib/ as package.json's exports map
 * them to dist/. A snippet that continues an earlier one declares what it
 * uses in an HTML comment just before it, which renders as nothing:
 * `<!-- snippet: declare const pool: Pool; -->` (types from `physmem` are in scope).
 * Also: typedoc builds the API reference without a warning, and figures that
 * several documents quote agree with each other.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, '.doc-snippets');
// Markdown files whose snippets are not checked (none today).
const EXCLUDED = new Set<string>();

interface Snippet {
  file: string;
  line: number;
  code: string;
  prelude: string;
}

/** The ```ts blocks of one markdown file, with the line each starts on and its prelude comment. */
export function extractSnippets(file: string, text: string): Snippet[] {
  const lines = text.split('\n');
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*```ts\s*$/.test(lines[i])) continue;
    const indent = /^\s*/.exec(lines[i])![0].length;
    const start = i + 1;
    let j = start;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j++;
    const prev = lines.slice(Math.max(0, i - 3), i).join('\n');
    const prelude = /<!--\s*snippet:\s*([\s\S]*?)-->\s*$/.exec(prev)?.[1].trim() ?? '';
    snippets.push({ file, line: start + 1, code: lines.slice(start, j).map((l) => l.slice(indent)).join('\n'), prelude });
    i = j;
  }
  return snippets;
}

function subpathMap(): Record<string, string[]> {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, string | { types?: string }> };
  const paths: Record<string, string[]> = {};
  for (const [sub, target] of Object.entries(pkg.exports)) {
    const types = typeof target === 'string' ? target : target.types;
    if (!types?.endsWith('.d.ts')) continue;
    paths[pkg.name + sub.slice(1)] = [join(root, types.replace(/^\.\/dist\//, '').replace(/\.d\.ts$/, '.ts'))];
  }
  return paths;
}

describe('doc snippets', () => {
  const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)].filter((f) => !EXCLUDED.has(f));
  const snippets = docs.flatMap((f) => extractSnippets(f, readFileSync(join(root, f), 'utf8')));

  it('extracts snippets with their line numbers and preludes', () => {
    const s = extractSnippets('x.md', 'a\n<!-- snippet: declare const n: number; -->\n```ts\nconst m = n;\n```\n  ```ts\n  let k = 1;\n  ```\n```sh\nls\n```\n');
    expect(s).toEqual([
      { file: 'x.md', line: 4, code: 'const m = n;', prelude: 'declare const n: number;' },
      { file: 'x.md', line: 7, code: 'let k = 1;', prelude: '' },
    ]);
    expect(snippets.length).toBeGreaterThanOrEqual(15);
  });

  it('every ```ts snippet in README.md and docs/ type-checks', () => {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    const names = new Map<string, Snippet>();
    snippets.forEach((s) => {
      const name = `${s.file.replace(/[/.]/g, '_')}_${s.line}.ts`;
      names.set(name, s);
      // Types of physmem in scope for the prelude, without clashing with the snippet's own imports.
      const prelude = s.prelude ? `import type * as __physmem from 'physmem';\ntype Pool = __physmem.Pool;\ntype DmaBuffer = __physmem.DmaBuffer;\n${s.prelude}\n` : '';
      writeFileSync(join(out, name), `${prelude}${s.code}\nexport {};\n`);
    });
    const base = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as { compilerOptions: Record<string, unknown> };
    writeFileSync(
      join(out, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { ...base.compilerOptions, noEmit: true, declaration: false, sourceMap: false, rootDir: root, outDir: undefined, noUnusedLocals: false, paths: subpathMap(), typeRoots: [join(root, 'node_modules/@types')] },
        include: ['*.ts'],
      }),
    );
    const r = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(out, 'tsconfig.json'), '--pretty', 'false'], { encoding: 'utf8' });
    // Point each error at the markdown file and line it comes from.
    const errors = (r.stdout + r.stderr)
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        const m = /^(?:.*[/\\])?([^/\\(]+\.ts)\((\d+),(\d+)\): (.*)$/.exec(l);
        const s = m && names.get(m[1]);
        if (!m || !s) return l;
        const preludeLines = s.prelude ? 3 + s.prelude.split('\n').length : 0;
        return `${s.file}:${s.line + Number(m[2]) - 1 - preludeLines}: ${m[4]}`;
      });
    expect(errors).toEqual([]);
    expect(r.status).toBe(0);
    rmSync(out, { recursive: true, force: true });
  }, 120_000);

  it('typedoc (npm run docs) builds the API reference from the TSDoc without a warning (unexported referenced types, broken links)', () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts/api-docs.mjs'), '--emit', 'none'], { cwd: root, encoding: 'utf8' });
    expect((r.stdout + r.stderr).split('\n').filter((l) => /warning|error/i.test(l))).toEqual([]);
    expect(r.status).toBe(0);
  }, 180_000);

  it("leakCheck 'trace' costs the same in every document that quotes it (api.md, benchmarks.md, the TSDoc)", () => {
    const figures = new Map<string, string>();
    for (const f of ['docs/api.md', 'docs/benchmarks.md', 'lib/pool.ts']) {
      const text = readFileSync(join(root, f), 'utf8').replace(/\s*\*?\s*\n\s*\*?\s*/g, ' ');
      const m = /'trace'[^.]*?costs? about ([\d.]+(?: to [\d.]+|-[\d.]+)? us)/.exec(text);
      figures.set(f, m?.[1] ?? 'no figure');
    }
    expect(new Set(figures.values()), JSON.stringify(Object.fromEntries(figures))).toEqual(new Set(['15 to 30 us']));
  });
});
