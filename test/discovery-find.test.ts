import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  FIRMWARE_MEMMAP_MISSING_PROBLEM,
  IOMEM_HIDDEN_PROBLEM,
  discoverRegions,
  findReservedRegions,
  readMemoryMaps,
  type FirmwareRange,
  type MemoryRegion,
} from '../lib/discovery/index.js';

const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const discover = (name: string, pageSize?: number) => discoverRegions({ root: FIX + name, pageSize });
const region = (start: bigint, end: bigint, kind: MemoryRegion['kind'], source: string): MemoryRegion => ({ start, size: end - start + 1n, kind, source });
const fw = (start: bigint, end: bigint, type = 'System RAM'): FirmwareRange => ({ start, end, size: end - start + 1n, type });
const ram = (...r: FirmwareRange[]) => r;
const overlapsAny = (r: MemoryRegion, ranges: { start: bigint; end: bigint }[]) => ranges.some((x) => r.start <= x.end && x.start < r.start + r.size);

describe('findReservedRegions on recorded QEMU guests', () => {
  it('-m 512M mem=384M: the RAM above the limit', () => {
    const r = discover('qemu-pc-mem384');
    expect(r).toEqual({
      regions: [region(0x18000000n, 0x1ffdffffn, 'above-mem-limit', 'firmware System RAM 0x18000000-0x1ffdffff not in /proc/iomem (mem=384M)')],
      iomemHidden: false,
      problems: [],
      cmdline: expect.objectContaining({ memLimit: 0x18000000n }),
      firmwareRam: 0x9fc00n + 0x1fee0000n,
    });
  });

  it('mem=384M memmap=64M$0x08000000: both regions, sorted', () => {
    const r = discover('qemu-pc-mem384-memmap64m');
    expect(r.regions).toEqual([
      region(0x8000000n, 0xbffffffn, 'memmap-reserved', 'firmware System RAM 0x8000000-0xbffffff is Reserved in /proc/iomem (memmap=64M$0x08000000)'),
      region(0x18000000n, 0x1ffdffffn, 'above-mem-limit', 'firmware System RAM 0x18000000-0x1ffdffff not in /proc/iomem (mem=384M)'),
    ]);
    expect(r.problems).toEqual([]);
  });

  it('memmap= above the mem= limit, merged by the kernel with a firmware Reserved range: only the RAM part, kinds kept apart', () => {
    const r = discover('qemu-pc-mem384-memmap-top');
    expect(r.regions).toEqual([
      region(0x18000000n, 0x1bffffffn, 'above-mem-limit', 'firmware System RAM 0x18000000-0x1bffffff not in /proc/iomem (mem=384M)'),
      region(0x1c000000n, 0x1ffdffffn, 'memmap-reserved', 'firmware System RAM 0x1c000000-0x1ffdffff is Reserved in /proc/iomem (memmap=64M$0x1c000000)'),
    ]);
    // 0x1ffe0000.. is the firmware's (ACPI tables on SeaBIOS): never handed out.
    expect(r.problems).toEqual([
      'memmap=64M$0x1c000000 covers 0x1ffe0000-0x1fffffff, which the firmware does not call System RAM (Reserved 0x1ffe0000-0x1fffffff): that part is never handed out',
    ]);
  });

  it('several memmap= ($ handed out; # and ! not)', () => {
    const r = discover('qemu-q35-memmap-multi');
    expect(r.regions.map((x) => [x.start, x.size, x.kind])).toEqual([
      [0x8000000n, 64n << 20n, 'memmap-reserved'],
      [0x10000000n, 32n << 20n, 'memmap-reserved'],
    ]);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatch(/ACPI Tables 0x14000000-0x14ffffff, Persistent Memory \(legacy\) 0x16000000-0x16ffffff is not handed out/);
  });

  it('memmap=64M%0x08000000-1+2 (RAM converted to reserved, no $): found like memmap=$', () => {
    const r = discover('qemu-pc-memmap-percent');
    expect(r.regions).toEqual([
      region(0x8000000n, 0xbffffffn, 'memmap-reserved', 'firmware System RAM 0x8000000-0xbffffff is Reserved in /proc/iomem (memmap=64M%0x08000000-1+2)'),
    ]);
    expect(r.problems).toEqual([]);
  });

  it('memmap=32M%0x10000000-1 (RAM removed): a hole in System RAM, found as absent RAM', () => {
    expect(discover('qemu-pc-memmap-percent-remove').regions).toEqual([
      region(0x10000000n, 0x11ffffffn, 'above-mem-limit', 'firmware System RAM 0x10000000-0x11ffffff not in /proc/iomem (memmap=32M%0x10000000-1)'),
    ]);
  });

  it('big machine with a PCI hole (q35, 16 GiB, mem=16G): the 2 GiB above 16 GiB', () => {
    const r = discover('qemu-q35-16g-mem16g-crashkernel');
    expect(r.regions).toEqual([
      region(0x400000000n, 0x47fffffffn, 'above-mem-limit', 'firmware System RAM 0x400000000-0x47fffffff not in /proc/iomem (mem=16G)'),
    ]);
    expect(r.firmwareRam).toBe(0x9fc00n + (0x7ffdf000n - 0x100000n) + 0x380000000n);
    expect(r.problems).toEqual([]);
  });

  it('crash kernel: never handed out (it is inside System RAM)', () => {
    const r = discover('qemu-pc-mem384-crashkernel');
    expect(r.regions).toEqual([region(0x18000000n, 0x1ffdffffn, 'above-mem-limit', expect.any(String))]);
    expect(overlapsAny(r.regions[0], [{ start: 0x13000000n, end: 0x16ffffffn }])).toBe(false);
  });

  it('memmap=exactmap: the RAM no memmap=nn@ss lists', () => {
    const r = discover('qemu-pc-exactmap');
    expect(r.regions).toEqual([
      region(0x18000000n, 0x1ffdffffn, 'above-mem-limit', 'firmware System RAM 0x18000000-0x1ffdffff not in /proc/iomem (memmap=exactmap lists no RAM there)'),
    ]);
    expect(r.problems).toEqual([]);
  });

  it('a driver (ramoops) claiming RAM above mem=: only the rest, page-trimmed', () => {
    const r = discover('qemu-pc-mem384-ramoops');
    // ramoops ends at 0x180fffe3: the next page starts at 0x18100000.
    expect(r.regions).toEqual([
      region(0x18100000n, 0x1ffdffffn, 'above-mem-limit', 'firmware System RAM 0x180fffe4-0x1ffdffff not in /proc/iomem (mem=384M)'),
    ]);
    expect(r.problems[0]).toMatch(/^firmware System RAM that \/proc\/iomem shows as ramoops:dmesg\(0\/14\) 0x18000000-0x18010ddb, .* and 14 more is not handed out/);
  });

  it('a memmap= Reserved entry with a driver nested in it: none of it', () => {
    const r = discover('qemu-pc-memmap-ramoops');
    expect(r.regions).toEqual([region(0x18000000n, 0x1bffffffn, 'above-mem-limit', expect.any(String))]);
    expect(r.problems[0]).toMatch(/^Reserved 0x1c000000-0x1fffffff in \/proc\/iomem is claimed by a driver \(ramoops:dmesg\(0\/14\) 0x1c000000-0x1c010ddb/);
  });

  it('no mem= and no memmap=: nothing, and no false alarm (page 0 is Reserved in iomem but firmware RAM)', () => {
    for (const name of ['qemu-pc-plain', 'qemu-q35-16g-plain']) {
      const r = discover(name);
      expect(r.regions).toEqual([]);
      expect(r.problems).toEqual([]);
    }
  });

  it('not root: iomem is zeros -> no regions, iomemHidden, and a problem saying so', () => {
    const r = discover('qemu-pc-mem384-nonroot');
    expect(r).toEqual({
      regions: [],
      iomemHidden: true,
      problems: ['/proc/iomem shows only zeros: run as root (CAP_SYS_ADMIN) to see it'],
      cmdline: expect.objectContaining({ raw: 'console=ttyS0 panic=-1 mem=384M' }),
      firmwareRam: 0x9fc00n + 0x1fee0000n,
    });
    expect(r.problems[0]).toBe(IOMEM_HIDDEN_PROBLEM);
  });

  it('trims to a larger page size', () => {
    const r = discover('qemu-pc-mem384', 2 << 20);
    expect(r.regions.map((x) => [x.start, x.size])).toEqual([[0x18000000n, 0x1fe00000n - 0x18000000n]]);
    expect(() => discover('qemu-pc-mem384', 3000)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('findReservedRegions on a desktop (UEFI, 16 GiB, ACPI ranges)', () => {
  it('nothing reserved: nothing found, no noise', () => {
    const r = discover('desktop-16g');
    expect(r.regions).toEqual([]);
    expect(r.problems).toEqual([]);
  });

  it('memmap=1G above 4 GiB is found; memmap=16M over ACPI NVS and firmware Reserved is not', () => {
    const r = discover('desktop-16g-memmap');
    expect(r.regions).toEqual([
      region(0x440000000n, 0x47fffffffn, 'memmap-reserved', 'firmware System RAM 0x440000000-0x47fffffff is Reserved in /proc/iomem (memmap=1G$0x440000000)'),
    ]);
    // The one firmware RAM page inside memmap=16M$0x7c000000 lies in a Reserved entry with a claimed child (i915's stolen memory).
    expect(r.problems).toEqual([
      'Reserved 0x7c4f3000-0x7fffffff in /proc/iomem is claimed by a driver (Graphics Stolen Memory 0x7e000000-0x7fffffff): none of it is handed out',
      'memmap=16M$0x7c000000 covers 0x7c000000-0x7cdfefff, 0x7ce00000-0x7cffffff, which the firmware does not call System RAM (ACPI Non-volatile Storage 0x7bd8c000-0x7c4f2fff, Reserved 0x7c4f3000-0x7cdfefff, Reserved 0x7ce00000-0x7fffffff): that part is never handed out',
    ]);
    const maps = readMemoryMaps({ root: FIX + 'desktop-16g-memmap' });
    const notRam = maps.firmware.filter((f) => f.type !== 'System RAM');
    for (const x of r.regions) expect(overlapsAny(x, notRam)).toBe(false);
  });
});

describe('findReservedRegions rules (synthetic maps)', () => {
  const lowRam = fw(0x0n, 0x9fbffn);
  it('never returns firmware Reserved/ACPI ranges, even when memmap=$ covers them and iomem says Reserved', () => {
    const r = findReservedRegions({
      firmware: ram(lowRam, fw(0x100000n, 0x7fffffffn), fw(0x80000000n, 0x80ffffffn, 'ACPI Tables'), fw(0x81000000n, 0x81ffffffn, 'ACPI Non-volatile Storage')),
      iomem: '00001000-0009fbff : System RAM\n00100000-7fffffff : System RAM\n80000000-80ffffff : Reserved\n81000000-81ffffff : Reserved\n',
      cmdline: 'memmap=32M$0x80000000',
    });
    expect(r.regions).toEqual([]);
    expect(r.problems[0]).toMatch(/ACPI Tables 0x80000000-0x80ffffff, ACPI Non-volatile Storage 0x81000000-0x81ffffff/);
  });

  it('does not hand out Reserved RAM that no memmap=$ asked for, nor absent RAM nothing explains', () => {
    const r = findReservedRegions({
      firmware: ram(lowRam, fw(0x100000n, 0x1fffffffn)),
      iomem: '00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n00100000-0fffffff : System RAM\n10000000-10ffffff : Reserved\n11000000-17ffffff : System RAM\n',
      cmdline: 'quiet',
    });
    expect(r.regions).toEqual([]);
    expect(r.problems).toEqual([
      'firmware System RAM 0x18000000-0x1fffffff is not in /proc/iomem, but no mem=, memmap=nn or memmap=exactmap on the command line explains why: not handed out',
      'firmware System RAM 0x10000000-0x10ffffff is Reserved in /proc/iomem but no memmap=nn$ss asked for it (the kernel or firmware reserved it): not handed out',
    ]);
  });

  it('hands out only the part of a Reserved entry that memmap=$ asked for, and notes a memmap=$ iomem does not show', () => {
    const r = findReservedRegions({
      firmware: ram(fw(0x100000n, 0x1fffffffn)),
      iomem: '00100000-07ffffff : System RAM\n08000000-0bffffff : Reserved\n0c000000-1fffffff : System RAM\n',
      cmdline: 'memmap=32M$0x0a000000 memmap=16M$0x10000000',
    });
    expect(r.regions).toEqual([region(0xa000000n, 0xbffffffn, 'memmap-reserved', expect.stringContaining('memmap=32M$0x0a000000'))]);
    expect(r.problems).toEqual([
      'firmware System RAM 0x8000000-0x9ffffff is Reserved in /proc/iomem but no memmap=nn$ss asked for it (the kernel or firmware reserved it): not handed out',
      'memmap=16M$0x10000000: 0x10000000-0x10ffffff is not a top-level Reserved entry in /proc/iomem (it shows System RAM 0xc000000-0x1fffffff)',
    ]);
  });

  it('merges adjacent regions of the same kind (two memmap=$ side by side, RAM split in two firmware entries)', () => {
    const r = findReservedRegions({
      firmware: ram(fw(0x100000n, 0xfffffffn), fw(0x10000000n, 0x1fffffffn)),
      iomem: '00100000-07ffffff : System RAM\n08000000-09ffffff : Reserved\n0a000000-0bffffff : Reserved\n0c000000-17ffffff : System RAM\n',
      cmdline: 'mem=384M memmap=32M$0x8000000,32M$0xa000000',
    });
    expect(r.regions).toEqual([
      region(0x8000000n, 0xbffffffn, 'memmap-reserved', 'firmware System RAM 0x8000000-0x9ffffff is Reserved in /proc/iomem (memmap=32M$0x8000000); firmware System RAM 0xa000000-0xbffffff is Reserved in /proc/iomem (memmap=32M$0xa000000)'),
      region(0x18000000n, 0x1fffffffn, 'above-mem-limit', 'firmware System RAM 0x18000000-0x1fffffff not in /proc/iomem (mem=384M)'),
    ]);
  });

  it('drops regions smaller than a page after trimming, and anything below 1 MiB', () => {
    const r = findReservedRegions({
      firmware: ram(fw(0x0n, 0x9ffffn), fw(0x100000n, 0x18000fffn)),
      iomem: '00001000-0000ffff : System RAM\n00100000-17ffffff : System RAM\n18000000-18000dff : ramoops\n',
      cmdline: 'mem=384M memmap=exactmap memmap=60K@0x1000 memmap=383M@1M',
    });
    expect(r.regions).toEqual([]);
  });

  it('refuses to guess when iomem lists no System RAM or the firmware map is empty', () => {
    expect(findReservedRegions({ firmware: ram(fw(0x100000n, 0x1fffffffn)), iomem: '', cmdline: 'mem=256M' }).problems).toEqual([
      '/proc/iomem lists no System RAM, so what the kernel uses is unknown: nothing is handed out',
    ]);
    expect(findReservedRegions({ firmware: [], iomem: '00100000-17ffffff : System RAM\n' }).problems[0]).toMatch(/firmware memory map is empty/);
  });

  it('accepts raw firmware entries and texts', () => {
    const r = findReservedRegions({
      firmware: [{ start: '0x100000\n', end: '0x1fffffff\n', type: 'System RAM\n' }],
      iomem: '00100000-17ffffff : System RAM\n',
      cmdline: 'mem=384M',
    });
    expect(r.regions.map((x) => [x.start, x.size])).toEqual([[0x18000000n, 0x8000000n]]);
  });

  it('memmap=nn%ss-1 (RAM removed) counts as absent RAM; %ss-1+2 as reserved', () => {
    const r = findReservedRegions({
      firmware: ram(fw(0x100000n, 0x1fffffffn)),
      iomem: '00100000-07ffffff : System RAM\n08000000-0bffffff : Reserved\n0c000000-0fffffff : System RAM\n12000000-1fffffff : System RAM\n',
      cmdline: 'memmap=64M%0x8000000-1+2 memmap=32M%0x10000000-1',
    });
    expect(r.regions.map((x) => [x.start, x.size, x.kind])).toEqual([
      [0x8000000n, 64n << 20n, 'memmap-reserved'],
      [0x10000000n, 32n << 20n, 'above-mem-limit'],
    ]);
  });

  it('property: regions are page-aligned firmware System RAM >= 1 MiB, outside every other top-level iomem entry', () => {
    const MiB = 1n << 20n;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 64 }), fc.constantFrom('System RAM', 'Reserved', 'ACPI Tables')), { maxLength: 6 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 64 }), fc.constantFrom('System RAM', 'Reserved', 'PCI Bus 0000:00', 'ramoops')), { maxLength: 6 }),
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 64 })), { maxLength: 3 }),
        (fws, ios, memMiB, memmaps) => {
          const firmware = fws.map(([s, n, t]) => fw(BigInt(s) * MiB + 0x123n, BigInt(s + n) * MiB - 1n, t));
          const iomem = ['00001000-0009ffff : System RAM', ...ios.map(([s, n, t]) => `${(BigInt(s) * MiB).toString(16)}-${(BigInt(s + n) * MiB - 1n).toString(16)} : ${t}`)].join('\n');
          const cmdline = [`mem=${memMiB}M`, ...memmaps.map(([s, n]) => `memmap=${n}M$${s}M`)].join(' ');
          const r = findReservedRegions({ firmware, iomem, cmdline });
          const fwRam = firmware.filter((f) => f.type === 'System RAM');
          const top = iomem.split('\n').map((l) => {
            const m = /^([0-9a-f]+)-([0-9a-f]+) : (.*)$/.exec(l)!;
            return { start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), name: m[3] };
          });
          for (const x of r.regions) {
            expect(x.start % 4096n).toBe(0n);
            expect(x.size % 4096n).toBe(0n);
            expect(x.size > 0n).toBe(true);
            expect(x.start >= MiB).toBe(true);
            // every byte is firmware System RAM (RAM entries may overlap each other: check by coverage)
            let cursor = x.start;
            const end = x.start + x.size;
            while (cursor < end) {
              const f = fwRam.find((g) => g.start <= cursor && cursor <= g.end);
              expect(f).toBeDefined();
              cursor = f!.end + 1n;
            }
            // nothing the kernel uses or a driver claims; Reserved only for memmap-reserved
            for (const e of top) {
              if (!(x.start <= e.end && e.start < end)) continue;
              expect(e.name === 'Reserved' && x.kind === 'memmap-reserved').toBe(true);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('discoverRegions reading files', () => {
  it('without /sys/firmware/memmap: no regions and a problem naming CONFIG_FIRMWARE_MEMMAP', () => {
    const r = discover('no-firmware-memmap');
    expect(r.regions).toEqual([]);
    expect(r.problems).toEqual([FIRMWARE_MEMMAP_MISSING_PROBLEM]);
    expect(r.problems[0]).toMatch(/CONFIG_FIRMWARE_MEMMAP/);
    expect(r.firmwareRam).toBe(0n);
  });

  it('with nothing readable: problems, never an exception', () => {
    const r = discoverRegions({ root: FIX + 'does-not-exist' });
    expect(r.regions).toEqual([]);
    expect(r.problems[0]).toBe(FIRMWARE_MEMMAP_MISSING_PROBLEM);
    expect(r.problems.some((p) => /cannot read .*proc\/iomem: ENOENT/.test(p))).toBe(true);
  });

  it('readMemoryMaps gives the parsed maps', () => {
    const m = readMemoryMaps({ root: FIX + 'qemu-pc-mem384-memmap64m' });
    expect(m.firmwareMissing).toBe(false);
    expect(m.firmware).toHaveLength(7);
    expect(m.iomem.entries.length).toBeGreaterThan(10);
    expect(m.cmdline.raw).toBe(readFileSync(FIX + 'qemu-pc-mem384-memmap64m/proc/cmdline', 'utf8').trim());
    expect(m.problems).toEqual([]);
  });
});
