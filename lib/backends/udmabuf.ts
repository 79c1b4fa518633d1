/**
 * The udmabuf backend: buffers of the u-dma-buf kernel module
 * (https://github.com/ikwzm/udmabuf, out of tree), common on FPGA boards.
 *
 * For each device the module made, sysfs gives `phys_addr` (hex), `size`
 * (decimal bytes) and `dma_coherent` (0 or 1); /dev/<name> is mmapped from
 * offset 0 and the pool sub-allocates inside it. Several devices become
 * several ranges of one pool.
 *
 * `phys_addr` is what the kernel's DMA API returned for the buffer: the
 * address the *device* uses (its DMA, or bus, address). Behind an IOMMU or a
 * bus offset (dma-ranges) it differs from the CPU's physical address, which
 * u-dma-buf does not show. This backend therefore puts `phys_addr` in the
 * pool's ranges with a bus offset of 0: `buf.bus` (and `buf.phys`, the same
 * number) is the address to program into the device.
 *
 * Cache maintenance (`syncForDevice` / `syncForCpu`) writes the packed
 * command to sync_for_device / sync_for_cpu when the device's dma_coherent
 * is not 1; see {@link packSyncCommand}.
 * @module
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readdirSync, writeSync, constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError, invalidArgument } from '../errors.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { toPhysmemError } from '../native.js';
import type { Backend, BackendRange, SyncDirectionCode } from './types.js';
import { lockRegion, udmabufLockKind, type RegionLock } from '../locks.js';
import { checkPath, hex } from '../internal/validate.js';

/** Options of the udmabuf backend. */
export interface UdmabufBackendOptions {
  /** Device names such as `['udmabuf0', 'udmabuf1']`. Default: every device found in sysfs. */
  devices?: string[];
  /**
   * `'cached'` (default) or `'uncached'`: opens /dev/<name> with O_SYNC, which
   * makes u-dma-buf map it as its `sync_mode` attribute says (by default
   * non-cached).
   */
  cache?: 'cached' | 'uncached';
  /** Where sysfs is mounted (tests point it at a simulated tree). Default `'/sys'`. */
  sysfsRoot?: string;
  /** Where the device files are. Default `'/dev'`. */
  devRoot?: string;
  /** Directory of the region lock files (see docs/locks.md). Default: `PHYSMEM_LOCK_DIR` or /run/physmem. */
  lockDir?: string;
}

/** Class names u-dma-buf registers under /sys/class, the current one first (older releases used `udmabuf`). */
export const UDMABUF_CLASSES: readonly string[] = ['u-dma-buf', 'udmabuf'];

/** Largest size one packed sync command carries: bits 4-31, kept page-aligned. */
const MAX_PACKED_SIZE = 0xffff_f000;

const LOAD_HINT =
  'load the u-dma-buf kernel module (out of tree: https://github.com/ikwzm/udmabuf) with a buffer, e.g. ' +
  '`insmod u-dma-buf.ko udmabuf0=8388608` (8 MiB), or use another backend';

/** One u-dma-buf device as sysfs describes it. */
export interface UdmabufDevice {
  /** Device name, e.g. `'udmabuf0'`. */
  name: string;
  /** Its sysfs directory, e.g. `/sys/class/u-dma-buf/udmabuf0`. */
  sysfsDir: string;
  /** Its device file, e.g. `/dev/udmabuf0`. */
  devicePath: string;
  /** `phys_addr`: the buffer's DMA (bus) address. */
  bus: bigint;
  /** `size` in bytes. */
  size: number;
  /** `dma_coherent`: true when 1; false when 0 or when the driver has no such attribute (older releases), so syncs are written. */
  dmaCoherent: boolean;
}

/**
 * The u-dma-buf devices in sysfs, by name (natural order), looking in
 * `<sysfsRoot>/class/u-dma-buf` and then `<sysfsRoot>/class/udmabuf`; a name
 * in both is taken from the first.
 * @param sysfsRoot - default `'/sys'`.
 * @returns name and sysfs directory of each; empty when the module is not loaded.
 */
export function listUdmabufDevices(sysfsRoot = '/sys'): { name: string; sysfsDir: string }[] {
  const out = new Map<string, string>();
  for (const cls of UDMABUF_CLASSES) {
    const dir = join(sysfsRoot, 'class', cls);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) if (!out.has(n)) out.set(n, join(dir, n));
  }
  return [...out]
    .sort((a, b) => a[0].localeCompare(b[0], 'en', { numeric: true }))
    .map(([name, sysfsDir]) => ({ name, sysfsDir }));
}

function readAttr(dir: string, attr: string): string {
  const path = join(dir, attr);
  try {
    return readFileSync(path, 'latin1').trim();
  } catch (e) {
    throw toPhysmemError(e, path, `u-dma-buf's sysfs attribute ${attr} could not be read`);
  }
}

/**
 * Read one device's attributes.
 * @param sysfsDir - its sysfs directory (from {@link listUdmabufDevices}).
 * @param devRoot - where its device file is. Default `'/dev'`.
 * @throws {PhysmemError} ENOENT/EACCES reading sysfs; EIO when an attribute cannot be parsed;
 *   ERANGE when the buffer lies above 2^53.
 */
export function readUdmabufDevice(name: string, sysfsDir: string, devRoot = '/dev'): UdmabufDevice {
  const physText = readAttr(sysfsDir, 'phys_addr');
  // The driver prints it with %pad: 0x and zero-padded hex.
  if (!/^(0x)?[0-9a-f]+$/i.test(physText)) {
    throw new PhysmemError('EIO', `cannot parse phys_addr '${physText}' (expected hex such as 0x0000000013c00000)`, { path: join(sysfsDir, 'phys_addr') });
  }
  const bus = BigInt(physText.startsWith('0x') || physText.startsWith('0X') ? physText : '0x' + physText);
  const sizeText = readAttr(sysfsDir, 'size');
  if (!/^\d+$/.test(sizeText) || Number(sizeText) === 0) {
    throw new PhysmemError('EIO', `cannot parse size '${sizeText}' (expected a positive decimal number of bytes)`, { path: join(sysfsDir, 'size') });
  }
  const size = Number(sizeText);
  if (bus + BigInt(size) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PhysmemError('ERANGE', `u-dma-buf device ${name} lies at ${hex(bus)}, above the 2^53 addresses pools can hold`);
  }
  let dmaCoherent = false;
  if (existsSync(join(sysfsDir, 'dma_coherent'))) {
    const t = readAttr(sysfsDir, 'dma_coherent');
    if (t !== '0' && t !== '1') throw new PhysmemError('EIO', `cannot parse dma_coherent '${t}' (expected 0 or 1)`, { path: join(sysfsDir, 'dma_coherent') });
    dmaCoherent = t === '1';
  }
  return { name, sysfsDir, devicePath: join(devRoot, name), bus, size, dmaCoherent };
}

/**
 * The packed value u-dma-buf accepts in sync_for_cpu / sync_for_device, as its
 * documentation prints it: `printf("0x%08X%08X", offset, size | direction << 2 | 1)`.
 * The driver then syncs `[offset, offset + size)` of the buffer in one write.
 * @param offset - bytes from the start of the buffer, at most 0xFFFFFFFF.
 * @param size - bytes, a positive multiple of 16 up to 0xFFFFFFF0 (the driver masks the low 4 bits off).
 * @param direction - 0 bidirectional, 1 to the device, 2 from the device.
 * @throws {PhysmemError} EINVAL when a field does not fit.
 */
export function packSyncCommand(offset: number, size: number, direction: SyncDirectionCode): string {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > 0xffff_ffff) throw invalidArgument(`sync offset must fit in 32 bits, got ${offset}`);
  if (!Number.isSafeInteger(size) || size <= 0 || size > 0xffff_fff0 || size % 16 !== 0) {
    throw invalidArgument(`sync size must be a positive multiple of 16 up to 0xFFFFFFF0, got ${size}`);
  }
  if (direction !== 0 && direction !== 1 && direction !== 2) throw invalidArgument(`sync direction must be 0, 1 or 2, got ${String(direction)}`);
  // 64 bits as u-dma-buf prints them: offset in the high word, size | direction | enable in the low one.
  return hex((BigInt(offset) << 32n) | BigInt((size | (direction << 2) | 1) >>> 0), 16, true);
}

function openHint(path: string): (code: string) => string | undefined {
  return (code) => {
    switch (code) {
      case 'ENOENT':
        return `sysfs lists the device but ${path} does not exist: is devtmpfs mounted on /dev (or devRoot wrong)?`;
      case 'EACCES':
      case 'EPERM':
        return `give your user read-write access to ${path} (a udev rule such as SUBSYSTEM=="u-dma-buf", MODE="0666") or run as root`;
      default:
        return undefined;
    }
  };
}

/** A device opened for the pool: where it lies, its mapping, and its sync files when it needs them. */
interface OpenDevice {
  index: number;
  info: UdmabufDevice;
  start: number;
  mapping: Mapping;
  syncFd: { device: number; cpu: number } | undefined; // undefined when dma_coherent is 1
  lock: RegionLock | undefined; // undefined when the device file is not a real device (tests)
}

/**
 * Open the udmabuf backend.
 * @throws {PhysmemError} ENOENT (no u-dma-buf devices, or a named one missing: the hint says how to load the module),
 *   EACCES (no access to /dev/<name>, or to sync_for_device / sync_for_cpu of a non-coherent device),
 *   EIO (unreadable attributes), EINVAL (bad options).
 */
export function openUdmabufBackend(o: UdmabufBackendOptions = {}): Backend {
  checkPath(o.sysfsRoot, 'sysfsRoot', "openPool({ backend: 'udmabuf' })");
  checkPath(o.devRoot, 'devRoot', "openPool({ backend: 'udmabuf' })");
  checkPath(o.lockDir, 'lockDir', "openPool({ backend: 'udmabuf' })");
  const cache = o.cache ?? 'cached';
  if (cache !== 'cached' && cache !== 'uncached') throw invalidArgument(`cache must be 'cached' or 'uncached', got ${String(cache)}`);
  const sysfsRoot = o.sysfsRoot ?? '/sys';
  const devRoot = o.devRoot ?? '/dev';
  if (typeof sysfsRoot !== 'string' || typeof devRoot !== 'string') throw invalidArgument('sysfsRoot and devRoot must be strings (directories)');
  const classDirs = UDMABUF_CLASSES.map((c) => join(sysfsRoot, 'class', c)).join(' or ');
  const found = listUdmabufDevices(sysfsRoot);

  let chosen: { name: string; sysfsDir: string }[];
  if (o.devices === undefined) {
    if (found.length === 0) throw new PhysmemError('ENOENT', `no u-dma-buf devices found in ${classDirs}`, { hint: LOAD_HINT });
    chosen = found;
  } else {
    if (!Array.isArray(o.devices) || o.devices.length === 0) throw invalidArgument("devices must be a non-empty array of device names such as ['udmabuf0']");
    const seen = new Set<string>();
    chosen = o.devices.map((name, i) => {
      if (typeof name !== 'string' || !/^[^/\0]+$/.test(name) || name === '.' || name === '..') {
        throw invalidArgument(`devices[${i}] must be a device name such as 'udmabuf0' (no path), got ${JSON.stringify(name)}`);
      }
      if (seen.has(name)) throw invalidArgument(`devices lists '${name}' twice`);
      seen.add(name);
      const f = found.find((d) => d.name === name);
      if (!f) {
        throw new PhysmemError('ENOENT', `u-dma-buf device '${name}' not found in ${classDirs}`, {
          hint: found.length ? `devices found: ${found.map((d) => d.name).join(', ')}` : LOAD_HINT,
        });
      }
      return f;
    });
  }
  const infos = chosen.map((d) => readUdmabufDevice(d.name, d.sysfsDir, devRoot)).sort((a, b) => (a.bus < b.bus ? -1 : a.bus > b.bus ? 1 : 0));
  for (let i = 1; i < infos.length; i++) {
    if (infos[i - 1].bus + BigInt(infos[i - 1].size) > infos[i].bus) {
      throw new PhysmemError('EIO', `u-dma-buf devices ${infos[i - 1].name} and ${infos[i].name} overlap`, { hint: 'list only one of them in devices' });
    }
  }

  const devs: OpenDevice[] = [];
  const closeAll = (): void => {
    for (const d of devs) {
      d.mapping.close();
      d.lock?.release(); // after unmapping: the memory is no longer ours to hand out
      if (d.syncFd) {
        closeSync(d.syncFd.device);
        closeSync(d.syncFd.cpu);
      }
    }
  };
  try {
    for (const info of infos) {
      const fd = openFile(info.devicePath, true, cache === 'uncached', openHint(info.devicePath));
      let mapping: Mapping;
      let lock: RegionLock | undefined;
      try {
        // Two programs on one u-dma-buf device would hand out the same blocks: lock it before mapping.
        if (fstatSync(fd).isCharacterDevice()) {
          lock = lockRegion(udmabufLockKind(info.name), [{ start: info.bus, size: info.size }], { dir: o.lockDir });
        }
        mapping = Mapping.map(fd, 0n, info.size, true, info.devicePath);
      } catch (e) {
        lock?.release();
        throw e;
      } finally {
        closeFile(fd); // the mapping keeps the buffer; u-dma-buf reads O_SYNC at mmap time
      }
      const dev: OpenDevice = { index: devs.length, info, start: Number(info.bus), mapping, syncFd: undefined, lock };
      devs.push(dev);
      // Open the sync files now, so a driver that could not sync fails at open and not at its first transfer.
      if (!info.dmaCoherent) {
        const device = openSyncAttr(info, 'sync_for_device');
        try {
          dev.syncFd = { device, cpu: openSyncAttr(info, 'sync_for_cpu') };
        } catch (e) {
          closeSync(device);
          throw e;
        }
      }
    }
  } catch (e) {
    closeAll();
    throw e;
  }

  const n = devs.length;
  const ranges: BackendRange[] = devs.map((d) => ({ start: d.start, size: d.info.size }));
  const find = (phys: number): OpenDevice => {
    for (const d of devs) if (phys >= d.start && phys < d.start + d.info.size) return d;
    throw new PhysmemError('EFAULT', `address ${hex(phys)} is outside the u-dma-buf devices of this pool`);
  };
  let closed = false;
  return {
    name: 'udmabuf',
    ranges,
    busOffset: 0n, // phys_addr is already the device's address
    coherent: devs.every((d) => d.info.dmaCoherent),
    // View ids encode the device: slot * n + device index.
    view: (phys, len) => {
      const d = find(phys);
      return d.mapping.view(phys - d.start, len) * n + d.index;
    },
    buffer: (id) => devs[id % n].mapping.buffer(Math.floor(id / n))!,
    release: (id) => devs[id % n].mapping.release(Math.floor(id / n)),
    sync: (phys, size, forDevice, direction) => {
      const d = find(phys);
      if (d.syncFd === undefined) return; // dma_coherent is 1: the hardware keeps caches coherent
      syncRange(d, phys - d.start, size, forDevice, direction);
    },
    describe: () =>
      `udmabuf backend: ${n} u-dma-buf device(s) (` +
      devs.map((d) => `${d.info.name}: ${d.info.size} bytes at bus ${hex(d.start)}, dma_coherent ${d.info.dmaCoherent ? 1 : 0}`).join('; ') +
      `) via ${devRoot}, ${cache}`,
    lock: devs.find((d) => d.lock !== undefined)?.lock,
    close: () => {
      if (closed) return;
      closed = true;
      closeAll();
    },
  };
}

function openSyncAttr(info: UdmabufDevice, attr: 'sync_for_device' | 'sync_for_cpu'): number {
  const path = join(info.sysfsDir, attr);
  try {
    // Write-only, no O_CREAT/O_TRUNC: this is a sysfs attribute.
    return openSync(path, fsConstants.O_WRONLY);
  } catch (e) {
    throw toPhysmemError(
      e,
      path,
      `${info.name} is not DMA-coherent (dma_coherent 0), so buffers must be synced through ${attr}: ` +
        'run as root or give your user write access to it (a udev rule)',
    );
  }
}

// Write one value to an open sync file. A write(2) to a sysfs attribute is one
// store() call in the driver whatever the file position, so the fd is reused;
// a simulated tree (a regular file) then keeps every value written, in order.
function writeValue(fd: number, value: string, path: string): void {
  try {
    writeSync(fd, value);
  } catch (e) {
    throw toPhysmemError(e, path, `u-dma-buf refused '${value}' (a sync range beyond the buffer?)`);
  }
}

function writeAttr(dir: string, attr: string, value: string): void {
  const path = join(dir, attr);
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_WRONLY);
  } catch (e) {
    throw toPhysmemError(e, path, `could not set u-dma-buf's ${attr}: run as root or give your user write access to it`);
  }
  try {
    writeValue(fd, value, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Sync `[offset, offset + size)` of a device's buffer. The range is widened
 * to 16-byte multiples (the driver's granule for the packed size; caches
 * work on whole lines anyway) within the buffer, and sent as packed commands
 * of at most 0xFFFFF000 bytes. Where the packed form cannot carry it (an
 * offset of 4 GiB or more, or a size that is not a multiple of 16 at the end
 * of an odd-sized buffer), the range goes to sync_offset, sync_size and
 * sync_direction, and "1" to the sync file.
 */
function syncRange(d: OpenDevice, offset: number, size: number, forDevice: boolean, direction: SyncDirectionCode): void {
  const fd = forDevice ? d.syncFd!.device : d.syncFd!.cpu;
  const attr = forDevice ? 'sync_for_device' : 'sync_for_cpu';
  let start = offset - (offset % 16);
  const end = Math.min(Math.ceil((offset + size) / 16) * 16, d.info.size);
  while (start < end) {
    const chunk = Math.min(end - start, MAX_PACKED_SIZE);
    if (start <= 0xffff_ffff && chunk % 16 === 0) {
      writeValue(fd, packSyncCommand(start, chunk, direction), join(d.info.sysfsDir, attr));
      start += chunk;
      continue;
    }
    writeAttr(d.info.sysfsDir, 'sync_offset', hex(start));
    writeAttr(d.info.sysfsDir, 'sync_size', String(end - start));
    writeAttr(d.info.sysfsDir, 'sync_direction', String(direction));
    writeValue(fd, '1', join(d.info.sysfsDir, attr));
    start = end;
  }
}
