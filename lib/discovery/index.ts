/**
 * Reserved-memory discovery: which RAM the kernel does not use (above a
 * mem= limit, or reserved with memmap=nn$ss) and may therefore be handed
 * out through /dev/mem.
 *
 * It compares three files: /sys/firmware/memmap (the firmware's map,
 * untouched by mem= and memmap=), /proc/iomem (what the kernel uses,
 * reserves, and drivers claim) and /proc/cmdline. The parsers and
 * {@link findReservedRegions} are pure; {@link discoverRegions} and
 * {@link readMemoryMaps} read the real files (synchronously). Nothing here
 * opens /dev/mem or loads the native addon.
 *
 * See docs/reserving-memory.md.
 * @module
 */
export type {
  DiscoveryResult,
  FirmwareRange,
  IomemEntry,
  MemOption,
  MemOptionKind,
  MemoryRegion,
  ParsedCmdline,
  ParsedIomem,
  RawFirmwareEntry,
} from './types.js';
export { formatMemSize, parseCmdline, parseFirmwareMemmap, parseIomem } from './parse.js';
export { IOMEM_HIDDEN_PROBLEM, findReservedRegions, type FindReservedRegionsInput } from './find.js';
export { checkExplicitRange, type CheckExplicitRangeOptions, type ExplicitRangeCheck } from './check.js';
export {
  FIRMWARE_MEMMAP_MISSING_PROBLEM,
  discoverRegions,
  readMemoryMaps,
  type DiscoverOptions,
  type MemoryMaps,
  type ReadOptions,
} from './read.js';
export { ADVICE_ALIGN, adviseReservation, type MemAdvice, type MemmapAdvice, type ReservationAdvice } from './advise.js';
export type { FirmwareInput } from './common.js';
