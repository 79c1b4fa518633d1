/**
 * Memory-mapped device registers: exact-width loads and stores on a mapped
 * PCI BAR.
 * @module
 */
import { PhysmemError } from '../errors.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { native, type NativeAddon } from '../native.js';
import { hex } from '../internal/validate.js';

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);

/**
 * The exact-width accessors an {@link Mmio} calls, with the addon's
 * signatures: the addon itself for a mapped file, or another implementation
 * (a register model in physmem/testing). `handle` is the addon's mapping
 * handle; other implementations may ignore it. Plain names are ordered like
 * Linux's readl/writel, `*Relaxed` like readl_relaxed/writel_relaxed.
 * @internal
 */
export type MmioAccessors = Pick<
  NativeAddon,
  | 'read8' | 'read16' | 'read32' | 'read64' | 'write8' | 'write16' | 'write32' | 'write64'
  | 'read8Relaxed' | 'read16Relaxed' | 'read32Relaxed' | 'read64Relaxed'
  | 'write8Relaxed' | 'write16Relaxed' | 'write32Relaxed' | 'write64Relaxed'
>;

/** Fields every kind of {@link MmioSource} has. @internal */
interface MmioSourceCommon {
  /** Bytes the BAR spans. */
  size: number;
  /** BAR number, for messages. */
  bar: number;
  /** Bus address of the BAR. */
  phys: bigint;
}

/** A BAR mapped from a file: sysfs `resource<n>` (or `resource<n>_wc`). @internal */
export interface MmioFileSource extends MmioSourceCommon {
  kind?: 'file';
  /** The `resource<n>` (or `resource<n>_wc`) file. */
  path: string;
  /** True when `path` is the write-combining `resource<n>_wc`. */
  writeCombining: boolean;
  /** Appended to open/mmap errors: what to do. */
  hint: (code: string) => string | undefined;
}

/** A BAR served by functions (a register model in physmem/testing). @internal */
export interface MmioHandlerSource extends MmioSourceCommon {
  kind: 'handlers';
  /** What `mmio.path` shows, e.g. `fake:0000:00:04.0/resource0`. */
  path: string;
  /** Called for each access, after the same offset, width and value checks as a mapped BAR. */
  accessors: MmioAccessors;
  /** Called once by `close()`. */
  onClose?: () => void;
}

/**
 * A BAR of a VFIO device (physmem/vfio): the region at `offset` of the device
 * fd `fd` (which the caller keeps open). Only the `mmap` areas are mapped;
 * every other byte (the MSI-X table, a region VFIO will not map) is a hole
 * reached by one pread/pwrite of the access width inside the same call.
 * @internal
 */
export interface MmioVfioSource extends MmioSourceCommon {
  kind: 'vfio';
  /** What `mmio.path` shows, e.g. `/dev/vfio/4 (0000:00:04.0 BAR 0)`. */
  path: string;
  fd: number;
  offset: number;
  /** Areas VFIO lets us mmap (offsets within the BAR, page-aligned). */
  mmap: readonly { offset: number; size: number }[];
}

/**
 * What {@link Mmio} is built from; each kind supplies {@link MmioAccessors}
 * and a handle, and Mmio does every check itself, so a new kind (e.g. a VFIO
 * region) adds a case to the constructor only.
 * @internal
 */
export type MmioSource = MmioFileSource | MmioHandlerSource | MmioVfioSource;

/**
 * A memory BAR: exact-width register access. Every `readN`/`writeN` is
 * exactly one load or store of that width (devices such as QEMU's edu ignore
 * or misread other widths), at an offset that must be an integer, a multiple
 * of the width, and inside the BAR. Values are little-endian as the device
 * sees them (x86 and arm64 are little-endian: no swapping).
 *
 * Ordering, as Linux's accessors (docs/ordering.md):
 * - `writeN` is `writel`: stores to DMA memory made before it reach memory
 *   before the device sees the register store (a write barrier inside the same
 *   native call), so "fill the descriptor, then `write32(doorbell)`" is correct
 *   on every CPU;
 * - `readN` is `readl`: loads after it (e.g. of a buffer the device filled)
 *   are not satisfied before it;
 * - `writeNRelaxed` / `readNRelaxed` are `writel_relaxed` / `readl_relaxed`:
 *   ordered only against other accesses to the same device. Use them for
 *   register writes that do not hand memory to the device, or put a
 *   `dmaWmb()` before the doorbell.
 *
 * Get one from `PciDevice.mapBar(n)` (or `FakePciDevice.mapBar(n)` in tests).
 * No JS object is allocated per access except the bigint that `read64` returns.
 */
export class Mmio {
  /** Size of the BAR in bytes. */
  readonly size: number;
  /** BAR number (0-5). */
  readonly bar: number;
  /** Bus (physical) address of the BAR's first byte. */
  readonly phys: bigint;
  /** What is mapped: the sysfs file (`.../resource0` or `.../resource0_wc`), or a fake device's label. */
  readonly path: string;
  /** True when mapped write-combining (`resource<n>_wc`); false: uncached. */
  readonly writeCombining: boolean;
  readonly #n: MmioAccessors;
  readonly #close: () => void;
  #h: number;

  /** @internal Use `PciDevice.mapBar()`. A file source is opened O_RDWR | O_SYNC and mapped whole. */
  constructor(src: MmioSource) {
    this.size = src.size;
    this.bar = src.bar;
    this.phys = src.phys;
    this.path = src.path;
    if (src.kind === 'handlers') {
      this.#n = src.accessors;
      this.#h = 1; // any non-zero value: open
      this.writeCombining = false;
      this.#close = src.onClose ?? (() => {});
      return;
    }
    if (src.kind === 'vfio') {
      // Reserve the whole BAR, map the areas VFIO allows, serve the rest by pread/pwrite.
      const mapping = Mapping.reserve(Math.max(src.size, 1), true, src.path);
      const holes: number[] = [];
      let at = 0;
      try {
        for (const a of [...src.mmap].sort((x, y) => x.offset - y.offset)) {
          mapping.mapInto(a.offset, src.fd, BigInt(src.offset + a.offset), a.size);
          if (a.offset > at) holes.push(at, a.offset);
          at = a.offset + a.size;
        }
      } catch (e) {
        mapping.close();
        throw e;
      }
      if (at < src.size) holes.push(at, src.size);
      this.#n = holes.length === 0 ? native() : holeAccessors(native(), src.fd, src.offset, holes);
      this.#h = mapping.handle;
      this.writeCombining = false;
      this.#close = () => mapping.close();
      return;
    }
    this.#n = native();
    const fd = openFile(src.path, true, true, src.hint);
    let mapping: Mapping;
    try {
      mapping = Mapping.map(fd, 0n, src.size, true, src.path, src.hint);
    } finally {
      closeFile(fd); // the mapping stays valid
    }
    this.#h = mapping.handle;
    this.writeCombining = src.writeCombining;
    this.#close = () => mapping.close();
  }

  /** True once {@link Mmio.close} ran (or the device was closed). */
  get closed(): boolean {
    return this.#h === 0;
  }

  /**
   * One 8-bit load, then a read barrier (Linux's `readb`).
   * @param offset - byte offset into the BAR, an integer in [0, size).
   * @returns the byte, 0-255.
   * @throws {PhysmemError} EINVAL (not an integer), ERANGE (outside the BAR), EBADF (closed).
   */
  read8(offset: number): number {
    return this.#n.read8(this.#at('read8', offset, 1), offset);
  }

  /**
   * One 16-bit load, then a read barrier (Linux's `readw`).
   * @param offset - byte offset, a multiple of 2 inside the BAR.
   * @returns 0-65535.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read16(offset: number): number {
    return this.#n.read16(this.#at('read16', offset, 2), offset);
  }

  /**
   * One 32-bit load, then a read barrier (Linux's `readl`): loads after it,
   * e.g. of a buffer the device says it filled, are not satisfied before it.
   * @param offset - byte offset, a multiple of 4 inside the BAR.
   * @returns an unsigned number, 0 to 2^32 - 1.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read32(offset: number): number {
    return this.#n.read32(this.#at('read32', offset, 4), offset);
  }

  /**
   * One 64-bit load (a single 8-byte access, not two 32-bit ones), then a read barrier (Linux's `readq`).
   * @param offset - byte offset, a multiple of 8 inside the BAR.
   * @returns an unsigned bigint.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read64(offset: number): bigint {
    return this.#n.read64(this.#at('read64', offset, 8), offset);
  }

  /**
   * A write barrier, then one 8-bit store (Linux's `writeb`): every
   * store to DMA memory made before this call is visible to the device
   * before this register store.
   * @param offset - byte offset inside the BAR.
   * @param value - an integer in [0, 255]; -128 to -1 is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write8(offset: number, value: number): void {
    this.#n.write8(this.#at('write8', offset, 1), offset, u8('write8', value));
  }

  /**
   * A write barrier, then one 16-bit store (Linux's `writew`): every
   * store to DMA memory made before this call is visible to the device
   * before this register store.
   * @param offset - byte offset, a multiple of 2 inside the BAR.
   * @param value - an integer in [0, 65535]; -32768 to -1 is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write16(offset: number, value: number): void {
    this.#n.write16(this.#at('write16', offset, 2), offset, u16('write16', value));
  }

  /**
   * A write barrier, then one 32-bit store (Linux's `writel`): every
   * store to DMA memory made before this call is visible to the device
   * before this register store.
   * @param offset - byte offset, a multiple of 4 inside the BAR.
   * @param value - an integer in [0, 2^32); a negative int32 (what `~x` and `x | y`
   *   give in JS) is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write32(offset: number, value: number): void {
    this.#n.write32(this.#at('write32', offset, 4), offset, u32('write32', value));
  }

  /**
   * A write barrier, then one 64-bit store (a single 8-byte access) (Linux's `writeq`): every
   * store to DMA memory made before this call is visible to the device
   * before this register store.
   * @param offset - byte offset, a multiple of 8 inside the BAR.
   * @param value - a bigint in [0, 2^64); [-2^63, 0) is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write64(offset: number, value: bigint): void {
    this.#n.write64(this.#at('write64', offset, 8), offset, u64('write64', value));
  }

  /**
   * One 8-bit load without a barrier (Linux's `readb_relaxed`): later loads of
   * DMA memory may be satisfied before it. Same checks and result as {@link Mmio.read8}.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  read8Relaxed(offset: number): number {
    return this.#n.read8Relaxed(this.#at('read8Relaxed', offset, 1), offset);
  }

  /**
   * One 16-bit load without a barrier (Linux's `readw_relaxed`): later loads of
   * DMA memory may be satisfied before it. Same checks and result as {@link Mmio.read16}.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  read16Relaxed(offset: number): number {
    return this.#n.read16Relaxed(this.#at('read16Relaxed', offset, 2), offset);
  }

  /**
   * One 32-bit load without a barrier (Linux's `readl_relaxed`): later loads of
   * DMA memory may be satisfied before it. Same checks and result as {@link Mmio.read32}.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  read32Relaxed(offset: number): number {
    return this.#n.read32Relaxed(this.#at('read32Relaxed', offset, 4), offset);
  }

  /**
   * One 64-bit load without a barrier (Linux's `readq_relaxed`): later loads of
   * DMA memory may be satisfied before it. Same checks and result as {@link Mmio.read64}.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  read64Relaxed(offset: number): bigint {
    return this.#n.read64Relaxed(this.#at('read64Relaxed', offset, 8), offset);
  }

  /**
   * One 8-bit store without a barrier (Linux's `writeb_relaxed`): it may
   * reach the device before earlier stores to DMA memory. Same checks as
   * {@link Mmio.write8}. For a doorbell, call `dmaWmb()` first.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  write8Relaxed(offset: number, value: number): void {
    this.#n.write8Relaxed(this.#at('write8Relaxed', offset, 1), offset, u8('write8Relaxed', value));
  }

  /**
   * One 16-bit store without a barrier (Linux's `writew_relaxed`): it may
   * reach the device before earlier stores to DMA memory. Same checks as
   * {@link Mmio.write16}. For a doorbell, call `dmaWmb()` first.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  write16Relaxed(offset: number, value: number): void {
    this.#n.write16Relaxed(this.#at('write16Relaxed', offset, 2), offset, u16('write16Relaxed', value));
  }

  /**
   * One 32-bit store without a barrier (Linux's `writel_relaxed`): it may
   * reach the device before earlier stores to DMA memory. Same checks as
   * {@link Mmio.write32}. For a doorbell, call `dmaWmb()` first.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  write32Relaxed(offset: number, value: number): void {
    this.#n.write32Relaxed(this.#at('write32Relaxed', offset, 4), offset, u32('write32Relaxed', value));
  }

  /**
   * One 64-bit store without a barrier (Linux's `writeq_relaxed`): it may
   * reach the device before earlier stores to DMA memory. Same checks as
   * {@link Mmio.write64}. For a doorbell, call `dmaWmb()` first.
   * @throws {PhysmemError} EINVAL, ERANGE, EBADF.
   */
  write64Relaxed(offset: number, value: bigint): void {
    this.#n.write64Relaxed(this.#at('write64Relaxed', offset, 8), offset, u64('write64Relaxed', value));
  }

  /** Unmap the BAR; later accesses throw EBADF. Idempotent. */
  close(): void {
    if (this.#h === 0) return;
    this.#h = 0;
    this.#close();
  }

  /** Alias of {@link Mmio.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // The handle when the access is valid (inlined by V8: no cost over checking in place).
  #at(op: string, offset: number, width: number): number {
    if (this.#h === 0 || offset % width !== 0 || !(offset >= 0 && offset <= this.size - width)) throw this.#bad(op, offset, width);
    return this.#h;
  }

  // Off the hot path: say exactly what is wrong with an access.
  #bad(op: string, offset: unknown, width: number): PhysmemError {
    const where = `${op} at ${describeOffset(offset)} of BAR ${this.bar}`;
    if (this.#h === 0) return new PhysmemError('EBADF', `${where}: the mapping is closed`, { path: this.path, hint: 'map the BAR again with mapBar()' });
    if (typeof offset !== 'number' || !Number.isInteger(offset)) {
      return new PhysmemError('EINVAL', `${where}: the offset must be an integer number of bytes`, { path: this.path });
    }
    if (offset % width !== 0) {
      return new PhysmemError('EINVAL', `${where}: the offset must be a multiple of ${width} (one aligned ${width * 8}-bit access)`, { path: this.path });
    }
    return new PhysmemError('ERANGE', `${where}: [${describeOffset(offset)}, +${width}) is outside the BAR of ${this.size} bytes`, { path: this.path });
  }
}

function describeOffset(offset: unknown): string {
  return typeof offset === 'number' && Number.isInteger(offset) && offset >= 0 ? hex(offset) : String(offset);
}

// Store values: unsigned of the width, or its two's complement from a negative of the width.
function u8(op: string, value: number): number {
  if (value !== (value & 0xff) && value !== (value << 24) >> 24) throw badValue(op, value, '[-128, 255]');
  return value & 0xff;
}
function u16(op: string, value: number): number {
  if (value !== (value & 0xffff) && value !== (value << 16) >> 16) throw badValue(op, value, '[-32768, 65535]');
  return value & 0xffff;
}
function u32(op: string, value: number): number {
  if (value !== value >>> 0 && value !== (value | 0)) throw badValue(op, value, '[-2^31, 2^32)');
  return value >>> 0;
}
function u64(op: string, value: bigint): bigint {
  if (typeof value !== 'bigint' || value > MAX_U64 || value < MIN_I64) throw badValue(op, value, 'a bigint in [-2^63, 2^64)');
  return value < 0n ? BigInt.asUintN(64, value) : value;
}

function badValue(op: string, value: unknown, range: string): PhysmemError {
  return new PhysmemError('EINVAL', `${op}: value ${String(value)} is not an integer in ${range}`);
}

/**
 * Accessors for a VFIO BAR with holes: an access inside a hole (`holes` =
 * [start0, end0, start1, end1, ...], half-open) is one pread/pwrite of its
 * width at `base + offset` of the device fd, anything else the mapped access.
 * The system call orders like the barriered accessors.
 */
function holeAccessors(n: NativeAddon, fd: number, base: number, holes: readonly number[]): MmioAccessors {
  const inHole = (o: number, w: number): boolean => {
    for (let i = 0; i < holes.length; i += 2) if (o < holes[i + 1] && o + w > holes[i]) return true;
    return false;
  };
  type R = (h: number, o: number) => number;
  type W = (h: number, o: number, v: number) => void;
  const rd = (w: 1 | 2 | 4, mapped: R): R => (h, o) => (inHole(o, w) ? n.pread(fd, base + o, w) : mapped(h, o));
  const wr = (w: 1 | 2 | 4, mapped: W): W => (h, o, v) => (inHole(o, w) ? n.pwrite(fd, base + o, w, v) : mapped(h, o, v));
  const rd64 = (mapped: (h: number, o: number) => bigint) => (h: number, o: number): bigint => (inHole(o, 8) ? n.pread64(fd, base + o) : mapped(h, o));
  const wr64 = (mapped: (h: number, o: number, v: bigint) => void) => (h: number, o: number, v: bigint): void =>
    inHole(o, 8) ? n.pwrite64(fd, base + o, v) : mapped(h, o, v);
  return {
    read8: rd(1, (h, o) => n.read8(h, o)),
    read16: rd(2, (h, o) => n.read16(h, o)),
    read32: rd(4, (h, o) => n.read32(h, o)),
    read64: rd64((h, o) => n.read64(h, o)),
    write8: wr(1, (h, o, v) => n.write8(h, o, v)),
    write16: wr(2, (h, o, v) => n.write16(h, o, v)),
    write32: wr(4, (h, o, v) => n.write32(h, o, v)),
    write64: wr64((h, o, v) => n.write64(h, o, v)),
    read8Relaxed: rd(1, (h, o) => n.read8Relaxed(h, o)),
    read16Relaxed: rd(2, (h, o) => n.read16Relaxed(h, o)),
    read32Relaxed: rd(4, (h, o) => n.read32Relaxed(h, o)),
    read64Relaxed: rd64((h, o) => n.read64Relaxed(h, o)),
    write8Relaxed: wr(1, (h, o, v) => n.write8Relaxed(h, o, v)),
    write16Relaxed: wr(2, (h, o, v) => n.write16Relaxed(h, o, v)),
    write32Relaxed: wr(4, (h, o, v) => n.write32Relaxed(h, o, v)),
    write64Relaxed: wr64((h, o, v) => n.write64Relaxed(h, o, v)),
  };
}
