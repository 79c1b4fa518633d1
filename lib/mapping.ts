/**
 * A memory mapping and the ArrayBuffers handed out over it.
 *
 * The mapping keeps every ArrayBuffer it made, in a slot, until that slot is
 * released, so `close()` can detach them all before munmap: a stale
 * Uint8Array then reads as empty instead of touching unmapped memory. Slots
 * (small integers) rather than a Set of buffers, because hashing a fresh
 * ArrayBuffer costs more than creating it.
 * @module
 */
import { PhysmemError } from './errors.js';
import { native, toPhysmemError, type NativeAddon } from './native.js';

/**
 * open(2) a file through the addon, with fs-style errors.
 * @param hint - appended to the error message (what to do).
 * @throws {PhysmemError} ENOENT, EACCES, EPERM, ... with `path` and `syscall: 'open'`.
 */
export function openFile(path: string, writable: boolean, sync: boolean, hint?: (code: string) => string | undefined): number {
  try {
    return native().open(path, writable, sync);
  } catch (e) {
    const err = toPhysmemError(e, path);
    if (err instanceof PhysmemError && hint) throw toPhysmemError(e, path, hint(err.code));
    throw err;
  }
}

/** close(2) an fd; errors are ignored (nothing useful can be done on close). */
export function closeFile(fd: number): void {
  try {
    native().close(fd);
  } catch {
    /* already closed */
  }
}

/** A live mmap of `length` bytes of a file; see the module comment. */
export class Mapping {
  /** Length of the mapping in bytes. */
  readonly length: number;
  /** The file mapped, for error messages. */
  readonly path: string;
  #handle: number;
  readonly #views: (ArrayBuffer | undefined)[] = [];
  readonly #freeSlots: number[] = [];
  #live = 0;
  // The two functions of every DmaBuffer alloc+free, looked up once: the
  // addon's exports object has too many properties for a fast property load.
  readonly #arrayBuffer: NativeAddon['arrayBuffer'];
  readonly #detach: NativeAddon['detach'];

  private constructor(handle: number, length: number, path: string) {
    const n = native();
    this.#arrayBuffer = n.arrayBuffer;
    this.#detach = n.detach;
    this.#handle = handle;
    this.length = length;
    this.path = path;
  }

  /**
   * mmap(2) `length` bytes of `fd` from byte `offset` (page-aligned; 64-bit).
   * @throws {PhysmemError} from mmap (EPERM under STRICT_DEVMEM, ENOMEM, EINVAL), with `path`.
   */
  static map(fd: number, offset: bigint, length: number, writable: boolean, path: string, hint?: (code: string) => string | undefined): Mapping {
    try {
      return new Mapping(native().mmap(fd, offset, length, writable), length, path);
    } catch (e) {
      const err = toPhysmemError(e, path);
      throw err instanceof PhysmemError && hint ? toPhysmemError(e, path, hint(err.code)) : err;
    }
  }

  /**
   * A new memfd of `size` bytes (zero-filled), mapped shared and writable; the
   * fd is closed again (the mapping keeps the memory).
   * @param hint - appended when the memfd cannot be created.
   * @throws {PhysmemError} ENOMEM, EMFILE from memfd_create/mmap.
   */
  static memfd(name: string, size: number, path: string, hint: string): Mapping {
    let fd: number;
    try {
      fd = native().memfdCreate(name, size);
    } catch (e) {
      throw toPhysmemError(e, undefined, hint);
    }
    try {
      return Mapping.map(fd, 0n, size, true, path);
    } finally {
      closeFile(fd);
    }
  }

  /**
   * Reserve `length` bytes of address space with nothing mapped in it yet
   * (touching it faults); fill it with {@link Mapping.mapInto}.
   */
  static reserve(length: number, writable: boolean, path: string): Mapping {
    try {
      return new Mapping(native().reserve(length, writable), length, path);
    } catch (e) {
      throw toPhysmemError(e, path);
    }
  }

  /**
   * Map `length` bytes of `fd` from `fileOffset` over `[offset, offset + length)`
   * of a reserved mapping (page-aligned).
   * @throws {PhysmemError} from mmap (EPERM under STRICT_DEVMEM, EAGAIN for a cache-type conflict), with `path`.
   */
  mapInto(offset: number, fd: number, fileOffset: bigint, length: number, hint?: (code: string) => string | undefined): void {
    try {
      native().mapInto(this.handle, offset, fd, fileOffset, length);
    } catch (e) {
      const err = toPhysmemError(e, this.path);
      throw err instanceof PhysmemError && hint ? toPhysmemError(e, this.path, hint(err.code)) : err;
    }
  }

  /** True once {@link Mapping.close} ran. */
  get closed(): boolean {
    return this.#handle === 0;
  }

  /** The native handle (for exact-width access); throws EBADF once closed. */
  get handle(): number {
    if (this.#handle === 0) throw new PhysmemError('EBADF', `mapping of '${this.path}' is closed`);
    return this.#handle;
  }

  /** Number of ArrayBuffers handed out and not yet released. */
  get viewCount(): number {
    return this.#live;
  }

  /**
   * A new ArrayBuffer over exactly `[offset, offset + length)` (no copy).
   * @returns its slot: get the buffer with {@link Mapping.buffer}, detach it with
   *   {@link Mapping.release}; {@link Mapping.close} detaches it otherwise.
   */
  view(offset: number, length: number): number {
    const ab = this.#arrayBuffer(this.handle, offset, length);
    const slot = this.#freeSlots.length !== 0 ? this.#freeSlots.pop()! : this.#views.length;
    this.#views[slot] = ab;
    this.#live++;
    return slot;
  }

  /** The ArrayBuffer in `slot` (from {@link Mapping.view}); undefined once released. */
  buffer(slot: number): ArrayBuffer | undefined {
    return this.#views[slot];
  }

  /** Detach the ArrayBuffer in `slot` (views over it become zero-length) and free the slot. No-op if already released. */
  release(slot: number): void {
    const ab = this.#views[slot];
    if (ab === undefined) return;
    this.#views[slot] = undefined;
    this.#freeSlots.push(slot);
    this.#live--;
    this.#detach(this.#handle, ab);
  }

  /** The mapping's virtual address in this process. */
  address(): bigint {
    return native().mappingAddress(this.handle);
  }

  /** Detach every ArrayBuffer still out, then munmap. Idempotent. */
  close(): void {
    if (this.#handle === 0) return;
    const n = native();
    for (const ab of this.#views) if (ab !== undefined) n.detach(this.#handle, ab);
    this.#views.length = 0;
    this.#freeSlots.length = 0;
    this.#live = 0;
    const h = this.#handle;
    this.#handle = 0;
    n.munmap(h);
  }
}
