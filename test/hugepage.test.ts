// The hugepage backend on the host. Pure parts (pagemap entries, merging
// pages into ranges, sysfs size lists) run against literal values and temp
// files; /proc/self/pagemap is read for real on ordinary memfd pages, and the
// error paths that this machine can reach (no free huge pages, no
// CAP_SYS_ADMIN) run for real. Huge pages themselves, and a device proving
// their addresses, are in the guest (test/vm/hugepage.guest.test.ts, edu.guest.test.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import {
  PagemapReader,
  defaultHugePageSize,
  hugePageSizes,
  hugepageCounts,
  mergeHugepages,
  parsePagemapEntry,
} from '../lib/backends/hugepage.js';
import { openPoolSync } from '../lib/index.js';
import { Mapping } from '../lib/mapping.js';
import { native } from '../lib/native.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const M2 = 2 * 1024 * 1024;
const isRoot = process.getuid?.() === 0;

describe('pagemap entries and page runs (pure)', () => {
  it('decodes present, PFN bits 0-54, and ignores the flag bits above', () => {
    expect(parsePagemapEntry((1n << 63n) | 0x12345n)).toEqual({ present: true, pfn: 0x12345n });
    // soft-dirty (55), exclusive (56), file/shared (61) are not part of the PFN
    expect(parsePagemapEntry((1n << 63n) | (1n << 61n) | (1n << 56n) | (1n << 55n) | 7n)).toEqual({ present: true, pfn: 7n });
    expect(parsePagemapEntry(0x12345n)).toEqual({ present: false, pfn: 0n });
    expect(parsePagemapEntry(1n << 63n)).toEqual({ present: true, pfn: 0n }); // what a reader without CAP_SYS_ADMIN sees
  });

  it('merges pages adjacent both physically and in the mapping, and only those', () => {
    const P = 0x4000_0000;
    // ascending and contiguous: one run
    expect(mergeHugepages([P, P + M2, P + 2 * M2], M2)).toEqual([{ start: P, size: 3 * M2, offset: 0 }]);
    // physically adjacent but in reverse mapping order: a block over both would not be virtually contiguous
    expect(mergeHugepages([P + M2, P], M2)).toEqual([
      { start: P, size: M2, offset: M2 },
      { start: P + M2, size: M2, offset: 0 },
    ]);
    // two runs, returned in physical order with their own mapping offsets
    expect(mergeHugepages([P + 8 * M2, P + 9 * M2, P, P + M2, P + 5 * M2], M2)).toEqual([
      { start: P, size: 2 * M2, offset: 2 * M2 },
      { start: P + 5 * M2, size: M2, offset: 4 * M2 },
      { start: P + 8 * M2, size: 2 * M2, offset: 0 },
    ]);
    expect(mergeHugepages([], M2)).toEqual([]);
  });

  it('lists huge page sizes and counts from a sysfs tree, and the default size from meminfo (temp files)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-hp-'));
    try {
      for (const [kb, nr, free, resv] of [[1048576, 1, 1, 0], [2048, 8, 6, 2]]) {
        fs.mkdirSync(path.join(dir, `hugepages-${kb}kB`));
        fs.writeFileSync(path.join(dir, `hugepages-${kb}kB/nr_hugepages`), `${nr}\n`);
        fs.writeFileSync(path.join(dir, `hugepages-${kb}kB/free_hugepages`), `${free}\n`);
        fs.writeFileSync(path.join(dir, `hugepages-${kb}kB/resv_hugepages`), `${resv}\n`);
      }
      expect(hugePageSizes(dir)).toEqual([M2, 1 << 30]);
      expect(hugepageCounts(M2, dir)).toEqual({ total: 8, available: 4 }); // free minus promised
      expect(hugePageSizes(path.join(dir, 'absent'))).toEqual([]);
      fs.writeFileSync(path.join(dir, 'meminfo'), 'MemTotal:  1000 kB\nHugepagesize:       2048 kB\n');
      expect(defaultHugePageSize(path.join(dir, 'meminfo'))).toBe(M2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!isRoot)('reading /proc/self/pagemap for real (ordinary memfd pages, as root)', () => {
  let m: Mapping | undefined;
  afterEach(() => m?.close());

  it('gives a page-aligned non-zero address per touched page, the same on every read, distinct across pages', () => {
    const n = native();
    const page = n.pageSize();
    const fd = n.memfdCreate('pagemap-test', 4 * page);
    m = Mapping.map(fd, 0n, 4 * page, true, 'memfd:pagemap-test');
    n.close(fd);
    for (let i = 0; i < 4; i++) n.write8(m.handle, i * page, 1);
    const pm = new PagemapReader();
    try {
      const base = m.address();
      const phys = [0, 1, 2, 3].map((i) => pm.physOf(base + BigInt(i * page)));
      for (const p of phys) {
        expect(p).toBeGreaterThan(0n);
        expect(p % BigInt(page)).toBe(0n);
      }
      expect(new Set(phys).size).toBe(4);
      expect(pm.physOf(base + BigInt(page) + 123n)).toBe(phys[1] + 123n);
    } finally {
      pm.close();
    }
  });

  it('refuses an untouched page with EFAULT instead of returning an address', () => {
    const n = native();
    const page = n.pageSize();
    const fd = n.memfdCreate('pagemap-untouched', 2 * page);
    m = Mapping.map(fd, 0n, 2 * page, true, 'memfd:pagemap-untouched');
    n.close(fd);
    const pm = new PagemapReader();
    try {
      expect(() => pm.physOf(m!.address() + BigInt(page))).toThrow(expect.objectContaining({ code: 'EFAULT', message: expect.stringMatching(/touch the page/) }));
    } finally {
      pm.close();
    }
  });
});

const canDropRoot = isRoot && spawnSync('setpriv', ['--version']).status === 0;

describe.skipIf(!canDropRoot)('without CAP_SYS_ADMIN (a child run as uid nobody, real kernel)', () => {
  it('pagemap shows PFN 0, which is reported as EPERM naming CAP_SYS_ADMIN, never as address 0', () => {
    const dist = path.join(REPO, 'dist/lib/backends/hugepage.js');
    if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < fs.statSync(path.join(REPO, 'lib/backends/hugepage.ts')).mtimeMs) {
      throw new Error('dist/ is missing or older than lib/: run `npx tsc -p tsconfig.json` first');
    }
    const script = `
      import { PagemapReader } from ${JSON.stringify(dist)};
      import { Mapping } from ${JSON.stringify(path.join(REPO, 'dist/lib/mapping.js'))};
      import { native } from ${JSON.stringify(path.join(REPO, 'dist/lib/native.js'))};
      const n = native(); const fd = n.memfdCreate('x', 4096);
      const m = Mapping.map(fd, 0n, 4096, true, 'memfd:x'); n.write8(m.handle, 0, 1);
      try { console.log(JSON.stringify({ phys: String(new PagemapReader().physOf(m.address())) })); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', cwd: '/' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ code: 'EPERM', message: expect.stringMatching(/CAP_SYS_ADMIN.*run as root/) });
  });
});

describe('native additions for huge pages', () => {
  it('memfdCreateHuge and mlock refuse bad arguments with EINVAL / EBADF instead of crashing', () => {
    const n = native();
    const bad: [string, () => unknown][] = [
      ['size not a multiple of the huge page', () => n.memfdCreateHuge('x', 4096, 21)],
      ['zero size', () => n.memfdCreateHuge('x', 0, 21)],
      ['shift out of range', () => n.memfdCreateHuge('x', 2 ** 40, 40)],
      ['shift not a number', () => n.memfdCreateHuge('x', M2, '21' as unknown as number)],
      ['name with NUL', () => n.memfdCreateHuge('a\0b', M2, 21)],
    ];
    for (const [what, f] of bad) expect(f, what).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.mlock(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => n.mlock(-1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it.skipIf(!isRoot)('mlock locks a mapping (VmLck in /proc/self/status grows by its size)', () => {
    const n = native();
    const size = 1 << 20;
    const fd = n.memfdCreate('mlock-test', size);
    const m = Mapping.map(fd, 0n, size, true, 'memfd:mlock-test');
    n.close(fd);
    const locked = () => Number(/^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
    const before = locked();
    n.mlock(m.handle);
    expect(locked() - before).toBe(size);
    m.close();
    expect(locked()).toBe(before);
  });
});

describe('opening the hugepage backend on this machine', () => {
  it('refuses bad options with EINVAL', () => {
    expect(() => openPoolSync({ backend: 'hugepage', pages: 0 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'hugepage', pages: 1.5 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'hugepage', pageSize: 3 * 1024 * 1024 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'hugepage', busOffset: 0.5 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it.skipIf(hugePageSizes().length === 0)('says which huge page sizes exist when asked for another (ENOTSUP)', () => {
    expect(() => openPoolSync({ backend: 'hugepage', pageSize: 64 * 1024 * 1024 * 1024 })).toThrow(
      expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/no 64 GiB huge pages.*sizes available: 2 MiB/) }),
    );
  });

  const noneFree = hugePageSizes().includes(M2) && hugepageCounts(M2).available === 0;
  it.skipIf(!noneFree)('with no free huge pages: ENOMEM saying how to reserve them (real mmap)', () => {
    expect(() => openPoolSync({ backend: 'hugepage', pages: 2, pageSize: M2 })).toThrow(
      expect.objectContaining({
        code: 'ENOMEM',
        syscall: 'mmap',
        message: expect.stringMatching(/2 huge page\(s\) of 2 MiB asked, 0 free.*echo \d+ > \/proc\/sys\/vm\/nr_hugepages/),
      }),
    );
  });
});
