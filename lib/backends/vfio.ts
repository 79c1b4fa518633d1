/**
 * The vfio backend: ordinary memory made reachable by the devices of one VFIO
 * container through the IOMMU, at IOVAs this backend chooses.
 *
 * - Memory: a memfd of 4 KiB pages (default: needs no reservation and no
 *   root), or a hugetlb memfd when `pageSize` asks for 2 MiB / 1 GiB pages
 *   (fewer IOMMU page-table entries and IOTLB misses; needs huge pages
 *   reserved). Huge pages are never taken unasked: other programs (DPDK,
 *   SPDK, the hugepage backend) count on the ones an administrator reserved.
 *   Mapped MAP_SHARED, so a fork()ed child shares the pages instead of
 *   copy-on-write moving this process's data away from the pinned pages.
 *   Not mlock()ed: VFIO pins the pages itself, and mlock would charge them
 *   twice against RLIMIT_MEMLOCK.
 * - IOVAs: each container's usable ranges (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
 *   which leaves out the MSI window 0xfee00000-0xfeefffff and anything past
 *   the IOMMU's address width) go into a RangeAllocator per container, from
 *   1 MiB up: IOVA 0 and the first MiB are never mapped, so a device handed
 *   a null or truncated pointer faults instead of hitting a buffer. Pools of
 *   one container get disjoint IOVAs, low first (below 4 GiB while there is
 *   room, which suits 32-bit DMA engines).
 * - Granularity: the whole pool is one VFIO_IOMMU_MAP_DMA at open and one
 *   UNMAP_DMA at close. Allocating a buffer costs no system call, the pool
 *   uses one of the container's dma_entry_limit entries, and the IOMMU can
 *   use large pages where the memory allows. `DmaBuffer.bus` (and `phys`:
 *   the program never learns physical addresses, nor needs them) is the IOVA.
 * - Close: unmaps from the IOMMU first, then unmaps the memory. A device still
 *   doing DMA then faults (the kernel logs a DMAR fault) instead of writing
 *   into memory the kernel may give to someone else.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { RangeAllocator } from '../allocator/index.js';
import { Mapping } from '../mapping.js';
import { native } from '../native.js';
import { formatSize } from '../cli/format.js';
import { VfioContainer, describeRanges, type IovaRange } from '../vfio/container.js';
import { checkHugePageSize, mapHugepages } from './hugepage.js';
import type { Backend, BackendRange } from './types.js';
import { hex } from '../internal/validate.js';

/** What a vfio pool is opened on: a container, or a device (anything with a `.container`, e.g. VfioDevice). */
export type VfioPoolTarget = VfioContainer | { readonly container: VfioContainer };

/** Options of the vfio backend. */
export interface VfioBackendOptions {
  /** The VfioDevice (or VfioContainer) whose IOVA space the pool is mapped into. All devices of that container can reach it. */
  device: VfioPoolTarget;
  /** Bytes of memory; rounded up to `pageSize`. Default 4 MiB (fits the 8 MiB RLIMIT_MEMLOCK many distributions give users). */
  size?: number;
  /**
   * Page size of the memory in bytes: the system page size (default; a plain
   * memfd) or a huge page size such as `2 * 1024 * 1024` or `1024 * 1024 * 1024`
   * (a hugetlb memfd; the pages must be reserved: /proc/sys/vm/nr_hugepages).
   */
  pageSize?: number;
  /** IOVA of the first byte, instead of the lowest free one; aligned to `pageSize`, inside the container's usable ranges. */
  iova?: bigint | number;
}

/** IOVAs below this are never handed out: a device given a null or small bogus address faults. */
export const VFIO_IOVA_FLOOR = 0x10_0000;
/** Default size of a vfio pool: 4 MiB. */
export const VFIO_DEFAULT_SIZE = 4 * 1024 * 1024;
/** The x86 MSI window: writes there are interrupts, never memory. Kept out even if a kernel did not report it. */
export const MSI_WINDOW: IovaRange = Object.freeze({ start: 0xfee0_0000n, end: 0xfeef_ffffn });

const TWO53 = 2n ** 53n;

/**
 * The parts of `ranges` a pool may use: at or above {@link VFIO_IOVA_FLOOR},
 * below 2^53 (pools hold addresses as numbers), outside the MSI window.
 * Returned as allocator ranges (`size` in bytes), ascending.
 */
export function usableIovaRanges(ranges: readonly IovaRange[]): BackendRange[] {
  const out: BackendRange[] = [];
  const push = (start: bigint, end: bigint) => {
    const s = start < BigInt(VFIO_IOVA_FLOOR) ? BigInt(VFIO_IOVA_FLOOR) : start;
    const e = end >= TWO53 ? TWO53 - 1n : end;
    if (e >= s) out.push({ start: Number(s), size: Number(e - s + 1n) });
  };
  for (const r of [...ranges].sort((a, b) => (a.start < b.start ? -1 : 1))) {
    if (r.end < MSI_WINDOW.start || r.start > MSI_WINDOW.end) push(r.start, r.end);
    else {
      if (r.start < MSI_WINDOW.start) push(r.start, MSI_WINDOW.start - 1n);
      if (r.end > MSI_WINDOW.end) push(MSI_WINDOW.end + 1n, r.end);
    }
  }
  return out;
}

// The IOVAs handed out in one container, shared by all its pools. Rebuilt
// when the container's ranges change (a group attached later may reserve
// more), keeping the pools already there.
interface IovaSpace {
  key: string;
  alloc: RangeAllocator;
  live: Map<number, number>; // iova -> size
}
const spaces = new WeakMap<VfioContainer, IovaSpace>();

function iovaSpace(container: VfioContainer): IovaSpace {
  const ranges = container.iovaRanges;
  const key = describeRanges(ranges);
  const old = spaces.get(container);
  if (old?.key === key) return old;
  const usable = usableIovaRanges(ranges);
  if (usable.length === 0) {
    throw new PhysmemError('ENOSPC', `the container has no usable IOVAs above ${hex(VFIO_IOVA_FLOOR)} (ranges: ${key})`, {
      hint: 'the IOMMU reports no room for DMA mappings; check the group\'s reserved_regions in /sys/kernel/iommu_groups/<N>/',
    });
  }
  const space: IovaSpace = { key, alloc: new RangeAllocator(usable), live: new Map() };
  // Keep the pools already mapped. One the new ranges exclude cannot exist (the
  // kernel refuses a group whose reserved regions clash with mappings), but if
  // it did, new pools could not land there anyway.
  for (const [iova, size] of old?.live ?? []) if (space.alloc.alloc(size, { at: iova }) >= 0) space.live.set(iova, size);
  spaces.set(container, space);
  return space;
}

const nonNegative = (n: number): number | undefined => (n < 0 ? undefined : n);

/** The container behind a VfioDevice-like object or a container. @throws {PhysmemError} EINVAL otherwise. */
export function containerOf(device: unknown): VfioContainer {
  if (device instanceof VfioContainer) return device;
  if (typeof device === 'object' && device !== null) {
    const c = (device as { container?: unknown }).container;
    if (c instanceof VfioContainer) return c;
  }
  throw invalidArgument(`device must be a VfioDevice or a VfioContainer (physmem/vfio), got ${device === null ? 'null' : typeof device}`,
    "open one with VfioDevice.open('0000:00:03.0'), then openPoolSync({ backend: 'vfio', device, size })");
}

/**
 * Open a vfio backend: allocate the memory, choose its IOVAs, map it into the
 * container's IOMMU.
 * @throws {PhysmemError} EINVAL (bad options), EBADF (container closed), ENODEV (no device attached to the container),
 *   ENOTSUP / ENOMEM (huge pages missing or not free: the hint says how to reserve them), ENOSPC (no IOVAs left, or
 *   dma_entry_limit), ENOMEM from the IOMMU map (RLIMIT_MEMLOCK: the message has the numbers and the fixes), ERANGE
 *   (`iova` outside the usable ranges), EEXIST (`iova` in use).
 */
export function openVfioBackend(o: VfioBackendOptions): Backend {
  if (typeof o !== 'object' || o === null) throw invalidArgument('options must be an object');
  const container = containerOf(o.device);
  const sys = native().pageSize();
  const pageSize = o.pageSize === undefined || o.pageSize === sys ? sys : checkHugePageSize(o.pageSize, sys);
  const size = o.size ?? VFIO_DEFAULT_SIZE;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) {
    throw invalidArgument(`size must be a positive integer number of bytes, got ${String(size)}`);
  }
  const total = Math.ceil(size / pageSize) * pageSize;
  if (!Number.isSafeInteger(total)) throw invalidArgument('size must stay below 2^53 bytes');
  let at: number | undefined;
  if (o.iova !== undefined) {
    if (typeof o.iova !== 'bigint' && typeof o.iova !== 'number') throw invalidArgument(`iova must be a bigint or a number, got ${typeof o.iova}`);
    const v = BigInt(o.iova);
    if (v < 0n || v >= TWO53 || v % BigInt(pageSize) !== 0n) throw invalidArgument(`iova must be a multiple of the page size ${pageSize} below 2^53, got ${hex(v)}`);
    at = Number(v);
  }
  const minIommuPage = container.minPageSize; // EBADF / ENODEV before anything is allocated
  if (pageSize % minIommuPage !== 0) throw invalidArgument(`pageSize ${pageSize} is smaller than the IOMMU's smallest page ${minIommuPage}`);

  // IOVAs first: nothing to undo when there is no room.
  const space = iovaSpace(container);
  const iovaNum =
    at !== undefined
      ? space.alloc.alloc(total, { at })
      : nonNegative(space.alloc.alloc(total, { align: pageSize, maxAddress: 0xffff_ffff })) ?? space.alloc.alloc(total, { align: pageSize });
  if (iovaNum < 0) {
    const usable = usableIovaRanges(container.iovaRanges).map((r) => `${hex(r.start)}-${hex(r.start + r.size - 1)}`).join(', ');
    throw at !== undefined
      ? new PhysmemError(space.live.size && [...space.live].some(([s, z]) => at < s + z && s < at + total) ? 'EEXIST' : 'ERANGE',
        `IOVAs ${hex(at)}-${hex(at + total - 1)} are not free in this container (usable: ${usable})`, { hint: 'omit iova to let the pool choose' })
      : new PhysmemError('ENOSPC', `no ${formatSize(total)} of free IOVAs left in this container (usable: ${usable}; ${space.live.size} pool(s) mapped)`, {
        hint: 'close other pools on this container or ask for less',
      });
  }
  space.live.set(iovaNum, total);
  const iova = BigInt(iovaNum);
  const releaseIova = () => {
    const now = spaces.get(container) ?? space; // rebuilt if a group attached since changed the ranges
    if (now.live.delete(iovaNum)) now.alloc.free(iovaNum);
  };

  const label = pageSize === sys ? `memfd:physmem-vfio (${formatSize(total)})` : `memfd:physmem-vfio (${total / pageSize} x ${formatSize(pageSize)} huge pages)`;
  let mapping: Mapping;
  try {
    mapping = pageSize === sys
      ? Mapping.memfd('physmem-vfio', total, label, `could not create ${formatSize(total)} of memory for the vfio pool; try a smaller size`)
      : mapHugepages('physmem-vfio', total / pageSize, pageSize, label);
  } catch (e) {
    releaseIova();
    throw e;
  }
  try {
    container.mapDma(mapping.handle, 0, total, iova); // pins (faults in) every page
  } catch (e) {
    mapping.close();
    releaseIova();
    throw e;
  }

  let owner: { close(): void } | undefined;
  let closed = false;
  const self: { close(): void } = {
    close() {
      if (closed) return;
      closed = true;
      let unmapError: unknown;
      // IOMMU first: from here a device's DMA faults instead of reaching pages about to be freed.
      if (!container.closed) {
        try {
          container.unmapDma(iova, total);
        } catch (e) {
          unmapError = e; // the pages stay pinned by the kernel, so unmapping our view below is still safe
        }
      }
      mapping.close();
      releaseIova();
      container.removeDependent(owner ?? self);
      if (unmapError !== undefined) throw unmapError;
    },
  };
  container.addDependent(self);
  const ranges: BackendRange[] = [{ start: iovaNum, size: total }];
  return {
    name: 'vfio',
    ranges,
    busOffset: 0n,
    // x86 IOMMUs snoop the CPU caches for DMA; elsewhere assume not (no cache maintenance from userspace).
    coherent: process.arch === 'x64' || process.arch === 'ia32',
    view: (addr, len) => mapping.view(addr - iovaNum, len),
    buffer: (id) => mapping.buffer(id)!,
    release: (id) => mapping.release(id),
    describe: () =>
      `vfio backend: ${label} at IOVA ${hex(iovaNum)}-${hex(iovaNum + total - 1)}, one IOMMU mapping; ${container.describe()}`,
    bindOwner: (o) => {
      container.removeDependent(owner ?? self);
      owner = o;
      container.addDependent(o);
    },
    close: () => self.close(),
  };
}
