/**
 * Opening pools: choose a backend, explain fallbacks.
 * @module
 */
import { existsSync } from 'node:fs';
import { invalidArgument } from './errors.js';
import { openFakeBackend, type FakeBackendOptions } from './backends/fake.js';
import { DEVMEM_OPTION_NAMES, openDevmemBackend, type DevmemBackendOptions } from './backends/devmem.js';
import { openHugepageBackend, defaultHugePageSize, hugePageSizes, hugepageCounts, type HugepageBackendOptions } from './backends/hugepage.js';
import { openUdmabufBackend, listUdmabufDevices, type UdmabufBackendOptions } from './backends/udmabuf.js';
import { openVfioBackend, type VfioBackendOptions } from './backends/vfio.js';
import { PhysmemError } from './errors.js';
import type { Backend } from './backends/types.js';
import { Pool, type PoolCommonOptions } from './pool.js';
import { openServicePool, type ServicePool, type ServicePoolOptions } from './service/client.js';
import { checkBoolean, closestName, describeValue, optionNames, optionsChecker } from './internal/validate.js';

/** Options of a pool on the fake backend (memfd memory, synthetic physical addresses). */
export interface FakePoolOptions extends FakeBackendOptions, PoolCommonOptions {
  /** The fake backend: runs anywhere, no device can reach it. */
  backend: 'fake';
}

/** Options of a pool on reserved RAM through /dev/mem (above `mem=`, or `memmap=nn$ss` regions). */
export interface DevmemPoolOptions extends DevmemBackendOptions, PoolCommonOptions {
  /** The devmem backend: needs root, /dev/mem, and reserved memory. */
  backend: 'devmem';
}

/** Options of a pool on locked huge pages (physical addresses from /proc/self/pagemap; needs root). */
export interface HugepagePoolOptions extends HugepageBackendOptions, PoolCommonOptions {
  /** The hugepage backend: no reboot needed; `pages` huge pages of `pageSize` bytes. */
  backend: 'hugepage';
}

/** Options of a pool on u-dma-buf kernel module buffers (/dev/udmabuf<N>); several devices become several ranges. */
export interface UdmabufPoolOptions extends UdmabufBackendOptions, PoolCommonOptions {
  /** The udmabuf backend: needs the u-dma-buf module loaded and access to its device files. */
  backend: 'udmabuf';
}

/**
 * Options of a pool mapped into a VFIO container's IOMMU (docs/vfio.md):
 * memfd or huge pages at IOVAs the pool chooses; `DmaBuffer.bus` (and `phys`)
 * is the IOVA. Every device of the container can reach it.
 */
export interface VfioPoolOptions extends VfioBackendOptions, PoolCommonOptions {
  /** The vfio backend: needs a VfioDevice (physmem/vfio) or its container as `device`. */
  backend: 'vfio';
}

/**
 * Options of `backend: 'auto'`: the first real backend available (devmem,
 * then udmabuf, then hugepage when running as root with free huge pages
 * already reserved), otherwise the fake one (with a warning naming what was
 * looked for). `size` sets how much the fake backend provides and how many
 * huge pages the hugepage backend takes (rounded up; default one page).
 */
export interface AutoPoolOptions extends FakeBackendOptions, PoolCommonOptions {
  /** Default. */
  backend?: 'auto';
  /** Do not emit the fallback warning (the reason is still in `pool.fallbackReason`). Default false. */
  quiet?: boolean;
}

/** Options of {@link openPoolSync} / {@link openPool}. */
export type OpenPoolOptions = FakePoolOptions | DevmemPoolOptions | UdmabufPoolOptions | HugepagePoolOptions | VfioPoolOptions | AutoPoolOptions;

/** Result of probing one real backend for `'auto'`. */
export interface BackendProbe {
  /** Backend name. */
  name: string;
  /** Why it cannot be used here (what was looked for and not found). */
  reason: string;
}

/**
 * Try the real backends in `'auto'` order. Returns the first that opens, or
 * the reason each one could not be used (what was looked for and not found).
 * @param size - bytes wanted, for the hugepage backend (default one huge page).
 */
function tryRealBackends(size?: number): { backend?: Backend; probes: BackendProbe[] } {
  const probes: BackendProbe[] = [];
  if (!existsSync('/dev/mem')) {
    probes.push({ name: 'devmem', reason: 'no /dev/mem (kernel built without CONFIG_DEVMEM; reserving memory would not help)' });
  } else {
    try {
      return { backend: openDevmemBackend({ regions: 'auto' }), probes };
    } catch (e) {
      // Busy real memory is not "no real memory": falling back to fake would hide it.
      if (!(e instanceof PhysmemError) || e.code === 'EBUSY') throw e;
      probes.push({ name: 'devmem', reason: e.message });
    }
  }
  if (listUdmabufDevices().length === 0) {
    probes.push({ name: 'udmabuf', reason: 'no u-dma-buf devices (/sys/class/u-dma-buf, /sys/class/udmabuf)' });
  } else {
    try {
      return { backend: openUdmabufBackend(), probes };
    } catch (e) {
      if (!(e instanceof PhysmemError) || e.code === 'EBUSY') throw e;
      probes.push({ name: 'udmabuf', reason: e.message });
    }
  }
  const hugepage = probeHugepage(size);
  if (typeof hugepage === 'string') {
    probes.push({ name: 'hugepage', reason: hugepage });
  } else {
    try {
      return { backend: openHugepageBackend(hugepage), probes };
    } catch (e) {
      if (!(e instanceof PhysmemError)) throw e;
      probes.push({ name: 'hugepage', reason: e.message });
    }
  }
  return { probes };
}

// 'auto' takes huge pages only where that cannot hurt: as root (the addresses
// need CAP_SYS_ADMIN anyway), and only pages an administrator already
// reserved and nobody uses; it never raises nr_hugepages.
function probeHugepage(size: number | undefined): HugepageBackendOptions | string {
  if (process.geteuid?.() !== 0) return 'not tried: its physical addresses are visible to root only';
  const pageSize = defaultHugePageSize() ?? 2 * 1024 * 1024;
  if (!hugePageSizes().includes(pageSize)) return 'no huge pages on this kernel';
  const pages = Math.max(1, Math.ceil((size ?? pageSize) / pageSize));
  const { available } = hugepageCounts(pageSize);
  if (available < pages) {
    return `${pages} free huge page(s) of ${pageSize >> 20} MiB needed, ${available} free ('auto' never reserves huge pages; ` +
      "reserve them with /proc/sys/vm/nr_hugepages, or open backend: 'hugepage')";
  }
  return { pages, pageSize };
}

/**
 * Probe the real backends in `'auto'` order without keeping any open.
 * @returns why each one is unusable here; empty when one would be used.
 */
export function probeRealBackends(): BackendProbe[] {
  const { backend, probes } = tryRealBackends();
  if (backend) {
    backend.close();
    return [];
  }
  return probes;
}

// One checker per backend, built once: each accepts that backend's options plus the common ones.
const common = { backend: true, leakCheck: true } as const;
const fakeNames = { size: true, physBase: true, busOffset: true, lockKey: true, lockDir: true } as const;
const checkers = {
  fake: optionsChecker("openPool({ backend: 'fake' })", optionNames<FakePoolOptions>({ ...common, ...fakeNames })),
  auto: optionsChecker("openPool({ backend: 'auto' })", optionNames<AutoPoolOptions>({ ...common, ...fakeNames, quiet: true })),
  devmem: optionsChecker("openPool({ backend: 'devmem' })", [...Object.keys(common), ...DEVMEM_OPTION_NAMES]),
  udmabuf: optionsChecker("openPool({ backend: 'udmabuf' })", optionNames<UdmabufPoolOptions>({ ...common, devices: true, cache: true, sysfsRoot: true, devRoot: true, lockDir: true })),
  hugepage: optionsChecker(
    "openPool({ backend: 'hugepage' })",
    optionNames<HugepagePoolOptions>({ ...common, pages: true, pageSize: true, busOffset: true, quiesceOrphans: true, sysfsRoot: true, lockDir: true }),
  ),
  vfio: optionsChecker("openPool({ backend: 'vfio' })", optionNames<VfioPoolOptions>({ ...common, device: true, size: true, pageSize: true, iova: true })),
};

const BACKENDS = ['auto', 'devmem', 'udmabuf', 'hugepage', 'vfio', 'fake'];

function openBackend(options: OpenPoolOptions): { backend: Backend; fallbackReason?: string } {
  const kind = options.backend ?? 'auto';
  if (typeof kind === 'string' && Object.prototype.hasOwnProperty.call(checkers, kind)) checkers[kind](options);
  switch (kind) {
    case 'fake':
      return { backend: openFakeBackend(options) };
    case 'devmem':
      return { backend: openDevmemBackend(options) };
    case 'udmabuf':
      return { backend: openUdmabufBackend(options as UdmabufPoolOptions) };
    case 'hugepage':
      return { backend: openHugepageBackend(options) };
    case 'vfio':
      return { backend: openVfioBackend(options as VfioPoolOptions) };
    case 'auto': {
      checkBoolean((options as AutoPoolOptions).quiet, 'quiet', "openPool({ backend: 'auto' })");
      const { backend: real, probes } = tryRealBackends((options as AutoPoolOptions).size);
      if (real) return { backend: real };
      const reason = 'no real DMA memory found: ' + probes.map((p) => `${p.name}: ${p.reason}`).join('; ');
      const backend = openFakeBackend(options);
      if (!(options as AutoPoolOptions).quiet) {
        process.emitWarning(`physmem: using the fake backend (memory no device can reach). ${reason}. ` +
          'Reserve memory with mem= or memmap= on the kernel command line (see `physmem regions`).', {
          type: 'PhysmemFallbackWarning',
          code: 'PHYSMEM_FALLBACK',
        });
      }
      return { backend, fallbackReason: reason };
    }
    default:
      throw invalidArgument(
        `unknown backend ${describeValue(kind)}${typeof kind === 'string' && closestName(kind, BACKENDS) !== undefined ? `; did you mean '${closestName(kind, BACKENDS)}'?` : ''}`,
        "use 'auto', 'devmem', 'udmabuf', 'hugepage', 'vfio' or 'fake'",
      );
  }
}

/**
 * `buf.bytes` are external ArrayBuffers over the pool's memory (no copy).
 * Electron's V8 memory cage refuses them; find out at open, with one
 * ArrayBuffer over the first byte, rather than at the first alloc.
 */
function checkExternalArrayBuffers(backend: Backend): void {
  const first = backend.ranges[0];
  if (first === undefined) return;
  let id: number;
  try {
    id = backend.view(first.start, 1);
  } catch (e) {
    if ((e as { code?: unknown })?.code !== 'ENOTSUP') throw e;
    const electron = process.versions.electron;
    const runtime = electron ? `Electron ${electron}` : `this runtime (${process.release?.name ?? 'unknown'} ${process.version})`;
    throw new PhysmemError('ENOTSUP', `${runtime} does not allow external ArrayBuffers, which DmaBuffer.bytes are (zero-copy views of DMA memory)`, {
      hint:
        'physmem supports Node.js >= 20 and Bun. From Electron, run the code that uses physmem in a Node.js process ' +
        '(child_process.spawn of a node binary) and exchange data with it over IPC.',
      cause: e,
    });
  }
  backend.release(id);
}

/**
 * Open a pool synchronously.
 * @param options - `backend` (`'auto'` default, or `'fake'`) and that backend's options.
 * @throws {PhysmemError} EINVAL for bad options; the backend's errors (ENOENT, EACCES, EPERM, ENOMEM) with what to do;
 *   ENOTSUP in a runtime that refuses external ArrayBuffers (Electron).
 * @example
 * const pool = openPoolSync({ backend: 'fake', size: 16 << 20 });
 * const buf = pool.alloc(4096, { align: 4096 });
 */
export function openPoolSync(options: OpenPoolOptions = {}): Pool {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgument(`openPoolSync() options must be an object, got ${describeValue(options)}`, "pass e.g. { backend: 'fake', size: 1 << 20 } or leave it out");
  }
  const { backend, fallbackReason } = openBackend(options);
  let pool: Pool;
  try {
    checkExternalArrayBuffers(backend);
    pool = new Pool(backend, options, fallbackReason);
  } catch (e) {
    backend.close();
    throw e;
  }
  backend.bindOwner?.(pool);
  return pool;
}

/**
 * Open a pool; the same as {@link openPoolSync} as a Promise (later backends,
 * such as a daemon's, are only reachable this way).
 * With `{ service: socketPath }`: a pool served by a physmem daemon (`physmem serve`),
 * see docs/service.md.
 */
export async function openPool(options: ServicePoolOptions): Promise<ServicePool>;
export async function openPool(options?: OpenPoolOptions): Promise<Pool>;
export async function openPool(options: OpenPoolOptions | ServicePoolOptions = {}): Promise<Pool | ServicePool> {
  if (typeof options === 'object' && options !== null && 'service' in options) return openServicePool(options);
  return openPoolSync(options);
}

