/**
 * Output helpers shared by the CLI commands: sizes, addresses, tables, a
 * one-line memory map, and JSON with bigints as hex strings.
 * @module
 */
import type { PoolBlock } from '../pool.js';
import { hex } from '../internal/validate.js';

/** Bytes as a short human size: `'64 KiB'`, `'1.5 MiB'`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** Left-aligned text table with a header row. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/**
 * A memory map in `width` characters: `#` mostly used, `+` partly used,
 * `.` free, ` ` not in the pool (a gap between ranges), from the lowest to
 * the highest address of `blocks`.
 */
export function memoryMap(blocks: PoolBlock[], width = 64): string {
  if (blocks.length === 0) return '';
  const start = blocks[0].phys;
  const last = blocks[blocks.length - 1];
  const span = Number(last.phys - start) + last.size;
  const used = new Float64Array(width);
  const covered = new Float64Array(width);
  for (const b of blocks) {
    const from = (Number(b.phys - start) / span) * width;
    const to = ((Number(b.phys - start) + b.size) / span) * width;
    for (let c = Math.floor(from); c < Math.min(width, Math.ceil(to)); c++) {
      const part = Math.min(to, c + 1) - Math.max(from, c);
      covered[c] += part;
      if (!b.free) used[c] += part;
    }
  }
  let s = '';
  for (let c = 0; c < width; c++) s += used[c] >= 0.5 ? '#' : used[c] > 0 ? '+' : covered[c] > 0 ? '.' : ' ';
  return `[${s}] ${hex(start)}..${hex(start + BigInt(span))}`;
}

/**
 * The keys whose values are addresses in the CLI's JSON: always hex strings
 * (`"0x100000000"`), whether the value is a bigint or a number.
 */
export const JSON_ADDRESS_KEYS: ReadonlySet<string> = new Set(['start', 'end', 'phys', 'bus', 'busOffset', 'maxAddress', 'limit', 'ramEnd', 'physBase', 'iova', 'address']);

/**
 * JSON for every `--json` of the CLI (docs/cli.md): addresses (the keys in
 * {@link JSON_ADDRESS_KEYS}) as hex strings, sizes and counts as numbers
 * (other bigints become numbers; exact below 2^53, which every size is).
 */
export function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    (k: string, v: unknown): unknown => {
      if (JSON_ADDRESS_KEYS.has(k) && (typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0))) return hex(v);
      return typeof v === 'bigint' ? Number(v) : v;
    },
    2,
  );
}
