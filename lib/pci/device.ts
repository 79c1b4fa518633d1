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
import type { RegionLock } from '../locks.js';
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  describeQuiesce,
  liveOwners,
  lockDevice,
  noResetReason,
  quiesceDevice,
  type QuiesceReport,
} from './quiesce.js';
import {
  DEFAULT_SYSFS_ROOT,
  driverOf,
  iommuGroupOf,
  isTranslated,
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
import { checkBoolean, checkPath, hex, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of {@link PciDevice.open}. */
export interface PciOpenOptions {
  /** sysfs mount point. Default `'/sys'` (tests point it at a fake tree). */
  sysfsRoot?: string;
  /**
   * Take the device's exclusive lock (lib/locks.ts: `pci-<bdf>.lock` in the
   * lock directory), so no second program drives it at the same time. Default
   * true. Without root the lock is skipped when the lock directory is not
   * usable: such a process cannot drive the device anyway.
   */
  lock?: boolean;
  /** Lock directory. Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
  /**
   * Quiesce a crashed driver's leftover on open: when the device has bus
   * mastering on, no kernel driver, and no live owner (no lock holder, no
   * process with its BARs or config mapped or open), turn bus mastering off
   * and reset it where the kernel can, with a `PHYSMEM_QUIESCED` warning (see
   * {@link PciDevice.quiesced}). Default true; needs the lock and root.
   */
  quiesce?: boolean;
}

const checkOpenOptions = optionsChecker('PciDevice.open()', optionNames<PciOpenOptions>({ sysfsRoot: true, lock: true, lockDir: true, quiesce: true }));

/** Options of {@link PciDevice.close}. */
export interface PciCloseOptions {
  /**
   * Leave bus mastering as it is. Default false: close() turns it off (when no
   * kernel driver is bound), so a device cannot write into memory the program
   * gives back when it ends.
   */
  keepBusMaster?: boolean;
}

const checkCloseOptions = optionsChecker('PciDevice.close()', optionNames<PciCloseOptions>({ keepBusMaster: true }));

/** Options of {@link PciDevice.setBusMaster}. */
export interface BusMasterOptions {
  /**
   * Allow bus mastering in an IOMMU group that translates DMA (type `DMA` or
   * `DMA-FQ`), where the device sees I/O virtual addresses rather than the
   * physical addresses physmem's devmem, hugepage and udmabuf pools give.
   * Default false (EPERM). Set it only when you program IOVAs yourself.
   */
  allowTranslatedIommu?: boolean;
}

const checkBusMasterOptions = optionsChecker('PciDevice.setBusMaster()', optionNames<BusMasterOptions>({ allowTranslatedIommu: true }));

/** Options of {@link PciDevice.find}: at least one of vendor, device and classCode. */
export interface PciFindOptions extends PciOpenOptions {
  /** Vendor ID, e.g. 0x1234. */
  vendor?: number;
  /** Device ID, e.g. 0x11e8. */
  device?: number;
  /** Class code (24 bits: base class, subclass, programming interface), e.g. 0x010802 for NVMe. */
  classCode?: number;
  /** Bits of the class code to compare. Default 0xffffff; 0xffff00 ignores the programming interface, 0xff0000 matches a base class. */
  classMask?: number;
  /** Which of several matching devices, in address order. Default 0. */
  index?: number;
}

const checkFindOptions = optionsChecker('PciDevice.find()', optionNames<PciFindOptions>({ sysfsRoot: true, lock: true, lockDir: true, quiesce: true, vendor: true, device: true, classCode: true, classMask: true, index: true }));

/** Options of {@link PciDevice.mapBar}. */
export interface MapBarOptions {
  /**
   * Map `resource<n>_wc` (write-combining) when the kernel offers it (prefetchable
   * BARs only); otherwise the uncached `resource<n>`. See `mmio.writeCombining`.
   * Default false: registers want uncached access.
   */
  writeCombining?: boolean;
}

const checkMapBarOptions = optionsChecker('PciDevice.mapBar()', optionNames<MapBarOptions>({ writeCombining: true }));

function rootHint(code: string): string | undefined {
  return code === 'EACCES' || code === 'EPERM' ? 'writing PCI config space, enabling devices and mapping BARs need root: run as root, e.g. with sudo' : undefined;
}

function isRoot(): boolean {
  return (process.geteuid?.() ?? 0) === 0;
}

// Devices open in this process, closed (bus mastering off) when it exits normally.
const openDevices = new Set<PciDevice>();
process.once('exit', () => {
  for (const d of [...openDevices]) d.close();
});

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
  #lock: RegionLock | undefined;
  #setBusMasterOn = false;
  #quiesced: QuiesceReport | undefined;
  #readFd: number;
  #writeFd = -1;
  readonly #buf = Buffer.alloc(4);
  readonly #mmios = new Set<Mmio>();

  private constructor(dir: string, info: PciDeviceInfo, sysfsRoot: string, lock: RegionLock | undefined) {
    this.path = dir;
    this.#sysfsRoot = sysfsRoot;
    this.#lock = lock;
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
   * Open the device at `bdf` (`'0000:00:04.0'` or `'00:04.0'`), taking its
   * exclusive lock and quiescing it when a crashed driver left it doing DMA
   * (see {@link PciOpenOptions}).
   * @throws {PhysmemError} EINVAL (not a PCI address), ENOENT (no such device),
   *   EBUSY (another program, or another PciDevice of this one, drives it: the message names the holder),
   *   the lock directory errors of lockRegion (as root).
   */
  static open(bdf: string, options: PciOpenOptions = {}): PciDevice {
    checkOpenOptions(options);
    checkPath(options.sysfsRoot, 'sysfsRoot', 'PciDevice.open()');
    checkPath(options.lockDir, 'lockDir', 'PciDevice.open()');
    checkBoolean(options.lock, 'lock', 'PciDevice.open()');
    checkBoolean(options.quiesce, 'quiesce', 'PciDevice.open()');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    const canonical = normalizeBdf(bdf);
    const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
    const dir = join(pciDevicesDir(sysfsRoot), canonical);
    const info = readDeviceInfo(dir, canonical);
    let lock: RegionLock | undefined;
    if (options.lock !== false) {
      try {
        lock = lockDevice(canonical, { sysfsRoot, lockDir: options.lockDir });
      } catch (e) {
        // Not root and no usable lock directory: this process cannot drive the device anyway.
        if (isRoot() || (e as { code?: string }).code === 'EBUSY') throw e;
      }
    }
    let dev: PciDevice;
    try {
      dev = new PciDevice(dir, info, sysfsRoot, lock);
    } catch (e) {
      lock?.release();
      throw e;
    }
    openDevices.add(dev);
    if (lock !== undefined && options.quiesce !== false) {
      try {
        dev.#quiesceIfOrphaned();
      } catch (e) {
        dev.close({ keepBusMaster: true });
        throw e;
      }
    }
    return dev;
  }

  /**
   * What opening did to a crashed driver's leftover (bus mastering off, reset
   * or why not), or undefined when the device needed nothing.
   */
  get quiesced(): QuiesceReport | undefined {
    return this.#quiesced;
  }

  /** True while this object holds the device's exclusive lock. */
  get locked(): boolean {
    return this.#lock !== undefined && !this.#lock.released;
  }

  #quiesceIfOrphaned(): void {
    if (!isRoot() || !this.busMaster || this.driver !== undefined) return;
    // We hold the lock, so no physmem program drives it; a program without physmem shows in /proc.
    const owners = liveOwners(this.bdf, { sysfsRoot: this.#sysfsRoot, ignoreOwnFds: true });
    if (owners.length > 0) return;
    this.#quiesced = quiesceDevice(this.bdf, { sysfsRoot: this.#sysfsRoot });
    process.emitWarning(describeQuiesce(this.#quiesced, "was found with bus mastering on and no driver (a crashed driver's leftover)"), { code: 'PHYSMEM_QUIESCED' });
  }

  /**
   * Open the `index`-th device (in address order) with this vendor and device ID.
   * @throws {PhysmemError} ENOENT when there is no such device (the message lists what there is), EINVAL for bad IDs.
   * @example
   * const edu = PciDevice.find({ vendor: 0x1234, device: 0x11e8 });
   */
  static find(options: PciFindOptions): PciDevice {
    checkFindOptions(options);
    checkPath(options.sysfsRoot, 'sysfsRoot', 'PciDevice.find()');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be { vendor, device } or { classCode }');
    const { vendor, device, classCode, classMask = 0xffffff, index = 0 } = options;
    for (const [name, v] of [['vendor', vendor], ['device', device]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffff)) throw invalidArgument(`${name} must be a 16-bit ID such as 0x1234, got ${String(v)}`);
    }
    for (const [name, v] of [['classCode', classCode], ['classMask', classMask]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffffff)) throw invalidArgument(`${name} must be a 24-bit class code such as 0x010802, got ${String(v)}`);
    }
    if (vendor === undefined && device === undefined && classCode === undefined) throw invalidArgument('find needs vendor, device or classCode');
    if (!Number.isInteger(index) || index < 0) throw invalidArgument(`index must be a non-negative integer, got ${String(index)}`);
    const matches = listPciDevices({ vendor, device, sysfsRoot: options.sysfsRoot }).filter(
      (d) => classCode === undefined || ((d.classCode ^ classCode) & classMask) === 0,
    );
    if (index >= matches.length) {
      const id = [
        vendor === undefined && device === undefined ? undefined : `${vendor === undefined ? '*' : hex(vendor, 4).slice(2)}:${device === undefined ? '*' : hex(device, 4).slice(2)}`,
        classCode === undefined ? undefined : `class ${hex(classCode & classMask, 6)}${classMask === 0xffffff ? '' : ' mask ' + hex(classMask, 6)}`,
      ].filter((x) => x !== undefined).join(' ');
      const present = listPciDevices({ sysfsRoot: options.sysfsRoot }).map((d) => `${d.bdf} ${hex(d.vendor, 4).slice(2)}:${hex(d.device, 4).slice(2)} class ${hex(d.classCode, 6)}`);
      throw new PhysmemError(
        'ENOENT',
        matches.length === 0 ? `no PCI device ${id}` : `only ${matches.length} PCI device(s) ${id}, asked for index ${index}`,
        {
          path: pciDevicesDir(options.sysfsRoot ?? DEFAULT_SYSFS_ROOT),
          hint: present.length ? `present: ${present.join(', ')}` : 'this system shows no PCI devices',
        },
      );
    }
    const { sysfsRoot, lock, lockDir, quiesce } = options;
    return PciDevice.open(matches[index].bdf, { sysfsRoot, lock, lockDir, quiesce });
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
    // A kernel driver must not find the device's registers mapped by someone else.
    if ([...this.#mmios].some((m) => !m.closed)) {
      throw new PhysmemError('EBUSY', `bindDriver: BARs of ${this.bdf} are still mapped through this PciDevice`, { hint: 'close those Mmio objects first (mmio.close())' });
    }
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
    this.#checkNoKernelDriver('enable');
    if (!this.enabled) this.#writeEnable('1');
  }

  /** Disable the device through sysfs `enable` when enabled. Needs root. @throws {PhysmemError} EACCES without root, EBUSY while a kernel driver is bound. */
  disable(): void {
    this.#checkNoKernelDriver('disable');
    if (this.enabled) this.#writeEnable('0');
  }

  /** True when the bus-master bit of the command register is set (the device may do DMA). */
  get busMaster(): boolean {
    return (this.readConfig16(PCI_COMMAND) & PCI_COMMAND_MASTER) !== 0;
  }

  /**
   * Allow (`true`) or forbid (`false`) the device to do DMA: the bus-master bit
   * ({@link PCI_COMMAND_MASTER}) of the command register, read-modify-written
   * with 16-bit accesses. Needs root.
   *
   * Refused in an IOMMU group that translates DMA (type `DMA`/`DMA-FQ`): the
   * device would see I/O virtual addresses, so the physical addresses of a
   * devmem, hugepage or udmabuf pool are wrong for it. Use physmem/vfio there,
   * boot with `iommu=pt`, or opt out with `allowTranslatedIommu`.
   * @throws {PhysmemError} EPERM (translated IOMMU group), EBUSY (a kernel driver is bound),
   *   EACCES without root, EBADF after close.
   */
  setBusMaster(on: boolean, options: BusMasterOptions = {}): void {
    checkBusMasterOptions(options);
    checkBoolean(options.allowTranslatedIommu, 'allowTranslatedIommu', 'PciDevice.setBusMaster()');
    if (typeof on !== 'boolean') throw invalidArgument(`setBusMaster takes a boolean, got ${String(on)}`);
    if (this.closed) throw this.#closedError('setBusMaster');
    this.#checkNoKernelDriver('setBusMaster');
    if (on && options.allowTranslatedIommu !== true) {
      const g = this.iommuGroup;
      if (g !== undefined && isTranslated(g.type)) {
        throw new PhysmemError(
          'EPERM',
          `setBusMaster: ${this.bdf} is in IOMMU group ${g.group} of type ${g.type}: the IOMMU translates its DMA, so it sees I/O virtual addresses, and the physical addresses physmem's devmem, hugepage and udmabuf pools give are wrong for it (its DMA would fault or reach other memory)`,
          {
            path: join(this.#sysfsRoot, 'kernel', 'iommu_groups', String(g.group), 'type'),
            hint:
              `drive it through physmem/vfio (VfioDevice.open('${this.bdf}') and a vfio pool, whose bus addresses are IOVAs mapped for it); ` +
              `or boot with iommu=pt (groups become identity), or with no driver bound in the group: echo identity > /sys/kernel/iommu_groups/${g.group}/type; ` +
              'pass { allowTranslatedIommu: true } only if you program IOVAs yourself',
          },
        );
      }
    }
    this.#setCommandBit(PCI_COMMAND_MASTER, on);
    if (on) this.#setBusMasterOn = true;
  }

  /** True when legacy INTx interrupts are disabled ({@link PCI_COMMAND_INTX_DISABLE}). */
  get intxDisabled(): boolean {
    return (this.readConfig16(PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /**
   * Disable (`true`) or enable (`false`) legacy INTx interrupts: the
   * INTx-disable bit (0x400) of the command register. MSI and MSI-X are not
   * affected. Needs root.
   * @throws {PhysmemError} EBUSY (a kernel driver is bound), EACCES without root, EBADF after close.
   */
  setIntxDisabled(disabled: boolean): void {
    if (typeof disabled !== 'boolean') throw invalidArgument(`setIntxDisabled takes a boolean, got ${String(disabled)}`);
    if (this.closed) throw this.#closedError('setIntxDisabled');
    this.#checkNoKernelDriver('setIntxDisabled');
    this.#setCommandBit(PCI_COMMAND_INTX_DISABLE, disabled);
  }

  /**
   * Reset the device through sysfs `reset`: the kernel picks a function-level
   * reset, PM reset or bus reset (whichever `reset_method` lists first), saving
   * and restoring config space around it (BAR mappings stay valid; device
   * registers return to their reset values). Needs root.
   * @throws {PhysmemError} ENOTSUP with the reason when the kernel offers no reset
   *   for this device, EACCES without root, EBADF after close.
   */
  reset(): void {
    if (this.closed) throw this.#closedError('reset');
    const file = join(this.path, 'reset');
    const why = noResetReason(this.path);
    if (why !== undefined) {
      throw new PhysmemError('ENOTSUP', `${this.bdf} cannot be reset: ${why}`, {
        path: file,
        hint: 'quiesce it yourself: setBusMaster(false), then bring it to a known state through its registers',
      });
    }
    try {
      writeFileSync(file, '1');
    } catch (e) {
      throw toPhysmemError(e, file, rootHint((e as { code?: string }).code ?? ''));
    }
  }

  // ---- BARs -----------------------------------------------------------------

  /**
   * Map memory BAR `n` for register access. Closed with the device, or by `mmio.close()`.
   * @param n - BAR number, 0-5.
   * @throws {PhysmemError} EINVAL (n not 0-5), ENOENT (BAR not implemented),
   *   ENOTSUP (an I/O-port BAR: those cannot be memory-mapped), EACCES (not root), EBADF (closed).
   */
  mapBar(n: number, options: MapBarOptions = {}): Mmio {
    checkMapBarOptions(options);
    checkBoolean(options.writeCombining, 'writeCombining', 'PciDevice.mapBar()');
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
    this.#checkNoKernelDriver(`mapBar(${n})`);
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

  /**
   * Turn bus mastering off (unless `keepBusMaster`, or a kernel driver is
   * bound, or this object neither holds the device lock nor turned bus
   * mastering on), unmap every BAR mapped through this object, close config space and
   * release the device lock. Leaves the device enabled. Idempotent; never
   * throws. Devices still open when the process exits normally are closed
   * this way too.
   */
  close(options: PciCloseOptions = {}): void {
    checkCloseOptions(options);
    checkBoolean(options.keepBusMaster, 'keepBusMaster', 'PciDevice.close()');
    if (this.#readFd < 0) return;
    openDevices.delete(this);
    if (options?.keepBusMaster !== true) this.#busMasterOffAtClose();
    for (const m of this.#mmios) m.close();
    this.#mmios.clear();
    closeSync(this.#readFd);
    this.#readFd = -1;
    if (this.#writeFd >= 0) closeSync(this.#writeFd);
    this.#writeFd = -1;
    this.#lock?.release(); // last: the device is quiet before another program may take it
  }

  /** Alias of {@link PciDevice.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---- internals ----------------------------------------------------------

  #setCommandBit(bit: number, on: boolean): void {
    const cmd = this.readConfig16(PCI_COMMAND);
    const next = on ? cmd | bit : cmd & ~bit;
    if (next !== cmd) this.writeConfig16(PCI_COMMAND, next);
  }

  // Only the device's owner (the lock holder) or whoever turned DMA on here
  // turns it off: an object opened with `lock: false` to look may not stop a device another object drives.
  #busMasterOffAtClose(): void {
    if (!this.locked && !this.#setBusMasterOn) return;
    try {
      if (this.driver === undefined && this.busMaster) this.#setCommandBit(PCI_COMMAND_MASTER, false);
    } catch (e) {
      const code = (e as { code?: string }).code;
      // Without root nothing could have turned it on through this object.
      if (code !== 'EACCES' && code !== 'EPERM') {
        process.emitWarning(`physmem: could not turn bus mastering of ${this.bdf} off at close: ${(e as Error).message}`, { code: 'PHYSMEM_CLOSE' });
      }
    }
  }

  // A kernel driver owns the device: touching its BARs or command register
  // under it corrupts the driver's state (and the kernel refuses to mmap BARs
  // a driver claimed, with a bare EINVAL).
  #checkNoKernelDriver(op: string): void {
    const driver = this.driver;
    if (driver === undefined) return;
    const unbind = join(this.#sysfsRoot, 'bus', 'pci', 'drivers', driver, 'unbind');
    throw new PhysmemError('EBUSY', `${op}: PCI device ${this.bdf} is bound to the kernel driver ${driver}, which owns it`, {
      path: join(this.path, 'driver'),
      hint:
        (driver === 'vfio-pci' ? "drive it through physmem/vfio (VfioDevice.open), or release it: " : 'release it first: ') +
        `dev.unbindDriver() (or as root: echo ${this.bdf} > ${unbind}); dev.restoreDriver() gives it back to the kernel afterwards`,
    });
  }

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
