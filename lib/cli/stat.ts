/**
 * `physmem stat`: which backend physmem would use here, how much memory
 * it manages, and whether an IOMMU translates DMA (which backend fits).
 * @module
 */
import { openPoolSync, probeRealBackends, type OpenPoolOptions } from '../open.js';
import { defaultHugePageSize } from '../backends/hugepage.js';
import { formatSize, table } from './format.js';
import { iommuLines, iommuReport } from './iommu.js';
import { hex } from '../internal/validate.js';

/** The backends `physmem stat --backend` can open (vfio needs a device: see docs/vfio.md). */
export const STAT_BACKENDS = ['auto', 'devmem', 'udmabuf', 'hugepage', 'fake'] as const;

/** Options of `physmem stat`. */
export interface StatOptions {
  /** One of {@link STAT_BACKENDS}; default 'auto'. */
  backend?: (typeof STAT_BACKENDS)[number];
  /** Bytes: the size of a fake pool, or how much a hugepage pool takes (rounded up to whole huge pages). */
  size?: number;
}

/** Open the pool as asked, read its stats, close it. */
export function runStat(o: StatOptions): { json: unknown; text: string } {
  const huge = defaultHugePageSize() ?? 2 * 1024 * 1024;
  const options: OpenPoolOptions =
    o.backend === 'fake' || o.backend === 'devmem' ? { backend: o.backend, size: o.size }
    : o.backend === 'udmabuf' ? { backend: 'udmabuf' }
    : o.backend === 'hugepage' ? { backend: 'hugepage', pages: Math.max(1, Math.ceil((o.size ?? huge) / huge)) }
    : { backend: 'auto', quiet: true, size: o.size };
  const pool = openPoolSync(options);
  try {
    const s = pool.stats();
    const probes = o.backend === 'auto' && pool.fallbackReason ? probeRealBackends() : [];
    const lines = [
      `backend: ${pool.backend}${pool.fallbackReason ? ' (fallback: no real DMA memory found)' : ''}`,
      `memory:  ${pool.describe()}`,
      `total ${formatSize(s.total)}, used ${formatSize(s.used)}, free ${formatSize(s.free)}, largest free ${formatSize(s.largestFree)}, ${s.count} blocks`,
      `bus offset: ${hex(s.busOffset)}; coherent: ${pool.coherent ? 'yes' : 'no'}`,
      '',
      table(['range start', 'size', 'used', 'free', 'blocks'], s.ranges.map((r) => [hex(r.start), formatSize(r.size), formatSize(r.used), formatSize(r.free), String(r.count)])),
    ];
    if (probes.length) {
      lines.push('', 'real backends:');
      for (const p of probes) lines.push(`  ${p.name}: ${p.reason}`);
    }
    const iommu = iommuReport();
    lines.push('', ...iommuLines(iommu));
    return { json: { ...s, coherent: pool.coherent, description: pool.describe(), fallbackReason: pool.fallbackReason, probes, iommu }, text: lines.join('\n') };
  } finally {
    pool.close();
  }
}
