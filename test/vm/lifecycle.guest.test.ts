// Runs inside the VM (scripts/vm/run.mjs): physmem/pci's device lifecycle on
// a real kernel. A device the kernel's nvme driver holds gives errors naming
// the driver and is unbound, rebound and restored; a userspace edu driver
// killed with -9 in the middle of a DMA loop leaves edu doing DMA, and the
// next program's pool is protected from it (and, with the protection off,
// is not: the corruption is shown).
import { randomFillSync } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runStat } from '../../lib/cli/stat.js';
import { openPoolSync } from '../../lib/index.js';
import { PCI_COMMAND_MASTER, PciDevice, findOrphanedBusMasters, listPciDevices, type Mmio } from '../../lib/pci/index.js';
import { startLineChild } from '../helpers/child.js';
import { guestConfig, inGuest } from './guest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cfg = inGuest ? guestConfig() : undefined;
const LOOP = path.join(REPO, 'test/vm/fixtures/edu-dma-loop.mjs');

describe.skipIf(!inGuest || !cfg?.nvme)('a device the kernel nvme driver holds', () => {
  const nvmeBdf = () => listPciDevices({ classCode: 0x010802 })[0]?.bdf;

  it('mapBar, enable and setBusMaster name the driver and how to release it', () => {
    const dev = PciDevice.find({ classCode: 0x010802 });
    try {
      expect(dev.driver).toBe('nvme');
      const release = new RegExp(`bound to the kernel driver nvme.*echo ${dev.bdf} > /sys/bus/pci/drivers/nvme/unbind`);
      expect(() => dev.mapBar(0)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(release) }));
      expect(() => dev.enable()).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(release) }));
      expect(() => dev.setBusMaster(false)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
      expect(dev.busMaster).toBe(true); // the kernel driver's DMA was left alone
    } finally {
      dev.close();
    }
    expect(fs.readdirSync('/sys/class/nvme')).toContain('nvme0');
  });

  it('unbindDriver releases it (registers readable, FLR works), bindDriver pins a driver, restoreDriver gives it back', () => {
    const bdf = nvmeBdf();
    const dev = PciDevice.open(bdf);
    try {
      expect(dev.unbindDriver()).toBe('nvme');
      expect(dev.driver).toBeUndefined();
      expect(fs.existsSync('/sys/class/nvme/nvme0')).toBe(false);
      dev.enable();
      const regs: Mmio = dev.mapBar(0);
      expect(regs.read32(0x08)).toBe(0x00010400); // VS: NVMe 1.4, as QEMU 7.2's controller reports
      expect(regs.read64(0x00) & 0xffffn).toBeGreaterThan(0n); // CAP.MQES
      regs.close();
      dev.reset(); // the kernel offers FLR for it
      expect(dev.busMaster).toBe(false);
      dev.bindDriver('nvme');
      expect(dev.driver).toBe('nvme');
      expect(fs.readFileSync(path.join(dev.path, 'driver_override'), 'utf8').trim()).toBe('nvme');
      expect(() => dev.bindDriver('no-such-driver')).toThrow(expect.objectContaining({ code: 'ENODEV', message: expect.stringMatching(/modprobe no-such-driver/) }));
      expect(dev.restoreDriver()).toBe('nvme');
      expect(fs.readFileSync(path.join(dev.path, 'driver_override'), 'utf8').trim()).toBe('(null)');
    } finally {
      dev.close();
    }
    expect(fs.readdirSync('/sys/class/nvme').length).toBe(1);
  });
});

// ---------------------------------------------------------------------------

const EDU = { vendor: 0x1234, device: 0x11e8 };
const eduBdf = () => listPciDevices(EDU)[0].bdf;
const command = (bdf: string) => fs.readFileSync(`/sys/bus/pci/devices/${bdf}/config`).readUInt16LE(4);
const REGION = { start: 0x18000000n, size: 2n << 20n }; // what the driver's pool holds
const children = new Set<ChildProcess>();

async function startDriver(mode: 'physmem' | 'raw'): Promise<{ child: ChildProcess; target: bigint; exit: Promise<number | null> }> {
  const c = startLineChild([LOOP, mode], { track: children });
  const line = await c.line();
  const r = JSON.parse(line) as { ok: boolean; target: string };
  expect(r.ok, c.stderr()).toBe(true);
  return { child: c.child, target: BigInt(r.target), exit: c.exit };
}

/** With edu's registers mapped (no lock taken, nothing quiesced, bus mastering kept), run `fn`. */
function withEduRegs<T>(fn: (regs: Mmio) => T): T {
  const dev = PciDevice.find({ ...EDU, lock: false });
  try {
    return fn(dev.mapBar(0));
  } finally {
    dev.close({ keepBusMaster: true });
  }
}

const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
function waitIdle(regs: Mmio): void {
  for (let i = 0; i < 5000 && regs.read32(0x98) & 1; i++) sleep(1);
  expect(regs.read32(0x98) & 1).toBe(0);
}

/**
 * The dead driver's device keeps going: fire the transfer it left programmed
 * (edu -> its target) once more. Stands in for what a NIC's receive ring or an
 * NVMe completion queue does on its own; edu only moves data when told to.
 */
function strayDma(expectTarget: bigint): void {
  withEduRegs((regs) => {
    waitIdle(regs);
    expect(regs.read64(0x88)).toBe(expectTarget); // the destination the dead driver programmed
    regs.write32(0x98, 3); // start, device -> RAM
    waitIdle(regs);
  });
}

function captureWarnings(): { codes: () => string[]; text: () => string; stop: () => void } {
  const seen: (Error & { code?: string })[] = [];
  const on = (w: Error) => seen.push(w);
  process.on('warning', on);
  return { codes: () => seen.map((w) => w.code ?? ''), text: () => seen.map((w) => w.message).join('\n'), stop: () => process.off('warning', on) };
}
const tick = () => new Promise<void>((r) => setImmediate(r));

describe.skipIf(!inGuest || cfg?.name !== 'mem')('a driver killed with -9 mid-DMA must not corrupt the next owner (edu)', () => {
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('a live driver without physmem (BAR mapped, no lock) is left alone; killed, its device is quiesced before a pool hands out memory', async () => {
    const bdf = eduBdf();
    const driver = await startDriver('raw');
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);

    // While it lives, a pool elsewhere does not touch its device.
    let w = captureWarnings();
    openPoolSync({ backend: 'devmem', regions: [{ start: REGION.start + REGION.size, size: REGION.size }] }).close();
    await tick();
    w.stop();
    expect(w.codes()).not.toContain('PHYSMEM_QUIESCED');
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);
    expect(findOrphanedBusMasters()).not.toContain(bdf);

    driver.child.kill('SIGKILL');
    expect(await driver.exit).toBeNull();
    // Bus mastering on, no kernel driver, no lock holder, no mapping: an orphan.
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);
    expect(findOrphanedBusMasters()).toEqual([bdf]);

    // Without the protection (quiesceOrphans: false), the next owner's buffer is overwritten.
    {
      const pool = openPoolSync({ backend: 'devmem', regions: [REGION], quiesceOrphans: false });
      const buf = pool.alloc(4096, { at: driver.target });
      buf.bytes.fill(0x11);
      strayDma(driver.target);
      expect(buf.bytes.subarray(0, 2048).every((b) => b === 0xee)).toBe(true); // the dead driver's data
      expect(buf.bytes.subarray(2048).every((b) => b === 0x11)).toBe(true);
      buf.free();
      pool.close();
    }
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);

    // With it (the default), opening the pool quiesces edu first, and says so.
    w = captureWarnings();
    const pool = openPoolSync({ backend: 'devmem', regions: [REGION] });
    await tick();
    w.stop();
    expect(w.codes()).toContain('PHYSMEM_QUIESCED');
    expect(w.text()).toMatch(new RegExp(`${bdf} \\(1234:11e8\\) found with bus mastering on.*bus mastering turned off, not reset \\(the kernel offers no reset method`));
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(0);
    const buf = pool.alloc(4096, { at: driver.target });
    randomFillSync(buf.bytes);
    const expected = Buffer.from(buf.bytes);
    strayDma(driver.target);
    expect(Buffer.from(buf.bytes).equals(expected)).toBe(true); // byte for byte
    buf.free();
    pool.close();
  });

  it('a physmem driver holds the device lock (EBUSY naming it); killed, PciDevice.open quiesces its leftover and reports it', async () => {
    const bdf = eduBdf();
    const driver = await startDriver('physmem');
    expect(() => PciDevice.open(bdf)).toThrow(
      expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(new RegExp(`already driven by pid ${driver.child.pid} \\(.*edu-dma-loop\\.mjs physmem\\)`)) }),
    );
    driver.child.kill('SIGKILL');
    await driver.exit;
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(PCI_COMMAND_MASTER);
    const w = captureWarnings();
    const dev = PciDevice.open(bdf);
    await tick();
    w.stop();
    try {
      expect(dev.quiesced).toMatchObject({ bdf, id: '1234:11e8', busMasterCleared: true, reset: false, resetSkipped: expect.stringMatching(/no reset method/) });
      expect(dev.busMaster).toBe(false);
      expect(w.codes()).toContain('PHYSMEM_QUIESCED');
      // The new owner turns DMA on and closes: close turns it off again.
      dev.setBusMaster(true);
    } finally {
      dev.close();
    }
    expect(command(bdf) & PCI_COMMAND_MASTER).toBe(0);
  });
});

// ---------------------------------------------------------------------------

describe.skipIf(!inGuest || !cfg?.iommu)('outside VFIO, a translated IOMMU group refuses bus mastering (edu behind intel-iommu)', () => {
  it('setBusMaster(true) is EPERM in a DMA group (and DMA there would miss), allowed in identity; stat says which backend fits', () => {
    const bdf = eduBdf();
    const dev = PciDevice.find({ ...EDU, lock: false }); // the vfio tests may hold another edu
    const before = dev.driver;
    if (before !== undefined) dev.unbindDriver();
    const typeFile = `/sys/kernel/iommu_groups/${dev.iommuGroup!.group}/type`;
    const original = fs.readFileSync(typeFile, 'utf8').trim();
    try {
      fs.writeFileSync(typeFile, 'DMA'); // allowed while no driver is bound in the group
      expect(dev.iommuGroup).toEqual({ group: expect.any(Number), type: 'DMA' });
      expect(() => dev.setBusMaster(true)).toThrow(
        expect.objectContaining({ code: 'EPERM', message: expect.stringMatching(new RegExp(`${bdf} is in IOMMU group \\d+ of type DMA.*I/O virtual addresses.*physmem/vfio.*iommu=pt`)) }),
      );
      expect(dev.busMaster).toBe(false);
      const stat = runStat({ backend: 'fake', size: 1 << 20 });
      expect(stat.json).toMatchObject({ iommu: { enabled: true, translating: true, fits: 'vfio' } });

      // Why: the device's DMA to a physical address goes through the IOMMU, which has no mapping for it.
      const pool = openPoolSync({ backend: 'devmem', regions: [REGION], quiesceOrphans: false });
      try {
        const buf = pool.alloc(4096);
        buf.bytes.fill(0x11);
        dev.enable();
        dev.setBusMaster(true, { allowTranslatedIommu: true });
        const regs = dev.mapBar(0);
        regs.write64(0x80, 0x40000n);
        regs.write64(0x88, buf.bus);
        regs.write64(0x90, 64n);
        regs.write32(0x98, 3);
        waitIdle(regs);
        expect(buf.bytes.every((b) => b === 0x11)).toBe(true); // nothing arrived
        dev.setBusMaster(false);
        buf.free();
      } finally {
        pool.close();
      }

      fs.writeFileSync(typeFile, 'identity');
      dev.setBusMaster(true);
      expect(dev.busMaster).toBe(true);
      dev.setBusMaster(false);
    } finally {
      dev.close();
      fs.writeFileSync(typeFile, original === 'DMA-FQ' ? 'DMA-FQ' : original);
      if (before !== undefined) PciDevice.open(bdf, { lock: false }).bindDriver(before);
    }
  });
});
