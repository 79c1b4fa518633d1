/**
 * Benchmarks of `physmem/allocator` (RangeAllocator), each against a C++
 * reference run in the same process tree, round for round (see
 * bench/reference.ts; it implements OffsetAllocator's published design and
 * replays the same sizes and victim choices).
 *
 * - W1: 256 MiB, sizes log-uniform in [64 B, 1 MiB] (multiples of 64); after
 *   a fill, each step frees a random live block when 10,000 are live, then
 *   allocates the next size, freeing further random blocks until it fits.
 *   (The range holds only about 2,500 such blocks, so in steady state every
 *   step is a failed alloc, a free and an alloc.) Frees pass the block's
 *   handle, as the reference frees by node index. Target: <= 2.5 x the
 *   reference's time per step. The same with free(address) is printed too.
 * - W4: the W1 step (free by handle) with 1,000 / 10,000 / 100,000 live
 *   blocks in a range of N x 4 GiB / 10,000: the time per step must scale
 *   (100k <= 1.3 x 1k).
 * - W3c: 256 MiB, sizes log-uniform in [4 KiB, 4 MiB] (multiples of 4 KiB);
 *   allocate, and when a request fails evict random blocks until it fits;
 *   the figure is the mean utilisation (live bytes / range) at the first
 *   failure of each step. Target >= 86.5 % (physmem's figure before the
 *   allocator was made faster; the reference reaches about 84 %). The detail gives the same
 *   over every failed attempt, and the variant that drops the failed request
 *   after one eviction.
 *
 * Timed figures are medians of {@link ROUNDS} rounds, each round running the
 * JS workload and then the reference's.
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/allocator.js`
 * (or `npm run bench -- allocator`).
 * @module
 */
import { pathToFileURL } from 'node:url';
import { RangeAllocator } from '../lib/allocator/index.js';
import { REFERENCE_NAME, median, reference, runReference, sizesFile } from './reference.js';

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

/**
 * Random-eviction churn shared by W1 and W4; returns ns per step. With
 * `byHandle` each free passes the block's handle (RangeAllocator.lastHandle
 * read after its alloc), as OffsetAllocator frees by node; otherwise only the
 * address, through the allocator's address index.
 */
function churn(rangeSize: number, sizes: Float64Array, liveCap: number, steps: number, seed: number, byHandle: boolean): number {
  const a = new RangeAllocator([{ start: 0, size: rangeSize }]);
  const live = new Float64Array(liveCap + 1);
  const handles = new Int32Array(liveCap + 1);
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
    handles[count] = a.lastHandle;
    live[count++] = p;
  }
  const t0 = process.hrtime.bigint();
  for (let step = 0; step < steps; step++) {
    if (count >= liveCap) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = (x >>> 0) % count;
      if (byHandle) a.free(live[i], handles[i]);
      else a.free(live[i]);
      count--;
      live[i] = live[count];
      handles[i] = handles[count];
    }
    const size = sizes[si];
    si = si + 1 === nsizes ? 0 : si + 1;
    let p = a.alloc(size);
    while (p < 0) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = (x >>> 0) % count;
      if (byHandle) a.free(live[i], handles[i]);
      else a.free(live[i]);
      count--;
      live[i] = live[count];
      handles[i] = handles[count];
      p = a.alloc(size);
    }
    handles[count] = a.lastHandle;
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

/** Interleaved rounds per timed figure; the median counts. */
const ROUNDS = 7;
/** Steps per timed round of W1 and W4. */
const STEPS = 1_000_000;
/** Largest physmem / reference time ratio W1 may show. */
const W1_RATIO = 2.5;
/** Largest W4 growth, time per step at 100k live blocks over 1k. */
const W4_GROWTH = 1.3;
/** Smallest W3c utilisation (fraction of the range). */
const W3C_MIN = 0.865;

/** W4's range for n live blocks: n x 4 GiB / 10,000, down to a multiple of 64. */
function w4Range(n: number): number {
  return Math.floor((n * ((4 * GiB) / 10_000)) / 64) * 64;
}

function fmt(x: number, digits = 1): string {
  return x.toFixed(digits);
}

/** Medians of ROUNDS interleaved rounds: [physmem, reference (NaN when skipped)]. */
function interleaved(js: () => number, ref: (() => number) | undefined): [number, number] {
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    a.push(js());
    if (ref) b.push(ref());
  }
  return [median(a), ref ? median(b) : NaN];
}

/** `physmem X ns/step, <reference> Y ns/step, ratio Zx`, or the skip reason. */
function versus(js: number, ref: number, skipped: string | undefined, unit = 'ns/step'): string {
  if (skipped !== undefined) return `physmem ${fmt(js)} ${unit}; ${REFERENCE_NAME} skipped: ${skipped}`;
  return `physmem ${fmt(js)} ${unit}, ${REFERENCE_NAME} ${fmt(ref)} ${unit}, ratio ${fmt(js / ref, 2)}x`;
}

/** Run W1, W4 and W3c; each result says whether it met its target. */
export async function runAllocatorBenches(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const sizes = logUniformSizes(1 << 20, 64, MiB, 64, 0x1234567);
  const ref = reference();
  const skipped = ref.ok ? undefined : ref.reason;
  const bin = ref.ok ? ref.binary : '';
  const sizesPath = ref.ok ? sizesFile(sizes) : '';
  const refChurn = (range: number, live: number, seed: number) =>
    ref.ok ? () => runReference(bin, ['churn', sizesPath, 64, range, live, STEPS, seed])[0] : undefined;
  const rounds = `medians of ${ROUNDS} interleaved rounds of ${STEPS.toLocaleString('en')} steps`;

  // Warm-up: let the JIT settle on the same code paths.
  for (const byHandle of [true, false]) {
    churn(256 * MiB, sizes, 10_000, 300_000, 7, byHandle);
    churn(w4Range(1_000), sizes, 1_000, 300_000, 7, byHandle);
  }

  const [w1, w1ref] = interleaved(() => churn(256 * MiB, sizes, 10_000, STEPS, 0xdeadbeef, true), refChurn(256 * MiB, 10_000, 0xdeadbeef));
  results.push(ratioResult('W1 churn 256 MiB, 64 B..1 MiB, free by handle', w1, w1ref, skipped, W1_RATIO, rounds));
  const [w1a, w1aref] = interleaved(() => churn(256 * MiB, sizes, 10_000, STEPS, 0xdeadbeef, false), refChurn(256 * MiB, 10_000, 0xdeadbeef));
  results.push({
    name: 'W1 churn, free by address',
    value: w1a,
    unit: 'ns/step',
    target: 'reference',
    pass: true,
    detail: `${versus(w1a, w1aref, skipped)}; free(address) looks the block up in the address index; ${rounds}`,
  });

  const w4: number[] = [];
  const w4ref: number[] = [];
  for (const n of [1_000, 10_000, 100_000]) {
    const [js, r] = interleaved(() => churn(w4Range(n), sizes, n, STEPS, 0xc0ffee, true), refChurn(w4Range(n), n, 0xc0ffee));
    w4.push(js);
    w4ref.push(r);
    results.push({
      name: `W4 churn ${n / 1000}k live blocks, free by handle`,
      value: js,
      unit: 'ns/step',
      target: 'reference',
      pass: true,
      detail: versus(js, r, skipped),
    });
  }
  const growth = w4[2] / w4[0];
  results.push({
    name: 'W4 growth 1k -> 100k live blocks',
    value: growth,
    unit: 'x',
    target: `<= ${W4_GROWTH} x (100k vs 1k)`,
    pass: growth <= W4_GROWTH,
    detail: `physmem ${fmt(growth, 2)}x` + (skipped === undefined ? `, ${REFERENCE_NAME} ${fmt(w4ref[2] / w4ref[0], 2)}x` : '') + `; ${rounds}`,
  });

  const big = logUniformSizes(1 << 18, 4096, 4 * MiB, 4096, 0x7777);
  const bigPath = ref.ok ? sizesFile(big) : '';
  utilisation(256 * MiB, big, 20_000, 3, true); // warm-up
  const u = utilisation(256 * MiB, big, 200_000, 0xabcdef, true);
  const drop = utilisation(256 * MiB, big, 200_000, 0xabcdef, false);
  let refText = `${REFERENCE_NAME} skipped: ${skipped}`;
  if (ref.ok) {
    const [perFailure, perStep] = runReference(bin, ['util', bigPath, 4096, 256 * MiB, 200_000, 0xabcdef, 1]);
    refText = `${REFERENCE_NAME} ${fmt(perStep * 100)} % (${fmt(perFailure * 100)} % over every failed attempt)`;
  }
  results.push({
    name: 'W3c utilisation 256 MiB, 4 KiB..4 MiB',
    value: u.perStep * 100,
    unit: '%',
    target: `>= ${W3C_MIN * 100} %`,
    pass: u.perStep >= W3C_MIN,
    detail:
      `physmem ${fmt(u.perStep * 100)} % at the first failure of a step (${fmt(u.perFailure * 100)} % over all ${u.failures} failed attempts), ${refText}; ` +
      `dropping the request after one eviction instead: ${fmt(drop.perFailure * 100)} %`,
  });
  return results;
}

/** A figure whose target is a ratio to the reference's time in the same run. */
function ratioResult(name: string, js: number, ref: number, skipped: string | undefined, max: number, rounds: string): BenchResult {
  if (skipped !== undefined) {
    return { name, value: js, unit: 'ns/step', target: 'reference', pass: true, detail: `${versus(js, ref, skipped)}; ${rounds}` };
  }
  const ratio = js / ref;
  return { name, value: ratio, unit: 'x', target: `<= ${max}x the reference`, pass: ratio <= max, detail: `${versus(js, ref, skipped)}; ${rounds}` };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const results = await runAllocatorBenches();
  for (const r of results) {
    const verdict = r.target === 'reference' ? '' : ` (target ${r.target}, ${r.pass ? 'met' : 'MISSED'})`;
    console.log(`${r.name}: ${r.detail ?? `${fmt(r.value, 2)} ${r.unit}`}${verdict}`);
  }
}
