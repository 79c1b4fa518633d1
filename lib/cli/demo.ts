/**
 * `physmem demo`: open a pool ('auto'), allocate buffers of several sizes and
 * alignments, write and read them, show their addresses and the memory map,
 * free them.
 * @module
 */
import { existsSync } from 'node:fs';
import { openPoolSync } from '../open.js';
import { nativeAddonSource } from '../native.js';
import type { PoolAllocOptions, DmaBuffer } from '../pool.js';
import { formatSize, memoryMap, table } from './format.js';
import { hex } from '../internal/validate.js';

/** What the demo allocates: a size and the options a driver would use for it. */
const REQUESTS: { label: string; size: number; options: PoolAllocOptions }[] = [
  { label: 'descriptor ring', size: 4096, options: { align: 4096 } },
  { label: 'packet buffer', size: 1536, options: { boundary: 4096 } },
  { label: 'small command', size: 64, options: {} },
  { label: 'frame buffer', size: 1 << 20, options: { align: 1 << 20 } },
  // maxAddress is set from the pool's lowest address below (a 32-bit engine would use 0xffff_ffff).
  { label: 'low buffer', size: 64 << 10, options: {} },
  { label: 'DMA area', size: 256 << 10, options: { align: 64 << 10 } },
];

/** Result of one demo allocation, as printed and as JSON. */
export interface DemoRow {
  label: string;
  size: number;
  options: PoolAllocOptions;
  phys?: bigint;
  bus?: bigint;
  verified?: boolean;
  error?: { code: string; message: string };
}

/** Run the demo; returns what it printed as data (for --json) and the text. */
export function runDemo(): { json: unknown; text: string } {
  const pool = openPoolSync({ backend: 'auto', quiet: true });
  const lines: string[] = [];
  try {
    lines.push(`physmem demo: ${pool.describe()}`);
    if (pool.fallbackReason) {
      lines.push(`note: using the FAKE backend: ${pool.fallbackReason}.`);
      // Reserving RAM only helps where /dev/mem exists; elsewhere point at what can work.
      lines.push(
        existsSync('/dev/mem')
          ? '      Reserve RAM with mem= or memmap= on the kernel command line to get real DMA memory.'
          : "      This kernel has no /dev/mem, so reserving RAM would not help: `physmem doctor` shows whether 'hugepage', 'udmabuf' or 'vfio' can work here.",
      );
    }
    const rows: DemoRow[] = [];
    const live: DmaBuffer[] = [];
    const lowest = pool.stats().ranges[0].start;
    for (const r of REQUESTS) {
      if (r.label === 'low buffer') r.options = { maxAddress: lowest + (16n << 20n) - 1n };
      const row: DemoRow = { label: r.label, size: r.size, options: r.options };
      try {
        const buf = pool.alloc(r.size, r.options);
        live.push(buf);
        row.phys = buf.phys;
        row.bus = buf.bus;
        // A pattern that depends on the address, so a mix-up between buffers shows.
        const seed = Number(buf.phys & 0xffn);
        for (let i = 0; i < buf.size; i++) buf.bytes[i] = (i * 7 + seed) & 0xff;
        row.verified = true;
      } catch (e) {
        const err = e as { code?: string; message: string };
        row.error = { code: err.code ?? 'UNKNOWN', message: err.message };
      }
      rows.push(row);
    }
    // Read everything back only after all writes: overlapping buffers would show here.
    for (let k = 0, j = 0; k < rows.length; k++) {
      const row = rows[k];
      if (row.phys === undefined) continue;
      const buf = live[j++];
      const seed = Number(buf.phys & 0xffn);
      for (let i = 0; i < buf.size; i++) if (buf.bytes[i] !== ((i * 7 + seed) & 0xff)) row.verified = false;
    }
    const map = memoryMap(pool.walk());
    const during = pool.stats();
    lines.push('');
    lines.push(
      table(
        ['buffer', 'size', 'constraints', 'phys', 'bus', 'read back'],
        rows.map((r) => [
          r.label,
          formatSize(r.size),
          describeOptions(r.options),
          r.phys === undefined ? '-' : hex(r.phys),
          r.bus === undefined ? '-' : hex(r.bus),
          r.error ? `${r.error.code}` : r.verified ? 'ok' : 'MISMATCH',
        ]),
      ),
    );
    lines.push('');
    lines.push(`memory map (# used, + partly, . free): ${map}`);
    lines.push(`in use: ${formatSize(during.used)} in ${during.count} blocks; free: ${formatSize(during.free)} of ${formatSize(during.total)}`);
    for (const b of live) b.free();
    const after = pool.stats();
    lines.push(`after free: ${after.count} blocks, ${formatSize(after.free)} free of ${formatSize(after.total)}`);
    const addon = nativeAddonSource() ?? null;
    if (addon) lines.push(`native addon: ${addon.kind === 'prebuilt' ? 'prebuilt' : 'built here'}, ${addon.path}`);
    const ok = rows.every((r) => r.verified === true) && after.count === 0 && after.free === after.total;
    return {
      json: { backend: pool.backend, addon, fake: pool.fallbackReason !== undefined || pool.backend === 'fake', fallbackReason: pool.fallbackReason, buffers: rows, statsDuring: during, statsAfter: after, ok },
      text: lines.join('\n'),
    };
  } finally {
    pool.close();
  }
}

function describeOptions(o: PoolAllocOptions): string {
  const parts: string[] = [];
  if (o.align !== undefined) parts.push(`align ${formatSize(o.align)}`);
  if (o.boundary !== undefined) parts.push(`no ${formatSize(o.boundary)} crossing`);
  if (o.maxAddress !== undefined) parts.push(`<= ${hex(o.maxAddress)}`);
  return parts.join(', ') || 'default';
}
