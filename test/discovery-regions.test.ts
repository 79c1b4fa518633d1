import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runRegions } from '../lib/cli/regions.js';
import { toJson } from '../lib/cli/format.js';
import { adviseReservation, discoverRegions, parseCmdline, readMemoryMaps } from '../lib/discovery/index.js';

const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const MiB = 1n << 20n;
const run = (name: string, reserve?: number) => runRegions({ root: FIX + name, reserve });
const advise = (name: string, size?: bigint) => {
  const m = readMemoryMaps({ root: FIX + name });
  return adviseReservation(m.firmware, m.iomem, size);
};

describe('adviseReservation arithmetic', () => {
  it('QEMU pc, 512 MiB (RAM ends at 0x1ffdffff)', () => {
    const a = advise('qemu-pc-plain');
    expect(a.ramBytes).toBe(0x9fc00n + 0x1fee0000n);
    expect(a.ramEnd).toBe(0x1ffdffffn);
    // mem=: the top 64 MiB of the highest range, rounded down to 2 MiB: 0x1ffe0000 - 64M = 0x1bfe0000 -> 0x1be00000 = 446 MiB.
    expect(a.mem).toEqual({
      option: 'mem=446M',
      limit: 0x1be00000n,
      start: 0x1be00000n,
      end: 0x1ffdffffn,
      kept: 0x1ffe0000n - 0x1be00000n,
      kernelRam: 0x9fc00n + (0x1be00000n - 0x100000n),
    });
    // The kernel image (0xfa00000-0x12dfffff) is far below: the top placement fits.
    expect(a.memmap).toEqual({
      option: 'memmap=64M$0x1be00000',
      convertOption: 'memmap=64M%0x1be00000-1+2',
      start: 0x1be00000n,
      size: 64n * MiB,
      within: { start: 0x100000n, end: 0x1ffdffffn },
    });
  });

  it('q35, 16 GiB with a PCI hole: mem= counts addresses, not RAM', () => {
    const a = advise('qemu-q35-16g-plain');
    expect(a.ramEnd).toBe(0x47fffffffn);
    expect(a.mem?.option).toBe('mem=18368M'); // 0x480000000 - 64 MiB = 0x47c000000 = 18368 MiB, though the machine has 16 GiB of RAM
    expect(a.mem?.limit).toBe(0x47c000000n);
    expect(a.mem?.kept).toBe(64n * MiB);
    expect(a.mem?.kernelRam).toBe(a.ramBytes - 64n * MiB);
    // memmap=: high in the largest range below 4 GiB (0x100000-0x7ffdefff).
    expect(a.memmap?.option).toBe('memmap=64M$0x7be00000');
  });

  it('desktop: the memmap= range moves below the kernel image and stays clear of the crash kernel', () => {
    const a = advise('desktop-16g');
    expect(a.memmap?.option).toBe('memmap=64M$0x73600000'); // top placement 0x76200000 would hit Kernel code at 0x77600000
    const io = readMemoryMaps({ root: FIX + 'desktop-16g' }).iomem;
    const start = a.memmap!.start;
    const end = start + a.memmap!.size - 1n;
    for (const e of io.flat.filter((x) => /^(Kernel|Crash)/.test(x.name))) expect(e.end < start || e.start > end).toBe(true);
    expect(a.mem?.option).toBe('mem=18368M');
  });

  it('rounds the size up to 2 MiB and says when nothing fits', () => {
    expect(advise('qemu-pc-plain', 3n * MiB).memmap?.size).toBe(4n * MiB);
    const huge = advise('qemu-pc-plain', 1n << 30n);
    expect(huge.mem).toBeUndefined();
    expect(huge.memmap).toBeUndefined();
    expect(() => advise('qemu-pc-plain', 0n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(adviseReservation([])).toEqual({ ramBytes: 0n, size: 64n * MiB });
  });

  it('round trip (recorded): booting with the advised memmap= gives exactly the advised region', () => {
    const a = advise('qemu-pc-plain');
    const advised = readFileSync(FIX + 'qemu-pc-memmap-advised/proc/cmdline', 'utf8');
    expect(parseCmdline(advised).options.map((o) => o.text)).toEqual([a.memmap!.option]);
    const r = discoverRegions({ root: FIX + 'qemu-pc-memmap-advised' });
    expect(r.regions.map((x) => [x.start, x.size, x.kind])).toEqual([[a.memmap!.start, a.memmap!.size, 'memmap-reserved']]);
    expect(r.problems).toEqual([]);
  });
});

describe('runRegions', () => {
  it('found: a table with start, end, size, kind, source', () => {
    const r = run('qemu-pc-mem384-memmap64m');
    expect(r.found).toBe(true);
    const lines = r.text.split('\n');
    expect(lines[0]).toBe('Reserved memory: 2 regions, 191.9 MiB in all.');
    expect(lines[2]).toMatch(/^start\s+end\s+size\s+kind\s+source$/);
    expect(lines[4]).toMatch(/^0x8000000\s+0xbffffff\s+64 MiB\s+memmap-reserved\s+firmware System RAM 0x8000000-0xbffffff is Reserved in \/proc\/iomem \(memmap=64M\$0x08000000\)$/);
    expect(lines[5]).toMatch(/^0x18000000\s+0x1ffdffff\s+127\.9 MiB\s+above-mem-limit\s+firmware System RAM 0x18000000-0x1ffdffff not in \/proc\/iomem \(mem=384M\)$/);
    expect(r.text).not.toMatch(/Notes/);
  });

  it('found, with notes', () => {
    const r = run('qemu-pc-mem384-ramoops');
    expect(r.found).toBe(true);
    expect(r.text).toMatch(/Notes:\n {2}- firmware System RAM that \/proc\/iomem shows as ramoops/);
  });

  it('JSON: regions with end; addresses hex, sizes numbers, through toJson', () => {
    const r = run('qemu-pc-mem384');
    const j = JSON.parse(toJson(r.json));
    expect(j).toMatchObject({
      found: true,
      regions: [{ start: '0x18000000', end: '0x1ffdffff', size: 0x7fe0000, kind: 'above-mem-limit' }],
      iomemHidden: false,
      problems: [],
      firmwareRam: 0x1ff7fc00,
      cmdline: 'console=ttyS0 panic=-1 mem=384M',
      advice: null,
    });
  });

  it('none (QEMU pc 512 MiB): explains how, with the numbers of this machine', () => {
    const r = run('qemu-pc-plain');
    expect(r.found).toBe(false);
    const t = r.text;
    expect(t).toMatch(/^No reserved memory found\./);
    expect(t).toMatch(/This machine has 511\.5 MiB of RAM \(firmware System RAM\) ending at 0x1ffdffff\./);
    expect(t).toMatch(/To keep 64 MiB for DMA, boot with one of:/);
    expect(t).toMatch(/^ {2}mem=446M$/m);
    expect(t).toMatch(/mem= is a physical address limit, not an amount of RAM/);
    expect(t).toMatch(/uses only RAM below 0x1be00000 \(445\.6 MiB here\); physmem gets\s+0x1be00000-0x1ffdffff \(65\.9 MiB\) above it/);
    expect(t).toMatch(/^ {2}memmap=64M\$0x1be00000$/m);
    expect(t).toMatch(/Reserves 0x1be00000-0x1fdfffff \(64 MiB\) inside firmware System RAM\s+0x100000-0x1ffdffff/);
    expect(t).toMatch(/GRUB_CMDLINE_LINUX in \/etc\/default\/grub/);
    expect(t).toMatch(/update-grub \(Debian,/);
    expect(t).toMatch(/grub2-mkconfig -o \/boot\/grub2\/grub\.cfg/);
    expect(t).toContain('write memmap=64M\\\\\\$0x1be00000');
    expect(t).toContain('inside double quotes (memmap=64M\\$0x1be00000 inside single quotes)');
    expect(t).toContain('/proc/cmdline after the reboot memmap=64M$0x1be00000');
    expect(t).toContain('LILO: append="mem=446M" in /etc/lilo.conf');
    expect(t).toMatch(/^ {2}memmap=64M%0x1be00000-1\+2$/m);
    expect(r.json).toMatchObject({ found: false, regions: [], advice: { mem: { option: 'mem=446M' }, memmap: { option: 'memmap=64M$0x1be00000' } } });
  });

  it('none (16 GiB desktop): RAM ending at 0x47fffffff, mem=18368M, memmap= clear of the kernel', () => {
    const t = run('desktop-16g').text;
    expect(t).toMatch(/This machine has 15\.9 GiB of RAM \(firmware System RAM\) ending at 0x47fffffff\./);
    expect(t).toMatch(/^ {2}mem=18368M$/m);
    expect(t).toMatch(/uses only RAM below 0x47c000000 \(15\.9 GiB here\)/);
    expect(t).toMatch(/^ {2}memmap=64M\$0x73600000$/m);
    const q = run('qemu-q35-16g-plain').text;
    expect(q).toMatch(/16\.0 GiB of RAM .* ending at 0x47fffffff/);
    expect(q).toMatch(/^ {2}memmap=64M\$0x7be00000$/m);
  });

  it('none: the amount to reserve is an option', () => {
    const t = run('qemu-pc-plain', 256 * 1024 * 1024).text;
    expect(t).toMatch(/To keep 256 MiB for DMA/);
    expect(t).toMatch(/^ {2}mem=254M$/m); // 0x1ffe0000 - 256M = 0xffe0000 -> 0xfe00000 = 254 MiB
    // 0xfe00000 + 256M would cover the kernel image (0xfa00000-0x12dfffff), and nothing below or above it is big enough.
    expect(t).not.toMatch(/^ {2}memmap=/m);
    expect(t).toMatch(/no RAM range below 4 GiB holds 256 MiB clear of the kernel image/);
    expect(run('qemu-pc-plain', 128 * 1024 * 1024).text).toMatch(/^ {2}memmap=128M\$0x17e00000$/m);
  });

  it('not root: says so, points at the existing mem=, advises nothing', () => {
    const r = run('qemu-pc-mem384-nonroot');
    expect(r.found).toBe(false);
    expect(r.text).toMatch(/\/proc\/iomem is hidden/);
    expect(r.text).toMatch(/run as root \(CAP_SYS_ADMIN\)/);
    expect(r.text).toMatch(/The kernel command line has mem=384M: run `physmem regions` as root/);
    expect(r.text).not.toMatch(/boot with one of/);
    expect(r.json).toMatchObject({ iomemHidden: true, advice: null });
  });

  it('no /sys/firmware/memmap: says the kernel lacks CONFIG_FIRMWARE_MEMMAP', () => {
    const r = run('no-firmware-memmap');
    expect(r.found).toBe(false);
    expect(r.text).toMatch(/CONFIG_FIRMWARE_MEMMAP/);
    expect(r.text).not.toMatch(/boot with one of/);
  });

  it('memmap=256M\\$0x08000000 that reached the kernel (recorded): RAM above 256M is free, and the note says why', () => {
    const r = run('qemu-pc-grub-backslash');
    expect(r.found).toBe(true);
    expect(r.json).toMatchObject({
      regions: [{ start: 0x10000000n, end: 0x1ffdffffn, kind: 'above-mem-limit', source: 'firmware System RAM 0x10000000-0x1ffdffff not in /proc/iomem (memmap=256M\\$0x08000000)' }],
    });
    expect(r.text).toMatch(/Notes:\n {2}- memmap=256M\\\$0x08000000: the kernel read this as memmap=256M, an address limit like mem=256M \(a backslash reached the kernel/);
  });
});

describe('discovery imports', () => {
  it('uses neither the pool, open, nor the native addon', () => {
    const dir = fileURLToPath(new URL('../lib/discovery/', import.meta.url));
    const files = [...readdirSync(dir).map((f) => dir + f), fileURLToPath(new URL('../lib/cli/regions.ts', import.meta.url))];
    for (const f of files) {
      const src = readFileSync(f, 'utf8');
      expect(src, f).not.toMatch(/from '\.\.\/(pool|open|native)\.js'/);
      expect(src, f).not.toMatch(/from '\.\.\/\.\.\/lib\/(pool|open|native)\.js'/);
    }
  });
});
