/**
 * `physmem status`: what a daemon serves — clients, their blocks,
 * quarantine, free space and a memory map — as text or JSON.
 * @module
 */
import { ServicePool } from './client.js';
import type { ServiceBlock } from './protocol.js';
import { hex } from '../internal/validate.js';

/** One entry of the memory map: a block, or free space between blocks. */
export interface StatusMapEntry {
  /** Physical address, a hex string (`"0x100000000"`) like every address in the CLI's JSON. */
  phys: string;
  /** Bytes (whole pages for blocks). */
  size: number;
  /**
   * `'used'`, `'quarantined'` (its client is gone), `'restored'` (kept from the journal
   * after a daemon restart, waiting for its client to reclaim it with its token) or `'free'`.
   */
  state: 'used' | 'quarantined' | 'restored' | 'free';
  /** Owning client id, for blocks. */
  client?: number;
  /** Owner's pid, for blocks. */
  pid?: number;
  /** A named buffer's name. */
  name?: string;
}

/** One connected or departed client with blocks. */
export interface StatusClient {
  /** Client id at the daemon. */
  client: number;
  /** Its pid (SO_PEERCRED). */
  pid: number;
  /** Live blocks. */
  blocks: number;
  /** Their bytes, as asked for. */
  bytes: number;
  /** True when disconnected and its blocks are in quarantine. */
  quarantined: boolean;
}

/** What {@link collectStatus} returns (the `--json` output). */
export interface StatusReport {
  /** The socket asked. */
  socket: string;
  /** The daemon's pid. */
  daemonPid: number;
  /** Its backend. */
  backend: string;
  /** Bytes managed. */
  total: number;
  /** Bytes in blocks (whole pages), quarantined ones included. */
  used: number;
  /** Bytes free. */
  free: number;
  /** The largest free block. */
  largestFree: number;
  /** Free blocks (fragments) in the map. */
  fragments: number;
  /** Allocations waiting for memory. */
  waiting: number;
  /** Connected clients (the status connection itself included). */
  connected: number;
  /** Quarantined blocks and bytes. */
  quarantine: { blocks: number; bytes: number };
  /** Blocks restored from the journal that no client has reclaimed yet, and their bytes (as asked for). */
  restored: { blocks: number; bytes: number };
  /** Clients holding blocks. */
  clients: StatusClient[];
  /** Every block and free gap, in address order. */
  map: StatusMapEntry[];
  /** True when the daemon cut the block list (more than it sends in one reply). */
  truncated: boolean;
}

/**
 * Ask the daemon at `socket` for its state. Shows every client's blocks to
 * root and the daemon's own user, only this connection's (none) to others.
 * @throws {PhysmemError} ENOENT/ECONNREFUSED when no daemon listens; EACCES.
 */
export async function collectStatus(socket: string): Promise<StatusReport> {
  const pool = await ServicePool.connect(socket, { mapBlocks: false }); // status needs the socket only, not the memory
  try {
    const s = await pool.statsAsync();
    const { blocks, truncated } = await pool.listBlocks();
    return buildReport(socket, pool.daemonPid, pool.pageSize, s, blocks, truncated);
  } finally {
    await pool.close();
  }
}

function buildReport(
  socket: string, daemonPid: number, page: number,
  s: Awaited<ReturnType<ServicePool['statsAsync']>>, blocks: ServiceBlock[], truncated: boolean,
): StatusReport {
  const byClient = new Map<number, StatusClient>();
  const restored = { blocks: 0, bytes: 0 };
  for (const b of blocks) {
    if (b.orphan === true) {
      // Nobody's yet: not a client (they carry client 0), shown as restored.
      restored.blocks++;
      restored.bytes += b.size;
      continue;
    }
    const c = byClient.get(b.client) ?? { client: b.client, pid: b.pid, blocks: 0, bytes: 0, quarantined: b.quarantined };
    c.blocks++;
    c.bytes += b.size;
    byClient.set(b.client, c);
  }
  const map: StatusMapEntry[] = [];
  const sorted = [...blocks].sort((x, y) => (BigInt(x.phys) < BigInt(y.phys) ? -1 : 1));
  let i = 0;
  for (const r of s.ranges) {
    let at = r.start;
    const end = r.start + BigInt(r.size);
    for (; i < sorted.length && BigInt(sorted[i].phys) < end; i++) {
      const b = sorted[i];
      const p = BigInt(b.phys);
      if (p > at) map.push({ phys: hex(at), size: Number(p - at), state: 'free' });
      const size = Math.ceil(b.size / page) * page;
      const entry: StatusMapEntry = b.orphan === true
        ? { phys: hex(p), size, state: 'restored', pid: b.pid }
        : { phys: hex(p), size, state: b.quarantined ? 'quarantined' : 'used', client: b.client, pid: b.pid };
      if (b.name !== undefined) entry.name = b.name;
      map.push(entry);
      at = p + BigInt(size);
    }
    if (at < end) map.push({ phys: hex(at), size: Number(end - at), state: 'free' });
  }
  return {
    socket,
    daemonPid,
    backend: s.backend,
    total: s.total,
    used: s.used,
    free: s.free,
    largestFree: s.largestFree,
    fragments: map.filter((m) => m.state === 'free').length,
    waiting: s.waiting,
    connected: s.clients,
    quarantine: { blocks: s.quarantinedBlocks, bytes: s.quarantinedBytes },
    restored,
    clients: [...byClient.values()].sort((a, b) => a.client - b.client),
    map,
    truncated,
  };
}

/** The report as text: summary, clients, then one line per map entry. */
export function formatStatus(r: StatusReport): string {
  const addr = (d: string) => hex(BigInt(d), 9);
  const lines = [
    `daemon pid ${r.daemonPid} on ${r.socket} (${r.backend} backend)`,
    `total ${r.total} bytes, used ${r.used}, free ${r.free} in ${r.fragments} fragment(s), largest free ${r.largestFree}`,
    `${r.connected} connected, ${r.waiting} waiting, quarantine ${r.quarantine.blocks} block(s) / ${r.quarantine.bytes} bytes` +
      (r.restored.blocks === 0 ? '' : `, restored after a restart and not yet reclaimed ${r.restored.blocks} block(s) / ${r.restored.bytes} bytes`),
    '',
    'clients:',
    ...(r.clients.length === 0 ? ['  (none with blocks)'] : r.clients.map((c) => `  client ${c.client} pid ${c.pid}: ${c.blocks} block(s), ${c.bytes} bytes${c.quarantined ? ' (quarantined)' : ''}`)),
    '',
    'memory map:',
    ...r.map.map((m) => `  ${addr(m.phys)} ${String(m.size).padStart(10)}  ${describeEntry(m)}`),
  ];
  if (r.truncated) lines.push('  (block list cut: the daemon sends as many blocks as fit in one 64 KiB reply)');
  return lines.join('\n');
}

function describeEntry(m: StatusMapEntry): string {
  const name = m.name === undefined ? '' : ` name '${m.name}'`;
  if (m.state === 'free') return 'free';
  if (m.state === 'restored') return `restored, awaiting reclaim (was pid ${m.pid})${name}`;
  return `${m.state} client ${m.client} pid ${m.pid}${name}`;
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A stable colour per client id (golden-angle hues, so neighbours differ), as `#rrggbb` (hsl 65% 50%). */
function clientColour(id: number): string {
  const h = (id * 137.508) % 360;
  const a = 0.65 * 0.5;
  const f = (n: number) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (0.5 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return '#' + [f(0), f(8), f(4)].map((v) => v.toString(16).padStart(2, '0')).join('');
}

// Geometry of the picture, in pixels. Documented in docs/service.md; tests rely on MIN_BLOCK and SEP.
const W = 960;
const X0 = 8;
const PW = W - 2 * X0; // plot width
const MIN_BLOCK = 3; // narrowest rectangle a block or free gap gets in the detail rows
const SEP = 1; // white separator after each rectangle, so adjacent blocks of one client stay apart
const GAP_PX = 14; // the glyph for the hole between two ranges
const FREE = '#d9d9d9';

function entryFill(m: StatusMapEntry): string {
  if (m.state === 'free') return FREE;
  if (m.state === 'quarantined') return 'url(#quarantine)';
  if (m.state === 'restored') return 'url(#restored)';
  return clientColour(m.client!);
}

function entryTitle(m: StatusMapEntry): string {
  return `<title>${hex(BigInt(m.phys))}: ${xmlEscape(`${describeEntry(m)}, ${m.size} bytes`)}</title>`;
}

/** A named buffer's mark: a black triangle pointing down at the block, centred on x. */
function namedMark(x: number, y: number, name: string): string {
  return `<path data-named="${xmlEscape(name)}" d="M${x - 3} ${y - 6}h6l-3 5z" fill="#000"/>`;
}

/**
 * Integer widths that sum to `total`, each at least its `mins[i]`, the rest
 * shared in proportion to `weights`. Rounding cumulative positions keeps both
 * promises: round(a + m + e) >= round(a) + m for an integer m and e >= 0.
 */
function allot(mins: number[], weights: number[], total: number): number[] {
  const spare = Math.max(0, total - mins.reduce((s, m) => s + m, 0));
  const sum = weights.reduce((s, w) => s + w, 0) || 1;
  const out: number[] = [];
  let exact = 0;
  let at = 0;
  for (let i = 0; i < mins.length; i++) {
    exact += mins[i] + (spare * weights[i]) / sum;
    const next = Math.round(exact);
    out.push(next - at);
    at = next;
  }
  return out;
}

interface MapRange { start: bigint; size: number; first: number; last: number }

/** Contiguous runs of the map: the pool's ranges (an address jump between entries is a gap). */
function mapRanges(map: StatusMapEntry[]): MapRange[] {
  const out: MapRange[] = [];
  map.forEach((m, i) => {
    const p = BigInt(m.phys);
    const cur = out[out.length - 1];
    if (cur !== undefined && cur.start + BigInt(cur.size) === p) {
      cur.size += m.size;
      cur.last = i;
    } else {
      out.push({ start: p, size: m.size, first: i, last: i });
    }
  });
  return out;
}

/** A hex address label; ~6 px a character at font-size 10. */
function tick(x: number, y: number, label: string, anchor: 'start' | 'middle' | 'end'): string {
  return `<line class="tick" x1="${x}" y1="${y}" x2="${x}" y2="${y + 5}" stroke="#000"/>` +
    `<text class="tick" x="${x}" y="${y + 15}" font-size="10" text-anchor="${anchor}">${label}</text>`;
}

/** The gap glyph: a dashed box of thin diagonal lines, tooltip naming the hole. */
function gapGlyph(x: number, y: number, w: number, h: number, from: bigint, to: bigint): string {
  return `<rect data-gap="${hex(from)}" x="${x}" y="${y}" width="${w}" height="${h}" fill="url(#gap)" stroke="#777" stroke-dasharray="2 2">` +
    `<title>${hex(from)}-${hex(to)}: gap between ranges, not in the pool (${to - from} bytes)</title></rect>`;
}

/**
 * The memory map as a self-contained SVG picture (no scripts, fonts or
 * external references; the same report always gives the same bytes).
 *
 * - A bar to scale: each range of the pool across the width in proportion to
 *   its size, a dashed gap glyph between ranges, blocks at their address
 *   (narrower than a pixel: drawn 1 px wide, so none disappears, though
 *   neighbours may share that pixel), with hex address ticks at power-of-two
 *   multiples.
 * - Detail rows below, in address order, where every block and free gap gets
 *   a rectangle at least 3 px wide followed by a 1 px white separator, the
 *   rest of the width shared in proportion to size (not to scale); when they
 *   do not fit on one row they wrap onto more, a large entry continuing on
 *   the next row. Each row has ticks with the exact start address of entries.
 * - Blocks are coloured by client; quarantined blocks hatched orange, blocks
 *   restored after a restart and not yet reclaimed hatched blue, free space
 *   grey; a black triangle above marks a named buffer. Every rectangle has a
 *   tooltip (address, state, owner, name, bytes).
 * - A legend of every client colour and every state, free space, the gap and
 *   the named mark, with counts, and the fragmentation (1 - largest free block
 *   / free bytes).
 */
export function renderStatusSvg(r: StatusReport): string {
  const out: string[] = [];
  const ranges = mapRanges(r.map);
  const totalSize = ranges.reduce((s, g) => s + g.size, 0);

  // Bar to scale.
  const ovTop = 66;
  const ovH = 30;
  const rangeW = allot(ranges.map(() => 8), ranges.map((g) => g.size), PW - GAP_PX * Math.max(0, ranges.length - 1));
  out.push(`<text x="${X0}" y="${ovTop - 10}">to scale (a block under a pixel is drawn 1 px wide):</text>`, '<g shape-rendering="crispEdges">');
  const ticks: string[] = [];
  const marks: string[] = [];
  let rx = X0;
  ranges.forEach((g, gi) => {
    const rw = rangeW[gi];
    if (gi > 0) {
      const prev = ranges[gi - 1];
      out.push(gapGlyph(rx - GAP_PX, ovTop, GAP_PX, ovH, prev.start + BigInt(prev.size), g.start));
    }
    out.push(`<rect x="${rx}" y="${ovTop}" width="${rw}" height="${ovH}" fill="${FREE}"/>`);
    const at = (a: bigint) => rx + (Number(a - g.start) / g.size) * rw;
    for (let i = g.first; i <= g.last; i++) {
      const m = r.map[i];
      if (m.state === 'free') continue;
      const p = BigInt(m.phys);
      const x0 = Math.min(Math.floor(at(p)), rx + rw - 1);
      const x1 = Math.max(x0 + 1, Math.round(at(p + BigInt(m.size))));
      const w = x1 - x0 >= MIN_BLOCK + SEP ? x1 - x0 - SEP : x1 - x0;
      out.push(`<rect data-scale="${i}" x="${x0}" y="${ovTop}" width="${w}" height="${ovH}" fill="${entryFill(m)}">${entryTitle(m)}</rect>`);
      if (m.name !== undefined) marks.push(namedMark(x0 + w / 2, ovTop, m.name));
    }
    // Ticks: the range's start, then power-of-two multiples at least 90 px apart, labels clear of the ends'.
    ticks.push(tick(rx, ovTop + ovH, hex(g.start), 'start'));
    let step = 1n;
    while (Number(step) * (rw / g.size) < 90) step *= 2n;
    const end = g.start + BigInt(g.size);
    for (let a = ((g.start + step) / step) * step; a < end; a += step) {
      const x = Math.round(at(a));
      if (x - rx >= 110 && rx + rw - x >= (gi === ranges.length - 1 ? 110 : 40)) ticks.push(tick(x, ovTop + ovH, hex(a), 'middle'));
    }
    if (gi === ranges.length - 1) ticks.push(tick(rx + rw, ovTop + ovH, hex(end), 'end'));
    rx += rw + GAP_PX;
  });
  out.push('</g>', ...marks, ...ticks);

  // Detail rows: every entry at least MIN_BLOCK + SEP wide.
  type Item = { kind: 'entry'; i: number } | { kind: 'gap'; from: bigint; to: bigint };
  const items: Item[] = [];
  ranges.forEach((g, gi) => {
    if (gi > 0) items.push({ kind: 'gap', from: ranges[gi - 1].start + BigInt(ranges[gi - 1].size), to: g.start });
    for (let i = g.first; i <= g.last; i++) items.push({ kind: 'entry', i });
  });
  const mins = items.map((it) => (it.kind === 'gap' ? GAP_PX : MIN_BLOCK + SEP));
  const fixed = mins.reduce((s, m) => s + m, 0);
  // One row when the minimums fit with room to spare; otherwise enough rows that ~30% of the width follows size.
  const strip = fixed <= PW * 0.7 ? PW : Math.ceil(fixed / (PW * 0.7)) * PW;
  const widths = allot(mins, items.map((it) => (it.kind === 'gap' ? 0 : r.map[it.i].size / (totalSize || 1))), strip);
  const dTop = ovTop + ovH + 52;
  const pitch = 50; // mark 8 + bar 24 + ticks 18
  const barOff = 8;
  const barH = 24;
  const rowY = (row: number) => dTop + row * pitch + barOff;
  const dRects: string[] = [];
  const dMarks: string[] = [];
  const dTicks: string[] = [];
  let row = 0;
  let x = 0;
  let labelEnd = -Infinity; // where the last tick label of this row ends
  const newRow = () => {
    row++;
    x = 0;
    labelEnd = -Infinity;
  };
  items.forEach((it, k) => {
    let w = widths[k];
    if (it.kind === 'gap') {
      if (PW - x < w) newRow();
      dRects.push(gapGlyph(X0 + x, rowY(row), w - SEP, barH, it.from, it.to));
      x += w;
      return;
    }
    const m = r.map[it.i];
    let first = true;
    while (w > 0) {
      if (PW - x < MIN_BLOCK + SEP) newRow();
      let piece = Math.min(w, PW - x);
      const rest = w - piece;
      if (rest > 0 && rest < MIN_BLOCK + SEP) piece -= MIN_BLOCK + SEP - rest; // leave the continuation wide enough
      if (piece < MIN_BLOCK + SEP) {
        newRow();
        continue;
      }
      const px = X0 + x;
      const part = first ? '' : ' data-part="cont"';
      dRects.push(`<rect data-entry="${it.i}" data-state="${m.state}"${part} x="${px}" y="${rowY(row)}" width="${piece - SEP}" height="${barH}" fill="${entryFill(m)}">${entryTitle(m)}</rect>`);
      if (first) {
        if (m.name !== undefined) dMarks.push(namedMark(px + (piece - SEP) / 2, rowY(row), m.name));
        const label = hex(BigInt(m.phys));
        if (px >= labelEnd + 10 && px + label.length * 6 <= X0 + PW) {
          dTicks.push(tick(px, rowY(row) + barH, label, 'start'));
          labelEnd = px + label.length * 6;
        }
      }
      first = false;
      x += piece;
      w -= piece;
    }
  });
  const rows = row + 1;
  out.push(
    `<text x="${X0}" y="${dTop - 4}">every block and free gap, at least ${MIN_BLOCK} px wide with a ${SEP} px white separator, wider with size (not to scale)${rows > 1 ? `, ${rows} rows` : ''}:</text>`,
    '<g shape-rendering="crispEdges">', ...dRects, '</g>', ...dMarks, ...dTicks,
  );

  // Legend, two columns.
  const count = (pred: (m: StatusMapEntry) => boolean) => r.map.filter(pred).length;
  const named = count((m) => m.name !== undefined);
  const swatch = (fill: string) => `<rect width="12" height="12" fill="${fill}"/>`;
  const legend: Array<[string, string]> = [
    ...r.clients.map((c): [string, string] => [
      swatch(c.quarantined ? 'url(#quarantine)' : clientColour(c.client)),
      `client ${c.client} pid ${c.pid}: ${c.blocks} block(s), ${c.bytes} bytes${c.quarantined ? ' (quarantined)' : ''}`,
    ]),
    [swatch(FREE), `free: ${r.free} bytes in ${r.fragments} fragment(s)`],
    [swatch('url(#quarantine)'), `quarantined (client gone): ${r.quarantine.blocks} block(s), ${r.quarantine.bytes} bytes`],
    [swatch('url(#restored)'), `restored after a restart, awaiting reclaim: ${r.restored.blocks} block(s), ${r.restored.bytes} bytes`],
    [`<rect width="12" height="12" fill="url(#gap)" stroke="#777" stroke-dasharray="2 2"/>`, `gap between ranges, not in the pool: ${ranges.length - 1}`],
    [`<path d="M3 0h6l-3 5z" fill="#000"/><rect y="6" width="12" height="6" fill="#888"/>`, `named buffer: ${named} (name in the tooltip)`],
    [`<rect width="5" height="12" fill="#888"/><rect x="6" width="6" height="12" fill="#888"/>`, 'white line: boundary between two entries'],
  ];
  const lTop = dTop + rows * pitch + 10;
  const perCol = Math.ceil(legend.length / 2);
  legend.forEach(([sw, text], i) => {
    const lx = X0 + (i < perCol ? 0 : PW / 2);
    const ly = lTop + (i % perCol) * 18;
    out.push(`<g class="legend" transform="translate(${lx} ${ly})">${sw}<text x="18" y="11">${xmlEscape(text)}</text></g>`);
  });
  let height = lTop + perCol * 18 + 6;
  if (r.truncated) {
    out.push(`<text x="${X0}" y="${height + 8}">block list cut: the daemon sends as many blocks as fit in one 64 KiB reply</text>`);
    height += 18;
  }

  const frag = r.free === 0 ? 0 : 1 - r.largestFree / r.free;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="12">`,
    '<defs><pattern id="quarantine" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4a340"/><rect width="3" height="6" fill="#c46a00"/></pattern>' +
      '<pattern id="restored" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="6" height="6" fill="#9bb7d4"/><rect width="3" height="6" fill="#4a6f96"/></pattern>' +
      '<pattern id="gap" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="4" height="4" fill="#fff"/><rect width="1" height="4" fill="#999"/></pattern></defs>',
    `<rect width="${W}" height="${height}" fill="#fff"/>`,
    `<text x="${X0}" y="16">${xmlEscape(`physmem daemon pid ${r.daemonPid} (${r.backend}): ${r.used} of ${r.total} bytes used, ${r.free} free`)}</text>`,
    `<text x="${X0}" y="32">${xmlEscape(`${r.fragments} free fragment(s), largest ${r.largestFree} bytes; fragmentation ${(frag * 100).toFixed(1)}%; quarantine ${r.quarantine.blocks} block(s); restored, awaiting reclaim ${r.restored.blocks} block(s)`)}</text>`,
    ...out,
    '</svg>',
  ].join('\n');
}
