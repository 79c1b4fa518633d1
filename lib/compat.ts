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
 * programs, `physmem serve`) adds `allocateDmaAsync` / `freeDmaAsync`, where
 * `GFP_KERNEL` waits for memory to be freed; they need no init or cleanup.
 * @module
 */
import { PhysmemError } from './errors.js';
import { openPoolSync, type OpenPoolOptions } from './open.js';
import type { DmaBuffer, Pool } from './pool.js';
import { ServicePool, type ServiceBuffer } from './service/client.js';

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
  // Freed already through dmaBuffer(address).free() (or pool.free): the original said -EINVAL too.
  if (buf.freed) return -EINVAL as -22;
  buf.free();
  return 0;
}

/**
 * The DmaBuffer behind an address from allocateDma, to read and write its
 * bytes from JS (what ioremap gave the original's callers); undefined if none.
 */
export function dmaBuffer(address: bigint | number): DmaBuffer | undefined {
  let key: bigint;
  try {
    key = BigInt(address);
  } catch {
    return undefined;
  }
  const buf = buffers.get(key);
  if (buf === undefined || !buf.freed) return buf;
  buffers.delete(key); // freed behind compat's back: forget it
  return undefined;
}

/** The pool behind the compat API, or undefined before allocatorInit. */
export function compatPool(): Pool | undefined {
  return pool;
}

// ---- standalone mode: a daemon shared by several programs -----------------

/** Socket used by the standalone calls when {@link connectService} was not called: `$PHYSMEM_SOCKET`, else this. */
export const DEFAULT_SERVICE_SOCKET = '/run/physmem/physmem.sock';

let service: Promise<ServicePool> | undefined;
const serviceBuffers = new Map<bigint, ServiceBuffer>();

/**
 * Choose the daemon the standalone calls use (optional: by default they
 * connect on first use to `$PHYSMEM_SOCKET`, else {@link DEFAULT_SERVICE_SOCKET}).
 * @throws {PhysmemError} (rejected) when no daemon answers there.
 */
export async function connectService(socketPath?: string): Promise<void> {
  await disconnectService();
  const p = ServicePool.connect(socketPath ?? process.env.PHYSMEM_SOCKET ?? DEFAULT_SERVICE_SOCKET, { unrefWhenIdle: true });
  service = p;
  p.catch(() => {
    if (service === p) service = undefined; // let the next call try again
  });
  await p;
}

/** Free this program's blocks and disconnect from the daemon (optional: exiting does it too, after the daemon's quarantine). */
export async function disconnectService(): Promise<void> {
  const s = service;
  service = undefined;
  serviceBuffers.clear();
  if (s) await (await s.catch(() => undefined))?.close();
}

async function servicePool(): Promise<ServicePool> {
  if (service === undefined) await connectService();
  return service!;
}

/**
 * Standalone mode's `allocator_allocate_dma`: `bytes` of page-aligned memory
 * from the daemon. `GFP_KERNEL` waits (first come, first served) until memory
 * is freed; `GFP_ATOMIC` fails at once when nothing fits.
 * @returns the physical address, or `0n` on any failure (no daemon, bad arguments, no memory).
 */
export async function allocateDmaAsync(bytes: number, priority: number): Promise<bigint> {
  if (priority !== GFP_KERNEL && priority !== GFP_ATOMIC) return 0n;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) return 0n;
  try {
    const buf = await (await servicePool()).allocAsync(bytes, { align: COMPAT_ALIGN, wait: priority === GFP_KERNEL });
    serviceBuffers.set(buf.phys, buf);
    return buf.phys;
  } catch {
    return 0n;
  }
}

/**
 * Standalone mode's `allocator_free_dma`.
 * @returns `0`, or `-EINVAL` (-22) for an address this program did not get from allocateDmaAsync (or already freed).
 */
export async function freeDmaAsync(address: bigint | number): Promise<0 | -22> {
  let key: bigint;
  try {
    key = BigInt(address);
  } catch {
    return -EINVAL as -22;
  }
  const buf = serviceBuffers.get(key);
  if (buf === undefined) return -EINVAL as -22;
  serviceBuffers.delete(key);
  try {
    await buf.free();
    return 0;
  } catch {
    return -EINVAL as -22;
  }
}

/** The mapped block behind an address from allocateDmaAsync (its `bytes`), or undefined. */
export function serviceDmaBuffer(address: bigint | number): ServiceBuffer | undefined {
  try {
    return serviceBuffers.get(BigInt(address));
  } catch {
    return undefined;
  }
}
