/**
 * The memory a daemon serves, and how a client reaches it: a file (device)
 * path and the file offset of each physical address.
 *
 * - `fake`: a regular file `pool.mem` in the daemon's socket directory,
 *   mode 0600 (0660 with a group), at a synthetic physical base. A file,
 *   not the fake backend's memfd, because clients must open it by path and
 *   a memfd is only reachable through /proc/<pid>/fd, which needs ptrace
 *   rights over the daemon.
 * - `devmem`: reserved RAM through /dev/mem (file offset = physical
 *   address); clients need to open /dev/mem too (root, or CAP_SYS_RAWIO).
 * @module
 */
import { chmodSync, chownSync, closeSync, fstatSync, ftruncateSync, openSync, readdirSync, renameSync, rmSync, constants as fsConstants } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PhysmemError, hasCode, invalidArgument } from '../errors.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { native } from '../native.js';
import { openDevmemBackend, type DevmemBackendOptions } from '../backends/devmem.js';
import type { Backend, BackendName, BackendRange } from '../backends/types.js';
import { FAKE_DEFAULT_PHYS_BASE } from '../backends/fake.js';

/** What the daemon needs from its memory. */
export interface ServiceMemory {
  /** Backend name reported in stats. */
  readonly name: BackendName;
  /** Physical ranges, ascending. */
  readonly ranges: readonly BackendRange[];
  /** bus = phys + busOffset. */
  readonly busOffset: bigint;
  /** The file a client opens to map its block. */
  readonly devicePath: string;
  /** Offset in {@link ServiceMemory.devicePath} of physical address `phys`. */
  fileOffset(phys: number): bigint;
  /** Write zeros over `[phys, phys + size)`. */
  zero(phys: number, size: number): void;
  /**
   * Fake memory created anew: move its file from the temporary name it was created under to
   * {@link ServiceMemory.devicePath}, replacing a dead daemon's. Until then nothing at that path
   * has changed, so a start refused before this leaves the old file as it was.
   */
  publish?(): void;
  /** Unmap and close (a published fake file is left for the daemon's cleanup to remove; an unpublished one is removed). */
  close(): void;
}

/** Options of the file-backed fake memory. */
export interface FakeFileMemoryOptions {
  /** The file to create (truncated to `size`). */
  path: string;
  /** Bytes; rounded up to the page size. */
  size: number;
  /** File mode: 0o600, or 0o660 when a group shares the daemon. */
  mode: number;
  /** Group owning the file, when shared with a group. */
  gid?: number;
  /** Reuse the existing file and its content (a restart with a journal); it must have exactly `size` bytes (page-rounded). */
  keep?: boolean;
}

const ZERO_CHUNK = 1 << 30;

/** Create the fake memory file and map it. @throws {PhysmemError} EINVAL for a bad size; open/mmap errors. */
export function openFakeFileMemory(o: FakeFileMemoryOptions): ServiceMemory {
  const page = native().pageSize();
  if (!Number.isSafeInteger(o.size) || o.size <= 0) throw invalidArgument(`size must be a positive integer, got ${String(o.size)}`);
  const size = Math.ceil(o.size / page) * page;
  // keep: the journal's live blocks are in this file, so it is reused as is (never truncated,
  // never rewritten here). Otherwise the new file is made under a temporary name (O_EXCL|O_NOFOLLOW:
  // never follow a planted link) and only publish() puts it in place.
  const at = o.keep ? o.path : `${o.path}.${process.pid}.new`;
  let published = o.keep === true;
  const flags = fsConstants.O_RDWR | fsConstants.O_NOFOLLOW | (o.keep ? 0 : fsConstants.O_CREAT | fsConstants.O_EXCL);
  let fd0: number;
  try {
    fd0 = openSync(at, flags, o.mode);
  } catch (e) {
    // The caller holds the socket's lock, so a temporary file under our own name is a dead
    // daemon's whose pid we were given again: never data (only publish() makes a file the pool's).
    if (o.keep || !hasCode(e, 'EEXIST')) throw e;
    rmSync(at, { force: true });
    fd0 = openSync(at, flags, o.mode);
  }
  let mapping: Mapping;
  try {
    try {
      const st = fstatSync(fd0);
      if (o.keep) {
        if (!st.isFile()) throw new PhysmemError('EIO', 'the memory file is not a regular file', { path: o.path, hint: 'restart with the same options as before' });
        if (st.size !== size) throw new PhysmemError('EIO', `the memory file has ${st.size} bytes, the journal's pool ${size}`, { path: o.path, hint: 'restart with the same --size as before' });
      } else ftruncateSync(fd0, size);
      if (o.gid !== undefined && st.gid !== o.gid) chownSync(at, process.getuid?.() ?? 0, o.gid);
      if ((st.mode & 0o777) !== o.mode) chmodSync(at, o.mode); // umask may have cut the group bits
    } finally {
      closeSync(fd0);
    }
    const fd = openFile(at, true, false);
    try {
      mapping = Mapping.map(fd, 0n, size, true, o.path);
    } finally {
      closeFile(fd);
    }
  } catch (e) {
    if (!published) rmSync(at, { force: true });
    throw e;
  }
  const base = Number(FAKE_DEFAULT_PHYS_BASE);
  // The daemon zeroes every block it hands out: long-lived views of 1 GiB chunks (a typed array
  // stops short of 4 GiB) instead of a fresh ArrayBuffer per block, which cost about 1.5 us.
  const chunks: Uint8Array[] = [];
  const chunk = (i: number): Uint8Array => {
    let c = chunks[i];
    if (c === undefined) {
      const start = i * ZERO_CHUNK;
      c = new Uint8Array(mapping.buffer(mapping.view(start, Math.min(ZERO_CHUNK, size - start)))!);
      chunks[i] = c;
    }
    return c;
  };
  return {
    name: 'fake',
    ranges: [{ start: base, size }],
    busOffset: 0n,
    devicePath: o.path,
    fileOffset: (phys) => BigInt(phys - base),
    zero: (phys, len) => {
      for (let off = phys - base, end = off + len; off < end; ) {
        const i = Math.floor(off / ZERO_CHUNK);
        const upto = Math.min(end, (i + 1) * ZERO_CHUNK);
        chunk(i).fill(0, off - i * ZERO_CHUNK, upto - i * ZERO_CHUNK);
        off = upto;
      }
    },
    publish: () => {
      if (published) return;
      renameSync(at, o.path);
      published = true;
    },
    close: () => {
      mapping.close(); // detaches the chunks' views too
      if (!published) rmSync(at, { force: true });
    },
  };
}

/**
 * Remove the temporary memory files (`<path>.<pid>.new`) of daemons that died while starting.
 * Only while holding the socket's lock, and after publish(): then none of them is anyone's.
 * @returns the names removed.
 */
export function removeLeftoverMemoryFiles(path: string): string[] {
  const prefix = basename(path) + '.';
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return removed; // nothing to tidy is not a reason to refuse a start
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+\.new$/.test(name.slice(prefix.length))) continue;
    rmSync(join(dirname(path), name), { force: true });
    removed.push(name);
  }
  return removed;
}

/** Reserved RAM through /dev/mem, as the devmem backend finds it. */
export function openDevmemMemory(options: DevmemBackendOptions): ServiceMemory {
  const backend: Backend = openDevmemBackend(options);
  return {
    name: backend.name,
    ranges: backend.ranges,
    busOffset: backend.busOffset,
    devicePath: options.devicePath ?? '/dev/mem',
    fileOffset: (phys) => BigInt(phys),
    zero: (phys, len) => {
      const id = backend.view(phys, len);
      try {
        new Uint8Array(backend.buffer(id)).fill(0);
      } finally {
        backend.release(id);
      }
    },
    close: () => backend.close(),
  };
}
