// Fixed-size sub-pools (pool.createSubPool) on the fake backend: the layout
// arithmetic with literal values, the behaviour of alloc/free/close, and a
// model test (fast-check) of random configurations and operation sequences
// against a plain set of live blocks.
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { openPoolSync, subPoolLayout, type Pool, type SubPool, type SubPoolBlock } from '../lib/index.js';

let pools: Pool[] = [];
afterEach(() => {
  pools.forEach((p) => p.close());
  pools = [];
});
function fake(size = 4 << 20, extra: Record<string, unknown> = {}): Pool {
  const p = openPoolSync({ backend: 'fake', size, leakCheck: 'off', ...extra });
  pools.push(p);
  return p;
}
const code = (c: string) => expect.objectContaining({ code: c });

describe('subPoolLayout', () => {
  it('packs blocks stride apart, stride = blockSize rounded up to align', () => {
    expect(subPoolLayout(2048, 4)).toEqual({ stride: 2048, perWindow: 4, window: 8192, size: 8192, parentAlign: 64, parentBoundary: undefined });
    expect(subPoolLayout(1500, 3, 64)).toMatchObject({ stride: 1536, size: 2 * 1536 + 1500, parentAlign: 64 });
    expect(subPoolLayout(100, 5, 1)).toMatchObject({ stride: 100, size: 500, parentAlign: 1 });
  });

  it('with a boundary: one window when everything fits in it, windows of floor(boundary / stride) blocks otherwise', () => {
    // 1536 + 1500 <= 4096: the memory itself must not cross 4096.
    expect(subPoolLayout(1500, 2, 64, 4096)).toMatchObject({ stride: 1536, perWindow: 2, size: 3036, parentAlign: 64, parentBoundary: 4096 });
    // Two blocks per 4 KiB window, 1024 bytes left unused in each; the memory aligned to 4 KiB.
    expect(subPoolLayout(1500, 5, 64, 4096)).toEqual({ stride: 1536, perWindow: 2, window: 4096, size: 2 * 4096 + 1500, parentAlign: 4096, parentBoundary: undefined });
    // Powers of two that divide the boundary lose nothing.
    expect(subPoolLayout(2048, 8, 64, 4096)).toMatchObject({ perWindow: 2, window: 4096, size: 4 * 4096 });
    // Tiny blocks: the pool would round the memory up to 8 bytes, more than a boundary of 2, so windows it is.
    expect(subPoolLayout(1, 1, 1, 2)).toMatchObject({ perWindow: 2, window: 2, size: 1, parentAlign: 2, parentBoundary: undefined });
    // align >= boundary: aligned blocks of at most boundary bytes cannot cross it.
    expect(subPoolLayout(100, 5, 4096, 1024)).toMatchObject({ stride: 4096, size: 4 * 4096 + 100, parentAlign: 4096, parentBoundary: undefined });
  });

  it('refuses bad values with EINVAL naming the option', () => {
    expect(() => subPoolLayout(0, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/blockSize/) }));
    expect(() => subPoolLayout(1.5, 1)).toThrow(code('EINVAL'));
    expect(() => subPoolLayout(64, 0)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/count/) }));
    expect(() => subPoolLayout(64, 2 ** 31)).toThrow(code('EINVAL'));
    expect(() => subPoolLayout(64, 4, 48)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/align/) }));
    expect(() => subPoolLayout(2048, 4, 64, 1024)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/boundary must be .* >= blockSize \(2048\)/) }));
    expect(() => subPoolLayout(64, 4, 64, 3000)).toThrow(code('EINVAL'));
    expect(() => subPoolLayout(2 ** 40, 2 ** 30)).toThrow(code('EINVAL'));
  });
});

describe('SubPool', () => {
  it('refuses options that are not an object, and unknown option names with a suggestion, allocating nothing', () => {
    const p = fake(1 << 20);
    const before = p.stats().count;
    for (const bad of [undefined, null, 5, 'x', [2048, 8]]) {
      expect(() => p.createSubPool(bad as never)).toThrow(code('EINVAL'));
    }
    expect(() => p.createSubPool({ blockSize: 2048, count: 8, alignment: 4096 } as never)).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/unknown option 'alignment'.*did you mean 'align'/) }),
    );
    expect(() => p.createSubPool({ blocksize: 2048, count: 8 } as never)).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/did you mean 'blockSize'/) }),
    );
    expect(p.stats().count).toBe(before);
    // Every known name together is accepted and honoured.
    const sub = p.createSubPool({ blockSize: 1500, count: 5, align: 64, boundary: 4096, maxAddress: 0xffff_ffff_ffffn });
    expect(sub.boundary).toBe(4096);
    for (let i = 0; i < 5; i++) {
      const b = sub.alloc();
      expect(Number(b.phys % 4096n) + 1500).toBeLessThanOrEqual(4096);
    }
  });

  it('hands out blocks 0, 1, 2, ... with phys, bus and bytes that are views of its own memory', () => {
    const p = fake(1 << 20, { physBase: 0x2000_0000n, busOffset: 0x1_0000_0000n });
    const sub = p.createSubPool({ blockSize: 2048, count: 8 });
    expect(sub).toMatchObject({ blockSize: 2048, count: 8, align: 64, boundary: undefined, available: 8, inUse: 0, closed: false });
    const base = sub.buffer.phys;
    const a = sub.alloc();
    const b = sub.alloc();
    expect([a.index, b.index]).toEqual([0, 1]);
    expect(b.offset).toBe(2048);
    expect(b.phys).toBe(base + 2048n);
    expect(b.bus).toBe(b.phys + 0x1_0000_0000n);
    expect(b.bytes.buffer).toBe(sub.buffer.bytes.buffer);
    expect([b.bytes.byteOffset, b.bytes.length]).toEqual([2048, 2048]);
    b.bytes.fill(7);
    expect(sub.buffer.bytes[2048]).toBe(7);
    expect(sub.buffer.bytes[2047]).toBe(0);
    expect(sub.inUse).toBe(2);
  });

  it('is LIFO and reuses the block objects: no new object per alloc', () => {
    const sub = fake().createSubPool({ blockSize: 512, count: 4 });
    const a = sub.alloc();
    const b = sub.alloc();
    a.free();
    expect(a.allocated).toBe(false);
    expect(sub.alloc()).toBe(a); // the same object comes back with its block
    expect(a.allocated).toBe(true);
    expect(sub.block(1)).toBe(b);
  });

  it('ENOMEM when every block is in use (tryAlloc: undefined), and frees make room again', () => {
    const sub = fake().createSubPool({ blockSize: 100, count: 3 });
    const got = [sub.alloc(), sub.alloc(), sub.alloc()];
    expect(() => sub.alloc()).toThrow(expect.objectContaining({ code: 'ENOMEM', message: expect.stringMatching(/all 3 blocks of 100 bytes .* in use.*larger count/s) }));
    expect(sub.tryAlloc()).toBeUndefined();
    got[1].free();
    expect(sub.tryAlloc()).toBe(got[1]);
  });

  it('refuses double frees and foreign blocks with EINVAL, and block() outside 0..count-1', () => {
    const p = fake();
    const sub = p.createSubPool({ blockSize: 64, count: 4 });
    const other = p.createSubPool({ blockSize: 64, count: 4 });
    const a = sub.alloc();
    const stranger = other.alloc();
    a.free();
    expect(() => a.free()).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/block 0 .* not allocated \(double free\?\)/) }));
    expect(() => sub.free(stranger)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/not a block of this sub-pool/) }));
    expect(() => sub.free(undefined as unknown as SubPoolBlock)).toThrow(code('EINVAL'));
    expect(() => sub.free({ index: 0 } as SubPoolBlock)).toThrow(code('EINVAL'));
    expect(sub.isAllocated(stranger)).toBe(false);
    expect(() => sub.block(4)).toThrow(code('EINVAL'));
    expect(() => sub.block(-1)).toThrow(code('EINVAL'));
    expect(sub.available).toBe(4);
  });

  it('close frees its memory back to the pool and empties every block view; later use throws EBADF', () => {
    const p = fake();
    const used0 = p.stats().used;
    const sub = p.createSubPool({ blockSize: 1000, count: 10 });
    expect(p.stats().count).toBe(1); // one block of the pool
    const a = sub.alloc();
    const kept = a.bytes;
    sub.close();
    expect(sub.closed).toBe(true);
    expect(kept.length).toBe(0);
    expect(a.allocated).toBe(false);
    expect(p.stats().used).toBe(used0);
    expect(() => sub.alloc()).toThrow(code('EBADF'));
    expect(() => sub.tryAlloc()).toThrow(code('EBADF'));
    expect(() => a.free()).toThrow(code('EBADF'));
    expect(() => sub.block(0)).toThrow(code('EBADF'));
    expect(() => sub.close()).not.toThrow();
  });

  it('is closed by closing its pool or freeing its buffer', () => {
    const p = fake();
    const s1 = p.createSubPool({ blockSize: 64, count: 2 });
    const s2 = p.createSubPool({ blockSize: 64, count: 2 });
    const b = s1.alloc();
    s2.buffer.free();
    expect(s2.closed).toBe(true);
    expect(() => s2.alloc()).toThrow(code('EBADF'));
    p.close();
    expect(s1.closed).toBe(true);
    expect(b.bytes.length).toBe(0);
    expect(() => s1.alloc()).toThrow(code('EBADF'));
    expect(() => s1.close()).not.toThrow();
    expect(() => p.createSubPool({ blockSize: 64, count: 2 })).toThrow(code('EBADF'));
  });

  it('ENOMEM from the pool when the blocks do not fit, EINVAL for bad options', () => {
    const p = fake(1 << 20);
    expect(() => p.createSubPool({ blockSize: 4096, count: 300 })).toThrow(code('ENOMEM'));
    expect(() => p.createSubPool({ blockSize: 4096, count: 0 })).toThrow(code('EINVAL'));
    expect(() => p.createSubPool(null as never)).toThrow(code('EINVAL'));
    expect(p.stats().count).toBe(0);
  });

  it('keeps maxAddress for the whole sub-pool', () => {
    const p = fake(8 << 20, { physBase: 0xff00_0000n }); // straddles 4 GiB
    p.alloc(4 << 20); // push the next allocation up
    const sub = p.createSubPool({ blockSize: 2048, count: 512, maxAddress: 0xffff_ffffn });
    expect(sub.buffer.phys + BigInt(sub.buffer.size) - 1n <= 0xffff_ffffn).toBe(true);
    expect(() => p.createSubPool({ blockSize: 2048, count: 2048, maxAddress: 0xffff_ffffn })).toThrow(code('ENOMEM'));
  });
});

// Model test: random configurations and operation sequences against a set of
// live block indexes. Each allocated block is filled with its own tag and
// checked when freed, so blocks that overlapped would show.
describe('SubPool model test (fast-check)', () => {
  const config = fc
    .record({
      blockSize: fc.integer({ min: 1, max: 5000 }),
      count: fc.integer({ min: 1, max: 48 }),
      align: fc.constantFrom(1, 8, 64, 256, 4096),
      boundaryExtra: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
      busOffset: fc.constantFrom(0n, 0x8000_0000n),
      before: fc.integer({ min: 0, max: 9000 }), // an allocation in front, so the sub-pool's address varies
    })
    .map((c) => ({
      ...c,
      boundary: c.boundaryExtra === undefined ? undefined : 2 ** (Math.ceil(Math.log2(c.blockSize)) + c.boundaryExtra),
    }));
  type Op = { t: 'alloc' | 'free' | 'double' | 'foreign' | 'tryAlloc'; k: number };
  const op: fc.Arbitrary<Op> = fc.record({ t: fc.constantFrom('alloc', 'alloc', 'free', 'tryAlloc', 'double', 'foreign'), k: fc.nat() });

  function checkGeometry(sub: SubPool, c: { blockSize: number; count: number; align: number; boundary?: number; busOffset: bigint }): void {
    const blocks = Array.from({ length: c.count }, (_, i) => sub.block(i));
    const end = sub.buffer.phys + BigInt(sub.buffer.size);
    for (const b of blocks) {
      expect(b.phys % BigInt(c.align)).toBe(0n);
      expect(b.phys).toBe(sub.buffer.phys + BigInt(b.offset));
      expect(b.bus).toBe(b.phys + c.busOffset);
      expect(b.phys + BigInt(c.blockSize) <= end).toBe(true);
      expect([b.bytes.byteOffset, b.bytes.length]).toEqual([b.offset, c.blockSize]);
      if (c.boundary !== undefined) {
        const B = BigInt(c.boundary);
        expect(b.phys / B).toBe((b.phys + BigInt(c.blockSize) - 1n) / B);
      }
    }
    const sorted = [...blocks].sort((x, y) => x.offset - y.offset);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i].offset).toBeGreaterThanOrEqual(sorted[i - 1].offset + c.blockSize);
  }

  it('agrees with a set of live blocks; blocks are aligned, disjoint, inside its memory and never cross the boundary', () => {
    fc.assert(
      fc.property(config, fc.array(op, { maxLength: 150 }), (c, ops) => {
        const pool = openPoolSync({ backend: 'fake', size: 8 << 20, busOffset: c.busOffset, leakCheck: 'off' });
        try {
          if (c.before) pool.alloc(c.before, { align: 8 });
          const sub = pool.createSubPool({ blockSize: c.blockSize, count: c.count, align: c.align, boundary: c.boundary });
          const other = pool.createSubPool({ blockSize: 16, count: 1 }).alloc();
          const live: SubPoolBlock[] = [];
          const freed = new Set<SubPoolBlock>();
          const tags = new Map<SubPoolBlock, number>();
          let seq = 0;
          const take = (b: SubPoolBlock) => {
            expect(live.includes(b)).toBe(false);
            expect(b.allocated).toBe(true);
            const tag = (++seq % 255) + 1;
            b.bytes.fill(tag);
            tags.set(b, tag);
            live.push(b);
            freed.delete(b);
          };
          for (const o of ops) {
            if (o.t === 'alloc' || o.t === 'tryAlloc') {
              if (live.length === c.count) {
                if (o.t === 'alloc') expect(() => sub.alloc()).toThrow(code('ENOMEM'));
                else expect(sub.tryAlloc()).toBeUndefined();
              } else {
                take(o.t === 'alloc' ? sub.alloc() : sub.tryAlloc()!);
              }
            } else if (o.t === 'free' && live.length) {
              const [b] = live.splice(o.k % live.length, 1);
              expect(b.bytes.every((v) => v === tags.get(b))).toBe(true); // nobody else wrote into it
              b.free();
              expect(b.allocated).toBe(false);
              freed.add(b);
            } else if (o.t === 'double' && freed.size) {
              const b = [...freed][o.k % freed.size];
              expect(() => sub.free(b)).toThrow(code('EINVAL'));
            } else if (o.t === 'foreign') {
              expect(() => sub.free(other)).toThrow(code('EINVAL'));
            }
            expect(sub.available).toBe(c.count - live.length);
            expect(sub.inUse).toBe(live.length);
          }
          for (const b of live) expect(b.bytes.every((v) => v === tags.get(b))).toBe(true);
          checkGeometry(sub, c);
          sub.close();
          expect(live.every((b) => b.bytes.length === 0 && !b.allocated)).toBe(true);
          expect(() => sub.alloc()).toThrow(code('EBADF'));
        } finally {
          pool.close();
        }
      }),
      { numRuns: 300 },
    );
  });
});
