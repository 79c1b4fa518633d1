/**
 * The original allocator module's API ("allocator" of Linux Device Drivers),
 * on top of a {@link Pool}, in linked mode: one program owns the pool.
 *
 * | original (C, kernel)                         | physmem/compat                          |
 * |----------------------------------------------|-----------------------------------------|
 * | `allocator_init()` at module load            | `allocatorInit(options?)`               |
 * | `allocator_cleanup()` at module unload       | `allocatorCleanup()`                    |
 * | `allocator_allocate_dma(size, GFP_KERNEL)`   | `allocateDma(bytes, GFP_KERNEL)` -> bigint, `0n` on failure |
 * | `allocator_free_dma(address)`                | `freeDma(address)` -> `0` or `-EINVAL`  |
 * | `ioremap(address, size)` to touch the memory | `dmaBuffer(address)?.bytes`             |
 *
 * In linked mode no call can sleep, so `GFP_KERNEL` fails at once like
 * `GFP_ATOMIC` when nothing fits. Standalone mode (a daemon shared by several
 * programs) will add `allocateDmaAsync` / `freeDmaAsync`, where `GFP_KERNEL`
 * waits for memory to be freed.
 * @module
 */
import { PhysmemError } from './errors.js';
import { openPoolSync, type OpenPoolOptions } from './open.js';
import type { DmaBuffer, Pool } from './pool.js';

/** May wait for memory (Linux's value, 0xcc0). In linked mode it fails at once like GFP_ATOMIC. */
export const GFP_KERNEL = 0xcc0;
/** Must not wait (Linux's value, 0xa20). */
export const GFP_ATOMIC = 0xa20;
/** errno for "invalid argument": `freeDma` returns `-EINVAL`. */
export const EINVAL = 22;

/** Alignment of every compat allocation: a page, as the original handed out whole pages. */
export const COMPAT_ALIGN = 4096;

let pool: Pool | undefined;
const buffers = new Map<bigint, DmaBuffer>();

/**
 * Open the pool that the other calls use (default `backend: 'auto'`).
 * @returns 0.
 * @throws {PhysmemError} EBUSY if already initialised (call allocatorCleanup first); the backend's errors otherwise,
 *   with what to do (the original returned a negative errno; a JS caller gets the reason instead).
 */
export function allocatorInit(options?: OpenPoolOptions): 0 {
  if (pool !== undefined) {
    throw new PhysmemError('EBUSY', 'the allocator is already initialised', { hint: 'call allocatorCleanup() before allocatorInit() again' });
  }
  pool = openPoolSync(options);
  return 0;
}

/** Free every block and close the pool. Safe to call when not initialised. */
export function allocatorCleanup(): void {
  buffers.clear();
  pool?.close();
  pool = undefined;
}

/**
 * Allocate `bytes` of physically contiguous, page-aligned memory.
 * @param bytes - size in bytes (a positive integer).
 * @param priority - `GFP_KERNEL` or `GFP_ATOMIC`; anything else fails.
 * @returns the physical address, or `0n` on any failure (not initialised, bad arguments, no memory).
 */
export function allocateDma(bytes: number, priority: number): bigint {
  if (pool === undefined || (priority !== GFP_KERNEL && priority !== GFP_ATOMIC)) return 0n;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) return 0n;
  try {
    const buf = pool.alloc(bytes, { align: COMPAT_ALIGN });
    buffers.set(buf.phys, buf);
    return buf.phys;
  } catch {
    return 0n;
  }
}

/**
 * Free the block at `address` (as returned by allocateDma).
 * @returns `0`, or `-EINVAL` (-22) for an address the allocator does not handle.
 */
export function freeDma(address: bigint | number): 0 | -22 {
  let key: bigint;
  try {
    key = BigInt(address);
  } catch {
    return -EINVAL as -22;
  }
  const buf = buffers.get(key);
  if (buf === undefined) return -EINVAL as -22;
  buffers.delete(key);
  buf.free();
  return 0;
}

/**
 * The DmaBuffer behind an address from allocateDma, to read and write its
 * bytes from JS (what ioremap gave the original's callers); undefined if none.
 */
export function dmaBuffer(address: bigint | number): DmaBuffer | undefined {
  try {
    return buffers.get(BigInt(address));
  } catch {
    return undefined;
  }
}

/** The pool behind the compat API, or undefined before allocatorInit. */
export function compatPool(): Pool | undefined {
  return pool;
}
