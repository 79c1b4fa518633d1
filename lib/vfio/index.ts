/**
 * physmem/vfio: a PCI device owned by this program through VFIO. The IOMMU
 * confines its DMA to memory the program mapped (vfio pools hand out IOVAs),
 * interrupts arrive as events, closing the device releases it, and a user
 * with access to `/dev/vfio/<group>` needs no root.
 *
 * ```ts
 * import { VfioDevice, bindVfio } from 'physmem/vfio';
 * bindVfio('0000:00:03.0');                       // once, as root
 * using dev = VfioDevice.open('0000:00:03.0');
 * const regs = dev.mapBar(0);
 * dev.setBusMaster(true);
 * dev.enableInterrupts({ type: 'msi' });
 * await dev.waitInterrupt(0, { timeoutMs: 1000 });
 * ```
 * See docs/vfio.md.
 * @module
 */
export { VfioDevice, isVfioDeviceOpen, VFIO_PCI_CONFIG_REGION_INDEX } from './device.js';
export type { VfioOpenOptions, VfioDeviceEvents, VfioRegion } from './device.js';
export { VfioContainer, FALLBACK_IOVA_RANGES } from './container.js';
export type { IovaRange, DmaAccess, VfioContainerOptions } from './container.js';
export { bindVfio, restoreDriver } from './bind.js';
export type { BindVfioResult } from './bind.js';
export { vfioGroupOf, checkGroupViable, openVfioGroup, isVfioCompatibleDriver, VFIO_PCI_DRIVER } from './group.js';
export type { VfioGroupInfo, GroupMember, VfioGroupOptions } from './group.js';
export { VFIO_IRQ_INDEX, checkEnableInterruptsOptions, checkInterruptsOptions, checkWaitInterruptOptions, interruptIterator } from './irq.js';
export type { InterruptSource, InterruptType, EnableInterruptsOptions, WaitInterruptOptions, InterruptsOptions } from './irq.js';
export type { VfioDeviceInfo, VfioRegionInfo, VfioIrqInfo, VfioGroupStatus } from '../native.js';
