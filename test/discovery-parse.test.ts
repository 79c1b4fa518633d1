import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { formatMemSize, parseCmdline, parseFirmwareMemmap, parseIomem, type IomemEntry } from '../lib/discovery/index.js';

const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const text = (p: string) => readFileSync(FIX + p, 'utf8');
function rawFirmware(name: string) {
  const dir = `${name}/sys/firmware/memmap/`;
  return readdirSync(FIX + dir)
    .sort((a, b) => Number(a) - Number(b))
    .map((d) => ({ start: text(`${dir}${d}/start`), end: text(`${dir}${d}/end`), type: text(`${dir}${d}/type`) }));
}
const find = (entries: IomemEntry[], name: string) => entries.find((e) => e.name === name);

describe('parseFirmwareMemmap', () => {
  it('parses a recorded QEMU pc map (-m 512M)', () => {
    const fw = parseFirmwareMemmap(rawFirmware('qemu-pc-mem384'));
    expect(fw.map((f) => [f.start, f.end, f.type])).toEqual([
      [0x0n, 0x9fbffn, 'System RAM'],
      [0x9fc00n, 0x9ffffn, 'Reserved'],
      [0xf0000n, 0xfffffn, 'Reserved'],
      [0x100000n, 0x1ffdffffn, 'System RAM'],
      [0x1ffe0000n, 0x1fffffffn, 'Reserved'],
      [0xfffc0000n, 0xffffffffn, 'Reserved'],
      [0xfd00000000n, 0xffffffffffn, 'Reserved'],
    ]);
    expect(fw[3].size).toBe(0x1fee0000n);
  });

  it('is the same map whatever mem= and memmap= say (firmware view)', () => {
    const base = parseFirmwareMemmap(rawFirmware('qemu-pc-mem384'));
    for (const other of ['qemu-pc-mem384-memmap64m', 'qemu-pc-exactmap', 'qemu-pc-plain']) {
      expect(parseFirmwareMemmap(rawFirmware(other))).toEqual(base);
    }
  });

  it('parses RAM above 4 GiB (q35, 16 GiB, PCI hole)', () => {
    const fw = parseFirmwareMemmap(rawFirmware('qemu-q35-16g-plain'));
    const ram = fw.filter((f) => f.type === 'System RAM').map((f) => [f.start, f.end]);
    expect(ram).toEqual([
      [0x0n, 0x9fbffn],
      [0x100000n, 0x7ffdefffn],
      [0x100000000n, 0x47fffffffn],
    ]);
    expect(fw.find((f) => f.start === 0xb0000000n)?.type).toBe('Reserved'); // MMCONFIG
  });

  it('keeps ACPI types (desktop)', () => {
    const fw = parseFirmwareMemmap(rawFirmware('desktop-16g'));
    expect(fw.filter((f) => f.type.startsWith('ACPI')).map((f) => f.type)).toEqual([
      'ACPI Non-volatile Storage',
      'ACPI Tables',
      'ACPI Non-volatile Storage',
    ]);
  });

  it('sorts by address, accepts hex without 0x, and trims', () => {
    const fw = parseFirmwareMemmap([
      { start: '0x100000\n', end: '0x1fffffff\n', type: 'System RAM\n' },
      { start: ' 0', end: '9fbff', type: ' System RAM ' },
    ]);
    expect(fw.map((f) => [f.start, f.end, f.type])).toEqual([
      [0n, 0x9fbffn, 'System RAM'],
      [0x100000n, 0x1fffffffn, 'System RAM'],
    ]);
  });

  it('rejects garbage with EINVAL', () => {
    expect(() => parseFirmwareMemmap([{ start: 'zz', end: '0x10', type: 'System RAM' }])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => parseFirmwareMemmap([{ start: '0x20', end: '0x10', type: 'System RAM' }])).toThrow(/ends .* before it starts/);
  });
});

describe('parseIomem', () => {
  it('builds the tree of a recorded pc guest (Kernel code under System RAM, devices under PCI Bus)', () => {
    const io = parseIomem(text('qemu-pc-mem384/proc/iomem'));
    expect(io.hidden).toBe(false);
    expect(io.malformed).toEqual([]);
    expect(io.entries.map((e) => e.name)).toEqual([
      'Reserved', 'System RAM', 'Reserved', 'PCI Bus 0000:00', 'Video ROM', 'Adapter ROM', 'Reserved', 'System RAM',
      'Reserved', 'PCI Bus 0000:00', 'IOAPIC 0', 'HPET 0', 'Local APIC', 'Reserved', 'PCI Bus 0000:00', 'Reserved',
    ]);
    const ram = io.entries[7];
    expect([ram.start, ram.end]).toEqual([0x100000n, 0x17ffffffn]);
    expect(ram.children.map((c) => [c.name, c.depth])).toEqual([
      ['Kernel code', 1], ['Kernel rodata', 1], ['Kernel data', 1], ['Kernel bss', 1],
    ]);
    const pci = io.entries[9];
    expect([pci.start, pci.end]).toEqual([0x20000000n, 0xfebfffffn]);
    const virtio = pci.children.find((c) => c.name === '0000:00:03.0')!;
    expect(virtio.children).toEqual([{ start: 0xfe000000n, end: 0xfe003fffn, name: 'virtio-pci-modern', depth: 2, children: [] }]);
    expect(io.flat).toHaveLength(31);
    expect(io.entries[15]).toMatchObject({ start: 0xfd00000000n, end: 0xffffffffffn, name: 'Reserved' });
  });

  it('shows memmap=nn$ss as a top-level Reserved entry that splits System RAM', () => {
    const io = parseIomem(text('qemu-pc-mem384-memmap64m/proc/iomem'));
    const i = io.entries.findIndex((e) => e.start === 0x8000000n);
    expect(io.entries.slice(i - 1, i + 2).map((e) => [e.name, e.start, e.end])).toEqual([
      ['System RAM', 0x100000n, 0x7ffffffn],
      ['Reserved', 0x8000000n, 0xbffffffn],
      ['System RAM', 0xc000000n, 0x17ffffffn],
    ]);
    expect(io.entries[i].children).toEqual([]);
  });

  it('nests three levels deep (desktop: bridge, device, driver) and keeps names with spaces and brackets', () => {
    const io = parseIomem(text('desktop-16g/proc/iomem'));
    const nvme = io.flat.find((e) => e.name === 'nvme')!;
    expect(nvme).toMatchObject({ start: 0x91000000n, end: 0x91003fffn, depth: 3 });
    const mmcfg = find(io.entries, 'PCI MMCONFIG 0000 [bus 00-ff]')!;
    expect(mmcfg.children[0]).toMatchObject({ name: 'Reserved', depth: 1 });
    expect(mmcfg.children[0].children[0]).toMatchObject({ name: 'pnp 00:05', depth: 2 });
    expect(io.entries.filter((e) => e.name.startsWith('ACPI')).map((e) => e.name)).toEqual([
      'ACPI Non-volatile Storage',
      'ACPI Tables',
      'ACPI Non-volatile Storage',
    ]);
    expect(io.entries.at(-1)).toMatchObject({ start: 0x4000000000n, end: 0x7fffffffffn, name: 'PCI Bus 0000:00' });
  });

  it('finds the crash kernel nested in System RAM', () => {
    const io = parseIomem(text('qemu-pc-mem384-crashkernel/proc/iomem'));
    const crash = io.flat.find((e) => e.name === 'Crash kernel')!;
    expect(crash).toMatchObject({ start: 0x13000000n, end: 0x16ffffffn, depth: 1 });
    expect(io.entries.find((e) => e.children.includes(crash))?.name).toBe('System RAM');
    const q35 = parseIomem(text('qemu-q35-16g-mem16g-crashkernel/proc/iomem'));
    expect(q35.flat.find((e) => e.name === 'Crash kernel')).toMatchObject({ start: 0x6f000000n, end: 0x7effffffn });
  });

  it('recognizes the zeros a non-root reader sees, keeping the structure', () => {
    const io = parseIomem(text('qemu-pc-mem384-nonroot/proc/iomem'));
    expect(io.hidden).toBe(true);
    expect(io.flat).toHaveLength(31);
    expect(io.entries[7]).toMatchObject({ start: 0n, end: 0n, name: 'System RAM' });
    expect(io.entries[7].children).toHaveLength(4);
  });

  it('handles empty input, blank lines, bad lines, and an empty name', () => {
    expect(parseIomem('')).toEqual({ entries: [], flat: [], hidden: false, malformed: [] });
    const io = parseIomem('00000000-00000fff : Reserved\n\nnot an entry\n00001000-0009fbff :\n  00002000-00002fff : child\n');
    expect(io.malformed).toEqual(['not an entry']);
    expect(io.entries.map((e) => e.name)).toEqual(['Reserved', '']);
    expect(io.entries[1].children[0].name).toBe('child');
  });

  it('treats an indented line without a parent as top-level', () => {
    const io = parseIomem('  00001000-00001fff : orphan\n');
    expect(io.entries[0]).toMatchObject({ name: 'orphan', depth: 0 });
  });
});

describe('parseCmdline', () => {
  it('reads mem= (recorded)', () => {
    const c = parseCmdline(text('qemu-pc-mem384/proc/cmdline'));
    expect(c.raw).toBe('console=ttyS0 panic=-1 mem=384M');
    expect(c.options).toEqual([{ text: 'mem=384M', param: 'mem', kind: 'limit', size: 0x18000000n }]);
    expect(c.memLimit).toBe(0x18000000n);
    expect(c.memLimitOption).toBe('mem=384M');
    expect(c.exactmap).toBe(false);
    expect(c.problems).toEqual([]);
  });

  it('reads mem= and memmap=nn$ss (recorded)', () => {
    const c = parseCmdline(text('qemu-pc-mem384-memmap64m/proc/cmdline'));
    expect(c.options[1]).toEqual({ text: 'memmap=64M$0x08000000', param: 'memmap', kind: 'reserved', size: 0x4000000n, start: 0x8000000n });
  });

  it('reads several memmap= options, a comma list, and the # and ! types (recorded)', () => {
    const c = parseCmdline(text('qemu-q35-memmap-multi/proc/cmdline'));
    expect(c.options.map((o) => [o.text, o.kind, o.size, o.start])).toEqual([
      ['memmap=64M$0x08000000', 'reserved', 0x4000000n, 0x8000000n],
      ['memmap=32M$0x10000000', 'reserved', 0x2000000n, 0x10000000n],
      ['memmap=16M#0x14000000', 'acpi', 0x1000000n, 0x14000000n],
      ['memmap=16M!0x16000000', 'persistent', 0x1000000n, 0x16000000n],
    ]);
    expect(c.memLimit).toBeUndefined();
  });

  it('reads memmap=exactmap with nn@ss entries (recorded)', () => {
    const c = parseCmdline(text('qemu-pc-exactmap/proc/cmdline'));
    expect(c.exactmap).toBe(true);
    expect(c.options.map((o) => [o.kind, o.size, o.start])).toEqual([
      ['exactmap', undefined, undefined],
      ['ram', 0xa0000n, 0n],
      ['ram', 0x17f00000n, 0x100000n],
    ]);
  });

  it('discards what precedes memmap=exactmap, and stops at --', () => {
    const c = parseCmdline(text('cmdlines/exactmap-comma.txt'));
    expect(c.options.map((o) => [o.text, o.ignored])).toEqual([
      ['memmap=64M$0x1000000', 'a later memmap=exactmap discards it'],
      ['memmap=exactmap', undefined],
      ['memmap=640K@0', undefined],
      ['memmap=383M@1M', undefined],
      ['memmap=64M$0x18000000', undefined],
      ['mem=1G', undefined],
    ]);
    expect(c.memLimit).toBe(1n << 30n);
  });

  it('reads K/M/G suffixes (either case), hex and decimal, and takes the lowest limit', () => {
    const c = parseCmdline(text('cmdlines/suffixes.txt'));
    expect(c.options.map((o) => [o.text, o.size, o.start])).toEqual([
      ['mem=393216K', 0x18000000n, undefined],
      ['memmap=0x4000000$0x8000000', 0x4000000n, 0x8000000n],
      ['memmap=1G$4G', 0x40000000n, 0x100000000n],
      ['memmap=2g$0x100000000', 0x80000000n, 0x100000000n],
      ['memmap=512k$0x200000', 0x80000n, 0x200000n],
      ['mem=0x20000000', 0x20000000n, undefined],
    ]);
    expect([c.memLimit, c.memLimitOption]).toEqual([0x18000000n, 'mem=393216K']);
    expect(parseCmdline('mem=1T').memLimit).toBe(1n << 40n);
  });

  it('reads %-conversions, @ and a bare memmap=nn limit', () => {
    const c = parseCmdline(text('cmdlines/types.txt'));
    expect(c.options.map((o) => [o.kind, o.fromType, o.toType])).toEqual([
      ['acpi', undefined, undefined],
      ['persistent', undefined, undefined],
      ['convert', 1, 2],
      ['ram', undefined, undefined],
      ['convert', 1, 0],
      ['limit', undefined, undefined],
    ]);
    expect(c.options[3].start).toBe(2n << 30n);
    expect([c.memLimit, c.memLimitOption]).toEqual([256n << 20n, 'memmap=256M']);
    expect(c.problems).toEqual([]);
  });

  it('memmap=64M\\$0x08000000 (a backslash that reached the kernel) is a 64M limit, and says so (recorded: the guest ran out of memory)', () => {
    const c = parseCmdline(text('cmdlines/grub-backslash.txt'));
    expect(c.options).toEqual([{ text: 'memmap=64M\\$0x08000000', param: 'memmap', kind: 'limit', size: 64n << 20n }]);
    expect(c.memLimit).toBe(64n << 20n);
    expect(c.problems).toHaveLength(1);
    expect(c.problems[0]).toMatch(/backslash reached the kernel/);
    expect(c.problems[0]).toMatch(/like mem=64M/);
  });

  it('memmap=64Mx08000000 (GRUB expanded $0) is a limit too, and says so', () => {
    const c = parseCmdline(text('cmdlines/grub-dollar-expanded.txt'));
    expect(c.options[0].kind).toBe('limit');
    expect(c.problems[0]).toMatch(/GRUB seems to have expanded '\$0' away/);
  });

  it('reads a leading 0 as octal, like the kernel', () => {
    const c = parseCmdline(text('cmdlines/octal.txt'));
    expect(c.options[0]).toMatchObject({ kind: 'reserved', start: 0n });
    expect(c.problems.join('\n')).toMatch(/octal/);
    expect(parseCmdline('memmap=010M$0x1000000').options[0].size).toBe(8n << 20n);
  });

  it('strips quotes like the kernel', () => {
    const c = parseCmdline(text('cmdlines/quoted.txt'));
    expect(c.options.map((o) => o.text)).toEqual(['mem=384M', 'memmap=64M$0x08000000']);
  });

  it('reads the desktop GRUB command line', () => {
    const c = parseCmdline(text('desktop-16g-memmap/proc/cmdline'));
    expect(c.options.map((o) => [o.kind, o.size, o.start])).toEqual([
      ['reserved', 1n << 30n, 0x440000000n],
      ['reserved', 16n << 20n, 0x7c000000n],
    ]);
  });

  it('ignores mem=nopentium, flags mem=0 and a memmap= that is not a size', () => {
    expect(parseCmdline('mem=nopentium').options).toEqual([]);
    const zero = parseCmdline('mem=0');
    expect(zero.options[0].ignored).toMatch(/ignored/);
    expect(zero.memLimit).toBeUndefined();
    const bad = parseCmdline('memmap=lots');
    expect(bad.options).toEqual([]);
    expect(bad.problems[0]).toMatch(/not a size/);
    expect(parseCmdline('memmap=64M%0x1000000-1+2junk').options[0].ignored).toMatch(/rejects/);
  });

  it('notes trailing garbage and a missing start', () => {
    expect(parseCmdline('memmap=64M$0x1000000zz').problems[0]).toMatch(/stops reading at "zz"/);
    const c = parseCmdline('memmap=64M$');
    expect(c.options[0].start).toBe(0n);
    expect(c.problems[0]).toMatch(/no start address/);
  });

  it('returns nothing for an empty command line', () => {
    expect(parseCmdline('')).toEqual({ raw: '', options: [], exactmap: false, problems: [] });
  });
});

describe('formatMemSize', () => {
  it('uses the largest exact suffix', () => {
    expect(formatMemSize(64n << 20n)).toBe('64M');
    expect(formatMemSize(16n << 30n)).toBe('16G');
    expect(formatMemSize(0x47c000000n)).toBe('18368M');
    expect(formatMemSize(640n << 10n)).toBe('640K');
    expect(formatMemSize(1000n)).toBe('1000');
  });
});
