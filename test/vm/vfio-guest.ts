// Guest-side helpers for the VFIO tests (config `iommu`): bind the edu
// devices to vfio-pci, open one on a container, drive its DMA engine, read
// the kernel log. Runs as root inside the QEMU guest only.
//
// Devices are opened with vfio-dev's VfioDevice (lib/vfio/device.ts) when it
// is there; until then with the group fd alone (its IOMMU domain is the
// container's as soon as the group is attached) and the registers and
// command register through sysfs. Only `openEdu` knows which.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EDU_BUFFER, EDU_DEVICE, EDU_MAX_END, EDU_VENDOR } from '../../examples/edu/edu.js';
import { closeFile, openFile } from '../../lib/mapping.js';
import { PciDevice } from '../../lib/pci/index.js';
import type { VfioContainer } from '../../lib/vfio/container.js';

export { EDU_BUFFER, EDU_MAX_END };

const PCI = '/sys/bus/pci';
const HERE = path.dirname(fileURLToPath(import.meta.url));

/** An edu device bound to vfio-pci. */
export interface VfioEduInfo {
  bdf: string;
  /** IOMMU group number (/dev/vfio/<group>). */
  group: number;
  /** The group's type file: DMA / DMA-FQ (translated) or identity. */
  groupType: string;
}

function edus(): string[] {
  return fs
    .readdirSync(`${PCI}/devices`)
    .filter((bdf) => {
      const rd = (f: string) => parseInt(fs.readFileSync(`${PCI}/devices/${bdf}/${f}`, 'utf8'), 16);
      return rd('vendor') === EDU_VENDOR && rd('device') === EDU_DEVICE;
    })
    .sort();
}

/**
 * Bind every edu device to vfio-pci (driver_override + drivers_probe, after
 * unbinding any other driver). Idempotent. Returns them in bdf order.
 */
export function bindEdusToVfio(): VfioEduInfo[] {
  return edus().map((bdf) => {
    const dev = `${PCI}/devices/${bdf}`;
    const driver = fs.existsSync(`${dev}/driver`) ? path.basename(fs.readlinkSync(`${dev}/driver`)) : undefined;
    if (driver !== 'vfio-pci') {
      if (driver !== undefined) fs.writeFileSync(`${dev}/driver/unbind`, bdf);
      fs.writeFileSync(`${dev}/driver_override`, 'vfio-pci');
      fs.writeFileSync(`${PCI}/drivers_probe`, bdf);
    }
    const groupLink = fs.readlinkSync(`${dev}/iommu_group`);
    const group = Number(path.basename(groupLink));
    return { bdf, group, groupType: fs.readFileSync(`/sys/kernel/iommu_groups/${group}/type`, 'utf8').trim() };
  });
}

/** The registers of edu's BAR 0 that DMA needs. */
export interface EduRegs {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  write64(offset: number, value: bigint): void;
}

/** An edu opened on a container. */
export interface VfioEdu {
  readonly bdf: string;
  readonly regs: EduRegs;
  /** Which way it was opened. */
  readonly via: 'VfioDevice' | 'group fd + sysfs';
  setBusMaster(on: boolean): void;
  close(): void;
}

/** The hardware command register (config offset 4) as sysfs reads it, past any VFIO virtualization. */
export function hardwareCommand(bdf: string): number {
  const fd = fs.openSync(`${PCI}/devices/${bdf}/config`, 'r');
  try {
    const b = Buffer.alloc(2);
    fs.readSync(fd, b, 0, 2, 4);
    return b.readUInt16LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

type VfioDeviceModule = {
  VfioDevice: {
    open(bdf: string, o: { container: VfioContainer }): { setBusMaster(on: boolean): void; mapBar(n: number): EduRegs; close(): void };
  };
};
let deviceModule: VfioDeviceModule | null | undefined;

/** vfio-dev's VfioDevice, when lib/vfio/device.ts exists on this branch. */
export async function vfioDeviceModule(): Promise<VfioDeviceModule | null> {
  if (deviceModule !== undefined) return deviceModule;
  const file = path.join(HERE, '../../lib/vfio/device.ts');
  deviceModule = fs.existsSync(file) ? ((await import(/* @vite-ignore */ file)) as VfioDeviceModule) : null;
  return deviceModule;
}

/** Open edu `info` on `container` (attaching its group), registers mapped; bus mastering as the device had it. */
export async function openEdu(info: VfioEduInfo, container: VfioContainer): Promise<VfioEdu> {
  const mod = await vfioDeviceModule();
  if (mod) {
    const dev = mod.VfioDevice.open(info.bdf, { container });
    const regs = dev.mapBar(0);
    return { bdf: info.bdf, regs, via: 'VfioDevice', setBusMaster: (on) => dev.setBusMaster(on), close: () => dev.close() };
  }
  const groupPath = `/dev/vfio/${info.group}`;
  const groupFd = openFile(groupPath, true, false);
  try {
    container.attachGroup(groupFd, groupPath);
  } catch (e) {
    closeFile(groupFd);
    throw e;
  }
  const pci = PciDevice.open(info.bdf);
  pci.enable();
  const regs = pci.mapBar(0);
  const setBusMaster = (on: boolean) => {
    const fd = fs.openSync(`${pci.path}/config`, 'r+');
    try {
      const b = Buffer.alloc(2);
      fs.readSync(fd, b, 0, 2, 4);
      b.writeUInt16LE(on ? b.readUInt16LE(0) | 4 : b.readUInt16LE(0) & ~4, 0);
      fs.writeSync(fd, b, 0, 2, 4);
    } finally {
      fs.closeSync(fd);
    }
  };
  return {
    bdf: info.bdf,
    regs,
    via: 'group fd + sysfs',
    setBusMaster,
    close: () => {
      setBusMaster(false);
      pci.close();
      closeFile(groupFd);
    },
  };
}

const REG_DMA_SRC = 0x80;
const REG_DMA_DST = 0x88;
const REG_DMA_COUNT = 0x90;
const REG_DMA_CMD = 0x98;
const DMA_START = 1;
const DMA_TO_RAM = 2;
const pause = new Int32Array(new SharedArrayBuffer(4));

/** Start one edu DMA (not waiting): RAM at `bus` to the device buffer at `offset`, or back with `toRam`. */
export function startDma(regs: EduRegs, toRam: boolean, bus: bigint, offset: number, length: number): void {
  if (offset < 0 || length < 1 || offset + length > EDU_MAX_END) throw new Error(`edu transfer [${offset}, +${length}) outside the usable buffer`);
  if (regs.read32(REG_DMA_CMD) & DMA_START) throw new Error('edu: a DMA is still running');
  const dev = BigInt(EDU_BUFFER + offset);
  regs.write64(REG_DMA_SRC, toRam ? dev : bus);
  regs.write64(REG_DMA_DST, toRam ? bus : dev);
  regs.write64(REG_DMA_COUNT, BigInt(length));
  regs.write32(REG_DMA_CMD, DMA_START | (toRam ? DMA_TO_RAM : 0));
}

/** True while edu's DMA engine has a transfer pending (command bit 0). */
export function dmaBusy(regs: EduRegs): boolean {
  return (regs.read32(REG_DMA_CMD) & DMA_START) !== 0;
}

/** Wait until the DMA engine is idle (edu runs each transfer ~100 ms of VM time later); a safety deadline only. */
export function waitDma(regs: EduRegs, deadlineMs = 20_000): void {
  const end = Date.now() + deadlineMs;
  while (dmaBusy(regs)) {
    if (Date.now() > end) throw new Error(`edu DMA still running after ${deadlineMs} ms`);
    Atomics.wait(pause, 0, 0, 1);
  }
}

/** One DMA, waited for. */
export function dma(regs: EduRegs, toRam: boolean, bus: bigint, offset: number, length: number): void {
  startDma(regs, toRam, bus, offset, length);
  waitDma(regs);
}

/** The kernel log (busybox dmesg; the guest's util-linux may be absent). */
export function kernelLog(): string {
  return execFileSync('busybox', ['dmesg'], { encoding: 'utf8', maxBuffer: 16 << 20 });
}

/** DMAR fault lines of the kernel log that name `bdf`'s bus:dev.fn. */
export function dmarFaults(bdf: string, log = kernelLog()): string[] {
  const short = bdf.replace(/^0000:/, '');
  return log.split('\n').filter((l) => /DMAR:.*fault/i.test(l) && l.includes(short));
}
