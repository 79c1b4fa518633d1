import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { runDoctor, type DoctorReport } from '../lib/cli/doctor.js';

const FIX = fileURLToPath(new URL('./fixtures/discovery/', import.meta.url));
const BIN = fileURLToPath(new URL('../dist/lib/cli/bin.js', import.meta.url));
const REL = '6.1.0-test-amd64';

let root: string;
afterEach(() => rmSync(root, { recursive: true, force: true }));

function put(path: string, text: string | Buffer): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text);
}
const check = (r: DoctorReport, name: string) => r.checks.find((c) => c.name === name)!;
const backend = (r: DoctorReport, name: string) => r.backends.find((b) => b.backend === name)!;

/** A fake machine where every backend has what it needs (a recorded QEMU mem=384M tree plus made-up sysfs). */
function readyMachine(): void {
  root = mkdtempSync(join(tmpdir(), 'physmem-doctor-'));
  cpSync(join(FIX, 'qemu-pc-mem384'), root, { recursive: true });
  put('dev/mem', '');
  put(`boot/config-${REL}`, 'CONFIG_DEVMEM=y\nCONFIG_STRICT_DEVMEM=y\nCONFIG_IO_STRICT_DEVMEM=y\nCONFIG_VFIO_PCI=m\n');
  put('sys/kernel/security/lockdown', '[none] integrity confidentiality\n');
  put('sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', '8\n');
  put('sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', '6\n');
  put('sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages', '1\n');
  put('sys/class/u-dma-buf/udmabuf0/phys_addr', '0x3f000000\n');
  put('dev/udmabuf0', '');
  for (const [g, type] of [['0', 'DMA'], ['1', 'DMA-FQ'], ['2', 'identity']]) put(`sys/kernel/iommu_groups/${g}/type`, `${type}\n`);
  mkdirSync(join(root, 'sys/class/iommu/dmar0'), { recursive: true });
  mkdirSync(join(root, 'run'));
  mkdirSync(join(root, 'sys/bus/pci/drivers/vfio-pci/0000:00:04.0'), { recursive: true });
  mkdirSync(join(root, 'sys/bus/pci/devices/0000:00:04.0'), { recursive: true });
  symlinkSync('../../../kernel/iommu_groups/1', join(root, 'sys/bus/pci/devices/0000:00:04.0/iommu_group'));
  put('dev/vfio/vfio', '');
  put('dev/vfio/1', '');
  put('proc/self/limits', 'Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n');
}

describe('physmem doctor on fake sysfs/proc trees', () => {
  it('a machine with everything: each check ok and every backend ready', () => {
    readyMachine();
    const r = runDoctor({ root, uid: 0, kernelRelease: REL, checkAddon: false, lockDir: join(root, 'run/physmem') }).json;
    expect(r.backends.map((b) => [b.backend, b.ready])).toEqual([
      ['devmem', true],
      ['hugepage', true],
      ['udmabuf', true],
      ['vfio', true],
      ['fake', true],
    ]);
    expect(r.backends.every((b) => b.todo === undefined)).toBe(true);
    expect(check(r, 'STRICT_DEVMEM').detail).toMatch(/^CONFIG_STRICT_DEVMEM=y, CONFIG_IO_STRICT_DEVMEM=y \(\/boot\/config-6\.1\.0-test-amd64\)/);
    expect(check(r, 'lockdown')).toMatchObject({ status: 'ok', detail: 'none' });
    expect(check(r, 'reserved memory')).toMatchObject({ status: 'ok', detail: expect.stringContaining('0x18000000-0x1ffdffff (above-mem-limit)') });
    expect(check(r, 'huge pages').detail).toBe('2 MiB: 8 reserved, 5 free');
    expect(check(r, 'IOMMU').detail).toBe('3 group(s) (1 DMA, 1 DMA-FQ, 1 identity); units: dmar0');
    expect(check(r, 'vfio-pci').detail).toBe('loaded, /dev/vfio/vfio present; bound: 0000:00:04.0 (group 1)');
    expect(check(r, 'locked memory limit').detail).toMatch(/^8 MiB/);
    expect(check(r, 'lock directory')).toMatchObject({ status: 'ok', detail: `${join(root, 'run/physmem')}: created on first use` });
  });

  it('each backend says the one thing to do, the most basic first', () => {
    readyMachine();
    rmSync(join(root, 'sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages'));
    rmSync(join(root, 'dev/udmabuf0'));
    rmSync(join(root, 'sys/bus/pci/drivers/vfio-pci/0000:00:04.0'), { recursive: true });
    put('sys/kernel/security/lockdown', 'none [integrity] confidentiality\n');
    const r = runDoctor({ root, uid: 0, kernelRelease: REL, checkAddon: false }).json;
    expect(backend(r, 'devmem')).toMatchObject({ ready: false, reason: 'kernel lockdown (integrity) refuses /dev/mem', todo: expect.stringContaining('lockdown=none') });
    expect(backend(r, 'hugepage')).toMatchObject({ ready: false, reason: 'no free huge pages', todo: 'reserve some, no reboot: echo 8 > /proc/sys/vm/nr_hugepages' });
    expect(backend(r, 'udmabuf')).toMatchObject({ ready: false, todo: expect.stringContaining('udev rule') });
    expect(backend(r, 'vfio')).toMatchObject({ ready: false, reason: 'no device bound to vfio-pci', todo: expect.stringContaining('driver_override') });
    // Not root: devmem and hugepage need it, whatever else is there.
    const user = runDoctor({ root, uid: 1000, kernelRelease: REL, checkAddon: false }).json;
    expect(check(user, 'user')).toMatchObject({ status: 'info', detail: expect.stringContaining('uid 1000, not root') });
    expect(backend(user, 'hugepage')).toMatchObject({ ready: false, todo: 'run as root (CAP_SYS_ADMIN)' });
  });

  it('a bare kernel without /dev/mem: says so first and points at the other backends, never at reserving memory', () => {
    root = mkdtempSync(join(tmpdir(), 'physmem-doctor-'));
    cpSync(join(FIX, 'qemu-pc-plain'), root, { recursive: true });
    put('proc/config.gz', gzipSync('# CONFIG_DEVMEM is not set\n# CONFIG_STRICT_DEVMEM is not set\n# CONFIG_VFIO is not set\n'));
    const { json: r, text } = runDoctor({ root, uid: 0, kernelRelease: REL, checkAddon: false });
    expect(check(r, '/dev/mem')).toMatchObject({ status: 'no', detail: 'missing: the kernel was built without CONFIG_DEVMEM (/proc/config.gz says so)' });
    expect(check(r, 'STRICT_DEVMEM').detail).toMatch(/^not set \(\/proc\/config\.gz\)/);
    expect(check(r, 'lockdown').status).toBe('unknown');
    expect(backend(r, 'devmem')).toMatchObject({ ready: false, reason: 'no /dev/mem on this kernel (CONFIG_DEVMEM off)' });
    expect(backend(r, 'devmem').todo).toMatch(/^use the hugepage, udmabuf or vfio backend/);
    expect(backend(r, 'hugepage')).toMatchObject({ ready: false, todo: 'use a kernel with CONFIG_HUGETLBFS=y' });
    expect(backend(r, 'vfio')).toMatchObject({ ready: false, reason: 'this kernel has no VFIO (/proc/config.gz)' });
    expect(backend(r, 'fake').ready).toBe(true);
    expect(text).not.toMatch(/reboot|physmem regions/);
    expect(text).toMatch(/^ {2}devmem {3}not ready: no \/dev\/mem/m);
  });

  it('no kernel config anywhere: STRICT_DEVMEM is "unknown"', () => {
    root = mkdtempSync(join(tmpdir(), 'physmem-doctor-'));
    const r = runDoctor({ root, uid: 0, kernelRelease: REL, checkAddon: false }).json;
    expect(check(r, 'STRICT_DEVMEM')).toMatchObject({ status: 'unknown', detail: expect.stringMatching(/^unknown/) });
  });
});

describe('physmem doctor on this machine', () => {
  it('runs, reports every backend, and agrees with what is really there', () => {
    root = mkdtempSync(join(tmpdir(), 'physmem-doctor-')); // unused; afterEach removes it
    const r = spawnSync(process.execPath, [BIN, 'doctor', '--json'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout) as DoctorReport;
    expect(rep.backends.map((b) => b.backend)).toEqual(['devmem', 'hugepage', 'udmabuf', 'vfio', 'fake']);
    expect(check(rep, '/dev/mem').detail.startsWith('missing')).toBe(!existsSync('/dev/mem'));
    expect(check(rep, 'native addon').status).toBe('ok');
    if (!existsSync('/dev/mem')) expect(backend(rep, 'devmem').ready).toBe(false);
    expect(backend(rep, 'fake').ready).toBe(true);
  });
});

describe('a kernel without /dev/mem: what is missing comes first, not advice to reserve memory', () => {
  it("openPoolSync({ backend: 'devmem' }) says ENOENT and names the other backends, even where no memory is reserved", async () => {
    root = mkdtempSync(join(tmpdir(), 'physmem-doctor-'));
    cpSync(join(FIX, 'qemu-pc-plain'), root, { recursive: true }); // nothing reserved: discovery alone would say ENOMEM
    const { openPoolSync } = await import('../lib/index.js');
    const err = throwsWith(() => openPoolSync({ backend: 'devmem', discoveryRoot: root, devicePath: join(root, 'dev/mem') }), 'ENOENT');
    expect(err.message).toMatch(/^ENOENT: no such file or directory, open '.*\/dev\/mem'\. this kernel has no \/dev\/mem \(built without CONFIG_DEVMEM\)/);
    expect(err.message).toMatch(/Use instead: backend 'hugepage'.*'udmabuf'.*'vfio'/);
    expect(err.message).not.toMatch(/physmem regions|memmap=/);
  });

  it('physmem regions starts with the missing /dev/mem and gives no mem=/memmap= advice', async () => {
    root = mkdtempSync(join(tmpdir(), 'physmem-doctor-'));
    const { runRegions } = await import('../lib/cli/regions.js');
    const fixture = join(FIX, 'qemu-pc-plain');
    const withDevmem = runRegions({ root: fixture, devMemPath: BIN }); // any existing file stands for /dev/mem
    expect(withDevmem.text).toContain('memmap=');
    const without = runRegions({ root: fixture, devMemPath: join(root, 'dev/mem') });
    expect(without.text.split('\n')[0]).toMatch(/^This kernel has no .*\/dev\/mem \(built without CONFIG_DEVMEM\): the devmem backend cannot work/);
    expect(without.text).not.toMatch(/mem=|memmap=|reboot\./);
    expect(without.json).toMatchObject({ devMem: { present: false }, advice: null });
  });
});
