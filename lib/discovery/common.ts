/**
 * Helpers shared by discovery's modules (internal): accepting raw or parsed
 * inputs, and what the kernel's names mean.
 * @module
 */
import { invalidArgument } from '../errors.js';
import { describeValue, hex, isPowerOfTwo } from '../internal/validate.js';
import { parseCmdline, parseFirmwareMemmap, parseIomem } from './parse.js';
import { type Span } from './ranges.js';
import type { FirmwareRange, IomemEntry, ParsedCmdline, ParsedIomem, RawFirmwareEntry } from './types.js';

/**
 * Nothing below 1 MiB is ever handed out: the BIOS data area, EBDA, option
 * ROMs and the real-mode trampoline live there, and the kernel keeps it for
 * itself whatever the firmware map says.
 */
export const LOW_MEMORY_END = 0x100000n;

/** Firmware entries, parsed or as read. */
export type FirmwareInput = readonly FirmwareRange[] | readonly RawFirmwareEntry[];

/** Parsed firmware entries, sorted by address, from parsed or raw input. @throws {PhysmemError} EINVAL when raw entries do not parse. */
export function toFirmware(f: FirmwareInput): FirmwareRange[] {
  if (!Array.isArray(f)) throw invalidArgument(`firmware must be an array of firmware map entries, got ${describeValue(f)}`, 'Pass readMemoryMaps().firmware, or { start, end, type } entries.');
  const raw = f.length > 0 && typeof (f[0] as { start?: unknown } | null)?.start === 'string';
  const want = raw ? 'string' : 'bigint';
  f.forEach((e: unknown, i) => {
    const r = e as { start?: unknown; end?: unknown; type?: unknown } | null;
    if (typeof r !== 'object' || r === null || typeof r.start !== want || typeof r.end !== want || typeof r.type !== 'string') {
      throw invalidArgument(`firmware[${i}] must be { start, end, type } with ${want} start and end, like the others, got ${describeValue(e)}`);
    }
  });
  if (raw) return parseFirmwareMemmap(f as readonly RawFirmwareEntry[]);
  return [...(f as readonly FirmwareRange[])].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

/** Parsed /proc/iomem from parsed input or text. */
export function toIomem(i: ParsedIomem | string): ParsedIomem {
  if (typeof i === 'string') return parseIomem(i);
  if (typeof i !== 'object' || i === null || !Array.isArray(i.entries) || !Array.isArray(i.flat)) {
    throw invalidArgument(`iomem must be the text of /proc/iomem or parseIomem()'s result, got ${describeValue(i)}`);
  }
  return i;
}

/** Parsed command line from parsed input or text; empty when undefined. */
export function toCmdline(c: ParsedCmdline | string | undefined): ParsedCmdline {
  if (c === undefined) return parseCmdline('');
  if (typeof c === 'string') return parseCmdline(c);
  if (typeof c !== 'object' || c === null || !Array.isArray(c.options)) {
    throw invalidArgument(`cmdline must be the kernel command line or parseCmdline()'s result, got ${describeValue(c)}`);
  }
  return c;
}

/** `System RAM` (the firmware map's and /proc/iomem's name for usable RAM). */
export function isSystemRam(name: string): boolean {
  return /^system ram$/i.test(name.trim());
}

/** `Reserved` (`reserved` before Linux 4.16). */
export function isReserved(name: string): boolean {
  return /^reserved$/i.test(name.trim());
}

/** A PCI bus window (`PCI Bus 0000:00`) or a device's BAR (`0000:00:05.0`) in /proc/iomem. */
export function isPciWindow(name: string): boolean {
  return /^PCI Bus [0-9a-f]{4}:[0-9a-f]{2}$/i.test(name) || /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(name);
}

/** `System RAM 0x100000-0x17ffffff`: an entry named the way messages name it. */
export function entryText(e: { start: bigint; end: bigint; name?: string; type?: string }): string {
  return `${e.name ?? e.type} ${hex(e.start)}-${hex(e.end)}`;
}

/** Every entry under `e`, at any depth. */
export function descendants(e: IomemEntry): IomemEntry[] {
  return e.children.flatMap((c) => [c, ...descendants(c)]);
}

/** The page size as a bigint. @throws {PhysmemError} EINVAL unless it is a positive power of two. */
export function checkPageSize(pageSize: number): bigint {
  if (!isPowerOfTwo(pageSize)) {
    throw invalidArgument(`pageSize must be a power of two, got ${String(pageSize)}`);
  }
  return BigInt(pageSize);
}

/** The firmware's System RAM ranges as half-open spans (not merged). */
export function ramSpans(firmware: readonly FirmwareRange[]): Span[] {
  return firmware.filter((f) => isSystemRam(f.type)).map((f) => ({ start: f.start, end: f.end + 1n }));
}
