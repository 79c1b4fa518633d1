/**
 * The hugepage backend: hugetlb pages (2 MiB, or 1 GiB where the CPU and
 * kernel have them) reserved by the kernel at run time, no reboot needed.
 *
 * The memory is a memfd on the kernel's internal hugetlbfs (no file is
 * visible anywhere, so nothing outlives the process, even after a crash),
 * mapped shared and mlock()ed. Physical addresses come from
 * /proc/self/pagemap, which shows them only to CAP_SYS_ADMIN.
 *
 * Each huge page is physically contiguous, but the kernel chooses where each
 * one lies: the pool gets one range per run of pages that are adjacent both
 * physically and in the mapping, so a block never straddles a physical
 * discontinuity and is at most one such run long.
 * @module
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { PhysmemError, invalidArgument } from '../errors.js';
import { Mapping, closeFile } from '../mapping.js';
import { native, toPhysmemError } from '../native.js';
import { quiesceOrphanedDevices } from '../pci/quiesce.js';
import type { Backend, BackendRange } from './types.js';
import { checkBoolean, checkPath, hex, isPowerOfTwo, toBusOffset } from '../internal/validate.js';

/** Options of the hugepage backend. */
export interface HugepageBackendOptions {
  /** Number of huge pages to take. Default 1. */
  pages?: number;
  /**
   * Huge page size in bytes: `2 * 1024 * 1024` or `1024 * 1024 * 1024` on x86
   * (any size listed in /sys/kernel/mm/hugepages). Default: the kernel's
   * default huge page size (`Hugepagesize` in /proc/meminfo), 2 MiB on x86.
   */
  pageSize?: number;
  /** bus = phys + busOffset. Default 0. */
  busOffset?: bigint | number;
  /**
   * Before any memory is handed out, look for PCI devices a crashed userspace
   * driver left doing DMA (bus mastering on, no kernel driver, no live owner)
   * and quiesce them (bus mastering off, reset where possible), with a
   * `PHYSMEM_QUIESCED` warning each: their queues may point into the memory
   * this pool is about to hand out. Needs root and sysfs (skipped otherwise).
   * Default true. See docs/pci.md.
   */
  quiesceOrphans?: boolean;
  /** sysfs mount point for the orphan scan (tests point it at a fake tree). Default '/sys'. */
  sysfsRoot?: string;
  /** Lock directory of the PCI device locks the orphan scan reads. Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
}

/** Where the kernel lists huge page sizes and their counts. */
export const HUGEPAGES_SYSFS = '/sys/kernel/mm/hugepages';
/** Where physical addresses of our own pages come from. */
export const PAGEMAP_PATH = '/proc/self/pagemap';

const PAGEMAP_PRESENT = 1n << 63n;
const PAGEMAP_PFN_MASK = (1n << 55n) - 1n;

/** One /proc/self/pagemap entry, decoded (Documentation/admin-guide/mm/pagemap.rst). */
export interface PagemapEntry {
  /** Bit 63: the page is in RAM. */
  present: boolean;
  /** Bits 0-54: the page frame number; 0 when the reader lacks CAP_SYS_ADMIN. */
  pfn: bigint;
}

/** Decode a 64-bit pagemap entry. */
export function parsePagemapEntry(entry: bigint): PagemapEntry {
  const present = (entry & PAGEMAP_PRESENT) !== 0n;
  return { present, pfn: present ? entry & PAGEMAP_PFN_MASK : 0n };
}

/**
 * Reads physical addresses of this process's pages from /proc/self/pagemap.
 * Never returns 0 for a page it cannot see: it throws instead.
 */
export class PagemapReader {
  readonly #fd: number;
  readonly #page: number;
  readonly #path: string;
  readonly #buf = Buffer.alloc(8);

  /**
   * @param path - default /proc/self/pagemap.
   * @param pageSize - the system page size (pagemap has one entry per base page). Default from the addon.
   * @throws {PhysmemError} ENOENT (no /proc), EACCES.
   */
  constructor(path: string = PAGEMAP_PATH, pageSize: number = native().pageSize()) {
    this.#path = path;
    this.#page = pageSize;
    try {
      this.#fd = openSync(path, 'r');
    } catch (e) {
      throw toPhysmemError(e, path, 'physical addresses come from /proc/self/pagemap: mount /proc');
    }
  }

  /**
   * The physical address of the byte at virtual address `vaddr` of this process.
   * @throws {PhysmemError} EFAULT when the page is not in RAM (touch it first);
   *   EPERM when the kernel hides the frame number (no CAP_SYS_ADMIN).
   */
  physOf(vaddr: bigint): bigint {
    const page = BigInt(this.#page);
    let n: number;
    try {
      n = readSync(this.#fd, this.#buf, 0, 8, Number((vaddr / page) * 8n));
    } catch (e) {
      throw toPhysmemError(e, this.#path);
    }
    if (n !== 8) throw new PhysmemError('EIO', `short read of ${n} bytes at entry of ${hex(vaddr)}`, { path: this.#path });
    const e = parsePagemapEntry(this.#buf.readBigUInt64LE(0));
    if (!e.present) {
      throw new PhysmemError('EFAULT', `virtual address ${hex(vaddr)} is not backed by RAM`, {
        path: this.#path,
        hint: 'touch the page before asking for its physical address',
      });
    }
    if (e.pfn === 0n) {
      // Since Linux 4.2 the PFN reads as 0 unless the opener has CAP_SYS_ADMIN.
      throw new PhysmemError('EPERM', 'the kernel hides physical addresses from processes without CAP_SYS_ADMIN (the frame number reads as 0)', {
        path: this.#path,
        syscall: 'read',
        hint: 'run as root (or grant CAP_SYS_ADMIN): the hugepage backend needs the real physical address of every page',
      });
    }
    return e.pfn * page + (vaddr % page);
  }

  /** Close the pagemap file. */
  close(): void {
    closeSync(this.#fd);
  }
}

/** A run of huge pages adjacent both physically and in the mapping: one range of the pool. */
export interface HugepageRun {
  /** Physical address of the first byte. */
  start: number;
  /** Bytes. */
  size: number;
  /** Offset of the first byte in the mapping. */
  offset: number;
}

/**
 * Group huge pages into runs: page `i` (at mapping offset `i * hugeSize`,
 * physical `phys[i]`) joins the run of page `i - 1` when it follows it
 * physically too. Runs are returned in ascending physical order, as the pool
 * wants its ranges.
 */
export function mergeHugepages(phys: readonly number[], hugeSize: number): HugepageRun[] {
  const runs: HugepageRun[] = [];
  let cur: HugepageRun | undefined;
  for (let i = 0; i < phys.length; i++) {
    if (cur !== undefined && phys[i] === cur.start + cur.size) {
      cur.size += hugeSize;
    } else {
      cur = { start: phys[i], size: hugeSize, offset: i * hugeSize };
      runs.push(cur);
    }
  }
  return runs.sort((a, b) => a.start - b.start);
}

/** Huge page sizes this kernel offers, in bytes, ascending (empty without hugetlb). */
export function hugePageSizes(sysfs: string = HUGEPAGES_SYSFS): number[] {
  let names: string[];
  try {
    names = readdirSync(sysfs);
  } catch {
    return [];
  }
  return names
    .map((n) => /^hugepages-(\d+)kB$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]) * 1024)
    .sort((a, b) => a - b);
}

/** The kernel's default huge page size in bytes (Hugepagesize in /proc/meminfo), or undefined. */
export function defaultHugePageSize(meminfo = '/proc/meminfo'): number | undefined {
  try {
    const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(readFileSync(meminfo, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Counts of huge pages of one size, from sysfs. */
export interface HugepageCounts {
  /** Pages in the pool (nr_hugepages). */
  total: number;
  /** Pages not in use and not promised to a mapping (free_hugepages - resv_hugepages). */
  available: number;
}

/** Counts for huge pages of `size` bytes; zeros when unreadable. */
export function hugepageCounts(size: number, sysfs: string = HUGEPAGES_SYSFS): HugepageCounts {
  const dir = `${sysfs}/hugepages-${size / 1024}kB`;
  const rd = (f: string): number => {
    try {
      return Number(readFileSync(`${dir}/${f}`, 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  };
  return { total: rd('nr_hugepages'), available: Math.max(0, rd('free_hugepages') - rd('resv_hugepages')) };
}

function sizeText(bytes: number): string {
  return bytes >= 1 << 30 && bytes % (1 << 30) === 0 ? `${bytes / (1 << 30)} GiB` : bytes >= 1 << 20 && bytes % (1 << 20) === 0 ? `${bytes / (1 << 20)} MiB` : `${bytes / 1024} KiB`;
}

/** How to reserve `want` more huge pages of `size` bytes. */
function reserveHint(size: number, counts: HugepageCounts, pages: number): string {
  const target = counts.total + Math.max(1, pages - counts.available);
  const isDefault = defaultHugePageSize() === size;
  const cmd = isDefault
    ? `echo ${target} > /proc/sys/vm/nr_hugepages`
    : `echo ${target} > ${HUGEPAGES_SYSFS}/hugepages-${size / 1024}kB/nr_hugepages`;
  const boot = size >= 1 << 30 ? ` (${sizeText(size)} pages are best reserved at boot: hugepagesz=1G hugepages=${pages} on the kernel command line)` : ` (or hugepages=${target} on the kernel command line)`;
  return `reserve huge pages as root: ${cmd}${boot}`;
}

/**
 * Check that `hugeSize` is a huge page size this system offers.
 * @param page - the base page size in bytes.
 * @returns `hugeSize`.
 * @throws {PhysmemError} EINVAL (not a power of two above `page`), ENOTSUP (no such huge pages here).
 */
export function checkHugePageSize(hugeSize: unknown, page: number): number {
  if (!isPowerOfTwo(hugeSize) || hugeSize <= page) {
    throw invalidArgument(`pageSize must be a huge page size in bytes such as ${2 * 1024 * 1024} (2 MiB), got ${String(hugeSize)}`);
  }
  const sizes = hugePageSizes();
  if (!sizes.includes(hugeSize)) {
    throw new PhysmemError('ENOTSUP', `this system has no ${sizeText(hugeSize)} huge pages`, {
      path: HUGEPAGES_SYSFS,
      hint: sizes.length
        ? `sizes available: ${sizes.map(sizeText).join(', ')}`
        : 'the kernel has no hugetlb support (CONFIG_HUGETLBFS); use another backend',
    });
  }
  return hugeSize;
}

/**
 * A hugetlb memfd of `pages` pages of `hugeSize` bytes, mapped shared and
 * writable (the fd is closed again: the mapping keeps the memory).
 * @param label - the mapping's name in messages.
 * @throws {PhysmemError} ENOMEM when too few huge pages are free (the hint says how to reserve them).
 */
export function mapHugepages(name: string, pages: number, hugeSize: number, label: string): Mapping {
  let fd: number;
  try {
    fd = native().memfdCreateHuge(name, pages * hugeSize, Math.log2(hugeSize));
  } catch (e) {
    throw toPhysmemError(e, undefined, `could not create a hugetlb memfd of ${pages} x ${sizeText(hugeSize)}`);
  }
  try {
    // mmap reserves the huge pages: ENOMEM here means too few are free.
    return Mapping.map(fd, 0n, pages * hugeSize, true, label);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOMEM') {
      const counts = hugepageCounts(hugeSize);
      throw new PhysmemError('ENOMEM', `${pages} huge page(s) of ${sizeText(hugeSize)} asked, ${counts.available} free (of ${counts.total} reserved)`, {
        syscall: 'mmap',
        path: label,
        hint: reserveHint(hugeSize, counts, pages),
        cause: e,
      });
    }
    throw e;
  } finally {
    closeFile(fd); // the mapping keeps the memory alive
  }
}

/**
 * Open the hugepage backend.
 * @throws {PhysmemError} EINVAL (bad options), ENOTSUP (no huge pages of that size on this system),
 *   ENOMEM (not enough free huge pages: the hint says how to reserve them; or mlock refused),
 *   EPERM (no CAP_SYS_ADMIN, so physical addresses are hidden).
 */
export function openHugepageBackend(o: HugepageBackendOptions = {}): Backend {
  const n = native();
  const page = n.pageSize();
  const pages = o.pages ?? 1;
  if (typeof pages !== 'number' || !Number.isSafeInteger(pages) || pages <= 0) {
    throw invalidArgument(`pages must be a positive integer, got ${String(pages)}`);
  }
  const hugeSize = checkHugePageSize(o.pageSize ?? defaultHugePageSize() ?? 2 * 1024 * 1024, page);
  const total = pages * hugeSize;
  if (!Number.isSafeInteger(total)) throw invalidArgument(`pages * pageSize must stay below 2^53 bytes`);
  const busOffset = toBusOffset(o.busOffset);
  const label = `memfd:physmem-hugepage (${pages} x ${sizeText(hugeSize)})`;
  checkBoolean(o.quiesceOrphans, 'quiesceOrphans', "openPool({ backend: 'hugepage' })");
  checkPath(o.sysfsRoot, 'sysfsRoot', "openPool({ backend: 'hugepage' })");
  checkPath(o.lockDir, 'lockDir', "openPool({ backend: 'hugepage' })");
  if (o.quiesceOrphans !== false) quiesceOrphanedDevices({ sysfsRoot: o.sysfsRoot, lockDir: o.lockDir });

  const mapping = mapHugepages('physmem-hugepage', pages, hugeSize, label);

  let runs: HugepageRun[];
  try {
    runs = locate(mapping, pages, hugeSize, page); // faults the pages in, in the order it wants
    try {
      n.mlock(mapping.handle);
    } catch (e) {
      throw toPhysmemError(e, label, 'locking memory needs root or a larger RLIMIT_MEMLOCK (ulimit -l)');
    }
  } catch (e) {
    mapping.close();
    throw e;
  }

  const ranges: BackendRange[] = runs.map((r) => ({ start: r.start, size: r.size }));
  const runOf = (phys: number): HugepageRun => {
    for (const r of runs) if (phys >= r.start && phys < r.start + r.size) return r;
    throw new PhysmemError('EFAULT', `physical ${hex(phys)} is outside the huge pages of this pool`);
  };
  const largest = Math.max(...runs.map((r) => r.size));
  return {
    name: 'hugepage',
    ranges,
    busOffset,
    // x86 DMA snoops the CPU caches; elsewhere assume not (cached memory, no sync from userspace).
    coherent: process.arch === 'x64' || process.arch === 'ia32',
    view: (phys, len) => {
      const r = runOf(phys);
      return mapping.view(r.offset + (phys - r.start), len);
    },
    buffer: (id) => mapping.buffer(id)!,
    release: (id) => mapping.release(id),
    describe: () =>
      `hugepage backend: ${pages} locked huge page(s) of ${sizeText(hugeSize)} in ${runs.length} physically contiguous run(s) ` +
      `(largest ${sizeText(largest)}), physical addresses from ${PAGEMAP_PATH}`,
    close: () => mapping.close(),
  };
}

// Fault every huge page in and read where it lies. Also checks what a wrong
// address would break: each huge page must be physically contiguous and
// aligned to its size.
function locate(mapping: Mapping, pages: number, hugeSize: number, page: number): HugepageRun[] {
  const n = native();
  const base = mapping.address();
  const pm = new PagemapReader(PAGEMAP_PATH, page);
  try {
    // Fault the pages in last to first. Linux hands out free huge pages last
    // in, first out, which after a reservation usually means in descending
    // address order: faulting backwards then lays physically adjacent pages
    // out ascending in the mapping too, so they merge into one range. Where
    // the kernel does otherwise they merely stay separate ranges.
    for (let i = pages - 1; i >= 0; i--) n.write8(mapping.handle, i * hugeSize, 0); // fresh memory is zero already
    const phys: number[] = [];
    for (let i = 0; i < pages; i++) {
      const off = i * hugeSize;
      const first = pm.physOf(base + BigInt(off));
      const last = pm.physOf(base + BigInt(off + hugeSize - page));
      if (last - first !== BigInt(hugeSize - page) || first % BigInt(hugeSize) !== 0n) {
        throw new PhysmemError('EIO', `huge page ${i} is not one aligned physical block (first ${hex(first)}, last ${hex(last)})`, {
          path: PAGEMAP_PATH,
        });
      }
      if (first + BigInt(hugeSize) > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new PhysmemError('ERANGE', `huge page ${i} lies at ${hex(first)}, above the 2^53 addresses pools can hold`);
      }
      phys.push(Number(first));
    }
    return mergeHugepages(phys, hugeSize);
  } finally {
    pm.close();
  }
}
