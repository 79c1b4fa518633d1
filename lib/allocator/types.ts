/**
 * Public types of `physmem/allocator`.
 * @module
 */

/**
 * One region of address space to manage, e.g. a reserved physical range.
 * Both fields are integers in bytes, as numbers or bigints; the range must
 * end at or below 2^53 so every address is exact in a JS number.
 */
export interface AllocatorRange {
  /** First address of the range (bytes, >= 0). */
  start: number | bigint;
  /** Length of the range in bytes (> 0). */
  size: number | bigint;
}

/**
 * Constraints for {@link RangeAllocator.alloc}. The object is only read, never
 * kept or copied, so a caller may reuse one object for many calls.
 */
export interface AllocOptions {
  /**
   * Alignment of the block's start, in bytes: a power of two, at most the
   * size of the largest range. Default 64 (a cache line). Values below 8 are
   * raised to 8, the allocator's granule.
   */
  align?: number;
  /**
   * The block must not cross a multiple of this power of two (bytes), as
   * with Linux's `dma_pool_create(..., boundary)`: e.g. 4096 for engines that
   * cannot cross a page. The size rounded up to 8 must be <= boundary.
   */
  boundary?: number;
  /**
   * The block's last byte must be at or below this address (inclusive), e.g.
   * `0xffff_ffff` for a 32-bit DMA engine. Number or bigint.
   */
  maxAddress?: number | bigint;
  /**
   * Place the block exactly at this address (number or bigint); alloc returns
   * -1 if those bytes are not all free. Must be a multiple of 8, and of
   * `align` when `align` is given (the default 64 does not apply to `at`).
   */
  at?: number | bigint;
  /**
   * Small integer tag stored with the block (0 to 2^31 - 1, default 0), e.g.
   * a process or client id, for {@link RangeAllocator.ownerOf} and
   * {@link RangeAllocator.freeAll}.
   */
  owner?: number;
}

/** One block as reported by {@link RangeAllocator.walk}. */
export interface BlockInfo {
  /** First address of the block. */
  address: number;
  /** Length in bytes. */
  size: number;
  /** True for free space. */
  free: boolean;
  /** The owner tag of a live block; -1 for free space. */
  owner: number;
}

/** Byte and block counts of one range (or of all ranges together). */
export interface RangeStats {
  /** Bytes managed. */
  total: number;
  /** Bytes in live blocks (sizes as rounded up to 8). */
  used: number;
  /** Bytes free: `total - used`. */
  free: number;
  /** Size of the largest free block, in bytes (before any alignment). */
  largestFree: number;
  /** Number of live (allocated) blocks. */
  count: number;
  /** Number of free blocks (fragments); 1 per range when nothing is allocated. */
  freeBlocks: number;
}

/** Per-range figures from {@link RangeAllocator.stats}. */
export interface RangeStatsEntry extends RangeStats {
  /** First address of the range. */
  start: number;
}

/** What {@link RangeAllocator.stats} returns: totals and one entry per range, in address order. */
export interface AllocatorStats extends RangeStats {
  /** The same figures for each range, sorted by start address. */
  ranges: RangeStatsEntry[];
}

/**
 * Callback form of {@link RangeAllocator.walk}: called once per block in
 * address order, without allocating an object per block.
 * @param address - first address of the block.
 * @param size - length in bytes.
 * @param free - true for free space.
 * @param owner - the owner tag, or -1 for free space.
 */
export type WalkCallback = (address: number, size: number, free: boolean, owner: number) => void;
