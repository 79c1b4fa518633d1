// DmaBuffer.syncForDevice / syncForCpu: the pool's checks and plumbing.
// Coherent pools (fake here; devmem and hugepage on x86 in the guest) make
// them no-ops after the checks. The non-coherent paths are driven through
// stand-in backends (the fake backend's memory with `coherent: false`, one
// recording sync calls and one without sync), because no non-coherent
// hardware is reachable here; what u-dma-buf receives is in udmabuf.test.ts.
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openPoolSync, Pool, type SyncDirection } from '../lib/index.js';
import { openFakeBackend } from '../lib/backends/fake.js';
import type { Backend, SyncDirectionCode } from '../lib/backends/types.js';

let pools: Pool[] = [];
afterEach(() => {
  pools.forEach((p) => p.close());
  pools = [];
});
function track(p: Pool): Pool {
  pools.push(p);
  return p;
}

type SyncCall = [phys: number, size: number, forDevice: boolean, direction: SyncDirectionCode];

/** The fake backend's memory presented as not coherent, recording each sync call (a stand-in). */
function recordingPool(physBase = 0x4000_0000n): { pool: Pool; calls: SyncCall[] } {
  const calls: SyncCall[] = [];
  const fake = openFakeBackend({ size: 1 << 20, physBase });
  const backend: Backend = { ...fake, coherent: false, sync: (phys, size, forDevice, dir) => void calls.push([phys, size, forDevice, dir]) };
  return { pool: track(new Pool(backend)), calls };
}

describe('sync on a coherent pool (fake backend)', () => {
  it('says coherent, and checks its arguments even though there is nothing to do', () => {
    const p = track(openPoolSync({ backend: 'fake', size: 1 << 20 }));
    expect(p.coherent).toBe(true);
    const b = p.alloc(100);
    expect(() => b.syncForDevice()).not.toThrow();
    expect(() => b.syncForCpu(10, 90, 'fromDevice')).not.toThrow();
    // A driver that passes a bad range on x86 would fail on a board that needs syncs: refuse it here too.
    for (const [off, len] of [[0, 101], [-1, 10], [101, 0], [0.5, 10], [10, Number.NaN]]) {
      expect(() => b.syncForDevice(off, len)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('outside the buffer of 100 bytes') }));
      expect(() => b.syncForCpu(off, len)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
    expect(() => b.syncForDevice(0, 10, 'sideways' as SyncDirection)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/direction/) }));
    b.free();
    expect(() => b.syncForDevice()).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/freed DmaBuffer/) }));
    const c = p.alloc(64);
    p.close();
    expect(() => c.syncForCpu()).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

// devmem on a simulated machine (memmap=64M$0x08000000; a sparse regular file as /dev/mem),
// as in devmem.test.ts: x86 DMA snoops the caches, so the pool is coherent.
describe('sync on devmem (simulated machine, regular file as /dev/mem)', () => {
  it('says coherent on x86 and does nothing but check', () => {
    const root = mkdtempSync(join(tmpdir(), 'physmem-sync-devmem-'));
    try {
      mkdirSync(join(root, 'proc'));
      writeFileSync(join(root, 'proc/iomem'), '00100000-07ffffff : System RAM\n08000000-0bffffff : Reserved\n0c000000-0fffffff : System RAM\n');
      writeFileSync(join(root, 'proc/cmdline'), 'root=/dev/vda memmap=64M$0x08000000\n');
      const fw = join(root, 'sys/firmware/memmap/0');
      mkdirSync(fw, { recursive: true });
      writeFileSync(join(fw, 'start'), '0x100000\n');
      writeFileSync(join(fw, 'end'), '0xfffffff\n');
      writeFileSync(join(fw, 'type'), 'System RAM\n');
      const devmem = join(root, 'mem');
      const fd = openSync(devmem, 'w');
      ftruncateSync(fd, 0x1000_0000);
      closeSync(fd);
      const p = track(openPoolSync({ backend: 'devmem', discoveryRoot: root, devicePath: devmem }));
      expect(p.stats().ranges.map((r) => r.start)).toEqual([0x0800_0000n]);
      expect(p.coherent).toBe(process.arch === 'x64' || process.arch === 'ia32');
      const b = p.alloc(4096);
      b.syncForDevice(0, 100, 'toDevice');
      b.syncForCpu();
      expect(() => b.syncForCpu(4000, 97)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    } finally {
      pools.forEach((p) => p.close());
      pools = [];
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('sync on a non-coherent pool (stand-in backends over fake memory)', () => {
  it("passes the backend phys + offset, length, the way, and Linux's direction code", () => {
    const { pool, calls } = recordingPool();
    expect(pool.coherent).toBe(false);
    const b = pool.alloc(4096, { at: 0x4000_2000n });
    b.syncForDevice();
    b.syncForCpu();
    b.syncForDevice(100, 200, 'toDevice');
    b.syncForCpu(4000, 96, 'fromDevice');
    b.syncForCpu(7, 1, 'bidirectional');
    b.syncForDevice(50, 0); // empty: nothing to do
    expect(calls).toEqual([
      [0x4000_2000, 4096, true, 0],
      [0x4000_2000, 4096, false, 0],
      [0x4000_2000 + 100, 200, true, 1],
      [0x4000_2000 + 4000, 96, false, 2],
      [0x4000_2000 + 7, 1, false, 0],
    ]);
  });

  it('defaults length to the rest of the buffer after offset', () => {
    const { pool, calls } = recordingPool();
    const b = pool.alloc(1000, { at: 0x4000_0000n });
    b.syncForCpu(600);
    expect(calls).toEqual([[0x4000_0000 + 600, 400, false, 0]]);
  });

  it('throws ENOTSUP when the backend cannot sync, instead of silently doing nothing', () => {
    const fake = openFakeBackend({ size: 1 << 20 });
    const p = track(new Pool({ ...fake, coherent: false }));
    const b = p.alloc(64);
    expect(() => b.syncForDevice()).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/not cache-coherent.*udmabuf/s) }));
    expect(() => b.syncForCpu()).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
  });

  it('sub-pool blocks sync their own bytes: block offset + offset, within the block', () => {
    const { pool, calls } = recordingPool();
    const sub = pool.createSubPool({ blockSize: 2048, count: 4, align: 2048 });
    const base = Number(sub.buffer.phys);
    sub.alloc();
    const b1 = sub.alloc();
    expect(b1.offset).toBe(2048);
    b1.syncForDevice();
    b1.syncForCpu(16, 32, 'fromDevice');
    expect(calls).toEqual([
      [base + 2048, 2048, true, 0],
      [base + 2048 + 16, 32, false, 2],
    ]);
    expect(() => b1.syncForDevice(2000, 49)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/outside the block of 2048 bytes/) }));
    b1.free();
    expect(() => b1.syncForCpu()).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/not allocated/) }));
    sub.close();
    expect(() => b1.syncForCpu()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(calls.length).toBe(2);
  });
});
