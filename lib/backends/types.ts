/**
 * What a backend gives a pool: physical ranges, a way to reach them from JS,
 * the bus offset, coherency, and close. Backends know nothing of the pool.
 * @module
 */
import type { RegionLock } from '../locks.js';

/** One physically contiguous range a backend provides (addresses as numbers: exact below 2^53). */
export interface BackendRange {
  /** First physical address, bytes. */
  readonly start: number;
  /** Length in bytes. */
  readonly size: number;
}

/** Linux's enum dma_data_direction: 0 bidirectional, 1 to the device, 2 from the device. */
export type SyncDirectionCode = 0 | 1 | 2;

/** The names of the backends physmem knows. */
export type BackendName = 'fake' | 'devmem' | 'udmabuf' | 'hugepage' | 'vfio';

/** A source of DMA-capable memory. */
export interface Backend {
  /** Which backend this is. */
  readonly name: BackendName;
  /** The physical ranges it manages, ascending and disjoint. */
  readonly ranges: readonly BackendRange[];
  /** Added to a physical address to get the address a device uses (bus = phys + busOffset). */
  readonly busOffset: bigint;
  /** True when the CPU caches are coherent with device DMA (no sync needed). */
  readonly coherent: boolean;
  /**
   * Make a zero-copy ArrayBuffer over `[phys, phys + size)`, which lies inside
   * one range. Returns a view id for {@link Backend.buffer} and {@link Backend.release}.
   */
  view(phys: number, size: number): number;
  /** The ArrayBuffer of view `id`. */
  buffer(id: number): ArrayBuffer;
  /** Detach the ArrayBuffer of view `id`. */
  release(id: number): void;
  /**
   * Cache maintenance for `[phys, phys + size)` (inside one range), as Linux's
   * dma_sync_single_for_device (`forDevice`) or _for_cpu. Only called when the
   * pool is not {@link Backend.coherent}; absent when the backend has no way to
   * do it from userspace (the pool then throws ENOTSUP).
   */
  sync?(phys: number, size: number, forDevice: boolean, direction: SyncDirectionCode): void;
  /** One line for messages: what memory this is. */
  describe(): string;
  /**
   * The exclusive lock held on this memory while open (lib/locks.ts), so no
   * other program or pool hands it out too; released by close. Undefined when
   * the memory is private to this process (hugepage, fake without `lockKey`,
   * a regular file standing in for /dev/mem).
   */
  readonly lock?: RegionLock;
  /**
   * Called once by openPoolSync with the pool made over this backend, for
   * backends whose memory can be taken away from outside (vfio: closing the
   * container closes the pool first). Absent elsewhere.
   */
  bindOwner?(owner: { close(): void }): void;
  /** Detach every view and unmap, then release the lock. Idempotent. */
  close(): void;
}
