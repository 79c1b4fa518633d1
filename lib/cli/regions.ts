/**
 * `physmem regions`: the reserved memory discovery finds on this machine,
 * or, when there is none, how to reserve some (with the numbers for this
 * machine).
 * @module
 */
import { adviseReservation, findReservedRegions, readMemoryMaps, type ReservationAdvice } from '../discovery/index.js';
import { listRegionLocks, type RegionHolder } from '../locks.js';
import { formatSize, table } from './format.js';
import { iommuLines, iommuReport } from './iommu.js';
import { NO_DEVMEM_ALTERNATIVES } from '../backends/devmem.js';
import { existsSync } from 'node:fs';
import { hex } from '../internal/validate.js';

/** Options of `physmem regions`. */
export interface RegionsOptions {
  /** Prefix of /sys and /proc (tests point it at a recorded tree). Default `''`. */
  root?: string;
  /** Accepted for symmetry with the other commands; both forms are always built and the caller prints one. */
  json?: boolean;
  /** Bytes to advise reserving when none is found. Default 64 MiB. */
  reserve?: number;
  /** Page size in bytes. Default 4096. */
  pageSize?: number;
  /** Lock directory whose locks show which regions are in use. Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
  /**
   * The memory device whose absence is said first (no reservation can help
   * without it). Default '/dev/mem' on the live system; not checked when
   * `root` is set (recorded trees hold no /dev) unless given.
   */
  devMemPath?: string;
}

function holderRow(h: RegionHolder): string[] {
  const end = h.size === undefined ? 'end' : hex(h.start + h.size - 1n);
  const who = h.pid === undefined ? 'not visible here (another PID namespace?)' : h.self ? '(this command)' : (h.command ?? '(command line not readable)');
  return [h.kind, hex(h.start), end, h.size === undefined ? '-' : size(h.size), h.pid === undefined ? '?' : String(h.pid), who];
}

const size = (n: bigint) => formatSize(Number(n));

// `pci-0000-00-05.0` (real sysfs) or `pci-<hash>-0000-00-05.0` (a test's fake tree).
const DEVICE_LOCK = /^pci-(?:[0-9a-f]{12}-)?([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2}\.[0-7])$/;
const deviceOfLock = (kind: string) => kind.replace(DEVICE_LOCK, '$1:$2:$3');

function howToReserve(a: ReservationAdvice): string[] {
  const lines: string[] = [];
  if (a.ramEnd === undefined) {
    lines.push('The firmware map lists no System RAM, so no reservation can be advised.');
    return lines;
  }
  lines.push(`This machine has ${size(a.ramBytes)} of RAM (firmware System RAM) ending at ${hex(a.ramEnd)}.`);
  if (!a.mem && !a.memmap) {
    lines.push(`No single RAM range can hold ${size(a.size)}: ask for less.`);
    return lines;
  }
  lines.push(`To keep ${size(a.size)} for DMA, boot with one of:`, '');
  if (a.mem) {
    lines.push(
      `  ${a.mem.option}`,
      `      On x86, mem= is a physical address limit, not an amount of RAM: the kernel`,
      `      uses only RAM below ${hex(a.mem.limit)} (${size(a.mem.kernelRam)} here); physmem gets`,
      `      ${hex(a.mem.start)}-${hex(a.mem.end)} (${size(a.mem.kept)}) above it.`,
      `      The kernel may place PCI devices in the freed addresses; physmem skips any it finds there.`,
    );
  }
  if (a.memmap) {
    const end = a.memmap.start + a.memmap.size - 1n;
    lines.push(
      `  ${a.memmap.option}`,
      `      Reserves ${hex(a.memmap.start)}-${hex(end)} (${size(a.memmap.size)}) inside firmware System RAM`,
      `      ${hex(a.memmap.within.start)}-${hex(a.memmap.within.end)}: high in the largest RAM range below 4 GiB (32-bit`,
      `      DMA reaches it), 2 MiB aligned, clear of the kernel image and crash kernel. The kernel`,
      `      keeps all other RAM.`,
      `  ${a.memmap.convertOption}`,
      `      The same reservation with no '$' to escape (RAM, e820 type 1, becomes reserved, type 2).`,
    );
  }
  if (!a.memmap) {
    lines.push(`  (memmap=: no RAM range below 4 GiB holds ${size(a.size)} clear of the kernel image and crash kernel.)`);
  }
  lines.push('', 'Put it on the kernel command line:');
  lines.push(
    '  GRUB: add it to GRUB_CMDLINE_LINUX in /etc/default/grub, then run update-grub (Debian,',
    '    Ubuntu) or grub2-mkconfig -o /boot/grub2/grub.cfg (Fedora, RHEL, SUSE), and reboot.',
  );
  if (a.memmap) {
    const [sz, addr] = a.memmap.option.slice('memmap='.length).split('$');
    lines.push(
      `    The '$' must survive the shell and GRUB: in /etc/default/grub write memmap=${sz}\\\\\\$${addr}`,
      `    inside double quotes (memmap=${sz}\\$${addr} inside single quotes). grub.cfg must then say`,
      `    memmap=${sz}\\$${addr}, and /proc/cmdline after the reboot memmap=${sz}$${addr}: if the kernel`,
      `    sees anything else (a '\\' or a missing '$...'), it takes memmap=${sz} as mem=${sz}.`,
    );
  }
  if (a.mem) lines.push(`  LILO: append="${a.mem.option}" in /etc/lilo.conf, run lilo, reboot.`);
  lines.push('Then run `physmem regions` again. More in docs/reserving-memory.md.');
  return lines;
}

/**
 * Discover reserved memory and describe it: a table of regions (start, end,
 * size, kind, source), or, when none is found, why, and the mem= /
 * memmap= options that would reserve `reserve` bytes on this machine
 * (computed from the firmware map) and how to set them. Then which memory
 * is in use and by whom (pid, command line), from the locks in the lock
 * directory (lib/locks.ts; the live system's, whatever `root` says).
 *
 * @param opts - root (default `''`), reserve (default 64 MiB), pageSize (default 4096), lockDir.
 * @returns `json` (bigints: the caller prints them as hex with toJson; `inUse` lists the locks),
 *   `text`, and `found` (true when at least one region was found).
 * @throws {PhysmemError} EINVAL for a bad pageSize or reserve.
 */
export function runRegions(opts: RegionsOptions = {}): { json: unknown; text: string; found: boolean } {
  const maps = readMemoryMaps({ root: opts.root });
  const found = maps.firmwareMissing
    ? { regions: [], iomemHidden: maps.iomem.hidden, problems: [], cmdline: maps.cmdline, firmwareRam: 0n }
    : findReservedRegions({ firmware: maps.firmware, iomem: maps.iomem, cmdline: maps.cmdline, pageSize: opts.pageSize });
  const problems = [...maps.problems, ...found.problems];
  if (maps.firmwareMissing) problems.push(...maps.cmdline.problems);
  const regions = found.regions.map((r) => ({ ...r, end: r.start + r.size - 1n }));
  const isFound = regions.length > 0;
  // Hidden iomem: what is reserved is unknown, so advising a reservation could mislead.
  const advice = isFound || maps.firmwareMissing || found.iomemHidden ? undefined : adviseReservation(maps.firmware, maps.iomem, BigInt(opts.reserve ?? 64 * 1024 * 1024));

  const locks = listRegionLocks({ dir: opts.lockDir });
  problems.push(...locks.problems);
  // PciDevice locks (`pci-<bdf>`) say which devices are driven, not which memory is used.
  const devices = locks.holders.filter((h) => DEVICE_LOCK.test(h.kind));
  const memory = locks.holders.filter((h) => !DEVICE_LOCK.test(h.kind));
  const inUse: string[] = [];
  if (memory.length) {
    inUse.push('', `In use (locks in ${locks.dir}):`, '', table(['memory', 'start', 'end', 'size', 'pid', 'command'], memory.map(holderRow)));
  } else if (isFound) {
    inUse.push('', `In use: none (no program holds a lock in ${locks.dir}).`);
  }
  if (devices.length) {
    inUse.push('', 'PCI devices driven through physmem/pci:', '', table(['device', 'pid', 'command'], devices.map((h) => [deviceOfLock(h.kind), h.pid === undefined ? '?' : String(h.pid), h.self ? '(this command)' : (h.command ?? '(command line not readable)')])));
  }
  const iommu = iommuReport(`${opts.root ?? ''}/sys`);
  inUse.push('', ...iommuLines(iommu));

  const devMemPath = opts.devMemPath ?? (opts.root ? undefined : '/dev/mem');
  const noDevmem = devMemPath !== undefined && !existsSync(devMemPath);
  const lines: string[] = [];
  if (noDevmem) lines.push(`This kernel has no ${devMemPath} (built without CONFIG_DEVMEM): ${NO_DEVMEM_ALTERNATIVES}.`, '');
  if (isFound) {
    const sum = regions.reduce((s, r) => s + r.size, 0n);
    lines.push(`Reserved memory: ${regions.length} region${regions.length === 1 ? '' : 's'}, ${size(sum)} in all.`, '');
    lines.push(table(['start', 'end', 'size', 'kind', 'source'], regions.map((r) => [hex(r.start), hex(r.end), size(r.size), r.kind, r.source])));
    lines.push(...inUse);
    if (problems.length) lines.push('', 'Notes:', ...problems.map((p) => `  - ${p}`));
  } else {
    lines.push(found.iomemHidden ? 'Cannot tell which memory is reserved: /proc/iomem is hidden.' : 'No reserved memory found.');
    lines.push(...problems.map((p) => `  - ${p}`));
    const asked = found.cmdline.options.filter((o) => !o.ignored && o.kind !== 'ram');
    if (found.iomemHidden && asked.length) {
      lines.push('', `The kernel command line has ${asked.map((o) => o.text).join(' ')}: run \`physmem regions\` as root to see what it reserved.`);
    }
    if (advice && !noDevmem) lines.push('', ...howToReserve(advice));
    lines.push(...inUse);
  }
  return {
    json: {
      found: isFound,
      devMem: devMemPath === undefined ? null : { path: devMemPath, present: !noDevmem },
      regions,
      iomemHidden: found.iomemHidden,
      problems,
      firmwareRam: found.firmwareRam,
      cmdline: found.cmdline.raw,
      advice: (!noDevmem && advice) || null,
      lockDir: locks.dir,
      iommu,
      devicesInUse: devices.map((h) => ({ device: deviceOfLock(h.kind), pid: h.pid ?? null, command: h.command ?? null, lockFile: h.lockFile })),
      inUse: memory.map((h) => ({
        memory: h.kind,
        start: h.start,
        end: h.size === undefined ? null : h.start + h.size - 1n,
        size: h.size ?? null,
        pid: h.pid ?? null,
        command: h.command ?? null,
        lockFile: h.lockFile,
      })),
    },
    text: lines.join('\n'),
    found: isFound,
  };
}
