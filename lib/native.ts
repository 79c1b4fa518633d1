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
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync, readdirSync } from 'node:fs';
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
  // ---- exact-width MMIO access (physmem.cc) and barriers (barrier.cc) ----
  // The plain names are Linux's readl/writel: an I/O read barrier after the
  // load, an I/O write barrier before the store, inside the same call. The
  // *Relaxed ones are readl_relaxed/writel_relaxed: the access alone.
  /** One volatile 8-bit load at `offset`, then a read barrier (readb). */
  read8(handle: number, offset: number): number;
  /** One volatile 16-bit load at `offset` (2-byte aligned), then a read barrier (readw). */
  read16(handle: number, offset: number): number;
  /** One volatile 32-bit load at `offset` (4-byte aligned), then a read barrier (readl); unsigned. */
  read32(handle: number, offset: number): number;
  /** One volatile 64-bit load at `offset` (8-byte aligned), then a read barrier (readq). */
  read64(handle: number, offset: number): bigint;
  /** A write barrier, then one volatile 8-bit store (writeb). */
  write8(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 16-bit store (writew). */
  write16(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 32-bit store (writel). */
  write32(handle: number, offset: number, value: number): void;
  /** A write barrier, then one volatile 64-bit store (writeq). */
  write64(handle: number, offset: number, value: bigint): void;
  /** One volatile 8-bit load, no barrier (readb_relaxed). */
  read8Relaxed(handle: number, offset: number): number;
  /** One volatile 16-bit load, no barrier (readw_relaxed). */
  read16Relaxed(handle: number, offset: number): number;
  /** One volatile 32-bit load, no barrier (readl_relaxed); unsigned. */
  read32Relaxed(handle: number, offset: number): number;
  /** One volatile 64-bit load, no barrier (readq_relaxed). */
  read64Relaxed(handle: number, offset: number): bigint;
  /** One volatile 8-bit store, no barrier (writeb_relaxed). */
  write8Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 16-bit store, no barrier (writew_relaxed). */
  write16Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 32-bit store, no barrier (writel_relaxed). */
  write32Relaxed(handle: number, offset: number, value: number): void;
  /** One volatile 64-bit store, no barrier (writeq_relaxed). */
  write64Relaxed(handle: number, offset: number, value: bigint): void;
  /** Full barrier, Linux's mb(): x86 mfence, arm64 dsb sy. */
  mb(): void;
  /** Read barrier, Linux's rmb(): x86 lfence, arm64 dsb ld. */
  rmb(): void;
  /** Write barrier, Linux's wmb(): x86 sfence, arm64 dsb st. */
  wmb(): void;
  /** Read barrier for coherent DMA memory, Linux's dma_rmb(): x86 compiler-only, arm64 dmb oshld. */
  dmaRmb(): void;
  /** Write barrier for coherent DMA memory, Linux's dma_wmb(): x86 compiler-only, arm64 dmb oshst. */
  dmaWmb(): void;
  /** Drain write-combining buffers: x86 sfence, arm64 dsb st. */
  wcFlush(): void;
  /** Which barrier set the addon was built with: `'x86-64'`, `'arm64'`, or `'generic'` (full fences everywhere). */
  barrierArch(): string;
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
  /**
   * Open (creating it, mode 0600) a lock file for {@link NativeAddon.lockRange}:
   * O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC. The same file (inode) returns
   * the same fd, reference counted process-wide (all worker threads), because
   * closing any fd of a file drops every POSIX lock the process holds on it.
   * Close only with {@link NativeAddon.lockFileClose}.
   * @throws ELOOP (a symlink), EACCES, ENOENT (no such directory), EPERM (not a
   *   regular file, owned by neither root nor the effective user, or writable by
   *   group or others).
   */
  lockFileOpen(path: string): number;
  /** Drop one reference from {@link NativeAddon.lockFileOpen}; the last closes the file (dropping any locks left on it). EBADF for an fd it did not return. */
  lockFileClose(fd: number): void;
  /**
   * Take a POSIX write lock (fcntl F_SETLK, F_WRLCK) on bytes `[start, start + length)`
   * of a lock file (offsets stand for memory addresses; start + length < 2^63).
   * Never waits. A range overlapping one this process already holds (any
   * worker thread) is refused too, since POSIX locks never conflict within a process.
   * @returns `null` when locked, else one conflicting lock: its holder's pid
   *   (`process.pid` for this process; -1 when not visible from here, e.g. another
   *   PID namespace), its start and length in bytes (0n: to the end of the file).
   * @throws EBADF (fd not from lockFileOpen), EINVAL (length 0 or past 2^63), ENOLCK.
   */
  lockRange(fd: number, start: bigint, length: bigint): LockConflict | null;
  /** Release exactly a range taken by {@link NativeAddon.lockRange} (EINVAL when this process does not hold it). */
  unlockRange(fd: number, start: bigint, length: bigint): void;
  /**
   * The credentials of the process at the other end of a connected Unix
   * socket `fd` (getsockopt SO_PEERCRED), as the kernel recorded them at
   * connect(2). @throws EBADF, ENOTSOCK, EINVAL (not a Unix socket).
   */
  peerCredentials(fd: number): PeerCredentials;
}

/** Who is at the other end of a Unix socket, from {@link NativeAddon.peerCredentials}. */
export interface PeerCredentials {
  /** Process id (in the daemon's PID namespace; 0 when not visible). */
  pid: number;
  /** Effective user id at connect time. */
  uid: number;
  /** Effective group id at connect time. */
  gid: number;
}

/** A lock that kept {@link NativeAddon.lockRange} from locking. */
export interface LockConflict {
  /** Pid of the holder; `process.pid` for this process; -1 when not visible (another PID namespace). */
  pid: number;
  /** First byte (address) of the holder's lock. */
  start: bigint;
  /** Length in bytes; 0n means to the end of the file. */
  length: bigint;
}

let injected: NativeAddon | undefined;
let loaded: NativeAddon | undefined;
let loadedFrom: NativeAddonSource | undefined;

/** Where the loaded addon came from; see {@link nativeAddonSource}. */
export interface NativeAddonSource {
  /** Absolute path of the `.node` file. */
  path: string;
  /** `'prebuilt'`: shipped in the package's prebuilds/ directory; `'built'`: compiled here into build/ (node-gyp). */
  kind: 'prebuilt' | 'built';
}

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
 * The addon, loaded on first call with node-gyp-build from {@link moduleRoot}:
 * build/Release (compiled here) first, then the prebuilt binary in
 * prebuilds/<platform>-<arch>/ that matches this system.
 * @throws {PhysmemError} `ENOENT` when no binary matches, `ENOEXEC` when one was found but
 *   does not load; the message lists what was tried and how to build it.
 */
export function native(): NativeAddon {
  if (injected) return injected;
  if (loaded) return loaded;
  const root = moduleRoot();
  const require = createRequire(import.meta.url);
  let file: string | undefined;
  try {
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    file = nodeGypBuild.path(root);
    loaded = require(file) as NativeAddon;
  } catch (e) {
    throw loadError(root, file, e);
  }
  loadedFrom = { path: file, kind: file.startsWith(join(root, 'prebuilds') + sep) ? 'prebuilt' : 'built' };
  return loaded;
}

/** Which addon binary physmem loaded (prebuilt or built here); `undefined` before the first load, which is lazy (or when a test injected a fake). */
export function nativeAddonSource(): NativeAddonSource | undefined {
  return injected ? undefined : loadedFrom;
}

function listNodeFiles(dir: string): string {
  try {
    const files = readdirSync(dir).filter((f) => f.endsWith('.node'));
    return files.length ? files.join(', ') : 'no .node file';
  } catch {
    return 'no such directory';
  }
}

/** One error for every way loading fails: what was tried, what this system is, how to fix it. */
function loadError(root: string, file: string | undefined, e: unknown): PhysmemError {
  const prebuilds = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const libc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime ? 'glibc' : 'musl or unknown libc';
  const tried = [
    `  ${join(root, 'build/Release')}: ${listNodeFiles(join(root, 'build/Release'))}`,
    `  ${join(root, 'build/Debug')}: ${listNodeFiles(join(root, 'build/Debug'))}`,
    `  ${prebuilds}: ${listNodeFiles(prebuilds)}`,
  ].join('\n');
  const first = ((e as Error)?.message ?? String(e)).split('\n')[0];
  const what =
    file === undefined
      ? `no native addon physmem.node for ${process.platform}-${process.arch} (${libc}) under ${root}`
      : `the native addon ${file} did not load: ${first}`;
  return new PhysmemError(file === undefined ? 'ENOENT' : 'ENOEXEC', what, {
    hint:
      `Tried:\n${tried}\n` +
      'Prebuilt binaries ship for linux-x64 and linux-arm64 (glibc). Elsewhere build it from source: `npm rebuild physmem` ' +
      '(needs python3, make and a C++17 compiler, g++ >= 8 or clang >= 7; on Debian: apt-get install -y python3 make g++). ' +
      'physmem runs on Linux only.',
    cause: e,
  });
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
