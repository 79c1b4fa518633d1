/**
 * Benchmarks of `physmem/allocator` (RangeAllocator).
 *
 * - W1: 256 MiB, sizes log-uniform in [64 B, 1 MiB] (multiples of 64); after
 *   a fill, each step frees a random live block when 10,000 are live, then
 *   allocates the next size, freeing further random blocks until it fits.
 *   Target <= 100 ns per step.
 * - W4: the W1 step with 1,000 / 10,000 / 100,000 live blocks in a range of
 *   N x 4 GiB / 10,000: the time per step must scale (100k <= 1.3 x 1k).
 * - W3c: 256 MiB, sizes log-uniform in [4 KiB, 4 MiB] (multiples of 4 KiB);
 *   allocate, and on each failure evict a random block (the failed request
 *   is dropped); mean utilisation (live bytes / range) over the failures.
 *   Target >= 88 %. Unlike W1 there is no "until it fits": the detail line
 *   also gives that variant's figures (about 87 % at the first failure of a
 *   step, 82 % over every failed retry; best fit and address-ordered first
 *   fit do no better there, 87-87.5 % and 83-85.5 %).
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/allocator.js`.
 * @module
 */
import { pathToFileURL } from 'node:url';
import { RangeAllocator } from '../lib/allocator/index.js';

/** One benchmark figure and whether it meets its target. */
export interface BenchResult {
  /** Short name, e.g. `'W1 churn 256 MiB'`. */
  name: string;
  /** The measured figure. */
  value: number;
  /** Unit of `value`, e.g. `'ns/step'`, `'%'`, `'x'`. */
  unit: string;
  /** The target in words, e.g. `'<= 100 ns/step'`. */
  target: string;
  /** True when `value` meets `target`. */
  pass: boolean;
  /** Extra figures (counts, sub-results). */
  detail?: string;
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** xorshift32 with shifts 13, 17, 5; state must be non-zero. */
class XorShift32 {
  private s: number;
  constructor(seed: number) {
    this.s = seed | 0 || 0x2545f491;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x;
    return x >>> 0;
  }
}

/** `n` sizes log-uniform in [lo, hi], rounded up to a multiple of `granule`. */
function logUniformSizes(n: number, lo: number, hi: number, granule: number, seed: number): Float64Array {
  const rng = new XorShift32(seed);
  const out = new Float64Array(n);
  const a = Math.log(lo);
  const span = Math.log(hi) - a;
  for (let i = 0; i < n; i++) {
    const u = rng.next() / 4294967296;
    const v = Math.exp(a + u * span);
    out[i] = Math.min(hi, Math.ceil(v / granule) * granule);
  }
  return out;
}

/** Random-eviction churn shared by W1 and W4; returns ns per step. */
function churn(rangeSize: number, sizes: Float64Array, liveCap: number, steps: number, seed: number): number {
  const a = new RangeAllocator([{ start: 0, size: rangeSize }]);
  const live = new Float64Array(liveCap + 1);
  let count = 0;
  let si = 0;
  const nsizes = sizes.length;
  // Inline xorshift32 for victim choice: no calls, no allocation.
  let x = seed | 0 || 1;
  // Fill (untimed): allocate until full or liveCap blocks.
  while (count < liveCap) {
    const p = a.alloc(sizes[si]);
    si = si + 1 === nsizes ? 0 : si + 1;
    if (p < 0) break;
    live[count++] = p;
  }
  const t0 = process.hrtime.bigint();
  for (let step = 0; step < steps; step++) {
    if (count >= liveCap) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = (x >>> 0) % count;
      a.free(live[i]);
      live[i] = live[--count];
    }
    const size = sizes[si];
    si = si + 1 === nsizes ? 0 : si + 1;
    let p = a.alloc(size);
    while (p < 0) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = (x >>> 0) % count;
      a.free(live[i]);
      live[i] = live[--count];
      p = a.alloc(size);
    }
    live[count++] = p;
  }
  const t1 = process.hrtime.bigint();
  return Number(t1 - t0) / steps;
}

/**
 * W3c: allocate the next size each step; on failure, sample the
 * utilisation (live bytes / range) and evict random blocks.
 *
 * `retry` false (the headline figure): the failed request is dropped and one
 * random block is evicted, then the next step. `retry` true: random blocks
 * are evicted until the request fits; `perFailure` samples every failed
 * attempt, `perStep` only the first failure of each step.
 */
function utilisation(
  rangeSize: number,
  sizes: Float64Array,
  steps: number,
  seed: number,
  retry: boolean,
): { perFailure: number; perStep: number; failures: number; ns: number } {
  const a = new RangeAllocator([{ start: 0, size: rangeSize }]);
  const liveAddr = new Float64Array(rangeSize / 4096 + 1);
  const liveSize = new Float64Array(rangeSize / 4096 + 1);
  let count = 0;
  let usedBytes = 0;
  let x = seed | 0 || 1;
  let sum = 0;
  let failures = 0;
  let sumStep = 0;
  let failedSteps = 0;
  const t0 = process.hrtime.bigint();
  for (let step = 0; step < steps; step++) {
    const size = sizes[step % sizes.length];
    let p = a.alloc(size);
    if (p < 0) {
      sumStep += usedBytes / rangeSize;
      failedSteps++;
    }
    while (p < 0) {
      sum += usedBytes / rangeSize;
      failures++;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = (x >>> 0) % count;
      a.free(liveAddr[i]);
      usedBytes -= liveSize[i];
      count--;
      liveAddr[i] = liveAddr[count];
      liveSize[i] = liveSize[count];
      if (!retry) break;
      p = a.alloc(size);
    }
    if (p < 0) continue;
    liveAddr[count] = p;
    liveSize[count] = size;
    count++;
    usedBytes += size;
  }
  const t1 = process.hrtime.bigint();
  return {
    perFailure: failures ? sum / failures : 1,
    perStep: failedSteps ? sumStep / failedSteps : 1,
    failures,
    ns: Number(t1 - t0) / steps,
  };
}

/** Runs of each timed benchmark; the fastest counts. */
const REPEATS = 3;

function best(run: () => number): number {
  let min = Infinity;
  for (let i = 0; i < REPEATS; i++) min = Math.min(min, run());
  return min;
}

/** W4's range for n live blocks: n x 4 GiB / 10,000, down to a multiple of 64. */
function w4Range(n: number): number {
  return Math.floor((n * ((4 * GiB) / 10_000)) / 64) * 64;
}

function fmt(x: number, digits = 1): string {
  return x.toFixed(digits);
}

/** Run W1, W4 and W3c; each result says whether it met its target. */
export async function runAllocatorBenches(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const sizes = logUniformSizes(1 << 20, 64, MiB, 64, 0x1234567);

  // Warm-up: let the JIT settle on the same code paths.
  churn(256 * MiB, sizes, 10_000, 300_000, 7);
  churn(w4Range(1_000), sizes, 1_000, 300_000, 7);

  // Best of REPEATS runs: the machine may be shared, and interference only
  // ever adds time.
  const w1 = best(() => churn(256 * MiB, sizes, 10_000, 2_000_000, 0xdeadbeef));
  results.push({
    name: 'W1 churn 256 MiB, 64 B..1 MiB',
    value: w1,
    unit: 'ns/step',
    target: '<= 100 ns/step',
    pass: w1 <= 100,
    detail: `best of ${REPEATS} runs of 2,000,000 steps`,
  });

  const w4: number[] = [];
  for (const n of [1_000, 10_000, 100_000]) {
    w4.push(best(() => churn(w4Range(n), sizes, n, 2_000_000, 0xc0ffee)));
  }
  const ratio = w4[2] / w4[0];
  results.push({
    name: 'W4 scaling 1k -> 100k live blocks',
    value: ratio,
    unit: 'x',
    target: '<= 1.3 x (100k vs 1k)',
    pass: ratio <= 1.3,
    detail: `1k: ${fmt(w4[0])} ns/step, 10k: ${fmt(w4[1])} ns/step, 100k: ${fmt(w4[2])} ns/step (best of ${REPEATS})`,
  });

  const big = logUniformSizes(1 << 18, 4096, 4 * MiB, 4096, 0x7777);
  utilisation(256 * MiB, big, 20_000, 3, false); // warm-up
  const u = utilisation(256 * MiB, big, 200_000, 0xabcdef, false);
  const ur = utilisation(256 * MiB, big, 200_000, 0xabcdef, true);
  results.push({
    name: 'W3c utilisation 256 MiB, 4 KiB..4 MiB',
    value: u.perFailure * 100,
    unit: '%',
    target: '>= 88 %',
    pass: u.perFailure >= 0.88,
    detail:
      `evict one random block per failure: ${u.failures} failures, ${fmt(u.ns)} ns/step; ` +
      `if instead evicting until the request fits: ${fmt(ur.perStep * 100)} % at the first failure of a step, ` +
      `${fmt(ur.perFailure * 100)} % over all ${ur.failures} failed attempts`,
  });
  return results;
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const results = await runAllocatorBenches();
  for (const r of results) {
    console.log(
      `${r.pass ? 'PASS' : 'FAIL'}  ${r.name}: ${fmt(r.value, 2)} ${r.unit} (target ${r.target})${r.detail ? `  [${r.detail}]` : ''}`,
    );
  }
}
