/**
 * What the write barrier inside `Mmio.write32` (Linux's writel) costs next to
 * `write32Relaxed` (writel_relaxed), per call, with the barrier functions
 * alone for reference. Measured on a shared memory file mapped the way a BAR
 * is mapped (the host has no device BAR): the figure is the native call and
 * the fence, not the device's own latency, which on an uncached BAR adds the
 * same amount to both. Runs of the two accessors alternate so the ratio
 * comes from the same conditions.
 *
 * Run: `npm run bench -- mmio`, or `node dist/bench/mmio.js`.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { barrierArch, dmaWmb, mb, wmb } from '../lib/index.js';
import { Mmio } from '../lib/pci/mmio.js';
import type { BenchResult } from './allocator.js';

/** Nanoseconds per call of `fn(i)`, best of `rounds` runs of `n` calls. */
function nsPerCall(fn: (i: number) => void, n: number, rounds: number): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / n);
  }
  return best;
}

/** Run the MMIO accessor benchmarks. */
export async function runMmioBenches(): Promise<BenchResult[]> {
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'physmem-bench-mmio-'));
  const file = path.join(dir, 'resource0');
  fs.writeFileSync(file, Buffer.alloc(4096));
  const m = new Mmio({ path: file, size: 4096, bar: 0, phys: 0n, writeCombining: false, hint: () => undefined });
  try {
    const N = 200_000;
    const ordered = (i: number): void => m.write32((i & 63) << 2, i);
    const relaxed = (i: number): void => m.write32Relaxed((i & 63) << 2, i);
    nsPerCall(ordered, N, 3); // warm-up: both paths optimized before measuring
    nsPerCall(relaxed, N, 3);
    let o = Infinity;
    let r = Infinity;
    for (let k = 0; k < 11; k++) {
      o = Math.min(o, nsPerCall(ordered, N, 1));
      r = Math.min(r, nsPerCall(relaxed, N, 1));
    }
    const read = nsPerCall((i) => m.read32((i & 63) << 2), N, 5);
    const readRelaxed = nsPerCall((i) => m.read32Relaxed((i & 63) << 2), N, 5);
    const fences: [string, () => void][] = [['dmaWmb()', dmaWmb], ['wmb()', wmb], ['mb()', mb]];
    const results: BenchResult[] = [
      { name: 'write32 (writel: barrier + store)', value: o, unit: 'ns/call', target: 'reference', pass: true, detail: `barriers: ${barrierArch()}` },
      { name: 'write32Relaxed (writel_relaxed)', value: r, unit: 'ns/call', target: 'reference', pass: true },
      { name: 'write32 / write32Relaxed', value: o / r, unit: 'ratio', target: '<= 1.5', pass: o / r <= 1.5, detail: 'same run, alternating' },
      { name: 'read32 (readl)', value: read, unit: 'ns/call', target: 'reference', pass: true },
      { name: 'read32Relaxed (readl_relaxed)', value: readRelaxed, unit: 'ns/call', target: 'reference', pass: true },
    ];
    for (const [name, f] of fences) results.push({ name, value: nsPerCall(f, N, 3), unit: 'ns/call', target: 'reference', pass: true });
    return results;
  } finally {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await runMmioBenches()) console.log(`${r.name.padEnd(36)} ${r.value.toFixed(3).padStart(9)} ${r.unit.padEnd(8)} ${r.target} ${r.detail ?? ''}`);
}
