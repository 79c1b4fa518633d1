// VfioContainer on the host. The host has no IOMMU and no /dev/vfio, so the
// container's ioctls run against a fake kernel (test/helpers/fake-vfio.ts);
// tests using it say "fake". The real ioctls run in the QEMU guest
// (test/vm/vfio-pool.guest.test.ts).
import { closeSync, openSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { formatSize } from '../lib/cli/format.js';
import { Mapping } from '../lib/mapping.js';
import { native } from '../lib/native.js';
import { VfioContainer, describePageSizes, mapDmaError, memlockLimit } from '../lib/vfio/container.js';
import { FakeVfio, type FakeVfioOptions } from './helpers/fake-vfio.js';

const MiB = 1 << 20;
let fake: FakeVfio | undefined;
const fds: number[] = [];
const cleanups: (() => void)[] = [];

afterEach(() => {
  for (const c of cleanups.splice(0)) c();
  fake?.uninstall();
  fake = undefined;
  for (const fd of fds.splice(0)) closeSync(fd);
});

/** A container on the fake kernel, /dev/null standing in for the device files. */
function fakeContainer(o: FakeVfioOptions = {}): { c: VfioContainer; group: () => number } {
  fake = new FakeVfio(o);
  fake.install();
  const c = VfioContainer.open({ path: '/dev/null' });
  cleanups.push(() => c.close());
  const group = () => {
    const fd = openSync('/dev/null', 'r');
    fds.push(fd);
    return fd;
  };
  return { c, group };
}

function memory(size: number): Mapping {
  const fd = native().memfdCreate('vfio-test', size);
  const m = Mapping.map(fd, 0n, size, true, 'memfd:vfio-test');
  native().close(fd);
  cleanups.push(() => m.close());
  return m;
}

describe('VfioContainer with the real addon (no VFIO on this host)', () => {
  it('says to load vfio-pci when the container device is missing', () => {
    expect(() => VfioContainer.open({ path: '/nonexistent/vfio' })).toThrow(
      expect.objectContaining({ code: 'ENOENT', path: '/nonexistent/vfio', message: expect.stringContaining('modprobe vfio-pci') }),
    );
  });

  it('refuses a file that is not a VFIO container (the ioctl fails, the fd is closed)', () => {
    const before = openSync('/dev/null', 'r');
    closeSync(before);
    expect(() => VfioContainer.open({ path: '/dev/null' })).toThrow(expect.objectContaining({ code: 'ENOTTY', syscall: 'ioctl(VFIO_GET_API_VERSION)' }));
    const after = openSync('/dev/null', 'r');
    closeSync(after);
    expect(after).toBe(before); // the container's fd was closed again: the same number is free
  });

  it('the addon refuses bad arguments without crashing', () => {
    const n = native();
    const fd = openSync('/dev/null', 'r');
    fds.push(fd);
    expect(() => n.vfioMapDma(fd, 987654, 0, 4096, 0x10000n, true, true)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const m = memory(MiB);
    expect(() => n.vfioMapDma(fd, m.handle, 0, 2 * MiB, 0x10000n, true, true)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => n.vfioMapDma(fd, m.handle, 0, 4096, 0x10000n, false, false)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.vfioMapDma(fd, m.handle, 0, 4096, -1n, true, true)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.vfioUnmapDma(fd, 0x10000n, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.vfioIommuSetType(-1, 3)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // A real ioctl on a non-VFIO fd: the kernel's answer, typed.
    expect(() => n.vfioMapDma(fd, m.handle, 0, 4096, 0x10000n, true, true)).toThrow(expect.objectContaining({ errno: 25, syscall: 'ioctl(VFIO_IOMMU_MAP_DMA)' }));
    expect(() => n.vfioIommuGetInfo(fd)).toThrow(expect.objectContaining({ errno: 25 }));
  });
});

describe('VfioContainer (fake kernel)', () => {
  it('fake: has no IOMMU until a group is attached, then type1v2 with the reported ranges and page sizes', () => {
    const { c, group } = fakeContainer();
    expect(c.iommuType).toBeUndefined();
    expect(() => c.iovaRanges).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringContaining('attachGroup') }));
    expect(c.dmaAvail).toBeUndefined();
    c.attachGroup(group(), '/dev/vfio/7');
    expect(c.iommuType).toBe('type1v2');
    expect(fake!.calls).toContain('setType 3');
    expect(c.iovaRanges).toEqual([{ start: 0n, end: 0xfedfffffn }, { start: 0xfef00000n, end: 0x7fffffffffn }]);
    expect(c.pageSizes).toBe(0x40201000n);
    expect(c.minPageSize).toBe(4096);
    expect(c.dmaAvail).toBe(65535);
    expect(c.groups).toEqual(['/dev/vfio/7']);
    expect(c.describe()).toContain('type1v2 IOMMU, groups /dev/vfio/7; IOVA ranges 0x0-0xfedfffff, 0xfef00000-0x7fffffffff');
    // A second group shares the IOMMU: the type is set once.
    c.attachGroup(group(), '/dev/vfio/8');
    expect(fake!.calls.filter((x) => x.startsWith('setType'))).toHaveLength(1);
  });

  it('fake: falls back to type1, and to assumed ranges when the kernel reports none', () => {
    const { c, group } = fakeContainer({ v2: false, ranges: null });
    c.attachGroup(group(), 'g');
    expect(c.iommuType).toBe('type1');
    expect(fake!.calls).toContain('setType 1');
    expect(c.iovaRanges.some((r) => r.start <= 0xfee00000n && r.end >= 0xfee00000n)).toBe(false);
    expect(c.describe()).toContain('assumed');
  });

  it('fake: EPERM without interrupt remapping names intremap=on and allow_unsafe_interrupts=1', () => {
    const { c, group } = fakeContainer({ intremap: false });
    expect(() => c.attachGroup(group(), 'g')).toThrow(
      expect.objectContaining({ code: 'EPERM', syscall: 'ioctl(VFIO_SET_IOMMU)', message: expect.stringMatching(/interrupt remapping.*intremap=on.*allow_unsafe_interrupts=1/s) }),
    );
  });

  it('fake: a group already in a container is refused with a hint', () => {
    const { c, group } = fakeContainer();
    const g = group();
    c.attachGroup(g, 'g');
    expect(() => c.attachGroup(g, 'g again')).toThrow(expect.objectContaining({ code: 'EINVAL', path: 'g again', message: expect.stringContaining('already attached') }));
  });

  it('fake: maps and unmaps, checks alignment and the usable ranges (naming them), counts dmaAvail', () => {
    const { c, group } = fakeContainer();
    c.attachGroup(group(), 'g');
    const m = memory(4 * MiB);
    c.mapDma(m.handle, 0, 2 * MiB, 0x100000n);
    expect(fake!.mappings).toMatchObject([{ iova: 0x100000n, length: 2 * MiB, handle: m.handle, offset: 0, read: true, write: true }]);
    expect(c.dmaAvail).toBe(65534);
    expect(c.mappedBytes).toBe(2 * MiB);
    c.mapDma(m.handle, 2 * MiB, MiB, 0x400000n, { write: false });
    expect(fake!.mappings[1]).toMatchObject({ read: true, write: false });
    // The MSI window is not usable: refused before the kernel is asked.
    expect(() => c.mapDma(m.handle, 0, MiB, 0xfee00000n)).toThrow(
      expect.objectContaining({ code: 'ERANGE', message: expect.stringContaining('0x0-0xfedfffff, 0xfef00000-0x7fffffffff') }),
    );
    expect(() => c.mapDma(m.handle, 0, MiB, 1n << 39n)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => c.mapDma(m.handle, 100, 4096, 0x800000n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => c.mapDma(m.handle, 0, 4096, 0x800001n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => c.mapDma(m.handle, 0, 4096, 0x800000n, { read: false, write: false })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => c.mapDma(m.handle, 0, 4096, 0x101000n)).toThrow(expect.objectContaining({ code: 'EEXIST', message: expect.stringContaining('overlap') }));
    // type1v2 never splits a mapping; unmapping nothing is an error too.
    expect(() => c.unmapDma(0x100000n, MiB)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => c.unmapDma(0x10000000n, MiB)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('nothing was mapped') }));
    c.unmapDma(0x100000n, 2 * MiB);
    expect(fake!.mappings).toHaveLength(1);
    expect(c.mappedBytes).toBe(MiB);
  });

  it('fake: ENOMEM from MAP_DMA names RLIMIT_MEMLOCK, the size asked, the limit and the fixes', () => {
    const { c, group } = fakeContainer({ memlock: 8 * MiB });
    c.attachGroup(group(), 'g');
    const m = memory(16 * MiB);
    const err = throwsWith(() => c.mapDma(m.handle, 0, 16 * MiB, 0x100000n), 'ENOMEM');
    expect(err.syscall).toBe('ioctl(VFIO_IOMMU_MAP_DMA)');
    const msg = err.message;
    expect(msg).toContain('pinning 16 MiB for DMA passes RLIMIT_MEMLOCK');
    const limit = memlockLimit();
    expect(msg).toContain(`limit ${limit === Infinity ? 'unlimited' : limit === undefined ? 'unknown' : formatSize(limit)}`);
    expect(msg).toMatch(/ulimit -l \d+/);
    expect(msg).toContain('LimitMEMLOCK=');
    expect(msg).toContain('CAP_IPC_LOCK');
    expect(fake!.mappings).toHaveLength(0);
  });

  it('fake: ENOSPC from MAP_DMA names dma_entry_limit and how to raise it', () => {
    const { c, group } = fakeContainer({ dmaEntryLimit: 2 });
    c.attachGroup(group(), 'g');
    const m = memory(MiB);
    c.mapDma(m.handle, 0, 4096, 0x100000n);
    c.mapDma(m.handle, 4096, 4096, 0x200000n);
    expect(c.dmaAvail).toBe(0);
    expect(() => c.mapDma(m.handle, 8192, 4096, 0x300000n)).toThrow(
      expect.objectContaining({ code: 'ENOSPC', message: expect.stringMatching(/dma_entry_limit.*modprobe vfio_iommu_type1 dma_entry_limit=N/s) }),
    );
  });

  it('a kernel EINVAL from MAP_DMA names the usable ranges', () => {
    const e = Object.assign(new Error('EINVAL: x'), { code: 'EINVAL', errno: 22, syscall: 'ioctl(VFIO_IOMMU_MAP_DMA)' });
    const err = mapDmaError(e, 4096, 0x1000n, [{ start: 0x10000n, end: 0xffffffn }]);
    expect(err).toMatchObject({ code: 'EINVAL', message: expect.stringContaining('usable IOVA ranges are 0x10000-0xffffff') });
  });

  it('fake: close unmaps what is left and closes dependents first; idempotent; EBADF after', () => {
    const { c, group } = fakeContainer();
    c.attachGroup(group(), 'g');
    const m = memory(MiB);
    const order: string[] = [];
    c.addDependent({ close: () => order.push(`dependent (mappings left: ${fake!.mappings.length})`) });
    c.mapDma(m.handle, 0, MiB, 0x100000n);
    c.close();
    expect(order).toEqual(['dependent (mappings left: 1)']);
    expect(fake!.mappings).toHaveLength(0);
    expect(c.closed).toBe(true);
    expect(() => c.close()).not.toThrow();
    expect(() => c.fd).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => c.mapDma(m.handle, 0, MiB, 0x100000n)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => c.attachGroup(group(), 'g')).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => c.addDependent({ close: () => {} })).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('fake: refuses a wrong API version', () => {
    fake = new FakeVfio({ apiVersion: 1 });
    fake.install();
    expect(() => VfioContainer.open({ path: '/dev/null' })).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringContaining('API version 1') }));
  });

  it('describes page size masks', () => {
    expect(describePageSizes(0x40201000n)).toBe('4 KiB, 2 MiB, 1 GiB');
    expect(describePageSizes(0n)).toBe('not reported');
  });
});
