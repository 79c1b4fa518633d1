/**
 * What a backend gives a pool: physical ranges, a way to reach them from JS,
 * the bus offset, coherency, and close. Backends know nothing of the pool.
 * @module
 */

/** One physically contiguous range a backend provides (addresses as numbers: exact below 2^53). */
export interface BackendRange {
  /** First physical address, bytes. */
  readonly start: number;
  /** Length in bytes. */
  readonly size: number;
}

/** The names of the backends physmem knows. */
export type BackendName = 'fake' | 'devmem' | 'udmabuf' | 'hugepage';

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
  /** One line for messages: what memory this is. */
  describe(): string;
  /** Detach every view and unmap. Idempotent. */
  close(): void;
}
