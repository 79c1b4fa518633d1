import { describe, expect, it } from 'vitest';
import { RangeAllocator, MIN_ALIGN, DEFAULT_ALIGN, SCAN_LIMIT, type BlockInfo } from '../lib/allocator/index.js';
import { throwsWith } from './helpers/errors.js';
import { Rec } from '../lib/allocator/state.js';

const KiB = 1024;
const MiB = 1024 * 1024;

const einval = (fn: () => unknown, re?: RegExp) => throwsWith(fn, 'EINVAL', re);

function blocks(a: RangeAllocator): [number, number, boolean, number][] {
  return a.walk().map((b: BlockInfo) => [b.address, b.size, b.free, b.owner]);
}

describe('RangeAllocator constructor', () => {
  it('accepts numbers and bigints, in any order, touching ranges', () => {
    const a = new RangeAllocator([
      { start: 0x20000n, size: 0x10000n },
      { start: 0x10000, size: 0x10000 },
    ]);
    expect(a.ranges).toEqual([
      { start: 0x10000, size: 0x10000 },
      { start: 0x20000, size: 0x10000 },
    ]);
    expect(a.totalBytes).toBe(0x20000);
    expect(blocks(a)).toEqual([
      [0x10000, 0x10000, true, -1],
      [0x20000, 0x10000, true, -1],
    ]);
    a.check();
  });

  it('rejects what is not a non-empty array of ranges', () => {
    einval(() => new RangeAllocator([]), /non-empty array/);
    einval(() => new RangeAllocator(undefined as never), /non-empty array/);
    einval(() => new RangeAllocator({ start: 0, size: 1 } as never), /non-empty array/);
    einval(() => new RangeAllocator([null as never]), /ranges\[0\] must be an object/);
  });

  it.each([
    [{ start: -1, size: 4096 }, /ranges\[0\]\.start must be an integer/],
    [{ start: 1.5, size: 4096 }, /start must be an integer/],
    [{ start: NaN, size: 4096 }, /start must be an integer/],
    [{ start: '0', size: 4096 }, /start must be an integer.*"0"/],
    [{ start: 2 ** 53, size: 1 }, /start must be an integer/],
    [{ start: 0, size: 0 }, /size must be a positive integer/],
    [{ start: 0, size: -5 }, /size must be a positive integer/],
    [{ start: 0, size: 10.5 }, /size must be a positive integer/],
    [{ start: 0, size: 0n }, /size must be a positive integer.*0n/],
    [{ start: 2 ** 53 - 4096, size: 8192 }, /ends above 2\^53/],
    [{ start: 0, size: undefined }, /size must be a positive integer/],
  ])('rejects range %o', (range, re) => {
    einval(() => new RangeAllocator([range as never]), re);
  });

  it('rejects overlapping ranges', () => {
    einval(
      () =>
        new RangeAllocator([
          { start: 0x1000, size: 0x2000 },
          { start: 0x2000, size: 0x1000 },
        ]),
      /ranges overlap: \[0x1000, 0x3000\) and \[0x2000, 0x3000\)/,
    );
  });

  it('manages a range ending exactly at 2^53', () => {
    const start = 2 ** 53 - 4 * MiB;
    const a = new RangeAllocator([{ start, size: 4 * MiB }]);
    const p = a.alloc(MiB);
    expect(p).toBe(start);
    const q = a.alloc(3 * MiB);
    expect(q).toBe(start + MiB);
    expect(a.alloc(8)).toBe(-1);
    a.check();
    expect(a.free(q)).toBe(3 * MiB);
    expect(a.free(p)).toBe(MiB);
    expect(blocks(a)).toEqual([[start, 4 * MiB, true, -1]]);
  });
});

describe('alloc: sizes', () => {
  it.each([0, -1, 1.5, NaN, Infinity, -Infinity, '64', null, 64n, {}])('rejects size %s', (size) => {
    einval(() => new RangeAllocator([{ start: 0, size: MiB }]).alloc(size as never), /size must be a positive integer number of bytes/);
  });

  it('rejects bad sizes with options too', () => {
    einval(() => new RangeAllocator([{ start: 0, size: MiB }]).alloc(0, { align: 8 }), /size must be a positive integer/);
  });

  it('rounds sizes up to 8 bytes and aligns to 64 by default', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    expect(MIN_ALIGN).toBe(8);
    expect(DEFAULT_ALIGN).toBe(64);
    const p = a.alloc(1);
    expect(a.sizeOf(p)).toBe(8);
    const q = a.alloc(100);
    expect(q % 64).toBe(0);
    expect(a.sizeOf(q)).toBe(104);
    expect(a.usedBytes).toBe(112);
    expect(a.liveBlocks).toBe(2);
    // The padding between them stays free.
    expect(blocks(a).slice(0, 3)).toEqual([
      [0, 8, false, 0],
      [8, 56, true, -1],
      [64, 104, false, 0],
    ]);
    a.check();
  });

  it('returns -1 for sizes larger than any range, and when full', () => {
    const a = new RangeAllocator([
      { start: 0, size: 64 * KiB },
      { start: MiB, size: 128 * KiB },
    ]);
    expect(a.alloc(256 * KiB)).toBe(-1);
    expect(a.alloc(2 ** 60)).toBe(-1);
    expect(a.alloc(Number.MAX_SAFE_INTEGER)).toBe(-1);
    expect(a.alloc(128 * KiB)).toBe(MiB);
    expect(a.alloc(64 * KiB)).toBe(0);
    expect(a.alloc(8)).toBe(-1);
    a.check();
  });

  it('fills a range exactly and finds the last fitting hole', () => {
    const a = new RangeAllocator([{ start: 0, size: 64 * KiB }]);
    const ps: number[] = [];
    for (let i = 0; i < 1024; i++) ps.push(a.alloc(64));
    expect(new Set(ps).size).toBe(1024);
    expect(a.alloc(64)).toBe(-1);
    a.free(ps[500]);
    expect(a.alloc(64)).toBe(ps[500]);
    a.check();
  });

  it('never lets a block span two touching ranges', () => {
    const a = new RangeAllocator([
      { start: 0, size: 4096 },
      { start: 4096, size: 4096 },
    ]);
    expect(a.alloc(8192)).toBe(-1);
    expect(a.alloc(4096)).not.toBe(-1);
    expect(a.alloc(4096)).not.toBe(-1);
    expect(a.alloc(8)).toBe(-1);
  });

  it('prefers the highest range without maxAddress, the lowest with it', () => {
    const a = new RangeAllocator([
      { start: 0x1000_0000, size: MiB },
      { start: 0x2_0000_0000, size: MiB },
    ]);
    expect(a.alloc(4096)).toBe(0x2_0000_0000);
    expect(a.alloc(4096, { maxAddress: 0xffff_ffff })).toBe(0x1000_0000);
    // A limit inside the high range still tries the low range first.
    expect(a.alloc(4096, { maxAddress: 0x2_0000_ffff })).toBe(0x1000_1000);
    // A limit above every range is no limit: highest range first again.
    expect(a.alloc(4096, { maxAddress: 2 ** 40 })).toBe(0x2_0000_1000);
  });
});

describe('alloc: align', () => {
  it('aligns blocks', () => {
    const a = new RangeAllocator([{ start: 0x1008, size: MiB }]);
    const p = a.alloc(10, { align: 4096 });
    expect(p).toBe(0x2000);
    const q = a.alloc(10, { align: 65536 });
    expect(q % 65536).toBe(0);
    a.check();
  });

  it('raises alignments below 8 to 8', () => {
    const a = new RangeAllocator([{ start: 0x1003, size: 4096 }]);
    const p = a.alloc(3, { align: 1 });
    expect(p).toBe(0x1008);
    expect(a.alloc(3, { align: 2 }) % 8).toBe(0);
    expect(a.alloc(3, { align: 4 }) % 8).toBe(0);
  });

  it.each([0, 3, 48, -64, 1.5, NaN, '64', 64n, 2 ** 53])('rejects align %s', (align) => {
    einval(() => new RangeAllocator([{ start: 0, size: MiB }]).alloc(64, { align: align as never }), /align must be a power of two/);
  });

  it('rejects alignments larger than the largest range', () => {
    einval(() => new RangeAllocator([{ start: 0, size: MiB }]).alloc(64, { align: 2 * MiB }), /larger than the largest range/);
    expect(new RangeAllocator([{ start: 0, size: MiB }]).alloc(64, { align: MiB })).toBe(0);
  });

  it('finds an aligned place in a fragmented range', () => {
    const a = new RangeAllocator([{ start: 0, size: 64 * KiB }]);
    const small: number[] = [];
    for (let i = 0; i < 64; i++) small.push(a.alloc(1000));
    // Free every other block: holes of 1024 bytes, most not 4096-aligned.
    for (let i = 0; i < 64; i += 2) a.free(small[i]);
    const p = a.alloc(512, { align: 4096 });
    expect(p).not.toBe(-1);
    expect(p % 4096).toBe(0);
    a.check();
  });
});

describe('alloc: boundary', () => {
  it('keeps blocks inside one boundary window', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    a.alloc(4000);
    const p = a.alloc(200, { boundary: 4096 });
    expect(Math.floor(p / 4096)).toBe(Math.floor((p + 199) / 4096));
    expect(p).toBe(4096);
    a.check();
  });

  it('accepts a size equal to the boundary', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    a.alloc(8);
    expect(a.alloc(4096, { boundary: 4096 })).toBe(4096);
  });

  it('rejects a size above the boundary and bad boundaries', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    einval(() => a.alloc(4097, { boundary: 4096 }), /size 4097 \(4104 after rounding up to 8\) is larger than boundary 4096/);
    einval(() => a.alloc(5, { boundary: 4 }), /larger than boundary 4/);
    einval(() => a.alloc(64, { boundary: 1000 }), /boundary must be a power of two/);
    einval(() => a.alloc(64, { boundary: 0 }), /boundary must be a power of two/);
  });

  it('combines boundary with alignment larger than the boundary', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    a.alloc(8);
    const p = a.alloc(256, { boundary: 256, align: 1024 });
    expect(p).toBe(1024);
  });
});

describe('alloc: maxAddress', () => {
  it('keeps the last byte at or below maxAddress', () => {
    const a = new RangeAllocator([{ start: 0xffff_0000, size: 0x20000 }]);
    const p = a.alloc(0x8000, { maxAddress: 0xffff_ffff });
    expect(p + 0x8000 - 1).toBeLessThanOrEqual(0xffff_ffff);
    const q = a.alloc(0x8000, { maxAddress: 0xffff_ffffn });
    expect(q + 0x8000 - 1).toBeLessThanOrEqual(0xffff_ffff);
    // Exactly full below 4 GiB now.
    expect(a.alloc(8, { maxAddress: 0xffff_ffff })).toBe(-1);
    expect(a.alloc(8)).toBeGreaterThanOrEqual(0x1_0000_0000);
    a.check();
  });

  it('treats limits above every range as none, bigints past 2^53 too', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    expect(a.alloc(64, { maxAddress: 2 ** 60 })).toBe(0);
    expect(a.alloc(64, { maxAddress: 2n ** 64n })).toBe(64);
  });

  it('returns -1 when no range reaches low enough', () => {
    const a = new RangeAllocator([{ start: 0x1_0000_0000, size: MiB }]);
    expect(a.alloc(64, { maxAddress: 0xffff_ffff })).toBe(-1);
  });

  it.each([-1, 1.5, NaN, '0', -1n])('rejects maxAddress %s', (max) => {
    einval(
      () => new RangeAllocator([{ start: 0, size: MiB }]).alloc(64, { maxAddress: max as never }),
      /maxAddress must be a non-negative integer/,
    );
  });
});

describe('alloc: at', () => {
  it('places blocks exactly, or returns -1 when the bytes are not free', () => {
    const a = new RangeAllocator([{ start: 0x10000, size: 0x10000 }]);
    expect(a.alloc(0x100, { at: 0x18000 })).toBe(0x18000);
    expect(a.alloc(0x100, { at: 0x18000 })).toBe(-1);
    expect(a.alloc(0x100, { at: 0x17f80 })).toBe(-1); // overlaps the block's start
    expect(a.alloc(0x80, { at: 0x17f80 })).toBe(0x17f80); // exactly fills the gap before it
    expect(a.alloc(8, { at: 0x18100 })).toBe(0x18100);
    expect(a.alloc(8, { at: 0x10000n })).toBe(0x10000);
    expect(a.alloc(0x100, { at: 0x1ff00 })).toBe(0x1ff00); // up to the range end
    expect(a.alloc(0x100, { at: 0x1ff08 })).toBe(-1);
    expect(a.alloc(8, { at: 0x20000 })).toBe(-1); // outside
    expect(a.alloc(8, { at: 0 })).toBe(-1);
    expect(a.alloc(8, { at: 2 ** 60 })).toBe(-1);
    expect(a.alloc(8, { at: 2n ** 70n })).toBe(-1);
    a.check();
  });

  it('ignores the default alignment but honours an explicit one', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    expect(a.alloc(8, { at: 8 })).toBe(8);
    einval(() => a.alloc(8, { at: 4100 }), /at 0x1004 is not a multiple of 8/);
    einval(() => a.alloc(8, { at: 0x1008, align: 4096 }), /at 0x1008 is not a multiple of align 4096/);
    expect(a.alloc(8, { at: 0x2000, align: 4096 })).toBe(0x2000);
  });

  it('rejects at combined with a boundary or maxAddress it violates', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    einval(() => a.alloc(256, { at: 4000, boundary: 4096 }), /would cross a multiple of boundary 4096/);
    einval(() => a.alloc(256, { at: 4096, maxAddress: 4096 }), /would end above maxAddress/);
    expect(a.alloc(96, { at: 4000, boundary: 4096 })).toBe(4000);
  });

  it.each([-8, 1.5, NaN, 'x', -8n])('rejects at %s', (at) => {
    einval(() => new RangeAllocator([{ start: 0, size: MiB }]).alloc(64, { at: at as never }), /at must be a non-negative integer address/);
  });

  it('finds the containing block among many (skip list)', () => {
    const a = new RangeAllocator([{ start: 0, size: 64 * MiB }]);
    const ps: number[] = [];
    for (let i = 0; i < 5000; i++) ps.push(a.alloc(4096));
    for (let i = 0; i < 5000; i += 3) a.free(ps[i]);
    for (let i = 0; i < 5000; i++) {
      const expected = i % 3 === 0 ? ps[i] : -1;
      expect(a.alloc(4096, { at: ps[i] })).toBe(expected);
    }
    a.check();
  });
});

describe('alloc: options object', () => {
  it('rejects non-objects and is only read', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    einval(() => a.alloc(64, null as never), /options must be an object/);
    einval(() => a.alloc(64, 5 as never), /options must be an object/);
    const o = Object.freeze({ align: 4096, owner: 3 });
    expect(a.alloc(64, o)).toBe(0);
    expect(a.alloc(64, o)).toBe(4096);
    expect(o).toEqual({ align: 4096, owner: 3 });
  });

  it('treats fields set to undefined as absent', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    expect(a.alloc(64, { align: undefined, boundary: undefined, maxAddress: undefined, at: undefined, owner: undefined })).toBe(0);
    expect(a.ownerOf(0)).toBe(0);
  });
});

describe('owners', () => {
  it('setOwner re-tags a live block in place (freeAll follows the new tag); refuses a non-block or a bad tag', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p = a.alloc(4096, { owner: 5 });
    const q = a.alloc(4096, { owner: 5 });
    a.setOwner(p, 9);
    expect([a.ownerOf(p), a.ownerOf(q), a.sizeOf(p)]).toEqual([9, 5, 4096]);
    expect(a.freeAll(5)).toBe(4096);
    expect(a.sizeOf(p)).toBe(4096);
    expect(() => a.setOwner(p + 8, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => a.setOwner(q, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' })); // freed
    expect(() => a.setOwner(p, -1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(a.ownerOf(p)).toBe(9);
    a.check();
    expect(a.freeAll(9)).toBe(4096);
  });

  it('tags blocks and frees by owner', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p0 = a.alloc(100);
    const p1 = a.alloc(200, { owner: 1 });
    const p2 = a.alloc(300, { owner: 2 });
    const p1b = a.alloc(50, { owner: 1 });
    expect([a.ownerOf(p0), a.ownerOf(p1), a.ownerOf(p2), a.ownerOf(p1b)]).toEqual([0, 1, 2, 1]);
    expect(a.ownerOf(p0 + 8)).toBe(-1);
    expect(a.freeAll(1)).toBe(200 + 56);
    expect(a.sizeOf(p1)).toBe(-1);
    expect(a.sizeOf(p1b)).toBe(-1);
    expect(a.sizeOf(p2)).toBe(304);
    expect(a.freeAll(7)).toBe(0);
    a.check();
    expect(a.freeAll()).toBe(104 + 304);
    expect(blocks(a)).toEqual([[0, MiB, true, -1]]);
    a.check();
    // Usable after freeAll().
    expect(a.alloc(64)).toBe(0);
  });

  it.each([-1, 1.5, 2 ** 31, NaN, '1'])('rejects owner %s', (owner) => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    einval(() => a.alloc(64, { owner: owner as never }), /owner must be an integer tag from 0 to 2147483647/);
    einval(() => a.freeAll(owner as never), /owner must be an integer tag/);
  });

  it('accepts the largest owner', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p = a.alloc(64, { owner: 2 ** 31 - 1 });
    expect(a.ownerOf(p)).toBe(2 ** 31 - 1);
  });
});

describe('free', () => {
  it('returns the size freed and coalesces in every order', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    for (const order of [
      [0, 1, 2],
      [2, 1, 0],
      [1, 0, 2],
      [1, 2, 0],
      [0, 2, 1],
      [2, 0, 1],
    ]) {
      const ps = [a.alloc(64), a.alloc(128), a.alloc(192)];
      const sizes = [64, 128, 192];
      for (const i of order) expect(a.free(ps[i])).toBe(sizes[i]);
      expect(blocks(a)).toEqual([[0, MiB, true, -1]]);
      a.check();
    }
  });

  it('explains double frees, interior pointers and unknown addresses', () => {
    const a = new RangeAllocator([{ start: 0x10000, size: MiB }]);
    const p = a.alloc(4096);
    a.alloc(64);
    einval(() => a.free(p + 8), /free\(0x10008\): address is inside the live block at 0x10000 \(size 4096\)/);
    einval(() => a.free(p + 4096 + 64), /no live block there \(double free, or never allocated\)/);
    einval(() => a.free(0x8000), /not in any managed range/);
    a.free(p);
    einval(() => a.free(p), /double free/);
    einval(() => a.free(-64), /free\(\) takes the start address returned by alloc\(\)/);
    einval(() => a.free(1.5), /non-negative integer/);
    einval(() => a.free(NaN), /NaN/);
    einval(() => a.free('65536' as never), /"65536"/);
    einval(() => a.free(0x10000n as never), /65536n/);
    a.check();
    expect(a.liveBlocks).toBe(1);
  });

  it('sizeOf / ownerOf / blockContaining answer -1 for non-blocks', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p = a.alloc(4096);
    expect(a.sizeOf(p)).toBe(4096);
    expect(a.sizeOf(p + 8)).toBe(-1);
    expect(a.sizeOf('0' as never)).toBe(-1);
    expect(a.ownerOf(NaN)).toBe(-1);
    expect(a.blockContaining(p + 100)).toBe(p);
    expect(a.blockContaining(p)).toBe(p);
    expect(a.blockContaining(p + 4096)).toBe(-1);
    expect(a.blockContaining(2 * MiB)).toBe(-1);
    expect(a.blockContaining(-1)).toBe(-1);
  });
});

describe('stats, walk, check', () => {
  it('reports totals and per-range figures', () => {
    const a = new RangeAllocator([
      { start: 0, size: 64 * KiB },
      { start: MiB, size: 64 * KiB },
    ]);
    a.alloc(1000, { maxAddress: 0xffff });
    a.alloc(4096);
    const s = a.stats();
    expect(s).toEqual({
      total: 128 * KiB,
      used: 1000 + 4096,
      free: 128 * KiB - 5096,
      largestFree: 64 * KiB - 1000,
      count: 2,
      freeBlocks: 2,
      ranges: [
        { start: 0, total: 64 * KiB, used: 1000, free: 64 * KiB - 1000, largestFree: 64 * KiB - 1000, count: 1, freeBlocks: 1 },
        { start: MiB, total: 64 * KiB, used: 4096, free: 60 * KiB, largestFree: 60 * KiB, count: 1, freeBlocks: 1 },
      ],
    });
  });

  it('walks with a callback', () => {
    const a = new RangeAllocator([{ start: 0, size: 4096 }]);
    a.alloc(64, { owner: 9 });
    const seen: unknown[] = [];
    const r = a.walk((address, size, free, owner) => seen.push([address, size, free, owner]));
    expect(r).toBeUndefined();
    expect(seen).toEqual([
      [0, 64, false, 9],
      [64, 4032, true, -1],
    ]);
  });

  it('check() reports corruption as EIO', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    a.alloc(64);
    a.check();
    const priv = (a as unknown as { st: { counts: Float64Array; F: Float64Array } }).st;
    priv.counts[0] += 8;
    throwsWith(() => a.check(), 'EIO', /allocator state is corrupt: used bytes/);
    priv.counts[0] -= 8;
    a.check();
    // Break the address order: move a block's start past its successor.
    const saved = priv.F.slice();
    const blockNode = (() => {
      for (let n = 0; n < priv.F.length / Rec.NF; n++) if (priv.F[n * Rec.NF] === 64) return n;
      return -1;
    })();
    priv.F[blockNode * Rec.NF] = 2 * MiB;
    throwsWith(() => a.check(), 'EIO', /corrupt/);
    priv.F.set(saved);
    a.check();
  });

  it('exposes the scan limit for constrained requests', () => {
    expect(SCAN_LIMIT).toBeGreaterThanOrEqual(1024);
  });
});

describe('alloc options are checked by name', () => {
  it('refuses an unknown option with EINVAL and suggests the closest name', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const err = throwsWith(() => a.alloc(64, { alignment: 1 << 16 } as never), 'EINVAL', /unknown option 'alignment'.*did you mean 'align'/);
    expect(err.message).toMatch(/align, boundary, maxAddress, at, owner/);
    throwsWith(() => a.alloc(64, { maxAdress: 0xffff } as never), 'EINVAL', /did you mean 'maxAddress'/);
    // Nothing was allocated by the refused calls.
    expect(a.liveBlocks).toBe(0);
  });

  it('refuses options that are not an object', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    for (const bad of [null, 5, 'x', [1]]) throwsWith(() => a.alloc(64, bad as never), 'EINVAL', /options must be an object/);
    expect(a.liveBlocks).toBe(0);
  });

  it('honours every known option in one object', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p = a.alloc(100, { align: 4096, boundary: 4096, maxAddress: 0xfffff, owner: 3 });
    expect(p % 4096).toBe(0);
    expect(a.ownerOf(p)).toBe(3);
    expect(a.alloc(64, { at: 8 * 4096 + 64 })).toBe(8 * 4096 + 64);
  });
});

describe('skip-list towers are built lazily', () => {
  /** A fragmented allocator: many splits and merges, no lookup inside blocks yet. */
  function churned(seed: number): { a: RangeAllocator; live: number[] } {
    const a = new RangeAllocator([{ start: 0x10000, size: 1024 * MiB }]);
    const live: number[] = [];
    let x = seed;
    for (let i = 0; i < 30_000; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      if (live.length > 0 && (x & 3) === 0) {
        const k = (x >>> 2) % live.length;
        a.free(live[k]);
        live[k] = live[live.length - 1];
        live.pop();
      } else {
        const p = a.alloc(64 + ((x >>> 4) % 4096) * 8);
        if (p >= 0) live.push(p);
      }
    }
    return { a, live };
  }

  const towersOn = (a: RangeAllocator): boolean => (a as unknown as { st: { towersOn: boolean } }).st.towersOn;

  it('has no towers until a lookup, then finds every block and gap after many splits', () => {
    const { a, live } = churned(0x1234);
    expect(towersOn(a)).toBe(false);
    a.check();
    const blocks = a.walk();
    // Every byte position probed inside a block maps to that block's start; gaps to -1.
    for (const b of blocks) {
      for (const off of [0, Math.floor(b.size / 2), b.size - 1]) {
        expect(a.blockContaining(b.address + off)).toBe(b.free ? -1 : b.address);
      }
    }
    expect(towersOn(a)).toBe(true);
    a.check(); // verifies the towers level by level
    expect(live.length).toBe(a.liveBlocks);
  });

  it('keeps the towers right while they are maintained, and drops them after many splits without a lookup', () => {
    const { a, live } = churned(0x9e37);
    // `at` needs the towers: allocate inside the first free gap of at least 128 bytes.
    const gap = a.walk().find((b) => b.free && b.size >= 128 && b.address % 64 === 0)!;
    expect(a.alloc(64, { at: gap.address })).toBe(gap.address);
    expect(towersOn(a)).toBe(true);
    // Churn while towers are on: check() verifies them.
    for (let i = 0; i < 200; i++) {
      a.free(live.pop()!);
      const p = a.alloc(128);
      if (p >= 0) live.push(p);
    }
    a.check();
    for (const p of live.slice(0, 500)) expect(a.blockContaining(p + 8)).toBe(p);
    // Far more splits and merges than the budget, with no lookup: the towers go.
    // (A 1 MiB block comes from the large free tail and merges back into it:
    // one split and one merge per round.)
    for (let i = 0; i < 1_000_000 && towersOn(a); i++) a.free(a.alloc(MiB));
    expect(towersOn(a)).toBe(false);
    a.check();
    // And come back, right, with the next lookup.
    expect(a.blockContaining(live[0])).toBe(live[0]);
    expect(towersOn(a)).toBe(true);
    a.check();
  });
});


describe('free by handle', () => {
  const hashOn = (a: RangeAllocator): boolean => (a as unknown as { st: { hashOn: boolean } }).st.hashOn;

  it('frees the block lastHandle names, without building the address index', () => {
    const a = new RangeAllocator([{ start: 0x1000, size: MiB }]);
    expect(a.lastHandle).toBe(-1);
    const p = a.alloc(100);
    const h = a.lastHandle;
    const q = a.alloc(200, { owner: 2 });
    const hq = a.lastHandle;
    expect(h).toBeGreaterThanOrEqual(0);
    expect(hq).not.toBe(h);
    expect(a.free(p, h)).toBe(104);
    expect(hashOn(a)).toBe(false);
    a.check();
    // The index appears on the first lookup by address, and then agrees.
    expect(a.sizeOf(q)).toBe(200);
    expect(hashOn(a)).toBe(true);
    expect(a.free(q, hq)).toBe(200);
    expect(a.sizeOf(q)).toBe(-1);
    a.check();
    expect(a.stats().freeBlocks).toBe(1);
  });

  it('refuses a handle that is not the block\'s (another block, stale, not an integer) and changes nothing', () => {
    const a = new RangeAllocator([{ start: 0, size: MiB }]);
    const p = a.alloc(64);
    const hp = a.lastHandle;
    const q = a.alloc(64);
    const hq = a.lastHandle;
    for (const bad of [hq, -1, 1.5, 2 ** 40, NaN]) {
      throwsWith(() => a.free(p, bad), 'EINVAL', /not the handle of the block at 0x0/);
    }
    expect(a.liveBlocks).toBe(2);
    a.free(q, hq);
    // A stale handle (its block freed) with that block's address: a double free.
    throwsWith(() => a.free(q, hq), 'EINVAL', /no live block there/);
    expect(a.free(p, hp)).toBe(64);
    expect(a.liveBlocks).toBe(0);
    a.check();
  });
});
