/**
 * A VFIO container: one IOMMU address space (IOVAs) shared by the devices of
 * every group attached to it. Memory becomes reachable by those devices only
 * where it is mapped with {@link VfioContainer.mapDma}; everything else faults
 * in the IOMMU instead of reaching RAM.
 *
 * This is the VFIO type1 interface (`/dev/vfio/vfio`), the one Debian's 6.1
 * and 6.12 kernels have. An iommufd path (`/dev/iommu`, IOAS) would be a
 * second class with the same surface (attach, ranges, map, unmap, close),
 * which is all pools and devices use.
 * @module
 */
import { readFileSync } from 'node:fs';
import { PhysmemError, invalidArgument } from '../errors.js';
import { openFile, closeFile } from '../mapping.js';
import { native, toPhysmemError } from '../native.js';
import { formatSize } from '../cli/format.js';
import { checkBoolean, checkPath, hex, optionNames, optionsChecker } from '../internal/validate.js';

/** A range of IOVAs, `end` inclusive (as the kernel reports them). */
export interface IovaRange {
  /** First IOVA. */
  start: bigint;
  /** Last IOVA, inclusive. */
  end: bigint;
}

/** Which way devices may access a DMA mapping. Default: both. */
export interface DmaAccess {
  /** Devices may read the memory (RAM to device). Default true. */
  read?: boolean;
  /** Devices may write the memory (device to RAM). Default true. */
  write?: boolean;
}

const checkDmaAccess = optionsChecker('VfioContainer.mapDma() access', optionNames<DmaAccess>({ read: true, write: true }));

/** Options of {@link VfioContainer.open}. */
export interface VfioContainerOptions {
  /** The VFIO container device. Default `/dev/vfio/vfio`. */
  path?: string;
}

const checkOpenOptions = optionsChecker('VfioContainer.open()', optionNames<VfioContainerOptions>({ path: true }));

/** The VFIO API version this code speaks (VFIO_API_VERSION; unchanged since Linux 3.6). */
export const VFIO_API_VERSION = 0;
/** VFIO_TYPE1_IOMMU. */
export const VFIO_TYPE1_IOMMU = 1;
/** VFIO_TYPE1v2_IOMMU: unmaps only whole mappings, which is what pools do anyway. */
export const VFIO_TYPE1V2_IOMMU = 3;
/** Where vfio_iommu_type1's module parameters are (dma_entry_limit, allow_unsafe_interrupts). */
export const TYPE1_PARAMETERS = '/sys/module/vfio_iommu_type1/parameters';

/**
 * IOVA ranges assumed when the kernel does not report them (before Linux 5.4):
 * a 39-bit address space (the narrowest Intel VT-d offers), without the x86
 * MSI window 0xfee00000-0xfeefffff.
 */
export const FALLBACK_IOVA_RANGES: readonly IovaRange[] = Object.freeze([
  { start: 0n, end: 0xfedf_ffffn },
  { start: 0xfef0_0000n, end: (1n << 39n) - 1n },
]);

/** Something closed with its container (a pool mapped into it). */
export interface ContainerDependent {
  /** Unmap from the container and release; idempotent. */
  close(): void;
}

/**
 * An open VFIO container. Create with {@link VfioContainer.open}; attach groups
 * with {@link VfioContainer.attachGroup} (VfioDevice.open does); map memory
 * with pools (`openPoolSync({ backend: 'vfio', device })`) or
 * {@link VfioContainer.mapDma}.
 */
export class VfioContainer implements Disposable {
  readonly #path: string;
  #fd: number;
  #type: 'type1v2' | 'type1' | undefined;
  #pageSizes = 0n;
  #ranges: readonly IovaRange[] = [];
  #rangesReported = false;
  readonly #groups: string[] = [];
  readonly #mapped = new Map<bigint, number>(); // iova -> length, for close and messages
  readonly #dependents = new Set<ContainerDependent>();

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /**
   * Open `/dev/vfio/vfio`, check the API version and that a type1 IOMMU is offered.
   * @throws {PhysmemError} ENOENT (vfio not loaded: the hint says which modules), EACCES,
   *   ENOTSUP (another API version, or no type1 IOMMU: no IOMMU enabled).
   */
  static open(options: VfioContainerOptions = {}): VfioContainer {
    checkOpenOptions(options);
    checkPath(options.path, 'path', 'VfioContainer.open()');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    const path = options.path ?? '/dev/vfio/vfio';
    if (typeof path !== 'string' || path === '') throw invalidArgument(`path must be a non-empty string, got ${String(path)}`);
    const fd = openFile(path, true, false, (code) =>
      code === 'ENOENT'
        ? 'load the VFIO modules as root: modprobe vfio-pci (it pulls in vfio and vfio_iommu_type1), and boot with intel_iommu=on or amd_iommu=on'
        : code === 'EACCES'
          ? `${path} is normally mode 0666; ask an administrator (the device's own /dev/vfio/<group> file is what needs granting)`
          : undefined,
    );
    const n = native();
    try {
      const version = n.vfioContainerApiVersion(fd);
      if (version !== VFIO_API_VERSION) {
        throw new PhysmemError('ENOTSUP', `VFIO API version ${version}, this code speaks ${VFIO_API_VERSION}`, { path, hint: 'update physmem' });
      }
      const v2 = n.vfioContainerCheckExtension(fd, VFIO_TYPE1V2_IOMMU) > 0;
      const v1 = v2 || n.vfioContainerCheckExtension(fd, VFIO_TYPE1_IOMMU) > 0;
      if (!v1) {
        throw new PhysmemError('ENOTSUP', 'the VFIO container offers no type1 IOMMU', {
          path,
          hint: 'load vfio_iommu_type1 (modprobe vfio_iommu_type1) and boot with an IOMMU enabled (intel_iommu=on or amd_iommu=on)',
        });
      }
      return new VfioContainer(fd, path);
    } catch (e) {
      closeFile(fd);
      throw toPhysmemError(e, path);
    }
  }

  /** The container's file descriptor. @throws {PhysmemError} EBADF after close. */
  get fd(): number {
    if (this.#fd < 0) throw this.#closedError('fd');
    return this.#fd;
  }

  /** True once {@link VfioContainer.close} ran. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The IOMMU model set by the first {@link VfioContainer.attachGroup}; undefined before. */
  get iommuType(): 'type1v2' | 'type1' | undefined {
    return this.#type;
  }

  /** Labels of the groups attached, in order. */
  get groups(): readonly string[] {
    return this.#groups;
  }

  /**
   * Bitmask of the IOMMU page sizes (bit n: 2^n bytes; 4 KiB | 2 MiB | 1 GiB on VT-d).
   * Mappings must be aligned to the smallest.
   * @throws {PhysmemError} ENODEV before a group is attached (the IOMMU is chosen then); EBADF after close.
   */
  get pageSizes(): bigint {
    this.#requireIommu('pageSizes');
    return this.#pageSizes;
  }

  /** The smallest IOMMU page size in bytes (alignment of every mapping). @throws as {@link VfioContainer.pageSizes}. */
  get minPageSize(): number {
    const m = this.pageSizes;
    return m === 0n ? 4096 : Number(m & -m);
  }

  /**
   * IOVAs devices of this container may use: the IOMMU's address width minus
   * the reserved regions of every attached group (on x86 the MSI window
   * 0xfee00000-0xfeefffff). From VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
   * {@link FALLBACK_IOVA_RANGES} on kernels that do not report it. Shrinks
   * as groups are attached.
   * @throws {PhysmemError} ENODEV before a group is attached; EBADF after close.
   */
  get iovaRanges(): readonly IovaRange[] {
    this.#requireIommu('iovaRanges');
    return this.#ranges;
  }

  /**
   * How many more DMA mappings the kernel allows (vfio_iommu_type1's
   * dma_entry_limit, default 65535, minus those in use), read now; undefined
   * before a group is attached or where the kernel (before 5.10) does not say.
   */
  get dmaAvail(): number | undefined {
    if (this.#fd < 0 || this.#type === undefined) return undefined;
    return native().vfioIommuGetInfo(this.#fd).dmaAvail ?? undefined;
  }

  /** Bytes currently mapped with {@link VfioContainer.mapDma} through this object. */
  get mappedBytes(): number {
    let sum = 0;
    for (const len of this.#mapped.values()) sum += len;
    return sum;
  }

  /**
   * Attach an open VFIO group (`/dev/vfio/<N>`) to this container
   * (VFIO_GROUP_SET_CONTAINER). The first group also sets the IOMMU model
   * (type1v2, else type1); then the page sizes and usable IOVA ranges are read.
   * @param groupFd - the group's open fd (the caller keeps it and closes it).
   * @param groupLabel - for messages, e.g. `'/dev/vfio/3'` or `'group 3 (0000:00:03.0)'`.
   * @throws {PhysmemError} EPERM when the platform has no interrupt remapping (the hint says
   *   intremap=on / allow_unsafe_interrupts=1); EINVAL when the group is in a container already,
   *   or its reserved regions clash with IOVAs already mapped; EBADF after close.
   */
  attachGroup(groupFd: number, groupLabel: string): void {
    const fd = this.fd;
    if (!Number.isSafeInteger(groupFd) || groupFd < 0) throw invalidArgument(`groupFd must be a file descriptor, got ${String(groupFd)}`);
    if (typeof groupLabel !== 'string') throw invalidArgument('groupLabel must be a string');
    const n = native();
    try {
      n.vfioGroupSetContainer(groupFd, fd);
    } catch (e) {
      const err = toPhysmemError(e, groupLabel);
      if (err instanceof PhysmemError && err.code === 'EINVAL' && this.#mapped.size !== 0) {
        throw toPhysmemError(e, groupLabel,
          'the group is in another container already, or its reserved IOVA regions overlap memory this container has mapped: attach every group before opening pools');
      }
      throw toPhysmemError(e, groupLabel, err instanceof PhysmemError && err.code === 'EINVAL' ? 'is the group already attached to a container (another VfioDevice or program)?' : undefined);
    }
    if (this.#type === undefined) {
      let type: 'type1v2' | 'type1' = 'type1v2';
      try {
        const v2 = n.vfioContainerCheckExtension(fd, VFIO_TYPE1V2_IOMMU) > 0;
        type = v2 ? 'type1v2' : 'type1';
        n.vfioIommuSetType(fd, v2 ? VFIO_TYPE1V2_IOMMU : VFIO_TYPE1_IOMMU);
      } catch (e) {
        throw setIommuError(e, this.#path, type);
      }
      this.#type = type;
    }
    this.#groups.push(groupLabel);
    this.#readInfo();
  }

  /**
   * Map `[offset, offset + length)` of an addon mapping (lib/mapping.ts
   * `Mapping.handle`) at `iova` for the devices of this container
   * (VFIO_IOMMU_MAP_DMA). The kernel pins the pages until they are unmapped;
   * pinned pages count against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
   * @param offset - byte offset in the mapping; a multiple of {@link VfioContainer.minPageSize}.
   * @param length - bytes; a positive multiple of {@link VfioContainer.minPageSize}.
   * @param iova - where devices see the first byte; aligned likewise, inside one of {@link VfioContainer.iovaRanges}.
   * @param access - read/write for devices. Default both.
   * @throws {PhysmemError} ERANGE (IOVA outside the usable ranges: they are named), EINVAL (alignment),
   *   ENOMEM (RLIMIT_MEMLOCK: asked vs limit, and how to raise it), ENOSPC (dma_entry_limit),
   *   EEXIST (IOVAs already mapped), ENODEV (no group attached), EBADF (closed).
   */
  mapDma(mappingHandle: number, offset: number, length: number, iova: bigint, access: DmaAccess = {}): void {
    checkDmaAccess(access);
    checkBoolean(access.read, 'read', 'VfioContainer.mapDma() access');
    checkBoolean(access.write, 'write', 'VfioContainer.mapDma() access');
    const fd = this.fd;
    this.#requireIommu('mapDma');
    const page = this.minPageSize;
    if (!Number.isSafeInteger(mappingHandle) || mappingHandle <= 0) throw invalidArgument(`mappingHandle must be a mapping handle, got ${String(mappingHandle)}`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % page !== 0) throw invalidArgument(`offset must be a non-negative multiple of the IOMMU page size ${page}, got ${String(offset)}`);
    if (!Number.isSafeInteger(length) || length <= 0 || length % page !== 0) throw invalidArgument(`length must be a positive multiple of the IOMMU page size ${page}, got ${String(length)}`);
    if (typeof iova !== 'bigint' || iova < 0n || iova % BigInt(page) !== 0n) throw invalidArgument(`iova must be a bigint aligned to the IOMMU page size ${page}, got ${String(iova)}`);
    const read = access.read ?? true;
    const write = access.write ?? true;
    if (typeof read !== 'boolean' || typeof write !== 'boolean' || (!read && !write)) throw invalidArgument('access.read / access.write must be booleans, at least one true');
    const last = iova + BigInt(length) - 1n;
    if (!this.#ranges.some((r) => iova >= r.start && last <= r.end)) {
      throw new PhysmemError('ERANGE', `IOVAs ${hex(iova)}-${hex(last)} are not inside one usable IOVA range of this IOMMU (${describeRanges(this.#ranges)})`, {
        hint: 'choose IOVAs inside the ranges (the vfio pool does this itself); the IOMMU address width and reserved regions such as the MSI window 0xfee00000-0xfeefffff are excluded',
      });
    }
    try {
      native().vfioMapDma(fd, mappingHandle, offset, length, iova, read, write);
    } catch (e) {
      throw mapDmaError(e, length, iova, this.#ranges);
    }
    this.#mapped.set(iova, length);
  }

  /**
   * Unmap `[iova, iova + length)` (VFIO_IOMMU_UNMAP_DMA): when this returns the
   * IOMMU no longer translates these IOVAs (a device's DMA to them faults) and
   * the pages are unpinned. Type1v2 unmaps whole mappings only: pass exactly a
   * range given to {@link VfioContainer.mapDma}, or one covering several.
   * @throws {PhysmemError} EINVAL (the range splits a mapping, or nothing was mapped there); EBADF after close.
   */
  unmapDma(iova: bigint, length: number): void {
    const fd = this.fd;
    if (typeof iova !== 'bigint' || iova < 0n) throw invalidArgument(`iova must be a non-negative bigint, got ${String(iova)}`);
    if (!Number.isSafeInteger(length) || length <= 0) throw invalidArgument(`length must be a positive integer, got ${String(length)}`);
    let done: number;
    try {
      done = native().vfioUnmapDma(fd, iova, length);
    } catch (e) {
      throw toPhysmemError(e, this.#path, `unmap exactly the IOVA ranges that were mapped (type1v2 does not split a mapping)`);
    }
    const end = iova + BigInt(length);
    for (const [at, len] of this.#mapped) if (at >= iova && at + BigInt(len) <= end) this.#mapped.delete(at);
    if (done === 0) {
      throw new PhysmemError('EINVAL', `nothing was mapped at IOVAs ${hex(iova)}-${hex(end - 1n)}`, { path: this.#path, hint: 'unmap only what mapDma mapped' });
    }
  }

  /**
   * Close every pool on this container (they unmap their memory from the
   * IOMMU), unmap whatever else was mapped through this object, and close the
   * fd. Devices whose groups are still open keep the (now empty) address space:
   * their DMA faults. Idempotent.
   */
  close(): void {
    if (this.#fd < 0) return;
    for (const p of [...this.#dependents]) {
      try {
        p.close();
      } catch {
        /* a pool that fails to close still must not keep the container open */
      }
    }
    this.#dependents.clear();
    const n = native();
    for (const [iova, len] of this.#mapped) {
      try {
        n.vfioUnmapDma(this.#fd, iova, len);
      } catch {
        /* closing the fd below releases them anyway once no group holds the container */
      }
    }
    this.#mapped.clear();
    const fd = this.#fd;
    this.#fd = -1;
    closeFile(fd);
  }

  /** Alias of {@link VfioContainer.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal Register something to close with this container (a pool). */
  addDependent(d: ContainerDependent): void {
    void this.fd; // EBADF once closed
    this.#dependents.add(d);
  }

  /** @internal Forget a dependent that closed by itself. */
  removeDependent(d: ContainerDependent): void {
    this.#dependents.delete(d);
  }

  /** One line for messages. */
  describe(): string {
    if (this.#fd < 0) return `VFIO container ${this.#path} (closed)`;
    if (this.#type === undefined) return `VFIO container ${this.#path} (no group attached yet)`;
    return `VFIO container ${this.#path}: ${this.#type} IOMMU, groups ${this.#groups.join(', ')}; IOVA ranges ${describeRanges(this.#ranges)}` +
      `${this.#rangesReported ? '' : ' (assumed: the kernel does not report them)'}; page sizes ${describePageSizes(this.#pageSizes)}`;
  }

  #readInfo(): void {
    let info;
    try {
      info = native().vfioIommuGetInfo(this.#fd);
    } catch (e) {
      throw toPhysmemError(e, this.#path);
    }
    this.#pageSizes = info.pageSizes;
    this.#rangesReported = info.iovaRanges !== null;
    this.#ranges = Object.freeze((info.iovaRanges ?? FALLBACK_IOVA_RANGES).map((r) => Object.freeze({ start: r.start, end: r.end })));
  }

  #requireIommu(what: string): void {
    if (this.#fd < 0) throw this.#closedError(what);
    if (this.#type === undefined) {
      throw new PhysmemError('ENODEV', `${what}: no group is attached to this VFIO container yet, so it has no IOMMU`, {
        path: this.#path,
        hint: 'open a device on it first (VfioDevice.open(bdf, { container })) or call attachGroup()',
      });
    }
  }

  #closedError(what: string): PhysmemError {
    return new PhysmemError('EBADF', `${what} on a closed VFIO container`, { path: this.#path, hint: 'open a new one with VfioContainer.open()' });
  }
}

/** `0x0-0xfedfffff, 0xfef00000-0x7fffffffff`. */
export function describeRanges(ranges: readonly IovaRange[]): string {
  return ranges.length === 0 ? 'none' : ranges.map((r) => `${hex(r.start)}-${hex(r.end)}`).join(', ');
}

/** `4 KiB, 2 MiB, 1 GiB` for a page size bitmask. */
export function describePageSizes(mask: bigint): string {
  const out: string[] = [];
  for (let b = 0n; b < 64n; b++) if ((mask >> b) & 1n) out.push(formatSize(Number(1n << b)));
  return out.length === 0 ? 'not reported' : out.join(', ');
}

/** RLIMIT_MEMLOCK of this process in bytes (soft limit; Infinity when unlimited), from /proc/self/limits. */
export function memlockLimit(limits = '/proc/self/limits'): number | undefined {
  try {
    const m = /^Max locked memory\s+(\S+)/m.exec(readFileSync(limits, 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Memory this process has locked or pinned now (VmLck of /proc/self/status, which VFIO pins count in), bytes. */
export function lockedBytes(status = '/proc/self/status'): number | undefined {
  try {
    const m = /^VmLck:\s+(\d+) kB/m.exec(readFileSync(status, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function readParameter(name: string): string | undefined {
  try {
    return readFileSync(`${TYPE1_PARAMETERS}/${name}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function setIommuError(e: unknown, path: string, type: string): unknown {
  const err = toPhysmemError(e, path);
  if (!(err instanceof PhysmemError) || err.code !== 'EPERM') return err;
  const unsafe = readParameter('allow_unsafe_interrupts');
  return new PhysmemError('EPERM', `VFIO refused the ${type} IOMMU: this platform has no interrupt remapping, so a device could forge MSIs`, {
    syscall: 'ioctl(VFIO_SET_IOMMU)',
    path,
    hint:
      'enable interrupt remapping (firmware setting; in QEMU -device intel-iommu,intremap=on with -machine kernel-irqchip=split), ' +
      `or accept the risk: modprobe vfio_iommu_type1 allow_unsafe_interrupts=1 (now ${unsafe ?? 'unknown'}; also writable in ${TYPE1_PARAMETERS}/allow_unsafe_interrupts)`,
    cause: e,
  });
}

/**
 * Turn a VFIO_IOMMU_MAP_DMA failure into an error naming the limit hit and the fix.
 * @internal exported for tests.
 */
export function mapDmaError(e: unknown, length: number, iova: bigint, ranges: readonly IovaRange[]): unknown {
  const err = toPhysmemError(e);
  if (!(err instanceof PhysmemError)) return err;
  const syscall = 'ioctl(VFIO_IOMMU_MAP_DMA)';
  const last = iova + BigInt(length) - 1n;
  switch (err.code) {
    case 'ENOMEM': {
      const limit = memlockLimit();
      const locked = lockedBytes();
      const limitText = limit === undefined ? 'unknown' : limit === Infinity ? 'unlimited' : formatSize(limit);
      return new PhysmemError('ENOMEM',
        `pinning ${formatSize(length)} for DMA passes RLIMIT_MEMLOCK: limit ${limitText}, already locked ${locked === undefined ? 'unknown' : formatSize(locked)}`, {
          syscall,
          hint:
            `raise the locked-memory limit to at least ${formatSize(length + (locked ?? 0))}: ulimit -l ${Math.ceil((length + (locked ?? 0)) / 1024)} in the shell, ` +
            'LimitMEMLOCK= in a systemd unit, memlock in /etc/security/limits.conf, or grant CAP_IPC_LOCK (root has it); or use a smaller pool',
          cause: e,
        });
    }
    case 'ENOSPC': {
      const limit = readParameter('dma_entry_limit');
      return new PhysmemError('ENOSPC', `the container has reached vfio_iommu_type1's dma_entry_limit (${limit ?? 'unknown'} mappings)`, {
        syscall,
        hint: `map fewer, larger ranges (one pool is one mapping), or raise the limit as root: modprobe vfio_iommu_type1 dma_entry_limit=N (or write ${TYPE1_PARAMETERS}/dma_entry_limit)`,
        cause: e,
      });
    }
    case 'EINVAL':
    case 'ERANGE':
      return new PhysmemError(err.code, `the IOMMU refused IOVAs ${hex(iova)}-${hex(last)} (${formatSize(length)})`, {
        syscall,
        hint: `usable IOVA ranges are ${describeRanges(ranges)} (the IOMMU's address width minus reserved regions); the address and size must be aligned to the IOMMU page size`,
        cause: e,
      });
    case 'EEXIST':
      return new PhysmemError('EEXIST', `IOVAs ${hex(iova)}-${hex(last)} overlap a mapping already in this container`, {
        syscall,
        hint: 'each pool needs IOVAs of its own: unmap the old mapping first, or let the vfio pool choose the IOVA',
        cause: e,
      });
    default:
      return err;
  }
}
