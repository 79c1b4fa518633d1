/**
 * Types of reserved-memory discovery: the parsed firmware map, /proc/iomem
 * and kernel command line, and what discovery finds in them.
 *
 * Addresses and sizes are bigints (bytes): physical addresses go past 2^53.
 * Ranges read from the kernel keep the kernel's inclusive `end`; regions
 * found are `start` + `size`.
 * @module
 */

/** One entry of /sys/firmware/memmap as read: the three files' contents. */
export interface RawFirmwareEntry {
  /** Contents of `start`: hex such as `0x100000` (whitespace is ignored). */
  start: string;
  /** Contents of `end`: hex, inclusive (`0x1ffdffff`). */
  end: string;
  /** Contents of `type`: `System RAM`, `Reserved`, `ACPI Tables`, ... */
  type: string;
}

/** One entry of the firmware's memory map (/sys/firmware/memmap/N), parsed. */
export interface FirmwareRange {
  /** First byte. */
  start: bigint;
  /** Last byte, inclusive, as the kernel prints it. */
  end: bigint;
  /** Length in bytes (`end - start + 1`). */
  size: bigint;
  /** `System RAM`, `Reserved`, `ACPI Tables`, `ACPI Non-volatile Storage`, ... */
  type: string;
}

/** One line of /proc/iomem, parsed, with the lines nested under it. */
export interface IomemEntry {
  /** First byte (0 when /proc/iomem is read without CAP_SYS_ADMIN). */
  start: bigint;
  /** Last byte, inclusive. */
  end: bigint;
  /** What the kernel calls it: `System RAM`, `Reserved`, `Kernel code`, `PCI Bus 0000:00`, `0000:00:05.0`, `nvme`, ... */
  name: string;
  /** Nesting level: 0 for a top-level entry (two spaces of indentation per level in the file). */
  depth: number;
  /** Entries nested directly under this one. */
  children: IomemEntry[];
}

/** /proc/iomem, parsed. */
export interface ParsedIomem {
  /** Top-level entries in file order; nested entries are in their parents' `children`. */
  entries: IomemEntry[];
  /** Every entry in file order (the same objects), for searches at any depth. */
  flat: IomemEntry[];
  /** True when every address reads as zero: the file was read without CAP_SYS_ADMIN. */
  hidden: boolean;
  /** Non-empty lines that are not `start-end : name`; they are skipped. */
  malformed: string[];
}

/** What a mem= or memmap= entry asks the kernel to do. */
export type MemOptionKind =
  /** `mem=nn` or `memmap=nn`: on x86, drop RAM at physical addresses >= nn. */
  | 'limit'
  /** `memmap=exactmap`: forget the firmware's map; use only the memmap= entries that follow. */
  | 'exactmap'
  /** `memmap=nn@ss`: RAM. */
  | 'ram'
  /** `memmap=nn#ss`: ACPI data (not usable by physmem). */
  | 'acpi'
  /** `memmap=nn$ss`: reserved: the only kind physmem hands out. */
  | 'reserved'
  /** `memmap=nn!ss`: protected / persistent memory (not usable by physmem). */
  | 'persistent'
  /** `memmap=nn%ss-old+new`: change the e820 type of a range. */
  | 'convert';

/** One mem= option, or one entry of a (comma-separated) memmap= option, as the x86 kernel reads it. */
export interface MemOption {
  /** As written, one entry per comma-separated memmap= item: `mem=384M`, `memmap=64M$0x08000000`. */
  text: string;
  /** The kernel parameter. */
  param: 'mem' | 'memmap';
  /** What it asks for. */
  kind: MemOptionKind;
  /** nn in bytes; for `limit`, the physical address limit. */
  size?: bigint;
  /** ss in bytes: first byte of the range. */
  start?: bigint;
  /** For `convert`: e820 type to convert from (1 RAM, 2 reserved, 3 ACPI, 4 NVS, 12 persistent); 0 when not given. */
  fromType?: number;
  /** For `convert`: e820 type to convert to; 0 when not given (the range is removed). */
  toType?: number;
  /** Set when the kernel does not apply this entry, saying why. */
  ignored?: string;
}

/** The memory options of /proc/cmdline. */
export interface ParsedCmdline {
  /** The command line as read, trimmed. */
  raw: string;
  /** mem= and memmap= entries in command-line order. */
  options: MemOption[];
  /** The lowest effective `mem=`/`memmap=nn` limit (bytes); undefined when there is none. A physical address limit on x86, not an amount. */
  memLimit?: bigint;
  /** The option that sets {@link ParsedCmdline.memLimit}, e.g. `mem=384M`. */
  memLimitOption?: string;
  /** True when `memmap=exactmap` is in effect. */
  exactmap: boolean;
  /** Entries the kernel reads differently from what was probably meant (a `\` before `$`, GRUB having eaten `$0`, octal...). */
  problems: string[];
}

/** A range of RAM the kernel does not use, found by discovery. */
export interface MemoryRegion {
  /** First byte; page-aligned. */
  start: bigint;
  /** Length in bytes; a multiple of the page size, > 0. */
  size: bigint;
  /**
   * `'above-mem-limit'`: firmware System RAM in no /proc/iomem entry (cut off by mem=, memmap=nn or memmap=exactmap).
   * `'memmap-reserved'`: firmware System RAM that /proc/iomem shows as a top-level `Reserved` entry because of memmap=nn$ss.
   */
  kind: 'above-mem-limit' | 'memmap-reserved';
  /** The evidence, e.g. `firmware System RAM 0x18000000-0x1ffdffff not in /proc/iomem (mem=384M)`. */
  source: string;
}

/** What discovery found. */
export interface DiscoveryResult {
  /** Regions sorted by address, page-trimmed, adjacent ones of the same kind merged. Empty when nothing can be handed out. */
  regions: MemoryRegion[];
  /** True when /proc/iomem reads as zeros (not root): nothing can be found then. */
  iomemHidden: boolean;
  /** Why something was not found or not handed out, in words; empty when all is well. */
  problems: string[];
  /** The command line's memory options. */
  cmdline: ParsedCmdline;
  /** Total firmware System RAM in bytes. */
  firmwareRam: bigint;
}
