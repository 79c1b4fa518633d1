// The vfio backend on the host: real memfd memory and real ArrayBuffers, with
// the VFIO ioctls answered by a fake type1 kernel (test/helpers/fake-vfio.ts)
// because this host has no IOMMU; every such test says "fake". The real
// kernel runs the same in the QEMU guest (test/vm/vfio-pool.guest.test.ts).
import { closeSync, openSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openPoolSync, type Pool } from '../lib/index.js';
import { setNativeAddonForTesting, type NativeAddon } from '../lib/native.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { MSI_WINDOW, VFIO_IOVA_FLOOR, usableIovaRanges } from '../lib/backends/vfio.js';
import { hugePageSizes, hugepageCounts } from '../lib/backends/hugepage.js';
import { FakeVfio, type FakeVfioOptions } from './helpers/fake-vfio.js';
import { conformanceSuite } from './conformance/suite.js';

const MiB = 1 << 20;
const open: { fake?: FakeVfio; containers: VfioContainer[]; fds: number[]; pools: Pool[] } = { containers: [], fds: [], pools: [] };

function cleanup(): void {
  for (const p of open.pools.splice(0)) p.close();
  for (const c of open.containers.splice(0)) c.close();
  for (const fd of open.fds.splice(0)) closeSync(fd);
  open.fake?.uninstall();
  open.fake = undefined;
}

/** A fake kernel, installed, and a container on it with `groups` groups attached. */
function setup(o: FakeVfioOptions = {}, groups = 1): { fake: FakeVfio; container: VfioContainer; addon: NativeAddon } {
  const fake = (open.fake = new FakeVfio(o));
  const addon = fake.install();
  const container = VfioContainer.open({ path: '/dev/null' });
  open.containers.push(container);
  for (let i = 0; i < groups; i++) {
    const fd = openSync('/dev/null', 'r');
    open.fds.push(fd);
    container.attachGroup(fd, `fake group ${i}`);
  }
  return { fake, container, addon };
}

function pool(o: Parameters<typeof openPoolSync>[0]): Pool {
  const p = openPoolSync(o);
  open.pools.push(p);
  return p;
}

describe('usableIovaRanges', () => {
  it('leaves out IOVAs below 1 MiB, the MSI window and anything from 2^53 on', () => {
    const r = usableIovaRanges([{ start: 0n, end: 0xffff_ffffn }, { start: 0x1_0000_0000n, end: (1n << 57n) - 1n }]);
    expect(r).toEqual([
      { start: VFIO_IOVA_FLOOR, size: 0xfee0_0000 - VFIO_IOVA_FLOOR },
      { start: 0xfef0_0000, size: 0x1_0000_0000 - 0xfef0_0000 },
      { start: 0x1_0000_0000, size: 2 ** 53 - 0x1_0000_0000 },
    ]);
    for (const x of r) expect(x.start + x.size <= Number(MSI_WINDOW.start) || x.start > Number(MSI_WINDOW.end)).toBe(true);
    expect(usableIovaRanges([{ start: 0n, end: 0xfffffn }])).toEqual([]);
  });
});

describe('vfio backend (fake kernel)', () => {
  afterEach(cleanup);

  it('fake: maps the whole pool once at an IOVA from 1 MiB up; bus and phys are that IOVA; a device reaches exactly the buffer', () => {
    const { fake, container } = setup();
    const p = pool({ backend: 'vfio', device: container, size: 3 * MiB + 1 });
    expect(p.backend).toBe('vfio');
    expect(fake.mappings).toHaveLength(1);
    const m = fake.mappings[0];
    expect(m).toMatchObject({ length: 3 * MiB + 4096, offset: 0, read: true, write: true });
    expect(m.iova >= BigInt(VFIO_IOVA_FLOOR)).toBe(true);
    expect(p.stats().ranges).toEqual([expect.objectContaining({ start: m.iova, size: 3 * MiB + 4096 })]);
    expect(p.describe()).toContain(`at IOVA 0x${m.iova.toString(16)}`);

    const a = p.alloc(5000);
    const b = p.alloc(4096, { align: 4096 });
    expect(a.bus).toBe(a.phys);
    expect(b.bus >= m.iova && b.bus + 4096n <= m.iova + BigInt(m.length)).toBe(true);
    // Device -> RAM at b.bus lands in b.bytes, and nowhere in a.
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
    expect(fake.deviceWrite(b.bus, data)).toBe(true);
    expect(Buffer.from(b.bytes).equals(Buffer.from(data))).toBe(true);
    expect(a.bytes.every((v) => v === 0)).toBe(true);
    // RAM -> device.
    a.bytes.fill(0x5a);
    expect(fake.deviceRead(a.bus + 100n, 64)!.every((v) => v === 0x5a)).toBe(true);
  });

  it('fake: pools of one container get disjoint IOVAs; a device-like object with .container works too', () => {
    const { fake, container } = setup({}, 2);
    const p1 = pool({ backend: 'vfio', device: container, size: MiB });
    const p2 = pool({ backend: 'vfio', device: { container }, size: 2 * MiB });
    const [m1, m2] = fake.mappings;
    expect(m1.iova + BigInt(m1.length) <= m2.iova || m2.iova + BigInt(m2.length) <= m1.iova).toBe(true);
    const x = p1.alloc(64);
    const y = p2.alloc(64);
    fake.deviceWrite(x.bus, Uint8Array.of(1, 2, 3));
    fake.deviceWrite(y.bus, Uint8Array.of(9, 8, 7));
    expect([...x.bytes.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect([...y.bytes.subarray(0, 3)]).toEqual([9, 8, 7]);
    // Closing one pool frees its IOVAs for the next.
    const iova1 = m1.iova;
    p1.close();
    expect(() => pool({ backend: 'vfio', device: container, size: MiB, iova: m2.iova })).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    const p3 = pool({ backend: 'vfio', device: container, size: MiB, iova: iova1 });
    expect(p3.stats().ranges[0].start).toBe(iova1);
    // Chosen IOVAs stay below 4 GiB while there is room (32-bit DMA engines).
    expect(fake.mappings.every((m) => m.iova + BigInt(m.length) <= 0x1_0000_0000n)).toBe(true);
  });

  it('fake: a group attached later that narrows the ranges: new pools fit the new ranges, the old pool keeps its IOVAs', () => {
    const { fake, container } = setup();
    const p1 = pool({ backend: 'vfio', device: container, size: MiB, iova: 0x10_0000n });
    fake.options.ranges = [{ start: 0n, end: 0x2f_ffffn }];
    const fd = openSync('/dev/null', 'r');
    open.fds.push(fd);
    container.attachGroup(fd, 'fake group with a narrower aperture');
    expect(container.iovaRanges).toEqual([{ start: 0n, end: 0x2f_ffffn }]);
    const p2 = pool({ backend: 'vfio', device: container, size: MiB });
    expect(p2.stats().ranges[0].start).toBe(0x20_0000n); // the only free MiB left: p1 keeps 0x100000
    expect(() => pool({ backend: 'vfio', device: container, size: MiB })).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
    p1.close();
    expect(pool({ backend: 'vfio', device: container, size: MiB }).stats().ranges[0].start).toBe(0x10_0000n);
  });

  it('fake: close unmaps from the IOMMU before unmapping the memory; the device then faults', () => {
    const { fake, addon } = setup();
    const order: string[] = [];
    const spied: NativeAddon = {
      ...addon,
      vfioUnmapDma: (fd, iova, len) => (order.push('iommu unmap'), addon.vfioUnmapDma(fd, iova, len)),
      munmap: (h) => (order.push('munmap'), addon.munmap(h)),
    };
    setNativeAddonForTesting(spied);
    const p = pool({ backend: 'vfio', device: open.containers[0], size: MiB });
    const b = p.alloc(128);
    const bus = b.bus;
    p.close();
    expect(order).toEqual(['iommu unmap', 'munmap']);
    expect(b.bytes.length).toBe(0);
    expect(fake.mappings).toHaveLength(0);
    expect(fake.deviceWrite(bus, Uint8Array.of(1))).toBe(false);
    expect(fake.faults).toEqual([{ iova: bus, write: true }]);
    expect(() => p.close()).not.toThrow();
  });

  it('fake: closing the container closes its pools first (buffers detach, IOVAs unmapped)', () => {
    const { fake, container } = setup();
    const p = pool({ backend: 'vfio', device: container, size: MiB });
    const q = pool({ backend: 'vfio', device: container, size: MiB });
    const b = p.alloc(100);
    container.close();
    expect(p.closed).toBe(true);
    expect(q.closed).toBe(true);
    expect(b.bytes.length).toBe(0);
    expect(fake.mappings).toHaveLength(0);
    expect(fake.calls.filter((c) => c.startsWith('unmap'))).toHaveLength(2);
    expect(() => pool({ backend: 'vfio', device: container, size: MiB })).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('fake: iova option places the pool exactly; overlapping or unusable IOVAs are refused', () => {
    const { fake, container } = setup();
    const p = pool({ backend: 'vfio', device: container, size: MiB, iova: 0x4000_0000n });
    expect(fake.mappings[0].iova).toBe(0x4000_0000n);
    expect(p.alloc(64).bus).toBe(0x4000_0000n);
    expect(() => pool({ backend: 'vfio', device: container, size: MiB, iova: 0x4008_0000n })).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => pool({ backend: 'vfio', device: container, size: MiB, iova: 0xfee0_0000 })).toThrow(
      expect.objectContaining({ code: 'ERANGE', message: expect.stringContaining('usable: 0x100000-0xfedfffff') }),
    );
    expect(() => pool({ backend: 'vfio', device: container, size: MiB, iova: 0 })).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => pool({ backend: 'vfio', device: container, size: MiB, iova: 0x4000_0100n })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(fake.mappings).toHaveLength(1);
  });

  it('fake: ENOSPC when the container has no IOVAs left, with the usable ranges', () => {
    const { container } = setup({ ranges: [{ start: 0n, end: 0x2f_ffffn }] });
    pool({ backend: 'vfio', device: container, size: MiB });
    pool({ backend: 'vfio', device: container, size: MiB });
    expect(() => pool({ backend: 'vfio', device: container, size: MiB })).toThrow(
      expect.objectContaining({ code: 'ENOSPC', message: expect.stringContaining('usable: 0x100000-0x2fffff; 2 pool(s) mapped') }),
    );
  });

  it('fake: a failed MAP_DMA (RLIMIT_MEMLOCK) leaves nothing behind: no mapping, IOVAs free again', () => {
    const { fake, container, addon } = setup({ memlock: 2 * MiB });
    let munmaps = 0;
    setNativeAddonForTesting({ ...addon, munmap: (h) => (munmaps++, addon.munmap(h)) });
    expect(() => pool({ backend: 'vfio', device: container, size: 4 * MiB })).toThrow(
      expect.objectContaining({ code: 'ENOMEM', message: expect.stringContaining('RLIMIT_MEMLOCK') }),
    );
    expect(munmaps).toBe(1);
    expect(fake.mappings).toHaveLength(0);
    // The IOVAs the failed attempt tried are free again.
    const tried = BigInt('0x' + fake.calls.find((c) => c.startsWith('map '))!.split(' ')[1]);
    const p = pool({ backend: 'vfio', device: container, size: MiB, iova: tried });
    expect(p.stats().ranges[0].start).toBe(tried);
  });

  it('fake: refuses a bad device, a container without a group, bad sizes and page sizes', () => {
    const { container } = setup();
    expect(() => openPoolSync({ backend: 'vfio', device: {} as VfioContainer, size: MiB })).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('VfioDevice or a VfioContainer') }),
    );
    expect(() => openPoolSync({ backend: 'vfio', device: container, size: 0 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'vfio', device: container, pageSize: 3 * MiB })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const bare = VfioContainer.open({ path: '/dev/null' });
    open.containers.push(bare);
    expect(() => openPoolSync({ backend: 'vfio', device: bare })).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  });

  it('fake: 2 MiB pages when asked: a hugetlb memfd at a 2 MiB-aligned IOVA, or ENOMEM saying how to reserve them', () => {
    const { fake, container } = setup();
    const huge = 2 * MiB;
    if (!hugePageSizes().includes(huge)) {
      expect(() => openPoolSync({ backend: 'vfio', device: container, pageSize: huge })).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      return;
    }
    if (hugepageCounts(huge).available < 2) {
      expect(() => openPoolSync({ backend: 'vfio', device: container, size: 2 * huge, pageSize: huge })).toThrow(
        expect.objectContaining({ code: 'ENOMEM', message: expect.stringContaining('nr_hugepages') }),
      );
      expect(fake.mappings).toHaveLength(0);
      return;
    }
    const p = pool({ backend: 'vfio', device: container, size: huge + 1, pageSize: huge });
    expect(fake.mappings[0].length).toBe(2 * huge);
    expect(fake.mappings[0].iova % BigInt(huge)).toBe(0n);
    expect(p.describe()).toContain('huge pages');
  });
});

// The suite every backend passes, on vfio pools over the fake kernel.
describe('vfio backend conformance (fake kernel)', () => {
  let container: VfioContainer;
  beforeAll(() => {
    container = setup().container;
  });
  afterAll(cleanup);
  conformanceSuite('vfio backend (fake kernel: real memfd, fake IOMMU)', () => openPoolSync({ backend: 'vfio', device: container, size: 8 * MiB }));
});
