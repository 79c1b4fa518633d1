import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Guest-only files run inside the QEMU guest (scripts/vm), not on the host.
    exclude: ['**/node_modules/**', 'test/vm/**/*.guest.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
