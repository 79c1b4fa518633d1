import { afterEach, describe, expect, it } from 'vitest';
import { openPoolSync, type Pool } from '../lib/index.js';
import { FakeDmaDevice } from '../lib/testing/index.js';

let pool: Pool;
afterEach(() => pool?.close());

describe('FakeDmaDevice (stands in for hardware on the fake backend)', () => {
  it('writes and reads buffers by bus address, through its own path to the memory', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20, busOffset: 0x100000n });
    const dev = new FakeDmaDevice(pool);
    const buf = pool.alloc(256);
    dev.write(buf.bus + 16n, new Uint8Array([1, 2, 3]));
    expect([...buf.bytes.subarray(16, 19)]).toEqual([1, 2, 3]);
    buf.bytes.set([9, 8, 7], 100);
    expect([...dev.read(buf.bus + 100n, 3)]).toEqual([9, 8, 7]);
    expect(dev.violations).toEqual([]);
  });

  it('catches use after free, overruns and foreign addresses, and records them', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
    const dev = new FakeDmaDevice(pool);
    const a = pool.alloc(256);
    const bus = a.bus;
    expect(() => dev.write(bus + 200n, new Uint8Array(100))).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    a.free();
    expect(() => dev.write(bus, new Uint8Array(4))).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(() => dev.read(0x1000n, 4)).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(dev.violations.map((v) => v.op)).toEqual(['write', 'write', 'read']);
    expect(dev.violations[0].reason).toMatch(/runs past the end/);
    expect(dev.violations[1].reason).toMatch(/not inside a live allocation/);
    expect(dev.violations[1].bus).toBe(bus);
  });

  it('refuses bad arguments with EINVAL', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
    const dev = new FakeDmaDevice(pool);
    const a = pool.alloc(64);
    expect(() => dev.read(a.bus, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error a plain array where a Uint8Array is required
    expect(() => dev.write(a.bus, [1, 2])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(dev.violations).toEqual([]);
  });

  it('checks against the size asked for, not the allocator rounding', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
    const dev = new FakeDmaDevice(pool);
    const a = pool.alloc(250);
    dev.write(a.bus + 246n, new Uint8Array(4));
    expect(() => dev.write(a.bus + 248n, new Uint8Array(4))).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(pool.findBlock(a.phys + 100n)).toEqual({ phys: a.phys, size: 250 });
  });
});
