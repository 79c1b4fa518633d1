/**
 * VFIO groups: which IOMMU group a device is in, whether the group can be
 * handed to userspace (viable), and opening `/dev/vfio/<N>` with errors that
 * say what to do (no IOMMU, vfio-pci not loaded, not bound, no permission).
 * @module
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError } from '../errors.js';
import { openFile } from '../mapping.js';
import { DEFAULT_SYSFS_ROOT, driverOf, iommuGroupOf, normalizeBdf, pciDeviceDir } from '../pci/sysfs.js';
import { checkPath, optionNames, optionsChecker } from '../internal/validate.js';

/** The driver a device must be bound to for VFIO. */
export const VFIO_PCI_DRIVER = 'vfio-pci';

/**
 * Drivers that leave a group viable besides vfio-pci: the kernel's own list
 * (drivers/vfio/group.c: pci-stub, and pcieport for bridges) and any other
 * VFIO driver (vfio-pci variants such as mlx5-vfio-pci).
 */
export function isVfioCompatibleDriver(driver: string | undefined): boolean {
  return driver === undefined || driver === 'pci-stub' || driver === 'pcieport' || driver.startsWith('vfio') || driver.endsWith('-vfio-pci');
}

/** Options of the functions in this module. */
export interface VfioGroupOptions {
  /** sysfs mount point. Default `'/sys'` (tests point it at a fake tree). */
  sysfsRoot?: string;
  /** Directory of the VFIO device files. Default `'/dev/vfio'`. */
  devDir?: string;
}

const checkGroupOptions = optionsChecker('vfioGroupOf()/openVfioGroup()', optionNames<VfioGroupOptions>({ sysfsRoot: true, devDir: true }));

/** A device of an IOMMU group and the driver bound to it. */
export interface GroupMember {
  /** PCI address, `0000:00:03.0`. */
  bdf: string;
  /** Bound driver, or undefined. */
  driver: string | undefined;
}

/** The IOMMU group of a device, as VFIO sees it. */
export interface VfioGroupInfo {
  /** Group number N. */
  group: number;
  /** `/dev/vfio/N`. */
  path: string;
  /** Every device of the group with its driver. */
  members: GroupMember[];
  /** Members bound to a driver that makes the group unusable through VFIO. */
  offenders: GroupMember[];
}

/** The sentence every "no IOMMU" error carries. */
export const NO_IOMMU_HINT =
  'VFIO needs an IOMMU: enable VT-d / AMD-Vi in the firmware and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD); ' +
  'in a QEMU guest add -device intel-iommu,intremap=on with -machine q35,kernel-irqchip=split';

/** How to grant a user access to a group; the udev rule is documented in docs/vfio.md. */
export function permissionHint(path: string): string {
  return `${path} is root's by default (crw-------). Grant it to a user: chown <user> ${path}, or for a group of users a udev rule ` +
    `(/etc/udev/rules.d/70-vfio.rules: SUBSYSTEM=="vfio", GROUP="vfio", MODE="0660") and add them to group vfio; see docs/vfio.md. ` +
    'The user also needs RLIMIT_MEMLOCK for the memory it maps (ulimit -l)';
}

/**
 * The IOMMU group of `bdf` with its members and their drivers. Only reads sysfs.
 * @throws {PhysmemError} EINVAL (bad address), ENOENT (no such device),
 *   ENODEV (no IOMMU at all, or the device is in no group; the hint says how to enable one).
 */
export function vfioGroupOf(bdf: string, options: VfioGroupOptions = {}): VfioGroupInfo {
  checkGroupOptions(options);
  checkPath(options.sysfsRoot, 'sysfsRoot', 'vfioGroupOf()');
  checkPath(options.devDir, 'devDir', 'vfioGroupOf()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  const dir = pciDeviceDir(canonical, root);
  if (!existsSync(join(dir, 'vendor'))) throw new PhysmemError('ENOENT', `no PCI device ${canonical}`, { path: dir, hint: 'list the devices with `lspci -D`' });
  const g = iommuGroupOf(canonical, root);
  if (g === undefined) {
    const groupsDir = join(root, 'kernel', 'iommu_groups');
    const any = listDir(groupsDir).length > 0;
    throw new PhysmemError('ENODEV', any ? `${canonical} is in no IOMMU group` : `no IOMMU is enabled (${groupsDir} is empty)`, {
      path: join(dir, 'iommu_group'),
      hint: any ? 'the IOMMU does not cover this device; check the firmware (ACPI DMAR/IVRS) and dmesg | grep -i -e DMAR -e IOMMU' : NO_IOMMU_HINT,
    });
  }
  const membersDir = join(root, 'kernel', 'iommu_groups', String(g.group), 'devices');
  const members = listDir(membersDir).sort().map((m) => ({ bdf: m, driver: driverOf(m, root) }));
  const devDir = options.devDir ?? '/dev/vfio';
  return { group: g.group, path: join(devDir, String(g.group)), members, offenders: members.filter((m) => !isVfioCompatibleDriver(m.driver)) };
}

/**
 * Refuse with EBUSY when any device of the group is bound to a driver that
 * keeps VFIO from using the group, naming each one and its driver.
 * @throws {PhysmemError} EBUSY.
 */
export function checkGroupViable(info: VfioGroupInfo, bdf: string): void {
  if (info.offenders.length === 0) return;
  const list = info.offenders.map((o) => `${o.bdf} (bound to ${o.driver})`).join(', ');
  throw new PhysmemError('EBUSY', `IOMMU group ${info.group} of ${bdf} is not viable: ${list}`, {
    path: info.path,
    hint: `every device of a group must be bound to vfio-pci or to no driver, since they share one IOMMU domain: ` +
      `bindVfio() each of ${info.offenders.map((o) => o.bdf).join(', ')} (or unbind them), then open again`,
  });
}

/**
 * Check that `bdf` can be opened through VFIO and open its group file
 * `/dev/vfio/N` read-write. The caller owns the fd.
 * @throws {PhysmemError} ENODEV (no IOMMU; vfio-pci not loaded), EBUSY (group not
 *   viable; device not bound to vfio-pci; the group is open in another process),
 *   EACCES (no permission on /dev/vfio/N: the hint has chown and a udev rule), ENOENT.
 */
export function openVfioGroup(bdf: string, options: VfioGroupOptions = {}): { fd: number; info: VfioGroupInfo } {
  checkGroupOptions(options);
  checkPath(options.sysfsRoot, 'sysfsRoot', 'openVfioGroup()');
  checkPath(options.devDir, 'devDir', 'openVfioGroup()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  const info = vfioGroupOf(canonical, options);
  const driver = driverOf(canonical, root);
  const vfioDriver = driver !== undefined && (driver.startsWith('vfio') || driver.endsWith('-vfio-pci'));
  if (!vfioDriver) {
    const loaded = existsSync(join(root, 'bus', 'pci', 'drivers', VFIO_PCI_DRIVER));
    throw new PhysmemError(loaded ? 'EBUSY' : 'ENODEV', `${canonical} is ${driver === undefined ? 'bound to no driver' : `bound to ${driver}`}, not to vfio-pci` +
      (loaded ? '' : ', and vfio-pci is not loaded'), {
      path: join(pciDeviceDir(canonical, root), 'driver'),
      hint: (loaded ? '' : 'load it as root: modprobe vfio-pci; then ') + `bind the device as root: bindVfio('${canonical}') from physmem/vfio ` +
        `(or echo vfio-pci > ${join(pciDeviceDir(canonical, root), 'driver_override')} && echo ${canonical} > /sys/bus/pci/drivers_probe)`,
    });
  }
  checkGroupViable(info, canonical);
  const fd = openFile(info.path, true, false, (code) =>
    code === 'EACCES' || code === 'EPERM'
      ? permissionHint(info.path)
      : code === 'EBUSY'
        ? `the group is open already (another process, or a VfioDevice of another container in this one): VFIO lets one open at a time; see \`fuser -v ${info.path}\``
        : code === 'ENOENT'
          ? `vfio-pci has the device but ${info.path} is missing: is /dev mounted with devtmpfs (udev)?`
          : undefined,
  );
  return { fd, info };
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
