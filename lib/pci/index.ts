/**
 * physmem/pci: what a userspace PCI driver needs next to its DMA memory.
 * Find and open a device through sysfs, enable it and its bus mastering,
 * read and write config space, and map memory BARs for exact-width register
 * access, ordered like Linux's writel/readl (`write32`) or not (`write32Relaxed`);
 * see docs/ordering.md.
 *
 * @example
 * import { PciDevice } from 'physmem/pci';
 * using dev = PciDevice.find({ vendor: 0x1234, device: 0x11e8 }); // QEMU's edu
 * dev.enable();
 * dev.setBusMaster(true);
 * const regs = dev.mapBar(0);
 * console.log(regs.read32(0x00).toString(16)); // 10000ed
 * @module
 */
export { PciDevice } from './device.js';
export type { PciOpenOptions, PciFindOptions, MapBarOptions, PciCloseOptions, BusMasterOptions } from './device.js';
export {
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_SPECIAL,
  PCI_COMMAND_INVALIDATE,
  PCI_COMMAND_VGA_PALETTE,
  PCI_COMMAND_PARITY,
  PCI_COMMAND_WAIT,
  PCI_COMMAND_SERR,
  PCI_COMMAND_FAST_BACK,
  PCI_COMMAND_INTX_DISABLE,
  pciLockKind,
  deviceLockHolder,
  lockDevice,
  liveOwners,
  quiesceDevice,
  findOrphanedBusMasters,
  quiesceOrphanedDevices,
} from './quiesce.js';
export type { LiveOwner, QuiesceReport, OrphanScanOptions } from './quiesce.js';
export { Mmio } from './mmio.js';
export type { MmioSource } from './mmio.js';
export {
  parseResourceFile,
  normalizeBdf,
  listPciDevices,
  DEFAULT_SYSFS_ROOT,
  IORESOURCE_IO,
  IORESOURCE_MEM,
  IORESOURCE_PREFETCH,
  IORESOURCE_MEM_64,
  PCI_BAR_COUNT,
} from './sysfs.js';
export type { PciResource, PciDeviceInfo, PciFilter, IommuGroup, IommuGroupType, IommuState } from './sysfs.js';
export { driverOf, iommuGroupOf, iommuState, isTranslated } from './sysfs.js';
export { bindDriver, unbindDriver, restoreDriver } from './bind.js';
export type { BindOptions } from './bind.js';
