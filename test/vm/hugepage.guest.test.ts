// Runs inside the VM (scripts/vm/run.mjs): the hugepage backend on real
// hugetlb pages of a real kernel. That the addresses are right is proven by
// the edu device in edu.guest.test.ts; here: the errors, the ranges, the
// kernel's own view of those frames (/proc/kpageflags), and that nothing is
// left behind after close, exit or a crash.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { hugePageSizes, hugepageCounts } from '../../lib/backends/hugepage.js';
import { openPoolSync, type Pool } from '../../lib/index.js';
import { conformanceSuite } from '../conformance/suite.js';
import { describeGuest, guestConfig, inGuest } from './guest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cfg = inGuest ? guestConfig() : undefined;
const M2 = 2 * 1024 * 1024;
const NR = '/proc/sys/vm/nr_hugepages';
const available = () => hugepageCounts(M2).available;

// /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h).
const KPF_COMPOUND_HEAD = 15n;
const KPF_HUGE = 17n;
function kpageflags(pfn: bigint): bigint {
  const fd = fs.openSync('/proc/kpageflags', 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, Number(pfn * 8n));
    return b.readBigUInt64LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Node code run in a child against the compiled library (dist/, built on the host before the VM run). */
function childScript(body: string): string {
  return `import { openPoolSync } from ${JSON.stringify(path.join(REPO, 'dist/lib/index.js'))};\n${body}`;
}

describeGuest('hugepage backend on real huge pages', () => {
  let saved: string;
  beforeAll(() => {
    saved = fs.readFileSync(NR, 'utf8').trim();
  });
  afterAll(() => fs.writeFileSync(NR, saved));

  it.skipIf(!cfg || cfg.hugepages !== 0)('without reserved huge pages: ENOMEM saying how to reserve them', () => {
    expect(available()).toBe(0);
    expect(() => openPoolSync({ backend: 'hugepage', pages: 2 })).toThrow(
      expect.objectContaining({
        code: 'ENOMEM',
        message: expect.stringMatching(/2 huge page\(s\) of 2 MiB asked, 0 free \(of 0 reserved\).*echo 2 > \/proc\/sys\/vm\/nr_hugepages/),
      }),
    );
  });

  describe('with 8 huge pages reserved', () => {
    let pool: Pool;
    beforeAll(() => {
      if (available() < 8) fs.writeFileSync(NR, String(Number(fs.readFileSync(NR, 'utf8')) + 8 - available()));
      expect(available()).toBeGreaterThanOrEqual(8);
      pool = openPoolSync({ backend: 'hugepage', pages: 8 });
    });
    afterAll(() => pool?.close());

    it('asking for more than are free is ENOMEM with the counts and the command', () => {
      const free = available();
      expect(() => openPoolSync({ backend: 'hugepage', pages: free + 1 })).toThrow(
        expect.objectContaining({ code: 'ENOMEM', message: expect.stringMatching(new RegExp(`${free + 1} huge page\\(s\\) of 2 MiB asked, ${free} free.*echo \\d+ > /proc/sys/vm/nr_hugepages`)) }),
      );
      expect(available()).toBe(free); // the failed attempt holds nothing
    });

    it('takes the pages: 16 MiB in ascending, disjoint, 2 MiB-aligned ranges; coherent on x86', () => {
      const s = pool.stats();
      expect(s.backend).toBe('hugepage');
      expect(s.total).toBe(8 * M2);
      expect(pool.coherent).toBe(true);
      for (let i = 0; i < s.ranges.length; i++) {
        const r = s.ranges[i];
        expect(r.start % BigInt(M2)).toBe(0n);
        expect(r.size % M2).toBe(0);
        if (i > 0) expect(s.ranges[i - 1].start + BigInt(s.ranges[i - 1].size) <= r.start).toBe(true);
      }
      expect(pool.describe()).toMatch(/^hugepage backend: 8 locked huge page\(s\) of 2 MiB in \d+ physically contiguous run/);
    });

    it('every range start is, for the kernel, the head of a huge page (/proc/kpageflags)', () => {
      for (const r of pool.stats().ranges) {
        for (let off = 0; off < r.size; off += M2) {
          const pfn = (r.start + BigInt(off)) / 4096n;
          const flags = kpageflags(pfn);
          expect((flags >> KPF_HUGE) & 1n, `pfn 0x${pfn.toString(16)} flags 0x${flags.toString(16)}`).toBe(1n);
          expect((flags >> KPF_COMPOUND_HEAD) & 1n).toBe(1n);
        }
      }
    });

    it('physically adjacent pages merge into larger ranges, and no block is larger than the largest', () => {
      const ranges = pool.stats().ranges;
      const largest = Math.max(...ranges.map((r) => r.size));
      expect(largest, pool.describe()).toBeGreaterThanOrEqual(2 * M2);
      const big = pool.alloc(largest, { align: M2 });
      expect(ranges.some((r) => r.start === big.phys && r.size === largest)).toBe(true);
      big.bytes[largest - 1] = 7; // the whole run is one virtually contiguous view
      expect(() => pool.alloc(largest + M2)).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
      big.free();
    });

    it('1 GiB pages: ENOMEM saying how to reserve them, or ENOTSUP when the CPU has none', () => {
      const G = 1 << 30;
      if (hugePageSizes().includes(G)) {
        expect(() => openPoolSync({ backend: 'hugepage', pageSize: G })).toThrow(
          expect.objectContaining({ code: 'ENOMEM', message: expect.stringMatching(/hugepages-1048576kB\/nr_hugepages.*hugepagesz=1G/) }),
        );
      } else {
        expect(() => openPoolSync({ backend: 'hugepage', pageSize: G })).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      }
    });
  });

  describe('nothing is left behind', () => {
    beforeAll(() => {
      if (available() < 4) fs.writeFileSync(NR, String(Number(fs.readFileSync(NR, 'utf8')) + 4 - available()));
    });

    it('after close(): the pages are free again', () => {
      const before = available();
      const p = openPoolSync({ backend: 'hugepage', pages: 4 });
      expect(available()).toBe(before - 4);
      p.close();
      expect(available()).toBe(before);
    });

    it('after a process exits without closing: free again, and no file on hugetlbfs', () => {
      const before = available();
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', childScript("openPoolSync({ backend: 'hugepage', pages: 4 }).alloc(4096); console.log('held');")], {
        encoding: 'utf8',
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('held');
      expect(available()).toBe(before);
      expect(fs.readdirSync('/dev/hugepages')).toEqual([]);
    });

    it('after a crash (SIGKILL while holding the pages): free again', async () => {
      const before = available();
      const child = spawn(process.execPath, ['--input-type=module', '-e', childScript("const p = openPoolSync({ backend: 'hugepage', pages: 4 }); console.log('ready'); setInterval(() => {}, 1000);")], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d) => String(d).includes('ready') && resolve());
        child.on('exit', (code) => reject(new Error(`child exited ${code}: ${err}`)));
      });
      expect(available()).toBe(before - 4); // held by the child
      expect(fs.readdirSync('/dev/hugepages')).toEqual([]); // anonymous: no hugetlbfs file
      const exited = new Promise((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      expect(available()).toBe(before);
    });
  });

  it('without CAP_SYS_ADMIN (uid nobody): EPERM naming it, never an address of 0', () => {
    if (available() < 1) fs.writeFileSync(NR, String(Number(fs.readFileSync(NR, 'utf8')) + 1));
    const before = available();
    const script = childScript(`
      try { const p = openPoolSync({ backend: 'hugepage', pages: 1 }); console.log(JSON.stringify({ ranges: p.stats().ranges.map((r) => String(r.start)) })); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', cwd: '/' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ code: 'EPERM', message: expect.stringMatching(/CAP_SYS_ADMIN.*run as root/) });
    expect(available()).toBe(before); // and the page it mapped was given back
  });
});

// The behaviour every backend must show, on 4 real huge pages.
describeGuest('hugepage backend: conformance', () => {
  let saved: string;
  beforeAll(() => {
    saved = fs.readFileSync(NR, 'utf8').trim();
    if (available() < 4) fs.writeFileSync(NR, String(Number(saved) + 4 - available()));
  });
  afterAll(() => fs.writeFileSync(NR, saved));
  conformanceSuite(`hugepage backend in the guest (${cfg?.name ?? 'host'})`, () => openPoolSync({ backend: 'hugepage', pages: 4 }));
});
