// examples/edu run unchanged on physmem/testing's FakeEdu (a model of QEMU's
// edu device: no VM), and the driver bugs that model catches. The real
// device runs the same example in the guest (test/vm/edu.guest.test.ts).
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Edu, EDU_BUFFER, EDU_MAX_END } from '../examples/edu/edu.js';
import { runExample } from '../examples/edu/main.js';
import { dmaWmb, openPoolSync, pollUntil, type Pool } from '../lib/index.js';
import type { Mmio } from '../lib/pci/index.js';
import { FakeEdu } from '../lib/testing/index.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let pool: Pool;
let fake: FakeEdu;
let edu: Edu;
let regs: Mmio;
beforeEach(() => {
  pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
  fake = new FakeEdu({ pool });
  regs = fake.mapBar(0);
  edu = new Edu(regs, { irq: fake, name: fake.bdf });
});
afterEach(() => {
  edu.close();
  fake.close();
  pool.close();
});

describe('examples/edu on the fake edu device (FakeEdu)', () => {
  it('runs the example unchanged: identity, liveness, factorial, a checked DMA round trip', () => {
    const lines: string[] = [];
    runExample(edu, pool, (l) => lines.push(l));
    expect(lines[0]).toBe('edu 1.0 at 0000:00:04.0, registers at 0xfea00000');
    expect(lines.slice(1, 3)).toEqual(['liveness: ok', 'factorial(10) = 3628800']);
    expect(lines[3]).toMatch(/^fake backend/);
    expect(lines[4]).toMatch(/^DMA: 2048 random bytes 0x[0-9a-f]+ -> edu -> 0x[0-9a-f]+: identical$/);
    expect(fake.violations).toEqual([]);
    expect(pool.stats().used).toBe(0);
  });

  it('runs as a program on the fake (node dist/examples/edu/main.js fake), no root, exit 0', () => {
    const out = execFileSync(process.execPath, [path.join(REPO, 'dist/examples/edu/main.js'), 'fake'], { encoding: 'utf8' });
    expect(out).toMatch(/^edu 1\.0 at 0000:00:04\.0 \(FakeEdu\).*\nliveness: ok\nfactorial\(10\) = 3628800\nfake backend.*\nDMA: 2048 random bytes .*: identical\n$/s);
  });

  it('answers like edu: inverse liveness, 32-bit only below 0x80, one 64-bit store at 0x80, wrapping factorial', () => {
    regs.write32(0x04, 0);
    expect(regs.read32(0x04)).toBe(0xffffffff);
    expect(regs.read8(0x00)).toBe(0xff); // narrower than 4 bytes below 0x80: all ones
    expect(regs.read64(0x00)).toBe(0xffff_ffff_ffff_ffffn);
    regs.write64(0x80, 0x1234_5678_9abc_def0n);
    expect(regs.read64(0x80)).toBe(0x1234_5678_9abc_def0n);
    expect(regs.read32(0x80)).toBe(0x9abcdef0);
    expect(edu.factorial(13)).toBe(Number(6227020800n % 2n ** 32n));
    expect(fake.violations.map((v) => v.kind)).toEqual(['register', 'register']); // the two narrow/wide reads
  });

  it('the device is busy until polled: a driver that reads the result without waiting gets n, not n!', () => {
    regs.write32(0x08, 5);
    expect(regs.read32(0x20) & 1).toBe(1); // computing
    expect(regs.read32(0x08)).toBe(120); // the second read let the device finish
  });

  it('interrupts: factorial by MSI and by INTx, raise and ack through 0x60/0x64', async () => {
    fake.enableInterrupts({ type: 'msi' });
    expect(await edu.factorialAsync(6)).toBe(720);
    expect(regs.read32(0x24)).toBe(0); // the driver acknowledged it
    regs.write32(0x60, 0x10000); // raise by hand
    expect(await fake.waitInterrupt(0)).toBe(1);
    expect(regs.read32(0x24)).toBe(0x10000);
    regs.write32(0x64, 0x10000);
    fake.enableInterrupts({ type: 'intx' });
    expect(await edu.factorialAsync(7)).toBe(5040);
    await expect(new Edu(regs).factorialAsync(3)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(fake.violations).toEqual([]);
  });

  it('a DMA with an interrupt when done, awaited instead of polled', async () => {
    fake.enableInterrupts({ type: 'msi' });
    const src = pool.alloc(256);
    randomFillSync(src.bytes);
    regs.write64Relaxed(0x80, src.bus);
    regs.write64Relaxed(0x88, BigInt(EDU_BUFFER));
    regs.write64Relaxed(0x90, 256n);
    regs.write32(0x98, 0x1 | 0x4); // start, interrupt when done
    expect(await fake.waitInterrupt(0, { timeoutMs: 10_000 })).toBe(1);
    expect(regs.read32(0x24)).toBe(0x100);
    expect([...fake.buffer.subarray(0, 256)]).toEqual([...src.bytes]);
    src.free();
  });
});

describe('driver bugs the fake edu catches', () => {
  /** A buggy driver: rings the doorbell, then writes the data it meant to send. */
  function doorbellBeforeData(src: { bus: bigint; bytes: Uint8Array }, length: number): void {
    regs.write64Relaxed(0x80, src.bus);
    regs.write64Relaxed(0x88, BigInt(EDU_BUFFER));
    regs.write64Relaxed(0x90, BigInt(length));
    regs.write32(0x98, 1); // start
    randomFillSync(src.bytes); // too late
    pollUntil(() => (regs.read32(0x98) & 1) === 0, { timeoutMs: 60_000, what: 'fake edu DMA done' });
  }

  it('a doorbell before the data was written: an ordering violation, and the device got the old bytes', () => {
    const src = pool.alloc(1024);
    doorbellBeforeData(src, 1024);
    expect(fake.violations).toEqual([{ kind: 'ordering', message: expect.stringMatching(/changed between the DMA start and the transfer: the driver wrote the data after ringing/) }]);
    expect(fake.buffer.subarray(0, 1024).every((b) => b === 0)).toBe(true); // zeroed at alloc, as it was at the doorbell
    expect(() => fake.assertNoViolations()).toThrow(expect.objectContaining({ code: 'EIO' }));
    src.free();
  });

  it('a relaxed doorbell with no write barrier is an ordering violation; dmaWmb() before it is correct', () => {
    const src = pool.alloc(64);
    const start = (barrier: boolean): void => {
      regs.write64Relaxed(0x80, src.bus);
      regs.write64Relaxed(0x88, BigInt(EDU_BUFFER));
      regs.write64Relaxed(0x90, 64n);
      if (barrier) dmaWmb();
      regs.write32Relaxed(0x98, 1);
      pollUntil(() => (regs.read32(0x98) & 1) === 0, { timeoutMs: 60_000, what: 'fake edu DMA done' });
    };
    start(true);
    expect(fake.violations).toEqual([]);
    start(false);
    expect(fake.violations).toEqual([{ kind: 'ordering', message: expect.stringMatching(/edu DMA start: relaxed write at 0x98 of BAR 0 with no write barrier/) }]);
    src.free();
  });

  it('a DMA into a freed buffer is caught (and writes nothing)', () => {
    const neighbour = pool.alloc(512);
    neighbour.bytes.fill(0x77);
    const dst = pool.alloc(512);
    const bus = dst.bus;
    dst.free();
    edu.fromDevice(0, bus, 512);
    expect(fake.violations).toEqual([{ kind: 'dma', message: expect.stringMatching(/DMA write of 512 bytes at bus 0x[0-9a-f]+ not inside a live allocation/) }]);
    expect(neighbour.bytes.every((b) => b === 0x77)).toBe(true);
    neighbour.free();
  });

  it('a buffer freed while the device still writes into it is caught', () => {
    const dst = pool.alloc(512);
    regs.write64Relaxed(0x80, BigInt(EDU_BUFFER));
    regs.write64Relaxed(0x88, dst.bus);
    regs.write64Relaxed(0x90, 512n);
    regs.write32(0x98, 0x1 | 0x2); // start, device -> RAM
    dst.free(); // before the transfer finished
    pollUntil(() => (regs.read32(0x98) & 1) === 0, { timeoutMs: 60_000, what: 'fake edu DMA done' });
    expect(fake.violations.map((v) => v.kind)).toEqual(['dma']);
  });

  it('QEMU 7.2\'s off-by-one: a transfer ending exactly at 0x41000 stops the device (the driver refuses it first)', () => {
    expect(() => edu.toDevice(0n, 0, EDU_MAX_END + 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const src = pool.alloc(4096);
    regs.write64Relaxed(0x80, src.bus);
    regs.write64Relaxed(0x88, BigInt(EDU_BUFFER));
    regs.write64Relaxed(0x90, 4096n);
    regs.write32(0x98, 1);
    regs.read32(0x98);
    regs.read32(0x98);
    expect(fake.dead).toBe(true);
    expect(regs.read32(0x00)).toBe(0xffffffff); // the VM is gone
    expect(fake.violations).toEqual([{ kind: 'device', message: expect.stringMatching(/DMA range 0x40000-0x40fff out of bounds .*QEMU issue 1254/) }]);
    src.free();
  });

  it('newer QEMU (offByOne: false) takes the full buffer; out of bounds is dropped, not fatal', () => {
    const fixed = new FakeEdu({ pool, offByOne: false });
    const r = fixed.mapBar(0);
    const src = pool.alloc(8192);
    randomFillSync(src.bytes);
    for (const [count, ok] of [[4096n, true], [4097n, false]] as const) {
      r.write64(0x80, src.bus);
      r.write64(0x88, BigInt(EDU_BUFFER));
      r.write64(0x90, count);
      r.write32(0x98, 1);
      pollUntil(() => (r.read32(0x98) & 1) === 0, { timeoutMs: 60_000, what: 'fake edu DMA done' });
      expect(fixed.violations.length).toBe(ok ? 0 : 1);
    }
    expect(fixed.dead).toBe(false);
    expect([...fixed.buffer]).toEqual([...src.bytes.subarray(0, 4096)]);
    src.free();
    fixed.close();
  });

  it('an address outside the device\'s dma_mask (QEMU\'s default 28 bits; the fake pool sits at 4 GiB)', () => {
    const narrow = new FakeEdu({ pool, dmaMask: 0xfff_ffffn });
    const d = new Edu(narrow.mapBar(0));
    const src = pool.alloc(64);
    d.toDevice(src.bus, 0, 64);
    expect(narrow.violations[0]).toEqual({ kind: 'device', message: expect.stringMatching(/outside dma_mask 0xfffffff; QEMU clamps it/) });
    src.free();
    narrow.close();
  });
});
