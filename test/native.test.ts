import { describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { native } from '../lib/native.js';
import { Mapping, openFile } from '../lib/mapping.js';

const n = native();
const abOf = (m: Mapping, offset: number, length: number): ArrayBuffer => m.buffer(m.view(offset, length))!;

function memfdMapping(size: number, offset = 0n, len = size): { fd: number; m: Mapping } {
  const fd = n.memfdCreate('test', size);
  return { fd, m: Mapping.map(fd, offset, len, true, 'memfd:test') };
}

describe('native layer', () => {
  it('reports the page size', () => {
    expect([4096, 16384, 65536]).toContain(n.pageSize());
  });

  it('gives zero-copy ArrayBuffers over a mapping, seen by a second mapping of the same file', () => {
    const { fd, m } = memfdMapping(1 << 16);
    const m2 = Mapping.map(fd, 0n, 1 << 16, true, 'memfd:test');
    const a = new Uint8Array(abOf(m, 4096, 100));
    const b = new Uint8Array(abOf(m2, 4096, 100));
    a[7] = 42;
    expect(b[7]).toBe(42);
    expect(a.buffer.byteLength).toBe(100);
    m.close();
    m2.close();
    n.close(fd);
  });

  it('maps file offsets above 4 GiB', () => {
    const size = 2 ** 32 + 2 * 4096; // sparse: no memory is used
    const fd = n.memfdCreate('big', size);
    const hi = Mapping.map(fd, 2n ** 32n + 4096n, 4096, true, 'memfd:big');
    const whole = Mapping.map(fd, 2n ** 32n, 8192, true, 'memfd:big');
    new Uint8Array(abOf(hi, 0, 4096))[5] = 0x5a;
    expect(new Uint8Array(abOf(whole, 4096, 4096))[5]).toBe(0x5a);
    expect(new Uint8Array(abOf(whole, 0, 4096))[5]).toBe(0);
    hi.close();
    whole.close();
    n.close(fd);
  });

  it('detaches every ArrayBuffer still out when the mapping closes, so stale views are empty', () => {
    const { fd, m } = memfdMapping(1 << 16);
    const bytes = new Uint8Array(abOf(m, 0, 10));
    const doubles = new Float64Array(abOf(m, 4096, 4096));
    const view = new DataView(abOf(m, 8192, 64));
    expect(m.viewCount).toBe(3);
    m.close();
    expect(bytes.length).toBe(0);
    expect(doubles.length).toBe(0);
    expect(() => view.getUint8(0)).toThrow(TypeError);
    expect(() => m.close()).not.toThrow();
    expect(() => abOf(m, 0, 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    n.close(fd);
  });

  it('refuses to munmap while buffers are attached (the raw addon call)', () => {
    const fd = n.memfdCreate('raw', 8192);
    const h = n.mmap(fd, 0n, 8192, true);
    const ab = n.arrayBuffer(h, 0, 16);
    expect(n.attachedCount(h)).toBe(1);
    expect(() => n.munmap(h)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    n.detach(h, ab);
    n.detach(h, ab); // already detached: no-op, count stays exact
    expect(n.attachedCount(h)).toBe(0);
    expect(ab.byteLength).toBe(0);
    n.munmap(h);
    expect(() => n.read8(h, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    n.close(fd);
  });

  it('refuses to detach an ArrayBuffer of another mapping', () => {
    const a = memfdMapping(8192);
    const b = memfdMapping(8192);
    const ab = abOf(a.m, 0, 64);
    expect(() => n.detach(b.m.handle, ab)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.detach(b.m.handle, new ArrayBuffer(8))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    a.m.close();
    b.m.close();
  });

  it('reserves address space and maps a file into it piece by piece', () => {
    const fd = n.memfdCreate('pieces', 3 * 4096);
    const direct = Mapping.map(fd, 0n, 3 * 4096, true, 'memfd:pieces');
    const r = Mapping.reserve(4 * 4096, true, 'memfd:pieces');
    r.mapInto(4096, fd, 8192n, 4096); // file page 2 at reserved page 1
    new Uint8Array(abOf(direct, 8192, 16))[3] = 0x77;
    expect(new Uint8Array(abOf(r, 4096, 16))[3]).toBe(0x77);
    expect(() => r.mapInto(100, fd, 0n, 4096)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => r.mapInto(3 * 4096, fd, 0n, 8192)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => r.mapInto(0, 987654, 0n, 4096)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'mmap' }));
    r.close();
    direct.close();
    n.close(fd);
  });

  it('does exact-width volatile reads and writes, little-endian, unsigned', () => {
    const { fd, m } = memfdMapping(4096);
    const h = m.handle;
    n.write32(h, 8, 0xdeadbeef);
    expect(n.read32(h, 8)).toBe(0xdeadbeef);
    expect(n.read8(h, 8)).toBe(0xef);
    expect(n.read16(h, 10)).toBe(0xdead);
    n.write64(h, 16, 0xfedcba9876543210n);
    expect(n.read64(h, 16)).toBe(0xfedcba9876543210n);
    expect(n.read32(h, 20)).toBe(0xfedcba98);
    n.write8(h, 0, 0xff);
    n.write16(h, 2, 0xffff);
    expect(new Uint8Array(abOf(m, 0, 4))).toEqual(new Uint8Array([0xff, 0, 0xff, 0xff]));
    m.close();
    n.close(fd);
  });

  it('refuses unaligned, out-of-range and over-wide accesses without crashing', () => {
    const { fd, m } = memfdMapping(4096);
    const h = m.handle;
    expect(() => n.read32(h, 2)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.read64(h, 4092)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => n.read8(h, 4096)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => n.write8(h, 0, 256)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.write32(h, 0, -1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.write32(h, 0, 1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.arrayBuffer(h, 4000, 100)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => n.mmap(fd, 1n, 4096, true)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.mmap(fd, 0n, 0, true)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.read8(999999, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    // @ts-expect-error wrong types are refused too
    expect(() => n.read8('1', 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error a number offset where the addon takes a bigint
    expect(() => n.mmap(fd, 0, 4096, true)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    m.close();
    n.close(fd);
  });

  it('refuses writes through a read-only mapping', () => {
    const fd = n.memfdCreate('ro', 4096);
    const m = Mapping.map(fd, 0n, 4096, false, 'memfd:ro');
    expect(() => n.write32(m.handle, 0, 1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    m.close();
    n.close(fd);
  });

  it('turns system call failures into fs-style PhysmemErrors', () => {
    const err = throwsWith(() => openFile('/nonexistent/physmem', true, false, () => 'check the path'), 'ENOENT');
    expect(err).toMatchObject({ errno: -2, syscall: 'open', path: '/nonexistent/physmem' });
    expect(err.message).toBe("ENOENT: no such file or directory, open '/nonexistent/physmem'. check the path");
  });

  it('maps an mmap failure with the path', () => {
    const fd = n.open('/proc/self/status', false, false);
    expect(() => Mapping.map(fd, 0n, 4096, true, '/proc/self/status')).toThrow(
      expect.objectContaining({ code: 'EACCES', syscall: 'mmap', path: '/proc/self/status' }),
    );
    n.close(fd);
  });
});
