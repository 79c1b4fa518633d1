/**
 * `physmem status`: what a daemon serves — clients, their blocks,
 * quarantine, free space and a memory map — as text or JSON.
 * @module
 */
import { ServicePool } from './client.js';
import type { ServiceBlock } from './protocol.js';
import { hex } from '../cli/format.js';

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
  const addr = (d: string) => '0x' + BigInt(d).toString(16).padStart(9, '0');
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

/** A stable colour per client id (golden-angle hues, so neighbours differ). */
function clientColour(id: number): string {
  return `hsl(${(id * 137.508) % 360},65%,50%)`;
}

/**
 * The memory map as an SVG picture: one bar across the pool, a rectangle per
 * block coloured by owner (quarantined blocks hatched orange, blocks restored
 * after a restart and not yet reclaimed hatched blue, free space light grey), each with a tooltip; a legend of clients; and the
 * fragmentation (free fragments, largest free block / free bytes).
 */
export function renderStatusSvg(r: StatusReport): string {
  const W = 960;
  const barY = 40;
  const barH = 60;
  const total = r.map.reduce((s, m) => s + m.size, 0) || 1;
  const start = r.map.length ? BigInt(r.map[0].phys) : 0n;
  const rects = r.map.map((m) => {
    const x = (Number(BigInt(m.phys) - start) / total) * W;
    const w = Math.max((m.size / total) * W, 0.5);
    const fill = m.state === 'free' ? '#e6e6e6' : m.state === 'quarantined' ? 'url(#quarantine)' : m.state === 'restored' ? 'url(#restored)' : clientColour(m.client!);
    const label = `${describeEntry(m)}, ${m.size} bytes`;
    return `<rect data-state="${m.state}" x="${x.toFixed(2)}" y="${barY}" width="${w.toFixed(2)}" height="${barH}" fill="${fill}"><title>0x${BigInt(m.phys).toString(16)}: ${xmlEscape(label)}</title></rect>`;
  });
  const frag = r.free === 0 ? 0 : 1 - r.largestFree / r.free;
  const legend = r.clients.map((c, i) =>
    `<rect x="0" y="${130 + i * 18}" width="12" height="12" fill="${c.quarantined ? 'url(#quarantine)' : clientColour(c.client)}"/>` +
    `<text x="18" y="${141 + i * 18}">client ${c.client} pid ${c.pid}: ${c.blocks} block(s), ${c.bytes} bytes${c.quarantined ? ' (quarantined)' : ''}</text>`);
  const height = 140 + Math.max(1, r.clients.length) * 18 + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="12">`,
    '<defs><pattern id="quarantine" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4a340"/><rect width="3" height="6" fill="#c46a00"/></pattern>' +
      '<pattern id="restored" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="6" height="6" fill="#9bb7d4"/><rect width="3" height="6" fill="#4a6f96"/></pattern></defs>',
    `<text x="0" y="16">${xmlEscape(`physmem daemon pid ${r.daemonPid} (${r.backend}): ${r.used} of ${r.total} bytes used, ${r.free} free`)}</text>`,
    `<text x="0" y="32">${xmlEscape(`${r.fragments} free fragment(s), largest ${r.largestFree} bytes; fragmentation ${(frag * 100).toFixed(1)}%; quarantine ${r.quarantine.blocks} block(s); restored, awaiting reclaim ${r.restored.blocks} block(s)`)}</text>`,
    ...rects,
    `<text x="0" y="120">0x${start.toString(16)}</text>`,
    `<text x="${W}" y="120" text-anchor="end">0x${(start + BigInt(total)).toString(16)}</text>`,
    ...legend,
    '</svg>',
  ].join('\n');
}
