/**
 * The fake backend: a memfd mapped through the same native code as the real
 * backends, presented at a synthetic physical base. Runs everywhere (CI);
 * no device can reach it, which FakeDmaDevice (physmem/testing) stands in for.
 * @module
 */
import { invalidArgument } from '../errors.js';
import { Mapping } from '../mapping.js';
import { native } from '../native.js';
import { fakeLockKind, lockRegion, type RegionLock } from '../locks.js';
import type { Backend, BackendRange } from './types.js';
import { checkPath, hex, toAddressNumber, toBusOffset } from '../internal/validate.js';

/** Options of the fake backend. */
export interface FakeBackendOptions {
  /** Bytes of memory; rounded up to the page size. Default 64 MiB. */
  size?: number;
  /** Synthetic physical address of the first byte; page-aligned. Default 0x1_0000_0000 (4 GiB), so code that truncates addresses to 32 bits is caught. */
  physBase?: bigint | number;
  /** bus = phys + busOffset. Default 0. */
  busOffset?: bigint | number;
  /**
   * Lock this pool's synthetic range `[physBase, physBase + size)` under the
   * kind `fake-<lockKey>` while open, as the real backends lock theirs, so
   * tests can exercise exclusive regions (lib/locks.ts): another pool or
   * program asking for an overlapping range with the same key gets EBUSY.
   * Letters, digits, '.', '_', '-'. Default: no lock (fake memory is private to the process).
   */
  lockKey?: string;
  /** Lock directory, with `lockKey`. Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
}

/** Default size of a fake pool: 64 MiB. */
export const FAKE_DEFAULT_SIZE = 64 * 1024 * 1024;
/** Default synthetic physical base of a fake pool: 4 GiB. */
export const FAKE_DEFAULT_PHYS_BASE = 0x1_0000_0000n;

/**
 * Open a fake backend.
 * @throws {PhysmemError} EINVAL for bad options, ENOMEM when the memfd cannot be created; with `lockKey`,
 *   EBUSY when the range is locked elsewhere and the lock directory errors of lockRegion (lib/locks.ts).
 */
export function openFakeBackend(options: FakeBackendOptions = {}): Backend {
  const n = native();
  const page = n.pageSize();
  const size = options.size === undefined ? FAKE_DEFAULT_SIZE : options.size; // null is a bad size, not the default
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) {
    throw invalidArgument(`size must be a positive integer number of bytes, got ${String(size)}`);
  }
  checkPath(options.lockDir, 'lockDir', "openPool({ backend: 'fake' })");
  const rounded = Math.ceil(size / page) * page;
  const physBase = toAddressNumber(options.physBase === undefined ? FAKE_DEFAULT_PHYS_BASE : options.physBase, 'physBase');
  if (physBase % page !== 0) throw invalidArgument(`physBase must be a multiple of the page size (${page}), got ${hex(physBase)}`);
  if (physBase + rounded > Number.MAX_SAFE_INTEGER) throw invalidArgument('physBase + size must stay below 2^53');
  const busOffset = toBusOffset(options.busOffset);
  // Locked before any memory exists, so a second pool fails fast; released on failure.
  const lock: RegionLock | undefined =
    options.lockKey === undefined ? undefined : lockRegion(fakeLockKind(options.lockKey), [{ start: physBase, size: rounded }], { dir: options.lockDir });
  let mapping: Mapping;
  try {
    mapping = Mapping.memfd('physmem-fake', rounded, 'memfd:physmem-fake', `could not create ${rounded} bytes of fake DMA memory; try a smaller size`);
  } catch (e) {
    lock?.release();
    throw e;
  }
  const ranges: BackendRange[] = [{ start: physBase, size: rounded }];
  return {
    name: 'fake',
    ranges,
    busOffset,
    coherent: true,
    view: (phys, len) => mapping.view(phys - physBase, len),
    buffer: (id) => mapping.buffer(id)!,
    release: (id) => mapping.release(id),
    describe: () => `fake backend: ${rounded} bytes of memfd memory at synthetic physical ${hex(physBase)} (no device can reach it)`,
    lock,
    close: () => {
      mapping.close();
      lock?.release(); // after unmapping: the memory is no longer ours to hand out
    },
  };
}

