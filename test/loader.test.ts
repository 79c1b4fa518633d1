import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const dist = fileURLToPath(new URL('../dist/lib', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));
// Whichever addon this checkout has (compiled into build/, or prebuilt by `npm run build:prebuilds`).
const built = (() => {
  try {
    return (createRequire(import.meta.url)('node-gyp-build') as { path(d: string): string }).path(root);
  } catch {
    return '';
  }
})();

// A package directory with dist/lib and node-gyp-build but no addon; each test adds what it needs.
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'physmem-loader-'));
  cpSync(dist, join(dir, 'dist/lib'), { recursive: true });
  cpSync(join(root, 'package.json'), join(dir, 'package.json'));
  cpSync(join(root, 'binding.gyp'), join(dir, 'binding.gyp'));
  cpSync(join(root, 'node_modules/node-gyp-build'), join(dir, 'node_modules/node-gyp-build'), { recursive: true });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(script: string): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr };
}

const openFake = `
  const m = await import('./dist/lib/index.js');
  const { nativeAddonSource } = await import('./dist/lib/native.js');
  try { m.openPoolSync({ backend: 'fake' }).close(); console.log(JSON.stringify(nativeAddonSource())); }
  catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;

describe.skipIf(!existsSync(dist) || !built)('loading the native addon (node-gyp-build)', () => {
  it('is lazy: importing physmem and using the pure allocator needs no addon; without one, one error lists what was tried', () => {
    const r = run(`
      const { RangeAllocator } = await import('./dist/lib/allocator/index.js');
      console.log('alloc', new RangeAllocator([{ start: 0, size: 4096 }]).alloc(64));` + openFake);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^alloc 0$/m);
    const err = JSON.parse(r.stdout.split('\n')[1]);
    expect(err.code).toBe('ENOENT');
    expect(err.message).toContain(`no native addon physmem.node for ${process.platform}-${process.arch}`);
    expect(err.message).toContain(`Tried:\n  ${join(dir, 'build/Release')}: no such directory`);
    expect(err.message).toContain(`${join(dir, 'prebuilds', `${process.platform}-${process.arch}`)}: no such directory`);
    expect(err.message).toContain('npm rebuild physmem');
    expect(err.message).toMatch(/python3, make and a C\+\+17 compiler/);
  });

  it('loads a prebuilt binary from prebuilds/<platform>-<arch>/ when nothing was compiled here, and says so', () => {
    const pre = join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
    mkdirSync(pre, { recursive: true });
    cpSync(built, join(pre, 'physmem.glibc.node'));
    const src = JSON.parse(run(openFake).stdout);
    expect(src).toEqual({ path: join(pre, 'physmem.glibc.node'), kind: 'prebuilt' });
  });

  it('prefers an addon compiled here (build/Release) over the prebuilt one', () => {
    mkdirSync(join(dir, 'build/Release'), { recursive: true });
    cpSync(built, join(dir, 'build/Release/physmem.node'));
    const pre = join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
    mkdirSync(pre, { recursive: true });
    cpSync(built, join(pre, 'physmem.glibc.node'));
    expect(JSON.parse(run(openFake).stdout)).toEqual({ path: join(dir, 'build/Release/physmem.node'), kind: 'built' });
  });

  it('a binary that does not load (not an ELF file) gives ENOEXEC with the loader message and the same advice', () => {
    mkdirSync(join(dir, 'build/Release'), { recursive: true });
    writeFileSync(join(dir, 'build/Release/physmem.node'), 'not a shared object');
    const err = JSON.parse(run(openFake).stdout);
    expect(err.code).toBe('ENOEXEC');
    expect(err.message).toContain(`the native addon ${join(dir, 'build/Release/physmem.node')} did not load`);
    expect(err.message).toMatch(/invalid ELF header|file too short/);
    expect(err.message).toContain('npm rebuild physmem');
  });
});
