/**
 * A PCI device seen from userspace through sysfs: identity, config space,
 * enabling, bus mastering, and BAR mappings.
 * @module
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError, invalidArgument } from '../errors.js';
import { toPhysmemError } from '../native.js';
import { Mmio } from './mmio.js';
import { bindDriver, restoreDriver, unbindDriver } from './bind.js';
import {
  DEFAULT_SYSFS_ROOT,
  driverOf,
  iommuGroupOf,
  type IommuGroup,
  PCI_BAR_COUNT,
  listPciDevices,
  normalizeBdf,
  parseResourceFile,
  pciDevicesDir,
  readDeviceInfo,
  type PciDeviceInfo,
  type PciResource,
} from './sysfs.js';

/** Config-space offset of the command register (16 bits). */
export const PCI_COMMAND = 0x04;
/** Command register bit: the device responds to memory accesses. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Command register bit: the device may master the bus (do DMA). */
export const PCI_COMMAND_MASTER = 0x4;

/** Options of {@link PciDevice.open}. */
export interface PciOpenOptions {
  /** sysfs mount point. Default `'/sys'` (tests point it at a fake tree). */
  sysfsRoot?: string;
}

/** Options of {@link PciDevice.find}. */
export interface PciFindOptions extends PciOpenOptions {
  /** Vendor ID, e.g. 0x1234. */
  vendor: number;
  /** Device ID, e.g. 0x11e8. */
  device: number;
  /** Which of several matching devices, in address order. Default 0. */
  index?: number;
}

/** Options of {@link PciDevice.mapBar}. */
export interface MapBarOptions {
  /**
   * Map `resource<n>_wc` (write-combining) when the kernel offers it (prefetchable
   * BARs only); otherwise the uncached `resource<n>`. See `mmio.writeCombining`.
   * Default false: registers want uncached access.
   */
  writeCombining?: boolean;
}

function rootHint(code: string): string | undefined {
  return code === 'EACCES' || code === 'EPERM' ? 'writing PCI config space, enabling devices and mapping BARs need root: run as root, e.g. with sudo' : undefined;
}

function hex(n: number, width = 0): string {
  return '0x' + n.toString(16).padStart(width, '0');
}

/**
 * One PCI function, opened through `/sys/bus/pci/devices/<bdf>/`.
 *
 * Reading identity needs no privileges; config-space writes, `enable()` and
 * `mapBar()` need root (EACCES otherwise, with that hint). The device is not
 * claimed: unbind any kernel driver first if one is bound (`driver` getter).
 */
export class PciDevice implements PciDeviceInfo {
  /** Address, `dddd:bb:dd.f`. */
  readonly bdf: string;
  /** The device's sysfs directory. */
  readonly path: string;
  /** Vendor ID. */
  readonly vendor: number;
  /** Device ID. */
  readonly device: number;
  /** Class code, 24 bits. */
  readonly classCode: number;
  /** Revision ID. */
  readonly revision: number;
  /** Subsystem vendor ID. */
  readonly subsystemVendor: number;
  /** Subsystem device ID. */
  readonly subsystemDevice: number;
  /** The `resource` table: BARs 0-5, then ROM and windows (as the kernel lists them). */
  readonly resources: readonly PciResource[];
  /** Size of config space in bytes: 256, or 4096 for PCI Express extended config space. */
  readonly configSize: number;
  readonly #configPath: string;
  readonly #sysfsRoot: string;
  #readFd: number;
  #writeFd = -1;
  readonly #buf = Buffer.alloc(4);
  readonly #mmios = new Set<Mmio>();

  private constructor(dir: string, info: PciDeviceInfo, sysfsRoot: string) {
    this.path = dir;
    this.#sysfsRoot = sysfsRoot;
    this.bdf = info.bdf;
    this.vendor = info.vendor;
    this.device = info.device;
    this.classCode = info.classCode;
    this.revision = info.revision;
    this.subsystemVendor = info.subsystemVendor;
    this.subsystemDevice = info.subsystemDevice;
    const resourcePath = join(dir, 'resource');
    try {
      this.resources = parseResourceFile(readFileSync(resourcePath, 'utf8'));
    } catch (e) {
      throw toPhysmemError(e, resourcePath);
    }
    this.#configPath = join(dir, 'config');
    try {
      this.#readFd = openSync(this.#configPath, 'r');
    } catch (e) {
      throw toPhysmemError(e, this.#configPath, rootHint((e as { code?: string }).code ?? ''));
    }
    this.configSize = fstatSync(this.#readFd).size; // 256, or 4096 with extended config space
  }

  /**
   * Open the device at `bdf` (`'0000:00:04.0'` or `'00:04.0'`).
   * @throws {PhysmemError} EINVAL (not a PCI address), ENOENT (no such device).
   */
  static open(bdf: string, options: PciOpenOptions = {}): PciDevice {
    const canonical = normalizeBdf(bdf);
    const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
    const dir = join(pciDevicesDir(sysfsRoot), canonical);
    return new PciDevice(dir, readDeviceInfo(dir, canonical), sysfsRoot);
  }

  /**
   * Open the `index`-th device (in address order) with this vendor and device ID.
   * @throws {PhysmemError} ENOENT when there is no such device (the message lists what there is), EINVAL for bad IDs.
   * @example
   * const edu = PciDevice.find({ vendor: 0x1234, device: 0x11e8 });
   */
  static find(options: PciFindOptions): PciDevice {
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be { vendor, device }');
    const { vendor, device, index = 0 } = options;
    for (const [name, v] of [['vendor', vendor], ['device', device]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw invalidArgument(`${name} must be a 16-bit ID such as 0x1234, got ${String(v)}`);
    }
    if (!Number.isInteger(index) || index < 0) throw invalidArgument(`index must be a non-negative integer, got ${String(index)}`);
    const matches = listPciDevices({ vendor, device, sysfsRoot: options.sysfsRoot });
    if (index >= matches.length) {
      const id = `${hex(vendor, 4).slice(2)}:${hex(device, 4).slice(2)}`;
      const present = listPciDevices({ sysfsRoot: options.sysfsRoot }).map((d) => `${d.bdf} ${hex(d.vendor, 4).slice(2)}:${hex(d.device, 4).slice(2)}`);
      throw new PhysmemError(
        'ENOENT',
        matches.length === 0 ? `no PCI device ${id}` : `only ${matches.length} PCI device(s) ${id}, asked for index ${index}`,
        {
          path: pciDevicesDir(options.sysfsRoot ?? DEFAULT_SYSFS_ROOT),
          hint: present.length ? `present: ${present.join(', ')}` : 'this system shows no PCI devices',
        },
      );
    }
    return PciDevice.open(matches[index].bdf, options);
  }

  /**
   * Every PCI device matching `filter`, in address order (identity only; nothing is opened).
   * @throws {PhysmemError} when sysfs cannot be read.
   */
  static list(filter: { vendor?: number; device?: number; classCode?: number; sysfsRoot?: string } = {}): PciDeviceInfo[] {
    return listPciDevices(filter);
  }

  /** True once {@link PciDevice.close} ran. */
  get closed(): boolean {
    return this.#readFd < 0;
  }

  /** Name of the kernel driver bound to the device (`virtio-pci`, `vfio-pci`, ...), or undefined when none is. */
  get driver(): string | undefined {
    return driverOf(this.bdf, this.#sysfsRoot);
  }

  /** The device's IOMMU group and its type, or undefined when it is in none (no IOMMU on). */
  get iommuGroup(): IommuGroup | undefined {
    return iommuGroupOf(this.bdf, this.#sysfsRoot);
  }

  /**
   * Release the device from its kernel driver; see {@link unbindDriver}. Needs root.
   * @returns the driver that was bound, or undefined.
   */
  unbindDriver(): string | undefined {
    if (this.closed) throw this.#closedError('unbindDriver');
    return unbindDriver(this.bdf, { sysfsRoot: this.#sysfsRoot });
  }

  /** Bind the device to the driver `name` through `driver_override`; see {@link bindDriver}. Needs root. */
  bindDriver(name: string): void {
    if (this.closed) throw this.#closedError('bindDriver');
    bindDriver(this.bdf, name, { sysfsRoot: this.#sysfsRoot });
  }

  /**
   * Give the device back to the kernel's choice of driver; see {@link restoreDriver}. Needs root.
   * @returns the driver bound afterwards, or undefined.
   */
  restoreDriver(): string | undefined {
    if (this.closed) throw this.#closedError('restoreDriver');
    return restoreDriver(this.bdf, { sysfsRoot: this.#sysfsRoot });
  }

  // ---- config space -------------------------------------------------------

  /**
   * One byte of config space.
   * @param offset - in [0, configSize).
   * @throws {PhysmemError} EINVAL/ERANGE for a bad offset; EACCES past byte 63 without root (the kernel hides the rest).
   */
  readConfig8(offset: number): number {
    this.#configRead(offset, 1, 'readConfig8');
    return this.#buf[0];
  }

  /**
   * 16 bits of config space (little-endian), one access.
   * @param offset - a multiple of 2 in [0, configSize).
   * @throws {PhysmemError} as {@link PciDevice.readConfig8}.
   */
  readConfig16(offset: number): number {
    this.#configRead(offset, 2, 'readConfig16');
    return this.#buf.readUInt16LE(0);
  }

  /**
   * 32 bits of config space (little-endian), one access; unsigned.
   * @param offset - a multiple of 4 in [0, configSize).
   * @throws {PhysmemError} as {@link PciDevice.readConfig8}.
   */
  readConfig32(offset: number): number {
    this.#configRead(offset, 4, 'readConfig32');
    return this.#buf.readUInt32LE(0);
  }

  /**
   * Write one byte of config space. Needs root.
   * @param value - 0-255.
   * @throws {PhysmemError} EINVAL/ERANGE for a bad offset or value, EACCES without root.
   */
  writeConfig8(offset: number, value: number): void {
    this.#checkValue('writeConfig8', value, 0xff);
    this.#buf[0] = value;
    this.#configWrite(offset, 1, 'writeConfig8');
  }

  /**
   * Write 16 bits of config space, one access (so the status register next to
   * the command register is not touched). Needs root.
   * @param value - 0-65535.
   * @throws {PhysmemError} as {@link PciDevice.writeConfig8}.
   */
  writeConfig16(offset: number, value: number): void {
    this.#checkValue('writeConfig16', value, 0xffff);
    this.#buf.writeUInt16LE(value, 0);
    this.#configWrite(offset, 2, 'writeConfig16');
  }

  /**
   * Write 32 bits of config space, one access. Needs root.
   * @param value - 0 to 2^32 - 1.
   * @throws {PhysmemError} as {@link PciDevice.writeConfig8}.
   */
  writeConfig32(offset: number, value: number): void {
    this.#checkValue('writeConfig32', value, 0xffffffff);
    this.#buf.writeUInt32LE(value, 0);
    this.#configWrite(offset, 4, 'writeConfig32');
  }

  // ---- enable, bus master ------------------------------------------------

  /** True when the kernel has the device enabled (sysfs `enable` reads non-zero). */
  get enabled(): boolean {
    const p = join(this.path, 'enable');
    try {
      return readFileSync(p, 'utf8').trim() !== '0';
    } catch (e) {
      throw toPhysmemError(e, p);
    }
  }

  /**
   * Enable the device (power, memory and I/O decoding) through sysfs `enable`;
   * a no-op when already enabled, so the kernel's enable count is not raised
   * twice. Does not enable DMA: see {@link PciDevice.setBusMaster}. Needs root.
   * @throws {PhysmemError} EACCES without root.
   */
  enable(): void {
    if (!this.enabled) this.#writeEnable('1');
  }

  /** Disable the device through sysfs `enable` when enabled. Needs root. @throws {PhysmemError} EACCES without root. */
  disable(): void {
    if (this.enabled) this.#writeEnable('0');
  }

  /** True when the bus-master bit of the command register is set (the device may do DMA). */
  get busMaster(): boolean {
    return (this.readConfig16(PCI_COMMAND) & PCI_COMMAND_MASTER) !== 0;
  }

  /**
   * Allow (`true`) or forbid (`false`) the device to do DMA: the bus-master bit
   * (0x4) of the command register, read-modify-written with 16-bit accesses.
   * Needs root.
   * @throws {PhysmemError} EACCES without root, EBADF after close.
   */
  setBusMaster(on: boolean): void {
    if (typeof on !== 'boolean') throw invalidArgument(`setBusMaster takes a boolean, got ${String(on)}`);
    const cmd = this.readConfig16(PCI_COMMAND);
    const next = on ? cmd | PCI_COMMAND_MASTER : cmd & ~PCI_COMMAND_MASTER;
    if (next !== cmd) this.writeConfig16(PCI_COMMAND, next);
  }

  // ---- BARs -----------------------------------------------------------------

  /**
   * Map memory BAR `n` for register access. Closed with the device, or by `mmio.close()`.
   * @param n - BAR number, 0-5.
   * @throws {PhysmemError} EINVAL (n not 0-5), ENOENT (BAR not implemented),
   *   ENOTSUP (an I/O-port BAR: those cannot be memory-mapped), EACCES (not root), EBADF (closed).
   */
  mapBar(n: number, options: MapBarOptions = {}): Mmio {
    if (this.closed) throw this.#closedError('mapBar');
    if (!Number.isInteger(n) || n < 0 || n >= PCI_BAR_COUNT) throw invalidArgument(`BAR number must be 0-${PCI_BAR_COUNT - 1}, got ${String(n)}`);
    const res = this.resources[n];
    const file = join(this.path, `resource${n}`);
    if (res === undefined || res.kind === 'unused') {
      throw new PhysmemError('ENOENT', `BAR ${n} of ${this.bdf} is not implemented`, { path: file, hint: `implemented: ${this.#describeBars()}` });
    }
    if (res.kind === 'io') {
      throw new PhysmemError('ENOTSUP', `BAR ${n} of ${this.bdf} is an I/O-port BAR (ports ${hex(Number(res.start))}, ${res.size} bytes); only memory BARs can be mapped`, {
        path: file,
        hint: 'read and write I/O ports with pread/pwrite on the resource file (or ioperm/inb/outb in C); memory BARs of this device: ' + this.#describeBars(),
      });
    }
    if (res.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new PhysmemError('ENOTSUP', `BAR ${n} is too large to map (${res.size} bytes)`, { path: file });
    const wc = options.writeCombining === true && existsSync(file + '_wc');
    const mmio = new Mmio({
      path: wc ? file + '_wc' : file,
      size: Number(res.size),
      bar: n,
      phys: res.start,
      writeCombining: wc,
      hint: (code) => rootHint(code) ?? (code === 'ENOENT' ? `the kernel offers no ${wc ? 'resource' + n + '_wc' : 'resource' + n} file for this BAR` : undefined),
    });
    this.#mmios.add(mmio);
    return mmio;
  }

  /** Unmap every BAR mapped through this object and close config space. Leaves the device enabled. Idempotent. */
  close(): void {
    if (this.#readFd < 0) return;
    for (const m of this.#mmios) m.close();
    this.#mmios.clear();
    closeSync(this.#readFd);
    this.#readFd = -1;
    if (this.#writeFd >= 0) closeSync(this.#writeFd);
    this.#writeFd = -1;
  }

  /** Alias of {@link PciDevice.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---- internals ----------------------------------------------------------

  #checkOffset(op: string, offset: number, width: number): void {
    if (this.#readFd < 0) throw this.#closedError(op);
    if (typeof offset !== 'number' || !Number.isInteger(offset)) throw invalidArgument(`${op}: config offset must be an integer, got ${String(offset)}`);
    if (offset % width !== 0) throw invalidArgument(`${op}: config offset ${hex(offset)} must be a multiple of ${width}`);
    if (offset < 0 || offset + width > this.configSize) {
      throw new PhysmemError('ERANGE', `${op}: config offset ${String(offset)} is outside the ${this.configSize} bytes of config space`, { path: this.#configPath });
    }
  }

  #checkValue(op: string, value: number, max: number): void {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
      throw invalidArgument(`${op}: value must be an integer in [0, ${hex(max)}], got ${String(value)}`);
    }
  }

  // pread of exactly `width` bytes: the kernel's config file turns an aligned
  // read of 1, 2 or 4 bytes into one config access of that width.
  #configRead(offset: number, width: number, op: string): void {
    this.#checkOffset(op, offset, width);
    let n: number;
    try {
      n = readSync(this.#readFd, this.#buf, 0, width, offset);
    } catch (e) {
      throw toPhysmemError(e, this.#configPath);
    }
    if (n !== width) {
      // Without CAP_SYS_ADMIN the kernel shows only the first 64 bytes (a short read).
      throw new PhysmemError('EACCES', `${op} at ${hex(offset)}: the kernel returned ${n} of ${width} bytes`, {
        path: this.#configPath,
        hint: 'config space past the first 64 bytes is readable by root only: run as root',
      });
    }
  }

  #configWrite(offset: number, width: number, op: string): void {
    this.#checkOffset(op, offset, width);
    if (this.#writeFd < 0) {
      try {
        this.#writeFd = openSync(this.#configPath, 'r+');
      } catch (e) {
        throw toPhysmemError(e, this.#configPath, rootHint((e as { code?: string }).code ?? ''));
      }
    }
    let n: number;
    try {
      n = writeSync(this.#writeFd, this.#buf, 0, width, offset);
    } catch (e) {
      throw toPhysmemError(e, this.#configPath, rootHint((e as { code?: string }).code ?? ''));
    }
    if (n !== width) throw new PhysmemError('EIO', `${op} at ${hex(offset)}: the kernel took ${n} of ${width} bytes`, { path: this.#configPath });
  }

  #writeEnable(v: '0' | '1'): void {
    if (this.closed) throw this.#closedError('enable');
    const p = join(this.path, 'enable');
    try {
      writeFileSync(p, v);
    } catch (e) {
      throw toPhysmemError(e, p, rootHint((e as { code?: string }).code ?? ''));
    }
  }

  #describeBars(): string {
    const bars = this.resources.slice(0, PCI_BAR_COUNT).filter((r) => r.kind !== 'unused');
    return bars.length ? bars.map((r) => `BAR ${r.index} ${r.kind} ${r.size} bytes`).join(', ') : 'none';
  }

  #closedError(op: string): PhysmemError {
    return new PhysmemError('EBADF', `${op} on a closed PciDevice ${this.bdf}`, { hint: 'open it again with PciDevice.open() or PciDevice.find()' });
  }
}
