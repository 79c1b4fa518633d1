/**
 * Reading the real files (synchronously: they are small and virtual):
 * /sys/firmware/memmap, /proc/iomem, /proc/cmdline.
 * @module
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { findReservedRegions } from './find.js';
import { parseCmdline, parseFirmwareMemmap, parseIomem } from './parse.js';
import type { DiscoveryResult, FirmwareRange, ParsedCmdline, ParsedIomem, RawFirmwareEntry } from './types.js';
import { checkPath, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of {@link readMemoryMaps} and {@link discoverRegions}. */
export interface ReadOptions {
  /** Prefix of /sys and /proc, for tests on a recorded tree (e.g. `test/fixtures/discovery/qemu-pc-mem384`). Default `''` (the real files). */
  root?: string;
}

const checkReadOptions = optionsChecker('readMemoryMaps()', optionNames<ReadOptions>({ root: true }));

/** Options of {@link discoverRegions}. */
export interface DiscoverOptions extends ReadOptions {
  /** Page size in bytes (a power of two); regions are trimmed to it. Default 4096. */
  pageSize?: number;
}

const checkDiscoverOptions = optionsChecker('discoverRegions()', optionNames<DiscoverOptions>({ root: true, pageSize: true }));

/** The three maps as read and parsed. Reading never throws: failures are in `problems`. */
export interface MemoryMaps {
  /** /sys/firmware/memmap, sorted by address; empty when missing or unreadable. */
  firmware: FirmwareRange[];
  /** True when /sys/firmware/memmap does not exist (kernel without CONFIG_FIRMWARE_MEMMAP). */
  firmwareMissing: boolean;
  /** /proc/iomem; no entries when unreadable. */
  iomem: ParsedIomem;
  /** /proc/cmdline's memory options. */
  cmdline: ParsedCmdline;
  /** What could not be read, in words. */
  problems: string[];
}

/** The problem reported when /sys/firmware/memmap does not exist. */
export const FIRMWARE_MEMMAP_MISSING_PROBLEM =
  '/sys/firmware/memmap does not exist: this kernel lacks CONFIG_FIRMWARE_MEMMAP, so discovery cannot tell RAM from device or firmware memory and cannot be trusted; no regions are reported';

function errCode(e: unknown): string {
  return (e as { code?: string }).code ?? String(e);
}

function read(path: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    problems.push(`cannot read ${path}: ${errCode(e)}`);
    return undefined;
  }
}

/**
 * Read and parse /sys/firmware/memmap, /proc/iomem and /proc/cmdline.
 *
 * @param options - `root`: prefix for the paths (default `''`).
 * @returns the parsed maps; what could not be read or parsed is in `problems`
 *   (and the map concerned is empty). Never throws.
 */
export function readMemoryMaps(options: ReadOptions = {}): MemoryMaps {
  checkReadOptions(options);
  checkPath(options.root, 'root', 'readMemoryMaps()', true);
  const root = options.root ?? '';
  const problems: string[] = [];
  const memmapDir = join(root || '/', 'sys/firmware/memmap');
  let firmware: FirmwareRange[] = [];
  let firmwareMissing = false;
  let dirs: string[] | undefined;
  try {
    dirs = readdirSync(memmapDir).filter((d) => /^\d+$/.test(d));
  } catch (e) {
    if (errCode(e) === 'ENOENT') {
      firmwareMissing = true;
      problems.push(FIRMWARE_MEMMAP_MISSING_PROBLEM);
    } else problems.push(`cannot read ${memmapDir}: ${errCode(e)}`);
  }
  if (dirs) {
    const raw: RawFirmwareEntry[] = [];
    let complete = true;
    for (const d of dirs.sort((a, b) => Number(a) - Number(b))) {
      const [start, end, type] = ['start', 'end', 'type'].map((f) => read(join(memmapDir, d, f), problems));
      if (start === undefined || end === undefined || type === undefined) complete = false;
      else raw.push({ start, end, type });
    }
    // A partial map could make device memory look like RAM: all or nothing.
    if (complete) {
      try {
        firmware = parseFirmwareMemmap(raw);
      } catch (e) {
        problems.push(`cannot parse ${memmapDir}: ${(e as Error).message}`);
      }
    }
  }
  const iomemText = read(join(root || '/', 'proc/iomem'), problems);
  const iomem = parseIomem(iomemText ?? '');
  const cmdline = parseCmdline(read(join(root || '/', 'proc/cmdline'), problems) ?? '');
  return { firmware, firmwareMissing, iomem, cmdline, problems };
}

/**
 * Find the reserved RAM of this machine: read the maps
 * ({@link readMemoryMaps}) and run {@link findReservedRegions} on them.
 *
 * @param options - `root` (default `''`), `pageSize` (default 4096).
 * @returns the regions and problems; no regions (and a problem saying so)
 *   when /sys/firmware/memmap is missing or a map cannot be read, or when
 *   /proc/iomem reads as zeros (`iomemHidden: true`: run as root).
 * @throws {PhysmemError} EINVAL when pageSize is not a power of two.
 */
export function discoverRegions(options: DiscoverOptions = {}): DiscoveryResult {
  checkDiscoverOptions(options);
  checkPath(options.root, 'root', 'discoverRegions()', true);
  const maps = readMemoryMaps({ root: options.root });
  const found = findReservedRegions({ firmware: maps.firmware, iomem: maps.iomem, cmdline: maps.cmdline, pageSize: options.pageSize });
  if (maps.firmwareMissing) {
    return { regions: [], iomemHidden: found.iomemHidden, problems: [...maps.problems, ...maps.cmdline.problems], cmdline: maps.cmdline, firmwareRam: 0n };
  }
  return { ...found, problems: [...maps.problems, ...found.problems] };
}
