/**
 * The state of a {@link RangeAllocator}: the node arena (one record per
 * block, typed arrays only), the ranges, the free-list heads and bitmaps,
 * the address hash and the (lazy) skip-list towers. The helpers in
 * free-lists.ts, address-hash.ts, skip-list.ts and inspect.ts work on it;
 * range-allocator.ts holds the hot paths.
 * @internal
 * @module
 */
import { PhysmemError } from '../errors.js';

// The layout constants are const enums: tsc writes their values into the
// code that uses them. An imported `const` is read from its module's cell
// (and checked for the temporal dead zone) at every use in V8's optimised
// code, and cannot be folded into `n * 10 + 8`: that was a quarter of the
// hot paths' instructions.

/** Node record: 5 doubles = 10 int32 slots, in one ArrayBuffer. */
export const enum Rec {
  /** Doubles per node: F[n * NF] is the block's start address, F[n * NF + 1] its size. */
  NF = 5,
  /** Int32 slots per node (slots 0-3 overlap the address and the size). */
  NI = 10,
  /** Previous block in address order (level 0 of the skip list). */
  PPREV = 4,
  /** Next block in address order. */
  // eslint-disable-next-line @typescript-eslint/no-duplicate-enum-values -- a slot, not the stride NF: equal by coincidence
  PNEXT = 5,
  /** Free-list links (free blocks only). */
  FPREV = 6,
  /** Next on the free list; also chains unused records. */
  FNEXT = 7,
  /** Owner (>= 0) of a live block, or one of the {@link Tag} values. */
  META = 8,
  /** Skip-list tower: tower * 32 + level for level >= 2, -1 for level 1. Meaningful only while towers are built. */
  TOWER = 9,
}

/** Rec.META values other than an owner (>= 0). */
export const enum Tag {
  /** The two sentinels that bracket each range's address list. */
  SENTINEL = -1,
  /** An unused record. */
  UNUSED = -2,
  /** FREE0 - g (<= -3): a free block on free list g = range * Lists.RSTRIDE + class. */
  FREE0 = -3,
}

/** Indexing of the per-range free lists and bitmaps. */
export const enum Lists {
  /** log2 of the free-list index stride per range: ranges start at multiples of 2048 classes, so `g & -RSTRIDE` is g's range base. */
  RSTRIDE_LOG2 = 11,
  /** Free-list index stride per range: a power of two >= Cls.NCLASS (1600), so no `%` on the hot path. */
  RSTRIDE = 1 << RSTRIDE_LOG2,
  /** Second-level bitmap words per range (RSTRIDE / 32). */
  FL_STRIDE = RSTRIDE >>> 5,
}

const INITIAL_NODES = 64;

/** The error every invariant check throws. */
export function corrupt(detail: string): PhysmemError {
  return new PhysmemError('EIO', `allocator state is corrupt: ${detail}`, {
    hint: 'This is a bug in physmem (or its state was overwritten); please report it with the operations that led here',
  });
}

/**
 * Every field is initialised where declared with a value of its final type,
 * so V8 tracks one field type (a typed array map, a number) from the start
 * and the hot paths need no type checks on loads.
 * @internal
 */
export class AllocatorState {
  // Node arena (slots above). Both views share one buffer.
  F: Float64Array = new Float64Array(0);
  I: Int32Array = new Int32Array(0);
  nodeCap = 0;
  nodeFree = -1;
  nodeAvail = 0;

  // Segregated free lists: heads[g] for g = range * Lists.RSTRIDE + class; bitmaps:
  // slBits[g >>> 5] has bit (g & 31) set when list g is non-empty, and
  // flLo/flHi[range] bit fl when slBits[range * Lists.FL_STRIDE + fl] != 0.
  readonly heads: Int32Array;
  readonly slBits: Int32Array;
  readonly flLo: Int32Array;
  readonly flHi: Int32Array;

  // Hash of live blocks (address-hash.ts): pairs HT[2i] = node (-1: empty),
  // HT[2i + 1] = the home slot of that node's address, so deletion moves
  // entries without reading other nodes. Built on the first call that looks
  // a block up by its address (free without a handle, sizeOf, ...), kept
  // until freeAll().
  hashOn = false;
  HT: Int32Array = new Int32Array(0);
  htMask = 0;
  htShift = 0;
  htCount = 0;

  // Skip-list towers (skip-list.ts), built only while lookups by address
  // inside blocks (`at`, blockContaining) need them: the next/prev links of
  // level k (1..15) of tower t at T[t * TS + 2(k-1)] and the slot after it.
  towersOn = false;
  /** Splits and merges left before unused towers are dropped (reset by each lookup). */
  towerBudget = 0;
  T: Int32Array = new Int32Array(0);
  towerCap = 0;
  towerFree = -1;
  towerAvail = 0;

  // Ranges, sorted by start.
  readonly nRanges: number;
  readonly rStart: Float64Array;
  readonly rEnd: Float64Array;
  readonly rHead: Int32Array;
  readonly rTail: Int32Array;

  // [used bytes, live blocks]. In a typed array: a number field holding
  // values above 2^30 is a boxed HeapNumber, and updating it can allocate.
  readonly counts: Float64Array = new Float64Array(2);
  // xorshift32 state for skip-list levels. In a typed array: a full 32-bit
  // integer in a field would be boxed (not a Smi) and allocate on each store.
  readonly rng: Int32Array = new Int32Array([0x9e3779b9 | 0]);
  /** The free node that absorbed the block in the last `release`. */
  merged = -1;
  /** Node of the block the last successful alloc returned (its handle). */
  last = -1;

  /** @param ranges - disjoint, sorted by start, already validated. */
  constructor(ranges: readonly { start: number; end: number }[]) {
    const R = ranges.length;
    this.nRanges = R;
    this.rStart = new Float64Array(R);
    this.rEnd = new Float64Array(R);
    this.rHead = new Int32Array(R);
    this.rTail = new Int32Array(R);
    for (let r = 0; r < R; r++) {
      this.rStart[r] = ranges[r].start;
      this.rEnd[r] = ranges[r].end;
    }
    this.heads = new Int32Array(R * Lists.RSTRIDE);
    this.slBits = new Int32Array(R * Lists.FL_STRIDE);
    this.flLo = new Int32Array(R);
    this.flHi = new Int32Array(R);
  }

  /** Take an unused record (the caller made sure one exists). */
  newNode(): number {
    const n = this.nodeFree;
    this.nodeFree = this.I[n * Rec.NI + Rec.FNEXT];
    this.nodeAvail--;
    return n;
  }

  /** Return record x to the unused stack. */
  recycle(x: number): void {
    this.I[x * Rec.NI + Rec.META] = Tag.UNUSED;
    this.I[x * Rec.NI + Rec.FNEXT] = this.nodeFree;
    this.nodeFree = x;
    this.nodeAvail++;
  }

  /** Double the node arena. */
  growNodes(): void {
    const old = this.nodeCap;
    const cap = old === 0 ? INITIAL_NODES : old * 2;
    const buf = new ArrayBuffer(cap * Rec.NF * 8);
    const F = new Float64Array(buf);
    const I = new Int32Array(buf);
    F.set(this.F);
    for (let n = cap - 1; n >= old; n--) {
      I[n * Rec.NI + Rec.META] = Tag.UNUSED;
      I[n * Rec.NI + Rec.TOWER] = -1;
      I[n * Rec.NI + Rec.FNEXT] = this.nodeFree;
      this.nodeFree = n;
    }
    this.F = F;
    this.I = I;
    this.nodeAvail += cap - old;
    this.nodeCap = cap;
  }

  /** Index of the range containing address a, or -1. */
  rangeOf(a: number): number {
    let lo = 0;
    let hi = this.nRanges - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.rStart[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    return a >= this.rStart[lo] && a < this.rEnd[lo] ? lo : -1;
  }
}
