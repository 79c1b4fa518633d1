/**
 * The conformance suite: behaviour every backend must show. Run on the fake
 * backend on the host (conformance.test.ts) and on the real backends inside
 * the guest (test/vm).
 */
import { describe, expect, it, afterEach } from 'vitest';
import type { Pool } from '../../lib/index.js';

/** Opens a fresh pool of the backend under test; the suite closes it. */
export type PoolFactory = () => Pool;

function pattern(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function conformanceSuite(name: string, open: PoolFactory): void {
  describe(`conformance: ${name}`, () => {
    let pool: Pool | undefined;
    const fresh = () => (pool = open());
    afterEach(() => pool?.close());

    it('hands out blocks inside the pool ranges, aligned as asked', () => {
      const p = fresh();
      const ranges = p.stats().ranges;
      for (const align of [64, 4096, 65536]) {
        const b = p.alloc(1000, { align });
        expect(b.phys % BigInt(align)).toBe(0n);
        const inside = ranges.some((r) => b.phys >= r.start && b.phys + BigInt(b.size) <= r.start + BigInt(r.size));
        expect(inside).toBe(true);
        expect(b.bus).toBe(p.toBus(b.phys));
      }
    });

    it('bytes cover exactly the block, in an ArrayBuffer of their own', () => {
      const p = fresh();
      const b = p.alloc(3000);
      expect(b.bytes.length).toBe(3000);
      expect(b.bytes.byteOffset).toBe(0);
      expect(b.bytes.buffer.byteLength).toBe(3000);
    });

    it('zeroes blocks by default and keeps data with zero: false', () => {
      const p = fresh();
      const a = p.alloc(8192, { align: 4096 });
      const at = a.phys;
      a.bytes.fill(0xa5);
      a.free();
      const b = p.alloc(8192, { at, zero: false });
      expect(b.bytes.every((v) => v === 0xa5)).toBe(true);
      b.free();
      const c = p.alloc(8192, { at });
      expect(c.bytes.every((v) => v === 0)).toBe(true);
    });

    it('keeps the data of live buffers apart (no overlap)', () => {
      const p = fresh();
      const bufs = Array.from({ length: 32 }, (_, i) => p.alloc(512 + i * 97, { align: 64 }));
      bufs.forEach((b, i) => b.bytes.set(pattern(i + 1, b.size)));
      bufs.forEach((b, i) => expect(Buffer.from(b.bytes).equals(Buffer.from(pattern(i + 1, b.size)))).toBe(true));
      const sorted = [...bufs].sort((x, y) => (x.phys < y.phys ? -1 : 1));
      for (let i = 1; i < sorted.length; i++) expect(sorted[i - 1].phys + BigInt(sorted[i - 1].size) <= sorted[i].phys).toBe(true);
    });

    it('honours boundary and maxAddress', () => {
      const p = fresh();
      for (let i = 0; i < 50; i++) {
        const b = p.alloc(1500, { boundary: 4096, align: 64 });
        expect(b.phys / 4096n).toBe((b.phys + 1499n) / 4096n);
      }
      const lowest = p.stats().ranges[0].start;
      const max = lowest + 0x20_0000n - 1n;
      const c = p.alloc(4096, { maxAddress: max });
      expect(c.phys + 4095n <= max).toBe(true);
    });

    it('detaches bytes on free, refuses a second free, frees by address', () => {
      const p = fresh();
      const b = p.alloc(4096);
      const view = new Uint32Array(b.bytes.buffer);
      b.free();
      expect(b.bytes.length).toBe(0);
      expect(view.length).toBe(0);
      expect(() => b.free()).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      const c = p.alloc(4096);
      p.free(c.phys);
      expect(c.freed).toBe(true);
      expect(() => p.free(c.phys)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    });

    it('reports ENOMEM with the size, largest free block and total free', () => {
      const p = fresh();
      const total = p.stats().total;
      let err: unknown;
      try {
        p.alloc(total + 4096);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'ENOMEM', name: 'PhysmemError' });
      expect(String((err as Error).message)).toContain(`${total + 4096} bytes`);
      expect(String((err as Error).message)).toContain(`${total} of ${total} bytes free`);
    });

    it('close frees everything, detaches every buffer, is idempotent, and later use throws EBADF', () => {
      const p = fresh();
      const bufs = [p.alloc(100), p.alloc(5000), p.alloc(70000)];
      p.close();
      for (const b of bufs) expect(b.bytes.length).toBe(0);
      expect(() => p.close()).not.toThrow();
      expect(() => p.alloc(64)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(() => p.stats()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    });

    it('stats add up and return to all-free after freeing everything', () => {
      const p = fresh();
      const s0 = p.stats();
      const bufs = [p.alloc(4096), p.alloc(12345), p.alloc(64)];
      const s1 = p.stats();
      expect(s1.count).toBe(3);
      expect(s1.used + s1.free).toBe(s0.total);
      expect(s1.used).toBeGreaterThanOrEqual(4096 + 12345 + 64);
      bufs.forEach((b) => b.free());
      const s2 = p.stats();
      expect(s2).toMatchObject({ count: 0, used: 0, free: s0.total, largestFree: s0.largestFree });
      p.check();
    });
  });
}
