/**
 * findReservedRegions: which firmware System RAM the kernel does not use,
 * from the firmware map, /proc/iomem and the command line. Pure.
 * @module
 */
import { LOW_MEMORY_END, checkPageSize, descendants, entryText, isReserved, isSystemRam, ramSpans, toCmdline, toFirmware, toIomem, type FirmwareInput } from './common.js';
import { ADDRESS_END, alignDown, alignUp, intersect, normalize, spanOf, spanText, subtract, total, type Span } from './ranges.js';
import type { DiscoveryResult, MemoryRegion, ParsedCmdline, ParsedIomem } from './types.js';
import { invalidArgument } from '../errors.js';
import { optionNames, optionsChecker } from '../internal/validate.js';

/** The problem reported when /proc/iomem was read without CAP_SYS_ADMIN. */
export const IOMEM_HIDDEN_PROBLEM = '/proc/iomem shows only zeros: run as root (CAP_SYS_ADMIN) to see it';

/** Inputs of {@link findReservedRegions}. */
export interface FindReservedRegionsInput {
  /** /sys/firmware/memmap: parsed ({@link parseFirmwareMemmap}) or the files' contents. */
  firmware: FirmwareInput;
  /** /proc/iomem: parsed ({@link parseIomem}) or its text. */
  iomem: ParsedIomem | string;
  /** /proc/cmdline: parsed ({@link parseCmdline}) or its text. Default: empty (then nothing above a limit qualifies). */
  cmdline?: ParsedCmdline | string;
  /** Page size in bytes, a power of two; regions are trimmed to it. Default 4096. */
  pageSize?: number;
}

const checkInput = optionsChecker('findReservedRegions()', optionNames<FindReservedRegionsInput>({ firmware: true, iomem: true, cmdline: true, pageSize: true }));

interface Evidence {
  spans: Span[];
  label: string;
}

interface Piece extends Span {
  kind: MemoryRegion['kind'];
  source: string;
}

// What on the command line removes RAM from the kernel's map, i.e. explains
// firmware RAM that is in no iomem entry.
function absentEvidence(cmdline: ParsedCmdline): Evidence[] {
  const ev: Evidence[] = [];
  if (cmdline.memLimit !== undefined) ev.push({ spans: [{ start: cmdline.memLimit, end: ADDRESS_END }], label: cmdline.memLimitOption ?? 'mem=' });
  const live = cmdline.options.filter((o) => !o.ignored);
  if (cmdline.exactmap) {
    const listed = live.filter((o) => o.kind === 'ram' && o.start !== undefined && o.size !== undefined).map((o) => ({ start: o.start!, end: o.start! + o.size! }));
    ev.push({ spans: subtract([{ start: 0n, end: ADDRESS_END }], listed), label: 'memmap=exactmap lists no RAM there' });
  }
  for (const o of live) {
    if (o.kind === 'convert' && !o.toType && (o.fromType === 0 || o.fromType === 1) && o.start !== undefined && o.size !== undefined) {
      ev.push({ spans: [{ start: o.start, end: o.start + o.size }], label: o.text });
    }
  }
  return ev;
}

// What on the command line asks for reserved ranges (e820 type 2).
function reservedEvidence(cmdline: ParsedCmdline): Evidence[] {
  return cmdline.options
    .filter((o) => !o.ignored && o.start !== undefined && o.size !== undefined && (o.kind === 'reserved' || (o.kind === 'convert' && o.toType === 2)))
    .map((o) => ({ spans: [{ start: o.start!, end: o.start! + o.size! }], label: o.text }));
}

function list(items: string[], max = 4): string {
  return items.length <= max ? items.join(', ') : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}

/**
 * Find the RAM the kernel does not use: firmware System RAM that is in no
 * top-level /proc/iomem entry (`'above-mem-limit'`: cut off by mem=,
 * memmap=nn or memmap=exactmap), and firmware System RAM that /proc/iomem
 * shows as a top-level `Reserved` entry and that a memmap=nn$ss on the
 * command line asked for (`'memmap-reserved'`).
 *
 * Never returned: anything the firmware does not call System RAM (ACPI,
 * BIOS, device ranges: they read `Reserved` in iomem too); anything below
 * 1 MiB; RAM covered by any other top-level iomem entry (a driver's claim,
 * a PCI window placed over unused RAM); a `Reserved` entry that has entries
 * nested under it (claimed by a driver: the whole entry is left alone);
 * `Reserved` RAM that no memmap=$ asked for, and absent RAM that nothing on
 * the command line explains (both are reported in `problems`).
 *
 * Regions are merged when adjacent and of the same kind, then trimmed
 * inwards to page boundaries; empty ones are dropped.
 *
 * @returns the regions, and `problems` saying what was left out and why.
 *   When /proc/iomem reads as zeros, no regions, `iomemHidden: true` and a
 *   problem saying to run as root.
 * @throws {PhysmemError} EINVAL when pageSize is not a power of two, or
 *   raw firmware entries do not parse.
 */
export function findReservedRegions(input: FindReservedRegionsInput): DiscoveryResult {
  if (input === undefined) throw invalidArgument('findReservedRegions() needs { firmware, iomem }');
  checkInput(input);
  const page = checkPageSize(input.pageSize ?? 4096);
  const firmware = toFirmware(input.firmware);
  const iomem = toIomem(input.iomem);
  const cmdline = toCmdline(input.cmdline);
  const ram = normalize(ramSpans(firmware));
  const firmwareRam = total(ram);
  const problems: string[] = [];
  const done = (regions: MemoryRegion[], iomemHidden = false): DiscoveryResult => ({
    regions,
    iomemHidden,
    problems: [...problems, ...cmdline.problems],
    cmdline,
    firmwareRam,
  });

  if (iomem.hidden) {
    problems.push(IOMEM_HIDDEN_PROBLEM);
    return done([], true);
  }
  if (ram.length === 0) {
    problems.push(firmware.length === 0 ? 'the firmware memory map is empty: nothing can be trusted as RAM' : 'the firmware memory map lists no System RAM');
    return done([]);
  }
  const top = iomem.entries;
  // Without the kernel's own RAM in iomem, "absent" would mean all of RAM.
  if (!top.some((e) => isSystemRam(e.name))) {
    problems.push('/proc/iomem lists no System RAM, so what the kernel uses is unknown: nothing is handed out');
    return done([]);
  }

  const usable = subtract(ram, [{ start: 0n, end: LOW_MEMORY_END }]);
  const pieces: Piece[] = [];

  // 1. Firmware RAM in no top-level iomem entry.
  let absent = subtract(usable, top.map(spanOf));
  for (const ev of absentEvidence(cmdline)) {
    for (const s of intersect(absent, ev.spans)) {
      pieces.push({ ...s, kind: 'above-mem-limit', source: `firmware System RAM ${spanText(s)} not in /proc/iomem (${ev.label})` });
    }
    absent = subtract(absent, ev.spans);
  }
  for (const s of absent) {
    problems.push(`firmware System RAM ${spanText(s)} is not in /proc/iomem, but no mem=, memmap=nn or memmap=exactmap on the command line explains why: not handed out`);
  }

  // 2. Top-level Reserved entries over firmware RAM, asked for by memmap=$.
  const reservedEv = reservedEvidence(cmdline);
  const askedSpans = reservedEv.flatMap((e) => e.spans);
  // Sibling entries never overlap in a well-formed iomem; if they do, the other entry wins.
  const others = top.filter((e) => !isReserved(e.name) || e.children.length > 0).map(spanOf);
  for (const e of top) {
    if (!isReserved(e.name)) continue;
    let inRam = subtract(intersect([spanOf(e)], usable), e.children.length > 0 ? [] : others);
    if (inRam.length === 0) continue;
    if (e.children.length > 0) {
      if (intersect(inRam, askedSpans).length > 0) {
        const names = descendants(e).map(entryText);
        problems.push(`${entryText(e)} in /proc/iomem is claimed by a driver (${list(names)}): none of it is handed out`);
      }
      continue;
    }
    for (const ev of reservedEv) {
      for (const s of intersect(inRam, ev.spans)) {
        pieces.push({ ...s, kind: 'memmap-reserved', source: `firmware System RAM ${spanText(s)} is Reserved in /proc/iomem (${ev.label})` });
      }
      inRam = subtract(inRam, ev.spans);
    }
    for (const s of inRam) {
      problems.push(`firmware System RAM ${spanText(s)} is Reserved in /proc/iomem but no memmap=nn$ss asked for it (the kernel or firmware reserved it): not handed out`);
    }
  }

  // Cross-check what memmap=$ asked for against what the firmware and kernel show.
  const reservedTop = top.filter((e) => isReserved(e.name)).map(spanOf);
  for (const ev of reservedEv) {
    const notRam = subtract(ev.spans, ram);
    if (notRam.length > 0) {
      const fw = firmware.filter((f) => !isSystemRam(f.type) && intersect(notRam, [spanOf(f)]).length > 0).map(entryText);
      problems.push(`${ev.label} covers ${notRam.map(spanText).join(', ')}, which the firmware does not call System RAM (${fw.length ? list(fw) : 'no firmware map entry'}): that part is never handed out`);
    }
    const missing = subtract(intersect(ev.spans, usable), reservedTop);
    if (missing.length > 0) {
      const shown = top.filter((e) => !isReserved(e.name) && intersect(missing, [spanOf(e)]).length > 0).map(entryText);
      problems.push(`${ev.label}: ${missing.map(spanText).join(', ')} is not a top-level Reserved entry in /proc/iomem (${shown.length ? `it shows ${list(shown)}` : 'it is in no entry'})`);
    }
  }

  // Other entries over firmware RAM (a driver's claim, a PCI window the kernel
  // put above mem=, memmap=nn#ss or nn!ss): left out above; say so.
  const claims = top.filter((e) => !isSystemRam(e.name) && !isReserved(e.name) && intersect([spanOf(e)], usable).length > 0);
  if (claims.length > 0) {
    problems.push(`firmware System RAM that /proc/iomem shows as ${list(claims.map(entryText))} is not handed out (only RAM cut off by mem= and memmap=nn$ss ranges are)`);
  }

  // Merge adjacent pieces of the same kind, then trim to pages.
  pieces.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const merged: Piece[] = [];
  for (const p of pieces) {
    const last = merged[merged.length - 1];
    if (last && last.kind === p.kind && p.start <= last.end) {
      if (p.end > last.end) last.end = p.end;
      if (!last.source.split('; ').includes(p.source)) last.source += `; ${p.source}`;
    } else merged.push({ ...p });
  }
  const regions: MemoryRegion[] = [];
  for (const p of merged) {
    const start = alignUp(p.start, page);
    const end = alignDown(p.end, page);
    if (end > start) regions.push({ start, size: end - start, kind: p.kind, source: p.source });
  }
  return done(regions);
}
