/**
 * A PCI device owned by this program through VFIO: config space, BARs,
 * interrupts as events, reset, and DMA only where the program mapped memory
 * (the IOMMU container).
 * @module
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError, invalidArgument } from '../errors.js';
import { closeFile } from '../mapping.js';
import { native, toPhysmemError, type VfioDeviceInfo, type VfioIrqInfo, type VfioRegionInfo } from '../native.js';
import { PCI_COMMAND, PCI_COMMAND_MASTER } from '../pci/quiesce.js';
import { Mmio } from '../pci/mmio.js';
import { openPoolSync, type VfioPoolOptions } from '../open.js';
import type { Pool } from '../pool.js';
import { DEFAULT_SYSFS_ROOT, PCI_BAR_COUNT, normalizeBdf, parseResourceFile, pciDeviceDir } from '../pci/sysfs.js';
import { VfioContainer } from './container.js';
import { openVfioGroup, vfioGroupOf, type VfioGroupInfo } from './group.js';
import {
  VfioInterrupts,
  type EnableInterruptsOptions,
  type InterruptSource,
  type InterruptType,
  type WaitInterruptOptions,
  type InterruptsOptions,
} from './irq.js';
import { checkPath, hex, optionNames, optionsChecker } from '../internal/validate.js';

/** VFIO_PCI_CONFIG_REGION_INDEX. */
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;

/** Options of {@link VfioDevice.open}. */
export interface VfioOpenOptions {
  /**
   * Container (IOMMU address space) to attach the device's group to, so
   * several devices share one IOVA space (one pool serves them all). Default:
   * a container of its own, closed with the device.
   */
  container?: VfioContainer;
  /** sysfs mount point. Default `'/sys'`. */
  sysfsRoot?: string;
  /** Directory of the VFIO group files. Default `'/dev/vfio'`. */
  devDir?: string;
}

const checkOpenOptions = optionsChecker('VfioDevice.open()', optionNames<VfioOpenOptions>({ container: true, sysfsRoot: true, devDir: true }));

/** Events of a {@link VfioDevice}. */
export interface VfioDeviceEvents {
  /** An interrupt on `vector`, `count` of them since the last delivery, that no `waitInterrupt` was waiting for. */
  interrupt: [vector: number, count: number];
}

/** One BAR or other region as VFIO describes it. */
export interface VfioRegion extends Readonly<VfioRegionInfo> {}

// One open group fd per /dev/vfio/N in this process: VFIO lets a group file
// be opened once, so devices of the same group share it (and its container).
interface OpenGroup {
  fd: number;
  refs: number;
  container: VfioContainer;
  /** The first device opened its own container: close it with the group. */
  ownContainer: boolean;
}
const openGroups = new Map<string, OpenGroup>();
// Devices open in this process, by address (restoreDriver refuses them: the
// kernel's unbind would wait for this very process to close the device).
const openDevices = new Set<string>();

/** True when this process has a {@link VfioDevice} of `bdf` open. */
export function isVfioDeviceOpen(bdf: string): boolean {
  return openDevices.has(normalizeBdf(bdf));
}

/**
 * A PCI device opened through VFIO (`/dev/vfio/N`). Everything the device
 * does to memory goes through the IOMMU: it can reach only what was mapped
 * into {@link VfioDevice.container} (a vfio pool maps its buffers there).
 * Closing the device releases it; the kernel resets it then where the
 * device supports a reset, so a crashed driver leaves no DMA running.
 *
 * Implements {@link InterruptSource}; emits `'interrupt'` (vector, count)
 * for deliveries no waiter took.
 *
 * ```ts
 * using dev = VfioDevice.open('0000:00:03.0');
 * const regs = dev.mapBar(0);
 * dev.enableInterrupts({ type: 'msi' });
 * regs.write32(0x08, 5);                 // edu: factorial of 5, interrupt when done
 * await dev.waitInterrupt(0, { timeoutMs: 1000 });
 * ```
 */
export class VfioDevice extends EventEmitter<VfioDeviceEvents> implements InterruptSource, Disposable {
  /** PCI address, `0000:00:03.0`. */
  readonly bdf: string;
  /** IOMMU group number (the N of /dev/vfio/N). */
  readonly group: number;
  /** `/dev/vfio/N`. */
  readonly groupPath: string;
  /** The IOMMU address space of the device; closed with it only when the device created it. */
  readonly container: VfioContainer;
  /** VFIO_DEVICE_GET_INFO: number of regions and irq indexes, whether reset is supported. */
  readonly info: Readonly<VfioDeviceInfo>;
  /** Regions by VFIO_PCI index (0-5 BARs, 6 ROM, 7 config, 8 VGA); size 0 when absent. */
  readonly regions: readonly VfioRegion[];
  /** Interrupt indexes (0 INTx, 1 MSI, 2 MSI-X, 3 ERR, 4 REQ) with their vector counts. */
  readonly irqs: readonly Readonly<VfioIrqInfo>[];
  readonly #sysfsRoot: string;
  readonly #ownContainer: boolean;
  readonly #configOffset: number;
  readonly #configSize: number;
  readonly #mmios = new Set<Mmio>();
  readonly #irq: VfioInterrupts;
  #fd: number;

  private constructor(bdf: string, group: VfioGroupInfo, fd: number, container: VfioContainer, own: boolean, sysfsRoot: string) {
    super();
    this.bdf = bdf;
    this.group = group.group;
    this.groupPath = group.path;
    this.container = container;
    this.#ownContainer = own;
    this.#sysfsRoot = sysfsRoot;
    this.#fd = fd;
    const n = native();
    this.info = Object.freeze(n.vfioDeviceGetInfo(fd));
    const regions: VfioRegion[] = [];
    for (let i = 0; i < this.info.numRegions; i++) regions.push(Object.freeze(regionInfo(fd, i)));
    this.regions = Object.freeze(regions);
    const irqs: VfioIrqInfo[] = [];
    for (let i = 0; i < this.info.numIrqs; i++) irqs.push(Object.freeze(irqInfo(fd, i)));
    this.irqs = Object.freeze(irqs);
    const cfg = this.regions[VFIO_PCI_CONFIG_REGION_INDEX];
    this.#configOffset = cfg?.offset ?? 0;
    this.#configSize = cfg?.size ?? 0;
    const fdOf = (): number => this.fd;
    this.#irq = new VfioInterrupts({
      get fd() {
        return fdOf();
      },
      label: bdf,
      irqCount: (index) => this.irqs[index]?.count ?? 0,
      emit: (vector, count) => this.listenerCount('interrupt') > 0 && this.emit('interrupt', vector, count),
    });
  }

  /**
   * Open the device at `bdf` through VFIO: find its IOMMU group, check that
   * the group is viable (every member bound to vfio-pci or to nothing: EBUSY
   * names each other member and its driver), open `/dev/vfio/N`, attach it to
   * the container (a new one unless `options.container`), get the device fd
   * and read its region and interrupt infos. Bus mastering is off until
   * {@link VfioDevice.setBusMaster}.
   * @param bdf - PCI address, `0000:00:03.0` or `00:03.0`.
   * @throws {PhysmemError} EINVAL (bad address), ENOENT (no such device), ENODEV (no IOMMU: the
   *   hint says intel_iommu=on / amd_iommu=on; vfio-pci not loaded), EBUSY (not bound to vfio-pci:
   *   use bindVfio; group not viable; group open in another process), EACCES (no permission on
   *   /dev/vfio/N: chown or a udev rule, see docs/vfio.md), EPERM (no interrupt remapping).
   */
  static open(bdf: string, options: VfioOpenOptions = {}): VfioDevice {
    checkOpenOptions(options);
    checkPath(options.sysfsRoot, 'sysfsRoot', 'VfioDevice.open()');
    checkPath(options.devDir, 'devDir', 'VfioDevice.open()');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (options.container !== undefined && !(options.container instanceof VfioContainer)) throw invalidArgument('options.container must be a VfioContainer');
    const canonical = normalizeBdf(bdf);
    const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
    if (openDevices.has(canonical)) {
      throw new PhysmemError('EBUSY', `${canonical} is open through VFIO in this process already`, {
        hint: 'share that VfioDevice: a second one would fight over its interrupts and registers',
      });
    }
    const groupOpts = { sysfsRoot, devDir: options.devDir };
    // A group this process has open already: share its fd (VFIO allows one open).
    const group = vfioGroupOf(canonical, groupOpts);
    const shared = openGroups.get(group.path);
    if (shared !== undefined && options.container !== undefined && shared.container !== options.container) {
      throw new PhysmemError('EINVAL', `the IOMMU group of ${canonical} is open in this process on another container`, {
        path: group.path,
        hint: 'devices of one IOMMU group share one address space: open them with the same container',
      });
    }
    const groupFd = shared?.fd ?? openVfioGroup(canonical, groupOpts).fd;
    const n = native();
    let container: VfioContainer | undefined = shared?.container ?? options.container;
    const own = shared === undefined && container === undefined;
    let deviceFd = -1;
    try {
      if (shared === undefined) {
        const status = n.vfioGroupGetStatus(groupFd);
        if (!status.viable) {
          throw new PhysmemError('EBUSY', `IOMMU group ${group.group} is not viable (the kernel says so)`, {
            path: group.path,
            hint: `every device of the group must be bound to vfio-pci or to nothing: ${group.members.map((m) => `${m.bdf} (${m.driver ?? 'no driver'})`).join(', ')}`,
          });
        }
        if (status.containerSet) {
          throw new PhysmemError('EBUSY', `IOMMU group ${group.group} is attached to a container already`, { path: group.path });
        }
        container ??= VfioContainer.open();
        container.attachGroup(groupFd, `${group.path} (${canonical})`);
      }
      try {
        deviceFd = n.vfioGroupGetDeviceFd(groupFd, canonical);
      } catch (e) {
        throw toPhysmemError(e, group.path, 'the device may be open already (VFIO gives out one device fd per device), or not bound to vfio-pci');
      }
      const dev = new VfioDevice(canonical, group, deviceFd, container!, own, sysfsRoot);
      openDevices.add(canonical);
      if (shared !== undefined) shared.refs++;
      else openGroups.set(group.path, { fd: groupFd, refs: 1, container: container!, ownContainer: own });
      return dev;
    } catch (e) {
      if (deviceFd >= 0) closeFile(deviceFd);
      if (shared === undefined) {
        closeFile(groupFd);
        if (own) container?.close();
      }
      throw toPhysmemError(e, group.path);
    }
  }

  /** The device fd. @throws {PhysmemError} EBADF after close. */
  get fd(): number {
    if (this.#fd < 0) throw this.#closedError('fd');
    return this.#fd;
  }

  /** True once {@link VfioDevice.close} ran. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  // ---- config space -----------------------------------------------------------

  /** One 8-bit config-space read through VFIO's config region. @throws {PhysmemError} EINVAL, ERANGE, EBADF. */
  readConfig8(offset: number): number {
    return this.#cfgRead(offset, 1);
  }

  /** One 16-bit config-space read (offset a multiple of 2). @throws {PhysmemError} EINVAL, ERANGE, EBADF. */
  readConfig16(offset: number): number {
    return this.#cfgRead(offset, 2);
  }

  /** One 32-bit config-space read (offset a multiple of 4); unsigned. @throws {PhysmemError} EINVAL, ERANGE, EBADF. */
  readConfig32(offset: number): number {
    return this.#cfgRead(offset, 4);
  }

  /**
   * One 8-bit config-space write. VFIO virtualizes parts of config space
   * (BARs, MSI/MSI-X capabilities, some command bits): writes there change
   * what this program sees, not the hardware.
   * @throws {PhysmemError} EINVAL (bad offset or value), ERANGE, EBADF.
   */
  writeConfig8(offset: number, value: number): void {
    this.#cfgWrite(offset, 1, value);
  }

  /** One 16-bit config-space write. @throws as {@link VfioDevice.writeConfig8}. */
  writeConfig16(offset: number, value: number): void {
    this.#cfgWrite(offset, 2, value);
  }

  /** One 32-bit config-space write. @throws as {@link VfioDevice.writeConfig8}. */
  writeConfig32(offset: number, value: number): void {
    this.#cfgWrite(offset, 4, value);
  }

  /** True when the bus-master bit of the command register is set. */
  get busMaster(): boolean {
    return (this.readConfig16(PCI_COMMAND) & PCI_COMMAND_MASTER) !== 0;
  }

  /**
   * Allow (`true`) or forbid (`false`) the device to do DMA (and to send
   * MSI/MSI-X, which are memory writes): the bus-master bit of the command
   * register. Off after open. Safe here: the IOMMU confines the device to
   * what the container maps.
   * @throws {PhysmemError} EINVAL (not a boolean), EBADF.
   */
  setBusMaster(on: boolean): void {
    if (typeof on !== 'boolean') throw invalidArgument(`setBusMaster takes a boolean, got ${String(on)}`);
    const cmd = this.readConfig16(PCI_COMMAND);
    const next = on ? cmd | PCI_COMMAND_MASTER : cmd & ~PCI_COMMAND_MASTER;
    if (next !== cmd) this.writeConfig16(PCI_COMMAND, next);
  }

  // ---- BARs -------------------------------------------------------------------

  /**
   * Map BAR `n` for register access: the same {@link Mmio} as physmem/pci.
   * Where VFIO allows mmap (the whole BAR, or the areas of its sparse-mmap
   * capability) accesses are loads and stores; elsewhere (the MSI-X table and
   * PBA, I/O-port BARs, BARs smaller than a page) each access is one
   * pread/pwrite of its width on the device fd. Closed with the device.
   * @param n - BAR number, 0-5.
   * @throws {PhysmemError} EINVAL (n not 0-5), ENOENT (BAR not implemented), EBADF.
   */
  mapBar(n: number): Mmio {
    const fd = this.fd;
    if (!Number.isInteger(n) || n < 0 || n >= PCI_BAR_COUNT) throw invalidArgument(`BAR number must be 0-${PCI_BAR_COUNT - 1}, got ${String(n)}`);
    const r = this.regions[n];
    if (r === undefined || r.size === 0) {
      const have = this.regions.slice(0, PCI_BAR_COUNT).filter((x) => x.size > 0).map((x) => `BAR ${x.index} (${x.size} bytes)`).join(', ');
      throw new PhysmemError('ENOENT', `BAR ${n} of ${this.bdf} is not implemented`, { path: this.groupPath, hint: `implemented: ${have || 'none'}` });
    }
    const mmap = !r.mmap ? [] : r.sparse ?? [{ offset: 0, size: r.size }];
    const label = `${this.groupPath} (${this.bdf} BAR ${n})`;
    const mmio = new Mmio({ kind: 'vfio', path: label, size: r.size, bar: n, phys: this.#barAddress(n), fd, offset: r.offset, mmap });
    this.#mmios.add(mmio);
    return mmio;
  }

  // ---- reset ------------------------------------------------------------------

  /** True when the device offers a reset through VFIO (FLR, PM or bus reset). */
  get resettable(): boolean {
    return this.info.reset;
  }

  /**
   * Reset the device (VFIO_DEVICE_RESET: function-level reset, PM reset or a
   * bus reset, whichever the kernel finds). Interrupts stay configured in VFIO
   * but the device's own state is gone: set it up again.
   * @throws {PhysmemError} ENOTSUP when the device offers no reset (QEMU's edu,
   *   many simple devices: close and reopen it, and reinitialise it by its registers), EBADF.
   */
  reset(): void {
    const fd = this.fd;
    if (!this.info.reset) {
      throw new PhysmemError('ENOTSUP', `${this.bdf} offers no reset through VFIO (no FLR, PM reset or resettable bus)`, {
        path: this.groupPath,
        hint: 'bring it to a known state through its own registers; closing the device does not reset it either',
      });
    }
    try {
      native().vfioDeviceReset(fd);
    } catch (e) {
      throw toPhysmemError(e, this.groupPath, 'the kernel could not reset it now: see dmesg');
    }
  }

  // ---- interrupts -------------------------------------------------------------

  /** The interrupt type enabled, or undefined. */
  get interruptType(): InterruptType | undefined {
    return this.#irq.type;
  }

  /**
   * Route the device's interrupts of `type` (vectors 0..vectors-1) to
   * eventfds watched by the event loop; replaces an earlier configuration.
   * MSI and MSI-X are memory writes: they need {@link VfioDevice.setBusMaster}(true).
   * @throws {PhysmemError} EINVAL (type not offered, or more vectors than the device has:
   *   the message lists what it offers), EBADF.
   */
  enableInterrupts(options: EnableInterruptsOptions): void {
    this.#irq.enable(options);
  }

  /**
   * The next interrupt on `vector`, or one that came while nobody waited.
   * For INTx this also unmasks the line, which the kernel masked when it
   * last fired: acknowledge the device's interrupt before waiting again.
   * @returns the number of interrupts since the last one taken (>= 1).
   * @throws {PhysmemError} ETIMEDOUT, ECANCELED (signal), EBADF (disabled or closed while
   *   waiting, or not enabled), EINVAL (no such vector).
   */
  waitInterrupt(vector: number, options?: WaitInterruptOptions): Promise<number> {
    return this.#irq.wait(vector, options);
  }

  /**
   * The interrupts of `vector` as counts; ends when interrupts are disabled, the device closes, or `signal` aborts.
   * @throws {PhysmemError} EBADF (interrupts not enabled, or closed), EINVAL (no such vector).
   */
  interrupts(vector: number, options?: InterruptsOptions): AsyncIterableIterator<number> {
    return this.#irq.iterate(vector, options);
  }

  /** Stop interrupt delivery (VFIO_DEVICE_SET_IRQS with no eventfds); pending waits reject with EBADF. Idempotent. */
  disableInterrupts(): void {
    this.#irq.disable();
  }

  // ---- memory -----------------------------------------------------------------

  /**
   * A pool of DMA memory mapped into this device's container:
   * `openPoolSync({ ...options, backend: 'vfio', device: this })`. `buf.bus`
   * is the IOVA to give the device; every device of the container reaches it.
   * Closed with the container (so with the device when it owns one).
   * @param options - size (default 4 MiB), pageSize (system page or a huge page size), iova, and the common pool options.
   * @throws {PhysmemError} as openPoolSync for the vfio backend: ENOMEM (RLIMIT_MEMLOCK), ENOSPC, ERANGE; EBADF.
   */
  openPool(options: Omit<VfioPoolOptions, 'backend' | 'device'> = {}): Pool {
    void this.fd; // EBADF once closed
    return openPoolSync({ ...options, backend: 'vfio', device: this });
  }

  // ---- lifetime ---------------------------------------------------------------

  /**
   * Disable interrupts, unmap the BARs, close the device fd (the kernel
   * resets the device here when it can, and turns bus mastering off), release
   * the group, and close the container when the device opened it. Idempotent.
   */
  close(): void {
    if (this.#fd < 0) return;
    this.#irq.disable();
    for (const m of this.#mmios) m.close();
    this.#mmios.clear();
    const fd = this.#fd;
    this.#fd = -1;
    closeFile(fd);
    openDevices.delete(this.bdf);
    const g = openGroups.get(this.groupPath);
    if (g !== undefined && --g.refs === 0) {
      openGroups.delete(this.groupPath);
      closeFile(g.fd);
      // The container outlives the group's other devices: the first device made it.
      if (this.#ownContainer || g.ownContainer) this.container.close();
    }
  }

  /** Alias of {@link VfioDevice.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #barAddress(n: number): bigint {
    try {
      const res = parseResourceFile(readFileSync(join(pciDeviceDir(this.bdf, this.#sysfsRoot), 'resource'), 'utf8'));
      return res[n]?.start ?? 0n;
    } catch {
      return 0n;
    }
  }

  #cfgRead(offset: number, width: 1 | 2 | 4): number {
    const fd = this.fd;
    this.#cfgCheck(offset, width, 'readConfig');
    try {
      return native().pread(fd, this.#configOffset + offset, width);
    } catch (e) {
      throw toPhysmemError(e, this.groupPath);
    }
  }

  #cfgWrite(offset: number, width: 1 | 2 | 4, value: number): void {
    const fd = this.fd;
    this.#cfgCheck(offset, width, 'writeConfig');
    const max = 2 ** (8 * width);
    if (!Number.isInteger(value) || value < -(max / 2) || value >= max) throw invalidArgument(`writeConfig${width * 8}: value ${String(value)} does not fit ${width * 8} bits`);
    try {
      native().pwrite(fd, this.#configOffset + offset, width, value < 0 ? value + max : value);
    } catch (e) {
      throw toPhysmemError(e, this.groupPath);
    }
  }

  #cfgCheck(offset: number, width: number, op: string): void {
    if (!Number.isInteger(offset) || offset % width !== 0) throw invalidArgument(`${op}${width * 8}: offset must be an integer multiple of ${width}, got ${String(offset)}`);
    if (offset < 0 || offset + width > this.#configSize) {
      throw new PhysmemError('ERANGE', `${op}${width * 8}: offset ${hex(offset)} is outside config space (${this.#configSize} bytes)`, { path: this.groupPath });
    }
  }

  #closedError(what: string): PhysmemError {
    return new PhysmemError('EBADF', `${what} on a closed VfioDevice ${this.bdf}`, { path: this.groupPath, hint: 'open it again with VfioDevice.open()' });
  }
}

function regionInfo(fd: number, index: number): VfioRegionInfo {
  try {
    return native().vfioDeviceGetRegionInfo(fd, index);
  } catch (e) {
    // vfio-pci answers EINVAL for an index it does not implement (e.g. VGA).
    if ((e as { code?: string }).code === 'EINVAL') {
      return { index, flags: 0, readable: false, writable: false, mmap: false, size: 0, offset: 0, caps: [], sparse: undefined, msixMappable: false };
    }
    throw toPhysmemError(e);
  }
}

function irqInfo(fd: number, index: number): VfioIrqInfo {
  try {
    return native().vfioDeviceGetIrqInfo(fd, index);
  } catch (e) {
    if ((e as { code?: string }).code === 'EINVAL') return { index, flags: 0, count: 0, eventfd: false, maskable: false, automasked: false };
    throw toPhysmemError(e);
  }
}
