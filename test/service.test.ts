/**
 * Standalone mode in one process: the protocol's decoder, a daemon
 * (startServer) on a temp socket, and clients (ServicePool) talking to it over
 * the real Unix socket. Child-process clients are in service-processes.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, sleep } from './helpers/wait.js';
import { rejectsWith, throwsWith } from './helpers/errors.js';
import fc from 'fast-check';
import { connect } from 'node:net';
import { chmodSync, mkdtempSync, rmSync, statSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALLOC_TIMEOUT, ALLOC_WAIT, FrameDecoder, MAX_FRAME, Outbox, PROTOCOL_VERSION, encodeAlloc, encodeBlock, encodeDone, encodeFrame, encodeFree, parseReply, replyParsers, requestParsers, type Reply } from '../lib/service/protocol.js';
import { startServer, type ServiceServer } from '../lib/service/server.js';
import { PendingTable, ServicePool } from '../lib/service/client.js';
import { openPool } from '../lib/open.js';
import { PhysmemError } from '../lib/errors.js';
import * as compat from '../lib/compat.js';
import { collectStatus, formatStatus, renderStatusSvg } from '../lib/service/status.js';
import { startJsonChild } from './helpers/child.js';

const root = mkdtempSync(join(tmpdir(), 'physmem-service-'));
const servers: ServiceServer[] = [];
const pools: ServicePool[] = [];
const logs: string[] = [];
let n = 0;

async function serve(extra: { size?: number; quarantineMs?: number; group?: string } = {}): Promise<{ server: ServiceServer; socket: string }> {
  const socket = join(root, `d${n++}`, 'pool.sock');
  const server = await startServer({ socket, size: extra.size ?? 1 << 20, quarantineMs: extra.quarantineMs ?? 0, group: extra.group, log: (l) => logs.push(l) });
  servers.push(server);
  return { server, socket };
}

async function client(socket: string): Promise<ServicePool> {
  const p = await ServicePool.connect(socket);
  pools.push(p);
  return p;
}



/** Re-reads `get()` until `ok` holds and returns the last value; the 30 s deadline only stops a hang. */

afterAll(async () => {
  for (const p of pools) await p.close().catch(() => undefined);
  await compat.disconnectService();
  for (const s of servers) await s.close();
  rmSync(root, { recursive: true, force: true });
});

describe('protocol', () => {
  const frame = (len: number, version: number, body: Buffer) => {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(len, 0);
    h[4] = version;
    return Buffer.concat([h, body]);
  };

  it('round-trips a request through encodeFrame and FrameDecoder, split at every byte', () => {
    const bytes = encodeFrame({ op: 'alloc', id: 7, size: 4096, wait: true, timeoutMs: 10 });
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new FrameDecoder(requestParsers);
      const out = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
      expect(out).toEqual([{ kind: 'message', message: { op: 'alloc', id: 7, size: 4096, wait: true, timeoutMs: 10 } }]);
    }
  });

  it('carries physical addresses above 2^53 exactly (as decimal strings)', () => {
    const d = new FrameDecoder(requestParsers);
    const [r] = d.push(encodeFrame({ op: 'free', id: 1, phys: 2n ** 60n + 1n }));
    expect(r).toEqual({ kind: 'message', message: { op: 'free', id: 1, phys: 2n ** 60n + 1n } });
  });

  it('a frame longer than MAX_FRAME or of length 0 is fatal, and the decoder then ignores everything', () => {
    for (const len of [0, MAX_FRAME + 1, 0xffffffff]) {
      const d = new FrameDecoder(requestParsers);
      expect(d.push(frame(len, PROTOCOL_VERSION, Buffer.alloc(0)))).toEqual([{ kind: 'fatal', code: 'EMSGSIZE', message: expect.any(String) }]);
      expect(d.dead).toBe(true);
      expect(d.push(encodeFrame({ op: 'stats', id: 1 }))).toEqual([]);
    }
  });

  it('another protocol version is fatal (EPROTO)', () => {
    const d = new FrameDecoder(requestParsers);
    const [r] = d.push(frame(3, PROTOCOL_VERSION - 1, Buffer.from('{}')));
    expect(r).toMatchObject({ kind: 'fatal', code: 'EPROTO', message: expect.stringContaining(`version ${PROTOCOL_VERSION - 1} is not supported`) });
  });

  it('bad JSON, unknown ops, unknown fields and out-of-range values are invalid, not fatal, and keep their id when readable', () => {
    const d = new FrameDecoder(requestParsers);
    const body = Buffer.from('{nope');
    const out = d.push(Buffer.concat([
      frame(body.length + 1, PROTOCOL_VERSION, body),
      encodeFrame({ op: 'launch', id: 3 }),
      encodeFrame({ op: 'alloc', id: 4, size: 0 }),
      encodeFrame({ op: 'alloc', id: 5, size: 64, align: 3 }),
      encodeFrame({ op: 'alloc', id: 6, size: 64, extra: 1 }),
      encodeFrame({ op: 'free', id: 7, phys: '0x10' }),
      encodeFrame({ op: 'stats', id: 2 ** 32 }),
      encodeFrame([1, 2]),
      encodeFrame({ op: 'stats', id: 9 }),
    ]));
    expect(out.map((r) => (r.kind === 'invalid' ? [r.id, r.code] : r.kind))).toEqual([
      [0, 'EPROTO'], [3, 'EINVAL'], [4, 'EINVAL'], [5, 'EINVAL'], [6, 'EINVAL'], [7, 'EINVAL'], [0, 'EINVAL'], [0, 'EPROTO'], 'message',
    ]);
    expect(d.dead).toBe(false);
  });

  it('binary ALLOC and FREE round-trip through the decoder, split at every byte', () => {
    const bytes = Buffer.concat([
      encodeAlloc(7, 2 ** 40 + 3, 1 << 20, ALLOC_WAIT | ALLOC_TIMEOUT, 2 ** 31 - 1, 'ring.rx-0'),
      encodeAlloc(8, 1, 0, 0, 0, undefined),
      encodeFree(9, 2n ** 64n - 1n),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new FrameDecoder(requestParsers);
      expect([...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))]).toEqual([
        { kind: 'message', message: { op: 'alloc', id: 7, size: 2 ** 40 + 3, align: 1 << 20, wait: true, timeoutMs: 2 ** 31 - 1, name: 'ring.rx-0', binary: true } },
        { kind: 'message', message: { op: 'alloc', id: 8, size: 1, binary: true } },
        { kind: 'message', message: { op: 'free', id: 9, phys: 2n ** 64n - 1n, binary: true } },
      ]);
    }
  });

  it('binary BLOCK and DONE replies carry 64-bit addresses, the token and the name exactly', () => {
    const token = 'f'.repeat(8) + '0123456789abcdef0123456789abcdef'.slice(8);
    const d = new FrameDecoder(replyParsers);
    const out = d.push(Buffer.concat([
      encodeBlock(5, 2 ** 53 - 4096, 2n ** 63n + 5n, 2n ** 40n, 12345, token, 'tx'),
      encodeBlock(6, 4096, 4096n, 0n, 1, token, undefined),
      encodeDone(0xffffffff),
    ]));
    expect(out).toEqual([
      { kind: 'message', message: { id: 5, ok: true, phys: 2n ** 53n - 4096n, bus: 2n ** 63n + 5n, offset: 2n ** 40n, size: 12345, token, name: 'tx' } },
      { kind: 'message', message: { id: 6, ok: true, phys: 4096n, bus: 4096n, offset: 0n, size: 1, token } },
      { kind: 'message', message: { id: 0xffffffff, ok: true } },
    ]);
    // A truncated or unknown binary reply is fatal for the client: it cannot trust the stream.
    expect(new FrameDecoder(replyParsers).push(frame(8, PROTOCOL_VERSION, Buffer.from([0x81, 0, 0, 0, 1, 0, 0]))))
      .toEqual([{ kind: 'fatal', code: 'EPROTO', message: expect.stringContaining('malformed binary reply') }]);
  });

  it('malformed binary requests are invalid (EINVAL, id kept when readable), never fatal', () => {
    const alloc = (patch: (b: Buffer) => void, name?: string) => {
      const f = encodeAlloc(11, 4096, 0, 0, 0, name);
      patch(f.subarray(5));
      return f;
    };
    const cases: [Buffer, number, string][] = [
      [alloc((b) => b.writeDoubleLE(0, 8)), 11, 'size'],
      [alloc((b) => b.writeDoubleLE(1.5, 8)), 11, 'size'],
      [alloc((b) => b.writeDoubleLE(NaN, 8)), 11, 'size'],
      [alloc((b) => b.writeDoubleLE(2 ** 53, 8)), 11, 'size'],
      [alloc((b) => b.writeUInt32LE(3, 16)), 11, 'align'],
      [alloc((b) => b.writeUInt32LE(2 ** 31, 16)), 11, 'align'],
      [alloc((b) => b.writeUInt32LE(5, 20)), 11, 'timeoutMs'], // a timeout without its flag
      [alloc((b) => { b[1] = ALLOC_TIMEOUT; b.writeUInt32LE(2 ** 31, 20); }), 11, 'timeoutMs'],
      [alloc((b) => (b[1] = 0x80)), 11, 'flags'],
      [alloc((b) => (b[3] = 1)), 11, 'flags'],
      [alloc((b) => (b[24] = 0x2f), 'ab'), 11, 'name'], // '/'
      [alloc((b) => (b[2] = 3), 'ab'), 11, 'bytes'], // name length disagrees with the frame
      [alloc((b) => b.writeUInt32LE(0, 4)), 0, 'id'],
      [frame(5, PROTOCOL_VERSION, Buffer.from([0x01, 0, 0, 0])), 0, 'bytes'],
      [(() => { const f = encodeFree(12, 4096n); f[6] = 1; return f; })(), 12, 'reserved'],
      [frame(9, PROTOCOL_VERSION, Buffer.from([0x02, 0, 0, 0, 13, 0, 0, 0])), 13, 'bytes'],
    ];
    const d = new FrameDecoder(requestParsers);
    for (const [bytes, id, what] of cases) {
      expect(d.push(bytes)).toEqual([{ kind: 'invalid', id, code: 'EINVAL', message: expect.stringContaining(what) }]);
    }
    // Reply types and unknown types sent as requests.
    for (const t of [0x03, 0x81, 0x82, 0xff, 0x00]) {
      expect(d.push(frame(9, PROTOCOL_VERSION, Buffer.from([t, 0, 0, 0, 1, 0, 0, 0])))).toEqual([{ kind: 'invalid', id: 0, code: 'EPROTO', message: expect.stringContaining('unknown binary request type') }]);
    }
    expect(d.dead).toBe(false);
  });

  it('the decoder keeps its own copy of a partial frame: the caller may overwrite its read buffer (net onread)', () => {
    const frames = Buffer.concat([encodeFree(1, 4096n), encodeAlloc(2, 100, 0, 0, 0, 'keep.me'), encodeFrame({ op: 'stats', id: 3 })]);
    const shared = Buffer.alloc(frames.length);
    for (let cut = 1; cut < frames.length; cut++) {
      const d = new FrameDecoder(requestParsers);
      frames.copy(shared, 0, 0, cut);
      const out = d.push(shared.subarray(0, cut));
      shared.fill(0xee); // the next read lands in the same memory
      frames.copy(shared, 0, cut);
      out.push(...d.push(shared.subarray(0, frames.length - cut)));
      expect(out.map((r) => (r.kind === 'message' ? r.message.op : r.kind))).toEqual(['free', 'alloc', 'stats']);
      expect(out[1]).toMatchObject({ message: { name: 'keep.me', size: 100 } });
    }
  });

  it('Outbox: frames pushed in one turn leave in one write, after the turn; flush() writes at once; a destroyed socket gets nothing', async () => {
    const writes: Buffer[] = [];
    const sink = { destroyed: false, write: (b: Buffer) => writes.push(Buffer.from(b)) };
    const o = new Outbox(sink);
    o.push(encodeDone(1));
    o.push(encodeDone(2));
    await Promise.resolve().then(() => o.push(encodeDone(3))); // a microtask of the same turn
    expect(writes).toHaveLength(0);
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([Buffer.concat([encodeDone(1), encodeDone(2), encodeDone(3)])]);
    o.push(encodeDone(4));
    o.flush();
    expect(writes[1]).toEqual(encodeDone(4));
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(2); // the scheduled flush found nothing left
    sink.destroyed = true;
    o.push(encodeDone(5));
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(2);
  });

  it('PendingTable: hands out distinct ids, skips ids whose slot is taken, settles in any order, failAll rejects the rest', async () => {
    const t = new PendingTable();
    const settled = new Map<number, string>();
    const add = () => {
      const id: number = t.add(() => settled.set(id, 'ok'), (e) => settled.set(id, e.code));
      return id;
    };
    const first = Array.from({ length: 40 }, add); // grows past 16 and 32 slots
    expect(first).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(t.size).toBe(40);
    // Settle all but id 3, then cycle through many more ids: they must skip the slot 3 still holds.
    for (const id of first) if (id !== 3) expect(t.settle({ id, ok: true })).toBe(true);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const id = add();
      expect(id).not.toBe(3);
      expect(seen.has(id)).toBe(false);
      seen.add(id);
      expect(t.settle({ id, ok: true })).toBe(true);
    }
    expect(seen.has(131) || seen.has(259)).toBe(false); // 3 + 128k: the slot of id 3 in the 128-slot table
    expect(seen.has(130) && seen.has(132)).toBe(true);
    expect(t.settle({ id: 3, ok: false, code: 'EPERM', message: 'EPERM: no' })).toBe(true);
    expect(t.settle({ id: 3, ok: true })).toBe(false); // only once
    expect(t.settle({ id: 999_999, ok: true })).toBe(false); // no such request
    expect(t.settle({ id: 0, ok: false, code: 'EPROTO', message: 'x' })).toBe(false);
    const left = [add(), add()];
    t.remove(left[0]);
    t.failAll(new PhysmemError('ECONNRESET', 'gone'));
    expect(t.size).toBe(0);
    expect(settled.get(1)).toBe('ok');
    expect(settled.get(3)).toBe('EPERM');
    expect(settled.has(left[0])).toBe(false); // removed: never settled
    expect(settled.get(left[1])).toBe('ECONNRESET');
  });

  it('the decoder never throws on random bytes', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
      const d = new FrameDecoder(requestParsers);
      for (const c of chunks) d.push(Buffer.from(c));
    }), { numRuns: 2000 });
  });

  it('parseReply rejects replies without id/ok, and error replies without code', () => {
    expect(parseReply({ id: 1 }).kind).toBe('fatal');
    expect(parseReply({ id: 1, ok: false }).kind).toBe('fatal');
    expect(parseReply({ id: 1, ok: true, x: 1 }).kind).toBe('message');
  });

  it('encodeFrame refuses a message over MAX_FRAME', () => {
    expect(() => encodeFrame({ s: 'x'.repeat(MAX_FRAME) })).toThrow(RangeError);
  });
});

describe('daemon and clients', () => {
  let socket: string;
  let server: ServiceServer;
  beforeAll(async () => {
    ({ server, socket } = await serve({ size: 1 << 20 }));
  });

  it('openPool({ service }) connects; bytes cover exactly the block; blocks are page-aligned and zeroed', async () => {
    const pool = await openPool({ service: socket });
    pools.push(pool);
    expect(pool).toBeInstanceOf(ServicePool);
    const a = await pool.allocAsync(100);
    expect(a.bytes.byteLength).toBe(100);
    expect(a.bytes.buffer.byteLength).toBe(100);
    expect(a.phys % 4096n).toBe(0n);
    expect(a.bytes.every((b) => b === 0)).toBe(true);
    a.bytes.fill(0xab);
    const phys = a.phys;
    await a.free();
    expect(a.freed).toBe(true);
    expect(a.bytes.byteLength).toBe(0);
    // The same memory comes back zeroed: one program never sees another's data.
    const b = await pool.allocAsync(100);
    expect(b.phys).toBe(phys);
    expect(b.bytes.every((x) => x === 0)).toBe(true);
    await b.free();
    await rejectsWith(b.free(), 'EINVAL');
    server.check();
  });

  it('alloc() throws ENOTSUP and says to use allocAsync', async () => {
    const pool = await client(socket);
    throwsWith(() => pool.alloc(64), 'ENOTSUP', /allocAsync/);
  });

  it('two clients see the same memory: what one writes, the daemon file holds at the offset it returned', async () => {
    const pool = await client(socket);
    const a = await pool.allocAsync(8192);
    a.bytes.set([1, 2, 3], 8189);
    const fileBytes = readFileSync(pool.devicePath);
    const off = Number(a.phys - 0x1_0000_0000n);
    expect([...fileBytes.subarray(off + 8189, off + 8192)]).toEqual([1, 2, 3]);
    await a.free();
  });

  it('a client cannot free another client\'s block (EPERM); the block stays allocated and intact', async () => {
    const owner = await client(socket);
    const other = await client(socket);
    const a = await owner.allocAsync(4096);
    a.bytes.fill(0x5a);
    // Go around ServiceBuffer (which only frees its own) with a raw request of the same phys.
    const raw = await rawExchange(socket, [encodeFrame({ op: 'free', id: 1, phys: a.phys.toString() }), encodeFree(2, a.phys)]);
    expect(raw).toEqual([1, 2].map((id) => ({ id, ok: false, code: 'EPERM', message: expect.stringMatching(/belongs to another client/) })));
    expect(a.bytes.every((b) => b === 0x5a)).toBe(true);
    expect((await other.list()).some((b) => b.phys === a.phys.toString())).toBe(true); // same uid: may list everything
    server.check();
    await a.free();
    expect(logs.some((l) => /event=free-refused/.test(l))).toBe(true);
  });

  it('statsAsync reports clients, usage and waiting allocations', async () => {
    const pool = await client(socket);
    const before = await pool.statsAsync();
    const a = await pool.allocAsync(5000);
    const s = await pool.statsAsync();
    expect(s.used - before.used).toBe(8192); // page-rounded
    expect(s.clients).toBeGreaterThanOrEqual(1);
    expect(s.total).toBe(1 << 20);
    await a.free();
  });

  it('GFP_ATOMIC-like allocation fails at once with ENOMEM when nothing fits', async () => {
    const pool = await client(socket);
    const big = await pool.allocAsync(1 << 20);
    // Not queued: a queued request would never settle here (nothing frees), so the test would time out.
    const e = await rejectsWith(pool.allocAsync(4096), 'ENOMEM');
    expect((await pool.statsAsync()).waiting).toBe(0);
    expect(e.message).toMatch(/wait/);
    await big.free();
  });
});

describe('pipelined requests on one connection', () => {
  it('a free not yet confirmed is handled before the alloc sent after it: a full pool still serves that alloc', async () => {
    const { socket } = await serve({ size: 4 * 4096 });
    const pool = await client(socket);
    const rounds = 200;
    let blocks = await Promise.all([0, 1, 2, 3].map(() => pool.allocAsync(4096)));
    await rejectsWith(pool.allocAsync(4096), 'ENOMEM'); // full
    const confirmations: Promise<void>[] = [];
    for (let i = 0; i < rounds; i++) {
      // Free all four without waiting, then ask for four again (GFP_ATOMIC: no queueing).
      for (const b of blocks) confirmations.push(b.free());
      blocks = await Promise.all([0, 1, 2, 3].map(() => pool.allocAsync(4096)));
    }
    await Promise.all(confirmations);
    expect(confirmations).toHaveLength(4 * rounds);
    const s = await pool.statsAsync();
    expect(s).toMatchObject({ count: 4, free: 0 });
    await pool.check();
    for (const b of blocks) await b.free();
  });
});

describe('a client that sends but never reads', () => {
  it('is not read any further once about 1 MiB of its replies is unread; others are served; nothing is lost', async () => {
    const { server, socket } = await serve();
    // 300,000 stats requests (about 9 MB; their replies would be about 100 MB), written as fast
    // as the socket takes them, for at most 3 s; nothing is ever read.
    const flooder = `
      const s = require('node:net').connect(process.argv[1]);
      s.on('connect', async () => {
        const body = Buffer.from(JSON.stringify({ op: 'stats', id: 1 }));
        const f = Buffer.alloc(5 + body.length);
        f.writeUInt32BE(body.length + 1, 0);
        f[4] = ${PROTOCOL_VERSION};
        body.copy(f, 5);
        const batch = Buffer.concat(Array(100).fill(f));
        const end = Date.now() + 3000;
        let sent = 0;
        while (sent < 300000 && Date.now() < end) {
          sent += 100;
          if (!s.write(batch)) {
            const drained = await Promise.race([new Promise((r) => s.once('drain', () => r(true))), new Promise((r) => setTimeout(r, end - Date.now(), false))]);
            if (!drained) break;
          }
        }
        console.log(JSON.stringify({ ok: true, sent }));
      });`;
    const { child, result } = await startJsonChild(['-e', flooder, socket], 20_000);
    try {
      const sent = (result as unknown as { sent: number }).sent;
      expect(sent).toBeLessThan(100_000); // held back, not queued: ~1 MiB of replies plus the kernel's buffers
      // Everyone else is served meanwhile.
      const other = await client(socket);
      const b = await other.allocAsync(4096);
      await b.free();
      server.check();
    } finally {
      child.kill('SIGKILL');
    }
    // The flooder's disconnect is noticed (only `other` is left).
    expect(await eventually(() => server.clientCount, (c) => c === 1)).toBe(1);
  });

  it('a slow reader gets every reply, in order, once it reads: holding back loses and reorders nothing', async () => {
    const { socket } = await serve();
    const n = 30_000; // replies of ~350 bytes: ~10 MB, well past the 1 MiB hold-back
    const s = connect(socket);
    await new Promise((r) => s.once('connect', r));
    s.pause(); // not reading yet
    s.write(Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ op: 'stats', id: i + 1 }))));
    s.write(encodeFree(n + 1, 12345n)); // a binary request at the end: an error reply, still in order
    await sleep(300);
    const d = new FrameDecoder(replyParsers);
    const ids: number[] = [];
    let last: Reply | undefined;
    await new Promise<void>((resolve, reject) => {
      s.on('data', (c: Buffer) => {
        for (const r of d.push(c)) {
          if (r.kind !== 'message') return reject(new Error(r.message));
          ids.push(r.message.id);
          last = r.message;
          if (ids.length === n + 1) resolve();
        }
      });
      s.resume();
    });
    s.destroy();
    expect(ids).toEqual(Array.from({ length: n + 1 }, (_, i) => i + 1));
    expect(last).toMatchObject({ ok: false, code: 'EINVAL' });
  });
});

describe('waiting allocations', () => {
  it('are served first come, first served, across clients: a request that fits never overtakes the head', async () => {
    const { socket } = await serve({ size: 64 * 1024 });
    const holder = await client(socket);
    const held = [];
    for (let i = 0; i < 16; i++) held.push(await holder.allocAsync(4096));
    held.sort((x, y) => (x.phys < y.phys ? -1 : 1));
    const c1 = await client(socket);
    const c2 = await client(socket);
    const done: string[] = [];
    // Each wait is queued at the daemon before the next is sent, so the arrival order is w1, w2, w3.
    const waiting = () => eventually(() => holder.statsAsync(), (s) => s.waiting === n);
    let n = 1;
    const w1 = c1.allocAsync(8192, { wait: true }).then((b) => (done.push('w1'), b));
    expect((await waiting()).waiting).toBe(n++);
    const w2 = c2.allocAsync(4096, { wait: true }).then((b) => (done.push('w2'), b));
    expect((await waiting()).waiting).toBe(n++);
    const w3 = c1.allocAsync(4096, { wait: true }).then((b) => (done.push('w3'), b));
    expect((await waiting()).waiting).toBe(3);
    await held[0].free(); // 4 KiB free: w2 and w3 would fit, but w1 is first
    // A grant made by that free would reach c1 / c2 before the replies to these requests.
    await c1.statsAsync();
    await c2.statsAsync();
    expect(done).toEqual([]);
    await held[1].free(); // now 8 KiB contiguous: w1 (and nothing is left for w2)
    await w1;
    expect(done).toEqual(['w1']);
    await held[5].free(); // 4 KiB: w2 (before w3)
    await w2;
    expect(done).toEqual(['w1', 'w2']);
    await held[9].free();
    await w3;
    expect(done).toEqual(['w1', 'w2', 'w3']);
    for (const b of await Promise.all([w1, w2, w3])) await b.free();
  });

  it('a disconnecting client\'s wait at the head no longer holds back the queue, though its blocks are still in quarantine', async () => {
    // A quarantine no stall reaches: whatever is served below is not served by its end.
    const { socket } = await serve({ size: 5 * 4096, quarantineMs: 600_000 });
    const c = await client(socket);
    const held = await c.allocAsync(3 * 4096);
    const b = await client(socket);
    await b.allocAsync(4096); // B's own block: it goes to quarantine when B disconnects
    const head = b.allocAsync(2 * 4096, { wait: true }); // 1 page free: B waits at the head
    head.catch(() => undefined);
    expect((await eventually(() => c.statsAsync(), (s) => s.waiting === 1)).waiting).toBe(1);
    const d = await client(socket);
    const behind = d.allocAsync(4096, { wait: true }); // fits, but FIFO keeps it behind B
    expect((await eventually(() => d.statsAsync(), (s) => s.waiting === 2)).waiting).toBe(2);
    b.destroy(); // B crashes: its wait is dropped, its block is quarantined (for 10 minutes here)
    const got = await behind; // served without waiting for the quarantine to end
    expect(got.size).toBe(4096);
    expect(await d.statsAsync()).toMatchObject({ quarantinedBlocks: 1, waiting: 0 });
    await got.free();
    await held.free();
  });

  it('close() while this client waits: the block its own free makes room for is given back, never mapped; new requests get EBADF', async () => {
    const { server, socket } = await serve({ size: 2 * 4096, quarantineMs: 600_000 });
    const pool = await client(socket);
    await pool.allocAsync(2 * 4096); // everything
    const waiting = pool.allocAsync(4096, { wait: true });
    const outcome = waiting.then(() => 'mapped', (e: PhysmemError) => e.code);
    await eventually(() => server.stats().waiting, (w) => w === 1);
    const closing = pool.close(); // frees the big block, which lets the daemon grant the wait
    await rejectsWith(pool.allocAsync(4096), 'EBADF');
    await rejectsWith(pool.statsAsync(), 'EBADF');
    expect(pool.close()).toBe(closing); // one close, however often it is called
    await closing;
    expect(await outcome).toBe('EBADF');
    expect(pool.buffers()).toEqual([]);
    // Given back at once: nothing sits in quarantine (10 minutes here) for this client.
    expect(await eventually(() => server.stats(), (s) => s.count === 0)).toMatchObject({ count: 0, quarantinedBlocks: 0 });
  });

  it('time out with ETIMEDOUT', async () => {
    const { socket } = await serve({ size: 16 * 1024 });
    const pool = await client(socket);
    const all = await pool.allocAsync(16 * 1024);
    const t0 = Date.now();
    await rejectsWith(pool.allocAsync(4096, { wait: true, timeoutMs: 100 }), 'ETIMEDOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    expect((await pool.statsAsync()).waiting).toBe(0);
    await all.free();
  });

  it('are cancelled by an AbortSignal (ECANCELED), and a cancelled head no longer holds back the queue', async () => {
    const { socket } = await serve({ size: 16 * 1024 });
    const pool = await client(socket);
    const a = await pool.allocAsync(8 * 1024);
    const b = await pool.allocAsync(8 * 1024);
    const ac = new AbortController();
    const head = pool.allocAsync(16 * 1024, { wait: true, signal: ac.signal });
    const next = pool.allocAsync(4096, { wait: true });
    await sleep(30);
    await a.free(); // frees 8K: not enough for the head, enough for next, which must still wait (FIFO)
    await sleep(30);
    expect((await pool.statsAsync()).waiting).toBe(2);
    ac.abort();
    await rejectsWith(head, 'ECANCELED');
    const got = await next;
    expect(got.size).toBe(4096);
    await got.free();
    await b.free();
    await rejectsWith(pool.allocAsync(64, { wait: true, signal: AbortSignal.abort() }), 'ECANCELED');
  });
});

describe('disconnect and quarantine (in-process client)', () => {
  it('a closed connection\'s blocks stay allocated for the quarantine (one no stall reaches)', async () => {
    const { server, socket } = await serve({ size: 64 * 1024, quarantineMs: 600_000 });
    const a = await client(socket);
    await a.allocAsync(32 * 1024);
    const b = await client(socket);
    // Drop the connection without freeing (as a crash would).
    a.destroy();
    const s = await eventually(() => b.statsAsync(), (x) => x.clients === 1);
    expect(s.clients).toBe(1);
    expect(s.quarantinedBlocks).toBe(1);
    expect(s.used).toBe(32 * 1024);
    await rejectsWith(b.allocAsync(64 * 1024), 'ENOMEM');
    server.check();
  });

  it('when the quarantine ends, the blocks return, zeroed, and serve a waiting allocation', async () => {
    const { server, socket } = await serve({ size: 64 * 1024, quarantineMs: 50 });
    const a = await client(socket);
    (await a.allocAsync(32 * 1024)).bytes.fill(0xa5);
    const b = await client(socket);
    a.destroy();
    // The whole pool: only once a's block has returned (no timeout: the test's own is the safety net).
    const got = await b.allocAsync(64 * 1024, { wait: true });
    const s = await b.statsAsync();
    expect(s.quarantinedBlocks).toBe(0);
    expect(got.bytes.every((x) => x === 0)).toBe(true);
    await got.free();
    server.check();
  });
});

describe('socket permissions, directory and lock', () => {
  it('socket is 0600 in a 0700 directory; memory file 0600', async () => {
    const { socket } = await serve();
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(join(socket, '..')).mode & 0o777).toBe(0o700);
    expect(statSync(socket + '.mem').mode & 0o777).toBe(0o600);
  });

  it('with --group the socket is 0660 and owned by that group', async () => {
    const gid = process.getgid!();
    const { socket } = await serve({ group: String(gid) });
    const st = statSync(socket);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.gid).toBe(gid);
    expect(statSync(join(socket, '..')).mode & 0o777).toBe(0o750);
  });

  it('a second daemon for the same socket is refused with EBUSY; the first keeps serving', async () => {
    const { socket } = await serve();
    const e = await rejectsWith(startServer({ socket, log: () => undefined }), 'EBUSY');
    expect(e.message).toMatch(new RegExp(`pid ${process.pid}`));
    const pool = await client(socket);
    expect((await pool.statsAsync()).total).toBe(1 << 20);
  });

  it('a stale lock file (dead pid) is taken over', async () => {
    const socket = join(root, 'stale', 'pool.sock');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(root, 'stale'), { mode: 0o700 });
    writeFileSync(socket + '.lock', '2147483646\n', { mode: 0o600 });
    const server = await startServer({ socket, size: 1 << 16, log: () => undefined });
    servers.push(server);
    expect(readFileSync(socket + '.lock', 'utf8').trim()).toBe(String(process.pid));
  });

  it('refuses a socket directory writable by others (EPERM) and a symlinked one (ENOTDIR)', async () => {
    const { mkdirSync, chmodSync, symlinkSync } = await import('node:fs');
    const open = join(root, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    await rejectsWith(startServer({ socket: join(open, 's.sock'), log: () => undefined }), 'EPERM');
    // Group-writable too, even with --group: a member could replace the socket or the lock file.
    const shared = join(root, 'group-writable');
    mkdirSync(shared);
    chmodSync(shared, 0o770);
    await rejectsWith(startServer({ socket: join(shared, 's.sock'), group: String(process.getgid!()), log: () => undefined }), 'EPERM');
    chmodSync(shared, 0o750);
    const ok = await startServer({ socket: join(shared, 's.sock'), group: String(process.getgid!()), log: () => undefined });
    await ok.close();
    symlinkSync(open, join(root, 'link'));
    await rejectsWith(startServer({ socket: join(root, 'link', 's.sock'), log: () => undefined }), 'ENOTDIR');
  });

  it('close() removes the socket, memory file and lock file', async () => {
    const { server, socket } = await serve();
    await server.close();
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(socket + '.mem')).toBe(false);
    expect(existsSync(socket + '.lock')).toBe(false);
  });

  it('connecting to a socket where no daemon listens fails with a hint', async () => {
    const e = await rejectsWith(ServicePool.connect(join(root, 'nothing.sock')), 'ENOENT');
    expect(e.message).toMatch(/physmem serve/);
  });
});

describe('compat standalone mode', () => {
  it('allocateDmaAsync / freeDmaAsync return the original values (address or 0n; 0 or -EINVAL)', async () => {
    const { socket } = await serve({ size: 64 * 1024 });
    await compat.connectService(socket);
    const addr = await compat.allocateDmaAsync(5000, compat.GFP_ATOMIC);
    expect(addr).toBeGreaterThan(0n);
    expect(addr % 4096n).toBe(0n);
    expect(compat.serviceDmaBuffer(addr)!.bytes.byteLength).toBe(5000);
    expect(await compat.allocateDmaAsync(64 * 1024, compat.GFP_ATOMIC)).toBe(0n); // does not fit now
    expect(await compat.allocateDmaAsync(100, 12345)).toBe(0n);
    expect(await compat.allocateDmaAsync(0, compat.GFP_KERNEL)).toBe(0n);
    // GFP_KERNEL waits until the memory is freed.
    const waiting = compat.allocateDmaAsync(64 * 1024, compat.GFP_KERNEL);
    await sleep(30);
    expect(await compat.freeDmaAsync(addr)).toBe(0);
    const big = await waiting;
    expect(big).toBeGreaterThan(0n);
    expect(await compat.freeDmaAsync(12345n)).toBe(-22);
    expect(await compat.freeDmaAsync(big)).toBe(0);
    expect(await compat.freeDmaAsync(big)).toBe(-22); // double free
    await compat.disconnectService();
  });

  it('connects on first use to $PHYSMEM_SOCKET (no init call)', async () => {
    const { socket } = await serve({ size: 64 * 1024 });
    const old = process.env.PHYSMEM_SOCKET;
    process.env.PHYSMEM_SOCKET = socket;
    try {
      await compat.disconnectService();
      const a = await compat.allocateDmaAsync(4096, compat.GFP_ATOMIC);
      expect(a).toBeGreaterThan(0n);
      expect(await compat.freeDmaAsync(a)).toBe(0);
    } finally {
      if (old === undefined) delete process.env.PHYSMEM_SOCKET;
      else process.env.PHYSMEM_SOCKET = old;
      await compat.disconnectService();
    }
  });
});

// ---- fuzzing --------------------------------------------------------------

/** Send frames on a fresh connection, end it, and collect every reply until the daemon closes. */
function rawExchange(socket: string, chunks: Buffer[]): Promise<Reply[]> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    const d = new FrameDecoder(replyParsers);
    const replies: Reply[] = [];
    let bad: string | undefined;
    s.on('data', (c: Buffer) => {
      for (const r of d.push(c)) {
        if (r.kind === 'message') replies.push(r.message);
        else bad = r.message;
      }
    });
    s.on('error', reject);
    s.on('close', () => (bad ? reject(new Error(`daemon sent a malformed reply: ${bad}`)) : resolve(replies)));
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
      s.end();
    });
  });
}

describe('fuzzing the daemon (fast-check)', () => {
  it('answers >= 10,000 random and malformed frames with error replies; stays alive; state intact', async () => {
    const { server, socket } = await serve({ size: 4 << 20, quarantineMs: 0 });
    const victim = await client(socket);
    const kept = await victim.allocAsync(12345);
    kept.bytes.fill(0x77);
    const named = await victim.allocAsync(100, { name: 'victim' }); // fuzz connections may attach it, never free it for us
    named.bytes.fill(0x66);
    const victimPhys = kept.phys.toString();

    const header = (len: number, version: number) => {
      const h = Buffer.alloc(5);
      h.writeUInt32BE(len, 0);
      h[4] = version;
      return h;
    };
    const weird = fc.oneof(
      fc.integer(), fc.double(), fc.string({ maxLength: 8 }), fc.constant(null), fc.boolean(), fc.constant(-1), fc.constant(0),
      fc.constant(2 ** 32), fc.constant(2 ** 53), fc.constant(1.5), fc.constant('1'), fc.constant(victimPhys), fc.array(fc.integer(), { maxLength: 2 }),
    );
    type Gen = { bytes: Buffer; kind: 'framed' | 'fatal' };
    const framedBody = (body: Buffer): Gen => ({ bytes: Buffer.concat([header(body.length + 1, PROTOCOL_VERSION), body]), kind: 'framed' });
    const requestish = fc.record({
      op: fc.constantFrom('hello', 'alloc', 'lookup', 'free', 'cancel', 'stats', 'list', 'check', 'bogus', '', '__proto__', 'constructor'),
      id: fc.oneof(fc.integer({ min: 1, max: 1000 }), weird),
      size: weird,
      align: weird,
      wait: fc.constantFrom(false, 'yes', 1, null), // never true: a frame that waits would get no reply within the run
      timeoutMs: weird,
      phys: weird,
      target: weird,
      name: fc.oneof(weird, fc.constantFrom('victim', 'n1', 'n2', 'a'.repeat(65))),
      extra: weird,
    }, { requiredKeys: ['op'] }).map((o) => framedBody(Buffer.from(JSON.stringify(o))));
    // Binary ALLOC and FREE: valid-looking ones with odd fields, and random bytes after a binary type byte.
    const victimBig = BigInt(victimPhys);
    const binaryAlloc = fc.record({
      id: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      size: fc.oneof(fc.integer({ min: 1, max: 1 << 20 }), fc.double(), fc.constantFrom(0, 2 ** 53, 2 ** 40)),
      align: fc.oneof(fc.constantFrom(0, 4096, 3, 2 ** 31), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
      flags: fc.constantFrom(0, ALLOC_TIMEOUT, 4, 0x80), // never ALLOC_WAIT: a waiting frame would get no reply within the run
      timeoutMs: fc.constantFrom(0, 1, 2 ** 31),
      name: fc.option(fc.constantFrom('victim', 'b1', 'x/y', 'a'.repeat(64)), { nil: undefined }),
    }).map((o) => framedBody(encodeAlloc(o.id, o.size, o.align, o.flags, o.timeoutMs, o.name).subarray(5)));
    const binaryFree = fc.record({
      id: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      phys: fc.oneof(fc.constant(victimBig), fc.constant(BigInt(named.phys)), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constant(victimBig + 4096n)),
    }).map((o) => framedBody(encodeFree(o.id, o.phys).subarray(5)));
    const binaryJunk = fc.tuple(fc.constantFrom(0x01, 0x02, 0x81, 0x82, 0x00, 0xff), fc.uint8Array({ maxLength: 40 }))
      .map(([t, rest]) => framedBody(Buffer.from([t, ...rest])));
    const frameGen: fc.Arbitrary<Gen> = fc.oneof(
      { weight: 6, arbitrary: requestish },
      { weight: 2, arbitrary: binaryAlloc },
      { weight: 2, arbitrary: binaryFree },
      { weight: 2, arbitrary: binaryJunk },
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => framedBody(Buffer.from(JSON.stringify(v) ?? 'null'))) },
      { weight: 2, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => framedBody(Buffer.from(b))) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).filter((v) => v !== PROTOCOL_VERSION).map((v) => ({ bytes: Buffer.concat([header(3, v), Buffer.from('{}')]), kind: 'fatal' as const })) },
      { weight: 1, arbitrary: fc.constantFrom(0, MAX_FRAME + 1, 0x7fffffff, 0xffffffff).map((len) => ({ bytes: header(len, 1), kind: 'fatal' as const })) },
    );
    let frames = 0;
    await fc.assert(fc.asyncProperty(
      fc.array(frameGen, { minLength: 9, maxLength: 12 }),
      fc.option(fc.uint8Array({ minLength: 1, maxLength: 32 }), { nil: undefined }), // trailing garbage
      fc.nat(),
      async (gens, tail, cutSeed) => {
        frames += gens.length + (tail ? 1 : 0);
        const all = Buffer.concat([...gens.map((g) => g.bytes), ...(tail ? [Buffer.from(tail)] : [])]);
        const cut = all.length === 0 ? 0 : cutSeed % all.length; // split the write: partial frames must be reassembled
        const replies = await rawExchange(socket, [all.subarray(0, cut), all.subarray(cut)]);
        let expected = 0;
        let fatal = false;
        for (const g of gens) {
          expected++;
          if (g.kind === 'fatal') {
            fatal = true;
            break;
          }
        }
        if (fatal || !tail) expect(replies.length).toBe(expected);
        else expect(replies.length).toBeGreaterThanOrEqual(expected);
        if (fatal) expect(replies[expected - 1]).toMatchObject({ id: 0, ok: false });
        for (const r of replies) {
          if (!r.ok) expect(r.code).toMatch(/^E[A-Z]+$/);
          if (!r.ok && (r.code === 'EPROTO' || r.code === 'EMSGSIZE')) expect(r.message).toMatch(/docs\/service\.md \(Protocol\)/); // says what to do
          // Nobody frees the victim's block.
          if (r.ok && 'phys' in r) expect(String(r.phys)).not.toBe(victimPhys);
        }
      },
    ), { numRuns: 1200 });
    expect(frames).toBeGreaterThanOrEqual(10_000);
    // Quarantine 0: the fuzz connections' blocks return once their disconnects are seen (awaited, not slept on).
    await eventually(() => server.stats(), (x) => x.clients === 1 && x.count === 2 && x.quarantinedBlocks === 0);
    server.check();
    expect(kept.bytes.every((b) => b === 0x77)).toBe(true);
    expect(named.bytes.every((b) => b === 0x66)).toBe(true);
    const s = await victim.statsAsync();
    expect(s.count).toBe(2);
    expect(s.used).toBe(16384 + 4096);
    await named.free();
    expect(server.clientCount).toBe(1);
    // Still serving.
    const more = await victim.allocAsync(4096);
    await more.free();
    await kept.free();
  });
});

describe('physmem status (collectStatus / formatStatus)', () => {
  it('reports clients, their blocks, quarantine, free space and a map that tiles the pool exactly', async () => {
    const { socket } = await serve({ size: 64 * 1024, quarantineMs: 600_000 }); // no stall ends it while we look
    const a = await client(socket);
    const b = await client(socket);
    const a1 = await a.allocAsync(5000); // 2 pages
    const b1 = await b.allocAsync(4096);
    const gone = await client(socket);
    await gone.allocAsync(100);
    gone.destroy();
    const r = await eventually(() => collectStatus(socket), (x) => x.quarantine.blocks !== 0);
    expect(r.backend).toBe('fake');
    expect(r.total).toBe(64 * 1024);
    expect(r.quarantine).toEqual({ blocks: 1, bytes: 100 });
    expect(r.clients.map((c) => [c.client, c.blocks, c.bytes, c.quarantined])).toEqual([
      [a.clientId, 1, 5000, false], [b.clientId, 1, 4096, false], [gone.clientId, 1, 100, true],
    ]);
    // The map covers the pool exactly, in order, without overlap.
    let at = 0x1_0000_0000n;
    for (const m of r.map) {
      expect(BigInt(m.phys)).toBe(at);
      at += BigInt(m.size);
    }
    expect(at).toBe(0x1_0000_0000n + 65536n);
    const blocks = r.map.filter((m) => m.state !== 'free');
    expect(blocks).toHaveLength(3);
    expect(blocks.find((m) => m.phys === '0x' + a1.phys.toString(16))).toMatchObject({ size: 8192, state: 'used', client: a.clientId });
    expect(blocks.find((m) => m.phys === '0x' + b1.phys.toString(16))).toMatchObject({ size: 4096, state: 'used', client: b.clientId });
    expect(blocks.find((m) => m.state === 'quarantined')).toMatchObject({ size: 4096, client: gone.clientId });
    expect(r.map.filter((m) => m.state === 'free').reduce((s, m) => s + m.size, 0)).toBe(r.free);
    const text = formatStatus(r);
    expect(text).toMatch(/quarantine 1 block\(s\) \/ 100 bytes/);
    expect(text).toMatch(new RegExp(`client ${b.clientId} pid ${process.pid}: 1 block\\(s\\), 4096 bytes`));
    expect(text).toMatch(/quarantined client \d+ pid \d+/);
    // The picture: one detail rectangle per map entry, in the same states, with its separator filling the plot width (944 px) once.
    const svg = renderStatusSvg(r);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    const rects = [...svg.matchAll(/<rect data-entry="\d+" data-state="(\w+)" x="(\d+)" y="\d+" width="(\d+)"/g)];
    expect(rects.map((m) => m[1])).toEqual(r.map.map((m) => m.state));
    expect(rects.reduce((s, m) => s + Number(m[3]) + 1, 0)).toBe(944);
    expect(svg).toMatch(new RegExp(`client ${a.clientId} pid ${process.pid}: 1 block\\(s\\), 5000 bytes`));
    expect(svg).toMatch(/fragmentation \d+\.\d%/);
    await a1.free();
    await b1.free();
  });
});

const distClient = fileURLToPath(new URL('../dist/lib/service/client.js', import.meta.url));

describe.skipIf(process.getuid?.() !== 0 || !existsSync(distClient))('another user (uid nobody, through --group; needs root and the build)', () => {
  it('connects through the group, and list shows it only its own blocks; root sees everyone\'s', async () => {
    // nobody may pass through to the socket directory (0750, group nogroup); removed with root.
    chmodSync(root, 0o711);
    const shared = mkdtempSync(join(root, 'nobody-'));
    chmodSync(shared, 0o711);
    const socket = join(shared, 'run', 'pool.sock');
    const server = await startServer({ socket, size: 1 << 20, quarantineMs: 0, group: '65534', log: () => undefined });
    servers.push(server);
    const rootPool = await client(socket);
    const a = await rootPool.allocAsync(4096);
    const script = `
      const { ServicePool } = await import(${JSON.stringify(distClient)});
      const pool = await ServicePool.connect(process.argv[1]);
      const b = await pool.allocAsync(8192);
      const list = await pool.list();
      console.log(JSON.stringify({ ok: true, uid: process.getuid(), mine: b.phys.toString(), list }));
      await new Promise((r) => setTimeout(r, 60000)); // hold it until killed
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, socket], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const out = await new Promise<string>((resolve, reject) => {
        let buf = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('\n')) resolve(buf);
        });
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.once('exit', (code) => reject(new Error(`child exited ${code}: ${err}`)));
      });
      const r = JSON.parse(out) as { uid: number; mine: string; list: { phys: string; pid: number }[] };
      expect(r.uid).toBe(65534);
      expect(r.list.map((b) => b.phys)).toEqual([r.mine]); // not root's block
      expect(r.list[0].pid).toBe(child.pid);
      const all = (await rootPool.list()).map((b) => b.phys);
      expect(all).toContain(a.phys.toString());
      expect(all).toContain(r.mine);
    } finally {
      child.kill('SIGKILL');
    }
    // With the memory file closed to the group, that user can no longer map blocks,
    // but `physmem status` (mapBlocks: false) still works: it needs the socket only.
    chmodSync(socket + '.mem', 0o600);
    const statusScript = `
      const { ServicePool } = await import(${JSON.stringify(distClient)});
      const { collectStatus } = await import(${JSON.stringify(distClient.replace(/client\.js$/, 'status.js'))});
      const report = await collectStatus(process.argv[1]);
      const err = await ServicePool.connect(process.argv[1]).then(() => 'connected', (e) => e.code);
      console.log(JSON.stringify({ total: report.total, err }));
    `;
    // Asynchronously: the daemon runs in this process and must go on serving meanwhile.
    const st = spawn(process.execPath, ['--input-type=module', '-e', statusScript, socket], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] });
    let stOut = '';
    let stErr = '';
    st.stdout.on('data', (d: Buffer) => (stOut += d.toString()));
    st.stderr.on('data', (d: Buffer) => (stErr += d.toString()));
    const stTimer = setTimeout(() => st.kill('SIGKILL'), 15_000);
    const stCode = await new Promise<number | null>((r) => st.once('close', (code) => r(code)));
    clearTimeout(stTimer);
    expect(stCode, stErr).toBe(0);
    expect(JSON.parse(stOut)).toEqual({ total: 1 << 20, err: 'EACCES' });
    const statsOnly = await ServicePool.connect(socket, { mapBlocks: false });
    pools.push(statsOnly);
    await rejectsWith(statsOnly.allocAsync(4096), 'ENOTSUP');
    expect((await statsOnly.statsAsync()).total).toBe(1 << 20);
    await a.free();
  });
});

describe('list replies', () => {
  it('stay inside one frame with 600 named buffers of 64-character names: cut, and saying so', async () => {
    const { socket } = await serve({ size: 700 * 4096 });
    const pool = await client(socket);
    const bufs = [];
    for (let i = 0; i < 600; i++) bufs.push(await pool.allocAsync(1, { name: `n${String(i).padStart(3, '0')}`.padEnd(64, 'x') }));
    const { blocks, truncated } = await pool.listBlocks();
    expect(truncated).toBe(true);
    expect(blocks.length).toBeGreaterThan(200);
    expect(blocks.length).toBeLessThan(600);
    expect(blocks.every((b) => b.name?.length === 64)).toBe(true);
    const report = await collectStatus(socket);
    expect(report.truncated).toBe(true);
    expect(formatStatus(report)).toMatch(/block list cut/);
    for (const b of bufs) await b.free();
    expect((await pool.listBlocks()).truncated).toBe(false);
  });
});

describe('named buffers', () => {
  it('alloc({ name }) creates a buffer others attach with lookup(name); reference counted', async () => {
    const { server, socket } = await serve({ size: 64 * 1024 });
    const a = await client(socket);
    const b = await client(socket);
    const mine = await a.allocAsync(6000, { name: 'ring0' });
    expect(mine.name).toBe('ring0');
    mine.bytes.set([9, 8, 7], 5997);
    const theirs = await b.lookup('ring0');
    expect(theirs.phys).toBe(mine.phys);
    expect(theirs.size).toBe(6000);
    expect([...theirs.bytes.subarray(5997)]).toEqual([9, 8, 7]); // the same memory
    await rejectsWith(b.lookup('ring0'), 'EEXIST'); // one hold per client
    await rejectsWith(b.lookup('nope'), 'ENOENT');
    await rejectsWith(a.allocAsync(64, { name: 'ring0' }), 'EEXIST');
    await rejectsWith(a.allocAsync(64, { name: 'bad name!' }), 'EINVAL');
    server.check();
    await mine.free(); // b still holds it
    expect((await b.statsAsync()).count).toBe(1);
    expect(theirs.bytes[5999]).toBe(7);
    const c = await client(socket);
    const third = await c.lookup('ring0'); // still attachable while held
    await third.free();
    await theirs.free(); // last holder: freed, name gone
    expect((await b.statsAsync()).count).toBe(0);
    await rejectsWith(b.lookup('ring0'), 'ENOENT');
    server.check();
  });

  it('a holder that is not the creator cannot be bypassed: a non-holder gets EPERM', async () => {
    const { socket } = await serve({ size: 64 * 1024 });
    const a = await client(socket);
    const shared = await a.allocAsync(4096, { name: 'shared' });
    const raw = await rawExchange(socket, [encodeFrame({ op: 'free', id: 1, phys: shared.phys.toString() })]);
    expect(raw).toEqual([{ id: 1, ok: false, code: 'EPERM', message: expect.any(String) }]);
    await shared.free();
  });

  it('survives its creator\'s disconnect while others hold it; the last holder\'s disconnect quarantines it', async () => {
    const { server, socket } = await serve({ size: 64 * 1024, quarantineMs: 600_000 }); // no stall ends it while we look
    const a = await client(socket);
    const b = await client(socket);
    const watcher = await client(socket);
    await a.allocAsync(4096, { name: 'frame' });
    const held = await b.lookup('frame');
    held.bytes[0] = 42;
    a.destroy();
    let s = await eventually(() => watcher.statsAsync(), (x) => x.clients === 2);
    expect(s.clients).toBe(2);
    expect(s.quarantinedBlocks).toBe(0); // b still holds it
    expect(s.count).toBe(1);
    expect(held.bytes[0]).toBe(42);
    server.check();
    b.destroy();
    s = await eventually(() => watcher.statsAsync(), (x) => x.clients === 1);
    expect(s.clients).toBe(1);
    expect(s.quarantinedBlocks).toBe(1);
    await rejectsWith(watcher.lookup('frame'), 'ENOENT'); // no new holders during the quarantine
    server.check();
  });

  it('a named block quarantined by its last holder\'s disconnect returns when the quarantine ends', async () => {
    const { server, socket } = await serve({ size: 64 * 1024, quarantineMs: 50 });
    const a = await client(socket);
    const b = await client(socket);
    const watcher = await client(socket);
    await a.allocAsync(4096, { name: 'frame' });
    await b.lookup('frame');
    a.destroy();
    b.destroy();
    const s = await eventually(() => watcher.statsAsync(), (x) => x.clients === 1 && x.count === 0);
    expect(s).toMatchObject({ clients: 1, count: 0, quarantinedBlocks: 0 });
    await rejectsWith(watcher.lookup('frame'), 'ENOENT');
    server.check();
  });
});
