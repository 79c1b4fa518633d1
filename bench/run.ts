/**
 * `npm run bench`: every benchmark, each figure printed with its target.
 * Exit code 0 even when a target is missed (figures are information, not a
 * test); `--strict` exits 1 then.
 */
import { runAllocatorBenches, type BenchResult } from './allocator.js';
import { runBufferBenches } from './buffers.js';
import { runSubpoolBenches } from './subpool.js';
import { runCacheBenches } from './cache.js';
import { runMmioBenches } from './mmio.js';
import { runVfioBenches } from './vfio.js';

function print(results: BenchResult[]): void {
  const rows = results.map((r) => [r.name, `${r.value.toFixed(r.unit === 'ratio' || r.unit === '%' ? 3 : 3)} ${r.unit}`, r.target, r.target === 'reference' ? '' : r.pass ? 'PASS' : 'MISS', r.detail ?? '']);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(r.slice(0, 4).map((c, i) => c.padEnd(widths[i])).join('  ') + (r[4] ? '  ' + r[4] : ''));
}

const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const all: BenchResult[] = [];
const groups: [name: string, title: string, run: () => Promise<BenchResult[]>][] = [
  ['allocator', 'allocator (W1, W4, W3c)', runAllocatorBenches],
  ['buffers', 'DMA buffers', runBufferBenches],
  ['subpool', 'sub-pools (W2)', runSubpoolBenches],
  ['cache', 'cached vs uncached memory (needs reserved memory via /dev/mem)', runCacheBenches],
  ['mmio', 'MMIO accessors: writel vs writel_relaxed, barriers', runMmioBenches],
  ['vfio', 'VFIO pools (needs a device bound to vfio-pci)', () => runVfioBenches()],
];
for (const [name, title, run] of groups) {
  if (only.length !== 0 && !only.includes(name)) continue;
  console.log(`${all.length ? '\n' : ''}# ${title}`);
  const r = await run();
  print(r);
  all.push(...r);
}
const missed = all.filter((r) => !r.pass);
console.log(`\n${all.length - missed.length} of ${all.length} figures meet their targets${missed.length ? '; missed: ' + missed.map((r) => r.name).join(', ') : ''}`);
if (process.argv.includes('--strict') && missed.length) process.exitCode = 1;
