/**
 * Interrupt delivery latency through VFIO: from the register write that
 * makes edu raise an interrupt (0x60) to `waitInterrupt()` resolving, for
 * MSI and INTx (INTx includes the unmask), next to the addon's eventfd path
 * alone (eventfd write -> libuv poll -> JS callback, no device), in one run.
 * Also an edu factorial completed by interrupt against the same one polled.
 *
 * A reference only: in the QEMU guest under TCG every figure is the
 * emulator's, many times what hardware with KVM shows.
 *
 * Run in the guest, as root or as the owner of /dev/vfio/<group>, with edu
 * bound to vfio-pci:
 *   node scripts/vm/run.mjs --config iommu --cmd 'node dist/bench/vfio-irq.js'
 * Elsewhere it measures the eventfd path only.
 * @module
 */
import { pathToFileURL } from 'node:url';
import { native } from '../lib/native.js';
import { listPciDevices } from '../lib/pci/index.js';
import { VfioDevice, bindVfio } from '../lib/vfio/index.js';

const IRQ_STATUS = 0x24;
const IRQ_RAISE = 0x60;
const IRQ_ACK = 0x64;
const FACTORIAL = 0x08;
const STATUS = 0x20;

interface Stats {
  n: number;
  medianUs: number;
  p99Us: number;
}

function stats(samplesNs: number[]): Stats {
  const s = [...samplesNs].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] / 1000;
  return { n: s.length, medianUs: at(0.5), p99Us: at(0.99) };
}

/** eventfd write -> the addon's uv_poll -> JS callback, `n` times. */
async function eventfdPath(n: number): Promise<Stats> {
  const a = native();
  const fd = a.eventfdCreate();
  const samples: number[] = [];
  let t0 = 0n;
  let wake: (() => void) | undefined;
  const id = a.eventfdWatch(fd, () => {
    samples.push(Number(process.hrtime.bigint() - t0));
    wake?.();
  });
  try {
    for (let i = 0; i < n; i++) {
      const done = new Promise<void>((r) => (wake = r));
      t0 = process.hrtime.bigint();
      a.eventfdWrite(fd, 1);
      await done;
    }
  } finally {
    a.eventfdUnwatch(id);
    a.close(fd);
  }
  return stats(samples);
}

/** edu raise -> waitInterrupt resolved, `n` times. */
async function deviceIrq(dev: VfioDevice, type: 'msi' | 'intx', n: number): Promise<Stats> {
  const regs = dev.mapBar(0);
  dev.enableInterrupts({ type });
  const samples: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const got = dev.waitInterrupt(0, { timeoutMs: 30_000 });
      const t0 = process.hrtime.bigint();
      regs.write32(IRQ_RAISE, 1);
      await got;
      samples.push(Number(process.hrtime.bigint() - t0));
      regs.write32(IRQ_ACK, regs.read32(IRQ_STATUS));
    }
  } finally {
    dev.disableInterrupts();
    regs.close();
  }
  return stats(samples);
}

/** Factorial completion: by MSI, and by polling the status register, alternating. */
async function factorial(dev: VfioDevice, n: number): Promise<{ irq: Stats; poll: Stats }> {
  const regs = dev.mapBar(0);
  dev.enableInterrupts({ type: 'msi' });
  const irq: number[] = [];
  const poll: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      regs.write32(STATUS, 0x80);
      const got = dev.waitInterrupt(0, { timeoutMs: 30_000 });
      let t0 = process.hrtime.bigint();
      regs.write32(FACTORIAL, 10);
      await got;
      irq.push(Number(process.hrtime.bigint() - t0));
      regs.write32(IRQ_ACK, regs.read32(IRQ_STATUS));
      regs.write32(STATUS, 0);
      t0 = process.hrtime.bigint();
      regs.write32(FACTORIAL, 10);
      while ((regs.read32(STATUS) & 1) !== 0);
      poll.push(Number(process.hrtime.bigint() - t0));
    }
  } finally {
    dev.disableInterrupts();
    regs.close();
  }
  return { irq: stats(irq), poll: stats(poll) };
}

const fmt = (s: Stats): string => `median ${s.medianUs.toFixed(1)} us, p99 ${s.p99Us.toFixed(1)} us (n=${s.n})`;

/** Run the benchmark and print its figures. */
export async function runVfioIrqBench(n = 200): Promise<void> {
  const base = await eventfdPath(n * 5);
  console.log(`eventfd -> uv_poll -> JS callback (no device): ${fmt(base)}`);
  const bdf = listPciDevices({ vendor: 0x1234, device: 0x11e8 })[0]?.bdf;
  if (bdf === undefined || !process.env.PHYSMEM_VM_GUEST) {
    console.log('no edu device here (run it in the iommu guest): device interrupts not measured');
    return;
  }
  bindVfio(bdf);
  const dev = VfioDevice.open(bdf);
  try {
    dev.setBusMaster(true);
    const msi = await deviceIrq(dev, 'msi', n);
    const intx = await deviceIrq(dev, 'intx', n);
    const f = await factorial(dev, Math.max(20, n / 4));
    console.log(`edu ${bdf} through VFIO, QEMU TCG (reference only):`);
    console.log(`  MSI  raise -> waitInterrupt: ${fmt(msi)}; ${(msi.medianUs / base.medianUs).toFixed(1)}x the eventfd path`);
    console.log(`  INTx raise -> waitInterrupt (with unmask): ${fmt(intx)}; ${(intx.medianUs / msi.medianUs).toFixed(2)}x MSI`);
    console.log(`  factorial(10) by MSI: ${fmt(f.irq)}; polled: ${fmt(f.poll)}; interrupt/poll ${(f.irq.medianUs / f.poll.medianUs).toFixed(2)}x`);
  } finally {
    dev.close();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runVfioIrqBench(Number(process.argv[2] ?? 200));
}
