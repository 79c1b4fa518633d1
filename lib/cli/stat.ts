/**
 * `physmem stat`: which backend physmem would use here, how much memory
 * it manages, and whether an IOMMU translates DMA (which backend fits).
 * @module
 */
import { openPoolSync, probeRealBackends, type OpenPoolOptions } from '../open.js';
import { formatSize, hex, table } from './format.js';
import { iommuLines, iommuReport } from './iommu.js';

/** Options of `physmem stat`. */
export interface StatOptions {
  /** 'auto' (default), 'devmem' or 'fake'. */
  backend?: 'auto' | 'devmem' | 'fake';
  /** Size of a fake pool in bytes. */
  size?: number;
}

/** Open the pool as asked, read its stats, close it. */
export function runStat(o: StatOptions): { json: unknown; text: string } {
  const options: OpenPoolOptions =
    o.backend === 'fake' || o.backend === 'devmem' ? { backend: o.backend, size: o.size } : { backend: 'auto', quiet: true, size: o.size };
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
