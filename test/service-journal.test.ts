/**
 * The daemon's journal (`--state-dir`): unit tests of the file format and of
 * restore/reclaim in this process, and a kill -9 of a daemon child process
 * with a client child holding blocks.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { sleep } from './helpers/wait.js';
import { rejectsWith } from './helpers/errors.js';
import { startLineChild, type LineChild } from './helpers/child.js';
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, type ServiceServer } from '../lib/service/server.js';
import { ServicePool } from '../lib/service/client.js';
import { parseRequest } from '../lib/service/protocol.js';
import { readJournal, writeJournal, newToken, TOKEN_PATTERN, type JournalData } from '../lib/service/journal.js';
import { PhysmemError } from '../lib/errors.js';
import { collectStatus, formatStatus, renderStatusSvg } from '../lib/service/status.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const viteNode = join(repo, 'node_modules/vite-node/vite-node.mjs');
const root = mkdtempSync(join(tmpdir(), 'physmem-journal-'));
const children = new Set<ChildProcess>();
const servers: ServiceServer[] = [];
const pools: ServicePool[] = [];
const quiet = () => undefined;

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const p of pools) await p.close().catch(() => undefined);
  for (const s of servers) await s.close();
  rmSync(root, { recursive: true, force: true });
});


function dirs(name: string): { socket: string; stateDir: string } {
  const d = join(root, name);
  mkdirSync(d, { mode: 0o700 });
  return { socket: join(d, 'run', 'pool.sock'), stateDir: join(d, 'state') };
}

describe('journal file', () => {
  it('round-trips, and a missing file reads as undefined', () => {
    const path = join(root, 'rt.json');
    expect(readJournal(path)).toBeUndefined();
    const data: JournalData = {
      version: 1,
      backend: 'fake',
      total: 1 << 20,
      blocks: [
        { phys: '4096', size: 100, token: newToken(), pid: 12 },
        { phys: '8192', size: 5000, token: newToken(), pid: 13, name: 'ring.0', quarantined: true },
      ],
    };
    writeJournal(path, data);
    expect(readJournal(path)).toEqual(data);
    expect(existsSync(path + '.tmp')).toBe(false);
    expect(newToken()).toMatch(TOKEN_PATTERN);
    expect(newToken()).not.toBe(newToken());
  });

  it('a corrupt or invalid journal is refused with EIO naming the file', async () => {
    const path = join(root, 'bad.json');
    const t = newToken();
    const bad = [
      '{"version":1,"backend":"fake","total":4096,"blocks":[',
      '[]',
      '{"version":2,"backend":"fake","total":4096,"blocks":[]}',
      `{"version":1,"backend":"fake","total":4096,"blocks":[{"phys":"x","size":1,"token":"${t}","pid":1}]}`,
      `{"version":1,"backend":"fake","total":4096,"blocks":[{"phys":"4096","size":0,"token":"${t}","pid":1}]}`,
      '{"version":1,"backend":"fake","total":4096,"blocks":[{"phys":"4096","size":1,"token":"abc","pid":1}]}',
      `{"version":1,"backend":"fake","total":4096,"blocks":[{"phys":"4096","size":1,"token":"${t}","pid":1},{"phys":"8192","size":1,"token":"${t}","pid":1}]}`,
    ];
    for (const text of bad) {
      writeFileSync(path, text);
      let e: unknown;
      try {
        readJournal(path);
      } catch (x) {
        e = x;
      }
      expect(e).toBeInstanceOf(PhysmemError);
      expect((e as PhysmemError).code).toBe('EIO');
      expect((e as PhysmemError).message).toContain(path);
    }
    // And the daemon refuses to start on it, rather than forget its blocks.
    const { socket, stateDir } = dirs('corrupt');
    mkdirSync(stateDir, { mode: 0o700 });
    writeFileSync(join(stateDir, 'journal.json'), '{"version":1,');
    const e = await rejectsWith(startServer({ socket, stateDir, size: 1 << 20, log: quiet }), 'EIO');
    expect(e.message).toMatch(/journal.json.*move it away/s);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(socket + '.lock')).toBe(false);
  });

  it('reclaim requests are validated: 1 to 128 distinct 32-hex-digit tokens, nothing else', () => {
    const t = newToken();
    expect(parseRequest({ op: 'reclaim', id: 1, tokens: [t] })).toEqual({ kind: 'message', message: { op: 'reclaim', id: 1, tokens: [t] } });
    for (const tokens of [[], [t, t], ['ABC'], [t.toUpperCase()], [1], 'x', Array.from({ length: 129 }, newToken), undefined]) {
      expect(parseRequest({ op: 'reclaim', id: 1, tokens })).toMatchObject({ kind: 'invalid', code: 'EINVAL' });
    }
    expect(parseRequest({ op: 'reclaim', id: 1, tokens: [t], extra: 1 })).toMatchObject({ kind: 'invalid', code: 'EINVAL' });
  });
});

describe('group commit: one journal write for the blocks granted in one turn', () => {
  it('every reply arrives after the journal on disk holds its block, with 64 allocations in flight', async () => {
    const { socket, stateDir } = dirs('group');
    const server = await startServer({ socket, stateDir, size: 1 << 20, log: quiet });
    servers.push(server);
    const pool = await ServicePool.connect(socket);
    pools.push(pool);
    const onDisk = () => new Set((JSON.parse(readFileSync(join(stateDir, 'journal.json'), 'utf8')) as JournalData).blocks.map((x) => x.token));
    const seen: boolean[] = [];
    const bufs = await Promise.all(Array.from({ length: 64 }, (_, i) => pool.allocAsync(4096, i % 8 === 0 ? { name: `g${i}` } : {}).then((b) => {
      seen.push(onDisk().has(b.token!)); // read as the reply arrives
      return b;
    })));
    expect(seen).toEqual(bufs.map(() => true));
    for (const b of bufs) await b.free();
    server.check();
  });

  it('a failed journal write takes back every block of the batch (EIO to each, lookups of it too); nothing leaks; later writes work', async () => {
    const { socket, stateDir } = dirs('fail');
    const logs: string[] = [];
    const server = await startServer({ socket, stateDir, size: 1 << 20, log: (l) => logs.push(l) });
    servers.push(server);
    const pool = await ServicePool.connect(socket);
    pools.push(pool);
    const other = await ServicePool.connect(socket);
    pools.push(other);
    const kept = await pool.allocAsync(4096);
    mkdirSync(join(stateDir, 'journal.json.tmp')); // the next journal write fails (EISDIR)
    const allocs = Promise.allSettled([pool.allocAsync(100, { name: 'doomed' }), pool.allocAsync(8192)]);
    await sleep(0); // let the alloc frames go, so the lookup lands in the same batch when possible
    const looked = Promise.allSettled([other.lookup('doomed')]);
    const results = [...(await allocs), ...(await looked)];
    expect((results[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'EIO', message: expect.stringMatching(/cannot write the journal/) });
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'EIO' });
    expect(results[2].status).toBe('rejected'); // EIO (same batch) or ENOENT (after it was taken back)
    expect(['EIO', 'ENOENT']).toContain(((results[2] as PromiseRejectedResult).reason as PhysmemError).code);
    expect(logs.some((l) => /event=journal-error/.test(l))).toBe(true);
    server.check();
    expect(server.stats()).toMatchObject({ count: 1, used: 4096 }); // only `kept`
    rmSync(join(stateDir, 'journal.json.tmp'), { recursive: true });
    const again = await pool.allocAsync(100, { name: 'doomed' });
    expect(again.bytes.every((v) => v === 0)).toBe(true);
    await again.free();
    await kept.free();
    server.check();
  });
});

describe('restart with a journal (in process)', () => {
  it('restores every block, gives each back for its token once, releases the rest after the grace period', async () => {
    const { socket, stateDir } = dirs('inproc');
    const s1 = await startServer({ socket, stateDir, size: 256 * 1024, log: quiet });
    const p1 = await ServicePool.connect(socket);
    const a = await p1.allocAsync(5000);
    const b = await p1.allocAsync(100);
    const n = await p1.allocAsync(4096, { name: 'shared' });
    const gone = await p1.allocAsync(64);
    await gone.free();
    a.bytes.fill(0xa5);
    n.bytes.fill(0x5a);
    for (const x of [a, b, n]) expect(x.token).toMatch(/^[0-9a-f]{32}$/);
    // Every granted block was journaled before its reply; the free reaches the journal within RELEASE_WRITE_MS (20 ms).
    const journaled = () => (JSON.parse(readFileSync(join(stateDir, 'journal.json'), 'utf8')) as JournalData).blocks.map((x) => x.token);
    for (const x of [a, b, n]) expect(journaled()).toContain(x.token);
    for (let i = 0; i < 50 && journaled().includes(gone.token!); i++) await sleep(10);
    expect(journaled()).toHaveLength(3);
    // close() with a journal: like a crash, the blocks stay journaled and the memory file stays.
    p1.destroy();
    await s1.close();
    expect(existsSync(socket + '.mem')).toBe(true);

    // A grace period no stall of a loaded machine reaches: while it runs, b stays restored.
    const s2 = await startServer({ socket, stateDir, size: 256 * 1024, graceMs: 600_000, log: quiet });
    servers.push(s2);
    s2.check();
    expect(s2.stats()).toMatchObject({ count: 3, orphanBlocks: 3 });
    expect(s2.blocks().every((x) => x.orphan === true)).toBe(true);
    const p2 = await ServicePool.connect(socket);
    pools.push(p2);
    // A name held by a restored block is taken.
    await rejectsWith(p2.allocAsync(10, { name: 'shared' }), 'EEXIST');
    await rejectsWith(p2.reclaim([a.token!, newToken()]), 'ENOENT'); // all or none
    expect(s2.stats().orphanBlocks).toBe(3);
    const [a2, n2] = await p2.reclaim([a.token!, n.token!]);
    expect(a2.phys).toBe(a.phys);
    expect(a2.size).toBe(5000);
    expect(a2.token).toBe(a.token);
    expect(a2.bytes.every((v) => v === 0xa5)).toBe(true);
    expect(n2.name).toBe('shared');
    expect(n2.bytes.every((v) => v === 0x5a)).toBe(true);
    await rejectsWith(p2.reclaim([a.token!]), 'ENOENT'); // once
    s2.check();
    // New allocations never land on a restored block.
    const fresh = [];
    for (;;) {
      const x = await p2.allocAsync(4096).catch(() => undefined);
      if (x === undefined) break;
      fresh.push(x);
    }
    for (const x of fresh) for (const r of [a, b, n]) expect(x.phys + 4096n <= r.phys || r.phys + BigInt(Math.max(r.size, 4096)) <= x.phys).toBe(true);
    s2.check();
    for (const x of fresh) await x.free();
    expect(s2.stats()).toMatchObject({ count: 3, orphanBlocks: 1 }); // b, not reclaimed, still awaits its owner
    const lookup = await ServicePool.connect(socket);
    pools.push(lookup);
    const n3 = await lookup.lookup('shared');
    expect(n3.phys).toBe(n.phys);
    s2.check();

    // Once the grace period ends, what nobody reclaimed is released: a daemon
    // restarted with a short one releases all three (the release is awaited by polling).
    p2.destroy();
    lookup.destroy();
    await s2.close();
    const s3 = await startServer({ socket, stateDir, size: 256 * 1024, graceMs: 50, log: quiet });
    servers.push(s3);
    for (let i = 0; i < 2000 && s3.stats().orphanBlocks !== 0; i++) await sleep(25);
    expect(s3.stats()).toMatchObject({ count: 0, orphanBlocks: 0 });
    const p3 = await ServicePool.connect(socket);
    pools.push(p3);
    await rejectsWith(p3.reclaim([b.token!]), 'ENOENT');
    s3.check();
  });

  it('refuses a journal that does not match the memory (other size)', async () => {
    const { socket, stateDir } = dirs('mismatch');
    const s1 = await startServer({ socket, stateDir, size: 256 * 1024, log: quiet });
    const p = await ServicePool.connect(socket);
    await p.allocAsync(100);
    p.destroy();
    await s1.close();
    const e = await rejectsWith(startServer({ socket, stateDir, size: 512 * 1024, log: quiet }), 'EIO');
    expect(e.message).toMatch(/same --size/);
    expect(existsSync(socket + '.mem')).toBe(true); // the blocks' content is not thrown away
  });
});

/** Start a child; resolves with it and a function returning its next stdout line. */
function start(path: string, args: string[]): LineChild {
  return startLineChild([viteNode, path, ...args], { cwd: repo, track: children });
}

describe('kill -9 of the daemon (child processes)', () => {
  it('restart: every live block is still allocated, clients reclaim theirs with their tokens, nothing is handed out twice', async () => {
    const { socket, stateDir } = dirs('kill9');
    const daemon = join(root, 'daemon.ts');
    writeFileSync(daemon, `
import { runServe } from ${JSON.stringify(join(repo, 'lib/service/cli.ts'))};
const [socket, stateDir, graceMs] = process.argv.slice(2);
try {
  await runServe({ socket, backend: 'fake', size: 512 * 1024, stateDir, graceMs: Number(graceMs), quarantineMs: 100 });
} catch (e) {
  process.stderr.write('physmem: ' + e.message + '\\n');
  process.exitCode = 1;
}
`);
    const holder = join(root, 'holder.ts');
    writeFileSync(holder, `
import { ServicePool } from ${JSON.stringify(join(repo, 'lib/service/client.ts'))};
const [socket, count] = process.argv.slice(2);
const pool = await ServicePool.connect(socket);
const blocks = [];
for (let i = 0; i < Number(count); i++) {
  const b = await pool.allocAsync(3000 + i * 5000);
  b.bytes.fill(i + 1);
  blocks.push({ phys: b.phys.toString(), size: b.size, token: b.token, fill: i + 1 });
}
console.log(JSON.stringify(blocks));
// Keep working until the daemon dies: allocate, write and free other blocks without pause.
try {
  for (let n = 1; ; n++) {
    const b = await pool.allocAsync(4096);
    b.bytes.fill(9);
    await b.free();
    if (n === 300) console.log('churning');
  }
} catch {
  setInterval(() => {}, 1000); // the daemon is gone: wait to be killed
}
`);
    const waitSocket = async () => {
      for (let i = 0; i < 400 && !existsSync(socket); i++) await sleep(25);
      expect(existsSync(socket)).toBe(true);
    };
    const d1 = start(daemon, [socket, stateDir, '3000']);
    await waitSocket();
    const h = start(holder, [socket, '6']);
    const held = JSON.parse(await h.line()) as { phys: string; size: number; token: string; fill: number }[];
    expect(held).toHaveLength(6);
    expect(await h.line()).toBe('churning'); // the daemon dies mid-work, between any two requests
    d1.child.kill('SIGKILL');
    await d1.exit;
    h.child.kill('SIGKILL');
    await h.exit;
    expect(existsSync(socket)).toBe(true); // a dead daemon's leftovers
    // The restart takes over the stale lock and socket, and keeps the journal's blocks and memory.
    const d2 = start(daemon, [socket, stateDir, '3000']);
    for (let i = 0; i < 400 && !/event=start/.test(d2.stderr()); i++) await sleep(25);
    // The 6 held blocks, plus the churn block if the kill came between its journal entry and its free.
    const restored = Number(/event=restore blocks=(\d+) /.exec(d2.stderr())?.[1]);
    expect(restored === 6 || restored === 7).toBe(true);
    const pool = await ServicePool.connect(socket);
    pools.push(pool);
    expect(pool.daemonPid).toBe(d2.child.pid);
    const st = await pool.statsAsync();
    expect(st).toMatchObject({ count: restored, orphanBlocks: restored });
    await pool.check();
    // physmem status shows them as restored and awaiting reclaim, not as some client's.
    const report = await collectStatus(socket);
    expect(report.restored).toEqual({ blocks: restored, bytes: held.reduce((n, b) => n + b.size, 0) + (restored - 6) * 4096 });
    const restoredPhys = report.map.filter((m) => m.state === 'restored').map((m) => m.phys);
    for (const b of held) expect(restoredPhys).toContain('0x' + BigInt(b.phys).toString(16)); // status gives addresses in hex
    expect(report.clients).toEqual([]);
    const text = formatStatus(report);
    expect(text).toMatch(new RegExp(`restored after a restart and not yet reclaimed ${restored} block\\(s\\)`));
    expect(text.match(/restored, awaiting reclaim \(was pid \d+\)/g)).toHaveLength(restored);
    expect(renderStatusSvg(report).match(/data-state="restored"/g)).toHaveLength(restored);
    // Allocate everything else: nothing may overlap a live block.
    const fresh = [];
    for (;;) {
      const x = await pool.allocAsync(4096).catch(() => undefined);
      if (x === undefined) break;
      fresh.push(x);
    }
    for (const x of fresh) {
      for (const b of held) {
        const lo = BigInt(b.phys);
        expect(x.phys + 4096n <= lo || lo + BigInt(b.size) <= x.phys).toBe(true);
      }
    }
    await pool.check();
    // Reclaim five of six with their tokens: same addresses, content intact.
    const mine = await pool.reclaim(held.slice(0, 5).map((b) => b.token));
    for (const [i, buf] of mine.entries()) {
      expect(buf.phys.toString()).toBe(held[i].phys);
      expect(buf.size).toBe(held[i].size);
      expect(buf.bytes.every((v) => v === held[i].fill)).toBe(true);
    }
    await pool.check();
    expect((await collectStatus(socket)).restored.blocks).toBe(restored - 5);
    // The sixth (and a churn block) was not reclaimed: released after the grace period, and then reusable.
    const before = (await pool.statsAsync()).count;
    for (let i = 0; i < 400 && (await pool.statsAsync()).orphanBlocks !== 0; i++) await sleep(25);
    const after = await pool.statsAsync();
    expect(after.orphanBlocks).toBe(0);
    expect(after.count).toBe(before - (restored - 5));
    await rejectsWith(pool.reclaim([held[5].token]), 'ENOENT');
    const reused = await pool.allocAsync(held[5].size);
    expect(reused.bytes.every((v) => v === 0)).toBe(true); // zeroed before reuse
    await pool.check();
    for (const [i, buf] of mine.entries()) expect(buf.bytes.every((v) => v === held[i].fill)).toBe(true); // untouched by the reuse
    d2.child.kill('SIGKILL');
    await d2.exit;
  });
});
