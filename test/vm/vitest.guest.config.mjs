// Vitest config for the guest side: test/vm/**/*.guest.test.ts inside the QEMU
// VM, run by scripts/vm/lib.mjs as
//   node node_modules/vitest/vitest.mjs run --config test/vm/vitest.guest.config.mjs --configLoader native
// (`--configLoader native`: vite must not write a bundled copy of this file
// next to it, the repository is read-only in the guest). Caches go to /tmp
// (tmpfs); the JSON report goes to the writable results export.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const results = process.env.PHYSMEM_VM_RESULTS ?? '/tmp';
// Which files this boot runs (scripts/vm/configs.mjs guestTests), set by scripts/vm/lib.mjs.
const selection = process.env.PHYSMEM_VM_TESTS ? JSON.parse(process.env.PHYSMEM_VM_TESTS) : { include: ['**/*.guest.test.ts'], exclude: [] };

export default defineConfig({
  root,
  cacheDir: '/tmp/physmem-vitest-cache',
  test: {
    dir: 'test/vm',
    include: selection.include,
    exclude: ['**/node_modules/**', ...selection.exclude],
    watch: false,
    // The console is a tty: no live summary redraws in the captured log.
    reporters: [['default', { summary: false }], ['json', { outputFile: path.join(results, 'vitest.json') }]],
    pool: process.env.PHYSMEM_VM_POOL ?? 'forks',
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
