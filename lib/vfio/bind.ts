/**
 * Moving a device to vfio-pci and back, with the checks that make the
 * failures readable: no IOMMU, vfio-pci not loaded, not root.
 * @module
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError } from '../errors.js';
import { bindDriver, checkBindOptions, restoreDriver as restorePciDriver, type BindOptions } from '../pci/bind.js';
import { DEFAULT_SYSFS_ROOT, driverOf, normalizeBdf } from '../pci/sysfs.js';
import { isVfioDeviceOpen } from './device.js';
import { NO_IOMMU_HINT, VFIO_PCI_DRIVER, vfioGroupOf } from './group.js';

/** What {@link bindVfio} did. */
export interface BindVfioResult {
  /** The driver bound before (to give back with {@link restoreDriver}), or undefined. */
  previousDriver: string | undefined;
  /** IOMMU group number: the device file is `/dev/vfio/<group>`. */
  group: number;
  /** `/dev/vfio/<group>`. */
  path: string;
}

/**
 * Bind the device at `bdf` to vfio-pci: `driver_override` = vfio-pci,
 * unbind the current driver, `drivers_probe` (lib/pci/bind.ts). Other devices
 * of the IOMMU group are not touched: {@link VfioDevice.open} says which ones
 * still keep the group from being usable. Needs root. A no-op (apart from
 * the override) when vfio-pci has the device already.
 * @throws {PhysmemError} ENODEV (no IOMMU: boot with intel_iommu=on or amd_iommu=on;
 *   vfio-pci not loaded: modprobe vfio-pci), EACCES (not root), EIO (vfio-pci refused it).
 */
export function bindVfio(bdf: string, options: BindOptions = {}): BindVfioResult {
  checkBindOptions(options, 'bindVfio()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  const groupsDir = join(root, 'kernel', 'iommu_groups');
  if (!existsSync(groupsDir) || readdirSync(groupsDir).length === 0) {
    throw new PhysmemError('ENODEV', `no IOMMU is enabled (${groupsDir} is empty), so vfio-pci cannot take ${canonical}`, { path: groupsDir, hint: NO_IOMMU_HINT });
  }
  const group = vfioGroupOf(canonical, { sysfsRoot: root });
  if (!existsSync(join(root, 'bus', 'pci', 'drivers', VFIO_PCI_DRIVER))) {
    throw new PhysmemError('ENODEV', 'the vfio-pci driver is not loaded', {
      path: join(root, 'bus', 'pci', 'drivers', VFIO_PCI_DRIVER),
      hint: 'load it as root: modprobe vfio-pci (it loads vfio and vfio_iommu_type1 too); to load it at boot add vfio-pci to /etc/modules',
    });
  }
  const previousDriver = driverOf(canonical, root);
  bindDriver(canonical, VFIO_PCI_DRIVER, options);
  return { previousDriver: previousDriver === VFIO_PCI_DRIVER ? undefined : previousDriver, group: group.group, path: group.path };
}

/**
 * Give the device back to the kernel's own choice of driver (clears
 * `driver_override`, unbinds vfio-pci, probes). Close every VfioDevice of it
 * first: vfio-pci waits for the device to be released before it lets go.
 * Needs root.
 * @returns the driver bound afterwards, or undefined when the kernel has none for the device.
 * @throws {PhysmemError} EINVAL (bad address), EBUSY (open through VFIO in this process), EACCES (not root).
 */
export function restoreDriver(bdf: string, options: BindOptions = {}): string | undefined {
  if (isVfioDeviceOpen(bdf)) {
    throw new PhysmemError('EBUSY', `${normalizeBdf(bdf)} is open through VFIO in this process`, {
      hint: 'close the VfioDevice first: vfio-pci would wait for it to be released, and this process would wait for itself',
    });
  }
  return restorePciDriver(bdf, options);
}
