import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { throwsWith } from './helpers/errors.js';
import { checkExplicitRange, readMemoryMaps, type CheckExplicitRangeOptions } from '../lib/discovery/index.js';

const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const MiB = 1n << 20n;

function check(fixture: string, start: bigint, size: bigint, options?: CheckExplicitRangeOptions) {
  const m = readMemoryMaps({ root: FIX + fixture });
  return checkExplicitRange(start, size, m.firmware, m.iomem, options);
}

describe('checkExplicitRange: accepted RAM', () => {
  it('accepts RAM above the mem= limit', () => {
    const r = check('qemu-pc-mem384', 0x18000000n, 64n * MiB);
    expect(r.kind).toBe('ram');
    expect(r.firmware.map((f) => [f.start, f.end, f.type])).toEqual([[0x100000n, 0x1ffdffffn, 'System RAM']]);
    expect(r.iomem).toEqual([]);
  });

  it('accepts the memmap=nn$ss range (a top-level Reserved entry with nothing under it), whole or part', () => {
    const r = check('qemu-pc-mem384-memmap64m', 0x8000000n, 64n * MiB);
    expect(r.iomem.map((e) => [e.name, e.start, e.end])).toEqual([['Reserved', 0x8000000n, 0xbffffffn]]);
    expect(check('qemu-pc-mem384-memmap64m', 0x9000000n, 4096n).kind).toBe('ram');
  });

  it('accepts a range spanning the memmap=$ range and RAM above mem= only where both are free', () => {
    expect(check('qemu-pc-mem384-memmap-top', 0x1b000000n, 32n * MiB).kind).toBe('ram');
  });

  it('accepts raw firmware entries and iomem text', () => {
    const r = checkExplicitRange(0x18000000n, MiB, [{ start: '0x100000', end: '0x1fffffff', type: 'System RAM' }], '00100000-17ffffff : System RAM\n');
    expect(r.kind).toBe('ram');
  });
});

describe('checkExplicitRange: refusals (EPERM, naming the entry)', () => {
  it('RAM the kernel uses: names the System RAM entry and what in it overlaps', () => {
    const e = throwsWith(() => check('qemu-pc-mem384', 0x7000000n, 2n * MiB), 'EPERM');
    expect(e.message).toMatch(/^EPERM: 0x7000000-0x71fffff overlaps System RAM 0x100000-0x17ffffff \(Kernel code 0x6a00000-0x7801d31\) in \/proc\/iomem: RAM the kernel uses\. /);
    expect(e.message).toMatch(/memmap=2M\$0x7000000/);
  });

  it('the crash kernel', () => {
    const e = throwsWith(() => check('qemu-pc-mem384-crashkernel', 0x13000000n, 16n * MiB), 'EPERM');
    expect(e.message).toMatch(/System RAM 0x100000-0x17ffffff \(Crash kernel 0x13000000-0x16ffffff\)/);
  });

  it('a firmware Reserved range (ACPI tables on SeaBIOS), also when the range only straddles into it', () => {
    const e = throwsWith(() => check('qemu-pc-mem384', 0x1ff00000n, 2n * MiB), 'EPERM');
    expect(e.message).toMatch(/0x1ff00000-0x200fffff is not all firmware System RAM: it overlaps Reserved 0x1ffe0000-0x1fffffff in the firmware map/);
    expect(e.message).toMatch(/allowDeviceMemory/);
  });

  it('ACPI ranges on a desktop', () => {
    const e = throwsWith(() => check('desktop-16g', 0x7bd8c000n, 0x1000n), 'EPERM');
    expect(e.message).toMatch(/ACPI Non-volatile Storage 0x7bd8c000-0x7c4f2fff in the firmware map/);
    const t = throwsWith(() => check('desktop-16g', 0x7bc56000n, 0x1000n), 'EPERM');
    expect(t.message).toMatch(/ACPI Tables 0x7bc56000-0x7bd8bfff/);
  });

  it('a hole in the firmware map', () => {
    const e = throwsWith(() => check('qemu-pc-mem384', 0x80000000n, MiB), 'EPERM');
    expect(e.message).toMatch(/0x80000000-0x800fffff is in no firmware map entry/);
  });

  it('a driver claim (ramoops) in RAM above mem=', () => {
    const e = throwsWith(() => check('qemu-pc-mem384-ramoops', 0x18000000n, MiB), 'EPERM');
    expect(e.message).toMatch(/overlaps ramoops:dmesg\(0\/14\) 0x18000000-0x18010ddb in \/proc\/iomem, claimed by a driver or device/);
    expect(check('qemu-pc-mem384-ramoops', 0x18100000n, MiB).kind).toBe('ram');
  });

  it('a Reserved entry with a driver nested under it', () => {
    const e = throwsWith(() => check('qemu-pc-memmap-ramoops', 0x1d000000n, MiB), 'EPERM');
    expect(e.message).toMatch(/overlaps Reserved 0x1c000000-0x1fffffff in \/proc\/iomem, claimed/);
    const child = throwsWith(() => check('qemu-pc-memmap-ramoops', 0x1c000000n, 4096n), 'EPERM');
    expect(child.message).toMatch(/Reserved 0x1c000000-0x1fffffff \(ramoops:dmesg\(0\/14\) 0x1c000000-0x1c010ddb\)/);
  });

  it('memmap=nn#ss and nn!ss ranges (ACPI Tables, Persistent Memory in iomem)', () => {
    throwsWith(() => check('qemu-q35-memmap-multi', 0x14000000n, MiB), 'EPERM', /ACPI Tables 0x14000000-0x14ffffff in \/proc\/iomem/);
    throwsWith(() => check('qemu-q35-memmap-multi', 0x16000000n, MiB), 'EPERM', /Persistent Memory \(legacy\) 0x16000000-0x16ffffff/);
  });

  it('anything below 1 MiB, even firmware RAM the kernel marked Reserved (page 0)', () => {
    const e = throwsWith(() => check('qemu-pc-mem384', 0n, 4096n), 'EPERM');
    expect(e.message).toMatch(/0x0-0xfff lies below 1 MiB/);
  });

  it('an empty firmware map: cannot check, says CONFIG_FIRMWARE_MEMMAP', () => {
    const m = readMemoryMaps({ root: FIX + 'no-firmware-memmap' });
    const e = throwsWith(() => checkExplicitRange(0x18000000n, MiB, m.firmware, m.iomem), 'EPERM');
    expect(e.message).toMatch(/CONFIG_FIRMWARE_MEMMAP/);
  });

  it('iomem without System RAM (unreadable): cannot check', () => {
    const m = readMemoryMaps({ root: FIX + 'qemu-pc-mem384' });
    throwsWith(() => checkExplicitRange(0x18000000n, MiB, m.firmware, ''), 'EPERM');
  });

  it('not root: EACCES', () => {
    const e = throwsWith(() => check('qemu-pc-mem384-nonroot', 0x18000000n, MiB), 'EACCES');
    expect(e.message).toMatch(/Run as root/);
  });

  it('bad arguments: EINVAL', () => {
    for (const [s, n] of [[0x18000000n, 0n], [-1n, 4096n], [(1n << 64n) - 4096n, 8192n]] as const) {
      throwsWith(() => check('qemu-pc-mem384', s, n), 'EINVAL');
    }
  });
});

describe('checkExplicitRange with allowDeviceMemory', () => {
  const dev = { allowDeviceMemory: true };

  it("accepts a device's BAR no driver claims (QEMU edu at 0000:00:05.0)", () => {
    const r = check('qemu-pc-mem384', 0xfea00000n, MiB, dev);
    expect(r.kind).toBe('device');
    expect(r.iomem.map((e) => e.name)).toEqual(['PCI Bus 0000:00', '0000:00:05.0']);
    expect(r.firmware).toEqual([]);
  });

  it('accepts an empty part of a PCI bus window (64-bit window) and a big GPU BAR above 256 GiB', () => {
    expect(check('qemu-pc-mem384', 0x100000000n, 16n * MiB, dev).kind).toBe('device');
    expect(check('desktop-16g', 0x4000000000n, 256n * MiB, dev).kind).toBe('device');
  });

  it('still applies the RAM rules to RAM', () => {
    expect(check('qemu-pc-mem384', 0x18000000n, MiB, dev).kind).toBe('ram');
    const e = throwsWith(() => check('qemu-pc-mem384', 0x10000000n, MiB, dev), 'EPERM');
    expect(e.message).toMatch(/System RAM 0x100000-0x17ffffff in \/proc\/iomem: RAM the kernel uses/);
  });

  it('refuses a BAR a driver claims, naming the driver', () => {
    const e = throwsWith(() => check('qemu-pc-mem384', 0xfe000000n, 0x4000n, dev), 'EPERM');
    expect(e.message).toMatch(/overlaps virtio-pci-modern 0xfe000000-0xfe003fff in \/proc\/iomem/);
    throwsWith(() => check('desktop-16g', 0x91000000n, 0x4000n, dev), 'EPERM', /nvme 0x91000000-0x91003fff/);
  });

  it('refuses what is in no PCI window (a firmware Reserved range, MMCONFIG, the IOAPIC)', () => {
    throwsWith(() => check('qemu-pc-mem384', 0xfd00000000n, MiB, dev), 'EPERM', /neither firmware System RAM nor inside a PCI bus window or BAR .*it overlaps Reserved 0xfd00000000-0xffffffffff/);
    throwsWith(() => check('qemu-q35-16g-plain', 0xb0000000n, MiB, dev), 'EPERM', /PCI MMCONFIG 0000 \[bus 00-ff\] 0xb0000000-0xbfffffff/);
    throwsWith(() => check('qemu-pc-mem384', 0xfec00000n, 0x400n, dev), 'EPERM', /IOAPIC 0/);
  });

  it('refuses ranges that are partly RAM, and firmware ACPI ranges', () => {
    throwsWith(() => check('qemu-pc-mem384', 0x1ff00000n, 2n * MiB, dev), 'EPERM', /either all firmware System RAM or all device memory/);
    throwsWith(() => check('desktop-16g', 0x7bc56000n, 0x1000n, dev), 'EPERM', /ACPI Tables 0x7bc56000-0x7bd8bfff in the firmware map/);
  });
});
