import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServicePool } from '../lib/service/client.js';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../dist/lib/cli/bin.js', import.meta.url));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// Like run(), without blocking this process's event loop (it may be serving the other end).
function runAsync(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.once('close', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!existsSync(bin))('physmem CLI (built bin; npm test builds it first)', () => {
  it('demo runs on the fake backend here and says so', () => {
    const r = run('demo');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/FAKE backend/);
    expect(r.out).toMatch(/descriptor ring\s+4 KiB\s+align 4 KiB\s+0x[0-9a-f]+/);
    expect(r.out).toMatch(/after free: 0 blocks/);
    expect(r.out).not.toMatch(/MISMATCH/);
    // Advice that can work on this kernel: mem=/memmap= only where /dev/mem exists.
    if (existsSync('/dev/mem')) expect(r.out).toMatch(/Reserve RAM with mem= or memmap=/);
    else expect(r.out).toMatch(/no \/dev\/mem, so reserving RAM would not help: `physmem doctor`/);
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

describe.skipIf(!existsSync(bin))('physmem serve and physmem status (built bin)', () => {
  it('refuse flags they would ignore or cannot use, with exit 2 and the flag named', () => {
    const sock = join(mkdtempSync(join(tmpdir(), 'physmem-cli-')), 'run', 's.sock');
    const grace = run('serve', '--socket', sock, '--grace-ms', '5');
    expect(grace.code).toBe(2);
    expect(grace.err).toMatch(/--grace-ms needs --state-dir/);
    const q = run('serve', '--socket', sock, '--quarantine-ms', String(2 ** 31));
    expect(q.code).toBe(2);
    expect(q.err).toMatch(/--quarantine-ms/);
    expect(run('serve', '--socket', sock, '--quarantine-ms', '-1').code).toBe(2);
    const size = run('serve', '--socket', sock, '--backend', 'devmem', '--size', '1M');
    expect(size.code).toBe(2);
    expect(size.err).toMatch(/--size is for --backend fake/);
    expect(run('serve').code).toBe(2); // --socket is required
    expect(existsSync(sock)).toBe(false); // nothing was started
    const none = run('status', '--socket', sock);
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/ENOENT: cannot connect to the physmem daemon.*physmem serve --socket/);
  });

  it('serve runs until SIGTERM; status prints text, --json and --svg of what it serves', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'physmem-cli-'));
    const sock = join(dir, 'run', 'pool.sock');
    const daemon = spawn(process.execPath, [bin, 'serve', '--socket', sock, '--size', '1M', '--quarantine-ms', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    daemon.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 1200 && !/event=start/.test(log); i++) await new Promise((r) => setTimeout(r, 25));
      expect(log).toMatch(/event=start socket=\S+ backend=fake total=1048576/);
      const pool = await ServicePool.connect(sock);
      const named = await pool.allocAsync(5000, { name: 'ring0' });
      const text = await runAsync('status', '--socket', sock);
      expect(text.code).toBe(0);
      expect(text.out).toMatch(/fake backend/);
      expect(text.out).toMatch(/name 'ring0'/);
      const svg = join(dir, 'map.svg');
      const j = await runAsync('status', '--socket', sock, '--json', '--svg', svg);
      expect(j.code).toBe(0);
      const report = JSON.parse(j.out);
      expect(report).toMatchObject({ backend: 'fake', total: 1 << 20, used: 8192 });
      expect(report.map.some((m: { name?: string }) => m.name === 'ring0')).toBe(true);
      expect(readFileSync(svg, 'utf8')).toMatch(/^<svg[\s\S]*ring0[\s\S]*<\/svg>\n$/);
      await named.free();
      await pool.close();
    } finally {
      daemon.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(log).toMatch(/event=shutdown/);
    expect(existsSync(sock)).toBe(false);
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
