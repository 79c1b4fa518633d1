/**
 * checkExplicitRange: may physmem use a physical range the user named?
 * Pure: the caller reads the maps (readMemoryMaps) and passes them.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { LOW_MEMORY_END, descendants, entryText, isPciWindow, isReserved, isSystemRam, ramSpans, toFirmware, toIomem, type FirmwareInput } from './common.js';
import { ADDRESS_END, contains, overlaps, spanOf, spanText, subtract, type Span } from './ranges.js';
import { formatMemSize } from './parse.js';
import type { FirmwareRange, IomemEntry, ParsedIomem } from './types.js';
import { checkBoolean, hex, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of {@link checkExplicitRange}. */
export interface CheckExplicitRangeOptions {
  /**
   * Admit a range outside firmware System RAM (e.g. an FPGA's RAM behind a
   * PCI BAR): it must then lie inside a PCI bus window or BAR in /proc/iomem,
   * overlap no System RAM, no firmware ACPI/NVS range and no driver's claim.
   * Never admits System RAM the kernel uses. Default false.
   */
  allowDeviceMemory?: boolean;
}

const checkCheckOptions = optionsChecker('checkExplicitRange()', optionNames<CheckExplicitRangeOptions>({ allowDeviceMemory: true }));

/** What {@link checkExplicitRange} checked and accepted. */
export interface ExplicitRangeCheck {
  /** `'ram'`: firmware System RAM the kernel does not use; `'device'`: device memory in a PCI window (allowDeviceMemory). */
  kind: 'ram' | 'device';
  /** The firmware map entries the range overlaps. */
  firmware: FirmwareRange[];
  /** The /proc/iomem entries the range overlaps (none of them conflicts). */
  iomem: IomemEntry[];
}

const PICK_HINT = 'run `physmem regions` to see the ranges that are free, and docs/reserving-memory.md for how to reserve more';

function refuse(detail: string, hint: string): PhysmemError {
  return new PhysmemError('EPERM', detail, { hint });
}

// The entry to blame for an overlap: the deepest entries that overlap too, for context.
function blame(e: IomemEntry, r: Span): string {
  const inner = descendants(e).filter((d) => overlaps(spanOf(d), r));
  return inner.length ? `${entryText(e)} (${inner.slice(0, 3).map(entryText).join(', ')})` : entryText(e);
}

/**
 * Check a physical range given explicitly (not found by discovery) before
 * physmem maps it. Accepted: firmware System RAM below which nothing else
 * lies in /proc/iomem, or only a top-level `Reserved` entry with nothing
 * nested under it (a memmap=nn$ss range); with `allowDeviceMemory`, also
 * device memory inside a PCI bus window or BAR that no driver claims.
 * Alignment is not checked here.
 *
 * @param start - first byte (physical address).
 * @param size - length in bytes, > 0.
 * @param firmware - /sys/firmware/memmap, parsed or as read.
 * @param iomem - /proc/iomem, parsed or its text.
 * @param options - allowDeviceMemory (default false).
 * @returns what it checked: the kind of memory and the overlapping entries.
 * @throws {PhysmemError} EPERM naming the conflicting entry (range and name)
 *   and saying what to do: the range is not all firmware System RAM (unless
 *   allowDeviceMemory), lies below 1 MiB, overlaps System RAM the kernel
 *   uses, or overlaps a range a driver or device claims; also when the maps
 *   are empty and nothing can be checked. EACCES when /proc/iomem shows only
 *   zeros (not root). EINVAL for a negative start, a size <= 0, or a range
 *   past 2^64.
 */
export function checkExplicitRange(
  start: bigint,
  size: bigint,
  firmware: FirmwareInput,
  iomem: ParsedIomem | string,
  options: CheckExplicitRangeOptions = {},
): ExplicitRangeCheck {
  checkCheckOptions(options);
  checkBoolean(options.allowDeviceMemory, 'allowDeviceMemory', 'checkExplicitRange()');
  if (typeof start !== 'bigint' || typeof size !== 'bigint') throw invalidArgument('start and size must be bigints');
  if (start < 0n) throw invalidArgument(`start must be >= 0, got ${start}`);
  if (size <= 0n) throw invalidArgument(`size must be > 0, got ${size}`);
  if (start + size > ADDRESS_END) throw invalidArgument(`range ${hex(start)} + ${hex(size)} ends past the 64-bit address space`);
  const r: Span = { start, end: start + size };
  const what = spanText(r);
  const fw = toFirmware(firmware);
  const io = toIomem(iomem);

  if (io.hidden) {
    throw new PhysmemError('EACCES', `cannot check ${what}: /proc/iomem shows only zeros`, { hint: 'Run as root (CAP_SYS_ADMIN) so that /proc/iomem shows addresses' });
  }
  if (!io.entries.some((e) => isSystemRam(e.name))) {
    throw refuse(`cannot check ${what}: /proc/iomem lists no System RAM`, 'Make sure /proc is mounted and readable');
  }
  const fwOverlap = fw.filter((f) => overlaps(spanOf(f), r));
  const ram = ramSpans(fw);
  const notRam = subtract([r], ram);
  const allRam = notRam.length === 0;
  const device = options.allowDeviceMemory === true && !ram.some((s) => overlaps(s, r));

  if (!allRam && !device) {
    if (fw.length === 0) {
      throw refuse(`cannot check ${what}: the firmware memory map is empty`, 'The kernel needs CONFIG_FIRMWARE_MEMMAP (/sys/firmware/memmap) so that physmem can tell RAM from everything else');
    }
    const gap = notRam[0];
    const culprit = fw.find((f) => !isSystemRam(f.type) && overlaps(spanOf(f), gap));
    const where = culprit ? `${entryText(culprit)} in the firmware map` : `${spanText(gap)} is in no firmware map entry`;
    const hint = options.allowDeviceMemory
      ? 'A range must be either all firmware System RAM or all device memory (inside a PCI window, no RAM)'
      : 'Only RAM the firmware map calls System RAM can be handed out (ACPI and BIOS ranges belong to the firmware); for memory behind a PCI BAR pass allowDeviceMemory: true';
    throw refuse(`${what} is not all firmware System RAM: it overlaps ${where}`, hint);
  }

  if (!device) {
    if (r.start < LOW_MEMORY_END) {
      throw refuse(`${what} lies below 1 MiB`, `The first MiB holds the BIOS data area, EBDA and real-mode code and the kernel keeps it; ${PICK_HINT}`);
    }
    for (const e of io.flat) {
      if (!overlaps(spanOf(e), r)) continue;
      if (e.depth === 0 && isSystemRam(e.name)) {
        throw refuse(
          `${what} overlaps ${blame(e, r)} in /proc/iomem: RAM the kernel uses`,
          `Reserve it first (boot with memmap=${formatMemSize(size)}$${hex(start)}, or a mem= below it) and reboot; ${PICK_HINT}`,
        );
      }
      if (e.depth === 0 && isReserved(e.name) && e.children.length === 0) continue;
      throw refuse(`${what} overlaps ${blame(e, r)} in /proc/iomem, claimed by a driver or device`, `Unload the driver that claimed it or pick another range; ${PICK_HINT}`);
    }
    return { kind: 'ram', firmware: fwOverlap, iomem: io.flat.filter((e) => overlaps(spanOf(e), r)) };
  }

  // Device memory: outside all RAM, inside a PCI window, claimed by nobody.
  const fwBad = fwOverlap.find((f) => !isReserved(f.type));
  if (fwBad) {
    throw refuse(`${what} overlaps ${entryText(fwBad)} in the firmware map`, 'Device memory must not overlap RAM or ACPI ranges the firmware reports');
  }
  const ioOverlap = io.flat.filter((e) => overlaps(spanOf(e), r));
  const kernelRam = ioOverlap.find((e) => isSystemRam(e.name));
  if (kernelRam) throw refuse(`${what} overlaps ${entryText(kernelRam)} in /proc/iomem: RAM the kernel uses`, 'Device memory never includes System RAM');
  if (!ioOverlap.some((e) => isPciWindow(e.name) && contains(spanOf(e), r))) {
    const there = ioOverlap.length ? `it overlaps ${ioOverlap.slice(0, 3).map(entryText).join(', ')}` : 'it is in no /proc/iomem entry';
    throw refuse(
      `${what} is neither firmware System RAM nor inside a PCI bus window or BAR in /proc/iomem (${there})`,
      "Device memory must lie inside the BAR of the device that has it: see the device's /sys/bus/pci/devices/*/resource",
    );
  }
  const claimed = ioOverlap.find((e) => !isPciWindow(e.name));
  if (claimed) {
    throw refuse(`${what} overlaps ${entryText(claimed)} in /proc/iomem, claimed by a driver or device`, 'Unbind the driver from the device (or pick a range no driver claims)');
  }
  return { kind: 'device', firmware: fwOverlap, iomem: ioOverlap };
}
