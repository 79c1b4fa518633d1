/**
 * A memory mapping and the ArrayBuffers handed out over it.
 *
 * The mapping keeps every ArrayBuffer it made until that buffer is released,
 * so `close()` can detach them all before munmap: a stale Uint8Array then
 * reads as empty instead of touching unmapped memory.
 * @module
 */
import { PhysmemError } from './errors.js';
import { native, toPhysmemError } from './native.js';

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
  readonly #views = new Set<ArrayBuffer>();

  private constructor(handle: number, length: number, path: string) {
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
    return this.#views.size;
  }

  /**
   * A new ArrayBuffer over exactly `[offset, offset + length)` (no copy).
   * Release it with {@link Mapping.release}; {@link Mapping.close} detaches it otherwise.
   */
  view(offset: number, length: number): ArrayBuffer {
    const ab = native().arrayBuffer(this.handle, offset, length);
    this.#views.add(ab);
    return ab;
  }

  /** Detach `ab` (views over it become zero-length) and forget it. */
  release(ab: ArrayBuffer): void {
    if (this.#views.delete(ab)) native().detach(this.#handle, ab);
  }

  /** The mapping's virtual address in this process. */
  address(): bigint {
    return native().mappingAddress(this.handle);
  }

  /** Detach every ArrayBuffer still out, then munmap. Idempotent. */
  close(): void {
    if (this.#handle === 0) return;
    const n = native();
    for (const ab of this.#views) n.detach(this.#handle, ab);
    this.#views.clear();
    const h = this.#handle;
    this.#handle = 0;
    n.munmap(h);
  }
}
