import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dist = fileURLToPath(new URL('../dist/lib', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));

describe.skipIf(!existsSync(dist))('loading the native addon', () => {
  it('is lazy: importing physmem and using the pure allocator needs no addon', () => {
    const dir = mkdtempSync(join(tmpdir(), 'physmem-noaddon-'));
    try {
      cpSync(dist, join(dir, 'dist/lib'), { recursive: true });
      cpSync(join(root, 'package.json'), join(dir, 'package.json'));
      cpSync(join(root, 'binding.gyp'), join(dir, 'binding.gyp'));
      cpSync(join(root, 'node_modules/bindings'), join(dir, 'node_modules/bindings'), { recursive: true });
      cpSync(join(root, 'node_modules/file-uri-to-path'), join(dir, 'node_modules/file-uri-to-path'), { recursive: true });
      const script = `
        const m = await import('./dist/lib/index.js');
        const { RangeAllocator } = await import('./dist/lib/allocator/index.js');
        console.log('alloc', new RangeAllocator([{ start: 0, size: 4096 }]).alloc(64));
        try { m.openPoolSync({ backend: 'fake' }); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^alloc 0$/m);
      const err = JSON.parse(r.stdout.split('\n')[1]);
      expect(err.code).toBe('ENOENT');
      expect(err.message).toContain(`could not be loaded from ${dir}`);
      expect(err.message).toMatch(/Tried:\n {2}→ /);
      expect(err.message).toContain(join(dir, 'build/Release/physmem.node'));
      expect(err.message).toContain('npm rebuild physmem');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
