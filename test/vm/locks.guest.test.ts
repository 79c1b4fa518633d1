// Guest-only: exclusive regions on real /dev/mem under a real kernel (QEMU,
// booted by scripts/vm). Two real processes on the devmem backend, with the
// default lock directory /run/physmem (a tmpfs, as on real systems). The
// other program is a child running the compiled library (dist/, built on the
// host before the VM run).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startJsonChild, type ChildResult } from '../helpers/child.js';
import { throwsWith } from '../helpers/errors.js';
import { afterEach, expect, it } from 'vitest';
import { openPoolSync, type Pool } from '../../lib/index.js';
import { SHARE_HINT, listRegionLocks } from '../../lib/locks.js';
import { Mapping, closeFile, openFile } from '../../lib/mapping.js';
import { ServicePool } from '../../lib/service/client.js';
import { describeGuest, guestConfig, hex, inGuest } from './guest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HOLDER = '/tmp/physmem-lock-holder.mjs';
const LOCK_FILE = '/run/physmem/devmem.lock';
const M = 0x100000;

if (inGuest) {
  fs.writeFileSync(
    HOLDER,
    `import { openPoolSync } from ${JSON.stringify(path.join(REPO, 'dist/lib/index.js'))};
// argv: hold | try, then 'auto' or start:size (hex)
const [mode, spec] = process.argv.slice(2);
const regions = spec === 'auto' ? 'auto' : [{ start: BigInt(spec.split(':')[0]), size: BigInt(spec.split(':')[1]) }];
try {
  const pool = openPoolSync({ backend: 'devmem', regions, leakCheck: 'off' });
  pool.alloc(4096).bytes[0] = 1; // really using it
  process.stdout.write(JSON.stringify({ ok: true }) + '\\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, code: e.code, message: e.message }) + '\\n');
  process.exit(0);
}
if (mode === 'hold') setInterval(() => {}, 1000);
else process.exit(0);
`,
  );
}

function start(mode: 'hold' | 'try', spec: string): Promise<{ child: ChildProcess; result: ChildResult }> {
  return startJsonChild([HOLDER, mode, spec], 30_000);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

const children: ChildProcess[] = [];
async function hold(spec: string): Promise<ChildProcess> {
  const { child, result } = await start('hold', spec);
  children.push(child);
  expect(result, `the holder of ${spec} opened its pool`).toEqual({ ok: true });
  return child;
}

const range = (startAddr: number, size: number) => `${hex(startAddr)}:${hex(size)}`;

describeGuest('exclusive regions on /dev/mem (two processes)', () => {
  const pools: Pool[] = [];
  const open = (regions?: { start: number; size: number }[]): Pool => {
    const p = openPoolSync({ backend: 'devmem', ...(regions ? { regions } : {}) });
    pools.push(p);
    return p;
  };
  afterEach(async () => {
    pools.splice(0).forEach((p) => p.close());
    for (const c of children.splice(0)) {
      c.kill('SIGKILL');
      await exited(c);
    }
  });

  it('the second program gets EBUSY naming the first (pid, command line) and how to share; after kill -9 of the first it opens', async () => {
    const child = await hold('auto');
    const st = fs.lstatSync('/run/physmem');
    expect(st.isDirectory() && (st.mode & 0o7777) === 0o755 && st.uid === 0).toBe(true);
    const err = throwsWith(() => open(), 'EBUSY');
    expect(err.path).toBe(LOCK_FILE);
    expect(err.message).toContain(`is in use by pid ${child.pid} (${process.execPath} ${HOLDER} hold auto)`);
    expect(err.message).toContain(SHARE_HINT);
    // 'auto' must not hide busy real memory behind the fake backend.
    expect(() => openPoolSync({ backend: 'auto', quiet: true })).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    // A third program too, not only this test process.
    const third = await start('try', 'auto');
    await exited(third.child);
    expect(third.result).toMatchObject({ ok: false, code: 'EBUSY', message: expect.stringContaining(`pid ${child.pid}`) });

    child.kill('SIGKILL');
    await exited(child);
    const pool = open();
    const r = guestConfig().regions[0];
    expect(pool.alloc(4096, { at: BigInt(r.start) + 0x50000n }).phys).toBe(BigInt(r.start) + 0x50000n);
  });

  it('overlapping explicit ranges conflict (0x18000000-0x1bffffff vs 0x1a000000-0x1dffffff), adjacent and other regions do not', async () => {
    const above = guestConfig().regions.find((r) => r.kind === 'above-mem')!;
    expect(above.start).toBe(0x18000000);
    const child = await hold(range(0x18000000, 64 * M));
    const err = throwsWith(() => open([{ start: 0x1a000000, size: 64 * M }]), 'EBUSY');
    expect(err.message).toContain(`devmem memory 0x1a000000-0x1dffffff is in use by pid ${child.pid}`);
    expect(err.message).toContain('which holds 0x18000000-0x1bffffff');
    // 'auto' asks for the whole region, which overlaps too.
    expect(() => open()).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    // Adjacent above, and (memmap config) the other region, are free.
    open([{ start: 0x1c000000, size: 32 * M }]);
    for (const r of guestConfig().regions.filter((x) => x.kind === 'memmap-reserved')) open([{ start: r.start, size: r.end - r.start + 1 }]);
  });

  it('`physmem regions` (another process) shows which memory is in use and by whom', async () => {
    const child = await hold(range(0x18000000, 64 * M));
    const cli = spawnSync(process.execPath, [path.join(REPO, 'dist/lib/cli/bin.js'), 'regions'], { encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toContain('In use (locks in /run/physmem):');
    expect(cli.stdout).toMatch(new RegExp(`^devmem\\s+0x18000000\\s+0x1bffffff\\s+64 MiB\\s+${child.pid}\\s+${process.execPath} ${HOLDER} hold`, 'm'));
    const json = spawnSync(process.execPath, [path.join(REPO, 'dist/lib/cli/bin.js'), 'regions', '--json'], { encoding: 'utf8' });
    expect(JSON.parse(json.stdout)).toMatchObject({ lockDir: '/run/physmem', inUse: [{ memory: 'devmem', start: '0x18000000', end: '0x1bffffff', pid: child.pid, lockFile: LOCK_FILE }] });
    child.kill('SIGKILL');
    await exited(child);
    expect(listRegionLocks().holders).toEqual([]);
  });

  it('two pools of one process on the same memory: the second gets EBUSY naming this process', () => {
    open();
    expect(() => openPoolSync({ backend: 'devmem' })).toThrow(
      expect.objectContaining({ code: 'EBUSY', message: expect.stringContaining(`this process (pid ${process.pid})`) }),
    );
  });

  it('the daemon (physmem serve --backend devmem) serves real reserved memory, and holds the same locks: linked mode is refused while it serves, and it is refused while a program holds the memory', async () => {
    const dir = fs.mkdtempSync('/tmp/physmem-daemon-');
    const socket = path.join(dir, 'run', 'physmem.sock');
    const serve = () => spawn(process.execPath, [path.join(REPO, 'dist/lib/cli/bin.js'), 'serve', '--socket', socket, '--backend', 'devmem'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const daemon = serve();
    children.push(daemon);
    let log = '';
    daemon.stderr.on('data', (d) => (log += d));
    for (let i = 0; i < 300 && !log.includes('event=start'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(log, 'the daemon logged its start').toContain('event=start');
    expect(fs.existsSync(socket)).toBe(true);

    // Real memory through the daemon: a client maps its block of /dev/mem itself, and the
    // bytes are at the physical address it was given, inside the reserved regions.
    const client = await ServicePool.connect(socket);
    const buf = await client.allocAsync(10_000);
    expect(buf.bytes.every((v) => v === 0), 'zeroed by the daemon').toBe(true);
    const end = buf.phys + 10_000n;
    expect(guestConfig().regions.some((r) => buf.phys >= BigInt(r.start) && end <= BigInt(r.end) + 1n), `${hex(Number(buf.phys))} lies in a reserved region`).toBe(true);
    new DataView(buf.bytes.buffer, buf.bytes.byteOffset).setUint32(8, 0xcafe1234, true);
    const fd = openFile('/dev/mem', true, false);
    const m = Mapping.map(fd, buf.phys - (buf.phys % 4096n), 4096, true, '/dev/mem'); // cached, like the daemon's and the client's
    closeFile(fd);
    expect(new DataView(m.buffer(m.view(0, 4096))!).getUint32(Number(buf.phys % 4096n) + 8, true)).toBe(0xcafe1234);
    m.close();
    await buf.free();
    await client.close();

    const err = throwsWith(() => open(), 'EBUSY');
    expect(err.message).toContain(`pid ${daemon.pid}`);
    expect(err.message).toContain('serve');
    daemon.kill('SIGTERM');
    await exited(daemon);
    expect(daemon.exitCode).toBe(0);

    // The other way round: this process holds the memory, so the daemon cannot serve it.
    open();
    const second = serve();
    children.push(second);
    let stderr = '';
    second.stderr.on('data', (d) => (stderr += d));
    await exited(second);
    expect(second.exitCode).toBe(1);
    expect(stderr).toMatch(/EBUSY: .*in use by this process|EBUSY: .*pid \d+/);
  });
});
