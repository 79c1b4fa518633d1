/**
 * What `cache: 'uncached'` costs: copy bandwidth into and out of a cached and
 * an uncached (O_SYNC) mapping of the same reserved RAM, through /dev/mem.
 *
 * Needs real reserved memory (devmem: root, /dev/mem, mem= or memmap=); where
 * there is none it reports why and returns no figures. The figures mean
 * something only on real hardware: under QEMU's TCG (the project's test VM)
 * no cache is modelled, so both mappings run at the same speed.
 *
 * The two pools are opened one after the other, never together: x86 refuses
 * two mappings of one page with different cache types (EAGAIN).
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/cache.js`.
 * @module
 */
import { pathToFileURL } from 'node:url';
import { openPoolSync, PhysmemError, type Pool } from '../lib/index.js';
import type { BenchResult } from './allocator.js';

const MiB = 1 << 20;

/** Bytes per second of `fn`, which moves `bytes` per call, over at least `ms` milliseconds. */
function bandwidth(bytes: number, fn: () => void, ms: number): number {
  fn(); // warm-up (and fault the pages in)
  let calls = 0;
  const t0 = process.hrtime.bigint();
  let elapsed: number;
  do {
    fn();
    calls++;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e6;
  } while (elapsed < ms);
  return (bytes * calls) / (elapsed / 1000);
}

interface Figures {
  write: number;
  read: number;
}

function measure(pool: Pool, size: number): Figures {
  const buf = pool.alloc(size, { zero: false, align: 4096 });
  try {
    const src = new Uint8Array(size).map((_, i) => i & 0xff);
    const dst = new Uint8Array(size);
    return {
      write: bandwidth(size, () => buf.bytes.set(src), 500),
      read: bandwidth(size, () => dst.set(buf.bytes), 500),
    };
  } finally {
    buf.free();
  }
}

/**
 * Run the cache benchmarks; returns one result per figure, none when no
 * reserved memory can be opened (the reason goes to `log`).
 * @param size - bytes copied per call. Default 4 MiB.
 */
export async function runCacheBenches(log: (line: string) => void = console.log, size = 4 * MiB): Promise<BenchResult[]> {
  const figures: Partial<Record<'cached' | 'uncached', Figures>> = {};
  let description = '';
  for (const cache of ['cached', 'uncached'] as const) {
    let pool: Pool;
    try {
      pool = openPoolSync({ backend: 'devmem', cache, size: size + 4096, leakCheck: 'off' });
    } catch (e) {
      if (!(e instanceof PhysmemError)) throw e;
      log(`cache benchmarks skipped: they need reserved memory through /dev/mem (${e.message.split('. ')[0]})`);
      return [];
    }
    try {
      if (cache === 'cached') description = pool.describe();
      figures[cache] = measure(pool, size);
    } finally {
      pool.close();
    }
  }
  const c = figures.cached!;
  const u = figures.uncached!;
  const gbps = (x: number) => `${(x / 1e9).toFixed(2)} GB/s`;
  const label = `${size / MiB} MiB`;
  return [
    { name: `copy ${label} into cached memory`, value: c.write / 1e9, unit: 'GB/s', target: 'reference', pass: true, detail: description },
    { name: `copy ${label} into uncached memory`, value: u.write / 1e9, unit: 'GB/s', target: 'reference', pass: true, detail: `${(c.write / u.write).toFixed(1)} x slower than cached` },
    { name: `copy ${label} out of cached memory`, value: c.read / 1e9, unit: 'GB/s', target: 'reference', pass: true },
    {
      name: `copy ${label} out of uncached memory`,
      value: u.read / 1e9,
      unit: 'GB/s',
      target: 'reference',
      pass: true,
      detail: `${(c.read / u.read).toFixed(1)} x slower than cached (${gbps(u.read)})`,
    },
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const r of await runCacheBenches()) console.log(`${r.name}: ${r.value.toFixed(3)} ${r.unit}${r.detail ? ' - ' + r.detail : ''}`);
}
