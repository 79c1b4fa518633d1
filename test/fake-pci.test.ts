// physmem/testing's FakePciDevice: a register model behind the real Mmio
// class (same checks), ordering as the model sees it, DMA with the pool's
// checks, and interrupts through the InterruptSource interface. Everything
// runs on the fake backend (fake devices: no hardware needed).
import { afterEach, describe, expect, it } from 'vitest';
import { dmaWmb, openPoolSync, type Pool } from '../lib/index.js';
import { FakePciDevice, type RegisterAccess } from '../lib/testing/index.js';

let pool: Pool;
let dev: FakePciDevice;
afterEach(() => {
  dev?.close();
  pool?.close();
});

function make(): { dev: FakePciDevice; writes: { value: number | bigint; access: RegisterAccess }[] } {
  pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
  dev = new FakePciDevice({ pool, bars: [{ size: 4096 }, undefined, { size: 64, phys: 0xd0000000n }], interrupts: { msi: 2, intx: true } });
  const writes: { value: number | bigint; access: RegisterAccess }[] = [];
  let ctrl = 0x1234;
  dev.defineRegister(0, { offset: 0x10, read: () => ctrl, write: (v, a) => (writes.push({ value: v, access: a }), (ctrl = Number(v))) });
  dev.defineRegister(0, { offset: 0x20, widths: [4, 8], read: () => 0x1122334455667788n, write: (v, a) => writes.push({ value: v, access: a }) });
  dev.defineRegister(0, { offset: 0x100, size: 0x100, widths: [1, 2, 4], read: (a) => a.offset & 0xff, write: (v, a) => writes.push({ value: v, access: a }) });
  return { dev, writes };
}

describe('fake PCI device: a register model behind Mmio', () => {
  it('reads and writes reach the handlers with offset, width and value', () => {
    const { dev, writes } = make();
    const regs = dev.mapBar(0);
    expect(regs).toMatchObject({ size: 4096, bar: 0, path: 'fake:0000:00:00.0/resource0', writeCombining: false });
    expect(dev.mapBar(2).phys).toBe(0xd0000000n);
    expect(regs.read32(0x10)).toBe(0x1234);
    regs.write32(0x10, ~0); // two's complement, as on hardware
    expect(regs.read32(0x10)).toBe(0xffffffff);
    expect(regs.read64(0x20)).toBe(0x1122334455667788n);
    expect(regs.read32(0x20)).toBe(0x55667788); // a narrower read gets the low bytes
    regs.write64(0x20, -1n);
    expect(regs.read8(0x1ab)).toBe(0xab); // a range handler
    expect(regs.read16(0x1fe)).toBe(0xfe);
    regs.write16Relaxed(0x102, 0xbeef);
    expect(writes.map((w) => [w.access.offset, w.access.width, w.value])).toEqual([
      [0x10, 4, 0xffffffff],
      [0x20, 8, 0xffffffffffffffffn],
      [0x102, 2, 0xbeef],
    ]);
    expect(dev.violations).toEqual([]);
  });

  it('the same offset, alignment, range and value checks as a hardware BAR', () => {
    const { dev } = make();
    const regs = dev.mapBar(0);
    expect(() => regs.read32(0x12)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/multiple of 4/) }));
    expect(() => regs.write32Relaxed(4096, 0)).toThrow(expect.objectContaining({ code: 'ERANGE', message: expect.stringMatching(/outside the BAR of 4096 bytes/) }));
    expect(() => regs.write8(0x100, 300)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => dev.mapBar(1)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    regs.close();
    expect(() => regs.read32(0x10)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(dev.violations).toEqual([]);
  });

  it('an absent register or a wrong width reads all ones, drops the write, and is a violation', () => {
    const { dev, writes } = make();
    const regs = dev.mapBar(0);
    expect(regs.read32(0x40)).toBe(0xffffffff);
    expect(regs.read64(0x10)).toBe(0xffffffffffffffffn); // 0x10 takes 4-byte accesses only
    regs.write16(0x10, 5);
    expect(regs.read32(0x10)).toBe(0x1234); // unchanged
    expect(writes).toEqual([]);
    expect(dev.violations.map((v) => v.kind)).toEqual(['register', 'register', 'register']);
    expect(dev.violations[1].message).toMatch(/read64 at 0x10 of BAR 0: the register takes 4-byte accesses/);
    expect(() => dev.assertNoViolations()).toThrow(expect.objectContaining({ code: 'EIO', message: expect.stringMatching(/3 thing\(s\).*\n.*\[register\] 0000:00:00.0: read32 at 0x40/s) }));
  });

  it('ordering: writeN is ordered; a relaxed write is ordered only after a write barrier since the last check', () => {
    const { dev, writes } = make();
    const regs = dev.mapBar(0);
    regs.write32(0x10, 1);
    regs.write32Relaxed(0x10, 2);
    dmaWmb();
    regs.write32Relaxed(0x10, 3);
    expect(writes.map((w) => w.access.ordered)).toEqual([true, false, true]);
    expect(dev.checkOrdered(writes[2].access, 'doorbell')).toBe(true);
    regs.write32Relaxed(0x10, 4); // no barrier since that check
    expect(dev.checkOrdered(writes[3].access, 'doorbell')).toBe(false);
    expect(dev.violations).toEqual([{ kind: 'ordering', message: expect.stringMatching(/doorbell: relaxed write at 0x10 of BAR 0 with no write barrier/) }]);
  });

  it('DMA helpers go through the pool with FakeDmaDevice\'s checks and record failures', () => {
    const { dev } = make();
    const buf = pool.alloc(64);
    expect(dev.dmaWrite(buf.bus, new Uint8Array([1, 2, 3]))).toBe(true);
    expect([...buf.bytes.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect([...dev.dmaRead(buf.busAt(1), 2)!]).toEqual([2, 3]);
    const bus = buf.bus;
    buf.free();
    expect(dev.dmaWrite(bus, new Uint8Array(4))).toBe(false);
    expect(dev.dmaRead(bus, 4)).toBeUndefined();
    expect(dev.violations.map((v) => v.kind)).toEqual(['dma', 'dma']);
    expect(dev.violations[0].message).toMatch(/not inside a live allocation/);
  });

  it('scheduled work finishes on the latencyReads-th register read, or when the event loop turns', async () => {
    const { dev } = make();
    const regs = dev.mapBar(0);
    let done = 0;
    dev.schedule(() => done++);
    regs.read32(0x10);
    expect(done).toBe(0); // the driver sees the device busy once
    regs.read32(0x10);
    expect(done).toBe(1);
    dev.schedule(() => done++);
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(2);
  });
});

describe('fake PCI device: interrupts (InterruptSource)', () => {
  it('MSI: every raise counts; a wait takes the count since the last one', async () => {
    const { dev } = make();
    dev.raiseInterrupt(0); // not enabled: dropped
    dev.enableInterrupts({ type: 'msi', vectors: 2 });
    dev.raiseInterrupt(1);
    dev.raiseInterrupt(1);
    expect(await dev.waitInterrupt(1)).toBe(2);
    const p = dev.waitInterrupt(0, { timeoutMs: 10_000 });
    dev.raiseInterrupt(0);
    expect(await p).toBe(1);
    await expect(dev.waitInterrupt(0, { timeoutMs: 1 })).rejects.toMatchObject({ code: 'ETIMEDOUT', message: expect.stringMatching(/no interrupt on vector 0/) });
  });

  it('INTx: a level; raising a raised line is no new interrupt until it is lowered', async () => {
    const { dev } = make();
    dev.enableInterrupts({ type: 'intx' });
    dev.raiseInterrupt();
    dev.raiseInterrupt();
    expect(await dev.waitInterrupt(0)).toBe(1);
    dev.lowerInterrupt();
    dev.raiseInterrupt();
    expect(await dev.waitInterrupt(0)).toBe(1);
  });

  it('the async iterator yields counts and ends when interrupts are disabled; aborts and bad vectors are typed', async () => {
    const { dev } = make();
    dev.enableInterrupts({ type: 'msi' });
    const seen: number[] = [];
    const loop = (async () => {
      for await (const n of dev.interrupts(0)) {
        seen.push(n);
        if (seen.length === 2) setImmediate(() => dev.disableInterrupts());
        else setImmediate(() => dev.raiseInterrupt(0));
      }
    })();
    dev.raiseInterrupt(0);
    await loop;
    expect(seen).toEqual([1, 1]);
    await expect(dev.waitInterrupt(0)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/call enableInterrupts\(\) first/) });
    dev.enableInterrupts({ type: 'msi' });
    const ac = new AbortController();
    const p = dev.waitInterrupt(0, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
    const q = dev.waitInterrupt(0);
    dev.close();
    await expect(q).rejects.toMatchObject({ code: 'EBADF' });
    expect(() => dev.enableInterrupts({ type: 'msi' })).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('refuses interrupt types and counts the device does not offer', () => {
    const { dev } = make();
    expect(() => dev.enableInterrupts({ type: 'msix' })).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/offers 0 msix/) }));
    expect(() => dev.enableInterrupts({ type: 'msi', vectors: 3 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error not a type
    expect(() => dev.enableInterrupts({ type: 'legacy' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});
