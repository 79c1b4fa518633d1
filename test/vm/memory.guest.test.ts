// Runs inside the VM (scripts/vm/run.mjs): what the booted kernel shows of the
// memory it does not use, checked against the boot config's expectations.
// Needs no native addon: /dev/mem is read and written with pread/pwrite.
import fs from 'node:fs';
import { expect, it } from 'vitest';

import { describeGuest, devmem, guestConfig, hex, inGuest, readFirmwareMemmap, readIomem } from './guest.js';

const PAGE = 4096;
const cfg = inGuest ? guestConfig() : undefined;

/** pread `len` bytes of physical memory at `addr`; returns the buffer or the errno code. */
function readPhys(addr: number, len = PAGE): Buffer | string {
  const fd = fs.openSync('/dev/mem', 'r');
  try {
    const buf = Buffer.alloc(len);
    const n = fs.readSync(fd, buf, 0, len, addr);
    return buf.subarray(0, n);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  } finally {
    fs.closeSync(fd);
  }
}

function writePhys(addr: number, data: Buffer): number {
  const fd = fs.openSync('/dev/mem', 'r+');
  try {
    return fs.writeSync(fd, data, 0, data.length, addr);
  } finally {
    fs.closeSync(fd);
  }
}

describeGuest('kernel view of memory', () => {
  it('boots with the configured kernel command line', () => {
    const cmdline = fs.readFileSync('/proc/cmdline', 'utf8').trim().split(/\s+/);
    for (const arg of cfg!.kernelArgs) expect(cmdline).toContain(arg);
  });

  it('uses System RAM only up to the mem= limit', () => {
    const ram = readIomem().filter((e) => e.depth === 0 && e.name === 'System RAM');
    expect(ram.length).toBeGreaterThan(0);
    const top = Math.max(...ram.map((e) => e.end));
    expect(hex(top + 1)).toBe(hex(cfg!.memLimit));
  });

  it('firmware map still lists the RAM above mem= as System RAM', () => {
    const fw = readFirmwareMemmap();
    if (cfg!.firmwareRam) {
      expect(fw).toContainEqual({ ...cfg!.firmwareRam, type: 'System RAM' });
    }
    for (const r of cfg!.regions) {
      const inside = fw.some((e) => e.type === 'System RAM' && e.start <= r.start && r.end <= e.end);
      expect(inside, `${r.kind} ${hex(r.start)}-${hex(r.end)} inside firmware System RAM`).toBe(true);
    }
  });

  it('expected regions show in /proc/iomem as configured', () => {
    const top = readIomem().filter((e) => e.depth === 0);
    for (const r of cfg!.regions) {
      const overlapping = top.filter((e) => e.start <= r.end && r.start <= e.end);
      if (r.kind === 'above-mem') {
        expect(overlapping, `iomem entries over ${hex(r.start)}-${hex(r.end)}`).toEqual([]);
      } else {
        expect(overlapping).toEqual([{ depth: 0, start: r.start, end: r.end, name: 'Reserved' }]);
      }
    }
  });

  it('has the configured number of huge pages', () => {
    const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
    const total = Number(/^HugePages_Total:\s+(\d+)/m.exec(meminfo)?.[1]);
    expect(total).toBe(cfg!.hugepages);
  });

  it('has the edu device when configured', () => {
    const ids = fs.readdirSync('/sys/bus/pci/devices').map((d) => {
      const rd = (f: string) => fs.readFileSync(`/sys/bus/pci/devices/${d}/${f}`, 'utf8').trim();
      return `${rd('vendor')}:${rd('device')}`;
    });
    expect(ids.includes('0x1234:0x11e8')).toBe(cfg!.edu);
  });
});

describeGuest('/dev/mem', () => {
  it('exists as the mem character device 1:1', () => {
    const st = fs.statSync('/dev/mem');
    expect(st.isCharacterDevice()).toBe(true);
    expect([Math.floor(st.rdev / 256), st.rdev % 256]).toEqual([1, 1]);
  });

  it('refuses to read System RAM the kernel uses (STRICT_DEVMEM)', () => {
    const ram = readIomem().find((e) => e.depth === 0 && e.name === 'System RAM' && e.start >= 0x100000);
    expect(ram).toBeDefined();
    const addr = ram!.start + 16 * 1024 * 1024;
    expect(addr).toBeLessThan(ram!.end);
    expect(readPhys(addr)).toBe('EPERM');
  });

  // read()/write() on /dev/mem reach only physical addresses below high_memory
  // (drivers/char/mem.c valid_phys_addr_range), i.e. below the mem= limit;
  // mmap (busybox devmem) reaches everything STRICT_DEVMEM allows.
  const regions = (kind: string) => (inGuest ? guestConfig().regions.filter((r) => r.kind === kind) : []);
  const pattern = (addr: number) => {
    const b = Buffer.alloc(PAGE);
    for (let i = 0; i < PAGE; i += 4) b.writeUInt32LE((addr + i) >>> 0, i);
    return b;
  };

  it.skipIf(inGuest && regions('memmap-reserved').length === 0)(
    'pread/pwrite round-trip the first and last page of a memmap= region',
    () => {
      for (const r of regions('memmap-reserved')) {
        for (const addr of [r.start, r.end + 1 - PAGE]) {
          const got = readPhys(addr);
          expect(typeof got === 'string' ? got : got.length, `read ${hex(addr)}`).toBe(PAGE);
          expect(writePhys(addr, pattern(addr))).toBe(PAGE);
          expect((readPhys(addr) as Buffer).equals(pattern(addr)), `read back ${hex(addr)}`).toBe(true);
          // The mmap view agrees with the pread view.
          expect(devmem(addr + 8)).toBe(BigInt(pattern(addr).readUInt32LE(8)));
        }
      }
    },
  );

  it.skipIf(inGuest && regions('above-mem').length === 0)(
    'RAM above mem= is refused by pread (EFAULT) but reachable through mmap',
    () => {
      for (const r of regions('above-mem')) {
        expect(readPhys(r.start)).toBe('EFAULT');
        // Not the last 32 bytes of a page: busybox 1.35 devmem compares the width in
        // bits with the bytes left in the page and then maps the next page too.
        for (const addr of [r.start, r.start + 0x12340, r.end + 1 - 64]) {
          const v = BigInt((addr ^ 0x5a5a5a5a) >>> 0);
          expect(devmem(addr, 32, v), `devmem ${hex(addr)}`).toBe(v);
          expect(devmem(addr, 32)).toBe(v);
        }
        expect(devmem(r.start + 0x100, 64, 0x0123456789abcdefn)).toBe(0x0123456789abcdefn);
      }
    },
  );
});
