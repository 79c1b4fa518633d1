/**
 * The conformance suite: behaviour every pool must show. Run on the fake
 * backend on the host (conformance.test.ts), on the real backends inside the
 * guest (test/vm), and on a pool served by a daemon (conformance.test.ts):
 * its factory takes any {@link PoolLike}, and the tests use the calls every
 * pool has (`allocAsync`, `statsAsync`, `free()`, `close()`). What only a
 * linked {@link Pool} offers (synchronous `alloc`, `at`, `boundary`,
 * `maxAddress`, `zero: false`, `free(phys)`) is tested on linked pools, and a
 * daemon's pool must refuse those options (ENOTSUP) rather than ignore them.
 */
import { describe, expect, it, afterEach } from 'vitest';
import { Pool } from '../../lib/index.js';
import { failsWith } from '../helpers/errors.js';

/** A buffer as every pool hands it out. */
export interface BufferLike {
  readonly phys: bigint;
  readonly bus: bigint;
  readonly size: number;
  readonly bytes: Uint8Array;
  readonly freed: boolean;
  free(): void | Promise<void>;
}

/** What every pool offers: a linked {@link Pool} and a daemon's `ServicePool` alike. */
export interface PoolLike {
  readonly busOffset: bigint;
  allocAsync(size: number, options?: { align?: number }): Promise<BufferLike>;
  statsAsync(): Promise<{ total: number; used: number; free: number; largestFree: number; count: number; ranges: { start: bigint; size: number }[] }>;
  check(): void | Promise<void>;
  close(): void | Promise<void>;
}

/** Opens a fresh pool of the kind under test; the suite closes it. */
export type PoolFactory = () => PoolLike | Promise<PoolLike>;

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

/**
 * @param options.linked - default true: the factory opens linked {@link Pool}s, so the tests of
 *   what only they offer run too; false for a daemon's pool, which must refuse those options.
 */
export function conformanceSuite(name: string, open: PoolFactory, options: { linked?: boolean } = {}): void {
  const isLinked = options.linked !== false;
  describe(`conformance: ${name}`, () => {
    let pool: PoolLike | undefined;
    const fresh = async () => (pool = await open());
    afterEach(async () => {
      await pool?.close();
      pool = undefined;
    });
    // A fresh linked pool, for the tests of what only a linked pool offers.
    const linked = async (): Promise<Pool> => {
      const p = await fresh();
      if (!(p instanceof Pool)) throw new Error('the factory of a suite with linked: true must open linked pools');
      return p;
    };

    it('hands out blocks inside the pool ranges, aligned as asked', async () => {
      const p = await fresh();
      const ranges = (await p.statsAsync()).ranges;
      for (const align of [64, 4096, 65536]) {
        const b = await p.allocAsync(1000, { align });
        expect(b.phys % BigInt(align)).toBe(0n);
        const inside = ranges.some((r) => b.phys >= r.start && b.phys + BigInt(b.size) <= r.start + BigInt(r.size));
        expect(inside).toBe(true);
        expect(b.bus).toBe(b.phys + p.busOffset);
      }
    });

    it('bytes cover exactly the block, in an ArrayBuffer of their own', async () => {
      const p = await fresh();
      const b = await p.allocAsync(3000);
      expect(b.bytes.length).toBe(3000);
      expect(b.bytes.byteOffset).toBe(0);
      expect(b.bytes.buffer.byteLength).toBe(3000);
    });

    it('zeroes a block before handing it out again', async () => {
      const p = await fresh();
      const a = await p.allocAsync(8192, { align: 4096 });
      const at = a.phys;
      a.bytes.fill(0xa5);
      await a.free();
      // Allocate until that memory comes back (an allocator reuses it soon); each block is zero.
      const got: BufferLike[] = [];
      for (let i = 0; i < 4096 && !got.some((b) => b.phys === at); i++) {
        const b = await p.allocAsync(8192, { align: 4096 }).catch(() => undefined);
        if (b === undefined) break;
        expect(b.bytes.every((v) => v === 0)).toBe(true);
        got.push(b);
      }
      expect(got.some((b) => b.phys === at)).toBe(true);
    });

    it.skipIf(!isLinked)('linked pools keep data with zero: false', async () => {
      const p = await linked();
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

    it('keeps the data of live buffers apart (no overlap)', async () => {
      const p = await fresh();
      const bufs: BufferLike[] = [];
      for (let i = 0; i < 32; i++) bufs.push(await p.allocAsync(512 + i * 97, { align: 64 }));
      bufs.forEach((b, i) => b.bytes.set(pattern(i + 1, b.size)));
      bufs.forEach((b, i) => expect(Buffer.from(b.bytes).equals(Buffer.from(pattern(i + 1, b.size)))).toBe(true));
      const sorted = [...bufs].sort((x, y) => (x.phys < y.phys ? -1 : 1));
      for (let i = 1; i < sorted.length; i++) expect(sorted[i - 1].phys + BigInt(sorted[i - 1].size) <= sorted[i].phys).toBe(true);
    });

    it(`${isLinked ? 'honours boundary and maxAddress' : 'refuses what only a linked pool offers (boundary, maxAddress, at, zero: false) with ENOTSUP, never ignores it'}`, async () => {
      if (!isLinked) {
        const p = await fresh();
        for (const o of [{ boundary: 4096 }, { maxAddress: 0xffff_ffffn }, { at: 0n }, { zero: false }]) {
          await failsWith(() => p.allocAsync(1500, o as { align?: number }), 'ENOTSUP');
        }
        expect((await p.statsAsync()).count).toBe(0);
        return;
      }
      const p = await linked();
      for (let i = 0; i < 50; i++) {
        const b = p.alloc(1500, { boundary: 4096, align: 64 });
        expect(b.phys / 4096n).toBe((b.phys + 1499n) / 4096n);
      }
      const lowest = p.stats().ranges[0].start;
      const max = lowest + 0x20_0000n - 1n;
      const c = p.alloc(4096, { maxAddress: max });
      expect(c.phys + 4095n <= max).toBe(true);
    });

    it('detaches bytes on free and refuses a second free', async () => {
      const p = await fresh();
      const b = await p.allocAsync(4096);
      const view = new Uint32Array(b.bytes.buffer);
      await b.free();
      expect(b.freed).toBe(true);
      expect(b.bytes.length).toBe(0);
      expect(view.length).toBe(0);
      await failsWith(() => b.free(), 'EINVAL');
      expect((await p.statsAsync()).count).toBe(0);
    });

    it.skipIf(!isLinked)('linked pools free by address too', async () => {
      const p = await linked();
      const c = p.alloc(4096);
      p.free(c.phys);
      expect(c.freed).toBe(true);
      expect(() => p.free(c.phys)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    });

    it('reports ENOMEM with the size, largest free block and total free', async () => {
      const p = await fresh();
      const total = (await p.statsAsync()).total;
      const err = await failsWith(() => p.allocAsync(total + 4096), 'ENOMEM');
      expect(err.name).toBe('PhysmemError');
      expect(err.message).toContain(`${total + 4096} bytes`);
      expect(err.message).toContain(`${total} of ${total} bytes free`);
    });

    it('close frees everything, detaches every buffer, is idempotent, and later use fails with EBADF', async () => {
      const p = await fresh();
      const bufs = [await p.allocAsync(100), await p.allocAsync(5000), await p.allocAsync(70000)];
      await p.close();
      for (const b of bufs) expect(b.bytes.length).toBe(0);
      await p.close(); // a second close does nothing, and neither throws nor rejects
      await failsWith(() => p.allocAsync(64), 'EBADF');
      await failsWith(() => p.statsAsync(), 'EBADF');
      if (isLinked) expect(() => (p as Pool).alloc(64)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    });

    it('stats add up and return to all-free after freeing everything', async () => {
      const p = await fresh();
      const s0 = await p.statsAsync();
      const bufs = [await p.allocAsync(4096), await p.allocAsync(12345), await p.allocAsync(64)];
      const s1 = await p.statsAsync();
      expect(s1.count).toBe(3);
      expect(s1.used + s1.free).toBe(s0.total);
      expect(s1.used).toBeGreaterThanOrEqual(4096 + 12345 + 64);
      for (const b of bufs) await b.free();
      const s2 = await p.statsAsync();
      expect(s2).toMatchObject({ count: 0, used: 0, free: s0.total, largestFree: s0.largestFree });
      await p.check();
    });
  });
}
