/**
 * Sub-pool benchmarks.
 *
 * - W2: a sub-pool of 4,096 blocks of 2 KiB, all live, used as a FIFO: each
 *   step frees the oldest block and allocates a new one. Target <= 1.5 x the
 *   same FIFO on the C++ reference of bench/reference.ts (OffsetAllocator's
 *   design over the 32 MiB pool, in 64-byte elements), median of 7 rounds
 *   interleaved with the reference's, after a warm-up run. The loop's own
 *   cost (FIFO array, counter) is included, as it would be in a driver.
 * - The same FIFO on DmaBuffers (pool.alloc / free, each with its own
 *   ArrayBuffer), for reference: what a sub-pool saves per packet.
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/subpool.js`.
 * @module
 */
import { pathToFileURL } from 'node:url';
import { openPoolSync, type DmaBuffer, type SubPool, type SubPoolBlock } from '../lib/index.js';
import type { BenchResult } from './allocator.js';
import { REFERENCE_NAME, median, reference, runReference } from './reference.js';

const BLOCK = 2048;
const LIVE = 4096;
const PAIRS = 2_000_000;
const RUNS = 7;
const POOL_BYTES = 32 << 20;
/** Largest sub-pool / reference time ratio W2 may show. */
const W2_RATIO = 1.5;

// One W2 run: returns ns per alloc+free pair. Kept flat: this is the loop being measured.
function w2Run(sub: SubPool, fifo: SubPoolBlock[], pairs: number): number {
  let head = 0;
  const t0 = process.hrtime.bigint();
  for (let n = 0; n < pairs; n++) {
    sub.free(fifo[head]);
    fifo[head] = sub.alloc();
    head = (head + 1) & (LIVE - 1);
  }
  return Number(process.hrtime.bigint() - t0) / pairs;
}

function dmaFifoRun(pool: ReturnType<typeof openPoolSync>, fifo: DmaBuffer[], pairs: number): number {
  let head = 0;
  const t0 = process.hrtime.bigint();
  for (let n = 0; n < pairs; n++) {
    fifo[head].free();
    fifo[head] = pool.alloc(BLOCK, NO_ZERO);
    head = (head + 1) & (LIVE - 1);
  }
  return Number(process.hrtime.bigint() - t0) / pairs;
}

const NO_ZERO = { zero: false } as const;

/** Run the sub-pool benchmarks; returns one result per figure. */
export async function runSubpoolBenches(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const pool = openPoolSync({ backend: 'fake', size: POOL_BYTES, leakCheck: 'off' });
  try {
    // Free one DmaBuffer first, as any real program has: the first ArrayBuffer
    // detach in a process makes V8 check for detached buffers from then on
    // (about 1 ns more per pair here), so measure in that state.
    pool.alloc(64).free();
    const sub = pool.createSubPool({ blockSize: BLOCK, count: LIVE });
    const fifo: SubPoolBlock[] = [];
    for (let i = 0; i < LIVE; i++) fifo.push(sub.alloc());
    w2Run(sub, fifo, PAIRS); // warm-up: lets V8 optimise alloc/free
    const ref = reference();
    const runs: number[] = [];
    const refRuns: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      runs.push(w2Run(sub, fifo, PAIRS));
      if (ref.ok) refRuns.push(runReference(ref.binary, ['fifo', 64, POOL_BYTES, BLOCK, LIVE, PAIRS])[0]);
    }
    const fastest = Math.min(...runs);
    const slowest = Math.max(...runs);
    const ns = median(runs.slice());
    if (sub.inUse !== LIVE) throw new Error(`W2 left ${sub.inUse} blocks live, expected ${LIVE}`);
    const rounds = `medians of ${RUNS} interleaved rounds of ${PAIRS.toLocaleString('en')} alloc+free pairs; physmem fastest ${fastest.toFixed(1)}, slowest ${slowest.toFixed(1)} ns`;
    if (ref.ok) {
      const refNs = median(refRuns);
      const ratio = ns / refNs;
      results.push({
        name: 'W2 sub-pool FIFO, 2 KiB x 4096 live',
        value: ratio,
        unit: 'x',
        target: `<= ${W2_RATIO}x the reference`,
        pass: ratio <= W2_RATIO,
        detail: `physmem ${ns.toFixed(1)} ns/pair, ${REFERENCE_NAME} ${refNs.toFixed(1)} ns/pair, ratio ${ratio.toFixed(2)}x; ${rounds}`,
      });
    } else {
      results.push({
        name: 'W2 sub-pool FIFO, 2 KiB x 4096 live',
        value: ns,
        unit: 'ns/pair',
        target: 'reference',
        pass: true,
        detail: `physmem ${ns.toFixed(1)} ns/pair; ${REFERENCE_NAME} skipped: ${ref.reason}; ${rounds}`,
      });
    }
    sub.close();

    const dma: DmaBuffer[] = [];
    for (let i = 0; i < LIVE; i++) dma.push(pool.alloc(BLOCK, NO_ZERO));
    const pairs = 200_000;
    dmaFifoRun(pool, dma, pairs);
    const dmaNs = dmaFifoRun(pool, dma, pairs);
    results.push({
      name: 'same FIFO on DmaBuffers (pool.alloc/free)',
      value: dmaNs,
      unit: 'ns/pair',
      target: 'reference',
      pass: true,
      detail: `${(dmaNs / ns).toFixed(0)} x the sub-pool; ${pairs.toLocaleString('en')} pairs, each buffer with its own ArrayBuffer`,
    });
    dma.forEach((b) => b.free());
  } finally {
    pool.close();
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const r of await runSubpoolBenches()) {
    console.log(`${r.name}: ${r.value.toFixed(1)} ${r.unit} (target ${r.target}${r.target === 'reference' ? '' : r.pass ? ', PASS' : ', MISS'})${r.detail ? ' - ' + r.detail : ''}`);
  }
}
