/**
 * physmem/testing: run driver code in CI without hardware.
 *
 * - {@link FakeDmaDevice}: a device's DMA into a pool, every transfer checked
 *   against the pool's live allocations.
 * - {@link FakePciDevice}: a register model of your own behind the same
 *   `Mmio` class as a real BAR, DMA with those checks, interrupts through the
 *   `InterruptSource` interface of VFIO devices.
 * - {@link FakeEdu}: a model of QEMU's edu device on it.
 * @module
 */
export { FakeDmaDevice } from './dma.js';
export type { DmaViolation } from './dma.js';
export { FakePciDevice } from './pci.js';
export type { FakePciDeviceOptions, FakeBarOptions, RegisterHandler, RegisterAccess, RegisterWidth, DeviceViolation } from './pci.js';
export { FakeEdu } from './edu.js';
export type { FakeEduOptions } from './edu.js';
