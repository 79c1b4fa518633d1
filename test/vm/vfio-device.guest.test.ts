// Runs inside the VM in the `iommu` config (q35 + intel-iommu, edu devices):
// physmem/vfio's device side against the real kernel. edu opened through
// VFIO, its registers through mapBar(0), config space through the VFIO config
// region, its interrupts (factorial done, DMA done, raised by hand) through
// MSI and INTx eventfds, the group viability error, and a non-root user
// driving edu end to end.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { EDU_DEVICE, EDU_VENDOR } from '../../examples/edu/edu.js';
import { closeFile, Mapping } from '../../lib/mapping.js';
import { native } from '../../lib/native.js';
import { bindDriver } from '../../lib/pci/bind.js';
import { driverOf, listPciDevices } from '../../lib/pci/sysfs.js';
import { VfioDevice, bindVfio, restoreDriver, vfioGroupOf } from '../../lib/vfio/index.js';
import { guestConfig, inGuest } from './guest.js';
import { rejectsWith } from '../helpers/errors.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cfg = inGuest ? guestConfig() : undefined;
const describeIommu = describe.skipIf(!inGuest || !cfg?.iommu);

// edu registers (QEMU docs/specs/edu.rst).
const ID = 0x00;
const LIVENESS = 0x04;
const FACTORIAL = 0x08;
const STATUS = 0x20;
const IRQ_STATUS = 0x24;
const IRQ_RAISE = 0x60;
const IRQ_ACK = 0x64;
const DMA_SRC = 0x80;
const DMA_DST = 0x88;
const DMA_COUNT = 0x90;
const DMA_CMD = 0x98;
const STATUS_IRQ_ON_FACTORIAL = 0x80;
const IRQ_FACTORIAL = 0x1;
const IRQ_DMA = 0x100;
const DMA_START = 0x1;
const DMA_TO_RAM = 0x2;
const DMA_IRQ = 0x4;
const EDU_BUFFER = 0x40000n;

// Deadlines are a safety net only (TCG on a loaded 2-core host): the
// assertions are on what arrived, never on how fast.
const WAIT = { timeoutMs: 20_000 };

function edus(): string[] {
  return listPciDevices({ vendor: EDU_VENDOR, device: EDU_DEVICE }).map((d) => d.bdf);
}

/** Wait until `done()` holds, polling a register; the deadline is a safety net. */
async function until(done: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (!done()) {
    if (Date.now() > end) throw new Error(`${what} did not happen`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Anonymous shared memory mapped into the device's container at `iova`. */
function dmaMemory(dev: VfioDevice, size: number, iova: bigint): { bytes: Uint8Array; close(): void } {
  const n = native();
  const fd = n.memfdCreate('vfio-device-test', size);
  const m = Mapping.map(fd, 0n, size, true, 'memfd');
  closeFile(fd);
  dev.container.mapDma(m.handle, 0, size, iova);
  const slot = m.view(0, size);
  return {
    bytes: new Uint8Array(m.buffer(slot)!),
    close() {
      dev.container.unmapDma(iova, size);
      m.release(slot);
      m.close();
    },
  };
}

describeIommu('VfioDevice on the real edu', () => {
  let bdf: string;
  let dev: VfioDevice;
  beforeAll(() => {
    bdf = edus()[0]!;
    bindVfio(bdf);
    dev = VfioDevice.open(bdf);
  });
  afterAll(() => dev?.close());
  afterEach(() => dev.disableInterrupts());

  it('bindVfio put edu on vfio-pci and /dev/vfio/<group> exists', () => {
    expect(driverOf(bdf)).toBe('vfio-pci');
    const g = vfioGroupOf(bdf);
    expect(dev.group).toBe(g.group);
    expect(fs.statSync(dev.groupPath).isCharacterDevice()).toBe(true);
    expect(bindVfio(bdf).previousDriver).toBeUndefined(); // idempotent
  });

  it('reads identity and command register through the VFIO config region', () => {
    expect(dev.readConfig16(0)).toBe(0x1234);
    expect(dev.readConfig16(2)).toBe(0x11e8);
    expect(dev.readConfig32(0)).toBe(0x11e81234);
    expect(dev.readConfig8(0x0e) & 0x7f).toBe(0); // header type 0
    expect(dev.readConfig8(0x3d)).toBe(1); // INTx pin A
    expect(() => dev.readConfig32(2)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => dev.readConfig8(dev.regions[7].size)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
  });

  it('region and irq infos: BAR0 1 MiB mmappable, config space, MSI 1 + INTx 1, no MSI-X, no reset', () => {
    expect(dev.info.pci).toBe(true);
    expect(dev.regions[0]).toMatchObject({ size: 1 << 20, mmap: true, readable: true, writable: true });
    expect(dev.regions[1].size).toBe(0);
    expect(dev.regions[7].size).toBeGreaterThanOrEqual(256);
    expect(dev.irqs[0]).toMatchObject({ count: 1, eventfd: true, maskable: true, automasked: true });
    expect(dev.irqs[1].count).toBe(1);
    expect(dev.irqs[2].count).toBe(0);
    expect(dev.resettable).toBe(false);
  });

  it('bus mastering starts off; setBusMaster flips bit 2 of the command register', () => {
    dev.setBusMaster(false);
    expect(dev.busMaster).toBe(false);
    const cmd = dev.readConfig16(4);
    dev.setBusMaster(true);
    expect(dev.readConfig16(4)).toBe(cmd | 4);
    expect(dev.busMaster).toBe(true);
  });

  it('mapBar(0): identification and liveness registers', () => {
    const regs = dev.mapBar(0);
    expect(regs.size).toBe(1 << 20);
    expect(regs.read32(ID) & 0xff).toBe(0xed);
    for (const v of [0x12345678, 0, 0xffffffff, 0xa5a5a5a5]) {
      regs.write32(LIVENESS, v);
      expect(regs.read32(LIVENESS)).toBe(~v >>> 0);
    }
    regs.close();
    expect(() => regs.read32(ID)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('MSI: factorial completion raises one interrupt, count 1, with the result ready', async () => {
    const regs = dev.mapBar(0);
    dev.setBusMaster(true);
    dev.enableInterrupts({ type: 'msi' });
    regs.write32(STATUS, STATUS_IRQ_ON_FACTORIAL);
    const got = dev.waitInterrupt(0, WAIT);
    regs.write32(FACTORIAL, 10);
    expect(await got).toBe(1);
    expect(regs.read32(FACTORIAL)).toBe(3628800);
    expect(regs.read32(IRQ_STATUS) & IRQ_FACTORIAL).toBe(IRQ_FACTORIAL);
    regs.write32(IRQ_ACK, IRQ_FACTORIAL);
    regs.write32(STATUS, 0);
    expect(regs.read32(IRQ_STATUS)).toBe(0);
  });

  it('MSI: DMA completion raises one; the data went RAM -> edu -> RAM through IOVAs', async () => {
    const regs = dev.mapBar(0);
    dev.setBusMaster(true);
    dev.enableInterrupts({ type: 'msi' });
    const mem = dmaMemory(dev, 16384, 0x10_0000n);
    try {
      randomFillSync(mem.bytes, 0, 2048);
      mem.bytes.fill(0, 4096);
      for (const [src, dst, cmd] of [
        [0x10_0000n, EDU_BUFFER, DMA_START | DMA_IRQ],
        [EDU_BUFFER, 0x10_1000n, DMA_START | DMA_TO_RAM | DMA_IRQ],
      ] as const) {
        regs.write64(DMA_SRC, src);
        regs.write64(DMA_DST, dst);
        regs.write64(DMA_COUNT, 2048n);
        regs.write32(DMA_CMD, cmd);
        expect(await dev.waitInterrupt(0, WAIT)).toBe(1);
        expect(regs.read32(DMA_CMD) & DMA_START).toBe(0);
        expect(regs.read32(IRQ_STATUS) & IRQ_DMA).toBe(IRQ_DMA);
        regs.write32(IRQ_ACK, IRQ_DMA);
      }
      expect(Buffer.from(mem.bytes.subarray(4096, 4096 + 2048)).equals(Buffer.from(mem.bytes.subarray(0, 2048)))).toBe(true);
    } finally {
      mem.close();
    }
  });

  it('MSI: two interrupts raised before anyone waits are kept and reported as count 2', async () => {
    const regs = dev.mapBar(0);
    dev.setBusMaster(true);
    dev.enableInterrupts({ type: 'msi' });
    regs.write32(IRQ_RAISE, 0x1000);
    regs.write32(IRQ_ACK, 0x1000);
    regs.write32(IRQ_RAISE, 0x2000);
    regs.write32(IRQ_ACK, 0x2000);
    // Let the event loop read the eventfd with nobody waiting.
    await new Promise((r) => setTimeout(r, 200));
    let total = 0;
    while (total < 2) total += await dev.waitInterrupt(0, WAIT);
    expect(total).toBe(2);
    await expect(dev.waitInterrupt(0, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('waitInterrupt times out with ETIMEDOUT when the device raises nothing, and aborts with ECANCELED', async () => {
    dev.enableInterrupts({ type: 'msi' });
    const t0 = Date.now();
    await rejectsWith(dev.waitInterrupt(0, { timeoutMs: 250 }), 'ETIMEDOUT', 'vector 0');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(240);
    const ac = new AbortController();
    const p = dev.waitInterrupt(0, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
    await expect(dev.waitInterrupt(1)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it("the 'interrupt' event and the async iterator both deliver", async () => {
    const regs = dev.mapBar(0);
    dev.setBusMaster(true);
    dev.enableInterrupts({ type: 'msi' });
    const seen: [number, number][] = [];
    const onIrq = (v: number, c: number): void => {
      seen.push([v, c]);
      regs.write32(IRQ_ACK, regs.read32(IRQ_STATUS));
    };
    dev.on('interrupt', onIrq);
    regs.write32(IRQ_RAISE, 0x10);
    await until(() => seen.length === 1, 'the interrupt event');
    dev.off('interrupt', onIrq);
    expect(seen).toEqual([[0, 1]]);

    const counts: number[] = [];
    const it = dev.interrupts(0);
    regs.write32(IRQ_RAISE, 0x20);
    for await (const c of it) {
      regs.write32(IRQ_ACK, 0x20);
      counts.push(c);
      if (counts.length === 3) break;
      regs.write32(IRQ_RAISE, 0x20);
    }
    expect(counts).toEqual([1, 1, 1]);
  });

  it('disableInterrupts rejects a pending wait with EBADF and ends the iterator', async () => {
    dev.enableInterrupts({ type: 'msi' });
    const p = dev.waitInterrupt(0);
    const it = dev.interrupts(0)[Symbol.asyncIterator]();
    const next = it.next();
    dev.disableInterrupts();
    await expect(p).rejects.toMatchObject({ code: 'EBADF' });
    await expect(next).resolves.toEqual({ value: undefined, done: true });
    await expect(dev.waitInterrupt(0)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('INTx: factorial and DMA interrupts arrive; the line is unmasked for the next one', async () => {
    const regs = dev.mapBar(0);
    dev.setBusMaster(true);
    dev.enableInterrupts({ type: 'intx' });
    expect(dev.interruptType).toBe('intx');
    regs.write32(STATUS, STATUS_IRQ_ON_FACTORIAL);
    regs.write32(FACTORIAL, 5);
    expect(await dev.waitInterrupt(0, WAIT)).toBe(1);
    expect(regs.read32(FACTORIAL)).toBe(120);
    regs.write32(IRQ_ACK, IRQ_FACTORIAL);
    regs.write32(STATUS, 0);
    const mem = dmaMemory(dev, 4096, 0x20_0000n);
    try {
      randomFillSync(mem.bytes);
      regs.write64(DMA_SRC, 0x20_0000n);
      regs.write64(DMA_DST, EDU_BUFFER);
      regs.write64(DMA_COUNT, 1024n);
      regs.write32(DMA_CMD, DMA_START | DMA_IRQ);
      expect(await dev.waitInterrupt(0, WAIT)).toBe(1);
      expect(regs.read32(IRQ_STATUS) & IRQ_DMA).toBe(IRQ_DMA);
      regs.write32(IRQ_ACK, IRQ_DMA);
    } finally {
      mem.close();
    }
    // Level-triggered: while masked, a raise is held by the device, not lost.
    regs.write32(IRQ_RAISE, 0x40);
    await new Promise((r) => setTimeout(r, 200));
    expect(await dev.waitInterrupt(0, WAIT)).toBe(1);
    regs.write32(IRQ_ACK, 0x40);
    await expect(dev.waitInterrupt(0, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('enableInterrupts refuses what edu does not offer, naming what it does', () => {
    expect(() => dev.enableInterrupts({ type: 'msix' })).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('0 msix') }));
    expect(() => dev.enableInterrupts({ type: 'msi', vectors: 4 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => dev.enableInterrupts({ type: 'nmi' as 'msi' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('reset() is ENOTSUP on edu (VFIO offers no reset for it), with what to do', () => {
    expect(() => dev.reset()).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringContaining('own registers') }));
  });

  it('a second open of the same device in this process is EBUSY; restoreDriver refuses an open device', () => {
    expect(() => VfioDevice.open(bdf)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => restoreDriver(bdf)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
  });

  it('close() is idempotent; afterwards everything is EBADF and the group can be opened again', () => {
    const regs = dev.mapBar(0);
    dev.enableInterrupts({ type: 'msi' });
    dev.close();
    dev.close();
    expect(dev.closed).toBe(true);
    expect(dev.container.closed).toBe(true); // its own container
    expect(() => regs.read32(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => dev.readConfig16(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => dev.mapBar(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => dev.enableInterrupts({ type: 'msi' })).toThrow(expect.objectContaining({ code: 'EBADF' }));
    dev = VfioDevice.open(bdf);
    expect(dev.mapBar(0).read32(ID) & 0xff).toBe(0xed);
  });
});

describeIommu('IOMMU groups with more than one device', () => {
  // Two edus behind a conventional PCI bridge share one IOMMU group (the
  // iommu config has such a pair when vfio-pool's config added it).
  const pair = (): [string, string] | undefined => {
    const byGroup = new Map<number, string[]>();
    for (const b of edus()) {
      const g = vfioGroupOf(b).group;
      byGroup.set(g, [...(byGroup.get(g) ?? []), b]);
    }
    const two = [...byGroup.values()].find((l) => l.length >= 2);
    return two === undefined ? undefined : [two[0], two[1]];
  };

  it('a member bound to another driver makes the group not viable: EBUSY names it and its driver', (ctx) => {
    const p = pair();
    if (p === undefined) return ctx.skip();
    const [a, b] = p;
    spawnSync('modprobe', ['uio_pci_generic']);
    bindVfio(a);
    bindDriver(b, 'uio_pci_generic');
    try {
      expect(() => VfioDevice.open(a)).toThrow(
        expect.objectContaining({ code: 'EBUSY', message: expect.stringContaining(`${b} (bound to uio_pci_generic)`) }),
      );
    } finally {
      bindVfio(b);
    }
  });

  it('two devices of one group share the group fd and container; the container closes with the last', async (ctx) => {
    const p = pair();
    if (p === undefined) return ctx.skip();
    const [a, b] = p;
    bindVfio(a);
    bindVfio(b);
    const da = VfioDevice.open(a);
    const db = VfioDevice.open(b);
    try {
      expect(da.container).toBe(db.container);
      const ra = da.mapBar(0);
      const rb = db.mapBar(0);
      ra.write32(LIVENESS, 1);
      rb.write32(LIVENESS, 2);
      expect([ra.read32(LIVENESS), rb.read32(LIVENESS)]).toEqual([0xfffffffe, 0xfffffffd]);
      da.setBusMaster(true);
      da.enableInterrupts({ type: 'msi' });
      db.enableInterrupts({ type: 'intx' });
      ra.write32(IRQ_RAISE, 1);
      rb.write32(IRQ_RAISE, 1);
      expect(await da.waitInterrupt(0, WAIT)).toBe(1);
      expect(await db.waitInterrupt(0, WAIT)).toBe(1);
      ra.write32(IRQ_ACK, 1);
      rb.write32(IRQ_ACK, 1);
      da.close();
      expect(db.container.closed).toBe(false);
    } finally {
      da.close();
      db.close();
    }
    expect(db.container.closed).toBe(true);
  });
});

describeIommu('a non-root user with access to /dev/vfio/<group>', () => {
  let bdf: string;
  let group: string;
  beforeAll(() => {
    bdf = edus()[0]!;
    bindVfio(bdf);
    group = vfioGroupOf(bdf).path;
  });
  afterAll(() => fs.chownSync(group, 0, 0));

  function asNobody(body: string): { status: number | null; out: string; err: string } {
    const script =
      `import { VfioDevice } from ${JSON.stringify(path.join(REPO, 'dist/lib/vfio/index.js'))};\n` +
      `import { Mapping, closeFile } from ${JSON.stringify(path.join(REPO, 'dist/lib/mapping.js'))};\n` +
      `import { native } from ${JSON.stringify(path.join(REPO, 'dist/lib/native.js'))};\n` +
      `const bdf = ${JSON.stringify(bdf)};\n` +
      `try {\n${body}\n} catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }\n`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: '/tmp',
      timeout: 120_000,
    });
    return { status: r.status, out: r.stdout, err: r.stderr };
  }

  it('without access: EACCES, and the message says chown or a udev rule', () => {
    fs.chownSync(group, 0, 0);
    const r = asNobody('VfioDevice.open(bdf); console.log(JSON.stringify({ ok: true }));');
    const res = JSON.parse(r.out.trim().split('\n').pop()!) as { code?: string; message?: string };
    expect(res.code).toBe('EACCES');
    expect(res.message).toContain('udev');
    expect(res.message).toContain(group);
  });

  it('after chown to uid 65534: open, registers, MSI interrupt on factorial, DMA round trip through its IOVAs', () => {
    fs.chownSync(group, 65534, 65534);
    const r = asNobody(`
      const dev = VfioDevice.open(bdf);
      const regs = dev.mapBar(0);
      dev.setBusMaster(true);
      dev.enableInterrupts({ type: 'msi' });
      regs.write32(0x20, 0x80);
      regs.write32(0x08, 6);
      const count = await dev.waitInterrupt(0, { timeoutMs: 20000 });
      const fact = regs.read32(0x08);
      regs.write32(0x64, 1);
      const n = native(); const fd = n.memfdCreate('nobody', 8192);
      const m = Mapping.map(fd, 0n, 8192, true, 'memfd'); closeFile(fd);
      dev.container.mapDma(m.handle, 0, 8192, 0x40000000n);
      const bytes = new Uint8Array(m.buffer(m.view(0, 8192)));
      for (let i = 0; i < 1000; i++) bytes[i] = (i * 7) & 0xff;
      const dma = async (src, dst, cmd) => { regs.write64(0x80, src); regs.write64(0x88, dst); regs.write64(0x90, 1000n); regs.write32(0x98, cmd); await dev.waitInterrupt(0, { timeoutMs: 20000 }); regs.write32(0x64, 0x100); };
      await dma(0x40000000n, 0x40000n, 5);
      await dma(0x40000n, 0x40001000n, 7);
      let same = true; for (let i = 0; i < 1000; i++) if (bytes[4096 + i] !== bytes[i]) same = false;
      dev.close();
      console.log(JSON.stringify({ ok: true, uid: process.getuid(), count, fact, same }));
    `);
    const res = JSON.parse(r.out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    expect(res, r.err).toEqual({ ok: true, uid: 65534, count: 1, fact: 720, same: true });
  });
});

describeIommu('examples/edu --vfio: the example driver on a vfio pool, by interrupts', () => {
  beforeAll(() => {
    bindVfio(edus()[0]);
  });

  it.each(['msi', 'intx'] as const)('mainVfio(%s): factorial and a DMA round trip completed by interrupts', async (type) => {
    const { mainVfio } = await import('../../examples/edu/vfio.js');
    const lines: string[] = [];
    await mainVfio(type, undefined, (l) => lines.push(l));
    expect(lines[0]).toContain(`interrupts: ${type}`);
    expect(lines).toContain('factorial(10) = 3628800 (by interrupt)');
    expect(lines.at(-1)).toMatch(/^DMA by interrupt: 2048 random bytes IOVA 0x[0-9a-f]+ -> edu -> IOVA 0x[0-9a-f]+: identical$/);
  });

  it('runs as a program (node dist/examples/edu/main.js --vfio intx) and exits 0', () => {
    const r = spawnSync(process.execPath, [path.join(REPO, 'dist/examples/edu/main.js'), '--vfio', 'intx'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('identical');
  });
});
