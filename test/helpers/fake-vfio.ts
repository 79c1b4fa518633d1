// A fake of the kernel's VFIO type1 container, for host tests where no IOMMU
// exists: the addon's real memory functions (memfd, mmap, ArrayBuffers) with
// the vfio* ioctls replaced by a model of what vfio_iommu_type1 does (checks
// alignment, usable ranges, overlaps, dma_entry_limit, RLIMIT_MEMLOCK) and a
// "device" that reads and writes memory through the fake IOMMU's table.
import { native, setNativeAddonForTesting, type NativeAddon, type VfioIommuInfo } from '../../lib/native.js';

export interface FakeVfioOptions {
  /** Offer VFIO_TYPE1v2_IOMMU (else only type1). Default true. */
  v2?: boolean;
  /** Interrupt remapping present (else VFIO_SET_IOMMU fails with EPERM). Default true. */
  intremap?: boolean;
  /** IOVA ranges reported; null: none reported (old kernel). Default: VT-d's with the MSI window cut out. */
  ranges?: { start: bigint; end: bigint }[] | null;
  /** IOMMU page size bitmask. Default 4 KiB | 2 MiB | 1 GiB. */
  pageSizes?: bigint;
  /** dma_entry_limit. Default 65535. */
  dmaEntryLimit?: number;
  /** RLIMIT_MEMLOCK in bytes for pinned pages. Default: unlimited. */
  memlock?: number;
  /** VFIO_GET_API_VERSION answer. Default 0. */
  apiVersion?: number;
}

export interface FakeDmaMapping {
  iova: bigint;
  length: number;
  handle: number;
  offset: number;
  read: boolean;
  write: boolean;
}

function errnoError(code: string, errno: number, syscall: string): Error {
  return Object.assign(new Error(`${code}: fake, ${syscall}`), { code, errno, syscall });
}

/** The fake kernel; install() puts it in place of the addon's vfio functions. */
export class FakeVfio {
  readonly options: Required<Omit<FakeVfioOptions, 'ranges'>> & { ranges: { start: bigint; end: bigint }[] | null };
  readonly mappings: FakeDmaMapping[] = [];
  readonly groups = new Map<number, number>(); // group fd -> container fd
  readonly calls: string[] = [];
  type: number | undefined;
  faults: { iova: bigint; write: boolean }[] = [];

  constructor(o: FakeVfioOptions = {}) {
    this.options = {
      v2: o.v2 ?? true,
      intremap: o.intremap ?? true,
      ranges: o.ranges === undefined ? [{ start: 0n, end: 0xfedf_ffffn }, { start: 0xfef0_0000n, end: 0x7f_ffff_ffffn }] : o.ranges,
      pageSizes: o.pageSizes ?? 0x4020_1000n,
      dmaEntryLimit: o.dmaEntryLimit ?? 65535,
      memlock: o.memlock ?? Infinity,
      apiVersion: o.apiVersion ?? 0,
    };
  }

  get pinned(): number {
    return this.mappings.reduce((s, m) => s + m.length, 0);
  }

  /** The addon with the vfio functions replaced; installed with setNativeAddonForTesting. */
  install(): NativeAddon {
    const real = native();
    const addon: NativeAddon = {
      ...real,
      vfioContainerApiVersion: () => (this.calls.push('apiVersion'), this.options.apiVersion),
      vfioContainerCheckExtension: (_fd, ext) => (ext === 3 ? Number(this.options.v2) : ext === 1 ? 1 : 0),
      vfioGroupSetContainer: (groupFd, containerFd) => {
        this.calls.push(`setContainer ${groupFd}`);
        if (this.groups.has(groupFd)) throw errnoError('EINVAL', 22, 'ioctl(VFIO_GROUP_SET_CONTAINER)');
        this.groups.set(groupFd, containerFd);
      },
      vfioIommuSetType: (_fd, type) => {
        this.calls.push(`setType ${type}`);
        if (this.groups.size === 0) throw errnoError('EINVAL', 22, 'ioctl(VFIO_SET_IOMMU)');
        if (!this.options.intremap) throw errnoError('EPERM', 1, 'ioctl(VFIO_SET_IOMMU)');
        this.type = type;
      },
      vfioIommuGetInfo: (): VfioIommuInfo => {
        if (this.type === undefined) throw errnoError('EINVAL', 22, 'ioctl(VFIO_IOMMU_GET_INFO)');
        return {
          flags: 3,
          pageSizes: this.options.pageSizes,
          iovaRanges: this.options.ranges === null ? null : this.options.ranges.map((r) => ({ ...r })),
          dmaAvail: this.options.dmaEntryLimit - this.mappings.length,
        };
      },
      vfioMapDma: (_fd, handle, offset, length, iova, read, write) => {
        this.calls.push(`map ${iova.toString(16)} ${length}`);
        real.mappingAddress(handle); // EBADF for a handle that is not a live mapping
        const sys = 'ioctl(VFIO_IOMMU_MAP_DMA)';
        if (this.type === undefined) throw errnoError('EINVAL', 22, sys);
        if (length % 4096 !== 0 || offset % 4096 !== 0 || iova % 4096n !== 0n) throw errnoError('EINVAL', 22, sys);
        const last = iova + BigInt(length) - 1n;
        const ranges = this.options.ranges ?? [{ start: 0n, end: (1n << 39n) - 1n }];
        if (!ranges.some((r) => iova >= r.start && last <= r.end)) throw errnoError('EINVAL', 22, sys);
        if (this.mappings.some((m) => iova <= m.iova + BigInt(m.length) - 1n && m.iova <= last)) throw errnoError('EEXIST', 17, sys);
        if (this.mappings.length >= this.options.dmaEntryLimit) throw errnoError('ENOSPC', 28, sys);
        if (this.pinned + length > this.options.memlock) throw errnoError('ENOMEM', 12, sys);
        this.mappings.push({ iova, length, handle, offset, read, write });
      },
      vfioUnmapDma: (_fd, iova, length) => {
        this.calls.push(`unmap ${iova.toString(16)} ${length}`);
        const end = iova + BigInt(length);
        if (this.mappings.some((m) => m.iova < end && iova < m.iova + BigInt(m.length) && (m.iova < iova || m.iova + BigInt(m.length) > end))) {
          throw errnoError('EINVAL', 22, 'ioctl(VFIO_IOMMU_UNMAP_DMA)'); // type1v2 does not split a mapping
        }
        let done = 0;
        for (let i = this.mappings.length - 1; i >= 0; i--) {
          const m = this.mappings[i];
          if (m.iova >= iova && m.iova + BigInt(m.length) <= end) {
            done += m.length;
            this.mappings.splice(i, 1);
          }
        }
        return done;
      },
    };
    setNativeAddonForTesting(addon);
    return addon;
  }

  /** Restore the real addon. */
  uninstall(): void {
    setNativeAddonForTesting(undefined);
  }

  // The mapping serving `iova`, or a recorded fault (as the IOMMU would block it).
  #translate(iova: bigint, length: number, write: boolean): { m: FakeDmaMapping; off: number } | undefined {
    const m = this.mappings.find((x) => iova >= x.iova && iova + BigInt(length) <= x.iova + BigInt(x.length));
    if (m === undefined || (write ? !m.write : !m.read)) {
      this.faults.push({ iova, write });
      return undefined;
    }
    return { m, off: m.offset + Number(iova - m.iova) };
  }

  /** A device write of `data` at `iova` through the fake IOMMU; false (and a fault recorded) when not mapped. */
  deviceWrite(iova: bigint, data: Uint8Array): boolean {
    const t = this.#translate(iova, data.length, true);
    if (!t) return false;
    const n = native();
    const ab = n.arrayBuffer(t.m.handle, t.off, data.length);
    new Uint8Array(ab).set(data);
    n.detach(t.m.handle, ab);
    return true;
  }

  /** A device read of `length` bytes at `iova`; undefined (and a fault recorded) when not mapped. */
  deviceRead(iova: bigint, length: number): Uint8Array | undefined {
    const t = this.#translate(iova, length, false);
    if (!t) return undefined;
    const n = native();
    const ab = n.arrayBuffer(t.m.handle, t.off, length);
    const out = new Uint8Array(ab).slice();
    n.detach(t.m.handle, ab);
    return out;
  }
}
