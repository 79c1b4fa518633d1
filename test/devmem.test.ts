// The devmem backend on the host, against a simulated machine: a temp tree
// standing in for /sys/firmware/memmap, /proc/iomem and /proc/cmdline, and a
// sparse regular file standing in for /dev/mem (this machine has no /dev/mem).
// The real /dev/mem is exercised inside the QEMU guest (test/vm/devmem.guest.test.ts).
import { mkdtempSync, mkdirSync, openSync, closeSync, ftruncateSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openPoolSync, type Pool } from '../lib/index.js';
import { conformanceSuite } from './conformance/suite.js';

const IOMEM = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-07ffffff : System RAM
  01000000-01ffffff : Kernel code
08000000-0bffffff : Reserved
0c000000-17ffffff : System RAM
1ffe0000-1fffffff : Reserved
fd000000-fdffffff : PCI Bus 0000:00
  fd000000-fdffffff : 0000:00:02.0
`;
const FIRMWARE = [
  ['0x0', '0x9fbff', 'System RAM'],
  ['0x9fc00', '0x9ffff', 'Reserved'],
  ['0xf0000', '0xfffff', 'Reserved'],
  ['0x100000', '0x1ffdffff', 'System RAM'],
  ['0x1ffe0000', '0x1fffffff', 'Reserved'],
];

function simulatedMachine(iomem = IOMEM): { root: string; devmem: string } {
  const root = mkdtempSync(join(tmpdir(), 'physmem-devmem-'));
  mkdirSync(join(root, 'proc'));
  writeFileSync(join(root, 'proc/iomem'), iomem);
  writeFileSync(join(root, 'proc/cmdline'), 'BOOT_IMAGE=/vmlinuz root=/dev/vda mem=384M memmap=64M$0x08000000 console=ttyS0\n');
  FIRMWARE.forEach(([start, end, type], i) => {
    const d = join(root, 'sys/firmware/memmap', String(i));
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'start'), start + '\n');
    writeFileSync(join(d, 'end'), end + '\n');
    writeFileSync(join(d, 'type'), type + '\n');
  });
  const devmem = join(root, 'mem');
  const fd = openSync(devmem, 'w');
  ftruncateSync(fd, 0x20000000); // sparse: "physical" 0..512 MiB
  closeSync(fd);
  return { root, devmem };
}

const machine = simulatedMachine();
afterAll(() => rmSync(machine.root, { recursive: true, force: true }));
const simulated = { discoveryRoot: machine.root, devicePath: machine.devmem };

conformanceSuite('devmem backend on a simulated machine (regular file as /dev/mem)', () =>
  openPoolSync({ backend: 'devmem', ...simulated, leakCheck: 'off' }),
);

describe('devmem backend on a simulated machine (regular file as /dev/mem)', () => {
  let pool: Pool | undefined;
  afterEach(() => {
    pool?.close();
    pool = undefined;
  });

  it('puts every discovered region into one pool, at the right file offsets', () => {
    pool = openPoolSync({ backend: 'devmem', ...simulated });
    expect(pool.backend).toBe('devmem');
    expect(pool.stats().ranges.map((r) => [r.start, r.size])).toEqual([
      [0x08000000n, 64 << 20],
      [0x18000000n, 0x1ffe0000 - 0x18000000],
    ]);
    const b = pool.alloc(16, { at: 0x18000000n + 0x1000n });
    b.bytes.set([1, 2, 3, 4]);
    const fd = openSync(machine.devmem, 'r');
    const back = Buffer.alloc(4);
    readSync(fd, back, 0, 4, 0x18001000);
    closeSync(fd);
    expect([...back]).toEqual([1, 2, 3, 4]);
  });

  it('reads and writes nothing when it opens: data already in the region survives open and close', () => {
    const fd = openSync(machine.devmem, 'r+');
    writeSync(fd, Buffer.from('left by the firmware'), 0, 20, 0x08000000 + 0x5000);
    pool = openPoolSync({ backend: 'devmem', ...simulated });
    pool.close();
    const back = Buffer.alloc(20);
    readSync(fd, back, 0, 20, 0x08000000 + 0x5000);
    closeSync(fd);
    expect(back.toString()).toBe('left by the firmware');
  });

  it('maps lazily: only the first 2 MiB window of each region at open, the rest as blocks are handed out', () => {
    // Bytes of the device file mapped in this process (the kernel merges adjacent windows into one line).
    const MiB = 1 << 20;
    const windows = () =>
      readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .filter((l) => l.endsWith(machine.devmem))
        .reduce((sum, l) => {
          const [a, b] = l.split(' ')[0].split('-').map((x) => parseInt(x, 16));
          return sum + (b - a);
        }, 0) /
      (2 * MiB);
    const before = windows();
    pool = openPoolSync({ backend: 'devmem', ...simulated });
    expect(windows() - before).toBe(2); // two regions, one window each
    pool.alloc(4096, { at: 0x18000000n + 0x4000000n });
    expect(windows() - before).toBe(3);
    pool.alloc(0x300000, { at: 0x08000000n + 0x1ff000n }); // spans windows 0-2 of the first region
    expect(windows() - before).toBe(5);
    pool.close();
    pool = undefined;
    expect(windows()).toBe(before);
  });

  it('limits the pool to size, and says when less is reserved', () => {
    pool = openPoolSync({ backend: 'devmem', ...simulated, size: 1 << 20 });
    expect(pool.stats().total).toBe(1 << 20);
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, size: 1 << 30 })).toThrow(
      expect.objectContaining({ code: 'ENOMEM', message: expect.stringMatching(/only \d+ bytes of reserved memory, 1073741824 asked/) }),
    );
  });

  it('accepts an explicit range inside a reserved region, with a bus offset', () => {
    pool = openPoolSync({ backend: 'devmem', ...simulated, regions: [{ start: 0x09000000n, size: 0x100000 }], busOffset: 0x4000_0000n });
    const b = pool.alloc(4096);
    expect(b.phys).toBe(0x09000000n);
    expect(b.bus).toBe(0x49000000n);
    expect(pool.toPhys(b.bus)).toBe(b.phys);
  });

  it('refuses explicit ranges in kernel RAM or firmware Reserved memory with EPERM before mapping anything', () => {
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, regions: [{ start: 0x00200000, size: 0x1000 }] })).toThrow(
      expect.objectContaining({ code: 'EPERM', message: expect.stringContaining('System RAM') }),
    );
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, regions: [{ start: 0x1ffe0000, size: 0x1000 }] })).toThrow(
      expect.objectContaining({ code: 'EPERM' }),
    );
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, regions: [{ start: 0x08000800, size: 0x1000 }] })).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
  });

  it('says how to reserve memory when none is', () => {
    const bare = simulatedMachine(IOMEM.replace('08000000-0bffffff : Reserved', '08000000-0bffffff : System RAM') + '18000000-1ffdffff : System RAM\n');
    try {
      expect(() => openPoolSync({ backend: 'devmem', discoveryRoot: bare.root, devicePath: bare.devmem })).toThrow(
        expect.objectContaining({ code: 'ENOMEM', message: expect.stringContaining('physmem regions') }),
      );
    } finally {
      rmSync(bare.root, { recursive: true, force: true });
    }
  });

  it('says to run as root when /proc/iomem reads as zeros', () => {
    const hidden = simulatedMachine(IOMEM.replace(/^ *[0-9a-f]+-[0-9a-f]+/gm, (m) => m.replace(/[0-9a-f]+-[0-9a-f]+/, '00000000-00000000')));
    try {
      expect(() => openPoolSync({ backend: 'devmem', discoveryRoot: hidden.root, devicePath: hidden.devmem })).toThrow(
        expect.objectContaining({ code: 'EACCES', message: expect.stringContaining('root') }),
      );
    } finally {
      rmSync(hidden.root, { recursive: true, force: true });
    }
  });

  it('explains a missing /dev/mem (CONFIG_DEVMEM)', () => {
    expect(() => openPoolSync({ backend: 'devmem', discoveryRoot: machine.root, devicePath: join(machine.root, 'no-such-mem') })).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'open', message: expect.stringContaining('CONFIG_DEVMEM') }),
    );
  });

  it('refuses bad options with EINVAL', () => {
    // @ts-expect-error an unknown cache mode, refused at run time
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, cache: 'writeback' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'devmem', ...simulated, regions: [] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() =>
      openPoolSync({ backend: 'devmem', ...simulated, regions: [{ start: 0x09000000, size: 0x200000 }, { start: 0x09100000, size: 0x1000 }] }),
    ).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('overlap') }));
  });
});
