/**
 * Fixed-size sub-pools: one {@link DmaBuffer} carved into equal blocks, for
 * packet buffers and descriptor rings (Linux's dma_pool, done in userspace).
 *
 * `alloc()` and `free()` are O(1) and allocate nothing: free blocks sit on a
 * stack in an Int32Array, and each block is one {@link SubPoolBlock} object,
 * made the first time its block is handed out and reused afterwards. A
 * block's `bytes` is a view (subarray) of the sub-pool's own memory, so the
 * sub-pool is one trust domain: a block's view still reaches its memory after
 * `free()`. Closing the sub-pool frees its memory, which detaches every view.
 * @module
 */
import { addressAt } from './address.js';
import type { SyncDirection } from './dma-types.js';
import { PhysmemError, invalidArgument } from './errors.js';
import { isPowerOfTwo, optionNames, optionsChecker } from './internal/validate.js';

/**
 * What a sub-pool needs of the memory its blocks live in: a {@link DmaBuffer}
 * (declared here so that this module does not import pool.ts).
 */
export interface SubPoolMemory {
  /** The whole memory, as bytes. Zero-length once freed. */
  readonly bytes: Uint8Array;
  /** Its size in bytes, as allocated. */
  readonly size: number;
  /** Physical address of byte 0. */
  readonly phys: bigint;
  /** Bus (device) address of byte 0. */
  readonly bus: bigint;
  /** Cache maintenance before the device reads [offset, offset + length). */
  syncForDevice(offset: number, length: number, direction?: SyncDirection): void;
  /** Cache maintenance before the CPU reads [offset, offset + length). */
  syncForCpu(offset: number, length: number, direction?: SyncDirection): void;
  /** Free the memory (idempotent). */
  [Symbol.dispose](): void;
}

/** What `pool.createSubPool()` needs of a pool: one allocation with constraints (a {@link Pool}). */
export interface SubPoolSource<B extends SubPoolMemory> {
  /** Allocate `size` bytes aligned to `align`, crossing no `boundary`, ending at or below `maxAddress`. */
  alloc(size: number, options: { align: number; boundary?: number; maxAddress?: bigint | number }): B;
}

/** Options of {@link Pool.createSubPool}. Sizes in bytes. */
export interface SubPoolOptions {
  /** Bytes per block, a positive integer. */
  blockSize: number;
  /** Number of blocks, a positive integer below 2^31. */
  count: number;
  /** Alignment of every block's physical address, a power of two. Default 64 (a cache line). */
  align?: number;
  /** No block crosses a multiple of this power of two (>= blockSize), as Linux's dma_pool. Default: none. */
  boundary?: number;
  /** Every block's last byte is at or below this physical address (e.g. `0xffffffffn`). Default: none. */
  maxAddress?: bigint | number;
}

/** Where a sub-pool's blocks lie in its memory, from {@link subPoolLayout}. */
export interface SubPoolLayout {
  /** Distance between consecutive blocks inside a window: blockSize rounded up to align. */
  stride: number;
  /** Blocks per window: blocks `i` and `i + 1` are `stride` apart unless `(i + 1) % perWindow === 0`. */
  perWindow: number;
  /** Bytes per window (a multiple of `boundary`, or `perWindow * stride` when no boundary forces gaps). */
  window: number;
  /** Bytes of memory the blocks need. */
  size: number;
  /** Alignment to allocate that memory with. */
  parentAlign: number;
  /** Boundary the memory itself must not cross, when that alone keeps blocks from crossing one. */
  parentBoundary: number | undefined;
}

/**
 * The placement of `count` blocks of `blockSize` bytes: block `i` starts at
 * `Math.floor(i / perWindow) * window + (i % perWindow) * stride` from the
 * start of memory allocated with `parentAlign` (and `parentBoundary`).
 *
 * Without a boundary, or when all blocks fit in one boundary window (the
 * memory is then allocated not to cross it), or when `align >= boundary`
 * (aligned blocks cannot cross it), blocks are `stride` apart. Otherwise the
 * memory is aligned to `boundary` and each boundary window holds
 * `floor(boundary / stride)` blocks, the rest of the window left unused.
 * @throws {PhysmemError} EINVAL for bad values (the message names the option).
 */
export function subPoolLayout(blockSize: number, count: number, align = 64, boundary?: number): SubPoolLayout {
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw invalidArgument(`blockSize must be a positive integer number of bytes, got ${String(blockSize)}`);
  if (!Number.isSafeInteger(count) || count <= 0 || count > 0x7fff_ffff) throw invalidArgument(`count must be an integer from 1 to 2^31 - 1, got ${String(count)}`);
  if (!isPowerOfTwo(align)) throw invalidArgument(`align must be a power of two number of bytes, got ${String(align)}`);
  if (boundary !== undefined && (!isPowerOfTwo(boundary) || boundary < blockSize)) {
    throw invalidArgument(`boundary must be a power of two >= blockSize (${blockSize}), got ${String(boundary)}`);
  }
  const stride = Math.ceil(blockSize / align) * align;
  const linear = (count - 1) * stride + blockSize;
  if (!Number.isSafeInteger(linear)) throw invalidArgument('blockSize * count is too large');
  // The pool keeps sizes in multiples of 8 (its granule), so that is what must fit in one window.
  if (boundary === undefined || align >= boundary || Math.ceil(linear / 8) * 8 <= boundary) {
    const parentBoundary = boundary !== undefined && align < boundary ? boundary : undefined;
    return { stride, perWindow: count, window: count * stride, size: linear, parentAlign: align, parentBoundary };
  }
  // align < boundary, both powers of two, so stride <= boundary: at least one block per window.
  const perWindow = Math.floor(boundary / stride);
  const last = count - 1;
  const size = Math.floor(last / perWindow) * boundary + (last % perWindow) * stride + blockSize;
  return { stride, perWindow, window: boundary, size, parentAlign: boundary, parentBoundary: undefined };
}

function closedError(what: string): PhysmemError {
  return new PhysmemError('EBADF', `${what} on a closed sub-pool`, { hint: 'create a new one with pool.createSubPool()' });
}

/**
 * One block of a {@link SubPool}. The same object is handed out every time
 * its block is allocated, so keep it only while you own the block.
 */
export class SubPoolBlock {
  /** Index of the block in its sub-pool, 0 to count - 1. */
  readonly index: number;
  /** Byte offset of the block in the sub-pool's memory (`subPool.buffer.bytes`). */
  readonly offset: number;
  /** Physical address of the first byte. */
  readonly phys: bigint;
  /** Address the device uses: `phys` plus the pool's bus offset. */
  readonly bus: bigint;
  /**
   * The block's `blockSize` bytes: a view into the sub-pool's memory. Not
   * detached by `free()` (the sub-pool is one trust domain); zero-length once
   * the sub-pool is closed.
   */
  readonly bytes: Uint8Array;
  readonly #sub: SubPool;

  /** @internal Made by {@link SubPool}. */
  constructor(sub: SubPool, index: number, offset: number, phys: bigint, bus: bigint, bytes: Uint8Array) {
    this.#sub = sub;
    this.index = index;
    this.offset = offset;
    this.phys = phys;
    this.bus = bus;
    this.bytes = bytes;
  }

  /** True while the block is allocated (false after free and once the sub-pool is closed). */
  get allocated(): boolean {
    return this.#sub.isAllocated(this);
  }

  /**
   * The bus address of byte `offset` of the block (see DmaBuffer.busAt).
   * @param offset - an integer in [0, blockSize).
   * @throws {PhysmemError} EINVAL (not an integer, or the block is not allocated), ERANGE (outside the block).
   */
  busAt(offset: number): bigint {
    return addressAt('busAt', this.bus, this.#sub.blockSize, offset, !this.allocated);
  }

  /**
   * The physical address of byte `offset` of the block (see DmaBuffer.physAt).
   * @throws {PhysmemError} as {@link SubPoolBlock.busAt}.
   */
  physAt(offset: number): bigint {
    return addressAt('physAt', this.phys, this.#sub.blockSize, offset, !this.allocated);
  }

  /** Return the block to its sub-pool. @throws {PhysmemError} EINVAL if not allocated; EBADF after close. */
  free(): void {
    this.#sub.free(this);
  }

  /**
   * Make the CPU's writes to `[offset, offset + length)` of this block visible
   * to the device (see DmaBuffer.syncForDevice).
   * @param offset - bytes from the start of the block. Default 0.
   * @param length - bytes. Default: to the end of the block.
   * @param direction - default `'bidirectional'`.
   * @throws {PhysmemError} EINVAL for a range outside the block or a block not allocated; EBADF after close.
   */
  syncForDevice(offset = 0, length = this.#sub.blockSize - offset, direction: SyncDirection = 'bidirectional'): void {
    this.#sync(offset, length, direction, true);
  }

  /**
   * Make the device's writes to `[offset, offset + length)` of this block
   * visible to the CPU (see DmaBuffer.syncForCpu).
   * @throws {PhysmemError} as {@link SubPoolBlock.syncForDevice}.
   */
  syncForCpu(offset = 0, length = this.#sub.blockSize - offset, direction: SyncDirection = 'bidirectional'): void {
    this.#sync(offset, length, direction, false);
  }

  #sync(offset: number, length: number, direction: SyncDirection, forDevice: boolean): void {
    const size = this.#sub.blockSize;
    if (this.#sub.closed) throw closedError(forDevice ? 'syncForDevice' : 'syncForCpu');
    if (!this.#sub.isAllocated(this)) throw new PhysmemError('EINVAL', `block ${this.index} of the sub-pool is not allocated`, { hint: 'sync blocks you own' });
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw invalidArgument(`sync range offset ${String(offset)} length ${String(length)} is outside the block of ${size} bytes`);
    }
    const parent = this.#sub.buffer;
    if (forDevice) parent.syncForDevice(this.offset + offset, length, direction);
    else parent.syncForCpu(this.offset + offset, length, direction);
  }
}

/**
 * Equal blocks carved from one DmaBuffer. Create with
 * {@link Pool.createSubPool}. O(1) {@link SubPool.alloc} / {@link SubPool.free}.
 */
export class SubPool<B extends SubPoolMemory = SubPoolMemory> {
  /** Bytes per block. */
  readonly blockSize: number;
  /** Number of blocks. */
  readonly count: number;
  /** Alignment of every block's physical address. */
  readonly align: number;
  /** No block crosses a multiple of this; undefined when none was asked. */
  readonly boundary: number | undefined;
  /** The memory all blocks live in (one block of the pool: a DmaBuffer). Freeing it closes the sub-pool. */
  readonly buffer: B;
  readonly #layout: SubPoolLayout;
  // The buffer's bytes: zero-length once it is freed, which is how closed is seen on the hot path.
  // Read as .length: V8 (11.3) inlines it, while .byteLength of a typed array costs ~15 ns here.
  readonly #bytes: Uint8Array;
  readonly #base: number;
  readonly #busOffset: bigint;
  readonly #stack: Int32Array; // free block indexes; top of stack at #top - 1
  #top: number;
  readonly #live: Uint8Array; // 1 while allocated
  readonly #blocks: (SubPoolBlock | undefined)[];
  #closed = false;

  /** @internal Use {@link Pool.createSubPool}. */
  constructor(buffer: B, layout: SubPoolLayout, blockSize: number, count: number, align: number, boundary: number | undefined) {
    this.buffer = buffer;
    this.#layout = layout;
    this.blockSize = blockSize;
    this.count = count;
    this.align = align;
    this.boundary = boundary;
    this.#bytes = buffer.bytes;
    this.#base = Number(buffer.phys);
    this.#busOffset = buffer.bus - buffer.phys;
    this.#stack = new Int32Array(count);
    for (let k = 0; k < count; k++) this.#stack[k] = count - 1 - k; // block 0 comes out first
    this.#top = count;
    this.#live = new Uint8Array(count);
    this.#blocks = new Array<SubPoolBlock | undefined>(count).fill(undefined); // packed, not holey: faster reads
  }

  /** Blocks free now. */
  get available(): number {
    return this.#top;
  }

  /** Blocks allocated now. */
  get inUse(): number {
    return this.count - this.#top;
  }

  /** True once closed (by {@link SubPool.close}, by freeing {@link SubPool.buffer}, or by closing the pool). */
  get closed(): boolean {
    return this.#closed || this.#bytes.length === 0;
  }

  /**
   * Take a free block. O(1); allocates nothing after a block's first use.
   * Its bytes are not cleared (the memory was zeroed when the sub-pool was made).
   * @throws {PhysmemError} ENOMEM when every block is in use; EBADF after close.
   */
  alloc(): SubPoolBlock {
    const top = this.#top;
    if (top === 0 || this.#bytes.length === 0) throw this.#allocError(top);
    const i = this.#stack[top - 1];
    this.#top = top - 1;
    this.#live[i] = 1;
    return this.#blocks[i] ?? this.#make(i);
  }

  /**
   * Like {@link SubPool.alloc}, but returns undefined when every block is in use.
   * @throws {PhysmemError} EBADF after close.
   */
  tryAlloc(): SubPoolBlock | undefined {
    if (this.#top === 0 && this.#bytes.length !== 0) return undefined;
    return this.alloc();
  }

  /**
   * Return a block. O(1).
   * @throws {PhysmemError} EINVAL when `block` is not an allocated block of this sub-pool (double free,
   *   or another sub-pool's); EBADF after close.
   */
  free(block: SubPoolBlock): void {
    const i = (block as SubPoolBlock | undefined)?.index as number;
    if (this.#blocks[i] !== block || this.#live[i] !== 1 || this.#bytes.length === 0) throw this.#freeError(block);
    this.#live[i] = 0;
    this.#stack[this.#top++] = i;
  }

  /** True when `block` is an allocated block of this sub-pool (false once closed). */
  isAllocated(block: SubPoolBlock): boolean {
    const i = (block as SubPoolBlock | undefined)?.index as number;
    return this.#blocks[i] === block && this.#live[i] === 1 && !this.closed;
  }

  /**
   * The block object of index `index`, allocated or not (for drivers that keep indexes in descriptors).
   * @throws {PhysmemError} EINVAL for an index outside 0..count-1; EBADF after close.
   */
  block(index: number): SubPoolBlock {
    if (this.closed) throw closedError('block');
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw invalidArgument(`block index must be an integer from 0 to ${this.count - 1}, got ${String(index)}`);
    return this.#blocks[index] ?? this.#make(index);
  }

  /** Free the sub-pool's memory: every block's `bytes` becomes zero-length. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.buffer[Symbol.dispose](); // a no-op when the pool (closed) already freed it
  }

  /** Alias of {@link SubPool.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #make(i: number): SubPoolBlock {
    const l = this.#layout;
    const offset = Math.floor(i / l.perWindow) * l.window + (i % l.perWindow) * l.stride;
    const phys = BigInt(this.#base + offset);
    const bus = this.#busOffset === 0n ? phys : phys + this.#busOffset;
    const b = new SubPoolBlock(this, i, offset, phys, bus, this.#bytes.subarray(offset, offset + this.blockSize));
    this.#blocks[i] = b;
    return b;
  }

  #allocError(top: number): PhysmemError {
    if (this.closed) return closedError('alloc');
    return new PhysmemError('ENOMEM', `all ${this.count} blocks of ${this.blockSize} bytes of the sub-pool are in use (${top} free)`, {
      hint: 'free blocks, or create the sub-pool with a larger count',
    });
  }

  #freeError(block: SubPoolBlock): PhysmemError {
    if (this.closed) return closedError('free');
    const i = (block as SubPoolBlock | undefined)?.index;
    if (typeof i !== 'number' || this.#blocks[i] !== block) {
      return invalidArgument('not a block of this sub-pool', 'Pass a block returned by this sub-pool\'s alloc().');
    }
    return new PhysmemError('EINVAL', `block ${i} of the sub-pool is not allocated (double free?)`, { hint: 'free each block once' });
  }
}

/** Refuses a non-object and unknown option names (with "did you mean"). */
const checkSubPoolOptions = optionsChecker('pool.createSubPool()', optionNames<SubPoolOptions>({ blockSize: true, count: true, align: true, boundary: true, maxAddress: true }));

/**
 * @internal Carve a new sub-pool out of `pool` (the body of {@link Pool.createSubPool}).
 */
export function createSubPool<B extends SubPoolMemory>(pool: SubPoolSource<B>, options: SubPoolOptions): SubPool<B> {
  if (checkSubPoolOptions(options) === undefined) throw invalidArgument('pool.createSubPool() needs options { blockSize, count }', 'e.g. pool.createSubPool({ blockSize: 2048, count: 512 })');
  const { blockSize, count, align = 64, boundary, maxAddress } = options;
  const layout = subPoolLayout(blockSize, count, align, boundary);
  const buffer = pool.alloc(layout.size, { align: layout.parentAlign, boundary: layout.parentBoundary, maxAddress });
  return new SubPool(buffer, layout, blockSize, count, align, boundary);
}
