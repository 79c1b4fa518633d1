/**
 * `RangeAllocator`: a TLSF-style allocator of address ranges whose
 * bookkeeping lives outside the managed memory (which may be device memory,
 * or not mapped at all).
 *
 * Data structures (typed arrays only, no object per block):
 * - a node arena: one 32-byte record per block (start address, links, tag),
 *   grown by doubling, unused records chained into a free-node stack. A
 *   block's size is not stored: it is the next block's start minus its own,
 *   so blocks tile each range by construction and merging is just unlinking;
 * - per range, the blocks in address order as a doubly linked list between
 *   two sentinels. That list is level 0 of a skip list (towers for ~1/8 of
 *   the nodes live in a separate arena), so the block containing an address
 *   is found in O(log n) expected, for `at`;
 * - per range, segregated free lists (1600 size classes, see size-class.ts)
 *   with a two-level bitmap to find the first non-empty class >= a size in
 *   O(1);
 * - an open-addressing hash (linear probing, backward-shift deletion, load
 *   <= 1/2, 4-byte entries holding node indexes; the key is read from the
 *   node) from each live block's start address to its node, for `free`.
 *
 * The hot paths (`alloc` without options, `free`) are written flat, with the
 * list and hash operations inlined by hand: V8 stops inlining small helpers
 * once a function grows, and calls cost more than the work here.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { FL_COUNT, NCLASS, TWO53, INV_TWO32, INV_POW2, classOf, searchClassOf, modPow2, padTo, isPowerOfTwo } from './size-class.js';
import type {
  AllocatorRange,
  AllocOptions,
  AllocatorStats,
  BlockInfo,
  RangeStats,
  RangeStatsEntry,
  WalkCallback,
} from './types.js';

/** The allocation granule: block sizes are rounded up to it and every block starts on it. */
export const MIN_ALIGN = 8;
/** Alignment used when `align` is not given: one cache line. */
export const DEFAULT_ALIGN = 64;
/** Highest owner tag accepted. */
export const MAX_OWNER = 0x7fffffff;
/**
 * Free blocks a constrained allocation (`align` > 64, `boundary` or
 * `maxAddress`) examines before giving up with -1.
 */
export const SCAN_LIMIT = 4096;

// Node record: 4 doubles = 8 int32 slots, in one ArrayBuffer.
const NF = 4; // doubles per node; F[n * NF] is the start address
const NI = 8; // int32 slots per node (slots 0-1 overlap the address)
const I_PPREV = 2; // previous block in address order (level 0 of the skip list)
const I_PNEXT = 3;
const I_FPREV = 4; // free-list links (free blocks only)
const I_FNEXT = 5; // also chains unused records
const I_META = 6; // see M_* below
const I_TOWER = 7; // tower * 32 + level for nodes of level >= 2, -1 for level 1

// I_META: >= 0 is the owner of a live block; M_FREE0 - g (<= -3) is a free
// block on free list g = range * NCLASS + class.
const M_SENTINEL = -1;
const M_UNUSED = -2;
const M_FREE0 = -3;

// Skip list: level 0 is the address-ordered list; towers hold levels 1..15.
const MAX_LEVEL = 16;
const TW = MAX_LEVEL - 1; // levels per tower
const TS = 2 * TW; // tower stride in T

const INITIAL_NODES = 64;
const INITIAL_TOWERS = 16;
const INITIAL_HASH = 256;

function hex(x: number): string {
  return `0x${x.toString(16)}`;
}

function describe(x: unknown): string {
  if (typeof x === 'bigint') return `${x}n`;
  if (typeof x === 'string') return JSON.stringify(x);
  if (typeof x === 'number' || typeof x === 'boolean' || x === null || x === undefined) return String(x);
  return typeof x;
}

/** An integer (number or bigint) in [0, 2^53], as a number, or -1. */
function toAddress(x: unknown): number {
  if (typeof x === 'number') return Number.isInteger(x) && x >= 0 && x <= TWO53 ? x : -1;
  if (typeof x === 'bigint') return x >= 0n && x <= 9007199254740992n ? Number(x) : -1;
  return -1;
}

function corrupt(detail: string): PhysmemError {
  return new PhysmemError('EIO', `allocator state is corrupt: ${detail}`, {
    hint: 'This is a bug in physmem (or its state was overwritten); please report it with the operations that led here',
  });
}

/**
 * Allocator of blocks inside one or more disjoint address ranges, for
 * memory that JS code does not own directly (physical RAM, device
 * apertures, offsets into a mapping): all bookkeeping lives in JS typed
 * arrays, nothing is written into the managed memory.
 *
 * Cost: `alloc` and `free` are O(1) (TLSF segregated fit with bitmaps, and a
 * hash for `free`); `alloc` with `at` is O(log n) expected (skip list). Two
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
 * Memory: 32 bytes per block (free or live) plus about 16 bytes per live
 * block of hash table and 30 bytes per block of skip-list towers on
 * average; the tables grow by doubling (the only allocations on the hot
 * paths, amortised) and shrink back on `freeAll()`.
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
  // Every field is initialised where declared with a value of its final type,
  // so V8 tracks one field type (a typed array map, a number) from the start
  // and the hot paths need no type checks on loads.

  // Node arena (slots above). Both views share one buffer.
  private F: Float64Array = new Float64Array(0);
  private I: Int32Array = new Int32Array(0);
  private nodeCap = 0;
  private nodeFree = -1;
  private nodeAvail = 0;

  // Tower arena: the next/prev links of level k (1..15) of tower t at
  // T[t * TS + 2(k-1)] and the slot after it (one cache line for the low
  // levels). A node's I_TOWER holds t * 32 + its level.
  private T: Int32Array = new Int32Array(0);
  private towerCap = 0;
  private towerFree = -1;
  private towerAvail = 0;

  // Segregated free lists: heads[g] for g = range * NCLASS + class; bitmaps:
  // slBits[g >>> 5] has bit (g & 31) set when list g is non-empty, and
  // flLo/flHi[range] bit fl when slBits[range * FL_COUNT + fl] != 0.
  private readonly heads: Int32Array = new Int32Array(0);
  private readonly slBits: Int32Array = new Int32Array(0);
  private readonly flLo: Int32Array = new Int32Array(0);
  private readonly flHi: Int32Array = new Int32Array(0);

  // Hash of live blocks: HT[i] is a node (-1: empty); the key is the node's
  // start address, read from the arena. 4-byte entries keep the table small
  // enough to stay in cache with 100k blocks.
  private HT: Int32Array = new Int32Array(0);
  private htMask = 0;
  private htShift = 0;
  private htCount = 0;

  // Ranges, sorted by start.
  private readonly nRanges: number = 0;
  private readonly rStart: Float64Array = new Float64Array(0);
  private readonly rEnd: Float64Array = new Float64Array(0);
  private readonly rHead: Int32Array = new Int32Array(0);
  private readonly rTail: Int32Array = new Int32Array(0);
  private readonly maxRangeSize: number = 0;
  private readonly lastEnd: number = 0;

  // [used bytes, live blocks]. In a typed array: a number field holding
  // values above 2^30 is a boxed HeapNumber, and updating it can allocate.
  private readonly counts: Float64Array = new Float64Array(2);
  // xorshift32 state for skip-list levels. In a typed array: a full 32-bit
  // integer in a field would be boxed (not a Smi) and allocate on each store.
  private readonly rng: Int32Array = new Int32Array([0x9e3779b9 | 0]);
  /** The free node that absorbed the block in the last `release`. */
  private merged = -1;

  /** Total bytes managed (sum of the range sizes). */
  readonly totalBytes: number = 0;

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
        `ranges must be a non-empty array of { start, size }, got ${Array.isArray(ranges) ? 'an empty array' : describe(ranges)}`,
      );
    }
    const list: { start: number; end: number }[] = [];
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i] as unknown;
      if (typeof r !== 'object' || r === null) {
        throw invalidArgument(`ranges[${i}] must be an object { start, size }, got ${describe(r)}`);
      }
      const { start: s0, size: z0 } = r as { start?: unknown; size?: unknown };
      const start = toAddress(s0);
      if (start < 0 || start >= TWO53) {
        throw invalidArgument(`ranges[${i}].start must be an integer (number or bigint) from 0 to 2^53 - 1, got ${describe(s0)}`);
      }
      const size = toAddress(z0);
      if (size <= 0) {
        throw invalidArgument(`ranges[${i}].size must be a positive integer (number or bigint) of bytes, got ${describe(z0)}`);
      }
      if (start + size > TWO53) {
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
    const R = list.length;
    this.nRanges = R;
    this.rStart = new Float64Array(R);
    this.rEnd = new Float64Array(R);
    this.rHead = new Int32Array(R);
    this.rTail = new Int32Array(R);
    let total = 0;
    let maxSize = 0;
    for (let r = 0; r < R; r++) {
      this.rStart[r] = list[r].start;
      this.rEnd[r] = list[r].end;
      total += list[r].end - list[r].start;
      maxSize = Math.max(maxSize, list[r].end - list[r].start);
    }
    this.totalBytes = total;
    this.maxRangeSize = maxSize;
    this.lastEnd = list[R - 1].end;
    this.heads = new Int32Array(R * NCLASS);
    this.slBits = new Int32Array(R * FL_COUNT);
    this.flLo = new Int32Array(R);
    this.flHi = new Int32Array(R);
    this.reset();
  }

  // ------------------------------------------------------------------ public

  /** Bytes currently in live blocks. O(1). */
  get usedBytes(): number {
    return this.counts[0];
  }

  /** Number of live blocks. O(1). */
  get liveBlocks(): number {
    return this.counts[1];
  }

  /** The managed ranges sorted by start, `{ start, size }` in bytes (a new array). */
  get ranges(): { start: number; size: number }[] {
    const out: { start: number; size: number }[] = [];
    for (let r = 0; r < this.nRanges; r++) out.push({ start: this.rStart[r], size: this.rEnd[r] - this.rStart[r] });
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
   *   number, or an invalid or contradictory option (`align` or `boundary`
   *   not a power of two, `align` larger than every range, `boundary`
   *   smaller than the rounded size, `at` not a multiple of 8 or of `align`,
   *   `at` with a `boundary` or `maxAddress` it violates, bad `owner`).
   */
  alloc(size: number, options?: AllocOptions): number {
    if (options !== undefined) return this.allocWith(size, options);
    if (!Number.isInteger(size) || size <= 0) throw badSize(size);
    if (size > this.maxRangeSize) return -1;
    return this.allocPlain(size <= 0x7ffffff0 ? (size + 7) & -8 : Math.ceil(size / 8) * 8, DEFAULT_ALIGN, 0);
  }

  /**
   * Free the live block starting at `address`. Its space merges at once with
   * free neighbours, so after freeing everything each range is one free
   * block again.
   * @param address - the start address that `alloc` returned.
   * @returns the number of bytes freed: the block's size (rounded up to 8).
   * @throws PhysmemError `EINVAL` if `address` is not the start of a live
   *   block: never allocated, already freed (double free), inside a block,
   *   or not a number.
   */
  free(address: number): number {
    if (typeof address !== 'number') throw this.badFree(address);
    const HT = this.HT;
    const F = this.F;
    const m = this.htMask;
    const shift = this.htShift;
    // Hash lookup (see hashOf).
    let i = (Math.imul((address >>> 0) ^ Math.imul((address * INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> shift) & m;
    let n: number;
    for (;;) {
      n = HT[i];
      if (n < 0) throw this.badFree(address);
      if (F[n * NF] === address) break;
      i = (i + 1) & m;
    }
    // Backward-shift deletion: pull later entries of the cluster into the
    // hole unless their home slot lies cyclically in (hole, j].
    let j = i;
    for (;;) {
      j = (j + 1) & m;
      const v = HT[j];
      if (v < 0) break;
      const key = F[v * NF];
      const k = (Math.imul((key >>> 0) ^ Math.imul((key * INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> shift) & m;
      if (i <= j ? k <= i || k > j : k <= i && k > j) {
        HT[i] = v;
        i = j;
      }
    }
    HT[i] = -1;
    this.htCount--;
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
    if (owner === undefined) {
      const bytes = this.counts[0];
      this.reset();
      return bytes;
    }
    checkOwner(owner);
    let bytes = 0;
    for (let r = 0; r < this.nRanges; r++) {
      const tail = this.rTail[r];
      let cur = this.I[this.rHead[r] * NI + I_PNEXT];
      while (cur !== tail) {
        if (this.I[cur * NI + I_META] === owner) {
          this.hashDelete(this.F[cur * NF]);
          bytes += this.release(cur);
          cur = this.merged;
        }
        cur = this.I[cur * NI + I_PNEXT];
      }
    }
    return bytes;
  }

  /**
   * Size in bytes (rounded up to 8) of the live block starting at `address`,
   * or -1 if no live block starts there. O(1).
   */
  sizeOf(address: number): number {
    const n = this.hashGet(address);
    return n < 0 ? -1 : this.F[this.I[n * NI + I_PNEXT] * NF] - address;
  }

  /**
   * Owner tag of the live block starting at `address`, or -1 if no live
   * block starts there. O(1).
   */
  ownerOf(address: number): number {
    const n = this.hashGet(address);
    return n < 0 ? -1 : this.I[n * NI + I_META];
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
    const n = this.hashGet(address);
    if (n < 0) throw invalidArgument(`no live block starts at ${describe(address)}`);
    this.I[n * NI + I_META] = owner;
  }

  /**
   * Start address of the live block containing `address` (its start or any
   * byte inside it), or -1 when `address` is in free space or outside every
   * range. O(log n) expected.
   */
  blockContaining(address: number): number {
    if (typeof address !== 'number' || !(address >= 0)) return -1;
    const r = this.rangeOf(address);
    if (r < 0) return -1;
    const n = this.containing(r, address);
    return this.I[n * NI + I_META] >= 0 ? this.F[n * NF] : -1;
  }

  /** Byte and block counts, in total and per range. O(number of blocks). */
  stats(): AllocatorStats {
    const all: AllocatorStats = { total: 0, used: 0, free: 0, largestFree: 0, count: 0, freeBlocks: 0, ranges: [] };
    const F = this.F;
    const I = this.I;
    for (let r = 0; r < this.nRanges; r++) {
      const e: RangeStatsEntry = {
        start: this.rStart[r],
        total: this.rEnd[r] - this.rStart[r],
        used: 0,
        free: 0,
        largestFree: 0,
        count: 0,
        freeBlocks: 0,
      };
      const tail = this.rTail[r];
      for (let n = I[this.rHead[r] * NI + I_PNEXT]; n !== tail; ) {
        const x = I[n * NI + I_PNEXT];
        const size = F[x * NF] - F[n * NF];
        if (I[n * NI + I_META] <= M_FREE0) {
          e.free += size;
          e.freeBlocks++;
          if (size > e.largestFree) e.largestFree = size;
        } else {
          e.used += size;
          e.count++;
        }
        n = x;
      }
      addStats(all, e);
      all.ranges.push(e);
    }
    return all;
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
    const out: BlockInfo[] | undefined = fn === undefined ? [] : undefined;
    for (let r = 0; r < this.nRanges; r++) {
      const tail = this.rTail[r];
      for (let n = this.I[this.rHead[r] * NI + I_PNEXT]; n !== tail; ) {
        const x = this.I[n * NI + I_PNEXT];
        const meta = this.I[n * NI + I_META];
        const address = this.F[n * NF];
        const size = this.F[x * NF] - address;
        const free = meta < 0;
        if (out) out.push({ address, size, free, owner: free ? -1 : meta });
        else fn!(address, size, free, free ? -1 : meta);
        n = x;
      }
    }
    return out;
  }

  /**
   * Verify every internal invariant: blocks tile each range in address
   * order, no two free blocks are adjacent, live blocks are 8-byte granular,
   * free lists and bitmaps hold exactly the free blocks in their right size
   * classes, the hash holds exactly the live blocks, the skip list is ordered
   * and complete, the counters agree and no node record leaks. O(n); meant
   * for tests and debugging.
   * @throws PhysmemError `EIO` describing the first inconsistency found.
   */
  check(): void {
    const F = this.F;
    const I = this.I;
    let liveNodes = 0;
    let usedBytes = 0;
    let nodesSeen = 0;
    for (let r = 0; r < this.nRanges; r++) {
      const head = this.rHead[r];
      const tail = this.rTail[r];
      if (I[head * NI + I_META] !== M_SENTINEL || I[tail * NI + I_META] !== M_SENTINEL) {
        throw corrupt(`range ${r}: sentinels lost their tag`);
      }
      if (F[tail * NF] !== this.rEnd[r]) throw corrupt(`range ${r}: end sentinel moved`);
      let prev = head;
      let prevFree = false;
      let n = I[head * NI + I_PNEXT];
      if (F[n * NF] !== this.rStart[r]) throw corrupt(`range ${r}: first block starts at ${hex(F[n * NF])}`);
      for (; n !== tail; n = I[n * NI + I_PNEXT]) {
        if (n < 0 || n >= this.nodeCap) throw corrupt(`range ${r}: link to node ${n} out of bounds`);
        if (++nodesSeen > this.nodeCap) throw corrupt(`range ${r}: address list has a cycle`);
        const a = F[n * NF];
        const x = I[n * NI + I_PNEXT];
        const size = F[x * NF] - a;
        const meta = I[n * NI + I_META];
        if (I[n * NI + I_PPREV] !== prev) throw corrupt(`block ${hex(a)}: back link does not match`);
        if (!(size > 0) || !Number.isInteger(a)) throw corrupt(`block ${hex(a)} has size ${size} (blocks out of order)`);
        if (meta <= M_FREE0) {
          if (prevFree) throw corrupt(`free block ${hex(a)} follows another free block (not coalesced)`);
          const g = M_FREE0 - meta;
          if (g !== r * NCLASS + classOf(size)) throw corrupt(`free block ${hex(a)} of ${size} bytes is on the wrong free list ${g}`);
          prevFree = true;
        } else if (meta >= 0) {
          if (modPow2(a, MIN_ALIGN) !== 0 || modPow2(size, MIN_ALIGN) !== 0) {
            throw corrupt(`live block ${hex(a)} (size ${size}) is not 8-byte granular`);
          }
          if (this.hashGet(a) !== n) throw corrupt(`live block ${hex(a)} is missing from the address hash`);
          liveNodes++;
          usedBytes += size;
          prevFree = false;
        } else {
          throw corrupt(`block ${hex(a)} has invalid tag ${meta}`);
        }
        prev = n;
      }
      if (I[tail * NI + I_PPREV] !== prev) throw corrupt(`range ${r}: end sentinel back link does not match`);
      this.checkSkipList(r);
      this.checkFreeLists(r);
    }
    if (liveNodes !== this.counts[1]) throw corrupt(`live block counter says ${this.counts[1]}, ${liveNodes} blocks are live`);
    if (usedBytes !== this.counts[0]) throw corrupt(`used bytes counter says ${this.counts[0]}, live blocks hold ${usedBytes}`);
    let hashed = 0;
    for (let i = 0; i <= this.htMask; i++) if (this.HT[i] >= 0) hashed++;
    if (hashed !== liveNodes || this.htCount !== liveNodes) {
      throw corrupt(`address hash has ${hashed} entries (counter ${this.htCount}) for ${liveNodes} live blocks`);
    }
    let unused = 0;
    for (let u = this.nodeFree; u >= 0; u = I[u * NI + I_FNEXT]) {
      if (I[u * NI + I_META] !== M_UNUSED) throw corrupt(`node ${u} on the unused stack is in use`);
      if (++unused > this.nodeCap) throw corrupt('unused node stack has a cycle');
    }
    if (unused !== this.nodeAvail) throw corrupt(`unused node counter says ${this.nodeAvail}, stack has ${unused}`);
    if (unused + nodesSeen + 2 * this.nRanges !== this.nodeCap) {
      throw corrupt(`node arena leaks: ${this.nodeCap} records, ${nodesSeen} blocks, ${unused} unused`);
    }
  }

  // ------------------------------------------------------------ alloc paths

  /** Validate options and dispatch. Reads fields of `o`; allocates nothing on success. */
  private allocWith(size: number, o: AllocOptions): number {
    if (!Number.isInteger(size) || size <= 0) throw badSize(size);
    if (typeof o !== 'object' || o === null) {
      throw invalidArgument(`options must be an object { align, boundary, maxAddress, at, owner }, got ${describe(o)}`);
    }
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
    let al = DEFAULT_ALIGN;
    if (align !== undefined) {
      if (!isPowerOfTwo(align)) {
        throw invalidArgument(`align must be a power of two number of bytes (1, 2, 4, ..., 4096, ...), got ${describe(align)}`);
      }
      if (align > this.maxRangeSize) {
        throw invalidArgument(`align ${align} is larger than the largest range (${this.maxRangeSize} bytes)`);
      }
      al = align < MIN_ALIGN ? MIN_ALIGN : align;
    }
    let b = 0;
    if (boundary !== undefined) {
      if (!isPowerOfTwo(boundary)) {
        throw invalidArgument(`boundary must be a power of two number of bytes (e.g. 4096), got ${describe(boundary)}`);
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
        throw invalidArgument(`at must be a non-negative integer address (number or bigint), got ${describe(at)}`);
      }
      if (modPow2(a, MIN_ALIGN) !== 0) {
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
    if (this.nodeAvail < 2 || this.towerAvail < 2) this.grow();
    // c = searchClassOf(s), inlined for sizes whose arithmetic stays in int32.
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
      if (c >= NCLASS) return -1;
    }
    const slBits = this.slBits;
    const cfl = c >>> 5;
    const cmask = -1 << (c & 31);
    let r = this.nRanges - 1;
    for (; r >= 0; r--) {
      // First non-empty class >= c in range r, from the bitmaps.
      let fl = cfl;
      let m = slBits[r * FL_COUNT + fl] & cmask;
      if (m === 0) {
        fl++;
        if (fl < 32) {
          m = this.flLo[r] & (-1 << fl);
          if (m !== 0) fl = 31 - Math.clz32(m & -m);
          else if ((m = this.flHi[r]) !== 0) fl = 63 - Math.clz32(m & -m);
          else continue;
        } else {
          m = this.flHi[r] & (-1 << (fl - 32));
          if (m === 0) continue;
          fl = 63 - Math.clz32(m & -m);
        }
        m = slBits[r * FL_COUNT + fl];
      }
      const n = this.heads[r * NCLASS + (fl << 5) + (31 - Math.clz32(m & -m))];
      const a = this.F[n * NF];
      const rem = align <= 2147483648 ? (a >>> 0) & (align - 1) : a % align;
      // The take* helpers return nothing: an address above 2^30 returned from
      // a call that is not inlined would be boxed in a fresh HeapNumber.
      if (rem === 0) {
        this.takeLow(n, s, owner);
        return a;
      }
      const st = a + align - rem;
      if (st + s <= this.F[this.I[n * NI + I_PNEXT] * NF]) {
        this.takeInside(n, st, s, owner);
        return st;
      }
      break;
    }
    // No class >= c has a block in any range: only blocks of the classes
    // below c can still hold s bytes; when alignment is small (no search
    // slack needed) looking through them is exact and all there is to do.
    if (r < 0 && align <= DEFAULT_ALIGN) {
      // Usually those classes are empty: test their bits before calling out.
      let lo: number;
      if (s < 64) lo = s;
      else if (s < 2147483648) {
        const l = 31 - Math.clz32(s);
        lo = ((l - 5) << 5) + (s >>> (l - 5));
      } else lo = classOf(s);
      for (let rr = this.nRanges - 1; rr >= 0; rr--) {
        for (let g = rr * NCLASS + lo, ge = rr * NCLASS + c; g < ge; g++) {
          if ((slBits[g >>> 5] & (1 << (g & 31))) !== 0) return this.scanBelow(s, c, align, owner);
        }
      }
      return -1;
    }
    return this.allocSearch(s, align, 0, Infinity, owner, align <= DEFAULT_ALIGN);
  }

  /**
   * Plain-request fallback: first block of classes [classOf(s), c) holding
   * `s` bytes at `align`, or -1. Usually one class, often empty.
   */
  private scanBelow(s: number, c: number, align: number, owner: number): number {
    const F = this.F;
    const I = this.I;
    const lo = classOf(s);
    for (let r = this.nRanges - 1; r >= 0; r--) {
      for (let cc = lo; cc < c; cc++) {
        const g = r * NCLASS + cc;
        if ((this.slBits[g >>> 5] & (1 << (g & 31))) === 0) continue;
        for (let n = this.heads[g]; n >= 0; n = I[n * NI + I_FNEXT]) {
          const a = F[n * NF];
          const st = a + padTo(a, align);
          if (st + s <= F[I[n * NI + I_PNEXT] * NF]) {
            this.take(n, st, s, owner);
            return st;
          }
        }
      }
    }
    return -1;
  }

  /**
   * General search. Phase 1 walks the classes holding blocks of at least `s`
   * plus the worst-case alignment/boundary slack (their first block fits
   * unless `maxAddress` rules it out); phase 2 the smaller classes whose
   * blocks may still fit given their actual start. `exact` lifts the scan
   * limit (plain requests: phase 2 then spans only a few classes).
   */
  private allocSearch(s: number, align: number, boundary: number, max: number, owner: number, exact: boolean): number {
    if (this.nodeAvail < 2 || this.towerAvail < 2) this.grow();
    const R = this.nRanges;
    // A block can always be placed in `need` bytes: the alignment padding,
    // then (for a boundary) at most s more to skip to the boundary crossed.
    const need = s + (align - 1) + (boundary !== 0 ? s : 0);
    const cHigh = searchClassOf(need);
    const cLow = classOf(s);
    const up = max !== Infinity; // lowest range first for maxAddress
    let budget = exact ? Infinity : SCAN_LIMIT;
    const F = this.F;
    const I = this.I;
    for (let phase = 0; phase < 2; phase++) {
      const from = phase === 0 ? cHigh : cLow;
      const to = phase === 0 ? NCLASS : cHigh;
      for (let i = 0; i < R; i++) {
        const r = up ? i : R - 1 - i;
        if (this.rStart[r] + s - 1 > max) break; // and every range above
        for (let c = this.findClass(r, from); c >= 0 && c < to; c = this.findClass(r, c + 1)) {
          for (let n = this.heads[r * NCLASS + c]; n >= 0; n = I[n * NI + I_FNEXT]) {
            // Lowest start in block n meeting every constraint.
            const a = F[n * NF];
            let st = a + padTo(a, align);
            if (boundary !== 0) {
              // Crossing: move to the boundary crossed, which is aligned when
              // boundary >= align (if boundary < align, aligned starts never cross).
              const off = modPow2(st, boundary);
              if (off + s > boundary) st += boundary - off;
            }
            if (st + s <= F[I[n * NI + I_PNEXT] * NF] && st + s - 1 <= max) {
              this.take(n, st, s, owner);
              return st;
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
    if (this.nodeAvail < 2 || this.towerAvail < 2) this.grow();
    const r = this.rangeOf(at);
    if (r < 0 || at + s > this.rEnd[r]) return -1;
    const n = this.containing(r, at);
    if (this.I[n * NI + I_META] > M_FREE0) return -1;
    if (at + s > this.F[this.I[n * NI + I_PNEXT] * NF]) return -1;
    this.take(n, at, s, owner);
    return at;
  }

  /** Carve [st, st + s) out of free block n. Needs 2 unused nodes and towers. */
  private take(n: number, st: number, s: number, owner: number): void {
    if (st === this.F[n * NF]) this.takeLow(n, s, owner);
    else this.takeInside(n, st, s, owner);
  }

  /**
   * Carve the low `s` bytes of free block n. The remainder stays in node n
   * (its start moves up), so when its size class does not change, which is
   * common when carving from a large block, the free lists are untouched.
   */
  private takeLow(n: number, s: number, owner: number): void {
    const F = this.F;
    const I = this.I;
    const heads = this.heads;
    const b = n * NI;
    const a = F[n * NF];
    const rest = F[I[b + I_PNEXT] * NF] - a - s;
    let u = n;
    if (rest === 0) {
      // Exact fit: unlink n from its free list (inlined removeFree).
      const g = M_FREE0 - I[b + I_META];
      const fp = I[b + I_FPREV];
      const fx = I[b + I_FNEXT];
      if (fx >= 0) I[fx * NI + I_FPREV] = fp;
      if (fp >= 0) I[fp * NI + I_FNEXT] = fx;
      else {
        heads[g] = fx;
        if (fx < 0) this.clearBit(g);
      }
      I[b + I_META] = owner;
    } else {
      // New node u before n for the live block.
      u = this.nodeFree;
      const ub = u * NI;
      this.nodeFree = I[ub + I_FNEXT];
      this.nodeAvail--;
      F[u * NF] = a;
      F[n * NF] = a + s;
      I[ub + I_META] = owner;
      const p = I[b + I_PPREV];
      I[ub + I_PPREV] = p;
      I[ub + I_PNEXT] = n;
      I[p * NI + I_PNEXT] = u;
      I[b + I_PPREV] = u;
      this.towerFor(u);
      // Re-file n if its size class changed (inlined classOf).
      const g = M_FREE0 - I[b + I_META];
      let c: number;
      if (rest < 64) c = rest;
      else if (rest < 2147483648) {
        const l = 31 - Math.clz32(rest);
        c = ((l - 5) << 5) + (rest >>> (l - 5));
      } else {
        // Same as classOf(rest), without boxing rest for a call.
        const l = 63 - Math.clz32(rest * INV_TWO32);
        c = ((l - 5) << 5) + Math.floor(rest * INV_POW2[l - 5]);
      }
      const ng = g - (g % NCLASS) + c;
      if (ng !== g) {
        const fp = I[b + I_FPREV];
        const fx = I[b + I_FNEXT];
        if (fx >= 0) I[fx * NI + I_FPREV] = fp;
        if (fp >= 0) I[fp * NI + I_FNEXT] = fx;
        else {
          heads[g] = fx;
          if (fx < 0) this.clearBit(g);
        }
        const h = heads[ng];
        I[b + I_FPREV] = -1;
        I[b + I_FNEXT] = h;
        I[b + I_META] = M_FREE0 - ng;
        if (h >= 0) I[h * NI + I_FPREV] = n;
        else this.setBit(ng);
        heads[ng] = n;
      }
    }
    // Hash insert (see hashOf).
    const HT = this.HT;
    const m = this.htMask;
    let i = (Math.imul((a >>> 0) ^ Math.imul((a * INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> this.htShift) & m;
    while (HT[i] >= 0) i = (i + 1) & m;
    HT[i] = u;
    if (++this.htCount > m >>> 1) this.hashGrow();
    this.counts[0] += s;
    this.counts[1]++;
  }

  /** Carve [st, st + s) with st above the start of free block n: the head stays free in n. */
  private takeInside(n: number, st: number, s: number, owner: number): void {
    const F = this.F;
    const I = this.I;
    const g = M_FREE0 - I[n * NI + I_META];
    const base = g - (g % NCLASS);
    const a = F[n * NF];
    const end = F[I[n * NI + I_PNEXT] * NF];
    this.removeFree(n);
    this.insertFree(n, base + classOf(st - a));
    const u = this.newNode();
    F[u * NF] = st;
    I[u * NI + I_META] = owner;
    this.linkAfter(n, u);
    if (end > st + s) {
      const t = this.newNode();
      F[t * NF] = st + s;
      this.linkAfter(u, t);
      this.insertFree(t, base + classOf(end - st - s));
    }
    this.hashInsert(u, st);
    this.counts[0] += s;
    this.counts[1]++;
  }

  /**
   * Turn live node n (already out of the hash) into free space, merging with
   * free neighbours; returns its size and leaves the surviving free node in
   * `merged`.
   */
  private release(n: number): number {
    const F = this.F;
    const I = this.I;
    const heads = this.heads;
    const b = n * NI;
    const a = F[n * NF];
    const p = I[b + I_PPREV];
    const x = I[b + I_PNEXT];
    const s = F[x * NF] - a;
    this.counts[0] -= s;
    this.counts[1]--;
    const pm = I[p * NI + I_META];
    const xm = I[x * NI + I_META];
    let cur: number;
    let g: number; // free list cur is on, -1 if none
    if (pm <= M_FREE0) {
      // p absorbs n (and x when free).
      cur = p;
      g = M_FREE0 - pm;
      this.unlink(n);
      if (xm <= M_FREE0) {
        this.removeFree(x);
        this.unlink(x);
      }
    } else if (xm <= M_FREE0) {
      // x absorbs n by moving its start down.
      cur = x;
      g = M_FREE0 - xm;
      F[x * NF] = a;
      this.unlink(n);
    } else {
      cur = n;
      g = -1;
    }
    const ca = F[cur * NF];
    const size = F[I[cur * NI + I_PNEXT] * NF] - ca;
    let c: number;
    if (size < 64) c = size;
    else if (size < 2147483648) {
      const l = 31 - Math.clz32(size);
      c = ((l - 5) << 5) + (size >>> (l - 5));
    } else {
      const l = 63 - Math.clz32(size * INV_TWO32);
      c = ((l - 5) << 5) + Math.floor(size * INV_POW2[l - 5]);
    }
    const ng = (g >= 0 ? g - (g % NCLASS) : this.nRanges === 1 ? 0 : this.rangeOf(ca) * NCLASS) + c;
    if (ng !== g) {
      const cb = cur * NI;
      if (g >= 0) {
        const fp = I[cb + I_FPREV];
        const fx = I[cb + I_FNEXT];
        if (fx >= 0) I[fx * NI + I_FPREV] = fp;
        if (fp >= 0) I[fp * NI + I_FNEXT] = fx;
        else {
          heads[g] = fx;
          if (fx < 0) this.clearBit(g);
        }
      }
      const h = heads[ng];
      I[cb + I_FPREV] = -1;
      I[cb + I_FNEXT] = h;
      I[cb + I_META] = M_FREE0 - ng;
      if (h >= 0) I[h * NI + I_FPREV] = cur;
      else this.setBit(ng);
      heads[ng] = cur;
    }
    this.merged = cur;
    return s;
  }

  // -------------------------------------------------------------- free lists

  /** First non-empty class >= c in range r, or -1. */
  private findClass(r: number, c: number): number {
    if (c >= NCLASS) return -1;
    let fl = c >>> 5;
    let m = this.slBits[r * FL_COUNT + fl] & (-1 << (c & 31));
    if (m !== 0) return (fl << 5) + (31 - Math.clz32(m & -m));
    fl++;
    if (fl < 32) {
      m = this.flLo[r] & (-1 << fl);
      if (m !== 0) fl = 31 - Math.clz32(m & -m);
      else if ((m = this.flHi[r]) !== 0) fl = 63 - Math.clz32(m & -m);
      else return -1;
    } else {
      m = this.flHi[r] & (-1 << (fl - 32));
      if (m === 0) return -1;
      fl = 63 - Math.clz32(m & -m);
    }
    m = this.slBits[r * FL_COUNT + fl];
    return (fl << 5) + (31 - Math.clz32(m & -m));
  }

  /** Put free node n at the head of free list g (range * NCLASS + class). */
  private insertFree(n: number, g: number): void {
    const I = this.I;
    const h = this.heads[g];
    I[n * NI + I_FPREV] = -1;
    I[n * NI + I_FNEXT] = h;
    I[n * NI + I_META] = M_FREE0 - g;
    if (h >= 0) I[h * NI + I_FPREV] = n;
    else this.setBit(g);
    this.heads[g] = n;
  }

  /** Take free node n off its free list (its tag still says free). */
  private removeFree(n: number): void {
    const I = this.I;
    const fp = I[n * NI + I_FPREV];
    const fx = I[n * NI + I_FNEXT];
    if (fx >= 0) I[fx * NI + I_FPREV] = fp;
    if (fp >= 0) I[fp * NI + I_FNEXT] = fx;
    else {
      const g = M_FREE0 - I[n * NI + I_META];
      this.heads[g] = fx;
      if (fx < 0) this.clearBit(g);
    }
  }

  private setBit(g: number): void {
    const w = g >>> 5;
    if (this.slBits[w] === 0) {
      const r = (g / NCLASS) | 0;
      const fl = w - r * FL_COUNT;
      if (fl < 32) this.flLo[r] |= 1 << fl;
      else this.flHi[r] |= 1 << (fl - 32);
    }
    this.slBits[w] |= 1 << (g & 31);
  }

  private clearBit(g: number): void {
    const w = g >>> 5;
    const m = this.slBits[w] & ~(1 << (g & 31));
    this.slBits[w] = m;
    if (m === 0) {
      const r = (g / NCLASS) | 0;
      const fl = w - r * FL_COUNT;
      if (fl < 32) this.flLo[r] &= ~(1 << fl);
      else this.flHi[r] &= ~(1 << (fl - 32));
    }
  }

  // -------------------------------------------------- address list, skip list

  /** Insert node x after p in address order and give it a random level. */
  private linkAfter(p: number, x: number): void {
    const I = this.I;
    const nx = I[p * NI + I_PNEXT];
    I[x * NI + I_PPREV] = p;
    I[x * NI + I_PNEXT] = nx;
    I[nx * NI + I_PPREV] = x;
    I[p * NI + I_PNEXT] = x;
    this.towerFor(x);
  }

  /** Give node x (already in the address list) a random skip-list level. */
  private towerFor(x: number): void {
    // xorshift32; level = 1 + leading zero bit triples: P(level > k) = 8^-k.
    // (p = 1/8 rather than 1/4: half as many towers to build and unlink on
    // the hot paths, for about the same search cost.)
    let z = this.rng[0];
    z ^= z << 13;
    z ^= z >>> 17;
    z ^= z << 5;
    this.rng[0] = z;
    if (z >>> 29 !== 0) this.I[x * NI + I_TOWER] = -1;
    else this.buildTower(x, Math.min(MAX_LEVEL, 1 + ((Math.clz32(z) / 3) | 0)));
  }

  private buildTower(x: number, level: number): void {
    const I = this.I;
    const T = this.T;
    const tw = this.towerFree;
    this.towerFree = T[tw * TS];
    this.towerAvail--;
    I[x * NI + I_TOWER] = tw * 32 + level;
    let cand = I[x * NI + I_PPREV];
    for (let k = 1; k < level; k++) {
      // Walk back along level k-1 to the nearest node reaching level k
      // (expected 8 steps: the head sentinel reaches every level).
      let ct = I[cand * NI + I_TOWER];
      while (ct < 0 || (ct & 31) <= k) {
        cand = k === 1 ? I[cand * NI + I_PPREV] : T[(ct >> 5) * TS + 2 * (k - 2) + 1];
        ct = I[cand * NI + I_TOWER];
      }
      const cl = (ct >> 5) * TS + 2 * (k - 1);
      const xl = tw * TS + 2 * (k - 1);
      const nxt = T[cl];
      T[xl] = nxt;
      T[xl + 1] = cand;
      T[cl] = x;
      T[(I[nxt * NI + I_TOWER] >> 5) * TS + 2 * (k - 1) + 1] = x;
    }
  }

  /** Remove node x from the address list and the skip list, and recycle it. */
  private unlink(x: number): void {
    const I = this.I;
    const b = x * NI;
    const p = I[b + I_PPREV];
    const nx = I[b + I_PNEXT];
    I[p * NI + I_PNEXT] = nx;
    I[nx * NI + I_PPREV] = p;
    const code = I[b + I_TOWER];
    if (code >= 0) this.dropTower(code);
    I[b + I_META] = M_UNUSED;
    I[b + I_FNEXT] = this.nodeFree;
    this.nodeFree = x;
    this.nodeAvail++;
  }

  /** Unlink a node's tower (I_TOWER `code`) from levels 1.. and recycle it. */
  private dropTower(code: number): void {
    const I = this.I;
    const T = this.T;
    const tw = code >> 5;
    const level = code & 31;
    for (let k = 1; k < level; k++) {
      const a = T[tw * TS + 2 * (k - 1) + 1];
      const b = T[tw * TS + 2 * (k - 1)];
      T[(I[a * NI + I_TOWER] >> 5) * TS + 2 * (k - 1)] = b;
      T[(I[b * NI + I_TOWER] >> 5) * TS + 2 * (k - 1) + 1] = a;
    }
    T[tw * TS] = this.towerFree;
    this.towerFree = tw;
    this.towerAvail++;
  }

  /** The block (node) of range r containing address `at` (rStart <= at < rEnd). */
  private containing(r: number, at: number): number {
    const F = this.F;
    const I = this.I;
    const T = this.T;
    let cur = this.rHead[r];
    for (let k = MAX_LEVEL - 1; k >= 1; k--) {
      let ct = I[cur * NI + I_TOWER] >> 5;
      for (;;) {
        const nx = T[ct * TS + 2 * (k - 1)];
        if (F[nx * NF] > at) break;
        cur = nx;
        ct = I[nx * NI + I_TOWER] >> 5;
      }
    }
    for (;;) {
      const nx = I[cur * NI + I_PNEXT];
      if (F[nx * NF] > at) return cur;
      cur = nx;
    }
  }

  /** Index of the range containing address a, or -1. */
  private rangeOf(a: number): number {
    let lo = 0;
    let hi = this.nRanges - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.rStart[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    return a >= this.rStart[lo] && a < this.rEnd[lo] ? lo : -1;
  }

  // ------------------------------------------------------------------ arenas

  private newNode(): number {
    const n = this.nodeFree;
    this.nodeFree = this.I[n * NI + I_FNEXT];
    this.nodeAvail--;
    return n;
  }

  /** Make sure at least 2 unused nodes and towers exist (one alloc's worth). */
  private grow(): void {
    while (this.nodeAvail < 2) this.growNodes();
    while (this.towerAvail < 2) this.growTowers();
  }

  private growNodes(): void {
    const old = this.nodeCap;
    const cap = old === 0 ? INITIAL_NODES : old * 2;
    const buf = new ArrayBuffer(cap * NF * 8);
    const F = new Float64Array(buf);
    const I = new Int32Array(buf);
    F.set(this.F);
    for (let n = cap - 1; n >= old; n--) {
      I[n * NI + I_META] = M_UNUSED;
      I[n * NI + I_TOWER] = -1;
      I[n * NI + I_FNEXT] = this.nodeFree;
      this.nodeFree = n;
    }
    this.F = F;
    this.I = I;
    this.nodeAvail += cap - old;
    this.nodeCap = cap;
  }

  private growTowers(): void {
    const old = this.towerCap;
    const cap = old === 0 ? INITIAL_TOWERS : old * 2;
    const T = new Int32Array(cap * TS);
    T.set(this.T);
    for (let t = cap - 1; t >= old; t--) {
      T[t * TS] = this.towerFree;
      this.towerFree = t;
    }
    this.T = T;
    this.towerAvail += cap - old;
    this.towerCap = cap;
  }

  /** Back to one free block per range, with fresh small arenas. */
  private reset(): void {
    this.F = new Float64Array(0);
    this.I = new Int32Array(0);
    this.nodeCap = 0;
    this.nodeFree = -1;
    this.nodeAvail = 0;
    this.T = new Int32Array(0);
    this.towerCap = 0;
    this.towerFree = -1;
    this.towerAvail = 0;
    this.heads.fill(-1);
    this.slBits.fill(0);
    this.flLo.fill(0);
    this.flHi.fill(0);
    this.hashInit(INITIAL_HASH);
    this.counts[0] = 0;
    this.counts[1] = 0;
    while (this.nodeAvail < 3 * this.nRanges + 2) this.growNodes();
    while (this.towerAvail < 2 * this.nRanges + 2) this.growTowers();
    const F = this.F;
    const I = this.I;
    for (let r = 0; r < this.nRanges; r++) {
      const head = this.newNode();
      const blk = this.newNode();
      const tail = this.newNode();
      F[head * NF] = -1;
      F[blk * NF] = this.rStart[r];
      F[tail * NF] = this.rEnd[r];
      I[head * NI + I_META] = M_SENTINEL;
      I[tail * NI + I_META] = M_SENTINEL;
      I[head * NI + I_PPREV] = -1;
      I[head * NI + I_PNEXT] = blk;
      I[blk * NI + I_PPREV] = head;
      I[blk * NI + I_PNEXT] = tail;
      I[blk * NI + I_TOWER] = -1;
      I[tail * NI + I_PPREV] = blk;
      I[tail * NI + I_PNEXT] = -1;
      // The sentinels reach every level of the skip list.
      const ht = this.towerFree;
      this.towerFree = this.T[ht * TS];
      const tt = this.towerFree;
      this.towerFree = this.T[tt * TS];
      this.towerAvail -= 2;
      I[head * NI + I_TOWER] = ht * 32 + MAX_LEVEL;
      I[tail * NI + I_TOWER] = tt * 32 + MAX_LEVEL;
      for (let k = 0; k < TW; k++) {
        this.T[ht * TS + 2 * k] = tail;
        this.T[ht * TS + 2 * k + 1] = -1;
        this.T[tt * TS + 2 * k] = -1;
        this.T[tt * TS + 2 * k + 1] = head;
      }
      this.rHead[r] = head;
      this.rTail[r] = tail;
      this.insertFree(blk, r * NCLASS + classOf(this.rEnd[r] - this.rStart[r]));
    }
  }

  // -------------------------------------------------------------------- hash

  private hashInit(cap: number): void {
    this.HT = new Int32Array(cap).fill(-1);
    this.htMask = cap - 1;
    this.htShift = 32 - (31 - Math.clz32(cap));
    this.htCount = 0;
  }

  /**
   * Home slot of address a: Fibonacci hashing of both 32-bit halves
   * (addresses reach 2^53; `a >>> 0` is a mod 2^32). Inlined in hot paths.
   */
  private hashOf(a: number): number {
    return (Math.imul((a >>> 0) ^ Math.imul((a * INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> this.htShift) & this.htMask;
  }

  /** Node of the live block starting at a, or -1. */
  private hashGet(a: number): number {
    if (typeof a !== 'number') return -1;
    const m = this.htMask;
    for (let i = this.hashOf(a); ; i = (i + 1) & m) {
      const n = this.HT[i];
      if (n < 0 || this.F[n * NF] === a) return n;
    }
  }

  private hashInsert(n: number, a: number): void {
    const m = this.htMask;
    let i = this.hashOf(a);
    while (this.HT[i] >= 0) i = (i + 1) & m;
    this.HT[i] = n;
    if (++this.htCount > m >>> 1) this.hashGrow();
  }

  /** Remove key a, which must be present (same algorithm as in free()). */
  private hashDelete(a: number): void {
    const HT = this.HT;
    const F = this.F;
    const m = this.htMask;
    let i = this.hashOf(a);
    while (F[HT[i] * NF] !== a) i = (i + 1) & m;
    for (let j = (i + 1) & m; HT[j] >= 0; j = (j + 1) & m) {
      const k = this.hashOf(F[HT[j] * NF]);
      if (i <= j ? k <= i || k > j : k <= i && k > j) {
        HT[i] = HT[j];
        i = j;
      }
    }
    HT[i] = -1;
    this.htCount--;
  }

  /** Double the table: keeps the load factor at most 1/2. */
  private hashGrow(): void {
    const old = this.HT;
    const count = this.htCount;
    this.hashInit(old.length * 2);
    const HT = this.HT;
    const m = this.htMask;
    for (let s = 0; s < old.length; s++) {
      const n = old[s];
      if (n < 0) continue;
      let i = this.hashOf(this.F[n * NF]);
      while (HT[i] >= 0) i = (i + 1) & m;
      HT[i] = n;
    }
    this.htCount = count;
  }

  // ------------------------------------------------------------- diagnostics

  private badFree(address: unknown): PhysmemError {
    if (typeof address !== 'number' || !Number.isInteger(address) || address < 0) {
      return invalidArgument(
        `free() takes the start address returned by alloc() (a non-negative integer number), got ${describe(address)}`,
      );
    }
    const r = this.rangeOf(address);
    if (r < 0) return invalidArgument(`free(${hex(address)}): address is not in any managed range`);
    const n = this.containing(r, address);
    const a = this.F[n * NF];
    if (this.I[n * NI + I_META] < 0) {
      return invalidArgument(`free(${hex(address)}): no live block there (double free, or never allocated)`);
    }
    const size = this.F[this.I[n * NI + I_PNEXT] * NF] - a;
    return invalidArgument(
      `free(${hex(address)}): address is inside the live block at ${hex(a)} (size ${size}); pass the block's start address`,
    );
  }

  private checkFreeLists(r: number): void {
    const I = this.I;
    const F = this.F;
    let onLists = 0;
    for (let fl = 0; fl < FL_COUNT; fl++) {
      const bits = this.slBits[r * FL_COUNT + fl];
      const flBit = fl < 32 ? (this.flLo[r] >>> fl) & 1 : (this.flHi[r] >>> (fl - 32)) & 1;
      if ((bits !== 0 ? 1 : 0) !== flBit) throw corrupt(`range ${r}: first-level bit ${fl} disagrees with the second level`);
      for (let sl = 0; sl < 32; sl++) {
        const g = r * NCLASS + fl * 32 + sl;
        const h = this.heads[g];
        if ((h >= 0 ? 1 : 0) !== ((bits >>> sl) & 1)) throw corrupt(`range ${r}: bitmap bit of free list ${g} disagrees with the list`);
        let prev = -1;
        for (let n = h; n >= 0; n = I[n * NI + I_FNEXT]) {
          if (n >= this.nodeCap) throw corrupt(`range ${r}: free list ${g} links out of bounds`);
          if (I[n * NI + I_META] !== M_FREE0 - g) throw corrupt(`range ${r}: block ${hex(F[n * NF])} on free list ${g} is tagged ${I[n * NI + I_META]}`);
          if (I[n * NI + I_FPREV] !== prev) throw corrupt(`range ${r}: free list ${g} back link does not match`);
          if (++onLists > this.nodeCap) throw corrupt(`range ${r}: free list ${g} has a cycle`);
          prev = n;
        }
      }
    }
    let freeBlocks = 0;
    const tail = this.rTail[r];
    for (let n = I[this.rHead[r] * NI + I_PNEXT]; n !== tail; n = I[n * NI + I_PNEXT]) {
      if (I[n * NI + I_META] <= M_FREE0) freeBlocks++;
    }
    if (freeBlocks !== onLists) throw corrupt(`range ${r}: ${freeBlocks} free blocks but ${onLists} on the free lists`);
  }

  private checkSkipList(r: number): void {
    const I = this.I;
    const F = this.F;
    const head = this.rHead[r];
    const tail = this.rTail[r];
    for (let k = 1; k < MAX_LEVEL; k++) {
      // Level k must link, in order, exactly the level-0 nodes whose level exceeds k.
      let cur = head;
      let e = head;
      for (let steps = 0; ; steps++) {
        if (steps > this.nodeCap) throw corrupt(`range ${r}: skip list level ${k} has a cycle`);
        e = I[e * NI + I_PNEXT];
        while (e !== tail) {
          const et = I[e * NI + I_TOWER];
          if (et >= 0 && (et & 31) > k) break;
          e = I[e * NI + I_PNEXT];
        }
        const nx = this.T[(I[cur * NI + I_TOWER] >> 5) * TS + 2 * (k - 1)];
        if (nx !== e) throw corrupt(`range ${r}: skip list level ${k} does not link ${hex(F[e * NF])} next`);
        if (this.T[(I[nx * NI + I_TOWER] >> 5) * TS + 2 * (k - 1) + 1] !== cur) {
          throw corrupt(`range ${r}: skip list level ${k} back link of ${hex(F[nx * NF])}`);
        }
        if (e === tail) break;
        cur = nx;
      }
    }
  }
}

function badSize(size: unknown): PhysmemError {
  return invalidArgument(`size must be a positive integer number of bytes, got ${describe(size)}`);
}

function badMaxAddress(x: unknown): PhysmemError {
  return invalidArgument(`maxAddress must be a non-negative integer address (number or bigint), got ${describe(x)}`);
}

function checkOwner(owner: unknown): asserts owner is number {
  if (typeof owner !== 'number' || !Number.isInteger(owner) || owner < 0 || owner > MAX_OWNER) {
    throw invalidArgument(`owner must be an integer tag from 0 to ${MAX_OWNER}, got ${describe(owner)}`);
  }
}

function addStats(into: RangeStats, e: RangeStats): void {
  into.total += e.total;
  into.used += e.used;
  into.free += e.free;
  into.count += e.count;
  into.freeBlocks += e.freeBlocks;
  if (e.largestFree > into.largestFree) into.largestFree = e.largestFree;
}
