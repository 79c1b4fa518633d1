/**
 * physmem: DMA-capable, physically contiguous memory for Linux userspace
 * drivers. Open a pool, allocate buffers, give the device `buf.bus`, and read
 * and write `buf.bytes` from JS.
 *
 * Sub-paths: `physmem/allocator` (the pure range allocator),
 * `physmem/compat` (the original allocator module's C API),
 * `physmem/testing` (FakeDmaDevice, FakePciDevice and FakeEdu for CI), `physmem/pci` (PciDevice and
 * exact-width MMIO over BARs), `physmem/vfio` (VfioDevice: a device owned
 * through VFIO, its interrupts, bindVfio).
 *
 * Driver helpers here too: memory barriers with Linux's names (`mb`, `rmb`,
 * `wmb`, `dmaRmb`, `dmaWmb`, `wcFlush`; docs/ordering.md) and `pollUntil` /
 * `pollUntilAsync` (wait for a device with a deadline).
 *
 * Backends: fake, devmem, udmabuf, hugepage, vfio (IOVAs in a VFIO
 * container, with physmem/vfio), and a daemon's pool through
 * `openPool({ service })`. Region locks keep two programs from handing out
 * the same memory.
 * @module
 */
import type { PoolAllocOptions, PoolRangeStats } from './pool.js';

export { openPool, openPoolSync, probeRealBackends } from './open.js';
export type { OpenPoolOptions, FakePoolOptions, DevmemPoolOptions, AutoPoolOptions, BackendProbe } from './open.js';
export type { UdmabufPoolOptions } from './open.js';
export { listUdmabufDevices, readUdmabufDevice, packSyncCommand, UDMABUF_CLASSES } from './backends/udmabuf.js';
export type { UdmabufDevice } from './backends/udmabuf.js';
export type { ExplicitRange, DevmemBackendOptions } from './backends/devmem.js';
export type { SyncDirectionCode } from './backends/types.js';
export { discoverRegions, readMemoryMaps, checkExplicitRange, findReservedRegions, parseCmdline, parseFirmwareMemmap, parseIomem } from './discovery/index.js';
export type { MemoryRegion, DiscoveryResult, DiscoverOptions, FindReservedRegionsInput, MemoryMaps, ReadOptions } from './discovery/index.js';
export type { ParsedCmdline, ParsedIomem, FirmwareRange, FirmwareInput, ExplicitRangeCheck, CheckExplicitRangeOptions, MemOption, MemOptionKind, IomemEntry, RawFirmwareEntry } from './discovery/index.js';
export { Pool, DmaBuffer } from './pool.js';
export type { PoolAllocOptions, AsyncAllocOptions, PoolStats, PoolRangeStats, PoolBlock, PoolCommonOptions, LeakCheck } from './pool.js';
/**
 * @deprecated Renamed {@link PoolAllocOptions} (physmem/allocator has a different `AllocOptions`); this alias goes in the next release.
 */
export type AllocOptions = PoolAllocOptions;
/**
 * @deprecated Renamed {@link PoolRangeStats} (physmem/allocator has a different `RangeStats`); this alias goes in the next release.
 */
export type RangeStats = PoolRangeStats;
export type { SyncDirection } from './pool.js';
export { SubPool, SubPoolBlock, subPoolLayout } from './subpool.js';
export type { SubPoolOptions, SubPoolLayout, SubPoolMemory, SubPoolSource } from './subpool.js';
export type { BackendName } from './backends/types.js';
export { FAKE_DEFAULT_PHYS_BASE, FAKE_DEFAULT_SIZE } from './backends/fake.js';
export { PhysmemError } from './errors.js';
export { mb, rmb, wmb, dmaRmb, dmaWmb, wcFlush, barrierArch } from './ordering.js';
export { pollUntil, pollUntilAsync } from './poll.js';
export type { PollOptions } from './poll.js';
export type { PhysmemErrorFields } from './errors.js';
export type { HugepagePoolOptions, VfioPoolOptions } from './open.js';
export type { VfioPoolTarget } from './backends/vfio.js';
export { lockRegion, listRegionLocks, prepareLockDir, resolveLockDir, RegionLock, DEFAULT_LOCK_DIR, LOCK_DIR_ENV, DEVMEM_LOCK_KIND, fakeLockKind, udmabufLockKind } from './locks.js';
export type { LockRangeInput, LockedRange, LockRegionOptions, RegionHolder, RegionLockList, ListRegionLocksOptions } from './locks.js';
export { ServicePool, ServiceBuffer } from './service/client.js';
export type { ServicePoolOptions, ServiceAllocOptions, ServiceConnectOptions, ServiceStats } from './service/client.js';
export { startServer, ServiceServer, DEFAULT_MAX_WAITS, DEFAULT_QUARANTINE_MS, DEFAULT_GRACE_MS } from './service/server.js';
export type { ServeOptions, ServiceBlock } from './service/server.js';
export type { WireStats } from './service/protocol.js';
export { nativeAddonSource } from './native.js';
export type { NativeAddonSource } from './native.js';
export { VfioDevice, VfioContainer, bindVfio } from './vfio/index.js';
export type { InterruptSource, VfioOpenOptions } from './vfio/index.js';
