/**
 * Drive QEMU's edu device end to end: identify it, check it is alive, have it
 * compute a factorial, and DMA random data RAM -> device -> RAM through
 * physmem buffers, checking every byte.
 *
 *   node dist/examples/edu/main.js [auto|devmem|hugepage|fake]
 *   node dist/examples/edu/main.js --vfio [msi|intx] [bdf]   (vfio.ts: IOMMU, interrupts)
 *
 * Run as root in a QEMU guest started with `-device edu,dma_mask=0xffffffffff`
 * and DMA memory: mem=/memmap= on the kernel command line (devmem, picked by
 * 'auto'), or huge pages (`echo 8 > /proc/sys/vm/nr_hugepages`, then 'hugepage').
 * 'fake' runs the same driver code anywhere, without root, against
 * physmem/testing's model of edu and the fake backend.
 * @module
 */
import { randomFillSync } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { PhysmemError, openPoolSync, type Pool } from '../../lib/index.js';
import { FakeEdu } from '../../lib/testing/index.js';
import { Edu } from './edu.js';

/** Which memory the example takes its DMA buffers from. */
export type ExampleBackend = 'auto' | 'devmem' | 'hugepage' | 'fake';

function openDmaPool(backend: ExampleBackend): Pool {
  const pool = backend === 'hugepage' ? openPoolSync({ backend, pages: 1 }) : openPoolSync({ backend });
  if (pool.backend === 'fake') {
    // The fake backend's addresses are made up: a real device must never see them.
    pool.close();
    throw new PhysmemError('ENOMEM', 'no memory a device can reach (only the fake backend is available)', {
      hint: 'reserve RAM with mem= or memmap= on the kernel command line, or huge pages and pass "hugepage"',
    });
  }
  return pool;
}

/**
 * The example's steps on an opened edu driver and a pool whose bus addresses
 * the device reaches: identify, liveness, factorial, then 2 KiB of random data
 * RAM -> device -> RAM, checked byte for byte. `main()` runs it on the real
 * device; the host tests run it unchanged on physmem/testing's FakeEdu.
 * @throws {PhysmemError} EIO (liveness or data mismatch), ETIMEDOUT.
 */
export function runExample(edu: Edu, pool: Pool, log: (line: string) => void = console.log): void {
  const { major, minor } = edu.version();
  log(`edu ${major}.${minor} at ${edu.name}, registers at 0x${edu.regs.phys.toString(16)}`);

  if (!edu.isAlive()) throw new PhysmemError('EIO', 'edu: liveness check failed');
  log('liveness: ok');

  log(`factorial(10) = ${edu.factorial(10)}`);

  log(pool.describe());
  const length = 2048;
  const src = pool.alloc(length, { align: 4096 });
  const dst = pool.alloc(length, { align: 4096 });
  try {
    randomFillSync(src.bytes); // plain stores: Edu's doorbell (write32) orders them before the device reads
    dst.bytes.fill(0xa5);

    edu.toDevice(src.bus, 0, length); // RAM -> device buffer
    edu.fromDevice(0, dst.bus, length); // device buffer -> RAM
    const bad = dst.bytes.findIndex((b, i) => b !== src.bytes[i]);
    if (bad >= 0) throw new PhysmemError('EIO', `DMA round trip: byte ${bad} differs (${dst.bytes[bad]} != ${src.bytes[bad]})`);
    log(`DMA: ${length} random bytes 0x${src.bus.toString(16)} -> edu -> 0x${dst.bus.toString(16)}: identical`);
  } finally {
    src.free();
    dst.free();
  }
}

/**
 * Run the example on the real edu device. `log` receives one line per step.
 * @throws {PhysmemError} ENOENT (no edu device), EACCES (not root), ENOMEM (no DMA memory), EIO (data mismatch), ETIMEDOUT.
 */
export function main(backend: ExampleBackend = 'auto', log: (line: string) => void = console.log): void {
  if (backend === 'fake') {
    mainFake(log);
    return;
  }
  const edu = Edu.open();
  let pool: Pool | undefined;
  try {
    pool = openDmaPool(backend);
    runExample(edu, pool, log);
  } finally {
    pool?.close();
    edu.close();
  }
}

/**
 * The example on physmem/testing's FakeEdu and a fake-backend pool: no
 * device, no root. Ends by checking the model saw no driver bug.
 * @throws {PhysmemError} EIO when the model recorded a violation.
 */
function mainFake(log: (line: string) => void): void {
  const pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
  const fake = new FakeEdu({ pool });
  try {
    runExample(new Edu(fake.mapBar(0), { irq: fake, name: `${fake.bdf} (FakeEdu)` }), pool, log);
    fake.assertNoViolations();
  } finally {
    fake.close();
    pool.close();
  }
}

// Run when executed directly (not when imported by the guest test).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const fail = (e: unknown): void => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  };
  if (process.argv[2] === '--vfio') {
    const { mainVfio } = await import('./vfio.js');
    await mainVfio((process.argv[3] ?? 'msi') as 'msi' | 'intx', process.argv[4]).catch(fail);
  } else {
    try {
      main((process.argv[2] ?? 'auto') as ExampleBackend);
    } catch (e) {
      fail(e);
    }
  }
}
