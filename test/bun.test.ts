/**
 * Bun is a supported runtime: the conformance suite on the fake backend,
 * FakeDmaDevice and sub-pools run under `bun test` (the npm package `bun`, a
 * devDependency), on the same native addon.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const bun = fileURLToPath(new URL('../node_modules/.bin/bun', import.meta.url));
const files = ['test/conformance/conformance.test.ts', 'test/testing.test.ts', 'test/subpool.test.ts'];

describe('runtime: Bun', () => {
  it('passes the conformance suite (fake backend), the FakeDmaDevice tests and the sub-pool tests', () => {
    expect(existsSync(bun), `${bun} missing: npm ci installs the devDependency bun`).toBe(true);
    const version = spawnSync(bun, ['--version'], { encoding: 'utf8' }).stdout.trim();
    const r = spawnSync(bun, ['test', ...files], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    const out = r.stdout + r.stderr;
    const pass = Number(/^\s*(\d+) pass$/m.exec(out)?.[1] ?? -1);
    const fail = Number(/^\s*(\d+) fail$/m.exec(out)?.[1] ?? -1);
    expect({ status: r.status, fail }, `bun ${version}:\n${out}`).toEqual({ status: 0, fail: 0 });
    // 18 conformance tests alone (two fake pools x 9); the rest from the other files.
    expect(pass).toBeGreaterThanOrEqual(18 + 4 + 12);
    expect(out).toContain('conformance: fake backend (memfd, synthetic physical base)');
  });
});
