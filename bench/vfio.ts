/**
 * VFIO pools: what mapping memory into the IOMMU costs per MiB with 4 KiB
 * and with 2 MiB pages (VFIO_IOMMU_MAP_DMA pins every page and writes the
 * IOMMU's page table; UNMAP_DMA undoes both and flushes the IOTLB), and
 * DmaBuffer alloc+free on a vfio pool next to the fake backend's, in one run.
 *
 * Needs a PCI device bound to vfio-pci (and /dev/vfio/<group> access); where
 * there is none it says so and reports no figures. Under QEMU's TCG (the
 * project's test VM) the map figures are a reference only: the emulated
 * IOMMU and the pinning run on an emulated CPU.
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/vfio.js [bdf] [--bind VENDOR:DEVICE]`
 * (`--bind 1234:11e8` first binds every such device to vfio-pci, as root);
 * in the guest: `node scripts/vm/run.mjs --config iommu --cmd 'node dist/bench/vfio.js --bind 1234:11e8'`.
 * @module
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Bench } from 'tinybench';
import { openPoolSync, PhysmemError } from '../lib/index.js';
import { Mapping } from '../lib/mapping.js';
import { native } from '../lib/native.js';
import { hugePageSizes, hugepageCounts, mapHugepages } from '../lib/backends/hugepage.js';
import { bindVfio, VfioDevice, type VfioContainer } from '../lib/vfio/index.js';
import type { BenchResult } from './allocator.js';

const MiB = 1 << 20;
const M2 = 2 * MiB;
const VFIO_PCI = '/sys/bus/pci/drivers/vfio-pci';
const PAIRS_PER_ITERATION = 1000;
const NO_ZERO = { zero: false } as const;

/** The first device bound to vfio-pci, if any. */
function firstVfioDevice(): string | undefined {
  if (!existsSync(VFIO_PCI)) return undefined;
  return readdirSync(VFIO_PCI).filter((e) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(e)).sort()[0];
}

/** Bind every PCI device with ID `vendor:device` (hex) to vfio-pci. */
function bindAll(id: string): void {
  const [vendor, device] = id.split(':').map((x) => parseInt(x, 16));
  for (const bdf of readdirSync('/sys/bus/pci/devices')) {
    const rd = (f: string) => parseInt(readFileSync(`/sys/bus/pci/devices/${bdf}/${f}`, 'utf8'), 16);
    if (rd('vendor') === vendor && rd('device') === device) bindVfio(bdf);
  }
}

/** Microseconds per MiB to map and to unmap `mapping` at `iova`, averaged over `rounds`. */
function mapCost(container: VfioContainer, mapping: Mapping, iova: bigint, rounds: number): { map: number; unmap: number } {
  const size = mapping.length;
  let map = 0n;
  let unmap = 0n;
  for (let i = 0; i <= rounds; i++) {
    const t0 = process.hrtime.bigint();
    container.mapDma(mapping.handle, 0, size, iova);
    const t1 = process.hrtime.bigint();
    container.unmapDma(iova, size);
    const t2 = process.hrtime.bigint();
    if (i === 0) continue; // warm-up
    map += t1 - t0;
    unmap += t2 - t1;
  }
  const perMiB = (ns: bigint) => Number(ns) / 1000 / rounds / (size / MiB);
  return { map: perMiB(map), unmap: perMiB(unmap) };
}

/**
 * Run the VFIO benchmarks; none when no device is bound to vfio-pci (the reason goes to `log`).
 * @param bdf - the device to use. Default: the first one bound to vfio-pci.
 * @param size - bytes mapped per round. Default 8 MiB.
 */
export async function runVfioBenches(log: (line: string) => void = console.log, bdf = firstVfioDevice(), size = 8 * MiB): Promise<BenchResult[]> {
  if (bdf === undefined) {
    log('vfio benchmarks skipped: no PCI device is bound to vfio-pci here (they run in the test VM: node scripts/vm/run.mjs --config iommu --cmd \'node dist/bench/vfio.js --bind 1234:11e8\')');
    return [];
  }
  let dev: VfioDevice;
  try {
    dev = VfioDevice.open(bdf);
  } catch (e) {
    if (!(e instanceof PhysmemError)) throw e;
    log(`vfio benchmarks skipped: ${e.message}`);
    return [];
  }
  const results: BenchResult[] = [];
  try {
    const container = dev.container;
    const iova = 0x4000_0000n; // nothing else is mapped in this container
    const rounds = 20;
    const small = Mapping.memfd('bench-vfio', size, 'memfd:bench-vfio', 'memfd for the vfio benchmark');
    let s: { map: number; unmap: number };
    try {
      for (let off = 0; off < size; off += 4096) native().write8(small.handle, off, 0); // fault in: measure the map, not the page faults
      s = mapCost(container, small, iova, rounds);
    } finally {
      small.close();
    }
    results.push({ name: 'IOMMU map, 4 KiB pages', value: s.map, unit: 'us/MiB', target: 'reference', pass: true, detail: `unmap ${s.unmap.toFixed(1)} us/MiB; ${size / MiB} MiB per map` });
    const pages = size / M2;
    if (!hugePageSizes().includes(M2) || hugepageCounts(M2).available < pages) {
      log(`2 MiB pages skipped: ${pages} free 2 MiB huge pages needed, ${hugepageCounts(M2).available} free (echo N > /proc/sys/vm/nr_hugepages)`);
    } else {
      const huge = mapHugepages('bench-vfio-huge', pages, M2, 'memfd:bench-vfio-huge');
      let h: { map: number; unmap: number };
      try {
        for (let off = 0; off < size; off += M2) native().write8(huge.handle, off, 0);
        h = mapCost(container, huge, iova, rounds);
      } finally {
        huge.close();
      }
      results.push({
        name: 'IOMMU map, 2 MiB pages',
        value: h.map,
        unit: 'us/MiB',
        target: 'reference',
        pass: true,
        detail: `unmap ${h.unmap.toFixed(1)} us/MiB; ${(s.map / h.map).toFixed(1)} x cheaper to map than 4 KiB pages`,
      });
    }

    // DmaBuffer alloc+free: a vfio pool against the fake backend, alternating in one run.
    const vfio = openPoolSync({ backend: 'vfio', device: dev, size: 4 * MiB, leakCheck: 'warn' });
    const fake = openPoolSync({ backend: 'fake', size: 4 * MiB, leakCheck: 'warn' });
    try {
      const bench = new Bench({ time: 1500, warmupTime: 300 });
      bench.add('fake', () => {
        for (let i = 0; i < PAIRS_PER_ITERATION; i++) fake.alloc(4096, NO_ZERO).free();
      });
      bench.add('vfio', () => {
        for (let i = 0; i < PAIRS_PER_ITERATION; i++) vfio.alloc(4096, NO_ZERO).free();
      });
      await bench.run();
      const perPair = (i: number) => (bench.tasks[i].result!.latency.mean * 1e6) / PAIRS_PER_ITERATION / 1000; // ms -> us
      const f = perPair(0);
      const v = perPair(1);
      results.push({ name: 'DmaBuffer alloc+free, 4 KiB, fake pool', value: f, unit: 'us/pair', target: 'reference', pass: true });
      results.push({
        name: 'DmaBuffer alloc+free, 4 KiB, vfio pool',
        value: v,
        unit: 'us/pair',
        target: '<= 1.25 x fake',
        pass: v <= f * 1.25,
        detail: `${(v / f).toFixed(2)} x the fake pool (no system call per buffer: the pool is one IOMMU mapping)`,
      });
    } finally {
      vfio.close();
      fake.close();
    }
  } finally {
    dev.close();
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const b = args.indexOf('--bind');
  if (b >= 0) bindAll(args[b + 1] ?? '1234:11e8');
  const bdf = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--bind');
  for (const r of await runVfioBenches(console.log, bdf ?? firstVfioDevice())) {
    console.log(`${r.name}: ${r.value.toFixed(3)} ${r.unit}${r.detail ? ' - ' + r.detail : ''}`);
  }
}
