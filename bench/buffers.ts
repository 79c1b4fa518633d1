/**
 * DmaBuffer benchmarks: alloc+free of a buffer with its own (detached on free)
 * ArrayBuffer next to the Node-API floor, and copy bandwidth into a
 * DmaBuffer's bytes next to a plain Uint8Array, measured side by side.
 */
import { Bench } from 'tinybench';
import { openPoolSync } from '../lib/index.js';
import { Mapping } from '../lib/mapping.js';
import { native } from '../lib/native.js';
import type { BenchResult } from './allocator.js';

const PAIRS_PER_ITERATION = 1000;

/** Run the buffer benchmarks; returns one result per figure. */
export async function runBufferBenches(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const pool = openPoolSync({ backend: 'fake', size: 96 << 20, leakCheck: 'warn' });
  const fd = native().memfdCreate('bench-floor', 1 << 20);
  const floor = Mapping.map(fd, 0n, 1 << 20, true, 'memfd:bench-floor');
  const n = native();
  const h = floor.handle;

  const bench = new Bench({ time: 1500, warmupTime: 300 });
  bench.add('Node-API floor: external ArrayBuffer create + detach', () => {
    for (let i = 0; i < PAIRS_PER_ITERATION; i++) n.detach(h, n.arrayBuffer(h, 4096, 4096));
  });
  bench.add('DmaBuffer alloc + free (4 KiB, zero: false)', () => {
    for (let i = 0; i < PAIRS_PER_ITERATION; i++) pool.alloc(4096, NO_ZERO).free();
  });
  bench.add('DmaBuffer alloc + free (4 KiB, zeroed)', () => {
    for (let i = 0; i < PAIRS_PER_ITERATION; i++) pool.alloc(4096).free();
  });
  const tracing = openPoolSync({ backend: 'fake', size: 1 << 20, leakCheck: 'trace' });
  bench.add("DmaBuffer alloc + free (4 KiB, zero: false, leakCheck 'trace')", () => {
    for (let i = 0; i < PAIRS_PER_ITERATION; i++) tracing.alloc(4096, NO_ZERO).free();
  });
  await bench.run();
  const perPair = (i: number) => (bench.tasks[i].result!.latency.mean * 1e6) / PAIRS_PER_ITERATION; // ms -> ns
  const floorNs = perPair(0);
  const pairNs = perPair(1);
  results.push({ name: 'Node-API floor (external ArrayBuffer + detach)', value: floorNs / 1000, unit: 'us/pair', target: 'reference', pass: true });
  results.push({
    name: 'DmaBuffer alloc+free, 4 KiB',
    value: pairNs / 1000,
    unit: 'us/pair',
    target: '<= 1.3 us',
    pass: pairNs <= 1300,
    detail: `${(pairNs / floorNs).toFixed(2)} x the floor`,
  });
  results.push({ name: 'DmaBuffer alloc+free, 4 KiB zeroed', value: perPair(2) / 1000, unit: 'us/pair', target: 'reference', pass: true });
  results.push({
    name: "DmaBuffer alloc+free, leakCheck 'trace'",
    value: perPair(3) / 1000,
    unit: 'us/pair',
    target: 'reference',
    pass: true,
    detail: `the stack capture costs ${((perPair(3) - pairNs) / 1000).toFixed(1)} us per allocation over 'warn' (docs/api.md quotes this)`,
  });
  tracing.close();

  for (const size of [64 << 10, 32 << 20]) {
    const src = new Uint8Array(size).map((_, i) => i & 0xff);
    const plain = new Uint8Array(size);
    const dma = pool.alloc(size, { zero: false });
    const copy = new Bench({ time: size > 1 << 20 ? 2000 : 1000, warmupTime: 200 });
    // Alternate the two so drift on the machine hits both alike.
    copy.add('plain', () => plain.set(src));
    copy.add('dma', () => dma.bytes.set(src));
    copy.add('plain again', () => plain.set(src));
    copy.add('dma again', () => dma.bytes.set(src));
    await copy.run();
    const mean = (i: number) => copy.tasks[i].result!.latency.mean;
    const plainMs = (mean(0) + mean(2)) / 2;
    const dmaMs = (mean(1) + mean(3)) / 2;
    const ratio = plainMs / dmaMs; // bandwidth ratio dma / plain
    const gbps = (ms: number) => size / (ms / 1000) / 1e9;
    results.push({
      name: `copy ${size >= 1 << 20 ? size >> 20 : size >> 10} ${size >= 1 << 20 ? 'MiB' : 'KiB'} into DmaBuffer vs Uint8Array`,
      value: ratio,
      unit: 'ratio',
      target: '>= 0.95',
      pass: ratio >= 0.95,
      detail: `${gbps(dmaMs).toFixed(2)} GB/s vs ${gbps(plainMs).toFixed(2)} GB/s`,
    });
    dma.free();
  }
  floor.close();
  n.close(fd);
  pool.close();
  return results;
}

const NO_ZERO = { zero: false } as const;
