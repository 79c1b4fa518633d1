// Exclusive region locks (lib/locks.ts) on the host. Real locks, real lock
// files, real processes (POSIX locks belong to processes, so the "other
// program" is always a child process, never a worker thread). The memory is
// the fake backend's, with `lockKey` standing in for devmem, which needs root
// and reserved memory: the same on real /dev/mem is test/vm/locks.guest.test.ts.
// Children import the built dist/ (run `npx tsc -p tsconfig.json` first; `npm test` does).
import { type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startJsonChild, type ChildResult } from './helpers/child.js';
import { throwsWith } from './helpers/errors.js';
import { openPoolSync, type Pool } from '../lib/index.js';
import { listRegionLocks, lockRegion, parseProcLocks, prepareLockDir, readCommandLine, resolveLockDir, SHARE_HINT, type RegionLock } from '../lib/locks.js';
import { native } from '../lib/native.js';
import { runRegions } from '../lib/cli/regions.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const DIST_INDEX = join(REPO, 'dist/lib/index.js');
const isRoot = process.getuid?.() === 0;

const base = mkdtempSync(join(tmpdir(), 'physmem-locks-'));
chmodSync(base, 0o755); // the parent of lock dirs made in tests; mkdtemp's 0700 would hide nothing, but be plain
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
/** A fresh lock directory path (not created). */
const freshDir = () => join(base, `locks-${++n}`);

const M = 0x100000; // 1 MiB

// ---- child processes ------------------------------------------------------

const HOLDER = join(base, 'holder.mjs');
writeFileSync(
  HOLDER,
  `import { openPoolSync } from ${JSON.stringify(DIST_INDEX)};
// argv: mode (hold | try | exit), lockKey, physBase, size, lockDir
const [mode, key, physBase, size, dir] = process.argv.slice(2);
try {
  openPoolSync({ backend: 'fake', lockKey: key, physBase: BigInt(physBase), size: Number(size), lockDir: dir, leakCheck: 'off' });
  process.stdout.write(JSON.stringify({ ok: true }) + '\\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, code: e.code, message: e.message }) + '\\n');
  process.exit(0);
}
if (mode === 'hold') setInterval(() => {}, 1000);
else process.exit(0); // 'try' and 'exit': exit without closing the pool
`,
);

function startChild(mode: 'hold' | 'try' | 'exit', key: string, physBase: number | bigint, size: number, dir: string): Promise<{ child: ChildProcess; result: ChildResult }> {
  return startJsonChild([HOLDER, mode, key, String(physBase), String(size), dir], 20_000);
}

/** A child that holds the range until killed. */
async function holdInChild(key: string, physBase: number | bigint, size: number, dir: string): Promise<ChildProcess> {
  const { child, result } = await startChild('hold', key, physBase, size, dir);
  expect(result, 'the holder child opened its pool').toEqual({ ok: true });
  children.push(child);
  return child;
}

/** What a child gets when it asks for the range (it exits right after). */
async function tryInChild(key: string, physBase: number | bigint, size: number, dir: string): Promise<ChildResult> {
  const { child, result } = await startChild('try', key, physBase, size, dir);
  await exited(child);
  return result;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function kill9(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await exited(child);
}

const children: ChildProcess[] = [];
const pools: Pool[] = [];
const locks: RegionLock[] = [];
afterEach(async () => {
  pools.splice(0).forEach((p) => p.close());
  locks.splice(0).forEach((l) => l.release());
  for (const c of children.splice(0)) await kill9(c);
});

const fakePool = (key: string, physBase: number | bigint, size: number, dir: string): Pool => {
  const p = openPoolSync({ backend: 'fake', lockKey: key, physBase: BigInt(physBase), size, lockDir: dir, leakCheck: 'off' });
  pools.push(p);
  return p;
};

beforeAll(() => {
  const src = statSync(join(REPO, 'lib/locks.ts')).mtimeMs;
  const built = existsSync(join(REPO, 'dist/lib/locks.js')) ? statSync(join(REPO, 'dist/lib/locks.js')).mtimeMs : 0;
  if (built < src) throw new Error('dist/ is older than lib/locks.ts: run `npx tsc -p tsconfig.json` first (child processes import dist/)');
});

// ---- the lock directory ---------------------------------------------------

describe('lock directory', () => {
  it('defaults to /run/physmem, or $PHYSMEM_LOCK_DIR, or the option', () => {
    const saved = process.env.PHYSMEM_LOCK_DIR;
    try {
      delete process.env.PHYSMEM_LOCK_DIR;
      expect(resolveLockDir()).toBe('/run/physmem');
      process.env.PHYSMEM_LOCK_DIR = '/tmp/x-locks';
      expect(resolveLockDir()).toBe('/tmp/x-locks');
      expect(resolveLockDir('/srv/locks')).toBe('/srv/locks');
      expect(() => resolveLockDir('')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    } finally {
      if (saved === undefined) delete process.env.PHYSMEM_LOCK_DIR;
      else process.env.PHYSMEM_LOCK_DIR = saved;
    }
  });

  it('is created mode 0755 whatever the umask, and its lock files mode 0600', () => {
    const dir = freshDir();
    const old = process.umask(0o077);
    try {
      locks.push(lockRegion('fake-mode', [{ start: 0, size: 4096 }], { dir }));
    } finally {
      process.umask(old);
    }
    const st = lstatSync(dir);
    expect(st.isDirectory()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o755);
    expect(st.uid).toBe(process.geteuid!());
    expect(lstatSync(join(dir, 'fake-mode.lock')).mode & 0o7777).toBe(0o600);
  });

  it('an existing safe directory is used as it is, and a sticky world-writable one (like /tmp) is accepted', () => {
    const dir = freshDir();
    mkdirSync(dir);
    chmodSync(dir, 0o700);
    expect(prepareLockDir(dir)).toBe(dir);
    expect(lstatSync(dir).mode & 0o7777).toBe(0o700);
    chmodSync(dir, 0o1777);
    expect(prepareLockDir(dir)).toBe(dir);
  });

  it('refuses a symbolic link (ELOOP) and creates nothing where it points', () => {
    const target = freshDir();
    const link = freshDir();
    symlinkSync(target, link);
    const e = throwsWith(() => lockRegion('fake-x', [{ start: 0, size: 4096 }], { dir: link }), 'ELOOP');
    expect(e.message).toMatch(/is a symbolic link/);
    expect(e.message).toMatch(/lockDir \(or PHYSMEM_LOCK_DIR\)/);
    expect(existsSync(target)).toBe(false);
    mkdirSync(target);
    expect(() => prepareLockDir(link)).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    expect(existsSync(join(target, 'fake-x.lock'))).toBe(false);
  });

  it('refuses a directory writable by others, or by its group, without the sticky bit (EPERM)', () => {
    for (const mode of [0o777, 0o775, 0o757]) {
      const dir = freshDir();
      mkdirSync(dir);
      chmodSync(dir, mode);
      const e = throwsWith(() => lockRegion('fake-x', [{ start: 0, size: 4096 }], { dir }), 'EPERM');
      expect(e.message).toContain(`mode ${mode.toString(8)}`);
      expect(e.message).toMatch(/without the sticky bit.*anyone could delete a lock file/);
      expect(existsSync(join(dir, 'fake-x.lock'))).toBe(false);
    }
  });

  it('refuses a path that is not a directory (ENOTDIR), and a missing parent (ENOENT), saying what to do', () => {
    const file = freshDir();
    writeFileSync(file, '');
    expect(() => prepareLockDir(file)).toThrow(expect.objectContaining({ code: 'ENOTDIR', message: expect.stringMatching(/is not a directory/) }));
    const orphan = join(freshDir(), 'locks');
    expect(() => prepareLockDir(orphan)).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/parent directory does not exist/) }));
    expect(existsSync(orphan)).toBe(false);
  });

  it.skipIf(!isRoot)('refuses a directory owned by another user (EPERM) (needs root to chown)', () => {
    const dir = freshDir();
    mkdirSync(dir, { mode: 0o755 });
    chownSync(dir, 12345, 12345);
    expect(() => prepareLockDir(dir)).toThrow(expect.objectContaining({ code: 'EPERM', message: expect.stringMatching(/owned by uid 12345/) }));
  });

  it.skipIf(!isRoot)('refuses a lock file planted by another user (EPERM) (needs root to chown)', () => {
    const dir = freshDir();
    mkdirSync(dir, { mode: 0o1777 });
    writeFileSync(join(dir, 'fake-planted.lock'), '', { mode: 0o600 });
    chownSync(join(dir, 'fake-planted.lock'), 12345, 12345);
    const e = throwsWith(() => lockRegion('fake-planted', [{ start: 0, size: 4096 }], { dir }), 'EPERM');
    expect(e.message).toMatch(/owned by uid 12345/);
  });

  it('refuses a lock file that is a symbolic link (ELOOP) or writable by others (EPERM)', () => {
    const dir = freshDir();
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(join(base, `elsewhere-${n}`), '');
    symlinkSync(join(base, `elsewhere-${n}`), join(dir, 'fake-link.lock'));
    expect(() => lockRegion('fake-link', [{ start: 0, size: 4096 }], { dir })).toThrow(
      expect.objectContaining({ code: 'ELOOP', message: expect.stringMatching(/symbolic link: remove it/) }),
    );
    writeFileSync(join(dir, 'fake-open.lock'), '');
    chmodSync(join(dir, 'fake-open.lock'), 0o666);
    expect(() => lockRegion('fake-open', [{ start: 0, size: 4096 }], { dir })).toThrow(
      expect.objectContaining({ code: 'EPERM', message: expect.stringMatching(/writable by group or others/) }),
    );
  });
});

// ---- two processes ----------------------------------------------------------

describe('two processes (fake backend with lockKey standing in for devmem, which needs root and reserved memory)', () => {
  it('the second gets EBUSY naming the holder (pid, command line) and how to share; after kill -9 of the first it succeeds', async () => {
    const dir = freshDir();
    const child = await holdInChild('two', 0x18000000, 64 * M, dir);
    const e = throwsWith(() => fakePool('two', 0x18000000, 64 * M, dir), 'EBUSY');
    expect(e).toMatchObject({ syscall: 'fcntl', path: join(dir, 'fake-two.lock') });
    expect(e.message).toContain(`in use by pid ${child.pid} (${process.execPath} ${HOLDER} hold two`);
    expect(e.message).toContain('which holds 0x18000000-0x1bffffff');
    expect(e.message).toContain('run `physmem serve` and connect with `openPool({ service })`');
    expect(e.message).toContain(SHARE_HINT);
    await kill9(child);
    const pool = fakePool('two', 0x18000000, 64 * M, dir);
    expect(pool.alloc(4096).phys).toBeGreaterThanOrEqual(0x18000000n);
  });

  it('overlap, not equality, decides: 0x18000000-0x1bffffff held, 0x1a000000-0x1fffffff refused, adjacent ranges and other keys free', async () => {
    const dir = freshDir();
    await holdInChild('ovl', 0x18000000, 64 * M, dir);
    const e = throwsWith(() => fakePool('ovl', 0x1a000000, 96 * M, dir), 'EBUSY');
    expect(e.message).toMatch(/fake-ovl memory 0x1a000000-0x1fffffff is in use by pid \d+ .* which holds 0x18000000-0x1bffffff/);
    // One page of overlap at either end is enough.
    expect(() => fakePool('ovl', 0x17fff000, 8192, dir)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => fakePool('ovl', 0x1bfff000, 8192, dir)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    // Inside it, and covering it whole.
    expect(() => fakePool('ovl', 0x19000000, M, dir)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => fakePool('ovl', 0x10000000, 512 * M, dir)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    // Adjacent on both sides, and the same range of other memory (another key), are free.
    fakePool('ovl', 0x1c000000, 64 * M, dir);
    fakePool('ovl', 0x17000000, 16 * M, dir);
    fakePool('ovl-other', 0x18000000, 64 * M, dir);
  });

  it('a holder that exits without closing its pool leaves nothing locked', async () => {
    const dir = freshDir();
    const { child, result } = await startChild('exit', 'exit', 0x20000000, 4 * M, dir);
    expect(result.ok).toBe(true);
    await exited(child);
    fakePool('exit', 0x20000000, 4 * M, dir);
  });

  it('a child asking for what this process holds gets EBUSY naming this process', async () => {
    const dir = freshDir();
    fakePool('rev', 0x30000000, 4 * M, dir);
    const r = await tryInChild('rev', 0x30200000, 4 * M, dir);
    expect(r.ok).toBe(false);
    expect(r.code).toBe('EBUSY');
    expect(r.message).toContain(`in use by pid ${process.pid} (${readCommandLine(process.pid)!.slice(0, 40)}`);
    expect(r.message).toContain('which holds 0x30000000-0x303fffff');
  });

  it('listRegionLocks and `physmem regions` show which memory is in use and by whom', async () => {
    const dir = freshDir();
    const child = await holdInChild('list', 0x18000000, 64 * M, dir);
    fakePool('list-mine', 0x40000000, 2 * M, dir);
    const l = listRegionLocks({ dir });
    expect(l.problems).toEqual([]);
    expect(l.holders).toEqual([
      { kind: 'fake-list', lockFile: join(dir, 'fake-list.lock'), start: 0x18000000n, size: 0x4000000n, pid: child.pid, command: `${process.execPath} ${HOLDER} hold list 402653184 67108864 ${dir}`, self: false },
      { kind: 'fake-list-mine', lockFile: join(dir, 'fake-list-mine.lock'), start: 0x40000000n, size: 0x200000n, pid: process.pid, command: readCommandLine(process.pid), self: true },
    ]);
    const r = runRegions({ root: join(REPO, 'test/fixtures/discovery/qemu-pc-mem384'), lockDir: dir });
    expect(r.text).toContain(`In use (locks in ${dir}):`);
    expect(r.text).toMatch(new RegExp(`^fake-list\\s+0x18000000\\s+0x1bffffff\\s+64 MiB\\s+${child.pid}\\s+${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `, 'm'));
    expect(r.text).toMatch(new RegExp(`^fake-list-mine\\s+0x40000000\\s+0x401fffff\\s+2 MiB\\s+${process.pid}\\s+\\(this command\\)$`, 'm'));
    expect(r.json).toMatchObject({ lockDir: dir, inUse: [{ memory: 'fake-list', start: 0x18000000n, end: 0x1bffffffn, pid: child.pid }, { memory: 'fake-list-mine', pid: process.pid }] });
    await kill9(child);
    expect(listRegionLocks({ dir }).holders.map((h) => h.kind)).toEqual(['fake-list-mine']);
  });

  it('`physmem regions` says none is in use when no lock is held, and creates no lock directory', () => {
    const dir = freshDir();
    const r = runRegions({ root: join(REPO, 'test/fixtures/discovery/qemu-pc-mem384'), lockDir: dir });
    expect(r.text).toContain(`In use: none (no program holds a lock in ${dir}).`);
    expect(r.json).toMatchObject({ inUse: [] });
    expect(existsSync(dir)).toBe(false);
  });
});

// ---- within one process -----------------------------------------------------

describe('within one process', () => {
  it('a second pool on overlapping memory gets EBUSY naming this process; after close it opens', () => {
    const dir = freshDir();
    const first = fakePool('self', 0x18000000, 64 * M, dir);
    const e = throwsWith(() => fakePool('self', 0x1a000000, 64 * M, dir), 'EBUSY');
    expect(e.message).toContain(`in use by this process (pid ${process.pid}), which holds 0x18000000-0x1bffffff`);
    expect(e.message).toMatch(/allocate from that pool, or close it first/);
    first.close();
    fakePool('self', 0x1a000000, 64 * M, dir);
  });

  it('closing one of two pools keeps the other locked (POSIX locks drop on any close of the file: one fd per file)', async () => {
    const dir = freshDir();
    const a = fakePool('pair', 0x18000000, 4 * M, dir);
    fakePool('pair', 0x18400000, 4 * M, dir); // adjacent: the kernel merges the two locks into one
    a.close();
    expect(await tryInChild('pair', 0x18400000, 4 * M, dir)).toMatchObject({ ok: false, code: 'EBUSY' });
    expect(await tryInChild('pair', 0x18000000, 4 * M, dir)).toEqual({ ok: true });
  });

  it('pools in a worker thread and the main thread exclude each other, and the worker closing keeps ours', async () => {
    const dir = freshDir();
    fakePool('worker', 0x18000000, 4 * M, dir);
    const script = join(base, 'worker.mjs');
    writeFileSync(
      script,
      `import { parentPort, workerData } from 'node:worker_threads';
import { openPoolSync } from ${JSON.stringify(DIST_INDEX)};
const open = (physBase) => openPoolSync({ backend: 'fake', lockKey: 'worker', physBase, size: 4 << 20, lockDir: workerData.dir, leakCheck: 'off' });
let clash;
try { open(0x18000000n).close(); } catch (e) { clash = { code: e.code, message: e.message }; }
const mine = open(0x20000000n);
parentPort.postMessage({ clash });
parentPort.once('message', () => { mine.close(); parentPort.postMessage('closed'); });
`,
    );
    const w = new Worker(script, { workerData: { dir } });
    try {
      const first = await new Promise<{ clash?: { code: string; message: string } }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      expect(first.clash?.code).toBe('EBUSY');
      expect(first.clash?.message).toContain(`this process (pid ${process.pid})`);
      expect(() => fakePool('worker', 0x20000000, 4 * M, dir)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
      const closed = new Promise((resolve) => w.once('message', resolve));
      w.postMessage('close');
      expect(await closed).toBe('closed');
      expect(await tryInChild('worker', 0x18000000, 4 * M, dir)).toMatchObject({ ok: false, code: 'EBUSY' });
      fakePool('worker', 0x20000000, 4 * M, dir);
    } finally {
      await w.terminate();
    }
  });

  it('a failed open releases the lock it took (ENOMEM mapping 1 PiB)', async () => {
    const dir = freshDir();
    expect(() => fakePool('fail', 0x1_0000_0000, 2 ** 50, dir)).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
    expect(listRegionLocks({ dir }).holders).toEqual([]);
    expect(await tryInChild('fail', 0x1_0000_0000, 4 * M, dir)).toEqual({ ok: true });
    fakePool('fail', 0x1_0000_0000, 4 * M, dir);
  });

  it('without lockKey the fake backend locks nothing (its memory is private) and takes no lock directory', () => {
    const dir = freshDir();
    const saved = process.env.PHYSMEM_LOCK_DIR;
    process.env.PHYSMEM_LOCK_DIR = dir;
    try {
      const a = openPoolSync({ backend: 'fake', physBase: 0x18000000n, size: 4 * M });
      const b = openPoolSync({ backend: 'fake', physBase: 0x18000000n, size: 4 * M });
      a.close();
      b.close();
    } finally {
      if (saved === undefined) delete process.env.PHYSMEM_LOCK_DIR;
      else process.env.PHYSMEM_LOCK_DIR = saved;
    }
    expect(existsSync(dir)).toBe(false);
  });

  it('lockKey must be a plain name (EINVAL), checked before any lock file exists', () => {
    const dir = freshDir();
    for (const key of ['', '../x', 'a/b', 'a b', 'x'.repeat(101)]) {
      expect(() => fakePool(key, 0, 4096, dir), JSON.stringify(key)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
    expect(existsSync(dir)).toBe(false);
  });
});

// ---- the lock API ---------------------------------------------------------------

describe('lockRegion (the API the daemon will share)', () => {
  it('takes all ranges or none: a busy one leaves none of the others locked', async () => {
    const dir = freshDir();
    await holdInChild('all', 0x2000_0000, 4 * M, dir);
    throwsWith(
      () => lockRegion('fake-all', [{ start: 0x1000_0000n, size: BigInt(4 * M) }, { start: 0x2000_0000, size: 4 * M }, { start: 0x3000_0000, size: 4 * M }], { dir }),
      'EBUSY',
    );
    expect(listRegionLocks({ dir }).holders.filter((h) => h.self)).toEqual([]);
    const l = lockRegion('fake-all', [{ start: 0x3000_0000, size: 4 * M }, { start: 0x1000_0000, size: 4 * M }], { dir });
    expect(l.ranges).toEqual([{ start: 0x1000_0000n, size: BigInt(4 * M) }, { start: 0x3000_0000n, size: BigInt(4 * M) }]);
    expect(l.kind).toBe('fake-all');
    expect(l.path).toBe(join(dir, 'fake-all.lock'));
    l.release();
    expect(l.released).toBe(true);
    l.release(); // idempotent
    expect(listRegionLocks({ dir }).holders.filter((h) => h.self)).toEqual([]);
  });

  it('addresses up to 2^63 - 1 work as lock offsets (physical addresses above 4 GiB and beyond 2^53)', async () => {
    const dir = freshDir();
    const high = (1n << 62n) + 0x1000n;
    locks.push(lockRegion('fake-high', [{ start: high, size: 0x1000n }], { dir }));
    expect(listRegionLocks({ dir }).holders).toMatchObject([{ start: high, size: 0x1000n, self: true }]);
    expect(() => lockRegion('fake-high', [{ start: high + 0xfffn, size: 1n }], { dir })).toThrow(expect.objectContaining({ code: 'EBUSY' }));
  });

  it('refuses bad arguments with EINVAL', () => {
    const dir = freshDir();
    expect(() => lockRegion('../evil', [{ start: 0, size: 1 }], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [{ start: 0, size: 0 }], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [{ start: -1, size: 1 }], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [{ start: 1n << 63n, size: 1n }], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [{ start: 0.5, size: 1 }], { dir })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => lockRegion('x', [{ start: 0, size: 8192 }, { start: 4096, size: 8192 }], { dir })).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/overlap each other/) }),
    );
  });

  it('the native calls refuse fds they did not open (EBADF) and ranges not held (EINVAL)', () => {
    const dir = prepareLockDir(freshDir());
    const nat = native();
    expect(() => nat.lockRange(0, 0n, 1n)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => nat.lockFileClose(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const fd = nat.lockFileOpen(join(dir, 'raw.lock'));
    try {
      expect(nat.lockFileOpen(join(dir, 'raw.lock'))).toBe(fd); // one fd per file, counted
      nat.lockFileClose(fd);
      expect(() => nat.unlockRange(fd, 0n, 4096n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => nat.lockRange(fd, 0n, 0n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(nat.lockRange(fd, 0n, 4096n)).toBeNull();
      expect(nat.lockRange(fd, 4095n, 1n)).toEqual({ pid: process.pid, start: 0n, length: 4096n });
      nat.unlockRange(fd, 0n, 4096n);
    } finally {
      nat.lockFileClose(fd);
    }
  });

  it('parses /proc/locks: POSIX locks only, waiting ones and OFD/flock skipped, EOF as an open end', () => {
    const text = [
      '1: POSIX  ADVISORY  WRITE 9693 fe:00:2146628 805306368 805306383',
      '1: -> POSIX  ADVISORY  WRITE 9700 fe:00:2146628 805306368 805306383',
      '2: OFDLCK ADVISORY  WRITE -1 fe:00:2146628 402653184 469762047',
      '3: FLOCK  ADVISORY  WRITE 812 00:1a:1234 0 EOF',
      '4: POSIX  ADVISORY  READ 0 103:02:77 4096 EOF',
      '',
    ].join('\n');
    expect(parseProcLocks(text)).toEqual([
      { type: 'WRITE', pid: 9693, major: 0xfe, minor: 0, inode: 2146628n, start: 805306368n, end: 805306383n },
      { type: 'READ', pid: 0, major: 0x103, minor: 2, inode: 77n, start: 4096n, end: undefined },
    ]);
  });

  it('listing reports an unsafe lock directory and an unreadable /proc/locks as problems, not errors', () => {
    const dir = freshDir();
    locks.push(lockRegion('fake-p', [{ start: 0, size: 4096 }], { dir }));
    expect(listRegionLocks({ dir, procLocks: join(base, 'no-such-locks') }).problems).toEqual([expect.stringMatching(/cannot read .*no-such-locks \(ENOENT\): which programs hold the locks in .* is unknown/)]);
    chmodSync(dir, 0o777);
    try {
      const l = listRegionLocks({ dir });
      expect(l.problems).toEqual([expect.stringMatching(/without the sticky bit/)]);
      expect(l.holders).toHaveLength(1);
    } finally {
      chmodSync(dir, 0o755);
    }
  });
});
