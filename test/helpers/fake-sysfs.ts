// A fake sysfs tree under a temp dir for the physmem/pci unit tests: regular
// files stand in for config, enable, reset and resource<n> (a regular file can
// be mmapped like a BAR), symlinks for `driver` and `iommu_group`. The kernel
// behind it is absent: writes to unbind or drivers_probe change nothing unless
// a test plays the kernel's part.
import fs from 'node:fs';
import path from 'node:path';

export interface FakeDevice {
  bdf: string;
  vendor: number;
  device: number;
  classCode?: number;
  /** Lines of the resource file: [start, end, flags]; missing BARs are zeros. */
  resources?: [bigint, bigint, number][];
  /** resource<n> files to create, with their sizes. */
  barFiles?: Record<string, number>;
  config?: Buffer;
  enable?: string;
  /** Bound kernel driver (a `driver` symlink into bus/pci/drivers/<name>). */
  driver?: string;
  /** IOMMU group number and type (an `iommu_group` symlink into kernel/iommu_groups/<n>). */
  iommuGroup?: { group: number; type: string };
  /** Create a `reset` file; `reset_method` content when given. */
  reset?: boolean;
  resetMethod?: string;
}

export const MEM = 0x40200; // IORESOURCE_MEM | IORESOURCE_SIZEALIGN, as sysfs shows a 32-bit BAR
export const MEM64_PREFETCH = 0x14220c;
export const IO = 0x40101;

/** The config-space command register word of a fake device (offset 4). */
export function fakeCommand(root: string, bdf: string): number {
  return fs.readFileSync(path.join(root, 'bus/pci/devices', bdf, 'config')).readUInt16LE(4);
}

/** Set the command register word of a fake device. */
export function setFakeCommand(root: string, bdf: string, value: number): void {
  const fd = fs.openSync(path.join(root, 'bus/pci/devices', bdf, 'config'), 'r+');
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  fs.writeSync(fd, b, 0, 2, 4);
  fs.closeSync(fd);
}

/** Point a fake device's `driver` link at `name` (creating the driver's directory), or remove it. */
export function setFakeDriver(root: string, bdf: string, name: string | undefined): void {
  const link = path.join(root, 'bus/pci/devices', bdf, 'driver');
  fs.rmSync(link, { force: true });
  if (name === undefined) return;
  const drv = path.join(root, 'bus/pci/drivers', name);
  fs.mkdirSync(drv, { recursive: true });
  if (!fs.existsSync(path.join(drv, 'unbind'))) fs.writeFileSync(path.join(drv, 'unbind'), '');
  fs.symlinkSync(drv, link);
}

/** Build the tree. */
export function makeSysfs(root: string, devices: FakeDevice[]): void {
  const dir = path.join(root, 'bus/pci/devices');
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.join(root, 'bus/pci/drivers'), { recursive: true });
  fs.writeFileSync(path.join(root, 'bus/pci/drivers_probe'), '');
  for (const d of devices) {
    const dd = path.join(dir, d.bdf);
    fs.mkdirSync(dd);
    const hex = (n: number, w: number) => '0x' + n.toString(16).padStart(w, '0') + '\n';
    fs.writeFileSync(path.join(dd, 'vendor'), hex(d.vendor, 4));
    fs.writeFileSync(path.join(dd, 'device'), hex(d.device, 4));
    fs.writeFileSync(path.join(dd, 'class'), hex(d.classCode ?? 0xff00, 6));
    fs.writeFileSync(path.join(dd, 'revision'), hex(0x10, 2));
    fs.writeFileSync(path.join(dd, 'subsystem_vendor'), hex(0x1af4, 4));
    fs.writeFileSync(path.join(dd, 'subsystem_device'), hex(0x1100, 4));
    fs.writeFileSync(path.join(dd, 'driver_override'), '(null)\n');
    const lines: string[] = [];
    const res = d.resources ?? [];
    for (let i = 0; i < 13; i++) {
      const [s, e, f] = res[i] ?? [0n, 0n, 0];
      lines.push(`0x${s.toString(16).padStart(16, '0')} 0x${e.toString(16).padStart(16, '0')} 0x${f.toString(16).padStart(16, '0')}`);
    }
    fs.writeFileSync(path.join(dd, 'resource'), lines.join('\n') + '\n');
    const cfg = d.config ?? Buffer.alloc(256);
    if (!d.config) {
      cfg.writeUInt16LE(d.vendor, 0);
      cfg.writeUInt16LE(d.device, 2);
      cfg.writeUInt16LE(0x0003, 4); // command: I/O + memory
      cfg.writeUInt16LE(0x0010, 6); // status: capabilities list
      cfg.writeUInt32LE(0xfebf1000, 0x10); // BAR0
    }
    fs.writeFileSync(path.join(dd, 'config'), cfg);
    fs.writeFileSync(path.join(dd, 'enable'), d.enable ?? '0\n');
    for (const [name, size] of Object.entries(d.barFiles ?? {})) {
      fs.writeFileSync(path.join(dd, name), Buffer.alloc(size));
      fs.chmodSync(path.join(dd, name), 0o600);
    }
    if (d.driver) setFakeDriver(root, d.bdf, d.driver);
    if (d.iommuGroup) {
      const g = path.join(root, 'kernel/iommu_groups', String(d.iommuGroup.group));
      fs.mkdirSync(path.join(g, 'devices'), { recursive: true });
      fs.writeFileSync(path.join(g, 'type'), d.iommuGroup.type + '\n');
      fs.symlinkSync(g, path.join(dd, 'iommu_group'));
    }
    if (d.reset) fs.writeFileSync(path.join(dd, 'reset'), '');
    if (d.resetMethod !== undefined) fs.writeFileSync(path.join(dd, 'reset_method'), d.resetMethod);
  }
}
