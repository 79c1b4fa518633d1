/**
 * Which kernel driver owns a PCI device: release it from its driver, hand it
 * to a chosen one (`driver_override`, as `driverctl` and DPDK's
 * `dpdk-devbind.py` do), and give it back to the kernel's own choice.
 * Everything goes through sysfs and needs root.
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PhysmemError, invalidArgument } from '../errors.js';
import { toPhysmemError } from '../native.js';
import { DEFAULT_SYSFS_ROOT, driverOf, normalizeBdf, pciDeviceDir } from './sysfs.js';
import { checkPath, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of the functions in this module. */
export interface BindOptions {
  /** sysfs mount point. Default `'/sys'` (tests point it at a fake tree). */
  sysfsRoot?: string;
}

const bindCheckers = new Map<string, ReturnType<typeof optionsChecker>>();

/**
 * @internal Check {@link BindOptions} for the entry point `where` (shared with physmem/vfio's bindVfio).
 * @throws {PhysmemError} EINVAL for a non-object, an unknown name or a sysfsRoot that is not a non-empty string.
 */
export function checkBindOptions(options: BindOptions, where: string): void {
  let check = bindCheckers.get(where);
  if (check === undefined) bindCheckers.set(where, (check = optionsChecker(where, optionNames<BindOptions>({ sysfsRoot: true }))));
  check(options);
  checkPath(options.sysfsRoot, 'sysfsRoot', where);
}

function rootHint(code: string): string | undefined {
  return code === 'EACCES' || code === 'EPERM' ? 'binding and unbinding drivers needs root: run as root, e.g. with sudo' : undefined;
}

function write(path: string, value: string): void {
  try {
    writeFileSync(path, value);
  } catch (e) {
    throw toPhysmemError(e, path, rootHint((e as { code?: string }).code ?? ''));
  }
}

function checkDriverName(name: string): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw invalidArgument(`a driver name such as 'vfio-pci' or 'nvme' is expected, got ${JSON.stringify(name)}`, 'see `ls /sys/bus/pci/drivers`');
  }
}

/**
 * Release the device at `bdf` from its kernel driver (sysfs
 * `driver/unbind`). A no-op when no driver is bound. Needs root.
 *
 * The kernel's choice stays in place: a later rescan or `drivers_probe` binds
 * the same driver again; {@link bindDriver} pins another one.
 * @returns the name of the driver that was bound, or undefined.
 * @throws {PhysmemError} EINVAL (bad address), EACCES (not root), EBUSY (still bound afterwards).
 */
export function unbindDriver(bdf: string, options: BindOptions = {}): string | undefined {
  checkBindOptions(options, 'unbindDriver()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  const driver = driverOf(canonical, root);
  if (driver === undefined) return undefined;
  const unbind = join(root, 'bus', 'pci', 'drivers', driver, 'unbind');
  write(unbind, canonical);
  // unbind and drivers_probe run the driver's remove/probe synchronously for PCI,
  // so the link shows the outcome as soon as the write returns.
  const after = driverOf(canonical, root);
  if (after !== undefined) {
    throw new PhysmemError('EBUSY', `${canonical} is still bound to ${after} after writing to unbind`, { path: unbind, hint: 'another program may have bound it again (udev, driverctl); check `ls -l ' + join(pciDeviceDir(canonical, root), 'driver') + '`' });
  }
  return driver;
}

/**
 * Bind the device at `bdf` to the driver `name`: write `name` to its
 * `driver_override` (so only that driver may claim it, also after a rescan),
 * unbind the current driver when it is another one, and write the address to
 * `/sys/bus/pci/drivers_probe`. Checks that `name` is bound afterwards.
 * Undo with {@link restoreDriver}. Needs root.
 * @param name - a loaded PCI driver, e.g. `'vfio-pci'`, `'uio_pci_generic'`, `'nvme'`.
 * @throws {PhysmemError} EINVAL (bad address or name), ENODEV (no such driver
 *   loaded: `modprobe` it), EACCES (not root), EIO (the driver did not take the device).
 */
export function bindDriver(bdf: string, name: string, options: BindOptions = {}): void {
  checkBindOptions(options, 'bindDriver()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  checkDriverName(name);
  const driversDir = join(root, 'bus', 'pci', 'drivers');
  if (!existsSync(join(driversDir, name))) {
    throw new PhysmemError('ENODEV', `no PCI driver ${name} is loaded`, { path: join(driversDir, name), hint: `load it first: modprobe ${name}` });
  }
  const dir = pciDeviceDir(canonical, root);
  if (!existsSync(join(dir, 'vendor'))) throw new PhysmemError('ENOENT', `no PCI device ${canonical}`, { path: dir, hint: 'list the devices with `lspci -D`' });
  write(join(dir, 'driver_override'), name);
  const current = driverOf(canonical, root);
  if (current === name) return;
  if (current !== undefined) unbindDriver(canonical, options);
  write(join(root, 'bus', 'pci', 'drivers_probe'), canonical);
  const after = driverOf(canonical, root);
  if (after !== name) {
    throw new PhysmemError('EIO', `${name} did not bind ${canonical} (${after === undefined ? 'no driver is bound' : after + ' is bound'})`, {
      path: join(dir, 'driver_override'),
      hint: `the driver's probe may have failed: see \`dmesg | tail\`; restoreDriver('${canonical}') gives the device back to the kernel's choice`,
    });
  }
}

/**
 * Give the device at `bdf` back to the kernel's own choice of driver: clear
 * `driver_override`, unbind the driver it named (if that one is bound), and
 * probe again. Needs root.
 * @returns the driver bound afterwards, or undefined when the kernel has none for this device.
 * @throws {PhysmemError} EINVAL (bad address), EACCES (not root).
 */
export function restoreDriver(bdf: string, options: BindOptions = {}): string | undefined {
  checkBindOptions(options, 'restoreDriver()');
  const root = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const canonical = normalizeBdf(bdf);
  const overridePath = join(pciDeviceDir(canonical, root), 'driver_override');
  let override: string | undefined;
  try {
    const text = readFileSync(overridePath, 'utf8').trim();
    override = text === '' || text === '(null)' ? undefined : text;
  } catch (e) {
    throw toPhysmemError(e, overridePath);
  }
  // A lone newline clears the override (an empty write would not reach the kernel).
  if (override !== undefined) write(overridePath, '\n');
  const current = driverOf(canonical, root);
  if (current !== undefined && current === override) unbindDriver(canonical, options);
  if (driverOf(canonical, root) === undefined) write(join(root, 'bus', 'pci', 'drivers_probe'), canonical);
  return driverOf(canonical, root);
}
