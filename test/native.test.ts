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
    // No empty buffers: detach takes a zero-length one for one already detached, so one would never count down.
    expect(() => n.arrayBuffer(h, 0, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(n.attachedCount(h)).toBe(1);
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

// Every argument of every addon function, replaced by each value of the wrong
// kind (or left out), is refused with a typed EINVAL error: never a crash, a
// silently truncated value or undefined behaviour in the conversion.
describe('native layer: bad arguments', () => {
  type Kind = 'uint' | 'handle' | 'bigint' | 'bool' | 'string' | 'arraybuffer' | 'function' | 'array';
  const badNumbers: unknown[] = [Infinity, -Infinity, NaN, -1, -0.5, 1.5, 2 ** 64, 2 ** 70, Number.MAX_VALUE, '1', 1n, null, undefined, {}, true];
  const bad: Record<Kind, unknown[]> = {
    uint: badNumbers,
    handle: badNumbers,
    bigint: [-1n, 2n ** 64n, 2n ** 100n, 1, 1.5, '1', null, undefined, {}],
    bool: [1, 0, 'true', null, undefined, {}],
    string: [1, null, undefined, {}, 'a\0b', Symbol('s')],
    arraybuffer: [1, 'ab', null, undefined, {}, new Uint8Array(4)],
    function: [1, 'f', null, undefined, {}],
    array: [1, 'a', null, undefined, {}, [], [1.5], [NaN], [Infinity], [-2], [2 ** 31], ['3']],
  };

  it('refuses every bad value of every argument kind with EINVAL and a code, and a missing argument too', () => {
    const fd = n.memfdCreate('args', 8192);
    const h = n.mmap(fd, 0n, 8192, true);
    const ab = n.arrayBuffer(h, 0, 64);
    const efd = n.eventfdCreate();
    const watch = n.eventfdWatch(efd, () => {});
    // name, valid arguments, kind of each argument. Valid arguments reach the
    // bad one; each function checks its arguments in order before any effect.
    const table: [keyof typeof n, unknown[], Kind[]][] = [
      ['open', ['/nonexistent', false, false], ['string', 'bool', 'bool']],
      ['close', [fd], ['uint']],
      ['memfdCreate', ['x', 4096], ['string', 'uint']],
      ['mmap', [fd, 0n, 4096, true], ['uint', 'bigint', 'uint', 'bool']],
      ['reserve', [4096, true], ['uint', 'bool']],
      ['mapInto', [h, 0, fd, 0n, 4096], ['handle', 'uint', 'uint', 'bigint', 'uint']],
      ['munmap', [h], ['handle']],
      ['arrayBuffer', [h, 0, 16], ['handle', 'uint', 'uint']],
      ['detach', [h, ab], ['handle', 'arraybuffer']],
      ['attachedCount', [h], ['handle']],
      ['mappingAddress', [h], ['handle']],
      ['read8', [h, 0], ['handle', 'uint']],
      ['read64Relaxed', [h, 0], ['handle', 'uint']],
      ['write16', [h, 0, 1], ['handle', 'uint', 'uint']],
      ['write32Relaxed', [h, 0, 1], ['handle', 'uint', 'uint']],
      ['write64', [h, 0, 1n], ['handle', 'uint', 'bigint']],
      ['memfdCreateHuge', ['x', 1 << 21, 21], ['string', 'uint', 'uint']],
      ['mlock', [h], ['handle']],
      ['lockFileOpen', ['/nonexistent/dir/lock'], ['string']],
      ['lockFileClose', [fd], ['uint']],
      ['lockRange', [fd, 0n, 1n], ['uint', 'bigint', 'bigint']],
      ['unlockRange', [fd, 0n, 1n], ['uint', 'bigint', 'bigint']],
      ['peerCredentials', [fd], ['uint']],
      ['vfioGroupGetStatus', [fd], ['uint']],
      ['vfioGroupGetDeviceFd', [fd, '0000:00:03.0'], ['uint', 'string']],
      ['vfioDeviceGetInfo', [fd], ['uint']],
      ['vfioDeviceGetRegionInfo', [fd, 0], ['uint', 'uint']],
      ['vfioDeviceGetIrqInfo', [fd, 0], ['uint', 'uint']],
      ['vfioDeviceReset', [fd], ['uint']],
      ['vfioIrqSetEventfds', [fd, 0, 0, [efd]], ['uint', 'uint', 'uint', 'array']],
      ['vfioIrqDisable', [fd, 0], ['uint', 'uint']],
      ['vfioIrqUnmask', [fd, 0, 0], ['uint', 'uint', 'uint']],
      ['pread', [fd, 0, 4], ['uint', 'uint', 'uint']],
      ['pwrite', [fd, 0, 4, 1], ['uint', 'uint', 'uint', 'uint']],
      ['pread64', [fd, 0], ['uint', 'uint']],
      ['pwrite64', [fd, 0, 1n], ['uint', 'uint', 'bigint']],
      ['eventfdRead', [efd], ['uint']],
      ['eventfdWrite', [efd, 1], ['uint', 'uint']],
      ['eventfdWatch', [efd, () => {}], ['uint', 'function']],
      ['eventfdUnwatch', [watch], ['uint']],
      ['eventfdWatchRef', [watch, true], ['uint', 'bool']],
      ['vfioContainerApiVersion', [fd], ['uint']],
      ['vfioContainerCheckExtension', [fd, 1], ['uint', 'uint']],
      ['vfioGroupSetContainer', [fd, fd], ['uint', 'uint']],
      ['vfioIommuSetType', [fd, 1], ['uint', 'uint']],
      ['vfioIommuGetInfo', [fd], ['uint']],
      ['vfioMapDma', [fd, h, 0, 4096, 0n, true, true], ['uint', 'handle', 'uint', 'uint', 'bigint', 'bool', 'bool']],
      ['vfioUnmapDma', [fd, 0n, 4096], ['uint', 'bigint', 'uint']],
    ];
    const failures: string[] = [];
    let checked = 0;
    for (const [name, args, kinds] of table) {
      const fn = n[name] as (...a: unknown[]) => unknown;
      expect(typeof fn, name).toBe('function');
      kinds.forEach((kind, i) => {
        const tries: unknown[][] = bad[kind].map((v) => args.map((a, j) => (j === i ? v : a)));
        tries.push(args.slice(0, i)); // the argument left out
        for (const call of tries) {
          checked++;
          const shown = `${name}(${call.map((a) => (typeof a === 'bigint' ? `${a}n` : typeof a === 'symbol' ? 'Symbol()' : JSON.stringify(a) ?? String(a))).join(', ')})`;
          try {
            fn(...call);
            failures.push(`${shown} did not throw`);
          } catch (e) {
            const err = e as { code?: unknown; errno?: unknown; message?: unknown };
            if (err.code !== 'EINVAL' || err.errno !== 22 || !String(err.message).startsWith('EINVAL: ')) {
              failures.push(`${shown} threw ${String(err.code)} ${String(err.message)}`);
            }
          }
        }
      });
    }
    expect(failures).toEqual([]);
    expect(checked).toBeGreaterThan(1000);
    // Nothing was half-done: the mapping, its one buffer and the fds are intact.
    expect(n.attachedCount(h)).toBe(1);
    expect(ab.byteLength).toBe(64);
    n.detach(h, ab);
    n.munmap(h);
    n.eventfdUnwatch(watch);
    n.close(efd);
    n.close(fd);
  });

  it('names a failed system call by its errno: code, positive errno, syscall', () => {
    expect(() => n.close(2 ** 31 - 1)).toThrow(expect.objectContaining({ errno: 9, syscall: 'close', message: expect.stringMatching(/^E[A-Z]+: .*, close$/) }));
    // lib/native.ts names the code from errno through os.constants.errno (the one table).
    expect(throwsWith(() => openFile('/nonexistent/physmem', false, false), 'ENOENT')).toMatchObject({ errno: -2, syscall: 'open' });
  });
});
