// Host tests of physmem/vfio's device side where no IOMMU exists: group
// diagnostics on a fake sysfs tree, interrupt delivery over REAL eventfds
// and the addon's libuv watcher with the VFIO ioctls faked, Mmio over a
// VFIO-style region (mapped areas plus pread/pwrite holes) backed by a plain
// file, and the addon refusing bad input. The real device is exercised in
// test/vm/vfio-device.guest.test.ts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { native, setNativeAddonForTesting, type NativeAddon } from '../lib/native.js';
import { Mmio } from '../lib/pci/mmio.js';
import { bindVfio, checkGroupViable, openVfioGroup, vfioGroupOf } from '../lib/vfio/index.js';
import { VfioInterrupts, type InterruptHost } from '../lib/vfio/irq.js';
import { makeSysfs, setFakeDriver, MEM } from './helpers/fake-sysfs.js';

const skipNative = process.platform !== 'linux';

/** Waits until `cond()` holds; the 30 s deadline only stops a hang (the caller's assertions then fail). */
async function until(cond: () => boolean): Promise<void> {
  for (const end = Date.now() + 30_000; !cond() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
}

describe('VFIO groups on a fake sysfs tree', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-vfio-sysfs-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  function member(group: number, bdf: string): void {
    fs.symlinkSync(path.join(root, 'bus/pci/devices', bdf), path.join(root, 'kernel/iommu_groups', String(group), 'devices', bdf));
  }

  it('no IOMMU at all: ENODEV saying to boot with intel_iommu=on or amd_iommu=on', () => {
    makeSysfs(root, [{ bdf: '0000:00:03.0', vendor: 0x1234, device: 0x11e8 }]);
    for (const f of [() => vfioGroupOf('00:03.0', { sysfsRoot: root }), () => bindVfio('00:03.0', { sysfsRoot: root })]) {
      expect(f).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringMatching(/intel_iommu=on.*amd_iommu=on/) }));
    }
  });

  it('vfio-pci not loaded: bindVfio and open say modprobe vfio-pci', () => {
    makeSysfs(root, [{ bdf: '0000:00:03.0', vendor: 0x1234, device: 0x11e8, iommuGroup: { group: 7, type: 'DMA-FQ' } }]);
    member(7, '0000:00:03.0');
    expect(() => bindVfio('0000:00:03.0', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringContaining('modprobe vfio-pci') }));
    expect(() => openVfioGroup('0000:00:03.0', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringContaining('modprobe vfio-pci') }));
  });

  it('a device not bound to vfio-pci: EBUSY saying bindVfio', () => {
    makeSysfs(root, [{ bdf: '0000:00:03.0', vendor: 0x1234, device: 0x11e8, driver: 'nvme', iommuGroup: { group: 7, type: 'DMA' } }]);
    fs.mkdirSync(path.join(root, 'bus/pci/drivers/vfio-pci'));
    member(7, '0000:00:03.0');
    expect(() => openVfioGroup('0000:00:03.0', { sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/bound to nvme, not to vfio-pci.*bindVfio\('0000:00:03.0'\)/) }),
    );
  });

  it('group viability: every member bound elsewhere is named with its driver; vfio-pci, none, pci-stub pass', () => {
    makeSysfs(root, [
      { bdf: '0000:01:00.0', vendor: 0x8086, device: 0x1533, driver: 'vfio-pci', iommuGroup: { group: 2, type: 'DMA' } },
      { bdf: '0000:01:00.1', vendor: 0x8086, device: 0x1533, driver: 'igb', resources: [[0xfe000000n, 0xfe01ffffn, MEM]] },
      { bdf: '0000:01:00.2', vendor: 0x8086, device: 0x1533, driver: 'e1000e' },
      { bdf: '0000:01:00.3', vendor: 0x8086, device: 0x1533 },
      { bdf: '0000:01:00.4', vendor: 0x8086, device: 0x1533, driver: 'pci-stub' },
    ]);
    fs.mkdirSync(path.join(root, 'bus/pci/drivers/vfio-pci'), { recursive: true });
    for (const f of ['0', '1', '2', '3', '4']) {
      const bdf = `0000:01:00.${f}`;
      if (f !== '0') fs.symlinkSync(path.join(root, 'kernel/iommu_groups/2'), path.join(root, 'bus/pci/devices', bdf, 'iommu_group'));
      member(2, bdf);
    }
    const info = vfioGroupOf('0000:01:00.0', { sysfsRoot: root, devDir: '/dev/vfio' });
    expect(info.group).toBe(2);
    expect(info.path).toBe('/dev/vfio/2');
    expect(info.offenders.map((o) => o.bdf)).toEqual(['0000:01:00.1', '0000:01:00.2']);
    expect(() => openVfioGroup('0000:01:00.0', { sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'EBUSY', message: expect.stringContaining('0000:01:00.1 (bound to igb), 0000:01:00.2 (bound to e1000e)') }),
    );
    setFakeDriver(root, '0000:01:00.1', 'vfio-pci');
    setFakeDriver(root, '0000:01:00.2', undefined);
    expect(() => checkGroupViable(vfioGroupOf('0000:01:00.0', { sysfsRoot: root }), '0000:01:00.0')).not.toThrow();
  });
});

// ---- interrupts over real eventfds, VFIO ioctls faked -----------------------

interface FakeIrqKernel {
  routed: Map<number, number[]>; // index -> eventfds
  unmasks: number;
  disables: number;
  fire(vector: number, n?: number): void;
}

function fakeIrqKernel(): FakeIrqKernel {
  const real = native();
  const k: FakeIrqKernel = {
    routed: new Map(),
    unmasks: 0,
    disables: 0,
    fire(vector, n = 1) {
      const fds = [...k.routed.values()][0];
      if (fds === undefined) throw new Error('nothing routed');
      real.eventfdWrite(fds[vector], n);
    },
  };
  const fake: NativeAddon = Object.create(real) as NativeAddon;
  fake.vfioIrqSetEventfds = (_fd, index, start, fds) => {
    expect(start).toBe(0);
    k.routed.set(index, [...fds]);
  };
  fake.vfioIrqDisable = (_fd, index) => {
    k.disables++;
    k.routed.delete(index);
  };
  fake.vfioIrqUnmask = () => {
    k.unmasks++;
  };
  setNativeAddonForTesting(fake);
  return k;
}

describe.skipIf(skipNative)('interrupts (fake device: VFIO ioctls faked, eventfds and the libuv watcher real)', () => {
  let k: FakeIrqKernel;
  let irq: VfioInterrupts;
  let emitted: [number, number][];
  let listening: boolean;
  beforeEach(() => {
    k = fakeIrqKernel();
    emitted = [];
    listening = false;
    const host: InterruptHost = {
      fd: 99,
      label: 'fake 0000:00:03.0',
      irqCount: (index) => [1, 4, 8][index] ?? 0,
      emit: (v, c) => {
        if (listening) emitted.push([v, c]);
        return listening;
      },
    };
    irq = new VfioInterrupts(host);
  });
  afterEach(() => {
    irq.disable();
    setNativeAddonForTesting(undefined);
  });

  it('waitInterrupt resolves with the count; interrupts while nobody waits are kept and summed', async () => {
    irq.enable({ type: 'msix', vectors: 3 });
    expect(k.routed.get(2)).toHaveLength(3);
    const p = irq.wait(1);
    k.fire(1);
    expect(await p).toBe(1);
    k.fire(2);
    k.fire(2, 2);
    await new Promise((r) => setTimeout(r, 50)); // the loop reads the eventfd with nobody waiting
    expect(await irq.wait(2)).toBe(3);
    await expect(irq.wait(2, { timeoutMs: 20 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('vectors are independent: a fire on vector 0 does not wake a wait on vector 1', async () => {
    irq.enable({ type: 'msi', vectors: 2 });
    const w1 = irq.wait(1);
    let settled = false;
    void w1.then(() => (settled = true));
    k.fire(0);
    expect(await irq.wait(0)).toBe(1);
    expect(settled).toBe(false);
    k.fire(1);
    expect(await w1).toBe(1);
  });

  it('ETIMEDOUT, ECANCELED (already aborted and aborted while waiting), EINVAL for a vector not enabled', async () => {
    irq.enable({ type: 'msi' });
    await expect(irq.wait(0, { timeoutMs: 10 })).rejects.toMatchObject({ code: 'ETIMEDOUT', message: expect.stringContaining('vector 0 of fake 0000:00:03.0') });
    await expect(irq.wait(0, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ECANCELED' });
    const ac = new AbortController();
    const p = irq.wait(0, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
    // The interrupt after an aborted wait is not lost.
    k.fire(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(await irq.wait(0)).toBe(1);
    await expect(irq.wait(1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(irq.wait(0, { timeoutMs: -1 })).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('enable refuses more vectors than offered and unknown types; not enabled is EBADF', async () => {
    expect(() => irq.enable({ type: 'msi', vectors: 5 })).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('offers 4 msi') }));
    expect(() => irq.enable({ type: 'intx', vectors: 0 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => irq.enable({ type: 'legacy' as 'intx' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    await expect(irq.wait(0)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('disable rejects waiters with EBADF, ends iterators, closes the eventfds, and is idempotent', async () => {
    irq.enable({ type: 'msi', vectors: 2 });
    const fds = k.routed.get(1)!;
    const p = irq.wait(0);
    const it = irq.iterate(1);
    const next = it.next();
    irq.disable();
    irq.disable();
    expect(k.disables).toBe(1);
    await expect(p).rejects.toMatchObject({ code: 'EBADF' });
    await expect(next).resolves.toEqual({ value: undefined, done: true });
    for (const fd of fds) expect(() => fs.fstatSync(fd)).toThrow(); // closed
  });

  it('the async iterator yields each delivery', async () => {
    irq.enable({ type: 'msi' });
    const got: number[] = [];
    k.fire(0, 2);
    for await (const c of irq.iterate(0)) {
      got.push(c);
      if (got.length === 3) break;
      k.fire(0);
    }
    expect(got).toEqual([2, 1, 1]);
  });

  it("deliveries no waiter takes go to the 'interrupt' listeners before the pending count", async () => {
    irq.enable({ type: 'msi' });
    listening = true;
    k.fire(0, 3);
    await until(() => emitted.length > 0); // the loop's read of the eventfd
    expect(emitted).toEqual([[0, 3]]);
    listening = false;
    await expect(irq.wait(0, { timeoutMs: 20 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('INTx: masked by the delivery, unmasked only when the consumer asks for the next one', async () => {
    irq.enable({ type: 'intx' });
    const p = irq.wait(0);
    expect(k.unmasks).toBe(0);
    k.fire(0);
    expect(await p).toBe(1);
    expect(k.unmasks).toBe(0); // the driver has not acknowledged the device yet
    const q = irq.wait(0);
    expect(k.unmasks).toBe(1);
    k.fire(0);
    expect(await q).toBe(1);
    listening = true; // listeners service synchronously: unmask right after them
    k.fire(0);
    await until(() => emitted.length > 0); // the loop's read of the eventfd
    expect(emitted).toEqual([[0, 1]]);
    expect(k.unmasks).toBe(2);
  });
});

// ---- Mmio over a VFIO-style region ---------------------------------------------

describe.skipIf(skipNative)('Mmio over a VFIO region: mmapped areas and pread/pwrite holes (a plain file stands in for the device fd)', () => {
  let file: string;
  let fd: number;
  const page = 4096;
  const base = 3 * page; // the region's offset in the "device fd"
  beforeEach(() => {
    file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-vfio-mmio-')), 'region');
    fs.writeFileSync(file, Buffer.alloc(base + 4 * page));
    fd = native().open(file, true, false);
  });
  afterEach(() => {
    native().close(fd);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });

  function region(mmap: { offset: number; size: number }[]): Mmio {
    return new Mmio({ kind: 'vfio', path: 'fake region', size: 4 * page, bar: 2, phys: 0xfe000000n, fd, offset: base, mmap });
  }

  it('accesses in mapped areas and in the holes (sparse mmap, MSI-X table) all reach the region at the right offset', () => {
    // Areas: page 0 and page 3; pages 1-2 are the hole (as an MSI-X table would be).
    const m = region([{ offset: 3 * page, size: page }, { offset: 0, size: page }]);
    m.write32(0x10, 0xdeadbeef); // mapped
    m.write32(page + 0x20, 0x11223344); // hole: pwrite
    m.write16(2 * page + 6, 0xabcd); // hole
    m.write8(2 * page + 9, 0x7f);
    m.write64(3 * page + 8, 0x0102030405060708n); // mapped
    m.write64(page + 0x40, 0x1112131415161718n); // hole
    const f = fs.readFileSync(file);
    expect(f.readUInt32LE(base + 0x10)).toBe(0xdeadbeef);
    expect(f.readUInt32LE(base + page + 0x20)).toBe(0x11223344);
    expect(f.readUInt16LE(base + 2 * page + 6)).toBe(0xabcd);
    expect(f[base + 2 * page + 9]).toBe(0x7f);
    expect(f.readBigUInt64LE(base + 3 * page + 8)).toBe(0x0102030405060708n);
    expect(f.readBigUInt64LE(base + page + 0x40)).toBe(0x1112131415161718n);
    // Reads come back the same way.
    expect(m.read32(page + 0x20)).toBe(0x11223344);
    expect(m.read16(2 * page + 6)).toBe(0xabcd);
    expect(m.read8(2 * page + 9)).toBe(0x7f);
    expect(m.read64(page + 0x40)).toBe(0x1112131415161718n);
    expect(m.read32(0x10)).toBe(0xdeadbeef);
    // A store through the file shows in the mapped area (same pages).
    const b = Buffer.alloc(4);
    b.writeUInt32LE(0xcafef00d);
    fs.writeSync(fs.openSync(file, 'r+'), b, 0, 4, base + 3 * page);
    expect(m.read32(3 * page)).toBe(0xcafef00d);
    m.close();
    expect(() => m.read32(page)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('a region VFIO will not map at all is served entirely by pread/pwrite; bounds and alignment still checked', () => {
    const m = region([]);
    m.write32(0, 0x55aa55aa);
    expect(fs.readFileSync(file).readUInt32LE(base)).toBe(0x55aa55aa);
    expect(m.read32(0)).toBe(0x55aa55aa);
    expect(() => m.read32(4 * page)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => m.read32(2)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    m.close();
  });
});

// ---- the addon refuses bad input ------------------------------------------------

describe.skipIf(skipNative)('native VFIO device functions refuse bad input without crashing', () => {
  it('typed errors for bad widths, fds, values and callbacks; ENOTTY for a non-VFIO fd', () => {
    const n = native();
    const efd = n.eventfdCreate();
    try {
      expect(() => n.pread(efd, 0, 3 as 4)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.pwrite(efd, 0, 1, 256)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.pread(-1, 0, 4)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.pread(123456, 0, 4)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(() => n.vfioDeviceGetInfo(efd)).toThrow(expect.objectContaining({ errno: 25, syscall: 'ioctl VFIO_DEVICE_GET_INFO' }));
      expect(() => n.vfioIrqSetEventfds(efd, 0, 0, ['x' as unknown as number])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.vfioIrqSetEventfds(efd, 0, 0, [])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.eventfdWatch(efd, 'no' as unknown as () => void)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => n.eventfdWatch(987654, () => {})).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(() => n.eventfdUnwatch(424242)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(n.eventfdRead(efd)).toBe(0);
      n.eventfdWrite(efd, 5);
      expect(n.eventfdRead(efd)).toBe(5);
    } finally {
      n.close(efd);
    }
  });

  it('a watcher whose callback unwatches itself, a worker ending with a live watch, and an unreferenced watch let the process end cleanly', () => {
    const addon = path.resolve('build/Release/physmem.node');
    const script = `
      const { Worker } = require('node:worker_threads');
      const n = require(${JSON.stringify(addon)});
      const fd = n.eventfdCreate();
      const id = n.eventfdWatch(fd, (c) => { n.eventfdUnwatch(id); n.close(fd); console.log('self', c); });
      n.eventfdWrite(fd, 2);
      const w = new Worker(\`const n = require(${JSON.stringify(addon)}); const fd = n.eventfdCreate();
        n.eventfdWatch(fd, (c) => { console.log('worker', c); process.exit(0); }); n.eventfdWrite(fd, 3);\`, { eval: true });
      w.on('exit', (code) => console.log('worker exit', code));
      // Unreferenced: does not keep the process alive (nobody waits on it).
      const idle = n.eventfdWatch(n.eventfdCreate(), () => {});
      n.eventfdWatchRef(idle, false);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual(['self 2', 'worker 3', 'worker exit 0']);
  });
});
