/**
 * The `physmem status --svg` map (renderStatusSvg), drawn from a dense report
 * built here: several hundred small blocks of five clients in two ranges with
 * a gap between them, some named, one client's blocks quarantined, one block
 * restored after a restart. Checks the SVG's structure, then renders it to PNG
 * with resvg (the real renderer) and reads pixels back.
 * Set PHYSMEM_SVG_OUT=DIR to keep status-map.svg / status-map.png there to look at.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import { renderStatusSvg, type StatusMapEntry, type StatusReport, type StatusClient } from '../lib/service/status.js';

const PAGE = 4096;
const MIN_BLOCK = 3; // docs/service.md: every entry at least 3 px wide, then a 1 px separator
const PLOT_END = 952; // 8 px margins on a 960 px picture

/** A deterministic dense pool: LCG-driven sizes and owners. */
function denseReport(): StatusReport {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 16) % n;
  };
  const ranges = [{ start: 0x1_0000_0000n, size: 64 << 20 }, { start: 0x1_8000_0000n, size: 16 << 20 }];
  const map: StatusMapEntry[] = [];
  const pidOf = (c: number) => 1000 + c;
  let restoredDone = false;
  for (const [ri, g] of ranges.entries()) {
    let at = g.start;
    const end = g.start + BigInt(g.size);
    // Dense first 1/32 of each range, then one large free area and a few blocks at the end.
    const denseEnd = g.start + BigInt(g.size / 32);
    const push = (e: StatusMapEntry) => {
      map.push(e);
      at += BigInt(e.size);
    };
    while (at < denseEnd) {
      const size = (1 + (rnd(8) === 0 ? rnd(16) : 0)) * PAGE;
      const roll = rnd(10);
      if (roll === 0) {
        push({ phys: '0x' + at.toString(16), size: (1 + rnd(3)) * PAGE, state: 'free' });
        continue;
      }
      const client = 1 + rnd(5);
      const e: StatusMapEntry = client === 5 && ri === 0
        ? { phys: '0x' + at.toString(16), size, state: 'quarantined', client, pid: pidOf(client) }
        : { phys: '0x' + at.toString(16), size, state: 'used', client: client === 5 ? 4 : client, pid: pidOf(client === 5 ? 4 : client) };
      if (rnd(40) === 0) e.name = `ring${map.length}`;
      if (!restoredDone && ri === 1 && map.length > 0) {
        push({ phys: '0x' + at.toString(16), size: PAGE, state: 'restored', pid: 777, name: 'journal-kept' });
        restoredDone = true;
        continue;
      }
      push(e);
    }
    // A lone one-page block in the middle of the free area, then three at the end.
    const half = Math.floor(Number(end - at) / 2 / PAGE) * PAGE;
    push({ phys: '0x' + at.toString(16), size: half, state: 'free' });
    push({ phys: '0x' + at.toString(16), size: PAGE, state: 'used', client: 3, pid: pidOf(3) });
    push({ phys: '0x' + at.toString(16), size: Number(end - at) - 3 * PAGE, state: 'free' });
    push({ phys: '0x' + at.toString(16), size: PAGE, state: 'used', client: 1, pid: pidOf(1) });
    push({ phys: '0x' + at.toString(16), size: PAGE, state: 'used', client: 1, pid: pidOf(1) });
    push({ phys: '0x' + at.toString(16), size: PAGE, state: 'used', client: 2, pid: pidOf(2), name: 'tail' });
  }
  const clients = new Map<number, StatusClient>();
  for (const m of map) {
    if (m.state !== 'used' && m.state !== 'quarantined') continue;
    const c = clients.get(m.client!) ?? { client: m.client!, pid: m.pid!, blocks: 0, bytes: 0, quarantined: m.state === 'quarantined' };
    c.blocks++;
    c.bytes += m.size;
    clients.set(m.client!, c);
  }
  const free = map.filter((m) => m.state === 'free');
  const sum = (xs: StatusMapEntry[]) => xs.reduce((s, m) => s + m.size, 0);
  const q = map.filter((m) => m.state === 'quarantined');
  const rs = map.filter((m) => m.state === 'restored');
  const total = ranges.reduce((s, g) => s + g.size, 0);
  return {
    socket: '/run/physmem/physmem.sock', daemonPid: 42, backend: 'devmem', total,
    used: total - sum(free), free: sum(free), largestFree: Math.max(...free.map((m) => m.size)), fragments: free.length,
    waiting: 0, connected: clients.size, quarantine: { blocks: q.length, bytes: sum(q) }, restored: { blocks: rs.length, bytes: sum(rs) },
    clients: [...clients.values()].sort((a, b) => a.client - b.client), map, truncated: false,
  };
}

interface Piece { entry: number; state: string; cont: boolean; x: number; y: number; w: number; h: number; fill: string }

function detailPieces(svg: string): Piece[] {
  return [...svg.matchAll(/<rect data-entry="(\d+)" data-state="(\w+)"( data-part="cont")? x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" fill="([^"]+)"/g)]
    .map((m) => ({ entry: Number(m[1]), state: m[2], cont: m[3] !== undefined, x: Number(m[4]), y: Number(m[5]), w: Number(m[6]), h: Number(m[7]), fill: m[8] }));
}

function scalePieces(svg: string): Piece[] {
  return [...svg.matchAll(/<rect data-scale="(\d+)" x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" fill="([^"]+)"/g)]
    .map((m) => ({ entry: Number(m[1]), state: '', cont: false, x: Number(m[2]), y: Number(m[3]), w: Number(m[4]), h: Number(m[5]), fill: m[6] }));
}

const report = denseReport();
const svg = renderStatusSvg(report);

describe('status --svg map (dense report)', () => {
  it('the report is dense: hundreds of blocks, most far under a pixel to scale', () => {
    const blocks = report.map.filter((m) => m.state !== 'free');
    expect(blocks.length).toBeGreaterThan(250);
    expect(blocks.filter((m) => (m.size / report.total) * 944 < 1).length).toBeGreaterThan(250);
    expect(report.clients.length).toBe(5);
  });

  it('gives every map entry a rectangle at least 3 px wide in the detail rows, separated from the next', () => {
    const pieces = detailPieces(svg);
    // Every entry, in order, has a first piece; continuation pieces follow it.
    expect(pieces.filter((p) => !p.cont).map((p) => p.entry)).toEqual(report.map.map((_, i) => i));
    expect(pieces.filter((p) => !p.cont).map((p) => p.state)).toEqual(report.map.map((m) => m.state));
    for (const p of pieces) {
      expect(p.w).toBeGreaterThanOrEqual(MIN_BLOCK);
      expect(p.x + p.w).toBeLessThanOrEqual(PLOT_END);
    }
    // Within a row, each rectangle ends at least 1 px before the next begins (the white separator).
    for (let i = 1; i < pieces.length; i++) {
      if (pieces[i].y === pieces[i - 1].y) expect(pieces[i].x).toBeGreaterThanOrEqual(pieces[i - 1].x + pieces[i - 1].w + 1);
      else expect(pieces[i].y).toBeGreaterThan(pieces[i - 1].y);
    }
    expect(new Set(pieces.map((p) => p.y)).size).toBeGreaterThan(1); // hundreds of entries wrap
  });

  it('draws every block to scale at least 1 px wide', () => {
    const scale = scalePieces(svg);
    const blocks = report.map.flatMap((m, i) => (m.state === 'free' ? [] : [i]));
    expect(scale.map((p) => p.entry)).toEqual(blocks);
    for (const p of scale) expect(p.w).toBeGreaterThanOrEqual(1);
  });

  it('marks states by fill: client colours, quarantine and restored hatches, free grey', () => {
    const first = detailPieces(svg).filter((p) => !p.cont);
    for (const p of first) {
      const m = report.map[p.entry];
      if (m.state === 'quarantined') expect(p.fill).toBe('url(#quarantine)');
      else if (m.state === 'restored') expect(p.fill).toBe('url(#restored)');
      else expect(p.fill).toMatch(/^#[0-9a-f]{6}$/);
    }
    const colourOf = new Map(first.filter((p) => p.state === 'used').map((p) => [report.map[p.entry].client, p.fill]));
    expect(new Set(colourOf.values()).size).toBe(colourOf.size); // one colour per client, all different
    expect(colourOf.size).toBe(4);
  });

  it('marks each named buffer, in both bars', () => {
    const named = report.map.filter((m) => m.name !== undefined).map((m) => m.name);
    expect(named.length).toBeGreaterThan(3);
    const marks = [...svg.matchAll(/<path data-named="([^"]+)"/g)].map((m) => m[1]);
    expect(marks).toEqual([...named, ...named]);
  });

  it('has address ticks along both bars, the gap between ranges, and a complete legend', () => {
    const labels = [...svg.matchAll(/<text class="tick"[^>]*>(0x[0-9a-f]+)<\/text>/g)].map((m) => m[1]);
    expect(labels).toContain('0x100000000');
    expect(labels).toContain('0x180000000');
    expect(labels).toContain('0x181000000'); // end of the last range
    expect(labels.length).toBeGreaterThan(20);
    // Every detail tick is the exact start of an entry.
    const starts = new Set(report.map.map((m) => m.phys));
    const scaleTicks = new Set(['0x100000000', '0x180000000', '0x181000000']);
    expect(labels.filter((l) => starts.has(l) || scaleTicks.has(l) || BigInt(l) % 0x100000n === 0n)).toEqual(labels);
    expect([...svg.matchAll(/data-gap="0x104000000"/g)]).toHaveLength(2);
    const legend = [...svg.matchAll(/<g class="legend"[^>]*>.*?<text[^>]*>([^<]*)<\/text><\/g>/g)].map((m) => m[1]);
    for (const c of report.clients) expect(legend.some((t) => t.startsWith(`client ${c.client} pid ${c.pid}: ${c.blocks} block(s)`))).toBe(true);
    for (const what of ['free: ', 'quarantined (client gone): ', 'restored after a restart', 'gap between ranges', 'named buffer: ', 'white line']) {
      expect(legend.some((t) => t.startsWith(what))).toBe(true);
    }
  });

  it('is self-contained and deterministic', () => {
    expect(renderStatusSvg(denseReport())).toBe(svg);
    expect(svg).not.toMatch(/href|<script|<image|@import|url\((?!#)/);
    expect(svg.match(/http/g)).toHaveLength(1); // the xmlns only
  });

  it('renders to a PNG (resvg) where a one-page block shows in its colour and adjacent blocks stay apart', () => {
    const height = Number(/<svg [^>]*height="(\d+)"/.exec(svg)![1]);
    const png = new Resvg(svg, { font: { loadSystemFonts: false } }).render();
    expect([png.width, png.height]).toEqual([960, height]);
    const at = (x: number, y: number) => {
      const o = (y * png.width + x) * 4;
      return '#' + [...png.pixels.subarray(o, o + 3)].map((v) => v.toString(16).padStart(2, '0')).join('');
    };
    const pieces = detailPieces(svg);
    // A one-page used block (1/20480 of the pool) next to another of the same client.
    let checked = 0;
    for (let i = 1; i < pieces.length; i++) {
      const [a, b] = [pieces[i - 1], pieces[i]];
      const [ma, mb] = [report.map[a.entry], report.map[b.entry]];
      if (ma.state !== 'used' || mb.state !== 'used' || ma.client !== mb.client || ma.size !== PAGE || a.y !== b.y) continue;
      expect(at(a.x + 1, a.y + 12)).toBe(a.fill);
      expect(at(b.x + 1, b.y + 12)).toBe(b.fill);
      expect(at(a.x + a.w, a.y + 12)).toBe('#ffffff'); // the separator between them
      checked++;
    }
    expect(checked).toBeGreaterThan(5);
    // To scale: a one-page block whose pixel no later block covers is in its colour, not free grey.
    const scale = scalePieces(svg);
    const lone = scale.filter((p, i) => report.map[p.entry].size === PAGE && report.map[p.entry].state === 'used' &&
      scale.every((q, j) => j === i || q.x + q.w <= p.x || q.x > p.x + p.w - 1));
    expect(lone.length).toBe(2); // the one in each range's free area
    for (const p of lone) expect(at(p.x, p.y + 10)).toBe(p.fill);
    if (process.env.PHYSMEM_SVG_OUT !== undefined) {
      mkdirSync(process.env.PHYSMEM_SVG_OUT, { recursive: true });
      writeFileSync(join(process.env.PHYSMEM_SVG_OUT, 'status-map.svg'), svg);
      writeFileSync(join(process.env.PHYSMEM_SVG_OUT, 'status-map.png'), png.asPng());
    }
  });
});
