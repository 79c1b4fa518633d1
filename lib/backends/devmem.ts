/**
 * The devmem backend: RAM the kernel does not use (above `mem=`, or in
 * `memmap=nn$ss` regions), mapped through /dev/mem.
 *
 * Opening reserves address space for each region and maps only its first
 * window; the rest is mapped as blocks are handed out. Nothing is read or
 * written: whatever another program or the firmware left there survives until
 * a block is allocated (and zeroed, unless `zero: false`).
 * @module
 */
import { existsSync, fstatSync } from 'node:fs';
import { PhysmemError, describeCode, invalidArgument } from '../errors.js';
import { DEVMEM_LOCK_KIND, lockRegion, type RegionLock } from '../locks.js';
import { quiesceOrphanedDevices } from '../pci/quiesce.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { native } from '../native.js';
import { checkExplicitRange, discoverRegions, readMemoryMaps } from '../discovery/index.js';
import type { Backend, BackendRange } from './types.js';
import { checkBoolean, checkPath, hex, optionNames, toAddressNumber, toBusOffset } from '../internal/validate.js';

/** A physical range given explicitly (bigints or numbers, bytes). */
export interface ExplicitRange {
  /** First physical address; page-aligned. */
  start: bigint | number;
  /** Length in bytes; a multiple of the page size. */
  size: bigint | number;
}

/** Options of the devmem backend. */
export interface DevmemBackendOptions {
  /** `'auto'` (default): every region discovery finds; or explicit ranges, checked against the firmware map and /proc/iomem. */
  regions?: 'auto' | ExplicitRange[];
  /** `'cached'` (default) or `'uncached'` (opens /dev/mem with O_SYNC: uncached mappings). */
  cache?: 'cached' | 'uncached';
  /** bus = phys + busOffset, for SoCs whose DMA sees RAM at an alias. Default 0. */
  busOffset?: bigint | number;
  /** Admit explicit ranges outside firmware System RAM that lie in a device's window (an FPGA's RAM behind a BAR). Never System RAM. Default false. */
  allowDeviceMemory?: boolean;
  /** Use at most this many bytes (from the lowest regions up); ENOMEM when less is reserved. Default: all. */
  size?: number;
  /** The memory device. Default '/dev/mem'. */
  devicePath?: string;
  /** Prefix for /sys and /proc when discovering (tests). Default ''. */
  discoveryRoot?: string;
  /**
   * Directory of the lock files that keep two programs from handing out the
   * same memory (lib/locks.ts): the ranges in use are locked there while open.
   * Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem.
   */
  lockDir?: string;
  /**
   * Before any memory is handed out, look for PCI devices a crashed userspace
   * driver left doing DMA (bus mastering on, no kernel driver, no live owner)
   * and quiesce them (bus mastering off, reset where possible), with a
   * `PHYSMEM_QUIESCED` warning each: their queues may point into the memory
   * this pool is about to hand out. Needs root and sysfs (skipped otherwise).
   * Default true. See docs/pci.md.
   */
  quiesceOrphans?: boolean;
}

/** Every option name of {@link DevmemBackendOptions}, for the checks of openPool and startServer. */
export const DEVMEM_OPTION_NAMES = optionNames<DevmemBackendOptions>({
  regions: true, cache: true, busOffset: true, allowDeviceMemory: true, size: true, devicePath: true, discoveryRoot: true, lockDir: true, quiesceOrphans: true,
});

/** Regions are mapped in windows of this many bytes, on first use. */
const WINDOW = 2 * 1024 * 1024;

const REGIONS_HINT = 'run `physmem regions` to see what is reserved and how to reserve memory (mem= or memmap= on the kernel command line)';

/**
 * What works instead on a kernel without /dev/mem: said before any advice to
 * reserve memory, which cannot help there.
 */
export const NO_DEVMEM_ALTERNATIVES =
  "the devmem backend cannot work on this kernel, whatever memory is reserved (reserving memory and rebooting will not help). " +
  "Use instead: backend 'hugepage' (huge pages, as root, no reboot), 'udmabuf' (the u-dma-buf kernel module), or 'vfio' " +
  '(a device bound to vfio-pci behind an IOMMU); `physmem doctor` shows which is ready here. Or run a kernel built with CONFIG_DEVMEM=y';

function openHint(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return `this kernel has no /dev/mem (built without CONFIG_DEVMEM): ${NO_DEVMEM_ALTERNATIVES}`;
    case 'EACCES':
    case 'EPERM':
      return 'opening /dev/mem needs root (CAP_SYS_RAWIO): run as root, e.g. with sudo';
    default:
      return undefined;
  }
}

/** Page-aligned numeric ranges from the options, checked against the machine's maps. */
function resolveRanges(o: DevmemBackendOptions, page: number): { ranges: BackendRange[]; source: string } {
  const regions = o.regions ?? 'auto';
  if (regions === 'auto') {
    const found = discoverRegions({ root: o.discoveryRoot, pageSize: page });
    if (found.iomemHidden) {
      throw new PhysmemError('EACCES', '/proc/iomem shows only zeros, so reserved memory cannot be found', {
        path: '/proc/iomem',
        hint: 'run as root',
      });
    }
    if (found.regions.length === 0) {
      const why = found.problems.length ? ` (${found.problems.join('; ')})` : '';
      throw new PhysmemError('ENOMEM', `no reserved memory found${why}`, { hint: REGIONS_HINT });
    }
    return {
      ranges: found.regions.map((r) => ({ start: toAddressNumber(r.start, 'region start'), size: toAddressNumber(r.size, 'region size') })),
      source: found.regions.map((r) => r.kind).join(', '),
    };
  }
  if (!Array.isArray(regions) || regions.length === 0) {
    throw invalidArgument("regions must be 'auto' or a non-empty array of { start, size }");
  }
  const maps = readMemoryMaps({ root: o.discoveryRoot });
  const ranges = regions.map((r, i) => {
    if (typeof r !== 'object' || r === null) throw invalidArgument(`regions[${i}] must be { start, size }`);
    const start = toAddressNumber(r.start, `regions[${i}].start`);
    const size = toAddressNumber(r.size, `regions[${i}].size`);
    if (size === 0 || start % page !== 0 || size % page !== 0) {
      throw invalidArgument(`regions[${i}] must be page-aligned (${page} bytes) and non-empty, got start ${hex(start)} size ${size}`);
    }
    checkExplicitRange(BigInt(start), BigInt(size), maps.firmware, maps.iomem, { allowDeviceMemory: o.allowDeviceMemory === true });
    return { start, size };
  });
  ranges.sort((a, b) => a.start - b.start);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i - 1].start + ranges[i - 1].size > ranges[i].start) throw invalidArgument('regions overlap each other');
  }
  return { ranges, source: 'explicit ranges' };
}

/**
 * The lock kind of the memory behind the device `fd`: `devmem` for /dev/mem
 * (char 1:1, physical addresses, whatever its path), `chr-<major>-<minor>`
 * for another memory device; undefined for a regular file (a stand-in for
 * /dev/mem in tests, which no device can reach and no other program shares).
 */
function deviceLockKind(fd: number): string | undefined {
  const st = fstatSync(fd, { bigint: true });
  if (!st.isCharacterDevice() && !st.isBlockDevice()) return undefined;
  // glibc's dev_t encoding, as Node reports it.
  const major = ((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn);
  const minor = (st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn);
  if (st.isCharacterDevice() && major === 1n && minor === 1n) return DEVMEM_LOCK_KIND;
  return `${st.isCharacterDevice() ? 'chr' : 'blk'}-${major}-${minor}`;
}

/**
 * Open the devmem backend. The ranges it uses are locked (lib/locks.ts) until close.
 * @throws {PhysmemError} ENOENT (no /dev/mem), EACCES (not root), EPERM (a range is System RAM or claimed, or
 *   mmap refused by CONFIG_STRICT_DEVMEM), ENOMEM (no reserved memory, or less than `size`), EINVAL (bad options),
 *   EBUSY (another program or pool holds an overlapping range: the message names it), and the lock
 *   directory errors of lockRegion.
 */
export function openDevmemBackend(o: DevmemBackendOptions = {}): Backend {
  const page = native().pageSize();
  checkBoolean(o.allowDeviceMemory, 'allowDeviceMemory', "openPool({ backend: 'devmem' })");
  checkBoolean(o.quiesceOrphans, 'quiesceOrphans', "openPool({ backend: 'devmem' })");
  checkPath(o.devicePath, 'devicePath', "openPool({ backend: 'devmem' })");
  checkPath(o.discoveryRoot, 'discoveryRoot', "openPool({ backend: 'devmem' })", true);
  checkPath(o.lockDir, 'lockDir', "openPool({ backend: 'devmem' })");
  const cache = o.cache ?? 'cached';
  if (cache !== 'cached' && cache !== 'uncached') throw invalidArgument(`cache must be 'cached' or 'uncached', got ${String(cache)}`);
  const busOffset = toBusOffset(o.busOffset);
  const devicePath = o.devicePath ?? '/dev/mem';
  // Before discovery: without the device, no reservation can help, and discovery would advise one.
  if (!existsSync(devicePath)) {
    throw new PhysmemError('ENOENT', describeCode('ENOENT'), { syscall: 'open', path: devicePath, hint: openHint('ENOENT') });
  }
  let { ranges, source } = resolveRanges(o, page);
  if (o.size !== undefined) {
    if (!Number.isSafeInteger(o.size) || o.size <= 0) throw invalidArgument(`size must be a positive integer, got ${String(o.size)}`);
    const want = Math.ceil(o.size / page) * page;
    const have = ranges.reduce((s, r) => s + r.size, 0);
    if (have < want) {
      throw new PhysmemError('ENOMEM', `only ${have} bytes of reserved memory, ${want} asked`, { hint: 'reserve more (a lower mem= or a larger memmap=), or ask for less' });
    }
    const kept: BackendRange[] = [];
    let left = want;
    for (const r of ranges) {
      if (left === 0) break;
      kept.push({ start: r.start, size: Math.min(r.size, left) });
      left -= Math.min(r.size, left);
    }
    ranges = kept;
  }

  // Reserve address space for each region now and map it in windows on first
  // use: mapping a whole region makes the kernel write all its page table
  // entries up front (about 0.1 s per GiB), and nothing may be touched anyway.
  // The first window is mapped at once so a kernel refusal shows at open.
  if (o.quiesceOrphans !== false) quiesceOrphanedDevices({ sysfsRoot: `${o.discoveryRoot ?? ''}/sys`, lockDir: o.lockDir });
  const fd = openFile(devicePath, true, cache === 'uncached', openHint);
  // Locked before anything is mapped, so a second program fails fast.
  let lock: RegionLock | undefined;
  try {
    const kind = deviceLockKind(fd);
    if (kind !== undefined) lock = lockRegion(kind, ranges, { dir: o.lockDir });
  } catch (e) {
    closeFile(fd);
    throw e;
  }
  const mappings: Mapping[] = [];
  const mapped: Uint8Array[] = [];
  const mapWindow = (i: number, w: number): void => {
    const r = ranges[i];
    const off = w * WINDOW;
    const len = Math.min(WINDOW, r.size - off);
    mappings[i].mapInto(off, fd, BigInt(r.start + off), len, (code) =>
      code === 'EPERM'
        ? `the kernel refused to map ${hex((r.start + off))}-${hex((r.start + off + len - 1))} (CONFIG_STRICT_DEVMEM allows only memory the kernel does not use as RAM); ${REGIONS_HINT}`
        : code === 'EAGAIN'
          ? 'another mapping of this memory uses a different cache mode (x86 PAT); close it or open the pool with the same cache option'
          : undefined,
    );
    mapped[i][w] = 1;
  };
  try {
    for (let i = 0; i < ranges.length; i++) {
      mappings.push(Mapping.reserve(ranges[i].size, true, devicePath));
      mapped.push(new Uint8Array(Math.ceil(ranges[i].size / WINDOW)));
      mapWindow(i, 0);
    }
  } catch (e) {
    mappings.forEach((m) => m.close());
    closeFile(fd);
    lock?.release();
    throw e;
  }
  const ensureMapped = (i: number, off: number, len: number): void => {
    const m = mapped[i];
    for (let w = Math.floor(off / WINDOW), last = Math.floor((off + len - 1) / WINDOW); w <= last; w++) if (m[w] === 0) mapWindow(i, w);
  };

  const find = (phys: number): number => {
    for (let i = 0; i < ranges.length; i++) if (phys >= ranges[i].start && phys < ranges[i].start + ranges[i].size) return i;
    throw new PhysmemError('EFAULT', `physical ${hex(phys)} is outside the devmem regions`);
  };
  const total = ranges.reduce((s, r) => s + r.size, 0);
  return {
    name: 'devmem',
    ranges,
    busOffset,
    // x86 DMA snoops the caches; elsewhere only an uncached mapping needs no cache maintenance.
    coherent: cache === 'uncached' || process.arch === 'x64' || process.arch === 'ia32',
    // View ids encode the mapping: slot * n + region index.
    view: (phys, len) => {
      const i = find(phys);
      const off = phys - ranges[i].start;
      ensureMapped(i, off, len);
      return mappings[i].view(off, len) * mappings.length + i;
    },
    buffer: (id) => mappings[id % mappings.length].buffer(Math.floor(id / mappings.length))!,
    release: (id) => mappings[id % mappings.length].release(Math.floor(id / mappings.length)),
    describe: () =>
      `devmem backend: ${total} bytes of reserved RAM (${source}) in ${ranges.length} region(s) via ${devicePath}, ${cache}`,
    lock,
    close: () => {
      if (mappings[0]?.closed) return;
      mappings.forEach((m) => m.close());
      closeFile(fd);
      lock?.release(); // after unmapping: the memory is no longer ours to hand out
    },
  };
}
