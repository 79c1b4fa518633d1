// `npm run docs`: the API reference from the TSDoc, into docs/api/ (generated,
// not committed). Entry points are package.json's exports, so a new subpath is
// documented without editing this file. Warnings fail the run (a referenced
// type that is not exported is one). Extra arguments go to typedoc, e.g.
// `npm run docs -- --emit none` to check without writing.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const entries = Object.values(pkg.exports)
  .map((t) => (typeof t === 'string' ? t : t.types))
  .filter((t) => typeof t === 'string' && t.endsWith('.d.ts'))
  .map((t) => t.replace(/^\.\/dist\//, '').replace(/\.d\.ts$/, '.ts'));
const args = [
  join(root, 'node_modules/typedoc/bin/typedoc'),
  ...entries.flatMap((e) => ['--entryPoints', e]),
  '--tsconfig', 'tsconfig.json',
  '--out', 'docs/api',
  '--name', `${pkg.name} ${pkg.version}`,
  '--readme', 'none',
  '--excludePrivate',
  '--excludeInternal',
  // No public repository to link sources to; and typedoc would otherwise warn
  // or not depending on the clone's git remote.
  '--disableSources',
  '--treatWarningsAsErrors',
  '--validation.notExported', 'true',
  '--validation.invalidLink', 'true',
  ...process.argv.slice(2),
];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
