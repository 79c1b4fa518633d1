// The udmabuf backend on the host, against a simulated u-dma-buf: a temp tree
// of regular files standing in for /sys/class/u-dma-buf/<name>/ (phys_addr,
// size, dma_coherent, sync_*) and a sparse regular file standing in for
// /dev/<name> (this machine has no u-dma-buf module). A regular file keeps
// every value written to a sync attribute, in order, so the tests read back
// exactly what each call wrote.
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { listUdmabufDevices, openPoolSync, packSyncCommand, probeRealBackends, readUdmabufDevice, type Pool } from '../lib/index.js';
import { native, setNativeAddonForTesting, type NativeAddon } from '../lib/native.js';
import { defaultHugePageSize, hugepageCounts } from '../lib/backends/hugepage.js';
import { conformanceSuite } from './conformance/suite.js';

interface SimDevice {
  name: string;
  phys: bigint;
  size: number;
  /** dma_coherent; undefined leaves the attribute out (older u-dma-buf). */
  coherent?: 0 | 1;
  /** Class directory; default 'u-dma-buf'. */
  cls?: 'u-dma-buf' | 'udmabuf';
  /** Leave out the sync_for_device attribute. */
  noSyncForDevice?: boolean;
  /** Leave out the sync_for_cpu attribute. */
  noSyncForCpu?: boolean;
  /** Leave out the device file. */
  noDeviceFile?: boolean;
}

const roots: string[] = [];
afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** A simulated u-dma-buf: sysfs attributes as files, a sparse regular file per device. */
function simulate(devices: SimDevice[]): { sysfsRoot: string; devRoot: string; dir: (name: string) => string } {
  const root = mkdtempSync(join(tmpdir(), 'physmem-udmabuf-'));
  roots.push(root);
  const sysfsRoot = join(root, 'sys');
  const devRoot = join(root, 'dev');
  mkdirSync(devRoot, { recursive: true });
  const dirs = new Map<string, string>();
  for (const d of devices) {
    const dir = join(sysfsRoot, 'class', d.cls ?? 'u-dma-buf', d.name);
    dirs.set(d.name, dir);
    mkdirSync(dir, { recursive: true });
    // The driver prints phys_addr with %pad (0x, 16 hex digits on 64-bit) and size with %zu.
    writeFileSync(join(dir, 'phys_addr'), `0x${d.phys.toString(16).padStart(16, '0')}\n`);
    writeFileSync(join(dir, 'size'), `${d.size}\n`);
    if (d.coherent !== undefined) writeFileSync(join(dir, 'dma_coherent'), `${d.coherent}\n`);
    writeFileSync(join(dir, 'sync_mode'), '1\n');
    writeFileSync(join(dir, 'sync_owner'), '0\n');
    for (const a of ['sync_offset', 'sync_size', 'sync_direction', ...(d.noSyncForCpu ? [] : ['sync_for_cpu']), ...(d.noSyncForDevice ? [] : ['sync_for_device'])]) {
      writeFileSync(join(dir, a), ''); // empty, so what the backend writes is all there is
    }
    if (!d.noDeviceFile) {
      const fd = openSync(join(devRoot, d.name), 'w');
      ftruncateSync(fd, d.size);
      closeSync(fd);
    }
  }
  return { sysfsRoot, devRoot, dir: (n) => dirs.get(n)! };
}

/** Reads what was appended to a simulated attribute since the last call. */
function attrLog(path: string): () => string {
  let seen = 0;
  return () => {
    const all = readFileSync(path, 'latin1');
    const fresh = all.slice(seen);
    seen = all.length;
    return fresh;
  };
}

const MiB = 1 << 20;

/** File descriptors of this process open on files under `dir`. */
function openFdsUnder(dir: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
    } catch {
      return false;
    }
  }).length;
}

let pools: Pool[] = [];
afterEach(() => {
  pools.forEach((p) => p.close());
  pools = [];
  setNativeAddonForTesting(undefined);
});
function open(o: Parameters<typeof openPoolSync>[0]): Pool {
  const p = openPoolSync(o);
  pools.push(p);
  return p;
}

describe('reading a simulated u-dma-buf sysfs tree', () => {
  it('lists devices of both class names in natural order, the current class name first', () => {
    const sim = simulate([
      { name: 'udmabuf10', phys: 0x3000_0000n, size: MiB },
      { name: 'udmabuf2', phys: 0x2000_0000n, size: MiB },
      { name: 'udmabuf1', phys: 0x1000_0000n, size: MiB, cls: 'udmabuf' },
      { name: 'udmabuf2', phys: 0x4000_0000n, size: MiB, cls: 'udmabuf' }, // shadowed by u-dma-buf/udmabuf2
    ]);
    const found = listUdmabufDevices(sim.sysfsRoot);
    expect(found.map((d) => d.name)).toEqual(['udmabuf1', 'udmabuf2', 'udmabuf10']);
    expect(found[0].sysfsDir).toBe(join(sim.sysfsRoot, 'class/udmabuf/udmabuf1'));
    expect(found[1].sysfsDir).toBe(join(sim.sysfsRoot, 'class/u-dma-buf/udmabuf2'));
    expect(listUdmabufDevices(join(sim.sysfsRoot, 'absent'))).toEqual([]);
  });

  it('parses phys_addr (hex), size (decimal) and dma_coherent, and a missing dma_coherent as not coherent', () => {
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x13c0_0000n, size: 3 * MiB, coherent: 1 },
      { name: 'udmabuf1', phys: 0x2_0000_0000n, size: 4096 },
    ]);
    expect(readUdmabufDevice('udmabuf0', sim.dir('udmabuf0'), sim.devRoot)).toEqual({
      name: 'udmabuf0',
      sysfsDir: sim.dir('udmabuf0'),
      devicePath: join(sim.devRoot, 'udmabuf0'),
      bus: 0x13c0_0000n,
      size: 3 * MiB,
      dmaCoherent: true,
    });
    expect(readUdmabufDevice('udmabuf1', sim.dir('udmabuf1'), sim.devRoot)).toMatchObject({ bus: 0x2_0000_0000n, size: 4096, dmaCoherent: false });
  });

  it('refuses attributes it cannot parse with EIO naming the file', () => {
    const sim = simulate([{ name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 0 }]);
    const dir = sim.dir('udmabuf0');
    writeFileSync(join(dir, 'phys_addr'), 'banana\n');
    expect(() => readUdmabufDevice('udmabuf0', dir)).toThrow(expect.objectContaining({ code: 'EIO', path: join(dir, 'phys_addr') }));
    writeFileSync(join(dir, 'phys_addr'), '0x10000000\n');
    writeFileSync(join(dir, 'size'), '0x100000\n');
    expect(() => readUdmabufDevice('udmabuf0', dir)).toThrow(expect.objectContaining({ code: 'EIO', path: join(dir, 'size') }));
    writeFileSync(join(dir, 'size'), '1048576\n');
    writeFileSync(join(dir, 'dma_coherent'), 'yes\n');
    expect(() => readUdmabufDevice('udmabuf0', dir)).toThrow(expect.objectContaining({ code: 'EIO', path: join(dir, 'dma_coherent') }));
  });
});

describe('packSyncCommand: the documented printf("0x%08X%08X", offset, size | direction << 2 | 1)', () => {
  it('packs offset, size and direction into one value', () => {
    expect(packSyncCommand(0x1000, 0xbc0, 0)).toBe('0x0000100000000BC1');
    expect(packSyncCommand(0, 0x10_0000, 1)).toBe('0x0000000000100005');
    expect(packSyncCommand(0xffff_fff0, 16, 2)).toBe('0xFFFFFFF000000019');
    expect(packSyncCommand(0xabc0, 0xffff_fff0, 2)).toBe('0x0000ABC0FFFFFFF9');
  });

  it('refuses what the packed form cannot carry', () => {
    expect(() => packSyncCommand(0x1_0000_0000, 16, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => packSyncCommand(0, 24, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' })); // not a multiple of 16
    expect(() => packSyncCommand(0, 0, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => packSyncCommand(0, 0x1_0000_0000, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error a direction outside the enum
    expect(() => packSyncCommand(0, 16, 3)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('udmabuf backend on a simulated tree: mapping, ranges, bus addresses', () => {
  it('maps /dev/<name> from offset 0: bytes written through a buffer land in the device file at phys - phys_addr, and back', () => {
    const sim = simulate([{ name: 'udmabuf0', phys: 0x13c0_0000n, size: 4 * MiB, coherent: 1 }]);
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.backend).toBe('udmabuf');
    expect(p.stats().ranges).toEqual([expect.objectContaining({ start: 0x13c0_0000n, size: 4 * MiB })]);
    const b = p.alloc(4096, { at: 0x13c0_0000n + 0x12_3000n });
    b.bytes.set([1, 2, 3, 4], 10);
    const fd = openSync(join(sim.devRoot, 'udmabuf0'), 'r+');
    try {
      const got = Buffer.alloc(4);
      readSync(fd, got, 0, 4, 0x12_3000 + 10);
      expect([...got]).toEqual([1, 2, 3, 4]);
      writeSync(fd, Buffer.from([9, 8, 7]), 0, 3, 0x12_3000 + 100);
      expect([...b.bytes.subarray(100, 103)]).toEqual([9, 8, 7]); // MAP_SHARED: the file's writes show
    } finally {
      closeSync(fd);
    }
  });

  it('makes one range per device, ascending by address whatever the names, with bus = phys = phys_addr + offset', () => {
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x8000_0000n, size: 2 * MiB, coherent: 1 },
      { name: 'udmabuf1', phys: 0x1000_0000n, size: MiB, coherent: 1 },
    ]);
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.stats().ranges.map((r) => [r.start, r.size])).toEqual([
      [0x1000_0000n, MiB],
      [0x8000_0000n, 2 * MiB],
    ]);
    expect(p.busOffset).toBe(0n);
    const big = p.alloc(1536 * 1024); // fits only in udmabuf0
    expect(big.phys).toBe(0x8000_0000n);
    expect(big.bus).toBe(big.phys);
    const small = p.alloc(64, { maxAddress: 0x1fff_ffffn });
    expect(small.phys >= 0x1000_0000n && small.phys < 0x1010_0000n).toBe(true);
    expect(p.describe()).toMatch(/^udmabuf backend: 2 u-dma-buf device\(s\) \(udmabuf1: 1048576 bytes at bus 0x10000000, dma_coherent 1; udmabuf0: .*\) via .*, cached$/);
    // Each device has its own mapping: the bytes land in the right file.
    big.bytes[5] = 0x5a;
    small.bytes[0] = 0xa5;
    expect(readFileSync(join(sim.devRoot, 'udmabuf0'))[5]).toBe(0x5a);
    expect(readFileSync(join(sim.devRoot, 'udmabuf1'))[Number(small.phys - 0x1000_0000n)]).toBe(0xa5);
  });

  it('opens only the devices asked for, and accepts the older class name /sys/class/udmabuf', () => {
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 1, cls: 'udmabuf' },
      { name: 'udmabuf1', phys: 0x2000_0000n, size: MiB, coherent: 1, cls: 'udmabuf' },
    ]);
    const p = open({ backend: 'udmabuf', devices: ['udmabuf1'], sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.stats().ranges.map((r) => r.start)).toEqual([0x2000_0000n]);
  });

  it("passes O_SYNC for cache: 'uncached' and not otherwise (spy on the addon's open)", () => {
    const sim = simulate([{ name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 1 }]);
    const real = native();
    const calls: [string, boolean, boolean][] = [];
    const spy: NativeAddon = { ...real, open: (path, writable, sync) => (calls.push([path, writable, sync]), real.open(path, writable, sync)) };
    setNativeAddonForTesting(spy);
    open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot, cache: 'uncached' }).close();
    open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot }).close();
    expect(calls).toEqual([
      [join(sim.devRoot, 'udmabuf0'), true, true],
      [join(sim.devRoot, 'udmabuf0'), true, false],
    ]);
    expect(() => openPoolSync({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot, cache: 'wc' as 'cached' })).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
  });

  it('says what to do when there are no devices, a named one is missing, or its device file is', () => {
    const empty = simulate([]);
    expect(() => openPoolSync({ backend: 'udmabuf', sysfsRoot: empty.sysfsRoot, devRoot: empty.devRoot })).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/no u-dma-buf devices found.*insmod u-dma-buf\.ko udmabuf0=/s) }),
    );
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 1 },
      { name: 'udmabuf1', phys: 0x2000_0000n, size: MiB, coherent: 1, noDeviceFile: true },
    ]);
    const o = { backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot } as const;
    expect(() => openPoolSync({ ...o, devices: ['udmabuf7'] })).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/'udmabuf7' not found.*devices found: udmabuf0, udmabuf1/s) }),
    );
    expect(() => openPoolSync({ ...o, devices: ['udmabuf1'] })).toThrow(
      expect.objectContaining({ code: 'ENOENT', path: join(sim.devRoot, 'udmabuf1'), message: expect.stringMatching(/devtmpfs/) }),
    );
    expect(() => openPoolSync({ ...o, devices: ['../udmabuf0'] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ ...o, devices: ['udmabuf0', 'udmabuf0'] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ ...o, devices: [] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('fails at open, not at the first transfer, when a non-coherent device cannot be synced, leaving no fd open', () => {
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 0, noSyncForDevice: true },
      { name: 'udmabuf1', phys: 0x2000_0000n, size: MiB, coherent: 0, noSyncForCpu: true },
    ]);
    const o = { backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot } as const;
    expect(() => openPoolSync({ ...o, devices: ['udmabuf0'] })).toThrow(
      expect.objectContaining({ code: 'ENOENT', path: join(sim.dir('udmabuf0'), 'sync_for_device'), message: expect.stringMatching(/dma_coherent 0/) }),
    );
    expect(() => openPoolSync({ ...o, devices: ['udmabuf1'] })).toThrow(
      expect.objectContaining({ code: 'ENOENT', path: join(sim.dir('udmabuf1'), 'sync_for_cpu') }),
    );
    expect(openFdsUnder(sim.sysfsRoot) + openFdsUnder(sim.devRoot)).toBe(0);
  });

  it('close releases the mappings and the sync files (no fd left open on them)', () => {
    const sim = simulate([{ name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 0 }]);
    const syncFiles = () => openFdsUnder(sim.dir('udmabuf0'));
    const p = openPoolSync({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(syncFiles()).toBe(2); // sync_for_device and sync_for_cpu
    const b = p.alloc(100);
    p.close();
    expect(b.bytes.length).toBe(0);
    expect(syncFiles()).toBe(0);
  });
});

describe('udmabuf sync on a simulated tree: exactly what is written for each call', () => {
  const base = 0x13c0_0000n;

  it('writes the packed command to sync_for_device / sync_for_cpu, widened to 16-byte multiples', () => {
    const sim = simulate([{ name: 'udmabuf0', phys: base, size: 4 * MiB, coherent: 0 }]);
    const dev = attrLog(join(sim.dir('udmabuf0'), 'sync_for_device'));
    const cpu = attrLog(join(sim.dir('udmabuf0'), 'sync_for_cpu'));
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.coherent).toBe(false);
    const b = p.alloc(3000, { at: base + 0x1000n });

    b.syncForDevice(); // [0x1000, 0x1000 + 3000) -> size 3008 = 0xBC0
    expect(dev()).toBe('0x0000100000000BC1');
    expect(cpu()).toBe('');
    b.syncForCpu();
    expect(cpu()).toBe('0x0000100000000BC1');
    expect(dev()).toBe('');

    b.syncForDevice(5, 10); // bytes 5..14 -> [0x1000, 0x1010)
    expect(dev()).toBe('0x0000100000000011');
    b.syncForDevice(20, 20, 'toDevice'); // [0x1014, 0x1028) -> [0x1010, 0x1030)
    expect(dev()).toBe('0x0000101000000025');
    b.syncForCpu(0, 16, 'fromDevice');
    expect(cpu()).toBe('0x0000100000000019');
    b.syncForCpu(2999, 1, 'bidirectional'); // the last byte: [0x1BB7, 0x1BB8) -> [0x1BB0, 0x1BC0)
    expect(cpu()).toBe('0x00001BB000000011');
    b.syncForDevice(100, 0); // nothing to sync
    expect(dev()).toBe('');
  });

  it('writes nothing for a device with dma_coherent 1, and only for the non-coherent one of two', () => {
    const sim = simulate([
      { name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 0 },
      { name: 'udmabuf1', phys: 0x2000_0000n, size: MiB, coherent: 1 },
    ]);
    const logs = ['udmabuf0', 'udmabuf1'].flatMap((n) => ['sync_for_device', 'sync_for_cpu'].map((a) => attrLog(join(sim.dir(n), a))));
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.coherent).toBe(false); // not every device is coherent
    const coherent = p.alloc(4096, { at: 0x2000_0000n });
    coherent.syncForDevice();
    coherent.syncForCpu();
    expect(logs.map((l) => l())).toEqual(['', '', '', '']);
    const other = p.alloc(4096, { at: 0x1000_0000n });
    other.syncForDevice();
    other.syncForCpu(0, 64, 'fromDevice');
    expect(logs.map((l) => l())).toEqual(['0x0000000000001001', '0x0000000000000049', '', '']);
  });

  it('an all-coherent pool says so and writes nothing', () => {
    const sim = simulate([{ name: 'udmabuf0', phys: 0x1000_0000n, size: MiB, coherent: 1 }]);
    const dev = attrLog(join(sim.dir('udmabuf0'), 'sync_for_device'));
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    expect(p.coherent).toBe(true);
    p.alloc(4096).syncForDevice();
    expect(dev()).toBe('');
  });

  it('above 4 GiB of offset, and past 0xFFFFF000 bytes, falls back to sync_offset/sync_size/sync_direction and splits (sparse 4 GiB device)', () => {
    const size = 0x1_0010_0000; // 4 GiB + 1 MiB, sparse
    const sim = simulate([{ name: 'udmabuf0', phys: 0x1_0000_0000n, size, coherent: 0 }]);
    const d = sim.dir('udmabuf0');
    const dev = attrLog(join(d, 'sync_for_device'));
    const p = open({ backend: 'udmabuf', sysfsRoot: sim.sysfsRoot, devRoot: sim.devRoot });
    const huge = p.alloc(0xffff_f010, { at: 0x1_0000_0000n, zero: false });
    huge.syncForDevice();
    expect(dev()).toBe('0x00000000FFFFF001' + '0xFFFFF00000000011');
    const high = p.alloc(100, { at: 0x1_0000_0000n + 0x1_0001_0000n });
    high.syncForDevice(0, 100, 'toDevice');
    expect(readFileSync(join(d, 'sync_offset'), 'latin1')).toBe('0x100010000');
    expect(readFileSync(join(d, 'sync_size'), 'latin1')).toBe('112');
    expect(readFileSync(join(d, 'sync_direction'), 'latin1')).toBe('1');
    expect(dev()).toBe('1');
  });
});

// Where no real backend can open (this host: no /dev/mem, no u-dma-buf, no
// free huge pages); the guest checks that 'auto' picks devmem where it exists.
const isRoot = process.geteuid?.() === 0;
const freeHugepages = hugepageCounts(defaultHugePageSize() ?? 2 * MiB).available;
describe.skipIf(existsSync('/dev/mem') || listUdmabufDevices().length > 0 || (isRoot && freeHugepages > 0))(
  "'auto' order where no real backend is available",
  () => {
    it('tries devmem, then udmabuf, then hugepage, and explains each', () => {
      const probes = probeRealBackends();
      expect(probes.map((p) => p.name)).toEqual(['devmem', 'udmabuf', 'hugepage']);
      expect(probes[1].reason).toBe('no u-dma-buf devices (/sys/class/u-dma-buf, /sys/class/udmabuf)');
      expect(probes[2].reason).toMatch(
        isRoot ? /^(1 free huge page\(s\) of 2 MiB needed, 0 free \('auto' never reserves huge pages;.*|no huge pages on this kernel)$/ : /root only/,
      );
    });
  },
);

const one = simulate([{ name: 'udmabuf0', phys: 0x13c0_0000n, size: 8 * MiB, coherent: 0 }]);
conformanceSuite('udmabuf backend on a simulated tree (regular file as /dev/udmabuf0)', () =>
  openPoolSync({ backend: 'udmabuf', sysfsRoot: one.sysfsRoot, devRoot: one.devRoot, leakCheck: 'off' }),
);
const two = simulate([
  { name: 'udmabuf0', phys: 0x4000_0000n, size: 4 * MiB, coherent: 1 },
  { name: 'udmabuf1', phys: 0x2000_0000n, size: 4 * MiB, coherent: 1, cls: 'udmabuf' },
]);
conformanceSuite('udmabuf backend, two simulated devices as two ranges', () =>
  openPoolSync({ backend: 'udmabuf', sysfsRoot: two.sysfsRoot, devRoot: two.devRoot, leakCheck: 'off' }),
);
