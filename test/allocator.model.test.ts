/**
 * Model-based tests of RangeAllocator against a plain reference model: a
 * sorted array of live intervals. Random operations (alloc with every
 * option, free, bad frees, freeAll(owner), freeAll(), queries) run on both;
 * every result is checked against the model:
 * - a returned block lies in one range, overlaps no live block, and honours
 *   the alignment (explicit, or 64 by default, 8 with `at`), boundary,
 *   maxAddress and `at`; sizeOf/ownerOf agree;
 * - alloc returns -1 only when the model proves that no free interval can
 *   hold the request. This holds for constrained requests too, because the
 *   model keeps far fewer than SCAN_LIMIT free blocks, so the allocator's
 *   bounded scan is exhaustive here (see RangeAllocator.alloc);
 * - walk() equals the model's live blocks plus its gaps merged, i.e. free
 *   space is coalesced exactly; stats() agrees; check() passes.
 *
 * The bulk run does >= 1,000,000 operations: fast-check generates a seed
 * and a configuration per run, and a seeded xorshift32 drives the run. A
 * second property feeds fast-check's own (shrinkable) number arrays into the
 * same interpreter and verifies after every operation, so failures shrink
 * to short sequences.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RangeAllocator, SCAN_LIMIT, type AllocOptions } from '../lib/allocator/index.js';
import { PhysmemError } from '../lib/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Config {
  name: string;
  ranges: { start: number; size: number }[];
  /** Live blocks above which the run only frees. */
  maxLive: number;
  /** Largest size of an ordinary request. */
  sizeMax: number;
  /** When set, ordinary sizes are uniform in [sizeMin, sizeMax] instead of skewed small. */
  sizeMin?: number;
}

const CONFIGS: Config[] = [
  { name: 'one 1 MiB range', ranges: [{ start: 0, size: MiB }], maxLive: 200, sizeMax: 24 * KiB },
  { name: 'unaligned start and odd size', ranges: [{ start: 0x1003, size: 256 * KiB + 5 }], maxLive: 150, sizeMax: 8 * KiB },
  {
    name: 'three ranges, two touching',
    ranges: [
      { start: 0x20000, size: 128 * KiB },
      { start: 0x10000, size: 64 * KiB },
      { start: 0x100000, size: 256 * KiB },
    ],
    maxLive: 200,
    sizeMax: 16 * KiB,
  },
  { name: 'straddling 4 GiB', ranges: [{ start: 2 ** 32 - 256 * KiB, size: 512 * KiB }], maxLive: 150, sizeMax: 16 * KiB },
  {
    name: 'near 2^53, two ranges',
    ranges: [
      { start: 2 ** 53 - 2 * MiB, size: 2 * MiB },
      { start: 2 ** 52, size: MiB },
    ],
    maxLive: 150,
    sizeMax: 64 * KiB,
  },
  { name: 'tiny range, always full', ranges: [{ start: 4096, size: 4096 }], maxLive: 64, sizeMax: 512 },
  // Nearly full with sizes in wide size classes: the last fitting blocks are
  // often in the request's own class, below TLSF's rounded-up search class.
  { name: 'full, wide size classes', ranges: [{ start: 0, size: 2 * MiB }], maxLive: 120, sizeMax: 96 * KiB, sizeMin: 12 * KiB },
];

/** A source of uint32 random numbers. */
type Rand = () => number;

function xorshift32(seed: number): Rand {
  let x = seed | 0 || 0x6d2b79f5;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Reads fast-check's numbers in order, then zeros: shrinking the array shrinks the run. */
function arrayRand(values: readonly number[]): Rand {
  let i = 0;
  return () => (i < values.length ? values[i++] : 0);
}

const roundUp8 = (n: number) => Math.ceil(n / 8) * 8;
const alignUp = (x: number, a: number) => Math.ceil(x / a) * a;

class ModelError extends Error {}

function fail(msg: string): never {
  throw new ModelError(msg);
}

/** The reference model: live blocks sorted by start. */
class Model {
  starts: number[] = [];
  ends: number[] = [];
  owners: number[] = [];
  constructor(readonly ranges: { start: number; end: number }[]) {}

  /** Index of the first block with start >= x. */
  lower(x: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** True when [a, b) touches no live block. */
  isFree(a: number, b: number): boolean {
    const i = this.lower(a);
    if (i > 0 && this.ends[i - 1] > a) return false;
    if (i < this.starts.length && this.starts[i] < b) return false;
    return true;
  }

  add(a: number, b: number, owner: number): void {
    const i = this.lower(a);
    this.starts.splice(i, 0, a);
    this.ends.splice(i, 0, b);
    this.owners.splice(i, 0, owner);
  }

  removeAt(i: number): void {
    this.starts.splice(i, 1);
    this.ends.splice(i, 1);
    this.owners.splice(i, 1);
  }

  indexOf(a: number): number {
    const i = this.lower(a);
    return i < this.starts.length && this.starts[i] === a ? i : -1;
  }

  get used(): number {
    let u = 0;
    for (let i = 0; i < this.starts.length; i++) u += this.ends[i] - this.starts[i];
    return u;
  }

  /** Every block, live and free (gaps merged), as flat [addr, size, free, owner] quadruples. */
  layout(): number[] {
    const out: number[] = [];
    let i = 0;
    for (const r of this.ranges) {
      let cur = r.start;
      while (i < this.starts.length && this.starts[i] < r.end) {
        if (this.starts[i] > cur) out.push(cur, this.starts[i] - cur, 1, -1);
        out.push(this.starts[i], this.ends[i] - this.starts[i], 0, this.owners[i]);
        cur = this.ends[i];
        i++;
      }
      if (cur < r.end) out.push(cur, r.end - cur, 1, -1);
    }
    return out;
  }

  /** A free interval that can hold the request, as "[a, b)", or undefined. */
  fit(s: number, align: number, boundary: number, max: number, at: number): string | undefined {
    const L = this.layout();
    for (let k = 0; k < L.length; k += 4) {
      if (L[k + 2] !== 1) continue;
      const g0 = L[k];
      const g1 = g0 + L[k + 1];
      let st: number;
      if (at >= 0) {
        st = at;
        if (at < g0) continue;
      } else {
        st = alignUp(g0, align);
        if (boundary > 0) {
          const off = st % boundary;
          if (off + s > boundary) st += boundary - off;
        }
      }
      if (st + s <= g1 && st + s - 1 <= max) return `[0x${g0.toString(16)}, 0x${g1.toString(16)}) at 0x${st.toString(16)}`;
    }
    return undefined;
  }
}

interface Counters {
  ops: number;
  allocOk: number;
  allocFail: number;
  frees: number;
}

/**
 * Runs `ops` random operations on a fresh allocator and the model; throws
 * ModelError on any disagreement. Frees pass the block's handle half of the
 * time; with `byHandle` they always do, and nothing looks a block up by its
 * address (no sizeOf/ownerOf, no bad frees by address), so the allocator
 * must never build its address index.
 */
function runModel(cfg: Config, rand: Rand, ops: number, verifyEvery: number, checkEvery: number, counters: Counters, byHandle = false): void {
  const a = new RangeAllocator(cfg.ranges);
  const handles = new Map<number, number>(); // live block start -> lastHandle after its alloc
  const ranges = cfg.ranges.map((r) => ({ start: r.start, end: r.start + r.size })).sort((x, y) => x.start - y.start);
  const m = new Model(ranges);
  const lo = ranges[0].start;
  const hi = ranges[ranges.length - 1].end;
  const maxRange = Math.max(...cfg.ranges.map((r) => r.size));
  const opts: AllocOptions = {};
  const freed: number[] = []; // recently freed addresses, for double frees
  const uniform = (n: number) => Math.floor((rand() / 4294967296) * n);
  const randomAddress = () => lo + Math.floor((rand() / 4294967296) * (hi - lo));

  const verifyLayout = (when: string) => {
    const expected = m.layout();
    const got: number[] = [];
    a.walk((address, size, free, owner) => {
      got.push(address, size, free ? 1 : 0, owner);
    });
    if (got.length !== expected.length || got.some((v, i) => v !== expected[i])) {
      let i = 0;
      while (i < got.length && got[i] === expected[i]) i++;
      const at = i - (i % 4);
      fail(
        `${when}: walk() differs from the model at block ${at / 4}: got [${got.slice(at, at + 4)}], expected [${expected.slice(at, at + 4)}]` +
          ` (${got.length / 4} vs ${expected.length / 4} blocks)`,
      );
    }
    // stats() from the same layout.
    const st = a.stats();
    let used = 0;
    let free = 0;
    let largest = 0;
    let count = 0;
    let freeBlocks = 0;
    for (let k = 0; k < expected.length; k += 4) {
      if (expected[k + 2] === 1) {
        free += expected[k + 1];
        freeBlocks++;
        largest = Math.max(largest, expected[k + 1]);
      } else {
        used += expected[k + 1];
        count++;
      }
    }
    if (st.used !== used || st.free !== free || st.largestFree !== largest || st.count !== count || st.freeBlocks !== freeBlocks) {
      fail(`${when}: stats() ${JSON.stringify({ ...st, ranges: undefined })} disagrees with the model ${JSON.stringify({ used, free, largest, count, freeBlocks })}`);
    }
    if (st.total !== a.totalBytes || st.ranges.reduce((x, r) => x + r.used, 0) !== used || a.usedBytes !== used || a.liveBlocks !== count) {
      fail(`${when}: per-range stats or counters disagree with the totals`);
    }
    if (freeBlocks >= SCAN_LIMIT) fail('the model grew too many free blocks for exact constrained checks');
  };

  for (let op = 0; op < ops; op++) {
    counters.ops++;
    const kind = uniform(1000);
    const live = m.starts.length;
    if (kind < 430 && live < cfg.maxLive) {
      // ---- alloc, plain or with options
      const pick = rand();
      let size: number;
      if ((pick & 63) === 0) size = maxRange + 1 + uniform(4096); // too large
      else if ((pick & 7) === 1) size = 64 * (1 + uniform(Math.max(1, cfg.sizeMax / 64)));
      else if (cfg.sizeMin !== undefined) size = cfg.sizeMin + uniform(cfg.sizeMax - cfg.sizeMin + 1);
      else {
        const u = rand() / 4294967296;
        size = 1 + Math.floor(u * u * u * cfg.sizeMax);
      }
      const s = roundUp8(size);
      let align = -1;
      let boundary = 0;
      let max = Infinity;
      let owner = 0;
      const withOptions = (pick & 0x100) !== 0;
      if (withOptions) {
        opts.align = opts.boundary = opts.maxAddress = opts.at = opts.owner = undefined;
        if ((pick & 0x200) !== 0) {
          align = 2 ** uniform(14);
          if (align > maxRange) align = 64;
          opts.align = align;
        }
        if ((pick & 0xc00) === 0 && s <= 2 ** 20) {
          boundary = 2 ** (Math.ceil(Math.log2(s)) + uniform(5));
          opts.boundary = boundary;
        }
        if ((pick & 0x3000) === 0) {
          max = lo + uniform(hi - lo + 64);
          opts.maxAddress = (pick & 0x4000) !== 0 ? BigInt(max) : max;
          if (max >= hi - 1) max = Infinity;
        }
        if ((pick & 0x8000) !== 0) {
          owner = uniform(4);
          opts.owner = owner;
        }
      }
      const effAlign = align < 0 ? 64 : Math.max(align, 8);
      const p = withOptions ? a.alloc(size, opts) : a.alloc(size);
      const what = `op ${op}: alloc(${size}${withOptions ? `, ${JSON.stringify(opts, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}` : ''})`;
      if (p === -1) {
        const f = m.fit(s, effAlign, boundary, max, -1);
        if (f !== undefined) fail(`${what} returned -1 but ${f} fits`);
        counters.allocFail++;
      } else {
        handles.set(p, a.lastHandle);
        checkPlaced(a, m, ranges, what, p, s, effAlign, boundary, max, owner, byHandle);
        m.add(p, p + s, owner);
        counters.allocOk++;
      }
    } else if (kind < 500 && live < cfg.maxLive) {
      // ---- alloc at a chosen address
      const pick = rand();
      let at: number;
      if ((pick & 3) === 0 && live > 0) at = m.starts[uniform(live)]; // taken
      else if ((pick & 3) === 1 && live > 0) at = m.ends[uniform(live)]; // just after a block
      else at = Math.floor(randomAddress() / 8) * 8;
      if (at % 8 !== 0) at += 8 - (at % 8); // unaligned range start
      const u = rand() / 4294967296;
      const size = 1 + Math.floor(u * u * cfg.sizeMax);
      const s = roundUp8(size);
      opts.align = opts.boundary = opts.maxAddress = opts.at = opts.owner = undefined;
      opts.at = (pick & 4) !== 0 ? BigInt(at) : at;
      let align = 8;
      if ((pick & 8) !== 0) {
        // The largest power of two dividing `at`, up to 4096.
        while (align < 4096 && align * 2 <= maxRange && at % (align * 2) === 0) align *= 2;
        opts.align = align;
      }
      const owner = (pick >>> 4) & 3;
      opts.owner = owner;
      const p = a.alloc(size, opts);
      const what = `op ${op}: alloc(${size}, { at: 0x${at.toString(16)}, align: ${opts.align} })`;
      if (p === -1) {
        const f = m.fit(s, 8, 0, Infinity, at);
        if (f !== undefined) fail(`${what} returned -1 but ${f} is free`);
        counters.allocFail++;
      } else {
        if (p !== at) fail(`${what} returned 0x${p.toString(16)}`);
        handles.set(p, a.lastHandle);
        checkPlaced(a, m, ranges, what, p, s, align, 0, Infinity, owner, byHandle);
        m.add(p, p + s, owner);
        counters.allocOk++;
      }
    } else if (kind < 930) {
      // ---- free a live block
      if (live === 0) continue;
      const i = uniform(live);
      const p = m.starts[i];
      const expect = m.ends[i] - p;
      const got = byHandle || (rand() & 1) === 0 ? a.free(p, handles.get(p)) : a.free(p);
      if (got !== expect) fail(`op ${op}: free(0x${p.toString(16)}) returned ${got}, block size is ${expect}`);
      handles.delete(p);
      m.removeAt(i);
      freed.push(p);
      if (freed.length > 16) freed.shift();
      counters.frees++;
    } else if (kind < 960 && byHandle) {
      // ---- a live block's address with another block's handle (or a stale one) must throw EINVAL and change nothing
      if (live < 2) continue;
      const i = uniform(live);
      const j = (i + 1 + uniform(live - 1)) % live;
      const before = a.usedBytes;
      let threw: unknown;
      try {
        a.free(m.starts[i], handles.get(m.starts[j]));
      } catch (e) {
        threw = e;
      }
      if (!(threw instanceof PhysmemError) || threw.code !== 'EINVAL') fail(`op ${op}: free with a wrong handle did not throw EINVAL (${String(threw)})`);
      if (a.usedBytes !== before) fail(`op ${op}: a refused free changed the state`);
    } else if (kind < 960) {
      // ---- bad frees must throw EINVAL and change nothing
      const pick = rand() & 3;
      let addr: number;
      if (pick === 0 && live > 0) {
        const i = uniform(live);
        if (m.ends[i] - m.starts[i] <= 8) continue;
        addr = m.starts[i] + 8 * (1 + uniform((m.ends[i] - m.starts[i]) / 8 - 1));
      } else if (pick === 1 && freed.length > 0) {
        addr = freed[uniform(freed.length)];
        if (m.indexOf(addr) >= 0) continue; // reallocated since
      } else {
        addr = randomAddress();
        if (m.indexOf(addr) >= 0) continue;
      }
      const before = a.usedBytes;
      let threw: unknown;
      try {
        a.free(addr);
      } catch (e) {
        threw = e;
      }
      if (!(threw instanceof PhysmemError) || threw.code !== 'EINVAL') {
        fail(`op ${op}: free(0x${addr.toString(16)}) of a non-block did not throw EINVAL (${String(threw)})`);
      }
      if (a.usedBytes !== before) fail(`op ${op}: a failed free changed the state`);
    } else if (kind < 975) {
      // ---- freeAll(owner)
      const owner = uniform(4);
      let bytes = 0;
      for (let i = m.starts.length - 1; i >= 0; i--) {
        if (m.owners[i] === owner) {
          bytes += m.ends[i] - m.starts[i];
          handles.delete(m.starts[i]);
          m.removeAt(i);
        }
      }
      const got = a.freeAll(owner);
      if (got !== bytes) fail(`op ${op}: freeAll(${owner}) returned ${got}, expected ${bytes}`);
      verifyLayout(`op ${op}: after freeAll(${owner})`);
    } else if (kind < 976) {
      // ---- freeAll()
      const bytes = m.used;
      const got = a.freeAll();
      if (got !== bytes) fail(`op ${op}: freeAll() returned ${got}, expected ${bytes}`);
      m.starts = [];
      m.ends = [];
      m.owners = [];
      handles.clear();
      verifyLayout(`op ${op}: after freeAll()`);
    } else if (!byHandle) {
      // ---- queries
      const addr = (rand() & 1) === 0 && live > 0 ? m.starts[uniform(live)] : randomAddress();
      const i = m.indexOf(addr);
      const size = a.sizeOf(addr);
      const owner = a.ownerOf(addr);
      if (i >= 0 ? size !== m.ends[i] - m.starts[i] || owner !== m.owners[i] : size !== -1 || owner !== -1) {
        fail(`op ${op}: sizeOf/ownerOf(0x${addr.toString(16)}) = ${size}/${owner} disagree with the model`);
      }
      const j = m.lower(addr + 1) - 1;
      const containing = j >= 0 && m.ends[j] > addr ? m.starts[j] : -1;
      if (a.blockContaining(addr) !== containing) fail(`op ${op}: blockContaining(0x${addr.toString(16)}) disagrees with the model`);
    }
    if ((op + 1) % verifyEvery === 0) verifyLayout(`op ${op}`);
    if ((op + 1) % checkEvery === 0) a.check();
  }
  // Free everything in random order: each range must be one free block again.
  while (m.starts.length > 0) {
    const i = uniform(m.starts.length);
    if (byHandle) a.free(m.starts[i], handles.get(m.starts[i]));
    else a.free(m.starts[i]);
    m.removeAt(i);
  }
  if (byHandle && (a as unknown as { st: { hashOn: boolean } }).st.hashOn) fail('freeing by handle built the address index');
  verifyLayout('after freeing everything');
  const w = a.walk();
  if (w.length !== ranges.length || w.some((b, k) => !b.free || b.address !== ranges[k].start || b.size !== ranges[k].end - ranges[k].start)) {
    fail('after freeing everything, the ranges are not single free blocks');
  }
  a.check();
}

function checkPlaced(
  a: RangeAllocator,
  m: Model,
  ranges: { start: number; end: number }[],
  what: string,
  p: number,
  s: number,
  align: number,
  boundary: number,
  max: number,
  owner: number,
  byHandle: boolean,
): void {
  const hexp = `0x${p.toString(16)}`;
  if (!Number.isInteger(p) || p < 0) fail(`${what} returned ${p}`);
  if (p % align !== 0) fail(`${what} returned ${hexp}, not aligned to ${align}`);
  if (!ranges.some((r) => p >= r.start && p + s <= r.end)) fail(`${what} returned ${hexp}: [${hexp}, +${s}) is not inside one range`);
  if (!m.isFree(p, p + s)) fail(`${what} returned ${hexp}, overlapping a live block`);
  if (boundary > 0 && Math.floor(p / boundary) !== Math.floor((p + s - 1) / boundary)) {
    fail(`${what} returned ${hexp}, crossing a multiple of ${boundary}`);
  }
  if (p + s - 1 > max) fail(`${what} returned ${hexp}, ending above maxAddress`);
  if (byHandle) return; // sizeOf and ownerOf would build the address index; walk() checks sizes and owners
  if (a.sizeOf(p) !== s) fail(`${what}: sizeOf(${hexp}) = ${a.sizeOf(p)}, expected ${s}`);
  if (a.ownerOf(p) !== owner) fail(`${what}: ownerOf(${hexp}) = ${a.ownerOf(p)}, expected ${owner}`);
}

describe('RangeAllocator against a reference model', () => {
  it('agrees over 1,000,000 random operations (seeded runs)', () => {
    const counters: Counters = { ops: 0, allocOk: 0, allocFail: 0, frees: 0 };
    const RUNS = 100;
    const OPS = 10_000;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0x7fffffff }), fc.nat({ max: CONFIGS.length - 1 }), (seed, c) => {
        runModel(CONFIGS[c], xorshift32(seed), OPS, 16, 500, counters);
      }),
      { numRuns: RUNS },
    );
    expect(counters.ops).toBeGreaterThanOrEqual(1_000_000);
    expect(counters.allocOk).toBeGreaterThan(100_000);
    expect(counters.allocFail).toBeGreaterThan(1_000);
    expect(counters.frees).toBeGreaterThan(100_000);
  }, 120_000);

  it('agrees on short shrinkable sequences, verified after every operation', () => {
    const counters: Counters = { ops: 0, allocOk: 0, allocFail: 0, frees: 0 };
    fc.assert(
      fc.property(
        fc.nat({ max: CONFIGS.length - 1 }),
        fc.array(fc.nat({ max: 0xffffffff }), { minLength: 4, maxLength: 400 }),
        (c, values) => {
          runModel(CONFIGS[c], arrayRand(values), 80, 1, 10, counters);
        },
      ),
      { numRuns: 400 },
    );
    expect(counters.ops).toBeGreaterThan(10_000);
  }, 60_000);

  it('agrees when every free passes the handle, and then never builds the address index', () => {
    const counters: Counters = { ops: 0, allocOk: 0, allocFail: 0, frees: 0 };
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0x7fffffff }), fc.nat({ max: CONFIGS.length - 1 }), (seed, c) => {
        runModel(CONFIGS[c], xorshift32(seed), 5_000, 16, 500, counters, true);
      }),
      { numRuns: 30 },
    );
    expect(counters.frees).toBeGreaterThan(20_000);
  }, 120_000);

  it('runs each configuration at least once', () => {
    for (const cfg of CONFIGS) {
      runModel(cfg, xorshift32(12345), 5_000, 16, 500, { ops: 0, allocOk: 0, allocFail: 0, frees: 0 });
    }
  }, 60_000);
});
