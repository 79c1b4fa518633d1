// busAt/physAt: bigint address of a byte inside a buffer, range-checked, on
// DmaBuffer and SubPoolBlock (fake backend, with a bus offset so bus != phys).
import { afterEach, describe, expect, it } from 'vitest';
import { openPoolSync, type Pool } from '../lib/index.js';

let pool: Pool;
afterEach(() => pool?.close());

describe('busAt / physAt', () => {
  it('give bus + offset and phys + offset as bigints for every byte of the buffer', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20, busOffset: 0x1000_0000n });
    const buf = pool.alloc(4096, { align: 4096 });
    expect(buf.busAt(0)).toBe(buf.bus);
    expect(buf.busAt(512)).toBe(buf.bus + 512n);
    expect(buf.physAt(4095)).toBe(buf.phys + 4095n);
    expect(buf.busAt(100) - buf.physAt(100)).toBe(0x1000_0000n);
    // The idiom: a descriptor field written with the address of the i-th slot.
    const desc = new DataView(buf.bytes.buffer);
    desc.setBigUint64(8, buf.busAt(2 * 1024), true);
    expect(desc.getBigUint64(8, true)).toBe(buf.bus + 2048n);
  });

  it('refuses offsets outside the buffer (ERANGE), non-integers (EINVAL), freed buffers (EINVAL)', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
    const buf = pool.alloc(100);
    expect(() => buf.busAt(100)).toThrow(expect.objectContaining({ code: 'ERANGE', message: expect.stringMatching(/busAt\(100\) is outside the buffer of 100 bytes/) }));
    expect(() => buf.physAt(-1)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => buf.busAt(1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error a bigint offset
    expect(() => buf.busAt(1n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => buf.busAt(Number.NaN)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    buf.free();
    expect(() => buf.busAt(0)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/freed buffer/) }));
  });

  it('sub-pool blocks have them too, valid while allocated', () => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20, busOffset: 0x100n });
    const sub = pool.createSubPool({ blockSize: 256, count: 4 });
    const b = sub.alloc();
    expect(b.busAt(255)).toBe(b.bus + 255n);
    expect(b.physAt(0)).toBe(b.phys);
    expect(() => b.busAt(256)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    b.free();
    expect(() => b.busAt(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    sub.close();
  });
});
