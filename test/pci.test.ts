// physmem/pci on the host. The device logic runs against a fake sysfs tree
// under a temp dir (regular files stand in for config, enable and
// resource<n>: a regular file can be mmapped like a BAR); the real edu device
// is exercised in the guest (test/vm/edu.guest.test.ts). Reads of this
// machine's real config space run where PCI devices exist.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { PciDevice, listPciDevices, normalizeBdf, parseResourceFile, type Mmio } from '../lib/pci/index.js';
import { IO, MEM, MEM64_PREFETCH, makeSysfs, type FakeDevice } from './helpers/fake-sysfs.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const EDU_LIKE: FakeDevice = {
  bdf: '0000:00:05.0',
  vendor: 0x1234,
  device: 0x11e8,
  resources: [
    [0xfea00000n, 0xfeafffffn, MEM],
    [0n, 0n, 0],
    [0xfe000000n, 0xfe003fffn, MEM64_PREFETCH],
    [0n, 0n, 0],
    [0xc000n, 0xc01fn, IO],
  ],
  barFiles: { resource0: 1 << 20, resource2: 0x4000, resource2_wc: 0x4000, resource4: 32 },
};

let root: string;
let opened: PciDevice[] = [];
function open(bdf = EDU_LIKE.bdf): PciDevice {
  const d = PciDevice.open(bdf, { sysfsRoot: root });
  opened.push(d);
  return d;
}
function configBytes(bdf = EDU_LIKE.bdf): Buffer {
  return fs.readFileSync(path.join(root, 'bus/pci/devices', bdf, 'config'));
}
function barBytes(name: string, bdf = EDU_LIKE.bdf): Buffer {
  return fs.readFileSync(path.join(root, 'bus/pci/devices', bdf, name));
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-sysfs-'));
  fs.chmodSync(root, 0o755); // the non-root child below must be able to look inside
  process.env.PHYSMEM_LOCK_DIR = path.join(root, 'locks'); // device locks of the fake tree stay in it
  makeSysfs(root, [
    EDU_LIKE,
    { bdf: '0000:00:02.0', vendor: 0x1234, device: 0x1111, classCode: 0x030000 },
    { bdf: '0000:00:06.0', vendor: 0x1234, device: 0x11e8, enable: '1\n' },
  ]);
});
afterEach(() => {
  opened.forEach((d) => d.close());
  opened = [];
  fs.rmSync(root, { recursive: true, force: true });
});

describe('PCI addresses and resource tables (pure parsing)', () => {
  it('normalizes PCI addresses and refuses anything else, including paths', () => {
    expect(normalizeBdf('00:04.0')).toBe('0000:00:04.0');
    expect(normalizeBdf('0000:0A:1F.7')).toBe('0000:0a:1f.7');
    for (const bad of ['', '0000:00:04.8', '0000:00:20.0', '../../../etc', '0000:00:04', '00:04.0/../x']) {
      expect(() => normalizeBdf(bad)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
  });

  it('parses memory, 64-bit prefetchable, I/O and unused BARs with inclusive ends', () => {
    const r = parseResourceFile(
      '0x00000000fea00000 0x00000000feafffff 0x0000000000040200\n' +
        '0x0000000000000000 0x0000000000000000 0x0000000000000000\n' +
        '0x000000fe00000000 0x000000fe00003fff 0x000000000014220c\n' +
        '0x000000000000c040 0x000000000000c05f 0x0000000000040101\n',
    );
    expect(r.map((x) => [x.index, x.kind, x.size, x.prefetchable, x.is64])).toEqual([
      [0, 'memory', 0x100000n, false, false],
      [1, 'unused', 0n, false, false],
      [2, 'memory', 0x4000n, true, true],
      [3, 'io', 0x20n, false, false],
    ]);
    expect(r[2].start).toBe(0xfe00000000n);
    expect(() => parseResourceFile('0x0 0x1\n')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('PciDevice against a fake sysfs tree', () => {
  it('finds devices by vendor and device ID in address order, and says what exists when nothing matches', () => {
    expect(listPciDevices({ sysfsRoot: root, vendor: 0x1234, device: 0x11e8 }).map((d) => d.bdf)).toEqual(['0000:00:05.0', '0000:00:06.0']);
    const second = PciDevice.find({ vendor: 0x1234, device: 0x11e8, index: 1, sysfsRoot: root });
    opened.push(second);
    expect(second.bdf).toBe('0000:00:06.0');
    const err = throwsWith(() => PciDevice.find({ vendor: 0x8086, device: 0x1234, sysfsRoot: root }), 'ENOENT');
    expect(err.message).toMatch(/no PCI device 8086:1234.*present: 0000:00:02\.0 1234:1111 class 0x030000, 0000:00:05\.0 1234:11e8 class 0x00ff00/);
    expect(() => PciDevice.find({ vendor: 0x12345, device: 1, sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('opens by address (short form too) and reads the identity; an unknown address is ENOENT', () => {
    const d = open('00:05.0');
    expect(d).toMatchObject({ bdf: '0000:00:05.0', vendor: 0x1234, device: 0x11e8, classCode: 0xff00, revision: 0x10, subsystemVendor: 0x1af4, configSize: 256 });
    expect(d.driver).toBeUndefined();
    expect(d.resources.slice(0, 6).map((r) => r.kind)).toEqual(['memory', 'unused', 'memory', 'unused', 'io', 'unused']);
    expect(() => PciDevice.open('0000:00:1f.0', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'ENOENT', path: expect.stringContaining('0000:00:1f.0') }));
  });

  it('reads config space little-endian at each width; 32-bit reads are unsigned', () => {
    const cfg = Buffer.alloc(256);
    cfg.writeUInt32LE(0xfedcba98, 0x40);
    fs.writeFileSync(path.join(root, 'bus/pci/devices/0000:00:05.0/config'), cfg);
    const d = open();
    expect(d.readConfig32(0x40)).toBe(0xfedcba98);
    expect(d.readConfig16(0x42)).toBe(0xfedc);
    expect(d.readConfig8(0x41)).toBe(0xba);
  });

  it('writes exactly the bytes of the width asked, at the offset asked', () => {
    const d = open();
    const before = configBytes();
    d.writeConfig16(0x04, 0xbeef);
    d.writeConfig8(0x3c, 0x0b);
    d.writeConfig32(0x44, 0x80000001);
    const after = configBytes();
    const changed = [...after.keys()].filter((i) => after[i] !== before[i]);
    expect(changed).toEqual([0x04, 0x05, 0x3c, 0x44, 0x47]);
    expect(after.readUInt16LE(4)).toBe(0xbeef);
    expect(after.readUInt16LE(6)).toBe(0x0010); // status untouched
    expect(d.readConfig32(0x44)).toBe(0x80000001);
  });

  it('refuses misaligned, out-of-range and non-integer config offsets and values', () => {
    const d = open();
    expect(() => d.readConfig16(3)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.readConfig32(256)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => d.readConfig8(-1)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => d.readConfig8(1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.writeConfig8(0, 256)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.writeConfig32(0, -1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('sets and clears only the bus-master bit of the command register', () => {
    const d = open();
    expect(d.busMaster).toBe(false);
    d.setBusMaster(true);
    expect(configBytes().readUInt16LE(4)).toBe(0x0007);
    expect(d.busMaster).toBe(true);
    d.setBusMaster(false);
    expect(configBytes().readUInt16LE(4)).toBe(0x0003);
    expect(configBytes().readUInt16LE(6)).toBe(0x0010);
  });

  it('enables through sysfs `enable` only when disabled, so the kernel count is not raised twice', () => {
    const d = open();
    expect(d.enabled).toBe(false);
    d.enable();
    expect(fs.readFileSync(path.join(d.path, 'enable'), 'utf8')).toBe('1');
    const already = open('0000:00:06.0');
    already.enable();
    expect(fs.readFileSync(path.join(already.path, 'enable'), 'utf8')).toBe('1\n'); // not rewritten
    already.disable();
    expect(fs.readFileSync(path.join(already.path, 'enable'), 'utf8')).toBe('0');
  });

  it('maps a memory BAR: writes of each width land at their offset, reads come back', () => {
    const d = open();
    const m = d.mapBar(0);
    expect(m).toMatchObject({ size: 1 << 20, bar: 0, phys: 0xfea00000n, writeCombining: false });
    m.write32(0x10, 0xdeadbeef);
    m.write16(0x20, 0xcafe);
    m.write8(0x31, 0x7f);
    m.write64(0xff8, 0x0123456789abcdefn);
    m.write32(0x40, ~0x0f); // a negative int32 from ~ is stored as its two's complement
    m.write64(0x48, -2n);
    const bytes = barBytes('resource0');
    expect(bytes.readUInt32LE(0x10)).toBe(0xdeadbeef);
    expect(bytes.readUInt16LE(0x20)).toBe(0xcafe);
    expect(bytes[0x31]).toBe(0x7f);
    expect(bytes[0x30]).toBe(0);
    expect(bytes.readBigUInt64LE(0xff8)).toBe(0x0123456789abcdefn);
    expect(bytes.readUInt32LE(0x40)).toBe(0xfffffff0);
    expect(m.read32(0x40)).toBe(0xfffffff0); // unsigned
    expect(m.read64(0x48)).toBe(0xfffffffffffffffen);
    expect(m.read16(0x20)).toBe(0xcafe);
    expect(m.read8(0x31)).toBe(0x7f);
    expect(m.read32(0xffffc)).toBe(0); // the last word is reachable
  });

  it('refuses misaligned, out-of-range and non-integer MMIO offsets and bad values with typed errors', () => {
    const m = open().mapBar(0);
    expect(() => m.read32(2)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/multiple of 4/) }));
    expect(() => m.read64(4)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.read16(1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.read8(0.5)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/integer/) }));
    expect(() => m.read32(Number.NaN)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.read32(1 << 20)).toThrow(expect.objectContaining({ code: 'ERANGE', message: expect.stringMatching(/outside the BAR of 1048576 bytes/) }));
    expect(() => m.read8(-1)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => m.write32(0, 2 ** 32)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.write8(0, 256)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.write16(0, 1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.write64(0, 2n ** 64n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error a number where a bigint belongs
    expect(() => m.write64(0, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('maps resource<n>_wc only when asked and present', () => {
    const d = open();
    const wc = d.mapBar(2, { writeCombining: true });
    expect(wc.writeCombining).toBe(true);
    expect(wc.path.endsWith('resource2_wc')).toBe(true);
    wc.write32(0, 0x11223344);
    expect(barBytes('resource2_wc').readUInt32LE(0)).toBe(0x11223344);
    const plain = d.mapBar(2);
    expect(plain.writeCombining).toBe(false);
    expect(plain.read32(0)).toBe(0); // a different file: resource2
    const fallback = d.mapBar(0, { writeCombining: true }); // no resource0_wc: uncached
    expect(fallback.writeCombining).toBe(false);
  });

  it('says an I/O-port BAR cannot be mapped (ENOTSUP), an absent one is ENOENT, and a BAR number outside 0-5 is EINVAL', () => {
    const d = open();
    expect(() => d.mapBar(4)).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/I\/O-port BAR.*only memory BARs/) }));
    expect(() => d.mapBar(1)).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/BAR 1 .* not implemented.*BAR 0 memory 1048576 bytes/) }));
    expect(() => d.mapBar(6)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('closing the device unmaps its BARs (later accesses are EBADF) and is idempotent', () => {
    const d = open();
    const m: Mmio = d.mapBar(0);
    m.write32(0, 1);
    d.close();
    expect(m.closed).toBe(true);
    expect(() => m.read32(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => d.readConfig8(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => d.mapBar(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => d.close()).not.toThrow();
  });
});

// Runs a script as uid nobody through the compiled library in dist/ (built by
// `npm test` / `tsc -p tsconfig.json`), returning its JSON output.
function runAsNobody(script: string): { code?: string; message?: string; [k: string]: unknown } {
  const dist = path.join(REPO, 'dist/lib/pci/index.js');
  const src = path.join(REPO, 'lib/pci/device.ts');
  if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < fs.statSync(src).mtimeMs) {
    throw new Error('dist/ is missing or older than lib/: run `npx tsc -p tsconfig.json` first');
  }
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: '/',
  });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as { code?: string; message?: string };
}

const canDropRoot = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;

describe.skipIf(!canDropRoot)('PciDevice as a non-root user (real permission checks, fake sysfs files)', () => {
  it('reads the identity but gets EACCES with "run as root" for BARs and config writes', () => {
    const out = runAsNobody(`
      import { PciDevice } from ${JSON.stringify(path.join(REPO, 'dist/lib/pci/index.js'))};
      const d = PciDevice.open('0000:00:05.0', { sysfsRoot: ${JSON.stringify(root)} });
      const res = { vendor: d.vendor, config0: d.readConfig16(0) };
      for (const [k, f] of [['bar', () => d.mapBar(0)], ['cfg', () => d.writeConfig16(4, 7)], ['bm', () => d.setBusMaster(true)]]) {
        try { f(); res[k] = 'no error'; } catch (e) { res[k] = { code: e.code, message: e.message, name: e.name }; }
      }
      console.log(JSON.stringify(res));`);
    expect(out.vendor).toBe(0x1234);
    expect(out.config0).toBe(0x1234);
    for (const k of ['bar', 'cfg', 'bm']) {
      expect(out[k]).toMatchObject({ code: 'EACCES', name: 'PhysmemError', message: expect.stringMatching(/run as root/) });
    }
  });
});

const realDevices = listPciDevices();
describe.skipIf(realDevices.length === 0)("this machine's real PCI devices", () => {
  it('config space starts with the vendor and device IDs sysfs reports', () => {
    for (const info of realDevices) {
      const d = PciDevice.open(info.bdf);
      try {
        expect(d.readConfig16(0)).toBe(info.vendor);
        expect(d.readConfig16(2)).toBe(info.device);
        expect(d.readConfig32(0)).toBe(((info.device << 16) | info.vendor) >>> 0);
        expect(d.readConfig8(0x0b)).toBe(info.classCode >>> 16);
      } finally {
        d.close();
      }
    }
  });
});
