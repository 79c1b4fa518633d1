/**
 * `RangeAllocator`: a TLSF-style allocator of address ranges whose
 * bookkeeping lives outside the managed memory (which may be device memory,
 * or not mapped at all). This file holds the public class and its hot
 * paths; the data structures live in:
 * - state.ts: the node arena (one 40-byte record per block: start, size,
 *   address-order links, free-list links, tag; grown by doubling, unused
 *   records chained into a stack), the ranges, counters;
 * - free-lists.ts: per range, segregated free lists (1600 size classes, see
 *   size-class.ts) with a two-level bitmap, O(1) good fit;
 * - address-hash.ts: start address -> node for live blocks (`free`);
 * - skip-list.ts: lazy towers over the address list, O(log n) `at` lookups;
 * - inspect.ts: `stats`, `walk`, `check`.
 *
 * The hot paths (`alloc` without options, `free`) are written flat, with the
 * list and hash operations inlined by hand: V8 stops inlining small helpers
 * once a function grows, and calls cost more than the work here. Each inlined
 * copy names the helper it copies.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { describeValue, hex, isPowerOfTwo, optionNames, optionsChecker } from '../internal/validate.js';
import { dropHash, ensureHash, hashDelete, hashGet, hashGrow, hashInsert } from './address-hash.js';
import { clearBit, fileClass, insertFree, removeFree, setBit, findClass } from './free-lists.js';
import { check, stats, walk } from './inspect.js';
import { INV_POW2, Num, Cls, classOf, modPow2, padTo, searchClassOf } from './size-class.js';
import { containing, dropAllTowers, dropTower, towerFor } from './skip-list.js';
import { AllocatorState, Lists, Rec, Tag } from './state.js';
import type { AllocatorRange, AllocOptions, AllocatorStats, BlockInfo, WalkCallback } from './types.js';

/** This module's own uses of the two alignments (an exported `const` is read from its module cell at each use; see Rec in state.ts). */
const enum Align {
  MIN = 8,
  DEFAULT = 64,
}

/** The allocation granule: block sizes are rounded up to it and every block starts on it. */
export const MIN_ALIGN: number = Align.MIN;
/** Alignment used when `align` is not given: one cache line. */
export const DEFAULT_ALIGN: number = Align.DEFAULT;
/** Highest owner tag accepted. */
export const MAX_OWNER = 0x7fffffff;
/**
 * Free blocks a constrained allocation (`align` > 64, `boundary` or
 * `maxAddress`) examines before giving up with -1.
 */
export const SCAN_LIMIT = 4096;

/** Refuses a non-object `options` and unknown names (with "did you mean"). */
const checkAllocOptions = optionsChecker('RangeAllocator.alloc()', optionNames<AllocOptions>({ align: true, boundary: true, maxAddress: true, at: true, owner: true }));

/** describeValue, with bigints marked as such (`65536n`): a bigint where a number is wanted must be visible. */
function shown(x: unknown): string {
  return typeof x === 'bigint' ? `${x}n` : describeValue(x);
}

/** An integer (number or bigint) in [0, 2^53], as a number, or -1. */
function toAddress(x: unknown): number {
  if (typeof x === 'number') return Number.isInteger(x) && x >= 0 && x <= Num.TWO53 ? x : -1;
  if (typeof x === 'bigint') return x >= 0n && x <= 9007199254740992n ? Number(x) : -1;
  return -1;
}

/**
 * Allocator of blocks inside one or more disjoint address ranges, for
 * memory that JS code does not own directly (physical RAM, device
 * apertures, offsets into a mapping): all bookkeeping lives in JS typed
 * arrays, nothing is written into the managed memory.
 *
 * Cost: `alloc` and `free` are O(1) (TLSF segregated fit with bitmaps; a
 * hash for `free` without a handle, built on first use); `alloc` with `at`
 * is O(log n) expected (skip list, built on first use). Two
 * cases scan: a plain `alloc` whose size has no larger free class left
 * looks through the free blocks of its own one or two size classes before
 * returning -1, and constrained requests examine at most
 * {@link SCAN_LIMIT} free blocks. `freeAll(owner)`, `stats`, `walk` and
 * `check` are O(number of blocks).
 *
 * Sizes: a block's size is the requested size rounded up to 8 bytes (the
 * granule); `sizeOf` and `free` report that rounded size. Every live block
 * starts on a multiple of 8 (of 64 by default); nothing is added but the
 * alignment padding before a block, which stays free and is reused.
 *
 * Placement: the first block of the smallest non-empty size class that
 * surely fits (TLSF "good fit"), carved from its low end. With several
 * ranges, requests without `maxAddress` prefer the highest range (keeping
 * low memory for 32-bit devices); requests with `maxAddress` try the lowest
 * range first.
 *
 * Memory: 40 bytes per block (free or live); once built, about 16 to 32
 * bytes per live block of hash table, and while lookups inside blocks go
 * on, 30 bytes per block of skip-list towers on average. The tables grow by
 * doubling (the only allocations on the hot paths, amortised) and shrink
 * back on `freeAll()`.
 *
 * Not reentrant from a `walk` callback.
 *
 * @example
 * ```ts
 * const a = new RangeAllocator([{ start: 0x8000_0000n, size: 64n << 20n }]);
 * const ring = a.alloc(16 * 4096, { align: 4096, maxAddress: 0xffff_ffff });
 * const desc = a.alloc(256, { boundary: 4096, owner: 7 });
 * if (ring < 0 || desc < 0) throw new Error('out of DMA memory');
 * a.free(ring);           // 65536
 * a.freeAll(7);           // 256
 * ```
 */
export class RangeAllocator {
  /** All bookkeeping (state.ts); the helper modules work on it. */
  private readonly st: AllocatorState;
  private readonly maxRangeSize: number;
  private readonly lastEnd: number;

  /** Total bytes managed (sum of the range sizes). */
  readonly totalBytes: number;

  /**
   * @param ranges - the address ranges to manage: `[{ start, size }]` in
   *   bytes, numbers or bigints; at least one; integers with start >= 0,
   *   size > 0, start + size <= 2^53, no two overlapping (touching is fine:
   *   blocks never span two ranges). Any order.
   * @throws PhysmemError `EINVAL` when `ranges` breaks any of these rules.
   */
  constructor(ranges: readonly AllocatorRange[]) {
    if (!Array.isArray(ranges) || ranges.length === 0) {
      throw invalidArgument(
        `ranges must be a non-empty array of { start, size }, got ${Array.isArray(ranges) ? 'an empty array' : shown(ranges)}`,
      );
    }
    const list: { start: number; end: number }[] = [];
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i] as unknown;
      if (typeof r !== 'object' || r === null) {
        throw invalidArgument(`ranges[${i}] must be an object { start, size }, got ${shown(r)}`);
      }
      const { start: s0, size: z0 } = r as { start?: unknown; size?: unknown };
      const start = toAddress(s0);
      if (start < 0 || start >= Num.TWO53) {
        throw invalidArgument(`ranges[${i}].start must be an integer (number or bigint) from 0 to 2^53 - 1, got ${shown(s0)}`);
      }
      const size = toAddress(z0);
      if (size <= 0) {
        throw invalidArgument(`ranges[${i}].size must be a positive integer (number or bigint) of bytes, got ${shown(z0)}`);
      }
      if (start + size > Num.TWO53) {
        throw invalidArgument(
          `ranges[${i}] = [${hex(start)}, ${hex(start)} + ${size}) ends above 2^53; addresses must stay below 2^53 to be exact numbers`,
        );
      }
      list.push({ start, end: start + size });
    }
    list.sort((a, b) => a.start - b.start);
    for (let i = 1; i < list.length; i++) {
      if (list[i].start < list[i - 1].end) {
        throw invalidArgument(
          `ranges overlap: [${hex(list[i - 1].start)}, ${hex(list[i - 1].end)}) and [${hex(list[i].start)}, ${hex(list[i].end)})`,
          'Give disjoint ranges',
        );
      }
    }
    this.st = new AllocatorState(list);
    let total = 0;
    let maxSize = 0;
    for (const r of list) {
      total += r.end - r.start;
      maxSize = Math.max(maxSize, r.end - r.start);
    }
    this.totalBytes = total;
    this.maxRangeSize = maxSize;
    this.lastEnd = list[list.length - 1].end;
    this.reset();
  }

  // ------------------------------------------------------------------ public

  /** Bytes currently in live blocks. O(1). */
  get usedBytes(): number {
    return this.st.counts[0];
  }

  /** Number of live blocks. O(1). */
  get liveBlocks(): number {
    return this.st.counts[1];
  }

  /** The managed ranges sorted by start, `{ start, size }` in bytes (a new array). */
  get ranges(): { start: number; size: number }[] {
    const st = this.st;
    const out: { start: number; size: number }[] = [];
    for (let r = 0; r < st.nRanges; r++) out.push({ start: st.rStart[r], size: st.rEnd[r] - st.rStart[r] });
    return out;
  }

  /**
   * Allocate a block of `size` bytes (rounded up to 8).
   *
   * The block starts on a multiple of `align` (default 64). Allocates no JS
   * objects (V8 may still box a returned address above 2^30 in a number
   * cell when the call is not inlined); a call without `options` takes the
   * fastest path.
   *
   * For plain requests (no `boundary`, `maxAddress` or `at`, and `align` <=
   * 64), -1 means that no free block can hold the request. Constrained
   * requests examine at most {@link SCAN_LIMIT} free blocks, so in badly
   * fragmented memory they may return -1 although a place exists.
   *
   * @param size - bytes wanted: a positive integer. Sizes larger than every
   *   range give -1.
   * @param options - `align`, `boundary`, `maxAddress`, `at`, `owner`: see
   *   {@link AllocOptions}. Only read, never kept.
   * @returns the block's start address, or -1 when nothing fits.
   * @throws PhysmemError `EINVAL` for a size that is not a positive integer
   *   number, `options` that is not an object or has a property other than
   *   those five (the message suggests the closest name), or an invalid or
   *   contradictory option (`align` or `boundary` not a power of two, `align`
   *   larger than every range, `boundary` smaller than the rounded size, `at`
   *   not a multiple of 8 or of `align`, `at` with a `boundary` or
   *   `maxAddress` it violates, bad `owner`).
   */
  alloc(size: number, options?: AllocOptions): number {
    if (options !== undefined) return this.allocWith(size, options);
    if (!Number.isInteger(size) || size <= 0) throw badSize(size);
    if (size > this.maxRangeSize) return -1;
    return this.allocPlain(size <= 0x7ffffff0 ? (size + 7) & -8 : Math.ceil(size / 8) * 8, Align.DEFAULT, 0);
  }

  /**
   * The handle of the block the last successful `alloc` returned: a small
   * integer to pass back to {@link RangeAllocator.free} with the address,
   * which then skips the address lookup (the allocator's index of blocks by
   * address is then never built, as with OffsetAllocator's free by node).
   * Valid until that block is freed. -1 before any allocation.
   */
  get lastHandle(): number {
    return this.st.last;
  }

  /**
   * Free the live block starting at `address`. Its space merges at once with
   * free neighbours, so after freeing everything each range is one free
   * block again.
   * @param address - the start address that `alloc` returned.
   * @param handle - optional: {@link RangeAllocator.lastHandle} as read right
   *   after that `alloc`. Faster (no lookup by address); checked against
   *   `address`, so a stale or wrong handle is refused, never misused.
   * @returns the number of bytes freed: the block's size (rounded up to 8).
   * @throws PhysmemError `EINVAL` if `address` is not the start of a live
   *   block: never allocated, already freed (double free), inside a block,
   *   or not a number; or `handle` is not that block's handle.
   */
  free(address: number, handle?: number): number {
    const st = this.st;
    if (handle !== undefined) {
      // The handle is the block's node: accept it only if that node is live and starts at `address`.
      if (!(handle >= 0 && handle < st.nodeCap && (handle | 0) === handle) || st.F[handle * Rec.NF] !== address || st.I[handle * Rec.NI + Rec.META] < 0) {
        throw this.badHandle(address, handle);
      }
      if (st.hashOn) hashDelete(st, handle, address);
      return this.release(handle);
    }
    if (typeof address !== 'number') throw this.badFree(address);
    if (!st.hashOn) ensureHash(st);
    const HT = st.HT;
    const F = st.F;
    const m = st.htMask;
    // Lookup: inlined hashOf and hashGet (address-hash.ts).
    let i = (Math.imul((address >>> 0) ^ Math.imul((address * Num.INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> st.htShift) & m;
    let n: number;
    for (;;) {
      n = HT[2 * i];
      if (n < 0) throw this.badFree(address);
      if (F[n * Rec.NF] === address) break;
      i = (i + 1) & m;
    }
    // Deletion: inlined shiftBack (address-hash.ts); reads home slots, not nodes.
    let j = i;
    for (;;) {
      j = (j + 1) & m;
      const v = HT[2 * j];
      if (v < 0) break;
      const k = HT[2 * j + 1];
      if (i <= j ? k <= i || k > j : k <= i && k > j) {
        HT[2 * i] = v;
        HT[2 * i + 1] = k;
        i = j;
      }
    }
    HT[2 * i] = -1;
    st.htCount--;
    return this.release(n);
  }

  /**
   * Free every live block of one owner, or every block.
   * @param owner - the tag given to `alloc`. Omit it to free everything: the
   *   allocator returns to its initial state (and drops grown tables).
   * @returns the number of bytes freed (sum of the freed blocks' sizes).
   * @throws PhysmemError `EINVAL` if `owner` is not an integer 0..2^31-1.
   */
  freeAll(owner?: number): number {
    const st = this.st;
    if (owner === undefined) {
      const bytes = st.counts[0];
      this.reset();
      return bytes;
    }
    checkOwner(owner);
    let bytes = 0;
    for (let r = 0; r < st.nRanges; r++) {
      const tail = st.rTail[r];
      let cur = st.I[st.rHead[r] * Rec.NI + Rec.PNEXT];
      while (cur !== tail) {
        if (st.I[cur * Rec.NI + Rec.META] === owner) {
          if (st.hashOn) hashDelete(st, cur, st.F[cur * Rec.NF]);
          bytes += this.release(cur);
          cur = st.merged;
        }
        cur = st.I[cur * Rec.NI + Rec.PNEXT];
      }
    }
    return bytes;
  }

  /**
   * Size in bytes (rounded up to 8) of the live block starting at `address`,
   * or -1 if no live block starts there. O(1).
   */
  sizeOf(address: number): number {
    ensureHash(this.st);
    const n = hashGet(this.st, address);
    return n < 0 ? -1 : this.st.F[n * Rec.NF + 1];
  }

  /**
   * Owner tag of the live block starting at `address`, or -1 if no live
   * block starts there. O(1).
   */
  ownerOf(address: number): number {
    ensureHash(this.st);
    const n = hashGet(this.st, address);
    return n < 0 ? -1 : this.st.I[n * Rec.NI + Rec.META];
  }

  /**
   * Give the live block starting at `address` to another owner (its tag for
   * {@link RangeAllocator.ownerOf} and `freeAll(owner)`), in place: the block
   * is neither freed nor moved. O(1).
   * @throws PhysmemError `EINVAL` if no live block starts at `address`, or
   *   `owner` is not an integer 0..2^31-1.
   */
  setOwner(address: number, owner: number): void {
    checkOwner(owner);
    ensureHash(this.st);
    const n = hashGet(this.st, address);
    if (n < 0) throw invalidArgument(`no live block starts at ${shown(address)}`);
    this.st.I[n * Rec.NI + Rec.META] = owner;
  }

  /**
   * Start address of the live block containing `address` (its start or any
   * byte inside it), or -1 when `address` is in free space or outside every
   * range. O(log n) expected (the first lookup after many splits and merges
   * without one first rebuilds the skip list, O(n)).
   */
  blockContaining(address: number): number {
    if (typeof address !== 'number' || !(address >= 0)) return -1;
    const st = this.st;
    const r = st.rangeOf(address);
    if (r < 0) return -1;
    const n = containing(st, r, address);
    return st.I[n * Rec.NI + Rec.META] >= 0 ? st.F[n * Rec.NF] : -1;
  }

  /** Byte and block counts, in total and per range. O(number of blocks). */
  stats(): AllocatorStats {
    return stats(this.st);
  }

  /**
   * Every block, free or live, in address order (ranges in order). Allocates
   * one object per block; pass a callback to avoid that.
   */
  walk(): BlockInfo[];
  /**
   * Call `fn(address, size, free, owner)` for every block, free or live, in
   * address order; `owner` is -1 for free blocks. `fn` must not change the
   * allocator.
   */
  walk(fn: WalkCallback): void;
  walk(fn?: WalkCallback): BlockInfo[] | void {
    return walk(this.st, fn);
  }

  /**
   * Verify every internal invariant: blocks tile each range in address
   * order, no two free blocks are adjacent, live blocks are 8-byte granular,
   * free lists and bitmaps hold exactly the free blocks in their right size
   * classes, the hash holds exactly the live blocks, the skip list (when
   * built) is ordered and complete, the counters agree and no node record
   * leaks. O(n); meant for tests and debugging.
   * @throws PhysmemError `EIO` describing the first inconsistency found.
   */
  check(): void {
    check(this.st);
  }

  // ------------------------------------------------------------ alloc paths

  /** Validate options and dispatch. Reads fields of `o`; allocates nothing on success. */
  private allocWith(size: number, o: AllocOptions): number {
    if (!Number.isInteger(size) || size <= 0) throw badSize(size);
    checkAllocOptions(o);
    const align = o.align;
    const boundary = o.boundary;
    const maxAddress = o.maxAddress;
    const at = o.at;
    const owner = o.owner;
    const s = size <= 0x7ffffff0 ? (size + 7) & -8 : Math.ceil(size / 8) * 8;
    let own = 0;
    if (owner !== undefined) {
      checkOwner(owner);
      own = owner;
    }
    let al = Align.DEFAULT;
    if (align !== undefined) {
      if (!isPowerOfTwo(align)) {
        throw invalidArgument(`align must be a power of two number of bytes (1, 2, 4, ..., 4096, ...), got ${shown(align)}`);
      }
      if (align > this.maxRangeSize) {
        throw invalidArgument(`align ${align} is larger than the largest range (${this.maxRangeSize} bytes)`);
      }
      al = align < Align.MIN ? Align.MIN : align;
    }
    let b = 0;
    if (boundary !== undefined) {
      if (!isPowerOfTwo(boundary)) {
        throw invalidArgument(`boundary must be a power of two number of bytes (e.g. 4096), got ${shown(boundary)}`);
      }
      if (s > boundary) {
        throw invalidArgument(
          `size ${size} (${s} after rounding up to ${MIN_ALIGN}) is larger than boundary ${boundary}: such a block would always cross a boundary`,
        );
      }
      b = boundary;
    }
    let max = Infinity;
    if (maxAddress !== undefined) {
      if (typeof maxAddress === 'bigint') {
        if (maxAddress < 0n) throw badMaxAddress(maxAddress);
        if (maxAddress < 9007199254740992n) max = Number(maxAddress);
      } else {
        if (typeof maxAddress !== 'number' || !Number.isInteger(maxAddress) || maxAddress < 0) throw badMaxAddress(maxAddress);
        max = maxAddress;
      }
      // A limit at or above the last byte of every range is no limit.
      if (max >= this.lastEnd - 1) max = Infinity;
    }
    if (at !== undefined) {
      const a = toAddress(at);
      if (a < 0) {
        // Non-negative integers past 2^53 are valid addresses, outside every range.
        if ((typeof at === 'bigint' && at > 0n) || (typeof at === 'number' && Number.isInteger(at) && at > 0)) return -1;
        throw invalidArgument(`at must be a non-negative integer address (number or bigint), got ${shown(at)}`);
      }
      if (modPow2(a, Align.MIN) !== 0) {
        throw invalidArgument(`at ${hex(a)} is not a multiple of ${MIN_ALIGN}: blocks start on ${MIN_ALIGN}-byte granules`);
      }
      if (align !== undefined && modPow2(a, al) !== 0) {
        throw invalidArgument(`at ${hex(a)} is not a multiple of align ${align}`);
      }
      if (b !== 0 && modPow2(a, b) + s > b) {
        throw invalidArgument(`a block of ${s} bytes at ${hex(a)} would cross a multiple of boundary ${b}`);
      }
      if (a + s - 1 > max) {
        throw invalidArgument(`a block of ${s} bytes at ${hex(a)} would end above maxAddress ${hex(max)}`);
      }
      if (s > this.maxRangeSize) return -1;
      return this.allocAt(s, a, own);
    }
    if (s > this.maxRangeSize) return -1;
    if (b === 0 && max === Infinity) return this.allocPlain(s, al, own);
    return this.allocSearch(s, al, b, max, own, false);
  }

  /**
   * The fast path: the head of the first non-empty class that surely holds
   * `s` bytes, if its start is aligned (or the padding still fits).
   */
  private allocPlain(s: number, align: number, owner: number): number {
    const st = this.st;
    if (st.nodeAvail < 2) st.growNodes();
    // c = searchClassOf(s) (size-class.ts), inlined for sizes whose arithmetic stays in int32.
    let c: number;
    if (s < 64) {
      c = s;
    } else if (s < 0x7c000000) {
      let l = 31 - Math.clz32(s);
      const t = s + (1 << (l - 5)) - 1;
      l = 31 - Math.clz32(t);
      c = ((l - 5) << 5) + (t >>> (l - 5));
    } else {
      c = searchClassOf(s);
      if (c >= Cls.NCLASS) return -1;
    }
    const slBits = st.slBits;
    const cfl = c >>> 5;
    const cmask = -1 << (c & 31);
    let r = st.nRanges - 1;
    for (; r >= 0; r--) {
      // First non-empty class >= c in range r: inlined findClass (free-lists.ts).
      let fl = cfl;
      let m = slBits[r * Lists.FL_STRIDE + fl] & cmask;
      if (m === 0) {
        fl++;
        if (fl < 32) {
          m = st.flLo[r] & (-1 << fl);
          if (m !== 0) fl = 31 - Math.clz32(m & -m);
          else if ((m = st.flHi[r]) !== 0) fl = 63 - Math.clz32(m & -m);
          else continue;
        } else {
          m = st.flHi[r] & (-1 << (fl - 32));
          if (m === 0) continue;
          fl = 63 - Math.clz32(m & -m);
        }
        m = slBits[r * Lists.FL_STRIDE + fl];
      }
      const n = st.heads[r * Lists.RSTRIDE + (fl << 5) + (31 - Math.clz32(m & -m))];
      const a = st.F[n * Rec.NF];
      const rem = align <= 2147483648 ? (a >>> 0) & (align - 1) : a % align;
      // The take* helpers return nothing: an address above 2^30 returned from
      // a call that is not inlined would be boxed in a fresh HeapNumber.
      if (rem === 0) {
        this.takeLow(n, s, owner);
        return a;
      }
      const at = a + align - rem;
      if (at + s <= a + st.F[n * Rec.NF + 1]) {
        this.takeInside(n, at, s, owner);
        return at;
      }
      break;
    }
    // No class >= c has a block in any range: only blocks of the classes
    // below c can still hold s bytes; when alignment is small (no search
    // slack needed) looking through them is exact and all there is to do.
    if (r < 0 && align <= Align.DEFAULT) {
      // Usually those classes are empty, and a block found in one is usually
      // too small: test the bits and walk the lists here, without a call
      // (this runs on every failing plain request).
      // lo = classOf(s) (size-class.ts), inlined.
      let lo: number;
      if (s < 64) lo = s;
      else if (s < 2147483648) {
        const l = 31 - Math.clz32(s);
        lo = ((l - 5) << 5) + (s >>> (l - 5));
      } else lo = classOf(s);
      const F = st.F;
      const I = st.I;
      for (let rr = st.nRanges - 1; rr >= 0; rr--) {
        for (let g = rr * Lists.RSTRIDE + lo, ge = rr * Lists.RSTRIDE + c; g < ge; g++) {
          if ((slBits[g >>> 5] & (1 << (g & 31))) === 0) continue;
          // The first block of list g holding s bytes at `align` (<= 64, so the low 32 bits give the remainder).
          for (let n = st.heads[g]; n >= 0; n = I[n * Rec.NI + Rec.FNEXT]) {
            const a = F[n * Rec.NF];
            const rem = (a >>> 0) & (align - 1);
            const at = rem === 0 ? a : a + align - rem;
            if (at + s <= a + F[n * Rec.NF + 1]) {
              if (rem === 0) this.takeLow(n, s, owner);
              else this.takeInside(n, at, s, owner);
              return at;
            }
          }
        }
      }
      return -1;
    }
    return this.allocSearch(s, align, 0, Infinity, owner, align <= Align.DEFAULT);
  }

  /**
   * General search. Phase 1 walks the classes holding blocks of at least `s`
   * plus the worst-case alignment/boundary slack (their first block fits
   * unless `maxAddress` rules it out); phase 2 the smaller classes whose
   * blocks may still fit given their actual start. `exact` lifts the scan
   * limit (plain requests: phase 2 then spans only a few classes).
   */
  private allocSearch(s: number, align: number, boundary: number, max: number, owner: number, exact: boolean): number {
    const st = this.st;
    if (st.nodeAvail < 2) st.growNodes();
    const R = st.nRanges;
    // A block can always be placed in `need` bytes: the alignment padding,
    // then (for a boundary) at most s more to skip to the boundary crossed.
    const need = s + (align - 1) + (boundary !== 0 ? s : 0);
    const cHigh = searchClassOf(need);
    const cLow = classOf(s);
    const up = max !== Infinity; // lowest range first for maxAddress
    let budget = exact ? Infinity : SCAN_LIMIT;
    const F = st.F;
    const I = st.I;
    for (let phase = 0; phase < 2; phase++) {
      const from = phase === 0 ? cHigh : cLow;
      const to = phase === 0 ? Cls.NCLASS : cHigh;
      for (let i = 0; i < R; i++) {
        const r = up ? i : R - 1 - i;
        if (st.rStart[r] + s - 1 > max) break; // and every range above
        for (let c = findClass(st, r, from); c >= 0 && c < to; c = findClass(st, r, c + 1)) {
          for (let n = st.heads[r * Lists.RSTRIDE + c]; n >= 0; n = I[n * Rec.NI + Rec.FNEXT]) {
            // Lowest start in block n meeting every constraint.
            const a = F[n * Rec.NF];
            let at = a + padTo(a, align);
            if (boundary !== 0) {
              // Crossing: move to the boundary crossed, which is aligned when
              // boundary >= align (if boundary < align, aligned starts never cross).
              const off = modPow2(at, boundary);
              if (off + s > boundary) at += boundary - off;
            }
            if (at + s <= a + F[n * Rec.NF + 1] && at + s - 1 <= max) {
              this.take(n, at, s, owner);
              return at;
            }
            if (--budget <= 0) return -1;
          }
        }
      }
    }
    return -1;
  }

  /** Allocation at a fixed address: find the block containing it, O(log n). */
  private allocAt(s: number, at: number, owner: number): number {
    const st = this.st;
    if (st.nodeAvail < 2) st.growNodes();
    const r = st.rangeOf(at);
    if (r < 0 || at + s > st.rEnd[r]) return -1;
    const n = containing(st, r, at);
    if (st.I[n * Rec.NI + Rec.META] > Tag.FREE0) return -1;
    if (at + s > st.F[n * Rec.NF] + st.F[n * Rec.NF + 1]) return -1;
    this.take(n, at, s, owner);
    return at;
  }

  /** Carve [at, at + s) out of free block n. Needs 2 unused nodes. */
  private take(n: number, at: number, s: number, owner: number): void {
    if (at === this.st.F[n * Rec.NF]) this.takeLow(n, s, owner);
    else this.takeInside(n, at, s, owner);
  }

  /**
   * Carve the low `s` bytes of free block n. The remainder stays in node n
   * (its start moves up), so when its size class does not change, which is
   * common when carving from a large block, the free lists are untouched.
   */
  private takeLow(n: number, s: number, owner: number): void {
    const st = this.st;
    const F = st.F;
    const I = st.I;
    const heads = st.heads;
    const b = n * Rec.NI;
    const a = F[n * Rec.NF];
    const rest = F[n * Rec.NF + 1] - s;
    let u = n;
    if (rest === 0) {
      // Exact fit: unlink n from its free list (inlined removeFree, free-lists.ts).
      const g = Tag.FREE0 - I[b + Rec.META];
      const fp = I[b + Rec.FPREV];
      const fx = I[b + Rec.FNEXT];
      if (fx >= 0) I[fx * Rec.NI + Rec.FPREV] = fp;
      if (fp >= 0) I[fp * Rec.NI + Rec.FNEXT] = fx;
      else {
        heads[g] = fx;
        if (fx < 0) clearBit(st, g);
      }
      I[b + Rec.META] = owner;
    } else {
      // New node u before n for the live block (inlined newNode, state.ts).
      u = st.nodeFree;
      const ub = u * Rec.NI;
      st.nodeFree = I[ub + Rec.FNEXT];
      st.nodeAvail--;
      F[u * Rec.NF] = a;
      F[u * Rec.NF + 1] = s;
      F[n * Rec.NF] = a + s;
      F[n * Rec.NF + 1] = rest;
      I[ub + Rec.META] = owner;
      const p = I[b + Rec.PPREV];
      I[ub + Rec.PPREV] = p;
      I[ub + Rec.PNEXT] = n;
      I[p * Rec.NI + Rec.PNEXT] = u;
      I[b + Rec.PPREV] = u;
      if (st.towersOn) towerFor(st, u);
      // Re-file n if its size class changed: inlined fileClass (free-lists.ts).
      const g = Tag.FREE0 - I[b + Rec.META];
      let c: number;
      if (rest < 64) c = rest;
      else if (rest < 2147483648) {
        const l = 31 - Math.clz32(rest);
        c = ((l - 5) << 5) + (rest >>> (l - 5));
      } else {
        const l = 63 - Math.clz32(rest * Num.INV_TWO32);
        c = ((l - 5) << 5) + Math.floor(rest * INV_POW2[l - 5]);
      }
      const ng = (g & -Lists.RSTRIDE) + c;
      if (ng !== g) {
        // Inlined removeFree and insertFree (free-lists.ts).
        const fp = I[b + Rec.FPREV];
        const fx = I[b + Rec.FNEXT];
        if (fx >= 0) I[fx * Rec.NI + Rec.FPREV] = fp;
        if (fp >= 0) I[fp * Rec.NI + Rec.FNEXT] = fx;
        else {
          heads[g] = fx;
          if (fx < 0) clearBit(st, g);
        }
        const h = heads[ng];
        I[b + Rec.FPREV] = -1;
        I[b + Rec.FNEXT] = h;
        I[b + Rec.META] = Tag.FREE0 - ng;
        if (h >= 0) I[h * Rec.NI + Rec.FPREV] = n;
        else setBit(st, ng);
        heads[ng] = n;
      }
    }
    if (st.hashOn) {
      // Inlined hashOf and hashInsert (address-hash.ts).
      const HT = st.HT;
      const m = st.htMask;
      const home = (Math.imul((a >>> 0) ^ Math.imul((a * Num.INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> st.htShift) & m;
      let i = home;
      while (HT[2 * i] >= 0) i = (i + 1) & m;
      HT[2 * i] = u;
      HT[2 * i + 1] = home;
      if (++st.htCount > m >>> 1) hashGrow(st);
    }
    st.last = u;
    st.counts[0] += s;
    st.counts[1]++;
  }

  /** Carve [at, at + s) with at above the start of free block n: the head stays free in n. */
  private takeInside(n: number, at: number, s: number, owner: number): void {
    const st = this.st;
    const F = st.F;
    const I = st.I;
    const base = (Tag.FREE0 - I[n * Rec.NI + Rec.META]) & -Lists.RSTRIDE;
    const a = F[n * Rec.NF];
    const end = a + F[n * Rec.NF + 1];
    removeFree(st, n);
    F[n * Rec.NF + 1] = at - a;
    insertFree(st, n, base + fileClass(at - a));
    const u = st.newNode();
    F[u * Rec.NF] = at;
    F[u * Rec.NF + 1] = s;
    I[u * Rec.NI + Rec.META] = owner;
    this.linkAfter(n, u);
    if (end > at + s) {
      const t = st.newNode();
      F[t * Rec.NF] = at + s;
      F[t * Rec.NF + 1] = end - at - s;
      this.linkAfter(u, t);
      insertFree(st, t, base + fileClass(end - at - s));
    }
    if (st.hashOn) hashInsert(st, u, at);
    st.last = u;
    st.counts[0] += s;
    st.counts[1]++;
  }

  /** Insert node x after p in address order (and in the skip list while it is built). */
  private linkAfter(p: number, x: number): void {
    const st = this.st;
    const I = st.I;
    const nx = I[p * Rec.NI + Rec.PNEXT];
    I[x * Rec.NI + Rec.PPREV] = p;
    I[x * Rec.NI + Rec.PNEXT] = nx;
    I[nx * Rec.NI + Rec.PPREV] = x;
    I[p * Rec.NI + Rec.PNEXT] = x;
    if (st.towersOn) towerFor(st, x);
  }

  /** Remove node x from the address list (and the skip list while built), and recycle it. */
  private unlink(x: number): void {
    const st = this.st;
    const I = st.I;
    const b = x * Rec.NI;
    const p = I[b + Rec.PPREV];
    const nx = I[b + Rec.PNEXT];
    I[p * Rec.NI + Rec.PNEXT] = nx;
    I[nx * Rec.NI + Rec.PPREV] = p;
    if (st.towersOn) dropTower(st, x);
    st.recycle(x);
  }

  /**
   * Turn live node n (already out of the hash) into free space, merging with
   * free neighbours; returns its size and leaves the surviving free node in
   * `merged`.
   */
  private release(n: number): number {
    const st = this.st;
    const F = st.F;
    const I = st.I;
    const heads = st.heads;
    const b = n * Rec.NI;
    const s = F[n * Rec.NF + 1];
    const p = I[b + Rec.PPREV];
    const x = I[b + Rec.PNEXT];
    st.counts[0] -= s;
    st.counts[1]--;
    const pm = I[p * Rec.NI + Rec.META];
    const xm = I[x * Rec.NI + Rec.META];
    let cur: number;
    let g: number; // free list cur is on, -1 if none
    let size: number;
    if (pm <= Tag.FREE0) {
      // p absorbs n (and x when free).
      cur = p;
      g = Tag.FREE0 - pm;
      size = F[p * Rec.NF + 1] + s;
      this.unlink(n);
      if (xm <= Tag.FREE0) {
        size += F[x * Rec.NF + 1];
        removeFree(st, x);
        this.unlink(x);
      }
    } else if (xm <= Tag.FREE0) {
      // x absorbs n by moving its start down.
      cur = x;
      g = Tag.FREE0 - xm;
      F[x * Rec.NF] = F[n * Rec.NF];
      size = F[x * Rec.NF + 1] + s;
      this.unlink(n);
    } else {
      cur = n;
      g = -1;
      size = s;
    }
    F[cur * Rec.NF + 1] = size;
    // Inlined fileClass (free-lists.ts).
    let c: number;
    if (size < 64) c = size;
    else if (size < 2147483648) {
      const l = 31 - Math.clz32(size);
      c = ((l - 5) << 5) + (size >>> (l - 5));
    } else {
      const l = 63 - Math.clz32(size * Num.INV_TWO32);
      c = ((l - 5) << 5) + Math.floor(size * INV_POW2[l - 5]);
    }
    const ng = (g >= 0 ? g & -Lists.RSTRIDE : st.nRanges === 1 ? 0 : st.rangeOf(F[cur * Rec.NF]) * Lists.RSTRIDE) + c;
    if (ng !== g) {
      // Inlined removeFree and insertFree (free-lists.ts).
      const cb = cur * Rec.NI;
      if (g >= 0) {
        const fp = I[cb + Rec.FPREV];
        const fx = I[cb + Rec.FNEXT];
        if (fx >= 0) I[fx * Rec.NI + Rec.FPREV] = fp;
        if (fp >= 0) I[fp * Rec.NI + Rec.FNEXT] = fx;
        else {
          heads[g] = fx;
          if (fx < 0) clearBit(st, g);
        }
      }
      const h = heads[ng];
      I[cb + Rec.FPREV] = -1;
      I[cb + Rec.FNEXT] = h;
      I[cb + Rec.META] = Tag.FREE0 - ng;
      if (h >= 0) I[h * Rec.NI + Rec.FPREV] = cur;
      else setBit(st, ng);
      heads[ng] = cur;
    }
    st.merged = cur;
    return s;
  }

  // ------------------------------------------------------------------ setup

  /** Back to one free block per range, with fresh small tables and no towers. */
  private reset(): void {
    const st = this.st;
    st.F = new Float64Array(0);
    st.I = new Int32Array(0);
    st.nodeCap = 0;
    st.nodeFree = -1;
    st.nodeAvail = 0;
    dropAllTowers(st);
    st.heads.fill(-1);
    st.slBits.fill(0);
    st.flLo.fill(0);
    st.flHi.fill(0);
    dropHash(st);
    st.last = -1;
    st.counts[0] = 0;
    st.counts[1] = 0;
    while (st.nodeAvail < 3 * st.nRanges + 2) st.growNodes();
    const F = st.F;
    const I = st.I;
    for (let r = 0; r < st.nRanges; r++) {
      const head = st.newNode();
      const blk = st.newNode();
      const tail = st.newNode();
      F[head * Rec.NF] = -1;
      F[blk * Rec.NF] = st.rStart[r];
      F[blk * Rec.NF + 1] = st.rEnd[r] - st.rStart[r];
      F[tail * Rec.NF] = st.rEnd[r];
      I[head * Rec.NI + Rec.META] = Tag.SENTINEL;
      I[tail * Rec.NI + Rec.META] = Tag.SENTINEL;
      I[head * Rec.NI + Rec.PPREV] = -1;
      I[head * Rec.NI + Rec.PNEXT] = blk;
      I[blk * Rec.NI + Rec.PPREV] = head;
      I[blk * Rec.NI + Rec.PNEXT] = tail;
      I[blk * Rec.NI + Rec.TOWER] = -1;
      I[tail * Rec.NI + Rec.PPREV] = blk;
      I[tail * Rec.NI + Rec.PNEXT] = -1;
      st.rHead[r] = head;
      st.rTail[r] = tail;
      insertFree(st, blk, r * Lists.RSTRIDE + classOf(st.rEnd[r] - st.rStart[r]));
    }
  }

  // ------------------------------------------------------------- diagnostics

  private badHandle(address: unknown, handle: unknown): PhysmemError {
    // Whether a live block starts at `address`, without building the address index.
    const live = typeof address === 'number' && address >= 0 && this.blockContaining(address) === address;
    if (live) {
      return invalidArgument(`free(${hex(address)}, ${shown(handle)}): that is not the handle of the block at ${hex(address)}`, 'Pass lastHandle as read right after the alloc that returned this address, or no handle');
    }
    return this.badFree(address);
  }

  private badFree(address: unknown): PhysmemError {
    if (typeof address !== 'number' || !Number.isInteger(address) || address < 0) {
      return invalidArgument(
        `free() takes the start address returned by alloc() (a non-negative integer number), got ${shown(address)}`,
      );
    }
    const st = this.st;
    const r = st.rangeOf(address);
    if (r < 0) return invalidArgument(`free(${hex(address)}): address is not in any managed range`);
    const n = containing(st, r, address);
    const a = st.F[n * Rec.NF];
    if (st.I[n * Rec.NI + Rec.META] < 0) {
      return invalidArgument(`free(${hex(address)}): no live block there (double free, or never allocated)`);
    }
    return invalidArgument(
      `free(${hex(address)}): address is inside the live block at ${hex(a)} (size ${st.F[n * Rec.NF + 1]}); pass the block's start address`,
    );
  }
}

function badSize(size: unknown): PhysmemError {
  return invalidArgument(`size must be a positive integer number of bytes, got ${shown(size)}`);
}

function badMaxAddress(x: unknown): PhysmemError {
  return invalidArgument(`maxAddress must be a non-negative integer address (number or bigint), got ${shown(x)}`);
}

function checkOwner(owner: unknown): asserts owner is number {
  if (typeof owner !== 'number' || !Number.isInteger(owner) || owner < 0 || owner > MAX_OWNER) {
    throw invalidArgument(`owner must be an integer tag from 0 to ${MAX_OWNER}, got ${shown(owner)}`);
  }
}
