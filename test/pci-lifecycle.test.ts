// physmem/pci device lifecycle against a fake sysfs tree (test/helpers/
// fake-sysfs.ts): drivers, IOMMU groups, reset, locks and quiescing. No kernel
// stands behind the tree, so these tests check what is read and written and
// the errors; the real kernel's side is proven in the guest
// (test/vm/edu.guest.test.ts, test/vm/nvme.guest.test.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PciDevice, bindDriver, driverOf, iommuGroupOf, iommuState, restoreDriver, unbindDriver } from '../lib/pci/index.js';
import { MEM, makeSysfs, type FakeDevice } from './helpers/fake-sysfs.js';

const EDU: FakeDevice = { bdf: '0000:00:05.0', vendor: 0x1234, device: 0x11e8, resources: [[0xfea00000n, 0xfeafffffn, MEM]], barFiles: { resource0: 1 << 20 } };
const NVME: FakeDevice = { bdf: '0000:00:04.0', vendor: 0x1b36, device: 0x0010, classCode: 0x010802, driver: 'nvme', resources: [[0xfeb00000n, 0xfeb03fffn, MEM]], barFiles: { resource0: 0x4000 } };

let root: string;
const opened: PciDevice[] = [];
const dev = (bdf: string) => path.join(root, 'bus/pci/devices', bdf);
const read = (p: string) => fs.readFileSync(path.join(root, p), 'utf8');

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-sysfs-'));
});
afterEach(() => {
  opened.splice(0).forEach((d) => d.close());
  fs.rmSync(root, { recursive: true, force: true });
});

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
