/**
 * Reading PCI devices out of sysfs (`/sys/bus/pci/devices/<bdf>/`): device
 * addresses, identity attributes and the `resource` table of BARs. Pure
 * parsing plus plain file reads, so it runs against a fake tree in tests.
 * @module
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PhysmemError, invalidArgument } from '../errors.js';
import { toPhysmemError } from '../native.js';
import { checkPath, optionNames, optionsChecker } from '../internal/validate.js';

/** Default sysfs mount point. */
export const DEFAULT_SYSFS_ROOT = '/sys';

/** `resource` flag: the BAR decodes I/O ports (include/linux/ioport.h). */
export const IORESOURCE_IO = 0x100;
/** `resource` flag: the BAR decodes memory. */
export const IORESOURCE_MEM = 0x200;
/** `resource` flag: the memory BAR is prefetchable (write-combining is then allowed). */
export const IORESOURCE_PREFETCH = 0x2000;
/** `resource` flag: a 64-bit memory BAR. */
export const IORESOURCE_MEM_64 = 0x100000;

/** Number of standard BARs of a type 0 (endpoint) header. */
export const PCI_BAR_COUNT = 6;

/** One line of a device's sysfs `resource` file. */
export interface PciResource {
  /** Line number: 0-5 are the BARs, 6 the expansion ROM, later lines bridge windows. */
  readonly index: number;
  /** Bus address of the first byte (what the CPU's physical address map shows). */
  readonly start: bigint;
  /** Size in bytes; 0 for an unimplemented BAR. */
  readonly size: bigint;
  /** The kernel's IORESOURCE_* flags. */
  readonly flags: number;
  /** `'memory'` (mappable), `'io'` (I/O ports, not mappable), or `'unused'`. */
  readonly kind: 'memory' | 'io' | 'unused';
  /** Prefetchable memory: `resource<n>_wc` (write-combining) may exist. */
  readonly prefetchable: boolean;
  /** A 64-bit memory BAR (it also occupies the next BAR slot, which reads as unused). */
  readonly is64: boolean;
}

/**
 * Parse a sysfs `resource` file: one `0x<start> 0x<end> 0x<flags>` line per
 * resource; unimplemented ones are all zeros.
 * @throws {PhysmemError} EINVAL on a line that is not three hex numbers.
 */
export function parseResourceFile(text: string): PciResource[] {
  const out: PciResource[] = [];
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$/i.exec(lines[i]);
    if (!m) throw invalidArgument(`resource line ${i} is not "0x<start> 0x<end> 0x<flags>": ${JSON.stringify(lines[i])}`);
    const start = BigInt('0x' + m[1]);
    const end = BigInt('0x' + m[2]);
    const flags = Number(BigInt('0x' + m[3]) & 0xffffffffn);
    // An unimplemented BAR reads 0 0 0; `end` is inclusive otherwise.
    const size = end === 0n && start === 0n ? 0n : end - start + 1n;
    const kind = size === 0n ? 'unused' : flags & IORESOURCE_IO ? 'io' : flags & IORESOURCE_MEM ? 'memory' : 'unused';
    out.push({
      index: i,
      start,
      size,
      flags,
      kind,
      prefetchable: kind === 'memory' && (flags & IORESOURCE_PREFETCH) !== 0,
      is64: kind === 'memory' && (flags & IORESOURCE_MEM_64) !== 0,
    });
  }
  return out;
}

/**
 * The canonical form `dddd:bb:dd.f` (lower-case hex) of a PCI address;
 * `bb:dd.f` gets domain 0000.
 * @throws {PhysmemError} EINVAL for anything else (also keeps paths out of sysfs lookups).
 */
export function normalizeBdf(bdf: string): string {
  if (typeof bdf !== 'string') throw invalidArgument(`a PCI address must be a string like '0000:00:04.0', got ${typeof bdf}`);
  const m = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i.exec(bdf.trim());
  if (!m) throw invalidArgument(`'${bdf}' is not a PCI address (domain:bus:device.function, e.g. '0000:00:04.0')`, 'see `lspci -D` for the addresses');
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2].toLowerCase()}:${m[3].toLowerCase()}.${m[4]}`;
}

/** The directory of all PCI devices under `sysfsRoot`. */
export function pciDevicesDir(sysfsRoot: string = DEFAULT_SYSFS_ROOT): string {
  return join(sysfsRoot, 'bus', 'pci', 'devices');
}

/** Identity of a PCI device, from its sysfs attributes. */
export interface PciDeviceInfo {
  /** Address, `dddd:bb:dd.f`. */
  readonly bdf: string;
  /** Vendor ID, e.g. 0x1234. */
  readonly vendor: number;
  /** Device ID, e.g. 0x11e8. */
  readonly device: number;
  /** Class code, 24 bits: base class, subclass, programming interface (0x00ff00 for edu). */
  readonly classCode: number;
  /** Revision ID. */
  readonly revision: number;
  /** Subsystem vendor ID. */
  readonly subsystemVendor: number;
  /** Subsystem device ID. */
  readonly subsystemDevice: number;
}

/** Read a hex sysfs attribute (`0x1234`) of a device; undefined when the file is absent. */
function readHexAttr(dir: string, name: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, name), 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toPhysmemError(e, join(dir, name));
  }
  const v = Number.parseInt(text, 16);
  if (!Number.isFinite(v)) throw new PhysmemError('EIO', `unexpected content ${JSON.stringify(text)}`, { path: join(dir, name) });
  return v;
}

/**
 * Identity of the device at `dir` (its sysfs directory).
 * @throws {PhysmemError} ENOENT when `dir` has no `vendor` file (not a PCI device).
 */
export function readDeviceInfo(dir: string, bdf: string): PciDeviceInfo {
  const vendor = readHexAttr(dir, 'vendor');
  if (vendor === undefined) {
    throw new PhysmemError('ENOENT', `no PCI device ${bdf}`, { path: dir, hint: 'list the devices with `lspci -D` or `ls /sys/bus/pci/devices`' });
  }
  return {
    bdf,
    vendor,
    device: readHexAttr(dir, 'device') ?? 0,
    classCode: readHexAttr(dir, 'class') ?? 0,
    revision: readHexAttr(dir, 'revision') ?? 0,
    subsystemVendor: readHexAttr(dir, 'subsystem_vendor') ?? 0,
    subsystemDevice: readHexAttr(dir, 'subsystem_device') ?? 0,
  };
}

/** Filter of {@link listPciDevices}; every given field must match. */
export interface PciFilter {
  /** Vendor ID. */
  vendor?: number;
  /** Device ID. */
  device?: number;
  /** Class code (24 bits). */
  classCode?: number;
  /** sysfs mount point. Default `'/sys'` (tests point it at a fake tree). */
  sysfsRoot?: string;
}

const checkPciFilter = optionsChecker('listPciDevices()', optionNames<PciFilter>({ vendor: true, device: true, classCode: true, sysfsRoot: true }));

/**
 * Every PCI device matching `filter`, in address order. An empty list when
 * the system has no PCI bus.
 * @throws {PhysmemError} when sysfs cannot be read (EACCES, EIO).
 */
export function listPciDevices(filter: PciFilter = {}): PciDeviceInfo[] {
  checkPciFilter(filter);
  checkPath(filter.sysfsRoot, 'sysfsRoot', 'listPciDevices()');
  const dir = pciDevicesDir(filter.sysfsRoot);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toPhysmemError(e, dir);
  }
  const out: PciDeviceInfo[] = [];
  for (const name of names.sort()) {
    let bdf: string;
    try {
      bdf = normalizeBdf(name);
    } catch {
      continue; // not a device entry
    }
    let info: PciDeviceInfo;
    try {
      info = readDeviceInfo(join(dir, name), bdf);
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') continue; // removed while we looked
      throw e;
    }
    if (filter.vendor !== undefined && info.vendor !== filter.vendor) continue;
    if (filter.device !== undefined && info.device !== filter.device) continue;
    if (filter.classCode !== undefined && info.classCode !== filter.classCode) continue;
    out.push(info);
  }
  return out;
}

// ---- drivers and IOMMU groups ------------------------------------------------

/** The sysfs directory of the device at `bdf` (validated; nothing is read). */
export function pciDeviceDir(bdf: string, sysfsRoot: string = DEFAULT_SYSFS_ROOT): string {
  return join(pciDevicesDir(sysfsRoot), normalizeBdf(bdf));
}

/**
 * Name of the kernel driver bound to the device at `bdf` (`nvme`, `vfio-pci`,
 * ...), or undefined when none is. Reads the `driver` symlink.
 * @throws {PhysmemError} EINVAL for a bad address.
 */
export function driverOf(bdf: string, sysfsRoot: string = DEFAULT_SYSFS_ROOT): string | undefined {
  try {
    return basename(readlinkSync(join(pciDeviceDir(bdf, sysfsRoot), 'driver')));
  } catch (e) {
    if (e instanceof PhysmemError) throw e;
    return undefined;
  }
}

/**
 * How an IOMMU group treats DMA (`/sys/kernel/iommu_groups/<n>/type`):
 * `identity` (bus address = physical address), `DMA` / `DMA-FQ` (translated:
 * the device sees IOVAs the kernel's DMA API hands out), `blocked`, or
 * `unmanaged` (owned by a userspace driver through VFIO).
 */
export type IommuGroupType = 'identity' | 'DMA' | 'DMA-FQ' | 'blocked' | 'unmanaged' | 'unknown';

/** The IOMMU group of a device. */
export interface IommuGroup {
  /** Group number (the `N` of `/sys/kernel/iommu_groups/N` and `/dev/vfio/N`). */
  readonly group: number;
  /** How the group translates DMA; `'unknown'` when the kernel has no `type` file (before Linux 5.4) or shows something new. */
  readonly type: IommuGroupType;
}

const GROUP_TYPES: readonly string[] = ['identity', 'DMA', 'DMA-FQ', 'blocked', 'unmanaged'];

/** True for group types where the device's bus addresses are IOVAs, not physical addresses. */
export function isTranslated(type: IommuGroupType | undefined): boolean {
  return type === 'DMA' || type === 'DMA-FQ';
}

function readGroupType(sysfsRoot: string, group: number): IommuGroupType {
  try {
    const t = readFileSync(join(sysfsRoot, 'kernel', 'iommu_groups', String(group), 'type'), 'utf8').trim();
    return (GROUP_TYPES.includes(t) ? t : 'unknown') as IommuGroupType;
  } catch {
    return 'unknown';
  }
}

/**
 * The IOMMU group of the device at `bdf`, or undefined when the device is in
 * none (no IOMMU, or the IOMMU is off: bus address = physical address).
 * @throws {PhysmemError} EINVAL for a bad address.
 */
export function iommuGroupOf(bdf: string, sysfsRoot: string = DEFAULT_SYSFS_ROOT): IommuGroup | undefined {
  let target: string;
  try {
    target = readlinkSync(join(pciDeviceDir(bdf, sysfsRoot), 'iommu_group'));
  } catch (e) {
    if (e instanceof PhysmemError) throw e;
    return undefined;
  }
  const group = Number.parseInt(basename(target), 10);
  if (!Number.isInteger(group)) return undefined;
  return { group, type: readGroupType(sysfsRoot, group) };
}

/** The machine's IOMMU state, from `/sys/kernel/iommu_groups` and `/sys/class/iommu`. */
export interface IommuState {
  /** True when the kernel has any IOMMU group at all (an IOMMU is on). */
  readonly enabled: boolean;
  /** IOMMU units the kernel registered (`dmar0`, `ivhd0`, ...). */
  readonly units: readonly string[];
  /** Number of IOMMU groups. */
  readonly groups: number;
  /** How many groups have each type, e.g. `{ 'DMA-FQ': 5, unmanaged: 1 }`. */
  readonly types: Readonly<Partial<Record<IommuGroupType, number>>>;
  /** True when any group translates DMA (type DMA or DMA-FQ): devices there cannot use physical addresses. */
  readonly translating: boolean;
  /** The default domain type, when every non-VFIO group shares one (`identity` after `iommu=pt`). */
  readonly defaultType: IommuGroupType | undefined;
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

/**
 * Whether the machine has an IOMMU on and whether it translates. Needs no
 * privileges; a missing directory reads as "no IOMMU".
 */
export function iommuState(sysfsRoot: string = DEFAULT_SYSFS_ROOT): IommuState {
  const groupNames = listDir(join(sysfsRoot, 'kernel', 'iommu_groups')).filter((n) => /^\d+$/.test(n));
  const types: Partial<Record<IommuGroupType, number>> = {};
  for (const n of groupNames) {
    const t = readGroupType(sysfsRoot, Number(n));
    types[t] = (types[t] ?? 0) + 1;
  }
  // Groups VFIO owns (unmanaged) or with nothing attached say nothing about the default.
  const managed = Object.keys(types).filter((t) => t !== 'unmanaged' && t !== 'blocked' && t !== 'unknown') as IommuGroupType[];
  return {
    enabled: groupNames.length > 0,
    units: listDir(join(sysfsRoot, 'class', 'iommu')).sort(),
    groups: groupNames.length,
    types,
    translating: ((types.DMA ?? 0) > 0 || (types['DMA-FQ'] ?? 0) > 0),
    defaultType: managed.length === 1 ? managed[0] : undefined,
  };
}
