/**
 * `physmem doctor`: everything a driver author's setup needs, checked in one
 * go, and per backend whether it is ready here and the one thing to do if not.
 *
 * Reads files only (sysfs, procfs, /boot, /dev), never opens a pool, so it
 * runs as any user; every path is under an injectable root for tests.
 * @module
 */
import { accessSync, constants, existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { discoverRegions } from '../discovery/index.js';
import { resolveLockDir } from '../locks.js';
import { nativeAddonSource, native } from '../native.js';
import { formatSize } from './format.js';
import { hex } from '../internal/validate.js';

/** Where `physmem doctor` looks (tests point them at a fake tree). */
export interface DoctorOptions {
  /** Prefix of /sys, /proc, /boot and /dev. Default `''` (this machine). */
  root?: string;
  /** Effective user id to judge permissions by. Default `process.geteuid()`. */
  uid?: number;
  /** Kernel release for /boot/config-<release>. Default `os.release()`. */
  kernelRelease?: string;
  /** Also try to load the native addon and say which binary it is. Default true. */
  checkAddon?: boolean;
  /** The lock directory to check (not under `root`). Default: `$PHYSMEM_LOCK_DIR`, else /run/physmem. */
  lockDir?: string;
}

/** One finding: `ok`, `no` (missing or refused), `unknown` (cannot tell), `info`. */
export interface DoctorCheck {
  /** What was checked, e.g. `'/dev/mem'`. */
  name: string;
  /** The verdict. */
  status: 'ok' | 'no' | 'unknown' | 'info';
  /** What was found, in one line. */
  detail: string;
}

/** Whether one backend can open here, and if not, the one thing to do. */
export interface BackendReadiness {
  /** Backend name as `openPoolSync({ backend })` takes it. */
  backend: 'devmem' | 'hugepage' | 'udmabuf' | 'vfio' | 'fake';
  /** True when opening it should work as things are. */
  ready: boolean;
  /** Why it is (not) ready. */
  reason: string;
  /** The one thing to do to make it ready; absent when ready. */
  todo?: string;
}

/** What `physmem doctor --json` prints. */
export interface DoctorReport {
  /** Every finding, in the order printed. */
  checks: DoctorCheck[];
  /** Per backend: ready or not, and what to do. */
  backends: BackendReadiness[];
}

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
};
const list = (path: string): string[] => {
  try {
    return readdirSync(path).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  } catch {
    return [];
  }
};
const canReadWrite = (path: string): boolean => {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
};

/** The kernel's build configuration, from /boot/config-<release> or /proc/config.gz; undefined when neither is readable. */
function kernelConfig(at: (...p: string[]) => string, rel: string): { source: string; get(name: string): string | undefined } | undefined {
  let text = read(at('boot', `config-${rel}`));
  let source = `/boot/config-${rel}`;
  if (text === undefined) {
    try {
      text = gunzipSync(readFileSync(at('proc/config.gz'))).toString('latin1');
      source = '/proc/config.gz';
    } catch {
      return undefined;
    }
  }
  const values = new Map<string, string>();
  for (const m of text.matchAll(/^(CONFIG_\w+)=(.*)$/gm)) values.set(m[1], m[2]);
  for (const m of text.matchAll(/^# (CONFIG_\w+) is not set$/gm)) values.set(m[1], 'n');
  const t = text;
  return { source, get: (name) => values.get(name) ?? (t.length ? 'n' : undefined) };
}

/**
 * Check this machine's setup for every backend.
 * @returns the report as data (`json`, addresses as `"0x..."` strings) and as text.
 */
export function runDoctor(o: DoctorOptions = {}): { json: DoctorReport; text: string } {
  const root = o.root ?? '';
  const at = (...parts: string[]): string => join(root || '/', ...parts);
  const uid = o.uid ?? process.geteuid?.() ?? -1;
  const isRoot = uid === 0;
  const rel = o.kernelRelease ?? release();
  const checks: DoctorCheck[] = [];
  const add = (name: string, status: DoctorCheck['status'], detail: string) => checks.push({ name, status, detail });

  // Who we are: most backends need root for physical addresses.
  add('user', isRoot ? 'ok' : 'info', isRoot ? 'root' : `uid ${uid}, not root: /dev/mem and physical addresses of huge pages need root`);

  if (o.checkAddon !== false) {
    try {
      native();
      const src = nativeAddonSource();
      add('native addon', 'ok', src ? `${src.kind === 'prebuilt' ? 'prebuilt' : 'built here'}: ${src.path}` : 'loaded');
    } catch (e) {
      add('native addon', 'no', (e as Error).message.split('\n')[0]);
    }
  }

  // Kernel configuration.
  const config = kernelConfig(at, rel);
  const cfg = (name: string): string | undefined => config?.get(name);

  // /dev/mem, STRICT_DEVMEM, lockdown.
  const devmemPath = at('dev/mem');
  const hasDevmem = existsSync(devmemPath);
  const devmemAccess = hasDevmem && canReadWrite(devmemPath) && isRoot;
  add('/dev/mem', hasDevmem ? (devmemAccess ? 'ok' : 'no') : 'no', hasDevmem ? (devmemAccess ? 'present, opened read-write as root' : 'present; opening it needs root (CAP_SYS_RAWIO)') : `missing: the kernel was built without CONFIG_DEVMEM${cfg('CONFIG_DEVMEM') === 'n' ? ` (${config!.source} says so)` : ''}`);
  const strict = cfg('CONFIG_STRICT_DEVMEM');
  const ioStrict = cfg('CONFIG_IO_STRICT_DEVMEM');
  add(
    'STRICT_DEVMEM',
    strict === undefined ? 'unknown' : 'info',
    strict === undefined
      ? 'unknown (no /boot/config-' + rel + ' and no /proc/config.gz)'
      : strict === 'y'
        ? `CONFIG_STRICT_DEVMEM=y${ioStrict === 'y' ? ', CONFIG_IO_STRICT_DEVMEM=y' : ''} (${config!.source}): /dev/mem maps only memory the kernel does not use as RAM, which is what mem=/memmap= reserve`
        : `not set (${config!.source}): /dev/mem can map any physical memory`,
  );
  const lockdownText = read(at('sys/kernel/security/lockdown'));
  const lockdown = lockdownText === undefined ? undefined : (/\[(\w+)\]/.exec(lockdownText)?.[1] ?? lockdownText.trim());
  add(
    'lockdown',
    lockdown === undefined ? 'unknown' : lockdown === 'none' ? 'ok' : 'no',
    lockdown === undefined
      ? 'unknown (no /sys/kernel/security/lockdown: securityfs not mounted or no lockdown LSM)'
      : lockdown === 'none'
        ? 'none'
        : `${lockdown}: the kernel refuses /dev/mem (Secure Boot usually turns this on)`,
  );

  // Reserved memory.
  const found = discoverRegions({ root });
  const reservedBytes = found.regions.reduce((s, r) => s + r.size, 0n);
  add(
    'reserved memory',
    found.iomemHidden ? 'unknown' : found.regions.length ? 'ok' : 'no',
    found.iomemHidden
      ? 'cannot tell: /proc/iomem shows zeros to non-root users'
      : found.regions.length
        ? `${found.regions.length} region(s), ${formatSize(Number(reservedBytes))}: ` + found.regions.map((r) => `${hex(r.start)}-${hex(r.start + r.size - 1n)} (${r.kind})`).join(', ')
        : 'none (no mem= or memmap= reservation found)',
  );

  // Huge pages.
  const hpDir = at('sys/kernel/mm/hugepages');
  const hpSizes = list(hpDir).map((n) => /^hugepages-(\d+)kB$/.exec(n)).filter((m): m is RegExpExecArray => m !== null);
  const hp = hpSizes.map((m) => {
    const num = (f: string) => Number(read(join(hpDir, m[0], f))?.trim() ?? 0) || 0;
    return { size: Number(m[1]) * 1024, total: num('nr_hugepages'), free: Math.max(0, num('free_hugepages') - num('resv_hugepages')) };
  });
  const hpFree = hp.filter((h) => h.free > 0);
  add(
    'huge pages',
    hp.length === 0 ? 'no' : hpFree.length ? 'ok' : 'info',
    hp.length === 0 ? 'not supported by this kernel (no /sys/kernel/mm/hugepages)' : hp.map((h) => `${formatSize(h.size)}: ${h.total} reserved, ${h.free} free`).join('; '),
  );

  // u-dma-buf.
  const udmaDevices = ['u-dma-buf', 'udmabuf'].flatMap((cls) => list(at('sys/class', cls)));
  const udmaModule = existsSync(at('sys/module/u_dma_buf'));
  const udmaAccessible = udmaDevices.filter((d) => canReadWrite(at('dev', d)));
  add(
    'u-dma-buf',
    udmaDevices.length ? (udmaAccessible.length ? 'ok' : 'no') : 'no',
    udmaDevices.length
      ? `${udmaDevices.join(', ')}${udmaAccessible.length < udmaDevices.length ? ` (no read-write access to /dev/${udmaDevices.filter((d) => !udmaAccessible.includes(d)).join(', /dev/')})` : ''}`
      : udmaModule
        ? 'module loaded, no devices'
        : 'module not loaded (no /sys/class/u-dma-buf)',
  );

  // IOMMU and VFIO.
  const iommus = list(at('sys/class/iommu'));
  const groups = list(at('sys/kernel/iommu_groups'));
  const types = new Map<string, number>();
  for (const g of groups) {
    const t = read(at('sys/kernel/iommu_groups', g, 'type'))?.trim() ?? 'unknown';
    types.set(t, (types.get(t) ?? 0) + 1);
  }
  const typeText = [...types].map(([t, n]) => `${n} ${t}`).join(', ');
  add(
    'IOMMU',
    groups.length ? 'ok' : 'no',
    groups.length
      ? `${groups.length} group(s) (${typeText})${iommus.length ? `; units: ${iommus.join(', ')}` : ''}`
      : iommus.length
        ? `units ${iommus.join(', ')} but no groups: boot with intel_iommu=on or amd_iommu=on`
        : 'off or absent: no /sys/kernel/iommu_groups entries (enable VT-d/AMD-Vi in firmware, boot with intel_iommu=on)',
  );
  const vfioPciDir = at('sys/bus/pci/drivers/vfio-pci');
  const vfioPci = existsSync(vfioPciDir);
  const bound = list(vfioPciDir).filter((n) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(n));
  const container = at('dev/vfio/vfio');
  const hasContainer = existsSync(container);
  const boundGroups = bound.map((bdf) => {
    let group: string | undefined;
    try {
      group = readlinkSync(at('sys/bus/pci/devices', bdf, 'iommu_group')).split('/').pop();
    } catch {
      group = undefined;
    }
    const dev = group === undefined ? undefined : at('dev/vfio', group);
    return { bdf, group, accessible: dev !== undefined && canReadWrite(dev) };
  });
  const vfioConfig = cfg('CONFIG_VFIO_PCI') ?? cfg('CONFIG_VFIO');
  add(
    'vfio-pci',
    vfioPci && hasContainer ? 'ok' : 'no',
    (vfioPci ? 'loaded' : `not loaded${vfioConfig === 'n' ? ` (the kernel has no VFIO: ${config!.source})` : ''}`) +
      (hasContainer ? ', /dev/vfio/vfio present' : ', no /dev/vfio/vfio') +
      (bound.length ? `; bound: ${boundGroups.map((b) => `${b.bdf} (group ${b.group ?? '?'}${b.accessible ? '' : ', no access to its /dev/vfio file'})`).join(', ')}` : '; no device bound'),
  );

  // The lock directory: devmem, udmabuf and keyed fake pools lock their memory there.
  const lockDir = resolveLockDir(o.lockDir);
  const lockDirOk = existsSync(lockDir) ? canReadWrite(lockDir) : canReadWrite(dirname(lockDir));
  add(
    'lock directory',
    lockDirOk ? 'ok' : 'no',
    `${lockDir}: ${existsSync(lockDir) ? (lockDirOk ? 'writable' : 'not writable by this user') : lockDirOk ? 'created on first use' : `missing, and ${dirname(lockDir)} is not writable`}` +
      (lockDirOk ? '' : ` (set PHYSMEM_LOCK_DIR or lockDir to a directory of your own)`),
  );

  // Locked memory limit: VFIO pins DMA memory against it, hugepage mlocks.
  const limits = read(at('proc/self/limits'));
  const memlock = limits === undefined ? undefined : /^Max locked memory\s+(\S+)/m.exec(limits)?.[1];
  if (memlock !== undefined) add('locked memory limit', 'info', memlock === 'unlimited' ? 'unlimited' : `${formatSize(Number(memlock))} (RLIMIT_MEMLOCK; VFIO and the hugepage backend lock their memory, root is exempt)`);

  // Per backend.
  const backends: BackendReadiness[] = [];
  const devmem = ((): BackendReadiness => {
    if (!hasDevmem) return { backend: 'devmem', ready: false, reason: 'no /dev/mem on this kernel (CONFIG_DEVMEM off)', todo: 'use the hugepage, udmabuf or vfio backend (reserving memory cannot help without /dev/mem), or a kernel built with CONFIG_DEVMEM=y' };
    if (lockdown !== undefined && lockdown !== 'none') return { backend: 'devmem', ready: false, reason: `kernel lockdown (${lockdown}) refuses /dev/mem`, todo: 'boot with lockdown=none, or without Secure Boot; else use the hugepage, udmabuf or vfio backend' };
    if (!isRoot) return { backend: 'devmem', ready: false, reason: '/dev/mem needs root', todo: 'run as root (CAP_SYS_RAWIO)' };
    if (found.regions.length === 0) return { backend: 'devmem', ready: false, reason: 'no reserved memory', todo: 'reserve memory with mem= or memmap= and reboot: `physmem regions` computes the option for this machine' };
    return { backend: 'devmem', ready: true, reason: `${formatSize(Number(reservedBytes))} reserved in ${found.regions.length} region(s)` };
  })();
  backends.push(devmem);
  backends.push(
    ((): BackendReadiness => {
      if (hp.length === 0) return { backend: 'hugepage', ready: false, reason: 'no huge page support in this kernel', todo: 'use a kernel with CONFIG_HUGETLBFS=y' };
      if (!isRoot) return { backend: 'hugepage', ready: false, reason: 'physical addresses in /proc/self/pagemap are shown to root only', todo: 'run as root (CAP_SYS_ADMIN)' };
      if (hpFree.length === 0) return { backend: 'hugepage', ready: false, reason: 'no free huge pages', todo: 'reserve some, no reboot: echo 8 > /proc/sys/vm/nr_hugepages' };
      return { backend: 'hugepage', ready: true, reason: hpFree.map((h) => `${h.free} free of ${formatSize(h.size)}`).join(', ') };
    })(),
  );
  backends.push(
    udmaDevices.length === 0
      ? { backend: 'udmabuf', ready: false, reason: udmaModule ? 'u-dma-buf loaded with no devices' : 'u-dma-buf module not loaded', todo: 'load it with a buffer: insmod u-dma-buf.ko udmabuf0=4194304 (docs/udmabuf.md)' }
      : udmaAccessible.length === 0
        ? { backend: 'udmabuf', ready: false, reason: `no read-write access to /dev/${udmaDevices.join(', /dev/')}`, todo: 'run as root, or give your user access with a udev rule (docs/udmabuf.md)' }
        : { backend: 'udmabuf', ready: true, reason: `devices ${udmaAccessible.join(', ')}` },
  );
  backends.push(
    vfioConfig === 'n'
      ? { backend: 'vfio', ready: false, reason: `this kernel has no VFIO (${config!.source})`, todo: 'use a kernel with CONFIG_VFIO_PCI (Debian\'s has it as a module) and the IOMMU on' }
      : groups.length === 0
      ? { backend: 'vfio', ready: false, reason: 'no IOMMU groups', todo: 'enable the IOMMU (VT-d / AMD-Vi in firmware, intel_iommu=on or amd_iommu=on on the kernel command line) and reboot' }
      : !vfioPci || !hasContainer
        ? { backend: 'vfio', ready: false, reason: 'vfio-pci not loaded', todo: 'modprobe vfio-pci' }
        : bound.length === 0
          ? { backend: 'vfio', ready: false, reason: 'no device bound to vfio-pci', todo: 'bind your device: echo vfio-pci > /sys/bus/pci/devices/<bdf>/driver_override, then echo <bdf> > /sys/bus/pci/drivers_probe' }
          : !boundGroups.some((b) => b.accessible)
            ? { backend: 'vfio', ready: false, reason: 'no access to the /dev/vfio/<group> files of the bound devices', todo: 'run as root, or chown the group file to your user (a udev rule)' }
            : { backend: 'vfio', ready: true, reason: `bound: ${boundGroups.filter((b) => b.accessible).map((b) => b.bdf).join(', ')}` },
  );
  backends.push({ backend: 'fake', ready: true, reason: 'always (memfd memory no device can reach: for tests and CI)' });

  const mark = { ok: 'ok', no: '--', unknown: '??', info: '  ' } as const;
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines = ['Checks:', ...checks.map((c) => `  ${mark[c.status]} ${c.name.padEnd(width)}  ${c.detail}`), '', 'Backends:'];
  for (const b of backends) {
    lines.push(`  ${b.backend.padEnd(8)} ${b.ready ? 'ready' : 'not ready'}: ${b.reason}`);
    if (b.todo) lines.push(`           to do: ${b.todo}`);
  }
  return { json: { checks, backends }, text: lines.join('\n') };
}
