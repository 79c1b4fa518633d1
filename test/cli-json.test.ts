/**
 * One address format in every --json (docs/cli.md): addresses are hex strings
 * "0x...", sizes and counts are numbers. Checked on the real output of each
 * command (regions also on a recorded machine with reserved memory, through
 * the same toJson the CLI prints with).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { JSON_ADDRESS_KEYS, toJson } from '../lib/cli/format.js';
import { runRegions } from '../lib/cli/regions.js';
import { ServicePool } from '../lib/service/client.js';

const bin = fileURLToPath(new URL('../dist/lib/cli/bin.js', import.meta.url));
const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const SIZE_KEYS = new Set(['size', 'total', 'used', 'free', 'largestFree', 'bytes', 'firmwareRam', 'ramBytes', 'kept', 'kernelRam', 'count']);

/** Walk a JSON value; returns how many addresses and sizes it saw, and every violation. */
function audit(value: unknown): { addresses: number; sizes: number; bad: string[] } {
  const r = { addresses: 0, sizes: 0, bad: [] as string[] };
  const walk = (v: unknown, path: string, key: string): void => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${path}[${i}]`, key));
    if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`, k);
      return;
    }
    if (JSON_ADDRESS_KEYS.has(key) && v !== null) {
      r.addresses++;
      if (typeof v !== 'string' || !/^0x[0-9a-f]+$/.test(v)) r.bad.push(`${path}: address ${JSON.stringify(v)} is not a "0x..." string`);
    } else if (SIZE_KEYS.has(key) && v !== null) {
      r.sizes++;
      if (typeof v !== 'number') r.bad.push(`${path}: size ${JSON.stringify(v)} is not a number`);
    } else if (typeof v === 'string' && /^\d{6,}$/.test(v)) {
      r.bad.push(`${path}: ${v} looks like a number written as a decimal string`);
    }
  };
  walk(value, '$', '');
  return r;
}

function cli(...args: string[]): unknown {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  expect(r.stderr).not.toMatch(/unexpected error/);
  return JSON.parse(r.stdout);
}

describe.skipIf(!existsSync(bin))('--json: addresses are "0x..." strings, sizes are numbers, in every command', () => {
  it('demo, stat (fake and auto), doctor', () => {
    for (const args of [['demo'], ['stat', '--backend', 'fake', '--size', '1M'], ['stat'], ['doctor']]) {
      const a = audit(cli(...args, '--json'));
      expect(a.bad, args.join(' ')).toEqual([]);
      if (args[0] !== 'doctor') expect(a.addresses, args.join(' ')).toBeGreaterThan(0);
    }
  });

  it('regions, on this machine and on a recorded one with reserved memory and advice', () => {
    expect(audit(cli('regions', '--json')).bad).toEqual([]);
    for (const name of ['qemu-pc-mem384', 'qemu-pc-plain']) {
      const a = audit(JSON.parse(toJson(runRegions({ root: FIX + name }).json)));
      expect(a.bad, name).toEqual([]);
      expect(a.addresses, name).toBeGreaterThan(1);
      expect(a.sizes, name).toBeGreaterThan(0);
    }
    const j = JSON.parse(toJson(runRegions({ root: FIX + 'qemu-pc-mem384' }).json));
    expect(j.regions[0]).toMatchObject({ start: '0x18000000', end: '0x1ffdffff', size: 0x1ffe0000 - 0x18000000 });
  });

  it('status of a daemon started with serve --json (whose log lines are JSON objects)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'physmem-json-'));
    const sock = join(dir, 'run', 'pool.sock');
    const daemon = spawn(process.execPath, [bin, 'serve', '--json', '--socket', sock, '--size', '1M', '--quarantine-ms', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    daemon.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 1200 && !/"event":"start"/.test(log); i++) await new Promise((r) => setTimeout(r, 25));
      const start = JSON.parse(log.split('\n')[0]);
      expect(start).toMatchObject({ event: 'start', backend: 'fake', total: 1 << 20, pid: daemon.pid });
      const pool = await ServicePool.connect(sock);
      const b = await pool.allocAsync(5000, { name: 'ring0' });
      const r = await new Promise<string>((resolve) => {
        const c = spawn(process.execPath, [bin, 'status', '--json', '--socket', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.once('close', () => resolve(out));
      });
      const report = JSON.parse(r);
      const a = audit(report);
      expect(a.bad).toEqual([]);
      expect(a.addresses).toBe(report.map.length);
      expect(report.map.find((m: { name?: string }) => m.name === 'ring0').phys).toBe('0x' + b.phys.toString(16));
      await b.free();
      await pool.close();
    } finally {
      daemon.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    const events = log.trim().split('\n').map((l) => JSON.parse(l) as { event: string });
    expect(events.map((e) => e.event)).toContain('shutdown');
    rmSync(dir, { recursive: true, force: true });
  });
});

describe.skipIf(!existsSync(bin))('stat --backend', () => {
  it('offers every backend that opens without a device (auto, devmem, udmabuf, hugepage, fake)', () => {
    const help = spawnSync(process.execPath, [bin, 'stat', '--help'], { encoding: 'utf8' }).stdout.replace(/\s+/g, ' ');
    expect(help).toMatch(/choices: "auto", "devmem", "udmabuf", "hugepage", "fake"/);
    for (const b of ['udmabuf', 'hugepage', 'devmem']) {
      const r = spawnSync(process.execPath, [bin, 'stat', '--backend', b, '--json'], { encoding: 'utf8' });
      // Accepted (not exit 2); here each fails or works as the machine allows, with the backend's own error.
      expect(r.status, b).not.toBe(2);
      if (r.status === 1) expect(JSON.parse(r.stdout).error.code, b).toMatch(/^E[A-Z]+$/);
      else expect(JSON.parse(r.stdout).backend).toBe(b);
    }
  });
});
