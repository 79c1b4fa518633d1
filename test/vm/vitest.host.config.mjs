// Vitest config used by `node scripts/vm/run.mjs` (npm run test:vm): only the
// host-side VM test file, which boots QEMU and reports each guest test.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export default defineConfig({
  root,
  test: {
    include: ['test/vm/vm.test.ts'],
    watch: false,
    // One line per guest test (each is reported as its own test).
    reporters: ['verbose'],
    testTimeout: 30_000,
  },
});
