/**
 * Memory-mapped device registers: exact-width loads and stores on a mapped
 * PCI BAR.
 * @module
 */
import { PhysmemError } from '../errors.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { native, type NativeAddon } from '../native.js';

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);

/** What {@link Mmio} needs to know about the file it maps. @internal */
export interface MmioSource {
  /** The `resource<n>` (or `resource<n>_wc`) file. */
  path: string;
  /** Bytes to map: the BAR's size. */
  size: number;
  /** BAR number, for messages. */
  bar: number;
  /** Bus address of the BAR. */
  phys: bigint;
  /** True when `path` is the write-combining `resource<n>_wc`. */
  writeCombining: boolean;
  /** Appended to open/mmap errors: what to do. */
  hint: (code: string) => string | undefined;
  /**
   * A VFIO region instead of `path`: the BAR is at `offset` of the device
   * fd `fd` (which the caller keeps open). Only `mmap` areas are mapped;
   * every other byte (the MSI-X table, a region VFIO will not map) is a
   * hole reached by one pread/pwrite of the access width inside the same
   * `readN`/`writeN` call.
   */
  vfio?: { fd: number; offset: number; mmap: readonly { offset: number; size: number }[] };
}

/** Half-open byte ranges of a VFIO BAR served by pread/pwrite: [start0, end0, start1, end1, ...]. */
type Holes = number[];

/**
 * A mapped memory BAR. Every `readN`/`writeN` is exactly one load or store
 * of that width (devices such as QEMU's edu ignore or misread other widths),
 * at an offset that must be an integer, a multiple of the width, and inside
 * the BAR. Values are little-endian as the device sees them (x86 and arm64
 * are little-endian: no swapping).
 *
 * Get one from `PciDevice.mapBar(n)`. No JS object is allocated per access
 * except the bigint that `read64` returns.
 */
export class Mmio {
  /** Size of the BAR in bytes. */
  readonly size: number;
  /** BAR number (0-5). */
  readonly bar: number;
  /** Bus (physical) address of the BAR's first byte. */
  readonly phys: bigint;
  /** The sysfs file mapped (`.../resource0` or `.../resource0_wc`). */
  readonly path: string;
  /** True when mapped write-combining (`resource<n>_wc`); false: uncached. */
  readonly writeCombining: boolean;
  readonly #n: NativeAddon;
  readonly #mapping: Mapping;
  #h: number;
  // VFIO only: the device fd, the BAR's offset in it, and the holes; null for sysfs BARs.
  readonly #pio: { fd: number; base: number; holes: Holes } | null = null;

  /** @internal Use `PciDevice.mapBar()`. Opens the file O_RDWR | O_SYNC and maps all of it. */
  constructor(src: MmioSource) {
    this.#n = native();
    if (src.vfio !== undefined) {
      const { fd, offset, mmap } = src.vfio;
      // Reserve the whole BAR (touching an unmapped byte faults), then map
      // the areas VFIO allows; the rest is served by pread/pwrite.
      this.#mapping = Mapping.reserve(Math.max(src.size, 1), true, src.path);
      const holes: Holes = [];
      let at = 0;
      try {
        for (const a of [...mmap].sort((x, y) => x.offset - y.offset)) {
          this.#mapping.mapInto(a.offset, fd, BigInt(offset + a.offset), a.size, src.hint);
          if (a.offset > at) holes.push(at, a.offset);
          at = a.offset + a.size;
        }
      } catch (e) {
        this.#mapping.close();
        throw e;
      }
      if (at < src.size) holes.push(at, src.size);
      this.#pio = holes.length === 0 ? null : { fd, base: offset, holes };
    } else {
      const fd = openFile(src.path, true, true, src.hint);
      try {
        this.#mapping = Mapping.map(fd, 0n, src.size, true, src.path, src.hint);
      } finally {
        closeFile(fd); // the mapping stays valid
      }
    }
    this.#h = this.#mapping.handle;
    this.size = src.size;
    this.bar = src.bar;
    this.phys = src.phys;
    this.path = src.path;
    this.writeCombining = src.writeCombining;
  }

  /** True once {@link Mmio.close} ran (or the device was closed). */
  get closed(): boolean {
    return this.#h === 0;
  }

  /**
   * One 8-bit load.
   * @param offset - byte offset into the BAR, an integer in [0, size).
   * @returns the byte, 0-255.
   * @throws {PhysmemError} EINVAL (not an integer), ERANGE (outside the BAR), EBADF (closed).
   */
  read8(offset: number): number {
    if (this.#h === 0 || offset % 1 !== 0 || !(offset >= 0 && offset <= this.size - 1)) throw this.#bad('read8', offset, 1);
    if (this.#pio !== null && this.#inHole(offset, 1)) return this.#n.pread(this.#pio.fd, this.#pio.base + offset, 1);
    return this.#n.read8(this.#h, offset);
  }

  /**
   * One 16-bit load.
   * @param offset - byte offset, a multiple of 2 inside the BAR.
   * @returns 0-65535.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read16(offset: number): number {
    if (this.#h === 0 || offset % 2 !== 0 || !(offset >= 0 && offset <= this.size - 2)) throw this.#bad('read16', offset, 2);
    if (this.#pio !== null && this.#inHole(offset, 2)) return this.#n.pread(this.#pio.fd, this.#pio.base + offset, 2);
    return this.#n.read16(this.#h, offset);
  }

  /**
   * One 32-bit load.
   * @param offset - byte offset, a multiple of 4 inside the BAR.
   * @returns an unsigned number, 0 to 2^32 - 1.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read32(offset: number): number {
    if (this.#h === 0 || offset % 4 !== 0 || !(offset >= 0 && offset <= this.size - 4)) throw this.#bad('read32', offset, 4);
    if (this.#pio !== null && this.#inHole(offset, 4)) return this.#n.pread(this.#pio.fd, this.#pio.base + offset, 4);
    return this.#n.read32(this.#h, offset);
  }

  /**
   * One 64-bit load (a single 8-byte access, not two 32-bit ones).
   * @param offset - byte offset, a multiple of 8 inside the BAR.
   * @returns an unsigned bigint.
   * @throws {PhysmemError} EINVAL (not an integer or misaligned), ERANGE, EBADF.
   */
  read64(offset: number): bigint {
    if (this.#h === 0 || offset % 8 !== 0 || !(offset >= 0 && offset <= this.size - 8)) throw this.#bad('read64', offset, 8);
    if (this.#pio !== null && this.#inHole(offset, 8)) return this.#n.pread64(this.#pio.fd, this.#pio.base + offset);
    return this.#n.read64(this.#h, offset);
  }

  /**
   * One 8-bit store.
   * @param offset - byte offset inside the BAR.
   * @param value - an integer in [0, 255]; [-128, -1] is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write8(offset: number, value: number): void {
    if (this.#h === 0 || offset % 1 !== 0 || !(offset >= 0 && offset <= this.size - 1)) throw this.#bad('write8', offset, 1);
    if (value !== (value & 0xff) && value !== (value << 24) >> 24) throw badValue('write8', value, '[-128, 255]');
    if (this.#pio !== null && this.#inHole(offset, 1)) this.#n.pwrite(this.#pio.fd, this.#pio.base + offset, 1, value & 0xff);
    else this.#n.write8(this.#h, offset, value & 0xff);
  }

  /**
   * One 16-bit store.
   * @param offset - byte offset, a multiple of 2 inside the BAR.
   * @param value - an integer in [0, 65535]; [-32768, -1] is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write16(offset: number, value: number): void {
    if (this.#h === 0 || offset % 2 !== 0 || !(offset >= 0 && offset <= this.size - 2)) throw this.#bad('write16', offset, 2);
    if (value !== (value & 0xffff) && value !== (value << 16) >> 16) throw badValue('write16', value, '[-32768, 65535]');
    if (this.#pio !== null && this.#inHole(offset, 2)) this.#n.pwrite(this.#pio.fd, this.#pio.base + offset, 2, value & 0xffff);
    else this.#n.write16(this.#h, offset, value & 0xffff);
  }

  /**
   * One 32-bit store.
   * @param offset - byte offset, a multiple of 4 inside the BAR.
   * @param value - an integer in [0, 2^32); a negative int32 (what `~x` and `x | y`
   *   give in JS) is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write32(offset: number, value: number): void {
    if (this.#h === 0 || offset % 4 !== 0 || !(offset >= 0 && offset <= this.size - 4)) throw this.#bad('write32', offset, 4);
    if (value !== value >>> 0 && value !== (value | 0)) throw badValue('write32', value, '[-2^31, 2^32)');
    if (this.#pio !== null && this.#inHole(offset, 4)) this.#n.pwrite(this.#pio.fd, this.#pio.base + offset, 4, value >>> 0);
    else this.#n.write32(this.#h, offset, value >>> 0);
  }

  /**
   * One 64-bit store (a single 8-byte access).
   * @param offset - byte offset, a multiple of 8 inside the BAR.
   * @param value - a bigint in [0, 2^64); [-2^63, 0) is taken as two's complement.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  write64(offset: number, value: bigint): void {
    if (this.#h === 0 || offset % 8 !== 0 || !(offset >= 0 && offset <= this.size - 8)) throw this.#bad('write64', offset, 8);
    if (typeof value !== 'bigint' || value > MAX_U64 || value < MIN_I64) throw badValue('write64', value, 'a bigint in [-2^63, 2^64)');
    const v = value < 0n ? BigInt.asUintN(64, value) : value;
    if (this.#pio !== null && this.#inHole(offset, 8)) this.#n.pwrite64(this.#pio.fd, this.#pio.base + offset, v);
    else this.#n.write64(this.#h, offset, v);
  }

  /** Unmap the BAR; later accesses throw EBADF. Idempotent. */
  close(): void {
    if (this.#h === 0) return;
    this.#h = 0;
    this.#mapping.close();
  }

  /** Alias of {@link Mmio.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // An access is wholly inside a hole or wholly mapped: VFIO's areas and holes are page-aligned.
  #inHole(offset: number, width: number): boolean {
    const h = this.#pio!.holes;
    for (let i = 0; i < h.length; i += 2) if (offset < h[i + 1]! && offset + width > h[i]!) return true;
    return false;
  }

  // Off the hot path: say exactly what is wrong with an access.
  #bad(op: string, offset: unknown, width: number): PhysmemError {
    const where = `${op} at ${describeOffset(offset)} of BAR ${this.bar}`;
    if (this.#h === 0) return new PhysmemError('EBADF', `${where}: the mapping is closed`, { path: this.path, hint: 'map the BAR again with PciDevice.mapBar()' });
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
  return typeof offset === 'number' && Number.isInteger(offset) && offset >= 0 ? '0x' + offset.toString(16) : String(offset);
}

function badValue(op: string, value: unknown, range: string): PhysmemError {
  return new PhysmemError('EINVAL', `${op}: value ${String(value)} is not an integer in ${range}`);
}
