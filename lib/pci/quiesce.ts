/**
 * Protection of the next owner from a device whose driver died: per-device
 * locks, finding live owners, and quiescing a crashed userspace driver's
 * leftover (bus mastering off, then a reset where the kernel offers one).
 *
 * A driver killed with -9 leaves its device with bus mastering on and its
 * queues pointing at memory physmem hands out again. Such a device is
 * recognised by: bus mastering on, no kernel driver bound, no live holder of
 * its physmem device lock, and no live process with one of its BARs
 * (`resource<n>`) or its `config` mapped or open (an ixy-style driver that
 * uses sysfs without physmem). Infrastructure never counts: bridges, IOMMUs
 * and other base-system peripherals (base classes 0x05, 0x06, 0x08, 0x0b)
 * are left alone whatever their bits say.
 * @module
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, realpathSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { PhysmemError } from '../errors.js';
import { describeHolder, listRegionLocks, lockRegion, readCommandLine, resolveLockDir, type RegionLock } from '../locks.js';
import { toPhysmemError } from '../native.js';
import { DEFAULT_SYSFS_ROOT, driverOf, listPciDevices, normalizeBdf, pciDeviceDir } from './sysfs.js';
import { checkPath, optionNames, optionsChecker } from '../internal/validate.js';

/** Config-space offset of the command register (16 bits). */
export const PCI_COMMAND = 0x04;
/** Command register bit: the device responds to I/O-port accesses. */
export const PCI_COMMAND_IO = 0x1;
/** Command register bit: the device responds to memory accesses. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Command register bit: the device may master the bus (do DMA, send MSIs). */
export const PCI_COMMAND_MASTER = 0x4;
/** Command register bit: the device may act on special cycles. */
export const PCI_COMMAND_SPECIAL = 0x8;
/** Command register bit: memory write and invalidate. */
export const PCI_COMMAND_INVALIDATE = 0x10;
/** Command register bit: VGA palette snooping. */
export const PCI_COMMAND_VGA_PALETTE = 0x20;
/** Command register bit: parity error response. */
export const PCI_COMMAND_PARITY = 0x40;
/** Command register bit: address/data stepping (obsolete). */
export const PCI_COMMAND_WAIT = 0x80;
/** Command register bit: SERR# enable. */
export const PCI_COMMAND_SERR = 0x100;
/** Command register bit: fast back-to-back writes. */
export const PCI_COMMAND_FAST_BACK = 0x200;
/** Command register bit: legacy INTx interrupts disabled (MSI/MSI-X unaffected). */
export const PCI_COMMAND_INTX_DISABLE = 0x400;

/** Base classes never quiesced: memory controllers, bridges, base-system peripherals (IOMMUs, PICs, timers), processors. */
const INFRASTRUCTURE_CLASSES: ReadonlySet<number> = new Set([0x05, 0x06, 0x08, 0x0b]);

/**
 * Lock kind of the device `bdf` (lib/locks.ts): `pci-0000-00-05.0`; for a
 * sysfs tree other than /sys (tests), a hash of its path is part of the name,
 * so fake trees never collide with real devices or each other.
 */
export function pciLockKind(bdf: string, sysfsRoot: string = DEFAULT_SYSFS_ROOT): string {
  const name = normalizeBdf(bdf).replace(/:/g, '-');
  const root = resolve(sysfsRoot);
  if (root === DEFAULT_SYSFS_ROOT) return `pci-${name}`;
  return `pci-${createHash('sha256').update(root).digest('hex').slice(0, 12)}-${name}`;
}

/**
 * Take the exclusive lock of the device `bdf`: one byte (offset 0) of
 * `<lockDir>/<pciLockKind>.lock`, held until released or the process dies.
 * @throws {PhysmemError} EBUSY naming the holder (pid and command line); the errors of lockRegion.
 */
export function lockDevice(bdf: string, options: { sysfsRoot?: string; lockDir?: string } = {}): RegionLock {
  const kind = pciLockKind(bdf, options.sysfsRoot);
  try {
    return lockRegion(kind, [{ start: 0, size: 1 }], { dir: options.lockDir });
  } catch (e) {
    if (!(e instanceof PhysmemError) || e.code !== 'EBUSY') throw e;
    const pid = deviceLockHolder(bdf, options);
    const who = pid === process.pid ? 'another PciDevice of this process' : pid === undefined ? 'another process' : describeHolder(pid);
    throw new PhysmemError('EBUSY', `PCI device ${normalizeBdf(bdf)} is already driven by ${who}`, {
      path: e.path,
      hint: pid === process.pid ? 'use that PciDevice, or close it first' : 'two programs must never drive one device: stop that program first',
    });
  }
}

/** Pid of the live holder of the device lock of `bdf`, or undefined when none holds it (or it is not visible here). */
export function deviceLockHolder(bdf: string, options: { sysfsRoot?: string; lockDir?: string } = {}): number | undefined {
  const kind = pciLockKind(bdf, options.sysfsRoot);
  const h = listRegionLocks({ dir: options.lockDir }).holders.find((x) => x.kind === kind);
  return h?.pid;
}

/** A process that has the device's BARs or config space mapped or open. */
export interface LiveOwner {
  /** Its pid. */
  readonly pid: number;
  /** Its command line, when readable. */
  readonly command: string | undefined;
  /** The device file it maps or holds open (`.../resource0`, `.../config`). */
  readonly file: string;
  /** `'mapped'` (in /proc/<pid>/maps) or `'open'` (in /proc/<pid>/fd). */
  readonly how: 'mapped' | 'open';
}

function isDeviceFile(p: string, dir: string): boolean {
  if (!p.startsWith(dir + '/')) return false;
  const name = p.slice(dir.length + 1);
  return name === 'config' || /^resource\d+(_wc)?$/.test(name);
}

/**
 * Processes (this one included) that have one of the device's BARs
 * (`resource<n>`, `resource<n>_wc`) or its `config` mapped or open, from
 * /proc/<pid>/maps and /proc/<pid>/fd. Processes whose /proc entries this
 * process may not read (not root) are not seen.
 * @param options - `sysfsRoot`, `procRoot` (default `/proc`), `ignoreOwnFds`: skip this process's open fds (a PciDevice holds config open itself).
 */
export function liveOwners(bdf: string, options: { sysfsRoot?: string; procRoot?: string; ignoreOwnFds?: boolean } = {}): LiveOwner[] {
  const proc = options.procRoot ?? '/proc';
  let dir: string;
  try {
    dir = realpathSync(pciDeviceDir(bdf, options.sysfsRoot));
  } catch {
    return [];
  }
  const out: LiveOwner[] = [];
  let pids: string[];
  try {
    pids = readdirSync(proc).filter((n) => /^\d+$/.test(n));
  } catch {
    return [];
  }
  for (const p of pids) {
    const pid = Number(p);
    let found: LiveOwner | undefined;
    try {
      for (const line of readFileSync(join(proc, p, 'maps'), 'utf8').split('\n')) {
        const i = line.indexOf('/');
        if (i >= 0 && isDeviceFile(line.slice(i).replace(/ \(deleted\)$/, ''), dir)) {
          found = { pid, command: readCommandLine(pid), file: line.slice(i), how: 'mapped' };
          break;
        }
      }
    } catch {
      /* gone, or not ours to read */
    }
    if (!found && !(options.ignoreOwnFds && pid === process.pid)) {
      let fds: string[] = [];
      try {
        fds = readdirSync(join(proc, p, 'fd'));
      } catch {
        /* gone, or not ours to read */
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(join(proc, p, 'fd', fd));
        } catch {
          continue;
        }
        if (isDeviceFile(target, dir)) {
          found = { pid, command: readCommandLine(pid), file: target, how: 'open' };
          break;
        }
      }
    }
    if (found) out.push(found);
  }
  return out;
}

/** What {@link quiesceDevice} did. */
export interface QuiesceReport {
  /** The device. */
  readonly bdf: string;
  /** Vendor and device ID, `1234:11e8`. */
  readonly id: string;
  /** Bus mastering was on and is now off. */
  readonly busMasterCleared: boolean;
  /** The device was reset through sysfs `reset`. */
  readonly reset: boolean;
  /** Why it was not reset, when it was not (no `reset` file, or the reset failed). */
  readonly resetSkipped?: string;
}

function readCommand(configPath: string): number {
  const fd = openSync(configPath, 'r');
  try {
    const b = Buffer.alloc(2);
    if (readSync(fd, b, 0, 2, PCI_COMMAND) !== 2) throw new PhysmemError('EIO', 'short read of the command register', { path: configPath });
    return b.readUInt16LE(0);
  } finally {
    closeSync(fd);
  }
}

function writeCommand(configPath: string, value: number): void {
  const fd = openSync(configPath, 'r+');
  try {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(value, 0);
    if (writeSync(fd, b, 0, 2, PCI_COMMAND) !== 2) throw new PhysmemError('EIO', 'short write of the command register', { path: configPath });
  } finally {
    closeSync(fd);
  }
}

/**
 * Why the kernel offers no reset for the device at `dir`, or undefined when it offers one.
 * @internal Shared with PciDevice.reset.
 */
export function noResetReason(dir: string): string | undefined {
  let methods: string | undefined;
  try {
    methods = readFileSync(join(dir, 'reset_method'), 'utf8').trim();
  } catch {
    methods = undefined; // before Linux 5.15, or no method at all
  }
  if (existsSync(join(dir, 'reset'))) return undefined;
  return methods === ''
    ? 'its reset_method is empty (resets were turned off by writing to reset_method)'
    : 'the kernel offers no reset method for it (no FLR, no PM reset, and no bus reset: it shares its bus or sits on the root bus)';
}

/**
 * Stop the device at `bdf` from doing DMA: clear bus mastering in its command
 * register, then reset it through sysfs `reset` when the kernel offers a
 * reset (the kernel restores the saved config space afterwards, with bus
 * mastering off). Does not check ownership: see {@link findOrphanedBusMasters}.
 * Needs root.
 * @throws {PhysmemError} EACCES without root; errors of the config write.
 */
export function quiesceDevice(bdf: string, options: { sysfsRoot?: string } = {}): QuiesceReport {
  const canonical = normalizeBdf(bdf);
  const dir = pciDeviceDir(canonical, options.sysfsRoot);
  const cfg = join(dir, 'config');
  let cleared = false;
  try {
    const cmd = readCommand(cfg);
    if (cmd & PCI_COMMAND_MASTER) {
      writeCommand(cfg, cmd & ~PCI_COMMAND_MASTER);
      cleared = true;
    }
  } catch (e) {
    throw toPhysmemError(e, cfg);
  }
  let reset = false;
  let resetSkipped = noResetReason(dir);
  if (resetSkipped === undefined) {
    try {
      writeFileSync(join(dir, 'reset'), '1');
      reset = true;
    } catch (e) {
      resetSkipped = `the reset failed: ${(e as Error).message}`;
    }
  }
  const info = listPciDevices({ sysfsRoot: options.sysfsRoot }).find((d) => d.bdf === canonical);
  const id = info ? `${info.vendor.toString(16).padStart(4, '0')}:${info.device.toString(16).padStart(4, '0')}` : '?';
  return resetSkipped === undefined ? { bdf: canonical, id, busMasterCleared: cleared, reset } : { bdf: canonical, id, busMasterCleared: cleared, reset, resetSkipped };
}

/** Options of {@link findOrphanedBusMasters} and {@link quiesceOrphanedDevices}. */
export interface OrphanScanOptions {
  /** sysfs mount point. Default `'/sys'`. */
  sysfsRoot?: string;
  /** /proc mount point. Default `'/proc'`. */
  procRoot?: string;
  /** Lock directory of the device locks. Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
}

const checkOrphanScanOptions = optionsChecker('findOrphanedBusMasters()/quiesceOrphanedDevices()', optionNames<OrphanScanOptions>({ sysfsRoot: true, procRoot: true, lockDir: true }));

/**
 * Devices that look like a crashed userspace driver's leftover: an endpoint
 * that is no bridge or base-system device, with bus mastering on, no kernel
 * driver bound, no live holder of its device lock, and no live process with
 * its BARs or config space mapped or open. Reads only; needs no root except
 * to see other users' processes (without it, their mappings are not seen and
 * the caller should not act: {@link quiesceOrphanedDevices} checks).
 */
export function findOrphanedBusMasters(options: OrphanScanOptions = {}): string[] {
  checkOrphanScanOptions(options);
  checkPath(options.sysfsRoot, 'sysfsRoot', 'findOrphanedBusMasters()');
  checkPath(options.procRoot, 'procRoot', 'findOrphanedBusMasters()');
  checkPath(options.lockDir, 'lockDir', 'findOrphanedBusMasters()');
  const out: string[] = [];
  for (const info of listPciDevices({ sysfsRoot: options.sysfsRoot })) {
    if (INFRASTRUCTURE_CLASSES.has(info.classCode >>> 16)) continue;
    const dir = pciDeviceDir(info.bdf, options.sysfsRoot);
    let cmd: number;
    let header: number;
    try {
      cmd = readCommand(join(dir, 'config'));
      const b = Buffer.alloc(1);
      const fd = openSync(join(dir, 'config'), 'r');
      try {
        readSync(fd, b, 0, 1, 0x0e);
      } finally {
        closeSync(fd);
      }
      header = b[0] & 0x7f;
    } catch {
      continue; // gone, or unreadable
    }
    if (header !== 0 || !(cmd & PCI_COMMAND_MASTER)) continue;
    if (driverOf(info.bdf, options.sysfsRoot) !== undefined) continue;
    if (deviceLockHolder(info.bdf, options) !== undefined) continue;
    if (liveOwners(info.bdf, options).length > 0) continue;
    out.push(info.bdf);
  }
  return out;
}

/**
 * Find and quiesce every orphaned bus master ({@link findOrphanedBusMasters},
 * then {@link quiesceDevice}), emitting a process warning (code
 * `PHYSMEM_QUIESCED`) for each. Pools on the devmem and hugepage backends call
 * this before handing out memory (option `quiesceOrphans`). Does nothing
 * unless running as root: without root other users' mappings are invisible,
 * so a live driver could not be told from a dead one (and the config write
 * would fail anyway).
 * @returns what was done, one report per device.
 */
export function quiesceOrphanedDevices(options: OrphanScanOptions = {}): QuiesceReport[] {
  checkOrphanScanOptions(options);
  checkPath(options.sysfsRoot, 'sysfsRoot', 'quiesceOrphanedDevices()');
  checkPath(options.procRoot, 'procRoot', 'quiesceOrphanedDevices()');
  checkPath(options.lockDir, 'lockDir', 'quiesceOrphanedDevices()');
  if ((process.geteuid?.() ?? 0) !== 0) return [];
  // Reading the lock directory must not fail the caller: an unusable one holds no locks.
  try {
    resolveLockDir(options.lockDir);
  } catch {
    return [];
  }
  const reports: QuiesceReport[] = [];
  for (const bdf of findOrphanedBusMasters(options)) {
    let r: QuiesceReport;
    try {
      r = quiesceDevice(bdf, options);
    } catch (e) {
      process.emitWarning(`physmem: PCI device ${bdf} has bus mastering on and no driver (a crashed driver's leftover?), but quiescing it failed: ${(e as Error).message}`, { code: 'PHYSMEM_QUIESCE_FAILED' });
      continue;
    }
    reports.push(r);
    process.emitWarning(describeQuiesce(r, 'found with bus mastering on, no kernel driver and no live owner (a crashed driver\'s leftover)'), { code: 'PHYSMEM_QUIESCED' });
  }
  return reports;
}

/** One line saying what {@link quiesceDevice} did and why. */
export function describeQuiesce(r: QuiesceReport, why: string): string {
  const did = [r.busMasterCleared ? 'bus mastering turned off' : 'bus mastering already off', r.reset ? 'reset' : `not reset (${r.resetSkipped ?? 'no reset'})`];
  return `physmem: PCI device ${r.bdf} (${r.id}) ${why}: ${did.join(', ')}`;
}
