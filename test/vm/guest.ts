// Helpers for guest-side tests (test/vm/**/*.guest.test.ts). These files run
// inside the QEMU guest as root (scripts/vm/run.mjs); on the host they skip.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { describe } from 'vitest';

/** True inside the VM (set by scripts/vm/lib.mjs in the guest's command). */
export const inGuest = process.env.PHYSMEM_VM_GUEST === '1';

/** `describe` that only runs inside the VM; use it for every guest suite. */
export const describeGuest = describe.skipIf(!inGuest);

export interface ExpectedRegion {
  /** 'above-mem': firmware RAM above mem=, in no /proc/iomem entry.
   *  'memmap-reserved': a memmap=nn$ss hole, shown as "Reserved" in /proc/iomem. */
  kind: 'above-mem' | 'memmap-reserved';
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

/** What the boot config implies (scripts/vm/configs.mjs `expect`, plus name etc.). */
export interface GuestConfig {
  name: string;
  description: string;
  kernelArgs: string[];
  memory: string;
  memLimit: number;
  firmwareRam?: { start: number; end: number };
  regions: ExpectedRegion[];
  hugepages: number;
  edu: boolean;
  iommu?: boolean;
  /** Number of edu devices (config `edu: 2`); 1 when only `edu` is set. */
  eduCount?: number;
  /** A QEMU nvme controller is present, bound to the kernel's nvme driver. */
  nvme?: boolean;
}

let cached: GuestConfig | undefined;
/** The current boot config; throws outside the VM. */
export function guestConfig(): GuestConfig {
  if (cached) return cached;
  const file = process.env.PHYSMEM_VM_EXPECT;
  if (!file) throw new Error('PHYSMEM_VM_EXPECT is not set: not running inside the VM harness');
  cached = JSON.parse(fs.readFileSync(file, 'utf8')) as GuestConfig;
  return cached;
}

/** A writable directory whose contents come back to the host (kept when a run fails). */
export const resultsDir = process.env.PHYSMEM_VM_RESULTS ?? '/tmp';

export interface IomemEntry {
  start: number;
  end: number;
  name: string;
  depth: number;
}

/** /proc/iomem as entries (depth = nesting level, 0 = top). Needs root for real addresses. */
export function readIomem(text = fs.readFileSync('/proc/iomem', 'utf8')): IomemEntry[] {
  const out: IomemEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^( *)([0-9a-f]+)-([0-9a-f]+) : (.*)$/.exec(line);
    if (!m) continue;
    out.push({ depth: m[1].length / 2, start: parseInt(m[2], 16), end: parseInt(m[3], 16), name: m[4] });
  }
  return out;
}

export interface FirmwareMapEntry {
  start: number;
  end: number;
  type: string;
}

/** /sys/firmware/memmap: the firmware's (e820) map, unchanged by mem= and memmap=. */
export function readFirmwareMemmap(dir = '/sys/firmware/memmap'): FirmwareMapEntry[] {
  return fs
    .readdirSync(dir)
    .map((d) => {
      const rd = (f: string) => fs.readFileSync(`${dir}/${d}/${f}`, 'utf8').trim();
      return { start: parseInt(rd('start'), 16), end: parseInt(rd('end'), 16), type: rd('type') };
    })
    .sort((a, b) => a.start - b.start);
}

export const hex = (n: number) => `0x${n.toString(16)}`;

/**
 * Read (or write, when `value` is given) one word of physical memory with
 * busybox's `devmem`, which mmaps /dev/mem. Unlike read()/write() on /dev/mem,
 * which the kernel limits to addresses below high_memory (the mem= limit),
 * mmap also reaches RAM above mem=. Returns the value read (after a write:
 * busybox reads it back).
 */
export function devmem(addr: number, width: 8 | 16 | 32 | 64 = 32, value?: bigint | number): bigint {
  const args = ['devmem', hex(addr), String(width)];
  if (value !== undefined) args.push(`0x${value.toString(16)}`);
  const out = execFileSync('busybox', args, { encoding: 'utf8' }).trim();
  return value !== undefined && out === '' ? devmem(addr, width) : BigInt(out);
}
