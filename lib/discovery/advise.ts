/**
 * adviseReservation: the mem= and memmap= options that would keep a given
 * amount of RAM away from the kernel on this machine, computed from the
 * firmware map (and /proc/iomem, to stay clear of the kernel image). Pure.
 * @module
 */
import { invalidArgument } from '../errors.js';
import { LOW_MEMORY_END, descendants, isSystemRam, ramSpans, toFirmware, toIomem, type FirmwareInput } from './common.js';
import { formatMemSize } from './parse.js';
import { alignDown, intersect, normalize, overlaps, spanOf, total, type Span } from './ranges.js';
import type { ParsedIomem } from './types.js';
import { hex } from '../internal/validate.js';

/** Alignment of advised ranges: 2 MiB, so that they suit huge-page-sized buffers too. */
export const ADVICE_ALIGN = 2n << 20n;

const FOUR_GIB = 1n << 32n;

/** mem= advice. */
export interface MemAdvice {
  /** The option, e.g. `mem=18368M`. */
  option: string;
  /** The limit in bytes: on x86 a physical address, not an amount of RAM. */
  limit: bigint;
  /** First byte left to physmem (= limit). */
  start: bigint;
  /** Last byte left to physmem (inclusive): the end of the highest RAM range. */
  end: bigint;
  /** Bytes left to physmem (>= the size asked, because of alignment). */
  kept: bigint;
  /** Firmware System RAM below the limit: what the kernel keeps. */
  kernelRam: bigint;
}

/** memmap=nn$ss advice. */
export interface MemmapAdvice {
  /** The option, e.g. `memmap=64M$0x7be00000` (`$` unescaped: see docs/reserving-memory.md). */
  option: string;
  /** The same reservation without a `$` to escape: `memmap=64M%0x7be00000-1+2` (convert RAM, type 1, to reserved, type 2). */
  convertOption: string;
  /** First byte reserved. */
  start: bigint;
  /** Bytes reserved (the size asked). */
  size: bigint;
  /** The firmware System RAM range it lies in (inclusive end). */
  within: { start: bigint; end: bigint };
}

/** What {@link adviseReservation} computes. */
export interface ReservationAdvice {
  /** Total firmware System RAM in bytes. */
  ramBytes: bigint;
  /** Last byte of the highest firmware System RAM range; undefined when there is no RAM. */
  ramEnd?: bigint;
  /** Bytes asked to keep. */
  size: bigint;
  /** Undefined when the highest RAM range is smaller than `size`. */
  mem?: MemAdvice;
  /** Undefined when no RAM range below 4 GiB holds `size` clear of the kernel. */
  memmap?: MemmapAdvice;
}

/**
 * Compute, for this machine, the mem= and memmap= options that keep `size`
 * bytes of RAM for physmem.
 *
 * mem=: the top of the highest firmware System RAM range, 2 MiB aligned
 * (mem= is a physical address limit on x86: the kernel keeps the RAM below
 * it, physmem gets the rest).
 *
 * memmap=nn$ss: a range high in the largest firmware System RAM range below
 * 4 GiB (reachable by 32-bit DMA), 2 MiB aligned, clear of everything nested
 * under System RAM in /proc/iomem (kernel code/data/bss, crash kernel).
 *
 * @param firmware - /sys/firmware/memmap, parsed or as read.
 * @param iomem - /proc/iomem (parsed or text), to avoid the kernel image;
 *   optional (and ignored when it reads as zeros).
 * @param size - bytes to keep; default 64 MiB; rounded up to 2 MiB.
 * @throws {PhysmemError} EINVAL when size is not positive.
 */
export function adviseReservation(firmware: FirmwareInput, iomem?: ParsedIomem | string, size: bigint = 64n << 20n): ReservationAdvice {
  if (size <= 0n) throw invalidArgument(`size must be > 0, got ${size}`);
  const want = alignDown(size + ADVICE_ALIGN - 1n, ADVICE_ALIGN);
  const ram = normalize(ramSpans(toFirmware(firmware)));
  const advice: ReservationAdvice = { ramBytes: total(ram), size: want };
  if (ram.length === 0) return advice;
  const highest = ram[ram.length - 1];
  advice.ramEnd = highest.end - 1n;

  const limit = alignDown(highest.end - want, ADVICE_ALIGN);
  if (highest.end - highest.start >= want && limit >= highest.start && limit >= LOW_MEMORY_END) {
    advice.mem = {
      option: `mem=${formatMemSize(limit)}`,
      limit,
      start: limit,
      end: highest.end - 1n,
      kept: highest.end - limit,
      kernelRam: total(intersect(ram, [{ start: 0n, end: limit }])),
    };
  }

  const io = iomem === undefined ? undefined : toIomem(iomem);
  const obstacles: Span[] = io && !io.hidden ? io.entries.filter((e) => isSystemRam(e.name)).flatMap(descendants).map(spanOf) : [];
  const low = intersect(ram, [{ start: LOW_MEMORY_END, end: FOUR_GIB }]).sort((a, b) => {
    const d = b.end - b.start - (a.end - a.start);
    return d > 0n ? 1 : d < 0n ? -1 : 0;
  });
  for (const range of low) {
    let start = alignDown(range.end - want, ADVICE_ALIGN);
    while (start >= range.start && range.end - range.start >= want) {
      const hit = obstacles.filter((o) => overlaps(o, { start, end: start + want }));
      if (hit.length === 0) {
        advice.memmap = {
          option: `memmap=${formatMemSize(want)}$${hex(start)}`,
          convertOption: `memmap=${formatMemSize(want)}%${hex(start)}-1+2`,
          start,
          size: want,
          within: { start: range.start, end: range.end - 1n },
        };
        return advice;
      }
      // Move below the lowest obstacle in the way and try again.
      const below = hit.reduce((m, o) => (o.start < m ? o.start : m), hit[0].start);
      if (below < range.start + want) break;
      start = alignDown(below - want, ADVICE_ALIGN);
    }
  }
  return advice;
}
