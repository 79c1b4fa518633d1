/**
 * The native addon's whole surface, typed in one place, and its lazy loader.
 *
 * The rest of lib/ talks to {@link NativeAddon} only; tests can inject a fake
 * with {@link setNativeAddonForTesting}. The addon is loaded on first use, not
 * at import time, so pure parts (allocator, discovery parsers) work without a
 * compiler toolchain.
 * @module
 */
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync, readdirSync } from 'node:fs';
import { PhysmemError, codeOfErrno, describeCode } from './errors.js';

/**
 * Functions exported by the addon (native/*.cc). Every failure throws an
 * Error with `code`, positive `errno` and, for a failed system call,
 * `syscall`. An argument of the wrong type, missing, not an integer or out of
 * range (NaN, infinities, negatives, 2^64) is EINVAL, never a crash or a
 * truncated value. For system call failures the addon's `code` is the C
 * library's name for the errno ("UNKNOWN" where the libc has none);
 * {@link toPhysmemError} names the code from `errno` through os.constants.errno
 * (lib/errors.ts, the one errno table) and makes a {@link PhysmemError}.
 *
 * Handles are small positive integers naming a mapping inside the addon.
 */
export interface NativeAddon {
  /** open(2) with O_CLOEXEC; `writable` selects O_RDWR, `sync` adds O_SYNC. Returns the fd. */
  open(path: string, writable: boolean, sync: boolean): number;
  /** close(2). */
  close(fd: number): void;
  /** memfd_create(2) + ftruncate(2) to `size` bytes. Returns the fd. */
  memfdCreate(name: string, size: number): number;
  /** mmap(2) MAP_SHARED of `length` bytes at file `offset` (page-aligned, 64-bit). Returns a mapping handle. */
  mmap(fd: number, offset: bigint, length: number, writable: boolean): number;
  /** Reserve `length` bytes of address space (PROT_NONE, no memory); fill it with {@link NativeAddon.mapInto}. Returns a mapping handle. */
  reserve(length: number, writable: boolean): number;
  /** mmap(2) MAP_FIXED|MAP_SHARED `length` bytes of `fd` at `fileOffset` over `[offset, offset + length)` of a reserved mapping (page-aligned). */
  mapInto(handle: number, offset: number, fd: number, fileOffset: bigint, length: number): void;
  /** munmap(2). Throws EBUSY while ArrayBuffers over the mapping are still attached. */
  munmap(handle: number): void;
  /** An external (zero-copy) ArrayBuffer over exactly `[offset, offset + length)` of the mapping; `length` > 0 (EINVAL), inside the mapping (ERANGE). */
  arrayBuffer(handle: number, offset: number, length: number): ArrayBuffer;
  /** Detach an ArrayBuffer made by `arrayBuffer` on this mapping: every view over it becomes zero-length. No-op if already detached. */
  detach(handle: number, buffer: ArrayBuffer): void;
  /** How many ArrayBuffers over the mapping are still attached. */
  attachedCount(handle: number): number;
  /** The mapping's virtual address (for /proc/self/pagemap). */
  mappingAddress(handle: number): bigint;
  /**
   * Benchmark reference only (native/floor.cc): the least a Node-API addon can
   * do to hand out an ArrayBuffer over memory it does not own. One raw
   * napi_create_external_arraybuffer over a static 4 KiB, no finalizer, no
   * arguments, no bookkeeping. bench/buffers.ts measures DmaBuffer alloc+free
   * against this and {@link NativeAddon.napiFloorDetach}.
   */
  napiFloorCreate(): ArrayBuffer;
  /** Benchmark reference only: one raw napi_detach_arraybuffer of a buffer from {@link NativeAddon.napiFloorCreate}. */
  napiFloorDetach(buffer: ArrayBuffer): void;
  // ---- exact-width MMIO access (physmem.cc) and barriers (barrier.cc) ----
  // The plain names are Linux's readl/writel: an I/O read barrier after the
  // load, an I/O write barrier before the store, inside the same call. The
  // *Relaxed ones are readl_relaxed/writel_relaxed: the access alone.
  /** One volatile 8-bit load at `offset`, then a read barrier (readb). */
  read8(handle: number, offset: number): number;
  /** One volatile 16-bit load at `offset` (2-byte aligned), then a read barrier (readw). */
  read16(handle: number, offset: number): number;
  /** One volatile 32-bit load at `offset` (4-byte aligned), then a read barrier (readl); unsigned. */
  read32(handle: number, offset: number): number;
  /** One volatile 64-bit load at `offset` (8-byte aligned), then a read barrier (readq). */
  read64(handle: number, offset: number): bigint;
  /** A write barrier, then one volatile 8-bit store (writeb). */
  write8(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 16-bit store (writew). */
  write16(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 32-bit store (writel). */
  write32(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 64-bit store (writeq). */
  write64(handle: number, offset: number, value: bigint): void;
  /** One volatile 8-bit load, no barrier (readb_relaxed). */
  read8Relaxed(handle: number, offset: number): number;
  /** One volatile 16-bit load, no barrier (readw_relaxed). */
  read16Relaxed(handle: number, offset: number): number;
  /** One volatile 32-bit load, no barrier (readl_relaxed); unsigned. */
  read32Relaxed(handle: number, offset: number): number;
  /** One volatile 64-bit load, no barrier (readq_relaxed). */
  read64Relaxed(handle: number, offset: number): bigint;
  /** One volatile 8-bit store, no barrier (writeb_relaxed). */
  write8Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 16-bit store, no barrier (writew_relaxed). */
  write16Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 32-bit store, no barrier (writel_relaxed). */
  write32Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 64-bit store, no barrier (writeq_relaxed). */
  write64Relaxed(handle: number, offset: number, value: bigint): void;
  /** Full barrier, Linux's mb(): x86 mfence, arm64 dsb sy. */
  mb(): void;
  /** Read barrier, Linux's rmb(): x86 lfence, arm64 dsb ld. */
  rmb(): void;
  /** Write barrier, Linux's wmb(): x86 sfence, arm64 dsb st. */
  wmb(): void;
  /** Read barrier for coherent DMA memory, Linux's dma_rmb(): x86 compiler-only, arm64 dmb oshld. */
  dmaRmb(): void;
  /** Write barrier for coherent DMA memory, Linux's dma_wmb(): x86 compiler-only, arm64 dmb oshst. */
  dmaWmb(): void;
  /** Drain write-combining buffers: x86 sfence, arm64 dsb st. */
  wcFlush(): void;
  /** Which barrier set the addon was built with: `'x86-64'`, `'arm64'`, or `'generic'` (full fences everywhere). */
  barrierArch(): string;
  /** The system page size in bytes. */
  pageSize(): number;
  /**
   * memfd_create(2) with MFD_HUGETLB and pages of `2 ** hugePageShift` bytes
   * (21: 2 MiB, 30: 1 GiB; EINVAL outside [16, 34]), then ftruncate(2) to
   * `size` (a positive multiple of the huge page size). Returns the fd. No
   * file is visible anywhere; the huge pages are reserved by `mmap` of it
   * (ENOMEM there when too few are free).
   */
  memfdCreateHuge(name: string, size: number, hugePageShift: number): number;
  /** mlock(2) the whole mapping (also faults it in); munmap unlocks. */
  mlock(handle: number): void;
  /**
   * Open (creating it, mode 0600) a lock file for {@link NativeAddon.lockRange}:
   * O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC. The same file (inode) returns
   * the same fd, reference counted process-wide (all worker threads), because
   * closing any fd of a file drops every POSIX lock the process holds on it.
   * Close only with {@link NativeAddon.lockFileClose}.
   * @throws ELOOP (a symlink), EACCES, ENOENT (no such directory), EPERM (not a
   *   regular file, owned by neither root nor the effective user, or writable by
   *   group or others).
   */
  lockFileOpen(path: string): number;
  /** Drop one reference from {@link NativeAddon.lockFileOpen}; the last closes the file (dropping any locks left on it). EBADF for an fd it did not return. */
  lockFileClose(fd: number): void;
  /**
   * Take a POSIX write lock (fcntl F_SETLK, F_WRLCK) on bytes `[start, start + length)`
   * of a lock file (offsets stand for memory addresses; start + length < 2^63).
   * Never waits. A range overlapping one this process already holds (any
   * worker thread) is refused too, since POSIX locks never conflict within a process.
   * @returns `null` when locked, else one conflicting lock: its holder's pid
   *   (`process.pid` for this process; -1 when not visible from here, e.g. another
   *   PID namespace), its start and length in bytes (0n: to the end of the file).
   * @throws EBADF (fd not from lockFileOpen), EINVAL (length 0 or past 2^63), ENOLCK.
   */
  lockRange(fd: number, start: bigint, length: bigint): LockConflict | null;
  /** Release exactly a range taken by {@link NativeAddon.lockRange} (EINVAL when this process does not hold it). */
  unlockRange(fd: number, start: bigint, length: bigint): void;
  /**
   * The credentials of the process at the other end of a connected Unix
   * socket `fd` (getsockopt SO_PEERCRED), as the kernel recorded them at
   * connect(2). @throws EBADF, ENOTSOCK, EINVAL (not a Unix socket).
   */
  peerCredentials(fd: number): PeerCredentials;

  // ---- VFIO device side (native/vfio_device.cc; lib/vfio/device.ts, irq.ts) ----
  /** ioctl VFIO_GROUP_GET_STATUS on an open /dev/vfio/N. */
  vfioGroupGetStatus(groupFd: number): VfioGroupStatus;
  /** ioctl VFIO_GROUP_GET_DEVICE_FD for `name` (the bdf, e.g. `0000:00:03.0`). Returns the device fd (O_CLOEXEC). */
  vfioGroupGetDeviceFd(groupFd: number, name: string): number;
  /** ioctl VFIO_DEVICE_GET_INFO. */
  vfioDeviceGetInfo(deviceFd: number): VfioDeviceInfo;
  /** ioctl VFIO_DEVICE_GET_REGION_INFO with its capability chain (sparse mmap areas, MSI-X mappable). EINVAL for an index the device lacks. */
  vfioDeviceGetRegionInfo(deviceFd: number, index: number): VfioRegionInfo;
  /** ioctl VFIO_DEVICE_GET_IRQ_INFO. */
  vfioDeviceGetIrqInfo(deviceFd: number, index: number): VfioIrqInfo;
  /** ioctl VFIO_DEVICE_RESET (EINVAL / ENOTTY where the device offers no reset). */
  vfioDeviceReset(deviceFd: number): void;
  /** VFIO_DEVICE_SET_IRQS DATA_EVENTFD | ACTION_TRIGGER: vectors `start..start+fds.length-1` signal these eventfds (-1: none). */
  vfioIrqSetEventfds(deviceFd: number, index: number, start: number, eventfds: readonly number[]): void;
  /** VFIO_DEVICE_SET_IRQS DATA_NONE | ACTION_TRIGGER, count 0: disable every vector of `index`. */
  vfioIrqDisable(deviceFd: number, index: number): void;
  /** VFIO_DEVICE_SET_IRQS DATA_NONE | ACTION_UNMASK for one vector (INTx after each delivery). */
  vfioIrqUnmask(deviceFd: number, index: number, vector: number): void;
  /** pread(2) of exactly `width` (1, 2 or 4) bytes at `offset` (< 2^53); one device access of that width. Unsigned. */
  pread(fd: number, offset: number, width: 1 | 2 | 4): number;
  /** pwrite(2) of exactly `width` bytes of `value` (unsigned, fits the width) at `offset`. */
  pwrite(fd: number, offset: number, width: 1 | 2 | 4, value: number): void;
  /** pread(2) of exactly 8 bytes. */
  pread64(fd: number, offset: number): bigint;
  /** pwrite(2) of exactly 8 bytes. */
  pwrite64(fd: number, offset: number, value: bigint): void;
  /** eventfd(2) with EFD_CLOEXEC | EFD_NONBLOCK, counter 0. Close with {@link NativeAddon.close}. */
  eventfdCreate(): number;
  /** Take an eventfd's counter (read(2) of 8 bytes); 0 when nothing is pending. */
  eventfdRead(fd: number): number;
  /** Add `value` (>= 1) to an eventfd's counter (write(2)), as the kernel does on an interrupt. */
  eventfdWrite(fd: number, value: number): void;
  /**
   * Watch an eventfd on this environment's libuv loop (uv_poll_t): when it
   * becomes readable the addon takes the counter and calls `callback(count)`.
   * The handle starts referenced (keeps the process alive); see
   * {@link NativeAddon.eventfdWatchRef}. Unwatch before closing the fd. Returns a watch id.
   */
  eventfdWatch(fd: number, callback: (count: number) => void): number;
  /** Stop a watch (the eventfd stays open). EBADF for an unknown id. */
  eventfdUnwatch(watchId: number): void;
  /** Reference (true) or unreference (false) the watch's handle: whether it keeps the event loop alive. */
  eventfdWatchRef(watchId: number, ref: boolean): void;
  // ---- end VFIO device side ----

  // ---- VFIO container and type1 IOMMU (native/vfio_iommu.cc; lib/vfio/container.ts) ----
  /** ioctl VFIO_GET_API_VERSION on a container fd (/dev/vfio/vfio); 0 (VFIO_API_VERSION) on every kernel so far. */
  vfioContainerApiVersion(fd: number): number;
  /** ioctl VFIO_CHECK_EXTENSION: > 0 when the container supports `extension` (e.g. 3, VFIO_TYPE1v2_IOMMU), else 0. */
  vfioContainerCheckExtension(fd: number, extension: number): number;
  /** ioctl VFIO_GROUP_SET_CONTAINER: attach the group `groupFd` to the container. */
  vfioGroupSetContainer(groupFd: number, containerFd: number): void;
  /** ioctl VFIO_SET_IOMMU (1: type1, 3: type1v2); needs a group attached. EPERM without interrupt remapping. */
  vfioIommuSetType(containerFd: number, type: number): void;
  /** ioctl VFIO_IOMMU_GET_INFO with its capability chain (after VFIO_SET_IOMMU). */
  vfioIommuGetInfo(containerFd: number): VfioIommuInfo;
  /**
   * ioctl VFIO_IOMMU_MAP_DMA of `[offset, offset + length)` of mapping `handle`
   * at IOVA `iova`, readable and/or writable by devices. Pins the pages
   * (charged to RLIMIT_MEMLOCK: ENOMEM past it). ENOSPC past dma_entry_limit,
   * EEXIST over an existing mapping, EINVAL for unaligned or unusable IOVAs.
   */
  vfioMapDma(containerFd: number, handle: number, offset: number, length: number, iova: bigint, read: boolean, write: boolean): void;
  /** ioctl VFIO_IOMMU_UNMAP_DMA of `[iova, iova + length)`; returns the bytes unmapped (whole mappings only). */
  vfioUnmapDma(containerFd: number, iova: bigint, length: number): number;
  // ---- end VFIO container ----
}

/** What VFIO_GROUP_GET_STATUS reports for a group. */
export interface VfioGroupStatus {
  /** Every device of the group is bound to a VFIO driver or to none. */
  viable: boolean;
  /** The group is attached to a container. */
  containerSet: boolean;
}

/** What VFIO_DEVICE_GET_INFO reports for a device. */
export interface VfioDeviceInfo {
  /** VFIO_DEVICE_FLAGS_*. */
  flags: number;
  /** Region indexes the device has (vfio-pci: 9, BARs 0-5, ROM, config, VGA). */
  numRegions: number;
  /** Interrupt indexes the device has (vfio-pci: 5, INTx, MSI, MSI-X, ERR, REQ). */
  numIrqs: number;
  /** VFIO_DEVICE_FLAGS_RESET: VFIO_DEVICE_RESET is supported. */
  reset: boolean;
  /** A vfio-pci device (region and irq indexes as VFIO_PCI_*_INDEX). */
  pci: boolean;
}

/** What VFIO_DEVICE_GET_REGION_INFO reports for one region, with its capabilities. */
export interface VfioRegionInfo {
  /** VFIO region index (vfio-pci: 0-5 BARs, 6 ROM, 7 config, 8 VGA). */
  index: number;
  /** VFIO_REGION_INFO_FLAG_*. */
  flags: number;
  /** pread allowed. */
  readable: boolean;
  /** pwrite allowed. */
  writable: boolean;
  /** The region (or the areas in `sparse`) may be mmapped. */
  mmap: boolean;
  /** Bytes (0: the region is absent, e.g. an unused BAR). */
  size: number;
  /** Offset of the region in the device fd (for pread/pwrite/mmap). */
  offset: number;
  /** Capability ids found in the chain. */
  caps: number[];
  /** VFIO_REGION_INFO_CAP_SPARSE_MMAP: only these areas (offsets within the region) may be mmapped. */
  sparse: { offset: number; size: number }[] | undefined;
  /** VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table may be mmapped too. */
  msixMappable: boolean;
}

/** What VFIO_DEVICE_GET_IRQ_INFO reports for one interrupt index. */
export interface VfioIrqInfo {
  /** VFIO irq index (vfio-pci: 0 INTx, 1 MSI, 2 MSI-X, 3 ERR, 4 REQ). */
  index: number;
  /** VFIO_IRQ_INFO_*. */
  flags: number;
  /** Vectors offered (0: none of this kind). */
  count: number;
  /** Can signal an eventfd. */
  eventfd: boolean;
  /** Can be masked and unmasked from userspace. */
  maskable: boolean;
  /** The kernel masks it on delivery (INTx): unmask after servicing. */
  automasked: boolean;
}


/** What {@link NativeAddon.vfioIommuGetInfo} reports (struct vfio_iommu_type1_info and its capabilities). */
export interface VfioIommuInfo {
  /** VFIO_IOMMU_INFO_* flags (1: page sizes valid, 2: capability chain present). */
  flags: number;
  /** Bitmask of the IOMMU page sizes (bit n set: 2^n bytes); 0n when not reported. */
  pageSizes: bigint;
  /** VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: the usable IOVA ranges (end inclusive); null when the kernel (before 5.4) does not say. */
  iovaRanges: { start: bigint; end: bigint }[] | null;
  /** VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: mappings still allowed by dma_entry_limit; null when not reported (before 5.10). */
  dmaAvail: number | null;
}

/** Who is at the other end of a Unix socket, from {@link NativeAddon.peerCredentials}. */
export interface PeerCredentials {
  /** Process id (in the daemon's PID namespace; 0 when not visible). */
  pid: number;
  /** Effective user id at connect time. */
  uid: number;
  /** Effective group id at connect time. */
  gid: number;
}

/** A lock that kept {@link NativeAddon.lockRange} from locking. */
export interface LockConflict {
  /** Pid of the holder; `process.pid` for this process; -1 when not visible (another PID namespace). */
  pid: number;
  /** First byte (address) of the holder's lock. */
  start: bigint;
  /** Length in bytes; 0n means to the end of the file. */
  length: bigint;
}

let injected: NativeAddon | undefined;
let loaded: NativeAddon | undefined;
let loadedFrom: NativeAddonSource | undefined;

/** Where the loaded addon came from; see {@link nativeAddonSource}. */
export interface NativeAddonSource {
  /** Absolute path of the `.node` file. */
  path: string;
  /** `'prebuilt'`: shipped in the package's prebuilds/ directory; `'built'`: compiled here into build/ (node-gyp). */
  kind: 'prebuilt' | 'built';
}

/** The package root (where binding.gyp lives), found from this file's location in lib/ or dist/lib/. */
export function moduleRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    dir = dirname(dir);
  }
  return dirname(dirname(fileURLToPath(import.meta.url)));
}

/**
 * The addon, loaded on first call with node-gyp-build from {@link moduleRoot}:
 * build/Release (compiled here) first, then the prebuilt binary in
 * prebuilds/<platform>-<arch>/ that matches this system.
 * @throws {PhysmemError} `ENOENT` when no binary matches, `ENOEXEC` when one was found but
 *   does not load; the message lists what was tried and how to build it.
 */
export function native(): NativeAddon {
  if (injected) return injected;
  if (loaded) return loaded;
  const root = moduleRoot();
  const require = createRequire(import.meta.url);
  let file: string | undefined;
  try {
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    file = nodeGypBuild.path(root);
    loaded = require(file) as NativeAddon;
  } catch (e) {
    throw loadError(root, file, e);
  }
  loadedFrom = { path: file, kind: file.startsWith(join(root, 'prebuilds') + sep) ? 'prebuilt' : 'built' };
  return loaded;
}

/** Which addon binary physmem loaded (prebuilt or built here); `undefined` before the first load, which is lazy (or when a test injected a fake). */
export function nativeAddonSource(): NativeAddonSource | undefined {
  return injected ? undefined : loadedFrom;
}

function listNodeFiles(dir: string): string {
  try {
    const files = readdirSync(dir).filter((f) => f.endsWith('.node'));
    return files.length ? files.join(', ') : 'no .node file';
  } catch {
    return 'no such directory';
  }
}

/** One error for every way loading fails: what was tried, what this system is, how to fix it. */
function loadError(root: string, file: string | undefined, e: unknown): PhysmemError {
  const prebuilds = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const libc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime ? 'glibc' : 'musl or unknown libc';
  const tried = [
    `  ${join(root, 'build/Release')}: ${listNodeFiles(join(root, 'build/Release'))}`,
    `  ${join(root, 'build/Debug')}: ${listNodeFiles(join(root, 'build/Debug'))}`,
    `  ${prebuilds}: ${listNodeFiles(prebuilds)}`,
  ].join('\n');
  const first = ((e as Error)?.message ?? String(e)).split('\n')[0];
  const what =
    file === undefined
      ? `no native addon physmem.node for ${process.platform}-${process.arch} (${libc}) under ${root}`
      : `the native addon ${file} did not load: ${first}`;
  return new PhysmemError(file === undefined ? 'ENOENT' : 'ENOEXEC', what, {
    hint:
      `Tried:\n${tried}\n` +
      'Prebuilt binaries ship for linux-x64 and linux-arm64 (glibc). Elsewhere build it from source: `npm rebuild physmem` ' +
      '(needs python3, make and a C++17 compiler, g++ >= 8 or clang >= 7; on Debian: apt-get install -y python3 make g++). ' +
      'physmem runs on Linux only.',
    cause: e,
  });
}

/** Replace the addon with a fake (tests only); pass `undefined` to restore the real one. */
export function setNativeAddonForTesting(fake: NativeAddon | undefined): void {
  injected = fake;
}

/**
 * Convert an error thrown by the addon into a {@link PhysmemError} with the
 * path involved and a hint; other errors pass through unchanged.
 */
export function toPhysmemError(e: unknown, path?: string, hint?: string): unknown {
  if (e instanceof PhysmemError || typeof e !== 'object' || e === null) return e;
  const err = e as { code?: unknown; errno?: unknown; syscall?: unknown; message?: string };
  if (typeof err.code !== 'string') return e;
  const code = typeof err.errno === 'number' ? codeOfErrno(err.errno) : err.code;
  if (typeof err.syscall === 'string') {
    return new PhysmemError(code, describeCode(code), { syscall: err.syscall, path, hint, cause: e });
  }
  const detail = (err.message ?? '').replace(/^[A-Z]+: /, '');
  return new PhysmemError(code, detail, { path, hint, cause: e });
}
