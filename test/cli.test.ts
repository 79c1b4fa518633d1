import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../dist/lib/cli/bin.js', import.meta.url));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe.skipIf(!existsSync(bin))('physmem CLI (built bin; npm test builds it first)', () => {
  it('demo runs on the fake backend here and says so', () => {
    const r = run('demo');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/FAKE backend/);
    expect(r.out).toMatch(/descriptor ring\s+4 KiB\s+align 4 KiB\s+0x[0-9a-f]+/);
    expect(r.out).toMatch(/after free: 0 blocks/);
    expect(r.out).not.toMatch(/MISMATCH/);
  });

  it('demo --json gives addresses as hex and ok: true', () => {
    const r = run('demo', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.ok).toBe(true);
    expect(j.fake).toBe(true);
    expect(j.buffers).toHaveLength(6);
    for (const b of j.buffers) expect(b.phys).toMatch(/^0x[0-9a-f]+$/);
    expect(BigInt(j.buffers[0].phys) % 4096n).toBe(0n);
    expect(j.statsAfter.count).toBe(0);
  });

  it('stat reports the pool, as text and JSON', () => {
    const t = run('stat', '--backend', 'fake', '--size', '16M');
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/total 16 MiB/);
    const j = JSON.parse(run('stat', '--backend', 'fake', '--size', '1M', '--json').out);
    expect(j.total).toBe(1 << 20);
    expect(j.ranges[0].start).toBe('0x100000000');
  });

  it('exits 2 on bad usage, 0 on --help and --version', () => {
    expect(run('nonsense').code).toBe(2);
    expect(run('stat', '--backend', 'nope').code).toBe(2);
    expect(run('stat', '--size', 'lots').code).toBe(2);
    const h = run('--help');
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/demo/);
    expect(run('demo', '--help').code).toBe(0);
    expect(run('--version').out.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('exits 1 with the error code and message when the operation fails', () => {
    const r = run('stat', '--backend', 'fake', '--size', '1000000G', '--json');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^physmem: E[A-Z]+: /m);
  });
});

describe.skipIf(!existsSync(bin))('examples', () => {
  it('the README example (examples/quickstart.ts) runs on the fake backend', () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../dist/examples/quickstart.js', import.meta.url))], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ring at bus 0x[0-9a-f]+, packet at 0x[0-9a-f]+$/m);
    expect(r.stderr).toMatch(/PHYSMEM_FALLBACK/);
  });
});
