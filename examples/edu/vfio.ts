/**
 * The edu example through VFIO: the device is owned by this program, its DMA
 * goes through the IOMMU into a vfio pool (`buf.bus` is an IOVA), and the
 * driver waits for interrupts (MSI, or INTx) instead of polling. No root
 * needed once the device is bound to vfio-pci and `/dev/vfio/<group>` is
 * the user's (docs/vfio.md).
 *
 *   node dist/examples/edu/main.js --vfio [msi|intx] [bdf]
 *
 * In your own project, import from 'physmem/vfio' instead.
 * @module
 */
import { randomFillSync } from 'node:crypto';
import { PhysmemError } from '../../lib/index.js';
import { listPciDevices } from '../../lib/pci/index.js';
import { VfioDevice } from '../../lib/vfio/index.js';
import { Edu, EDU_DEVICE, EDU_VENDOR } from './edu.js';

/**
 * Open edu (the first one, or `bdf`) through VFIO with interrupts of `type`
 * enabled and bus mastering on; the driver's `close()` closes the device.
 * @throws {PhysmemError} ENOENT (no edu), and VfioDevice.open's errors (EBUSY not bound to vfio-pci: bindVfio; EACCES).
 */
export function openVfioEdu(type: 'msi' | 'intx' = 'msi', bdf?: string): Edu {
  const addr = bdf ?? listPciDevices({ vendor: EDU_VENDOR, device: EDU_DEVICE })[0]?.bdf;
  if (addr === undefined) throw new PhysmemError('ENOENT', 'no edu device (1234:11e8) on this machine', { hint: 'start QEMU with -device edu' });
  const dev = VfioDevice.open(addr);
  try {
    dev.setBusMaster(true); // DMA, and MSI (a memory write), through the IOMMU
    dev.enableInterrupts({ type });
    return new Edu(dev.mapBar(0), { irq: dev, name: addr, onClose: () => dev.close() });
  } catch (e) {
    dev.close();
    throw e;
  }
}

/**
 * Identify, liveness, factorial by interrupt, and 2 KiB of random data
 * RAM -> edu -> RAM through a vfio pool, each DMA completed by interrupt,
 * checked byte for byte.
 * @throws {PhysmemError} EIO (data mismatch), ETIMEDOUT (no interrupt), and openVfioEdu's errors.
 */
export async function mainVfio(type: 'msi' | 'intx' = 'msi', bdf?: string, log: (line: string) => void = console.log): Promise<void> {
  const edu = openVfioEdu(type, bdf);
  try {
    const dev = edu.irq as VfioDevice;
    const { major, minor } = edu.version();
    log(`edu ${major}.${minor} at ${edu.name} through VFIO (${dev.groupPath}), interrupts: ${type}`);
    if (!edu.isAlive()) throw new PhysmemError('EIO', 'edu: liveness check failed');
    log('liveness: ok');
    log(`factorial(10) = ${await edu.factorialAsync(10)} (by interrupt)`);
    using pool = dev.openPool({ size: 64 * 1024 });
    log(pool.describe());
    const length = 2048;
    const src = pool.alloc(length, { align: 4096 });
    const dst = pool.alloc(length, { align: 4096 });
    randomFillSync(src.bytes);
    dst.bytes.fill(0xa5);
    await edu.toDeviceAsync(src.bus, 0, length);
    await edu.fromDeviceAsync(0, dst.bus, length);
    const bad = dst.bytes.findIndex((b, i) => b !== src.bytes[i]);
    if (bad >= 0) throw new PhysmemError('EIO', `DMA round trip: byte ${bad} differs (${dst.bytes[bad]} != ${src.bytes[bad]})`);
    log(`DMA by interrupt: ${length} random bytes IOVA 0x${src.bus.toString(16)} -> edu -> IOVA 0x${dst.bus.toString(16)}: identical`);
    src.free();
    dst.free();
  } finally {
    edu.close();
  }
}
