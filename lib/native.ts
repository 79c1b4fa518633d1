/**
 * The native addon's whole surface, typed in one place, and its lazy loader.
 *
 * The rest of lib/ talks to {@link NativeAddon} only; tests can inject a fake
 * with {@link setNativeAddonForTesting}. The addon is loaded on first use, not
 * at import time, so pure parts (allocator, discovery parsers) work without a
 * compiler toolchain.
 * @module
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { PhysmemError, codeOfErrno, describeCode } from './errors.js';

/**
 * Functions exported by `native/physmem.cc`. Every failure throws an Error
 * with `code` (and, for system calls, positive `errno` and `syscall`);
 * {@link callNative} turns those into {@link PhysmemError}s.
 *
 * Handles are small positive integers naming a mapping inside the addon.
 */
export interface NativeAddon {
  /** open(2) with O_CLOEXEC; `writable` selects O_RDWR, `sync` adds O_SYNC. Returns the fd. */
  open(path: string, writable: boolean, sync: boolean): number;
  /** close(2). */
  close(fd: number): void;
  /** memfd_create(2) + ftruncate(2) to `size` bytes. Returns the fd. */
  memfdCreate(name: string, size: number): number;
  /** mmap(2) MAP_SHARED of `length` bytes at file `offset` (page-aligned, 64-bit). Returns a mapping handle. */
  mmap(fd: number, offset: bigint, length: number, writable: boolean): number;
  /** Reserve `length` bytes of address space (PROT_NONE, no memory); fill it with {@link NativeAddon.mapInto}. Returns a mapping handle. */
  reserve(length: number, writable: boolean): number;
  /** mmap(2) MAP_FIXED|MAP_SHARED `length` bytes of `fd` at `fileOffset` over `[offset, offset + length)` of a reserved mapping (page-aligned). */
  mapInto(handle: number, offset: number, fd: number, fileOffset: bigint, length: number): void;
  /** munmap(2). Throws EBUSY while ArrayBuffers over the mapping are still attached. */
  munmap(handle: number): void;
  /** An external (zero-copy) ArrayBuffer over exactly `[offset, offset + length)` of the mapping. */
  arrayBuffer(handle: number, offset: number, length: number): ArrayBuffer;
  /** Detach an ArrayBuffer made by `arrayBuffer` on this mapping: every view over it becomes zero-length. No-op if already detached. */
  detach(handle: number, buffer: ArrayBuffer): void;
  /** How many ArrayBuffers over the mapping are still attached. */
  attachedCount(handle: number): number;
  /** The mapping's virtual address (for /proc/self/pagemap). */
  mappingAddress(handle: number): bigint;
  /** One volatile 8-bit load at `offset`. */
  read8(handle: number, offset: number): number;
  /** One volatile 16-bit load at `offset` (2-byte aligned). */
  read16(handle: number, offset: number): number;
  /** One volatile 32-bit load at `offset` (4-byte aligned); unsigned. */
  read32(handle: number, offset: number): number;
  /** One volatile 64-bit load at `offset` (8-byte aligned). */
  read64(handle: number, offset: number): bigint;
  /** One volatile 8-bit store. */
  write8(handle: number, offset: number, value: number): void;
  /** One volatile 16-bit store. */
  write16(handle: number, offset: number, value: number): void;
  /** One volatile 32-bit store. */
  write32(handle: number, offset: number, value: number): void;
  /** One volatile 64-bit store. */
  write64(handle: number, offset: number, value: bigint): void;
  /** The system page size in bytes. */
  pageSize(): number;
  /**
   * memfd_create(2) with MFD_HUGETLB and pages of `2 ** hugePageShift` bytes
   * (21: 2 MiB, 30: 1 GiB; EINVAL outside [16, 34]), then ftruncate(2) to
   * `size` (a positive multiple of the huge page size). Returns the fd. No
   * file is visible anywhere; the huge pages are reserved by `mmap` of it
   * (ENOMEM there when too few are free).
   */
  memfdCreateHuge(name: string, size: number, hugePageShift: number): number;
  /** mlock(2) the whole mapping (also faults it in); munmap unlocks. */
  mlock(handle: number): void;
}

let injected: NativeAddon | undefined;
let loaded: NativeAddon | undefined;

/** The package root (where binding.gyp lives), found from this file's location in lib/ or dist/lib/. */
export function moduleRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    dir = dirname(dir);
  }
  return dirname(dirname(fileURLToPath(import.meta.url)));
}

/**
 * The addon, loaded on first call.
 * @throws {PhysmemError} code `ENOENT` listing the paths tried and how to build it.
 */
export function native(): NativeAddon {
  if (injected) return injected;
  if (loaded) return loaded;
  const root = moduleRoot();
  const require = createRequire(import.meta.url);
  const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => NativeAddon;
  try {
    loaded = bindings({ bindings: 'physmem', module_root: root });
  } catch (e) {
    // bindings' message is "Could not locate the bindings file. Tried:" followed by one "→ path" line per try.
    const tried = ((e as Error).message.match(/→ .*/g) ?? []).map((l) => '  ' + l).join('\n');
    throw new PhysmemError('ENOENT', `the native addon physmem.node could not be loaded from ${root}`, {
      hint:
        (tried ? `Tried:\n${tried}\n` : `${(e as Error).message.split('\n')[0]}\n`) +
        'Build it with `npm rebuild physmem` (needs python3, make and g++; on Debian: apt-get install -y python3 make g++). ' +
        'physmem runs on Linux only.',
      cause: e,
    });
  }
  return loaded;
}

/** Replace the addon with a fake (tests only); pass `undefined` to restore the real one. */
export function setNativeAddonForTesting(fake: NativeAddon | undefined): void {
  injected = fake;
}

/**
 * Convert an error thrown by the addon into a {@link PhysmemError} with the
 * path involved and a hint; other errors pass through unchanged.
 */
export function toPhysmemError(e: unknown, path?: string, hint?: string): unknown {
  if (e instanceof PhysmemError || typeof e !== 'object' || e === null) return e;
  const err = e as { code?: unknown; errno?: unknown; syscall?: unknown; message?: string };
  if (typeof err.code !== 'string') return e;
  const code = typeof err.errno === 'number' ? codeOfErrno(err.errno) : err.code;
  if (typeof err.syscall === 'string') {
    return new PhysmemError(code, describeCode(code), { syscall: err.syscall, path, hint, cause: e });
  }
  const detail = (err.message ?? '').replace(/^[A-Z]+: /, '');
  return new PhysmemError(code, detail, { path, hint, cause: e });
}
