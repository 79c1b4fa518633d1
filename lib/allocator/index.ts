/**
 * `physmem/allocator`: the pure allocator core. Manages address ranges
 * (physical memory, device apertures, offsets into a buffer) with all
 * bookkeeping in JS typed arrays, never inside the managed memory.
 *
 * ```ts
 * import { RangeAllocator } from 'physmem/allocator';
 * const a = new RangeAllocator([{ start: 0x8000_0000, size: 256 * 2 ** 20 }]);
 * const addr = a.alloc(4096, { align: 4096, maxAddress: 0xffff_ffff });
 * if (addr < 0) throw new Error('out of DMA memory');
 * a.free(addr);
 * ```
 * @module
 */
export { RangeAllocator, MIN_ALIGN, DEFAULT_ALIGN, MAX_OWNER, SCAN_LIMIT } from './range-allocator.js';
export type {
  AllocatorRange,
  AllocOptions,
  AllocatorStats,
  BlockInfo,
  RangeStats,
  RangeStatsEntry,
  WalkCallback,
} from './types.js';
