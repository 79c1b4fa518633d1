// physmem/pci device lifecycle against a fake sysfs tree (test/helpers/
// fake-sysfs.ts): drivers, IOMMU groups, reset, locks and quiescing. No kernel
// stands behind the tree, so these tests check what is read and written and
// the errors; the real kernel's side is proven in the guest
// (test/vm/edu.guest.test.ts, test/vm/nvme.guest.test.ts).
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runRegions } from '../lib/cli/regions.js';
import { runStat } from '../lib/cli/stat.js';
import { openPoolSync } from '../lib/index.js';
import {
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PciDevice,
  bindDriver,
  driverOf,
  findOrphanedBusMasters,
  iommuGroupOf,
  iommuState,
  liveOwners,
  quiesceOrphanedDevices,
  restoreDriver,
  unbindDriver,
} from '../lib/pci/index.js';
import { startJsonChild } from './helpers/child.js';
import { MEM, fakeCommand, makeSysfs, setFakeCommand, type FakeDevice } from './helpers/fake-sysfs.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const isRoot = process.getuid?.() === 0;

const EDU: FakeDevice = { bdf: '0000:00:05.0', vendor: 0x1234, device: 0x11e8, resources: [[0xfea00000n, 0xfeafffffn, MEM]], barFiles: { resource0: 1 << 20 } };
const NVME: FakeDevice = { bdf: '0000:00:04.0', vendor: 0x1b36, device: 0x0010, classCode: 0x010802, driver: 'nvme', resources: [[0xfeb00000n, 0xfeb03fffn, MEM]], barFiles: { resource0: 0x4000 } };

let root: string;
let lockDir: string;
const opened: PciDevice[] = [];
const children: ChildProcess[] = [];
const dev = (bdf: string) => path.join(root, 'bus/pci/devices', bdf);
const read = (p: string) => fs.readFileSync(path.join(root, p), 'utf8');
const open = (bdf: string, o: { quiesce?: boolean } = {}) => {
  const d = PciDevice.open(bdf, { sysfsRoot: root, lockDir, ...o });
  opened.push(d);
  return d;
};

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-sysfs-'));
  fs.chmodSync(root, 0o755);
  lockDir = path.join(root, '.locks');
});
afterEach(() => {
  opened.splice(0).forEach((d) => d.close());
  children.splice(0).forEach((c) => c.kill('SIGKILL'));
  fs.rmSync(root, { recursive: true, force: true });
});

/** A child process that holds a device the way `how` says, then waits to be killed. */
// 'physmem': PciDevice.open (lock held; quiesce off, so the holder leaves the bits as they are);
// 'open-config': a driver without physmem that holds the config file open.
async function holder(how: 'physmem' | 'open-config', bdf: string): Promise<{ pid: number }> {
  const lib = JSON.stringify(path.join(REPO, 'dist/lib/pci/index.js'));
  const body =
    how === 'physmem'
      ? `const { PciDevice } = await import(${lib}); globalThis.d = PciDevice.open(${JSON.stringify(bdf)}, { sysfsRoot: ${JSON.stringify(root)}, lockDir: ${JSON.stringify(lockDir)}, quiesce: false });`
      : `globalThis.fd = (await import('node:fs')).openSync(${JSON.stringify(path.join(root, 'bus/pci/devices', bdf, 'config'))}, 'r');`;
  const { child, result } = await startJsonChild(['--input-type=module', '-e', `${body} console.log(JSON.stringify({ ok: true })); setInterval(() => {}, 1000);`], 60_000);
  children.push(child);
  if (!result.ok) throw new Error(`holder failed: ${result.message}`);
  return { pid: child.pid! };
}

describe('fake sysfs: drivers (bind.ts)', () => {
  beforeEach(() => makeSysfs(root, [EDU, NVME]));

  it('reads the bound driver from the driver link', () => {
    expect(driverOf(NVME.bdf, root)).toBe('nvme');
    expect(driverOf(EDU.bdf, root)).toBeUndefined();
    expect(() => driverOf('../x', root)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('unbindDriver writes the address to the driver\'s unbind file and checks the link is gone (fake: no kernel, so it is not)', () => {
    expect(unbindDriver(EDU.bdf, { sysfsRoot: root })).toBeUndefined();
    expect(() => unbindDriver('00:04.0', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/still bound to nvme/) }));
    expect(read('bus/pci/drivers/nvme/unbind')).toBe(NVME.bdf);
  });

  it('bindDriver refuses a driver that is not loaded (ENODEV, modprobe hint) before writing anything', () => {
    expect(() => bindDriver(EDU.bdf, 'vfio-pci', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringMatching(/modprobe vfio-pci/) }));
    expect(read(`bus/pci/devices/${EDU.bdf}/driver_override`)).toBe('(null)\n');
    expect(() => bindDriver(EDU.bdf, '../nvme', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('bindDriver sets driver_override, probes, and says so when the driver did not take the device (fake: no kernel)', () => {
    fs.mkdirSync(path.join(root, 'bus/pci/drivers/vfio-pci'));
    expect(() => bindDriver(EDU.bdf, 'vfio-pci', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EIO', message: expect.stringMatching(/vfio-pci did not bind 0000:00:05.0 \(no driver is bound\).*dmesg.*restoreDriver/) }));
    expect(read(`bus/pci/devices/${EDU.bdf}/driver_override`)).toBe('vfio-pci');
    expect(read('bus/pci/drivers_probe')).toBe(EDU.bdf);
  });

  it('restoreDriver clears driver_override with a newline and probes an unbound device again', () => {
    fs.writeFileSync(path.join(dev(EDU.bdf), 'driver_override'), 'vfio-pci\n');
    expect(restoreDriver(EDU.bdf, { sysfsRoot: root })).toBeUndefined();
    expect(read(`bus/pci/devices/${EDU.bdf}/driver_override`)).toBe('\n');
    expect(read('bus/pci/drivers_probe')).toBe(EDU.bdf);
  });

  it('restoreDriver leaves a device bound to the kernel\'s own choice alone', () => {
    expect(restoreDriver(NVME.bdf, { sysfsRoot: root })).toBe('nvme');
    expect(read('bus/pci/drivers/nvme/unbind')).toBe('');
    expect(read('bus/pci/drivers_probe')).toBe('');
  });
});

describe('fake sysfs: IOMMU groups', () => {
  it('reads a device\'s group and type, and the machine\'s state', () => {
    makeSysfs(root, [
      { ...EDU, iommuGroup: { group: 3, type: 'DMA-FQ' } },
      { ...NVME, iommuGroup: { group: 2, type: 'DMA-FQ' } },
      { bdf: '0000:00:06.0', vendor: 0x1234, device: 0x11e8, iommuGroup: { group: 4, type: 'unmanaged' } },
      { bdf: '0000:00:07.0', vendor: 0x1234, device: 0x11e8 },
    ]);
    fs.mkdirSync(path.join(root, 'class/iommu/dmar0'), { recursive: true });
    expect(iommuGroupOf(EDU.bdf, root)).toEqual({ group: 3, type: 'DMA-FQ' });
    expect(iommuGroupOf('0000:00:07.0', root)).toBeUndefined();
    const d = PciDevice.open('0000:00:06.0', { sysfsRoot: root });
    opened.push(d);
    expect(d.iommuGroup).toEqual({ group: 4, type: 'unmanaged' });
    expect(iommuState(root)).toEqual({ enabled: true, units: ['dmar0'], groups: 3, types: { 'DMA-FQ': 2, unmanaged: 1 }, translating: true, defaultType: 'DMA-FQ' });
  });

  it('no IOMMU groups: not enabled, not translating; identity groups do not translate', () => {
    makeSysfs(root, [EDU]);
    expect(iommuState(root)).toMatchObject({ enabled: false, groups: 0, translating: false, defaultType: undefined });
    fs.rmSync(root, { recursive: true });
    makeSysfs(root, [{ ...EDU, iommuGroup: { group: 0, type: 'identity' } }]);
    expect(iommuState(root)).toMatchObject({ enabled: true, translating: false, defaultType: 'identity' });
  });
});

describe('fake sysfs: a kernel driver holds the device', () => {
  beforeEach(() => makeSysfs(root, [EDU, NVME]));

  it('mapBar, enable and setBusMaster name the driver and how to release it, instead of a bare EINVAL or a silent no-op', () => {
    const d = open(NVME.bdf);
    const release = /bound to the kernel driver nvme.*dev\.unbindDriver\(\) \(or as root: echo 0000:00:04\.0 > .*\/bus\/pci\/drivers\/nvme\/unbind\); dev\.restoreDriver\(\)/;
    expect(() => d.mapBar(0)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(release) }));
    expect(() => d.enable()).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/^EBUSY: enable: /) }));
    expect(() => d.setBusMaster(true)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(release) }));
    expect(fs.readFileSync(path.join(dev(NVME.bdf), 'enable'), 'utf8')).toBe('0\n');
    // Reading identity and config space stays allowed.
    expect(d.readConfig16(0)).toBe(0x1b36);
  });

  it('bindDriver refuses while BARs are mapped through the object', () => {
    const d = open(EDU.bdf);
    const m = d.mapBar(0);
    fs.mkdirSync(path.join(root, 'bus/pci/drivers/vfio-pci'));
    expect(() => d.bindDriver('vfio-pci')).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/still mapped/) }));
    m.close();
    expect(() => d.bindDriver('vfio-pci')).toThrow(expect.objectContaining({ code: 'EIO' })); // fake: no kernel to bind it
  });

  it('closing leaves the command register of a driver-bound device alone', () => {
    setFakeCommand(root, NVME.bdf, 0x0006);
    open(NVME.bdf).close();
    expect(fakeCommand(root, NVME.bdf)).toBe(0x0006);
  });
});

describe('fake sysfs: IOMMU translation and bus mastering', () => {
  beforeEach(() =>
    makeSysfs(root, [
      { ...EDU, iommuGroup: { group: 3, type: 'DMA-FQ' } },
      { bdf: '0000:00:06.0', vendor: 0x1234, device: 0x11e8, iommuGroup: { group: 4, type: 'identity' } },
    ]),
  );

  it('setBusMaster(true) in a translated group is EPERM saying why and what to do; opting out works; turning it off always works', () => {
    const d = open(EDU.bdf);
    expect(() => d.setBusMaster(true)).toThrow(
      expect.objectContaining({ code: 'EPERM', message: expect.stringMatching(/IOMMU group 3 of type DMA-FQ.*I\/O virtual addresses.*physmem\/vfio.*iommu=pt.*allowTranslatedIommu/) }),
    );
    expect(fakeCommand(root, EDU.bdf) & PCI_COMMAND_MASTER).toBe(0);
    d.setBusMaster(true, { allowTranslatedIommu: true });
    expect(fakeCommand(root, EDU.bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);
    d.setBusMaster(false);
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003);
  });

  it('an identity group does not translate: bus mastering is allowed', () => {
    const d = open('0000:00:06.0');
    d.setBusMaster(true);
    expect(d.busMaster).toBe(true);
  });
});

describe('fake sysfs: command bits, reset, find by class, close', () => {
  beforeEach(() =>
    makeSysfs(root, [
      { ...EDU },
      { ...NVME, driver: undefined, reset: true, resetMethod: 'flr bus\n' },
      { bdf: '0000:00:07.0', vendor: 0x8086, device: 0x10d3, classCode: 0x020000, resetMethod: '' },
    ]),
  );

  it('setIntxDisabled flips only bit 10 of the command register', () => {
    const d = open(EDU.bdf);
    d.setIntxDisabled(true);
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003 | PCI_COMMAND_INTX_DISABLE);
    expect(d.intxDisabled).toBe(true);
    d.setIntxDisabled(false);
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003);
    expect(() => d.setIntxDisabled(1 as unknown as boolean)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('reset writes 1 to sysfs reset; without one it is ENOTSUP with the reason', () => {
    open(NVME.bdf).reset();
    expect(read(`bus/pci/devices/${NVME.bdf}/reset`)).toBe('1');
    expect(() => open(EDU.bdf).reset()).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/cannot be reset: the kernel offers no reset method.*setBusMaster\(false\)/) }));
    expect(() => open('0000:00:07.0').reset()).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/reset_method is empty/) }));
  });

  it('find matches a class code, exactly or under a mask, and says what it looked for', () => {
    const nvme = PciDevice.find({ classCode: 0x010802, sysfsRoot: root, lockDir });
    opened.push(nvme);
    expect(nvme.bdf).toBe(NVME.bdf);
    const net = PciDevice.find({ classCode: 0x020000, classMask: 0xff0000, sysfsRoot: root, lockDir });
    opened.push(net);
    expect(net.bdf).toBe('0000:00:07.0');
    expect(() => PciDevice.find({ classCode: 0x0c0330, sysfsRoot: root, lockDir })).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/no PCI device class 0x0c0330/) }));
    expect(() => PciDevice.find({ sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => PciDevice.find({ classCode: 1 << 24, sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('close turns bus mastering off unless keepBusMaster', () => {
    const d = open(EDU.bdf);
    d.setBusMaster(true);
    d.close();
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003);
    const e = open(EDU.bdf);
    e.setBusMaster(true);
    e.close({ keepBusMaster: true });
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003 | PCI_COMMAND_MASTER);
  });
});

describe('fake sysfs: device locks', () => {
  beforeEach(() => makeSysfs(root, [EDU]));

  it('a second PciDevice on one device in this process is EBUSY until the first closes', () => {
    const d = open(EDU.bdf);
    expect(d.locked).toBe(true);
    expect(() => open(EDU.bdf)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/already driven by another PciDevice of this process/) }));
    d.close();
    expect(d.locked).toBe(false);
    expect(open(EDU.bdf).locked).toBe(true);
  });

  it('another program holding the device: EBUSY naming its pid and command line', async () => {
    const { pid } = await holder('physmem', EDU.bdf);
    expect(() => open(EDU.bdf)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(new RegExp(`already driven by pid ${pid} \\(.*node`)) }));
  });
});

describe.skipIf(!isRoot)('fake sysfs: quiescing a crashed driver\'s leftover (as root)', () => {
  const BRIDGE: FakeDevice = { bdf: '0000:00:01.0', vendor: 0x8086, device: 0x29c1, classCode: 0x060400 };
  const OTHER: FakeDevice = { bdf: '0000:00:08.0', vendor: 0x1234, device: 0x11e8, barFiles: { resource0: 4096 }, resources: [[0xfe000000n, 0xfe000fffn, MEM]] };
  beforeEach(() => {
    makeSysfs(root, [BRIDGE, NVME, { ...EDU, reset: true }, OTHER]);
    for (const d of [BRIDGE, NVME, EDU, OTHER]) setFakeCommand(root, d.bdf, 0x0007); // all bus masters
  });

  it('opening an orphaned bus master turns bus mastering off, resets it, and says so', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const d = open(EDU.bdf);
      expect(d.quiesced).toEqual({ bdf: EDU.bdf, id: '1234:11e8', busMasterCleared: true, reset: true });
      expect(fakeCommand(root, EDU.bdf)).toBe(0x0003);
      expect(read(`bus/pci/devices/${EDU.bdf}/reset`)).toBe('1');
      await new Promise<void>((r) => setImmediate(r)); // emitWarning delivers on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((w) => (w as Error & { code?: string }).code)).toContain('PHYSMEM_QUIESCED');
    expect(warnings.map((w) => w.message).join('\n')).toMatch(/0000:00:05\.0 \(1234:11e8\) was found with bus mastering on.*bus mastering turned off, reset/);
  });

  it('quiesce: false leaves it as found', () => {
    expect(open(EDU.bdf, { quiesce: false }).quiesced).toBeUndefined();
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0007);
  });

  it('the scan finds only endpoints with no driver, no lock holder and no live mapping or open file; bridges never', async () => {
    expect(findOrphanedBusMasters({ sysfsRoot: root, lockDir })).toEqual([EDU.bdf, OTHER.bdf]);
    await holder('physmem', EDU.bdf); // a live physmem driver holds the lock
    await holder('open-config', OTHER.bdf); // a driver without physmem has config open
    expect(findOrphanedBusMasters({ sysfsRoot: root, lockDir })).toEqual([]);
    expect(quiesceOrphanedDevices({ sysfsRoot: root, lockDir })).toEqual([]);
    for (const d of [BRIDGE, NVME, EDU, OTHER]) expect(fakeCommand(root, d.bdf)).toBe(0x0007);
  });

  it('a process with a BAR mapped is a live owner (seen in /proc/<pid>/maps)', async () => {
    const { child, result } = await startJsonChild(
      [
        '--input-type=module',
        '-e',
        `import { PciDevice } from ${JSON.stringify(path.join(REPO, 'dist/lib/pci/index.js'))};
         const d = PciDevice.open(${JSON.stringify(OTHER.bdf)}, { sysfsRoot: ${JSON.stringify(root)}, lockDir: ${JSON.stringify(lockDir)}, quiesce: false });
         const m = d.mapBar(0);
         console.log(JSON.stringify({ ok: true })); setInterval(() => m.read32(0), 1000);`,
      ],
      60_000,
    );
    children.push(child);
    expect(result.ok).toBe(true);
    const owners = liveOwners(OTHER.bdf, { sysfsRoot: root });
    expect(owners).toEqual([expect.objectContaining({ pid: child.pid, how: 'mapped', file: expect.stringMatching(/resource0$/) })]);
  });

  it('opening a hugepage pool scans first, before any page exists (here even when the pool then fails for lack of pages)', () => {
    let pool: { close(): void } | undefined;
    try {
      pool = openPoolSync({ backend: 'hugepage', pages: 1, sysfsRoot: root, lockDir, leakCheck: 'off' });
    } catch (e) {
      expect((e as { code?: string }).code).toMatch(/ENOMEM|ENOTSUP|EPERM|EACCES/);
    }
    pool?.close();
    expect(fakeCommand(root, EDU.bdf)).toBe(0x0003);
    expect(fakeCommand(root, BRIDGE.bdf)).toBe(0x0007);
    expect(fakeCommand(root, NVME.bdf)).toBe(0x0007); // a kernel driver's device
  });

  it('opening a devmem pool quiesces orphans before handing out memory, unless quiesceOrphans is false', () => {
    // The simulated machine: sysfs under <root>/sys, a regular file as /dev/mem.
    const machine = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-machine-'));
    try {
      makeSysfs(path.join(machine, 'sys'), [EDU, OTHER]);
      for (const d of [EDU, OTHER]) setFakeCommand(path.join(machine, 'sys'), d.bdf, 0x0007);
      fs.mkdirSync(path.join(machine, 'proc'));
      fs.mkdirSync(path.join(machine, 'sys/firmware/memmap/0'), { recursive: true });
      fs.writeFileSync(path.join(machine, 'sys/firmware/memmap/0/start'), '0x100000\n');
      fs.writeFileSync(path.join(machine, 'sys/firmware/memmap/0/end'), '0x1ffdffff\n');
      fs.writeFileSync(path.join(machine, 'sys/firmware/memmap/0/type'), 'System RAM\n');
      fs.writeFileSync(path.join(machine, 'proc/iomem'), '00100000-17ffffff : System RAM\n');
      fs.writeFileSync(path.join(machine, 'proc/cmdline'), 'mem=384M\n');
      const mem = path.join(machine, 'mem');
      fs.writeFileSync(mem, '');
      fs.truncateSync(mem, 0x20000000);
      const o = { backend: 'devmem' as const, discoveryRoot: machine, devicePath: mem, lockDir, leakCheck: 'off' as const };
      openPoolSync({ ...o, quiesceOrphans: false }).close();
      expect(fakeCommand(path.join(machine, 'sys'), EDU.bdf)).toBe(0x0007);
      openPoolSync(o).close();
      expect(fakeCommand(path.join(machine, 'sys'), EDU.bdf)).toBe(0x0003);
      expect(fakeCommand(path.join(machine, 'sys'), OTHER.bdf)).toBe(0x0003);
    } finally {
      fs.rmSync(machine, { recursive: true, force: true });
    }
  });
});

describe('physmem stat and regions: the IOMMU and the devices in use', () => {
  it('regions says whether the IOMMU translates and which backend fits (text and JSON), and lists driven devices', () => {
    const sys = path.join(root, 'sys');
    makeSysfs(sys, [{ ...EDU, iommuGroup: { group: 3, type: 'DMA-FQ' } }, { ...NVME, iommuGroup: { group: 2, type: 'DMA-FQ' } }]);
    fs.mkdirSync(path.join(sys, 'class/iommu/dmar0'), { recursive: true });
    const d = PciDevice.open(EDU.bdf, { sysfsRoot: sys, lockDir });
    opened.push(d);
    const r = runRegions({ root, lockDir });
    expect(r.text).toMatch(/IOMMU: on, translating \(dmar0\)\n {2}the IOMMU translates DMA \(2 groups: 2 DMA-FQ\).*use physmem\/vfio and the vfio backend, or boot with iommu=pt/);
    expect(r.text).toMatch(/PCI devices driven through physmem\/pci:\n\ndevice\s+pid\s+command\n.*\n0000:00:05\.0\s+\d+\s+\(this command\)/);
    const j = r.json as { iommu: { fits: string; translating: boolean }; devicesInUse: { device: string; pid: number }[]; inUse: unknown[] };
    expect(j.iommu).toMatchObject({ enabled: true, translating: true, fits: 'vfio', types: { 'DMA-FQ': 2 } });
    expect(j.devicesInUse).toEqual([expect.objectContaining({ device: EDU.bdf, pid: process.pid })]);
    expect(j.inUse).toEqual([]); // a device lock is no memory in use
    fs.rmSync(path.join(sys, 'kernel'), { recursive: true });
    expect((runRegions({ root, lockDir }).json as { iommu: unknown }).iommu).toMatchObject({ enabled: false, fits: 'physical' });
  });

  it('stat reports the IOMMU of this machine next to the pool', () => {
    const r = runStat({ backend: 'fake', size: 1 << 20 });
    const real = iommuState();
    expect((r.json as { iommu: unknown }).iommu).toMatchObject({ enabled: real.enabled, translating: real.translating, fits: real.translating ? 'vfio' : 'physical' });
    expect(r.text).toMatch(real.enabled ? /\nIOMMU: on/ : /\nIOMMU: none\n {2}no IOMMU groups: devices use physical addresses; the devmem, hugepage and udmabuf backends fit/);
  });
});
