/**
 * Pools and DMA buffers: a {@link RangeAllocator} over a backend's physical
 * ranges, handing out {@link DmaBuffer}s whose `bytes` are zero-copy views of
 * exactly their block.
 * @module
 */
import { inspect, type InspectOptionsStylized } from 'node:util';
import { PhysmemError, invalidArgument } from './errors.js';
import { RangeAllocator } from './allocator/index.js';
import type { Backend, BackendName, SyncDirectionCode } from './backends/types.js';
import { checkBoolean, checkSignal, checkTimeoutMs, hex, optionNames, optionsChecker, toAddressNumber } from './internal/validate.js';
import { createSubPool, type SubPool, type SubPoolOptions } from './subpool.js';
import type { SyncDirection } from './dma-types.js';
import { addressAt } from './address.js';
import { WaitQueue, type WaitNode } from './wait-queue.js';
import { LeakWatch } from './leak-check.js';
import { AddressMap } from './internal/address-map.js';
export type { SyncDirection } from './dma-types.js';

/**
 * Options of {@link Pool.alloc}. Addresses accept bigints or numbers. Any
 * other property name is refused with EINVAL (a misspelt option is never
 * silently ignored). Not the same as the `AllocOptions` of physmem/allocator.
 */
export interface PoolAllocOptions {
  /** Alignment of the physical address in bytes, a power of two. Default 64. */
  align?: number;
  /** The block must not cross a multiple of this (power of two, >= size), as Linux's dma_pool. Default: none. */
  boundary?: number;
  /** The block's last byte must be at or below this physical address (e.g. `0xffffffffn` for 32-bit DMA engines). */
  maxAddress?: bigint | number;
  /** Allocate exactly at this physical address; ENOMEM if that memory is not free. */
  at?: bigint | number;
  /** Zero the block before handing it out. Default true. */
  zero?: boolean;
}

/** Options of {@link Pool.allocAsync}; unknown names are refused with EINVAL. */
export interface AsyncAllocOptions extends PoolAllocOptions {
  /** Wait until enough memory is freed (like GFP_KERNEL) instead of failing at once (GFP_ATOMIC). Default false. */
  wait?: boolean;
  /**
   * With `wait`: give up after this many milliseconds (ETIMEDOUT): an integer
   * from 0 to 2^31 - 1 (about 24.8 days; Node.js cannot time longer), else EINVAL.
   * Default: no limit.
   */
  timeoutMs?: number;
  /** With `wait`: abort the wait (ECANCELED). */
  signal?: AbortSignal;
}

/** Usage of one range of a pool, in {@link PoolStats.ranges}. Sizes in bytes. Not the allocator's `RangeStats`. */
export interface PoolRangeStats {
  /** First physical address of the range. */
  start: bigint;
  /** Size of the range in bytes. */
  size: number;
  /** Bytes in live blocks. */
  used: number;
  /** Bytes free. */
  free: number;
  /** The largest block that could be allocated now (alignment aside). */
  largestFree: number;
  /** Number of live blocks. */
  count: number;
}

/** Usage of a pool, as from {@link Pool.stats}. Sizes in bytes. */
export interface PoolStats {
  /** The backend serving the pool. */
  backend: BackendName;
  /** Bytes managed. */
  total: number;
  /** Bytes in live blocks. */
  used: number;
  /** Bytes free. */
  free: number;
  /** The largest block that could be allocated now (alignment aside). */
  largestFree: number;
  /** Number of live blocks. */
  count: number;
  /** Allocations waiting for memory (allocAsync with `wait`). */
  waiting: number;
  /** bus = phys + busOffset. */
  busOffset: bigint;
  /** Per range. */
  ranges: PoolRangeStats[];
}

/** One block of a pool's memory map, from {@link Pool.walk}. */
export interface PoolBlock {
  /** Physical address. */
  phys: bigint;
  /** Size in bytes. */
  size: number;
  /** True for free space. */
  free: boolean;
}

/** How a pool reports DmaBuffers that are garbage-collected without `free()`. */
export type LeakCheck = 'off' | 'warn' | 'trace';

/** Options common to every backend when opening a pool. */
export interface PoolCommonOptions {
  /**
   * Leak reports: `'warn'` (default) emits one warning per DmaBuffer collected
   * without `free()`, naming its address and size; buffers freed before the
   * next turn of the event loop cost almost nothing (lib/leak-check.ts: they
   * are registered in batches, and only if still live). `'trace'` also records
   * the stack of every allocation so the warning shows where it was made
   * (costs about 15 to 30 us per alloc: bench/buffers.ts measures it); `'off'` disables both. The environment
   * variable `PHYSMEM_TRACE_ALLOCATIONS=1` makes `'trace'` the default.
   * Leaked memory is never freed automatically: a device may still use it.
   */
  leakCheck?: LeakCheck;
}

/** @internal Key of the device-access hook used by physmem/testing. */
export const kDeviceAccess: unique symbol = Symbol('physmem.deviceAccess');

/** @internal Key of the cache-maintenance hook DmaBuffer calls. */
const kSync: unique symbol = Symbol('physmem.sync');

/** @internal Key of the free DmaBuffer calls: by view id and allocator handle, no lookup by address. */
const kFree: unique symbol = Symbol('physmem.free');

function closedError(what: string): PhysmemError {
  return new PhysmemError('EBADF', `${what} on a closed pool`, { hint: 'open a new pool with openPoolSync()/openPool()' });
}

// Built once: the hot path pays one for...in over the caller's keys.
const checkAllocOptions = optionsChecker('pool.alloc()', optionNames<PoolAllocOptions>({ align: true, boundary: true, maxAddress: true, at: true, zero: true }));
const checkAllocAsyncOptions = optionsChecker(
  'pool.allocAsync()',
  optionNames<AsyncAllocOptions>({ align: true, boundary: true, maxAddress: true, at: true, zero: true, wait: true, timeoutMs: true, signal: true }),
);

interface Waiter {
  size: number;
  options: AsyncAllocOptions;
  resolve: (b: DmaBuffer) => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
}

/**
 * A block of DMA memory: `phys` for the CPU's view, `bus` for the device's,
 * `bytes` to read and write it from JS.
 */
export class DmaBuffer {
  /** Size in bytes. */
  readonly size: number;
  readonly #pool: Pool;
  readonly #addr: number;
  readonly #view: number; // the backend's view id
  readonly #handle: number; // the allocator's handle of the block (RangeAllocator.lastHandle)
  // phys and bus as bigints, made on first read: a buffer allocated and freed
  // in a hot loop often never needs them, and a BigInt is a heap object.
  #phys: bigint | undefined;
  #bus: bigint | undefined;
  // The block's own ArrayBuffer (detached when freed) and the Uint8Array over
  // it, made on first read of `bytes` (or at alloc when zeroing): a buffer
  // only handed to a device, or freed unread, never needs one.
  readonly #ab: ArrayBuffer;
  #bytes: Uint8Array | undefined;

  /** @internal Created by {@link Pool.alloc}. */
  constructor(pool: Pool, addr: number, size: number, ab: ArrayBuffer, bytes: Uint8Array | undefined, view: number, handle: number) {
    this.#pool = pool;
    this.#addr = addr;
    this.#view = view;
    this.#handle = handle;
    this.size = size;
    this.#ab = ab;
    this.#bytes = bytes;
  }

  /**
   * The block's bytes: a view over its own ArrayBuffer of exactly `size`
   * bytes (read-only property; the same Uint8Array on every read).
   * Zero-length after free, as is every view taken from it.
   */
  get bytes(): Uint8Array {
    // A detached ArrayBuffer cannot take a new view (TypeError): freed unread, the bytes are an empty array.
    return (this.#bytes ??= this.#ab.byteLength !== 0 ? new Uint8Array(this.#ab) : new Uint8Array(0));
  }

  /** Physical address of the first byte (read-only; the same value after free). */
  get phys(): bigint {
    return (this.#phys ??= BigInt(this.#addr));
  }

  /** Address the device uses: `phys` plus the pool's bus offset (read-only). */
  get bus(): bigint {
    const offset = this.#pool.busOffset;
    return (this.#bus ??= offset === 0n ? this.phys : this.phys + offset);
  }

  /** What console.log and util.inspect show: the addresses too (they are accessors, not own properties). */
  [inspect.custom](depth: number, options: InspectOptionsStylized, show: typeof inspect): string {
    if (depth < 0) return options.stylize('[DmaBuffer]', 'special');
    const fields = { phys: this.phys, bus: this.bus, size: this.size, freed: this.freed, bytes: this.bytes };
    return `DmaBuffer ${show(fields, { ...options, depth: typeof options.depth === 'number' ? options.depth - 1 : options.depth })}`;
  }

  /** True once freed (by `free()`, `pool.free()` or `pool.close()`). */
  get freed(): boolean {
    return this.#ab.byteLength === 0;
  }

  /**
   * The bus address of byte `offset` of the buffer, for a descriptor field or
   * a DMA register: `buf.busAt(512)` where `buf.bus + 512` would throw (bigint
   * plus number).
   * @param offset - an integer in [0, size).
   * @returns `bus + offset`, a bigint.
   * @throws {PhysmemError} EINVAL (not an integer, or the buffer was freed), ERANGE (outside the buffer).
   * @example
   * desc.setBigUint64(0, rx.busAt(i * 2048), true); // the i-th 2 KiB slot
   */
  busAt(offset: number): bigint {
    return addressAt('busAt', this.bus, this.size, offset, this.#ab.byteLength === 0);
  }

  /**
   * The physical address of byte `offset` of the buffer (the CPU's view; give
   * devices {@link DmaBuffer.busAt}).
   * @param offset - an integer in [0, size).
   * @returns `phys + offset`, a bigint.
   * @throws {PhysmemError} EINVAL (not an integer, or the buffer was freed), ERANGE (outside the buffer).
   */
  physAt(offset: number): bigint {
    return addressAt('physAt', this.phys, this.size, offset, this.#ab.byteLength === 0);
  }

  /**
   * Return the block to the pool; `bytes` becomes zero-length.
   * @throws {PhysmemError} EINVAL if already freed.
   */
  free(): void {
    // bytes detached means freed: never free the address again, someone else may own it now.
    if (this.#ab.byteLength === 0) {
      throw new PhysmemError('EINVAL', `DmaBuffer at ${hex(this.#addr)} was already freed`, { hint: 'free each buffer once' });
    }
    this.#pool[kFree](this.#addr, this.#view, this.#handle);
  }

  /** Same as {@link DmaBuffer.free}, but a no-op once freed. */
  [Symbol.dispose](): void {
    if (this.#ab.byteLength !== 0) this.#pool[kFree](this.#addr, this.#view, this.#handle);
  }

  /**
   * Make the CPU's writes to `[offset, offset + length)` visible to the device:
   * call after filling the buffer and before the device reads it (or before
   * handing it to a device that will write it). Like dma_sync_single_for_device,
   * PYNQ's flush. A no-op on coherent pools (`pool.coherent`: x86, fake); on
   * u-dma-buf devices with dma_coherent 0 it writes sync_for_device.
   * @param offset - bytes from the start of the buffer. Default 0.
   * @param length - bytes. Default: to the end of the buffer.
   * @param direction - default `'bidirectional'`.
   * @throws {PhysmemError} EINVAL for a range outside the buffer, a bad direction or a freed buffer;
   *   EBADF after the pool closed; ENOTSUP when the pool is not coherent and its backend cannot sync.
   */
  syncForDevice(offset = 0, length = this.size - offset, direction: SyncDirection = 'bidirectional'): void {
    this.#pool[kSync](this.#addr, this.size, this.#ab.byteLength === 0, offset, length, direction, true);
  }

  /**
   * Make the device's writes to `[offset, offset + length)` visible to the CPU:
   * call after the device wrote the buffer and before reading it. Like
   * dma_sync_single_for_cpu, PYNQ's invalidate. A no-op on coherent pools; on
   * u-dma-buf devices with dma_coherent 0 it writes sync_for_cpu.
   * @throws {PhysmemError} as {@link DmaBuffer.syncForDevice}.
   */
  syncForCpu(offset = 0, length = this.size - offset, direction: SyncDirection = 'bidirectional'): void {
    this.#pool[kSync](this.#addr, this.size, this.#ab.byteLength === 0, offset, length, direction, false);
  }
}

/**
 * DMA memory from one backend. Create with `openPoolSync()` / `openPool()`.
 * Addresses are bigints at this level; sizes are numbers of bytes.
 */
export class Pool {
  /** The backend serving this pool. */
  readonly backend: BackendName;
  /** bus = phys + busOffset. */
  readonly busOffset: bigint;
  /** True when no cache maintenance is needed for DMA (x86, fake). */
  readonly coherent: boolean;
  /** When 'auto' fell back to another backend: why. Undefined otherwise. */
  readonly fallbackReason: string | undefined;
  readonly #backend: Backend;
  readonly #alloc: RangeAllocator;
  // Live blocks by backend view id (small integers, reused): the block's
  // address (-1 once freed) and its allocator handle. A DmaBuffer knows its
  // own view and handle, so its free() looks nothing up by address.
  readonly #viewAddr: number[] = [];
  readonly #viewHandle: number[] = [];
  #liveCount = 0;
  // Address -> view id, for pool.free(phys) and findBlock: built from the
  // arrays above on first use and kept up to date from then on.
  #byAddr: AddressMap | undefined;
  readonly #allocOpts: { align?: number; boundary?: number; maxAddress?: number; at?: number } = {};
  readonly #waiters = new WaitQueue<Waiter>();
  readonly #leaks: LeakWatch | undefined; // lib/leak-check.ts
  readonly #sites: Map<number, string> | undefined; // leakCheck 'trace': address -> allocation stack
  readonly #largestRange: number;
  #closed = false;

  /** @internal Use openPoolSync()/openPool(). */
  constructor(backend: Backend, options: PoolCommonOptions = {}, fallbackReason?: string) {
    this.#backend = backend;
    this.backend = backend.name;
    this.busOffset = backend.busOffset;
    this.coherent = backend.coherent;
    this.fallbackReason = fallbackReason;
    this.#alloc = new RangeAllocator(backend.ranges.map((r) => ({ start: r.start, size: r.size })));
    this.#largestRange = Math.max(...backend.ranges.map((r) => r.size));
    const mode = options.leakCheck === undefined ? (process.env.PHYSMEM_TRACE_ALLOCATIONS === '1' ? 'trace' : 'warn') : options.leakCheck;
    if (mode !== 'off' && mode !== 'warn' && mode !== 'trace') throw invalidArgument(`leakCheck must be 'off', 'warn' or 'trace', got ${String(mode)}`);
    this.#sites = mode === 'trace' ? new Map() : undefined;
    this.#leaks = mode === 'off' ? undefined : new LeakWatch((addr) => this.#reportLeak(addr));
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A one-line description of the memory behind this pool. */
  describe(): string {
    return this.#backend.describe();
  }

  /**
   * Allocate `size` bytes of physically contiguous memory.
   * @param size - bytes, a positive integer.
   * @throws {PhysmemError} ENOMEM when nothing fits (the message gives the largest free block and the total free);
   *   EINVAL for bad arguments; EBADF after close.
   */
  alloc(size: number, options?: PoolAllocOptions): DmaBuffer {
    if (this.#closed) throw closedError('alloc');
    if (options !== undefined) checkAllocOptions(options);
    const addr = this.#alloc.alloc(size, options === undefined ? undefined : this.#allocOptions(options));
    if (addr < 0) throw this.#noMemory(size, options);
    return this.#wrap(addr, size, options === undefined || options.zero !== false);
  }

  /**
   * Allocate asynchronously. Without `wait`, fails at once like {@link Pool.alloc}
   * (GFP_ATOMIC); with `wait`, queues first come first served until enough is freed
   * (GFP_KERNEL), honouring `timeoutMs` (ETIMEDOUT) and `signal` (ECANCELED).
   */
  allocAsync(size: number, options: AsyncAllocOptions = {}): Promise<DmaBuffer> {
    try {
      if (this.#closed) throw closedError('allocAsync');
      checkAllocAsyncOptions(options);
      const { wait, timeoutMs, signal } = options;
      checkBoolean(wait, 'wait', 'pool.allocAsync()');
      checkTimeoutMs(timeoutMs, 'pool.allocAsync()');
      checkSignal(signal, 'pool.allocAsync()');
      if (signal?.aborted) throw cancelled(signal);
      const placement = this.#allocOptions(options);
      // First come, first served: do not overtake allocations already waiting.
      if (this.#waiters.length === 0 || !wait) {
        const addr = this.#alloc.alloc(size, placement);
        if (addr >= 0) return Promise.resolve(this.#wrap(addr, size, options.zero !== false));
        if (!wait) throw this.#noMemory(size, options);
      }
      // A request no memory of this pool could ever satisfy would wait for ever: refuse it now.
      if (!this.#couldFit(size, placement)) throw this.#noMemory(size, options);
      return new Promise<DmaBuffer>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const waiter: Waiter = {
          size,
          options,
          resolve,
          reject,
          cleanup: () => {
            if (timer) clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
          },
        };
        let node: WaitNode<Waiter> | undefined;
        const drop = (e: PhysmemError) => {
          if (node !== undefined) this.#waiters.remove(node);
          waiter.cleanup();
          reject(e);
          this.#serveWaiters(); // the head may have been blocking smaller requests
        };
        const onAbort = () => drop(cancelled(signal!));
        if (timeoutMs !== undefined) {
          timer = setTimeout(() => drop(new PhysmemError('ETIMEDOUT', `no ${size} bytes became free within ${timeoutMs} ms`, {
            hint: 'free buffers sooner, raise timeoutMs, or use a larger pool',
          })), timeoutMs);
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        node = this.#waiters.push(waiter);
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Free the block that starts at `phys` (bigint or number); its buffer's `bytes` become zero-length.
   * @throws {PhysmemError} EINVAL when no live block starts there (unknown, interior or double free).
   */
  free(phys: bigint | number): void {
    if (this.#closed) throw closedError('free');
    const addr = typeof phys === 'number' ? phys : toAddressNumber(phys, 'phys');
    const view = this.#addressIndex().get(addr);
    if (view < 0) {
      throw new PhysmemError('EINVAL', `no allocated block starts at physical ${hex(phys)}`, {
        hint: 'pass the exact phys of a live DmaBuffer (double free, or an address inside a block?)',
      });
    }
    this.#release(addr, view, this.#viewHandle[view]);
  }

  /** @internal DmaBuffer.free, once it has checked that its bytes are still attached (so the block is still its own). */
  [kFree](addr: number, view: number, handle: number): void {
    if (this.#closed) throw closedError('free');
    this.#release(addr, view, handle);
  }

  #release(addr: number, view: number, handle: number): void {
    this.#viewAddr[view] = -1;
    this.#liveCount--;
    if (this.#byAddr !== undefined) this.#byAddr.delete(addr);
    if (this.#leaks !== undefined) {
      this.#leaks.forget(view);
      this.#sites?.delete(addr);
    }
    this.#backend.release(view); // detach first: no view outlives the block's ownership
    this.#alloc.free(addr, handle);
    if (this.#waiters.length !== 0) this.#serveWaiters();
  }

  // The address index of live blocks, built on first use.
  #addressIndex(): AddressMap {
    if (this.#byAddr !== undefined) return this.#byAddr;
    const m = new AddressMap(this.#liveCount * 2);
    const addrs = this.#viewAddr;
    for (let view = 0; view < addrs.length; view++) if (addrs[view] >= 0) m.set(addrs[view], view);
    return (this.#byAddr = m);
  }

  /** Usage of the pool. @throws {PhysmemError} EBADF after close. */
  stats(): PoolStats {
    if (this.#closed) throw closedError('stats');
    const s = this.#alloc.stats();
    return {
      backend: this.backend,
      total: s.total,
      used: s.used,
      free: s.free,
      largestFree: s.largestFree,
      count: s.count,
      waiting: this.#waiters.length,
      busOffset: this.busOffset,
      ranges: s.ranges.map((r) => ({ start: BigInt(r.start), size: r.total, used: r.used, free: r.free, largestFree: r.largestFree, count: r.count })),
    };
  }

  /** {@link Pool.stats} as a Promise: the same call works on every kind of pool, including a daemon's. */
  statsAsync(): Promise<PoolStats> {
    try {
      return Promise.resolve(this.stats());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Every block, free or used, in address order: the pool's memory map. */
  walk(): PoolBlock[] {
    if (this.#closed) throw closedError('walk');
    return this.#alloc.walk().map((b) => ({ phys: BigInt(b.address), size: b.size, free: b.free }));
  }

  /** Verify the allocator's invariants. @throws {PhysmemError} EIO on corruption. */
  check(): void {
    if (this.#closed) throw closedError('check');
    this.#alloc.check();
    if (this.#liveCount !== this.#alloc.stats().count) {
      throw new PhysmemError('EIO', `pool tracks ${this.#liveCount} buffers but the allocator has ${this.#alloc.stats().count} blocks`);
    }
  }

  /**
   * The live block containing physical address `phys`, if any.
   * @returns its start and size, or undefined when `phys` is free memory or outside the pool.
   */
  findBlock(phys: bigint | number): { phys: bigint; size: number } | undefined {
    if (this.#closed) throw closedError('findBlock');
    const p = typeof phys === 'number' ? phys : Number(phys);
    const start = this.#alloc.blockContaining(p);
    const view = start < 0 ? -1 : this.#addressIndex().get(start);
    // The size asked for (the allocator keeps it rounded up to 8): the buffer's own length.
    return view < 0 ? undefined : { phys: BigInt(start), size: this.#backend.buffer(view).byteLength };
  }

  /**
   * Carve one block of this pool into `count` equal blocks of `blockSize`
   * bytes, each aligned to `align` and none crossing `boundary`, with O(1)
   * alloc and free. See {@link SubPool}.
   * @throws {PhysmemError} EINVAL for bad options; ENOMEM when the pool has no room for the blocks; EBADF after close.
   */
  createSubPool(options: SubPoolOptions): SubPool<DmaBuffer> {
    if (this.#closed) throw closedError('createSubPool');
    return createSubPool(this, options);
  }

  /** @internal Cache maintenance for DmaBuffer.syncForDevice / syncForCpu: checks, then the backend's sync when needed. */
  [kSync](addr: number, size: number, freed: boolean, offset: number, length: number, direction: SyncDirection, forDevice: boolean): void {
    const what = forDevice ? 'syncForDevice' : 'syncForCpu';
    if (this.#closed) throw closedError(what);
    if (freed) throw new PhysmemError('EINVAL', `${what} on a freed DmaBuffer at ${hex(addr)}`, { hint: 'sync buffers before freeing them' });
    // Checked on coherent pools too, so a driver tested on x86 does not fail on a board that needs syncs.
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw invalidArgument(`${what} range offset ${String(offset)} length ${String(length)} is outside the buffer of ${size} bytes`);
    }
    const code: SyncDirectionCode | -1 = direction === 'bidirectional' ? 0 : direction === 'toDevice' ? 1 : direction === 'fromDevice' ? 2 : -1;
    if (code === -1) throw invalidArgument(`direction must be 'bidirectional', 'toDevice' or 'fromDevice', got ${String(direction)}`);
    if (this.coherent || length === 0) return;
    if (this.#backend.sync === undefined) {
      throw new PhysmemError('ENOTSUP', `the ${this.backend} backend here is not cache-coherent with devices and cannot sync caches from userspace`, {
        hint: "use memory a device sees coherently: the udmabuf backend (it syncs through the driver), or cache: 'uncached' where the backend offers it",
      });
    }
    this.#backend.sync(addr + offset, length, forDevice, code);
  }

  /**
   * @internal Device-side access for physmem/testing: a fresh ArrayBuffer over
   * `[phys, phys + length)` (an independent path, not a buffer's own view),
   * passed to `fn` and detached afterwards.
   */
  [kDeviceAccess]<T>(phys: number, length: number, fn: (bytes: Uint8Array) => T): T {
    if (this.#closed) throw closedError('DMA');
    const view = this.#backend.view(phys, length);
    try {
      return fn(new Uint8Array(this.#backend.buffer(view)));
    } finally {
      this.#backend.release(view);
    }
  }

  /** The address a device uses for physical address `phys`. */
  toBus(phys: bigint | number): bigint {
    return BigInt(phys) + this.busOffset;
  }

  /** The physical address of bus address `bus`. */
  toPhys(bus: bigint | number): bigint {
    return BigInt(bus) - this.busOffset;
  }

  /**
   * Free everything (like allocator_cleanup), detach every buffer, reject
   * waiting allocations with EBADF, release the backend. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiters.drain()) {
      w.cleanup();
      w.reject(closedError('allocAsync'));
    }
    this.#leaks?.close();
    const addrs = this.#viewAddr;
    for (let view = 0; view < addrs.length; view++) if (addrs[view] >= 0) this.#backend.release(view);
    addrs.length = 0;
    this.#viewHandle.length = 0;
    this.#liveCount = 0;
    this.#byAddr = undefined;
    this.#sites?.clear();
    this.#alloc.freeAll();
    this.#backend.close();
  }

  /** Alias of {@link Pool.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // Convert the public options into the allocator's numeric ones, reusing one
  // object so the hot path allocates nothing; undefined when none constrains
  // placement (e.g. only `zero`), so the allocator takes its plain path.
  #allocOptions(o: PoolAllocOptions): { align?: number; boundary?: number; maxAddress?: number; at?: number } | undefined {
    checkBoolean(o.zero, 'zero', 'pool.alloc()');
    const { align, boundary, maxAddress, at } = o;
    if (align === undefined && boundary === undefined && maxAddress === undefined && at === undefined) return undefined;
    const a = this.#allocOpts;
    a.align = align;
    a.boundary = boundary;
    a.maxAddress = maxAddress === undefined ? undefined : maxAddressNumber(maxAddress);
    a.at = at === undefined ? undefined : toAddressNumber(at, 'at');
    return a;
  }

  // Whether an empty pool could place `size` bytes under `at` and `maxAddress` (alignment aside).
  #couldFit(size: number, o: { maxAddress?: number; at?: number } | undefined): boolean {
    if (o === undefined) return size <= this.#largestRange;
    for (const r of this.#backend.ranges) {
      const start = o.at ?? r.start;
      if (start < r.start || start + size > r.start + r.size) continue;
      if (o.maxAddress === undefined || start + size - 1 <= o.maxAddress) return true;
    }
    return false;
  }

  #wrap(addr: number, size: number, zero: boolean): DmaBuffer {
    const handle = this.#alloc.lastHandle; // of the alloc that returned addr, read before anything else allocates
    let view: number;
    try {
      view = this.#backend.view(addr, size);
    } catch (e) {
      this.#alloc.free(addr, handle);
      throw e;
    }
    const ab = this.#backend.buffer(view);
    const bytes = zero ? new Uint8Array(ab).fill(0) : undefined;
    // Holes (view ids beyond the end) are filled first so the arrays stay packed.
    const addrs = this.#viewAddr;
    while (addrs.length < view) {
      addrs.push(-1);
      this.#viewHandle.push(-1);
    }
    addrs[view] = addr;
    this.#viewHandle[view] = handle;
    this.#liveCount++;
    if (this.#byAddr !== undefined) this.#byAddr.set(addr, view);
    const buf = new DmaBuffer(this, addr, size, ab, bytes, view, handle);
    if (this.#leaks !== undefined) {
      this.#leaks.watch(buf, addr, view);
      if (this.#sites !== undefined) this.#sites.set(addr, allocationSite());
    }
    return buf;
  }

  // The buffer was collected but its block is still allocated (a device may still use it): say so once.
  #reportLeak(addr: number): void {
    if (this.#closed) return;
    const size = this.#alloc.sizeOf(addr);
    const stack = this.#sites?.get(addr);
    process.emitWarning(
      `DmaBuffer of ${size} bytes at physical ${hex(addr)} was garbage-collected without free(); ` +
        'its memory stays allocated until pool.close() because a device may still use it.' +
        (stack ? `\nAllocated at:\n${stack}` : ' Set PHYSMEM_TRACE_ALLOCATIONS=1 (or leakCheck: "trace") to see where it was allocated.'),
      { type: 'PhysmemLeakWarning', code: 'PHYSMEM_LEAK' },
    );
  }

  #noMemory(size: number, options: PoolAllocOptions | undefined): PhysmemError {
    const s = this.#alloc.stats();
    const constraints: string[] = [];
    if (options?.align !== undefined) constraints.push(`align ${options.align}`);
    if (options?.boundary !== undefined) constraints.push(`boundary ${options.boundary}`);
    if (options?.maxAddress !== undefined) constraints.push(`maxAddress ${hex(options.maxAddress)}`);
    if (options?.at !== undefined) constraints.push(`at ${hex(options.at)}`);
    return new PhysmemError(
      'ENOMEM',
      `cannot allocate ${size} bytes${constraints.length ? ' (' + constraints.join(', ') + ')' : ''}: ` +
        `largest free block is ${s.largestFree} bytes, ${s.free} of ${s.total} bytes free`,
      { hint: 'free buffers, relax the constraints, wait with allocAsync(size, { wait: true }), or give the pool more memory' },
    );
  }

  #serveWaiters(): void {
    this.#waiters.serve(this.#serveOne);
  }

  // One waiter at the head: true when it was answered (granted or failed), false when it must wait.
  readonly #serveOne = (w: Waiter): boolean => {
    let buf: DmaBuffer;
    try {
      const addr = this.#alloc.alloc(w.size, this.#allocOptions(w.options));
      if (addr < 0) return false; // strict FIFO: the head waits, and so does everyone behind it
      buf = this.#wrap(addr, w.size, w.options.zero !== false);
    } catch (e) {
      w.cleanup();
      w.reject(e);
      return true;
    }
    w.cleanup();
    w.resolve(buf);
    return true;
  };
}

function maxAddressNumber(v: bigint | number): number {
  // Anything at or above 2^53 is no limit for addresses the allocator can hold.
  if (typeof v === 'bigint' && v >= BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return toAddressNumber(v, 'maxAddress');
}

function cancelled(signal: AbortSignal): PhysmemError {
  return new PhysmemError('ECANCELED', 'waiting allocation was aborted', { hint: 'the AbortSignal passed as `signal` fired', cause: signal.reason });
}

function allocationSite(): string {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, allocationSite);
  // Drop the "Error" line and physmem's own frames.
  return (holder.stack ?? '').split('\n').slice(1).filter((l) => !/[\\/]lib[\\/]pool\.[jt]s/.test(l)).join('\n');
}
