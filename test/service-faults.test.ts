/**
 * Fault injection against the daemon (issue 12): a state directory on a full
 * file system, journals cut short or corrupted, kill -9 at every step of a
 * journal write, two daemons on one state directory, a socket path that holds
 * something else, one client queueing tens of thousands of waits, frees nobody
 * awaits when the daemon dies, options the daemon cannot honour.
 *
 * Each asserts that every acknowledged block survives (or was never
 * acknowledged), that nothing is handed out twice, and that a refused start
 * leaves every file as it was.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { eventually, sleep } from './helpers/wait.js';
import { rejectsWith } from './helpers/errors.js';
import { type ChildProcess, execFileSync, spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLineChild, type LineChild } from './helpers/child.js';
import { DEFAULT_MAX_WAITS, STATE_LOCK, startServer, type ServiceServer } from '../lib/service/server.js';
import { ServicePool, type ServiceBuffer } from '../lib/service/client.js';
import { type JournalData } from '../lib/service/journal.js';
import { PhysmemError } from '../lib/errors.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const viteNode = join(repo, 'node_modules/vite-node/vite-node.mjs');
const bin = join(repo, 'dist/lib/cli/bin.js');
const root = mkdtempSync(join(tmpdir(), 'physmem-faults-'));
const children = new Set<ChildProcess>();
const servers: ServiceServer[] = [];
const pools: ServicePool[] = [];
const mounts: string[] = [];

/** Re-reads `get()` until `ok` holds and returns the last value; the 60 s deadline only stops a hang. */
const quiet = () => undefined;

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const p of pools) p.destroy();
  for (const s of servers) await s.close();
  for (const m of mounts) spawnSync('umount', [m]);
  rmSync(root, { recursive: true, force: true });
});


let dirCount = 0;
function dirs(name: string): { base: string; socket: string; stateDir: string } {
  const base = join(root, `${name}-${++dirCount}`);
  mkdirSync(base, { mode: 0o700 });
  return { base, socket: join(base, 'run', 'pool.sock'), stateDir: join(base, 'state') };
}

/**
 * Every file and directory under `dir`: type and mode; for files also size, mtime and bytes.
 * (A directory's mtime is left out: a start takes its lock by creating a lock file, and a
 * refused start removes the lock file it created, which touches the directory.)
 */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const kind = st.isDirectory() ? 'dir' : st.isSocket() ? 'socket' : st.isSymbolicLink() ? 'link' : st.isFile() ? 'file' : 'other';
      out[p] = `${kind} mode=${st.mode.toString(8)}${kind === 'dir' ? '' : ` size=${st.size} mtime=${st.mtimeMs}`}${kind === 'file' ? ` bytes=${readFileSync(p).toString('base64')}` : ''}`;
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

const journalOf = (stateDir: string) => JSON.parse(readFileSync(join(stateDir, 'journal.json'), 'utf8')) as JournalData;

/** A daemon child (`runServe`, what `physmem serve` runs); its env may carry the journal's crash hook. */
function daemonScript(): string {
  const path = join(root, 'daemon.ts');
  if (!existsSync(path)) {
    writeFileSync(path, `
import { runServe } from ${JSON.stringify(join(repo, 'lib/service/cli.ts'))};
const [socket, stateDir, size] = process.argv.slice(2);
try {
  await runServe({ socket, backend: 'fake', size: Number(size), stateDir, graceMs: 600000, quarantineMs: 100 });
} catch (e) {
  process.stderr.write('physmem: ' + e.message + '\\n');
  process.exitCode = 1;
}
`);
  }
  return path;
}

function startDaemon(socket: string, stateDir: string, size: number, env: NodeJS.ProcessEnv = {}): LineChild {
  return startLineChild([viteNode, daemonScript(), socket, stateDir, String(size)], { cwd: repo, track: children, env: { ...process.env, ...env } });
}

async function untilStarted(d: LineChild): Promise<void> {
  for (let i = 0; i < 800 && !/event=start/.test(d.stderr()); i++) {
    if (d.child.exitCode !== null) break;
    await sleep(25);
  }
  expect(d.stderr()).toMatch(/event=start/);
}

// A Unix socket file that nobody listens on: what a daemon killed with -9 leaves.
function staleSocket(path: string): void {
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  expect(r.signal).toBe('SIGKILL');
  expect(lstatSync(path).isSocket()).toBe(true);
}

function overlaps(a: { phys: bigint; size: number }, b: { phys: bigint; size: number }): boolean {
  const pa = Math.ceil(a.size / 4096) * 4096;
  const pb = Math.ceil(b.size / 4096) * 4096;
  return a.phys < b.phys + BigInt(pb) && b.phys < a.phys + BigInt(pa);
}

function canMountTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  const m = mkdtempSync(join(tmpdir(), 'physmem-mnt-probe-'));
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'physmem-probe', m]).status === 0;
  if (ok) spawnSync('umount', [m]);
  rmSync(m, { recursive: true, force: true });
  return ok;
}

describe.skipIf(!canMountTmpfs())('(1) a state directory on a nearly full file system (a small tmpfs; needs root)', () => {
  it('a snapshot that only partly fits fails the grant with EIO (not handed out); after kill -9 the restart restores every acknowledged block', async () => {
    const { base, socket } = dirs('full');
    const mnt = join(base, 'mnt');
    mkdirSync(mnt, { mode: 0o700 });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'physmem-test', mnt]);
    mounts.push(mnt);
    const stateDir = join(mnt, 'state');
    const d1 = startDaemon(socket, stateDir, 1 << 20);
    await untilStarted(d1);
    const pool = await ServicePool.connect(socket);
    pools.push(pool);
    // 100 acknowledged blocks: a snapshot of them is over two pages.
    const held: ServiceBuffer[] = [];
    for (let i = 0; i < 100; i++) {
      const b = await pool.allocAsync(4096);
      b.bytes.fill(i + 1);
      held.push(b);
    }
    const before = journalOf(stateDir);
    expect(before.blocks).toHaveLength(100);
    expect(JSON.stringify(before).length).toBeGreaterThan(2 * 4096);
    // Fill the file system, then give back one page: the next snapshot only partly fits.
    const filler = join(mnt, 'filler');
    const fd = openSync(filler, 'w');
    const chunk = Buffer.alloc(4096, 1);
    try {
      for (;;) writeSync(fd, chunk);
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    ftruncateSync(fd, fstatSync(fd).size - 4096);
    closeSync(fd);
    const e = await rejectsWith(pool.allocAsync(4096), 'EIO');
    expect(e.message).toMatch(/cannot write the journal/);
    await rejectsWith(pool.allocAsync(8192, { name: 'never' }), 'EIO');
    // Not handed out: the daemon holds exactly the acknowledged blocks, and the journal is the old, whole table.
    expect(await pool.statsAsync()).toMatchObject({ count: 100 });
    await pool.check();
    expect(journalOf(stateDir)).toEqual(before);
    expect(existsSync(join(stateDir, 'journal.json.tmp'))).toBe(false); // the torn temp file is removed

    d1.child.kill('SIGKILL');
    await d1.exit;
    pool.destroy();
    unlinkSync(filler);
    const d2 = startDaemon(socket, stateDir, 1 << 20);
    await untilStarted(d2);
    expect(d2.stderr()).toMatch(/event=restore blocks=100 /);
    const p2 = await ServicePool.connect(socket);
    pools.push(p2);
    const back = await p2.reclaim(held.map((b) => b.token!));
    expect(back.map((b) => b.phys)).toEqual(held.map((b) => b.phys));
    for (const [i, b] of back.entries()) expect(b.bytes.every((v) => v === i + 1)).toBe(true);
    const fresh = await p2.allocAsync(4096);
    for (const b of back) expect(overlaps(fresh, b)).toBe(false);
    await p2.check();
    d2.child.kill('SIGKILL');
    await d2.exit;
  }, 120_000);
});

describe('(2) a refused start changes nothing on disk', () => {
  // A state left by a daemon that was killed: journal with live blocks, memory file, lock files, a stale socket.
  async function leftBehind(name: string): Promise<{ base: string; socket: string; stateDir: string; journal: string }> {
    const d = dirs(name);
    const s1 = await startServer({ socket: d.socket, stateDir: d.stateDir, size: 256 * 1024, log: quiet });
    const p = await ServicePool.connect(d.socket);
    for (let i = 0; i < 3; i++) (await p.allocAsync(5000 + i)).bytes.fill(0x40 + i);
    p.destroy();
    await s1.close(); // with a journal, like a crash: journal and memory file stay
    staleSocket(d.socket);
    writeFileSync(`${d.socket}.lock`, '999999\n', { mode: 0o600 });
    writeFileSync(join(d.stateDir, STATE_LOCK), '999999\n', { mode: 0o600 });
    return { ...d, journal: join(d.stateDir, 'journal.json') };
  }

  const cases: [string, (j: string) => void, number][] = [
    ['cut short', (j) => writeFileSync(j, readFileSync(j).subarray(0, 40)), 256 * 1024],
    ['garbage', (j) => writeFileSync(j, Buffer.from([0xff, 0x00, 0x7b, 0x22])), 256 * 1024],
    ['a duplicated token', (j) => {
      const d = JSON.parse(readFileSync(j, 'utf8')) as JournalData;
      d.blocks[1].token = d.blocks[0].token;
      writeFileSync(j, JSON.stringify(d));
    }, 256 * 1024],
    ['a block outside the pool', (j) => {
      const d = JSON.parse(readFileSync(j, 'utf8')) as JournalData;
      d.blocks[2].phys = String(2 ** 40);
      writeFileSync(j, JSON.stringify(d));
    }, 256 * 1024],
    ['a pool of another size', () => undefined, 512 * 1024],
  ];
  for (const [what, spoil, size] of cases) {
    it(`journal with ${what}: EIO, and every file (journal, memory file, locks, stale socket) is as it was, bytes and mtime`, async () => {
      const d = await leftBehind(what.replace(/\W+/g, '-'));
      spoil(d.journal);
      const before = snapshot(d.base);
      expect(Object.keys(before).some((p) => p.endsWith('pool.sock.mem'))).toBe(true);
      await sleep(20); // a rewrite would show in mtime
      const e = await rejectsWith(startServer({ socket: d.socket, stateDir: d.stateDir, size, log: quiet }), 'EIO');
      expect(e.message).toMatch(/journal/);
      expect(snapshot(d.base)).toEqual(before);
    });
  }

  it('a refused start creates nothing either: no socket directory, no lock file, no memory file', async () => {
    const { base, stateDir } = dirs('fresh-refused');
    mkdirSync(stateDir, { mode: 0o700 });
    writeFileSync(join(stateDir, 'journal.json'), '{');
    const before = snapshot(base);
    await rejectsWith(startServer({ socket: join(base, 'new', 'pool.sock'), stateDir, log: quiet }), 'EIO');
    expect(snapshot(base)).toEqual(before);
  });
});

describe('temporary memory files of a daemon that died while starting', () => {
  it('are removed by the next start, one with our own (reused) pid does not block it, other files stay', async () => {
    const d = dirs('leftover-new');
    mkdirSync(join(d.base, 'run'), { mode: 0o700 });
    // What `serve` leaves when killed between creating its memory file and moving it in place.
    const dead = join(d.base, 'run', 'pool.sock.mem.999999.new');
    const ours = join(d.base, 'run', `pool.sock.mem.${process.pid}.new`);
    const other = join(d.base, 'run', 'pool.sock.mem.notes');
    for (const f of [dead, ours, other]) writeFileSync(f, 'x', { mode: 0o600 });
    const lines: string[] = [];
    const s = await startServer({ socket: d.socket, size: 256 * 1024, log: (l) => lines.push(l) });
    servers.push(s);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(ours)).toBe(false);
    expect(readFileSync(other, 'utf8')).toBe('x');
    expect(lines.join('\n')).toMatch(/removed pool\.sock\.mem\.999999\.new/);
    const p = await ServicePool.connect(d.socket);
    pools.push(p);
    const b = await p.allocAsync(4096);
    b.bytes.fill(7);
    expect(b.bytes[4095]).toBe(7);
    await s.close();
  });
});

describe('(3) one daemon per state directory', () => {
  it('a second daemon on the same --state-dir (another socket) is refused with EBUSY naming the holder; the first keeps its blocks', async () => {
    const { base, socket, stateDir } = dirs('two');
    const s1 = await startServer({ socket, stateDir, size: 256 * 1024, log: quiet });
    servers.push(s1);
    const p = await ServicePool.connect(socket);
    pools.push(p);
    const kept = await p.allocAsync(4096);
    const journal = readFileSync(join(stateDir, 'journal.json'));
    const other = join(base, 'other', 'pool.sock');
    // In this process (the lock refuses a range this process holds too) ...
    const e = await rejectsWith(startServer({ socket: other, stateDir, size: 256 * 1024, log: quiet }), 'EBUSY');
    expect(e.message).toMatch(new RegExp(`another physmem daemon \\(pid ${process.pid}\\) already uses this --state-dir`));
    expect(e.path).toBe(join(stateDir, STATE_LOCK));
    // ... and from another process, as two `physmem serve` would.
    const d2 = startDaemon(other, stateDir, 256 * 1024);
    expect(await d2.exit).toBe(1);
    expect(d2.stderr()).toMatch(new RegExp(`EBUSY: another physmem daemon \\(pid ${process.pid}\\) already uses this --state-dir`));
    expect(existsSync(join(base, 'other'))).toBe(false);
    expect(readFileSync(join(stateDir, 'journal.json'))).toEqual(journal);
    expect(journalOf(stateDir).blocks.map((b) => b.token)).toEqual([kept.token]);
    s1.check();
  }, 60_000);
});

describe('(4) serve --socket over something that is not a dead daemon\'s socket', () => {
  it('a regular file, a directory, a symlink: ENOTSOCK, left alone', async () => {
    const { base } = dirs('notsock');
    const run = join(base, 'run');
    mkdirSync(run, { mode: 0o700 });
    const file = join(run, 'file.sock');
    writeFileSync(file, 'precious data\n');
    mkdirSync(join(run, 'dir.sock'));
    symlinkSync(file, join(run, 'link.sock'));
    const before = snapshot(base);
    await sleep(20);
    for (const name of ['file.sock', 'dir.sock', 'link.sock']) {
      const e = await rejectsWith(startServer({ socket: join(run, name), size: 65536, log: quiet }), 'ENOTSOCK');
      expect(e.message).toMatch(/not a socket; it is left alone/);
    }
    expect(snapshot(base)).toEqual(before);
  });

  it('a socket another program listens on: EEXIST, left alone and still served; a dead daemon\'s socket is replaced', async () => {
    const { base } = dirs('live');
    const run = join(base, 'run');
    mkdirSync(run, { mode: 0o700 });
    const path = join(run, 'pool.sock');
    const other = createServer((c) => {
      c.on('error', () => undefined); // the daemon's probe connects and hangs up
      c.end('theirs');
    });
    await new Promise<void>((r) => other.listen(path, r));
    try {
      await rejectsWith(startServer({ socket: path, size: 65536, log: quiet }), 'EEXIST');
      const got = await new Promise<string>((resolve) => {
        let s = '';
        const c = connect(path);
        c.on('error', () => undefined);
        c.on('data', (d: Buffer) => (s += d.toString()));
        c.on('close', () => resolve(s));
      });
      expect(got).toBe('theirs');
    } finally {
      await new Promise<void>((r) => other.close(() => r()));
    }
    staleSocket(path);
    const s = await startServer({ socket: path, size: 65536, log: quiet });
    servers.push(s);
    const p = await ServicePool.connect(path);
    pools.push(p);
    expect(p.daemonPid).toBe(process.pid);
  });

  it.skipIf(!existsSync(bin))('`physmem serve --socket \'\'` is a usage error (exit 2) naming the flag (built bin)', () => {
    const r = spawnSync(process.execPath, [bin, 'serve', '--socket', ''], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--socket needs a path/);
  });
});

describe('(5) the wait queue: serving a request does not walk it; one client\'s share is capped', () => {
  it('with 30,000 waits queued by one client, another client\'s requests each look at no more than the queue head', async () => {
    const { socket } = dirs('queue');
    const s = await startServer({ socket, size: 64 * 1024, maxWaits: 40_000, log: quiet });
    servers.push(s);
    const hog = await ServicePool.connect(socket);
    pools.push(hog);
    const all = await hog.allocAsync(64 * 1024); // the pool is full
    const N = 30_000;
    const waits = Array.from({ length: N }, () => hog.allocAsync(4096, { wait: true }));
    for (const w of waits) w.catch(() => undefined);
    expect(await eventually(() => s.stats().waiting, (w) => w >= N, 60_000)).toBe(N);
    const other = await ServicePool.connect(socket);
    pools.push(other);
    const v0 = s.queueVisits;
    // Another client: a wait of its own (duplicate-id check, queueing), cancel it (removal), an
    // immediate alloc (ENOMEM), stats: none of them may walk the 30,000 waits.
    const ac = new AbortController();
    const mine = other.allocAsync(4096, { wait: true, signal: ac.signal });
    expect(await eventually(() => s.stats().waiting, (w) => w >= N + 1, 60_000)).toBe(N + 1);
    ac.abort();
    await rejectsWith(mine, 'ECANCELED');
    await rejectsWith(other.allocAsync(4096), 'ENOMEM');
    expect((await other.statsAsync()).waiting).toBe(N);
    expect(s.queueVisits - v0).toBeLessThanOrEqual(2); // the head, tried after the cancel
    // A free serves from the head only: 16 blocks fit, the 17th waiter stops the walk.
    const v1 = s.queueVisits;
    await all.free();
    expect(await eventually(() => s.stats().waiting, (w) => w <= N - 16, 60_000)).toBe(N - 16);
    expect(s.queueVisits - v1).toBe(17);
    // The hog's disconnect drops its waits, walking only its own.
    hog.destroy();
    await Promise.allSettled(waits);
    expect(await eventually(() => s.stats().waiting, (w) => w === 0, 60_000)).toBe(0);
    s.check();
  }, 120_000);

  it(`one client may have ${DEFAULT_MAX_WAITS} allocations waiting (the default --max-waits); the next fails with EAGAIN, others still queue`, async () => {
    const { socket } = dirs('cap');
    const s = await startServer({ socket, size: 64 * 1024, log: quiet });
    servers.push(s);
    const hog = await ServicePool.connect(socket);
    pools.push(hog);
    const all = await hog.allocAsync(64 * 1024);
    // The waits that are queued never settle while the hog is connected (the pool is full, no timeout).
    const refused: PhysmemError[] = [];
    for (let i = 0; i < DEFAULT_MAX_WAITS + 50; i++) hog.allocAsync(4096, { wait: true }).catch((e: PhysmemError) => refused.push(e));
    // Replies come in request order: once the hog's stats reply is here, so is every refusal.
    await hog.statsAsync();
    await Promise.resolve();
    expect(refused).toHaveLength(50);
    for (const e of refused) expect(e.code).toBe('EAGAIN');
    expect(refused[0].message).toMatch(/--max-waits/);
    expect(s.stats().waiting).toBe(DEFAULT_MAX_WAITS);
    const other = await ServicePool.connect(socket);
    pools.push(other);
    const theirs = other.allocAsync(4096, { wait: true });
    theirs.catch(() => undefined);
    expect(await eventually(() => s.stats().waiting, (w) => w >= DEFAULT_MAX_WAITS + 1)).toBe(DEFAULT_MAX_WAITS + 1);
    hog.destroy();
    void all;
    const got = await theirs; // the hog's waits are gone and its block comes back after the quarantine
    expect(got.size).toBe(4096);
    await got.free();
  }, 60_000);
});

describe('(6) frees nobody awaits when the daemon dies', () => {
  it('do not crash the program (no unhandled rejection); awaiting code gets ECONNRESET; a PhysmemFreeWarning reports it once', async () => {
    const { base, socket } = dirs('unawaited');
    const script = join(base, 'client.ts');
    writeFileSync(script, `
import { startServer } from ${JSON.stringify(join(repo, 'lib/service/server.ts'))};
import { ServicePool } from ${JSON.stringify(join(repo, 'lib/service/client.ts'))};
const warnings: { name: string; code?: string }[] = [];
process.on('warning', (w: Error & { code?: string }) => warnings.push({ name: w.name, code: w.code }));
const server = await startServer({ socket: ${JSON.stringify(socket)}, size: 1 << 20, log: () => undefined });
const pool = await ServicePool.connect(${JSON.stringify(socket)});
const bufs = [];
for (let i = 0; i < 5; i++) bufs.push(await pool.allocAsync(4096));
await server.close(); // the daemon goes away; the client learns of it asynchronously
bufs[0].free(); // not awaited
bufs[1].free();
const awaited = await bufs[2].free().then(() => 'ok', (e) => e.code);
bufs[3].free(); // after the connection is known to be gone
await new Promise((r) => setTimeout(r, 200));
console.log(JSON.stringify({ awaited, warnings: warnings.filter((w) => w.name === 'PhysmemFreeWarning') }));
`);
    const c = startLineChild([viteNode, script], { cwd: repo, track: children });
    // Without the fix the child dies of the unhandled rejection before printing anything.
    const line = await Promise.race([c.line(), c.exit.then((code) => `exited ${code}: ${c.stderr()}`)]);
    expect(await c.exit).toBe(0);
    const out = JSON.parse(line) as { awaited: string; warnings: { name: string; code: string }[] };
    expect(out.awaited).toBe('ECONNRESET');
    expect(out.warnings).toEqual([{ name: 'PhysmemFreeWarning', code: 'PHYSMEM_FREE_FAILED' }]);
    expect(c.stderr()).not.toMatch(/Unhandled|unhandled/);
  }, 60_000);
});

describe('(7) options a daemon\'s pool cannot honour', () => {
  it('at, boundary, maxAddress, zero: false and unknown keys are refused with ENOTSUP, nothing allocated; zero: true and undefined values pass', async () => {
    const { socket } = dirs('enotsup');
    const s = await startServer({ socket, size: 1 << 20, log: quiet });
    servers.push(s);
    const p = await ServicePool.connect(socket);
    pools.push(p);
    const bad: Record<string, unknown>[] = [{ at: 0x1_0000_0000n }, { boundary: 4096 }, { maxAddress: 0xffff_ffffn }, { zero: false }, { bogus: 1 }, { align: 4096, at: 0 }];
    for (const o of bad) {
      const e = await rejectsWith(p.allocAsync(4096, o), 'ENOTSUP');
      expect(e.message).toContain(`option '${Object.keys(o).at(-1)}'`);
    }
    expect(s.stats().count).toBe(0);
    const ok = await p.allocAsync(4096, { zero: true, at: undefined } as never);
    expect(ok.bytes.every((v) => v === 0)).toBe(true);
    await ok.free();
  });
});

describe('kill -9 of the daemon at each step of a journal write (test hook PHYSMEM_TEST_JOURNAL_CRASH)', () => {
  for (const point of ['write', 'fsync', 'rename', 'dirsync']) {
    it(`dies at '${point}': every acknowledged block is restored and reclaimable, the unacknowledged one at most held, nothing handed out twice`, async () => {
      const { socket, stateDir } = dirs(`crash-${point}`);
      const nth = 2 + Math.floor(Math.random() * 6); // which journal write dies: 2..7
      const d1 = startDaemon(socket, stateDir, 256 * 1024, { PHYSMEM_TEST_JOURNAL_CRASH: `${point}:${nth}` });
      await untilStarted(d1);
      const pool = await ServicePool.connect(socket);
      pools.push(pool);
      const acked: { phys: bigint; size: number; token: string; fill: number }[] = [];
      let died: PhysmemError | undefined;
      for (let i = 1; i <= 20 && died === undefined; i++) {
        try {
          const b = await pool.allocAsync(3000 + 1000 * i);
          b.bytes.fill(i);
          acked.push({ phys: b.phys, size: b.size, token: b.token!, fill: i });
        } catch (e) {
          died = e as PhysmemError;
        }
      }
      expect(died?.code, `journal write ${nth} should have killed the daemon`).toBe('ECONNRESET');
      expect(acked).toHaveLength(nth - 1); // one write per grant here: the n-th grant never got its reply
      await d1.exit;
      pool.destroy();
      const d2 = startDaemon(socket, stateDir, 256 * 1024);
      await untilStarted(d2);
      const restored = Number(/event=restore blocks=(\d+) /.exec(d2.stderr())?.[1] ?? 0);
      // The journal holds the acknowledged blocks, plus the dying grant only if its rename was done.
      expect(restored).toBe(point === 'dirsync' ? nth : nth - 1);
      const p2 = await ServicePool.connect(socket);
      pools.push(p2);
      const back = await p2.reclaim(acked.map((a) => a.token));
      for (const [i, b] of back.entries()) {
        expect(b.phys).toBe(acked[i].phys);
        expect(b.bytes.every((v) => v === acked[i].fill)).toBe(true);
      }
      const fresh: ServiceBuffer[] = [];
      for (;;) {
        const x = await p2.allocAsync(4096).catch(() => undefined);
        if (x === undefined) break;
        fresh.push(x);
      }
      for (const x of fresh) for (const b of back) expect(overlaps(x, b)).toBe(false);
      await p2.check();
      d2.child.kill('SIGKILL');
      await d2.exit;
    }, 120_000);
  }
});
