// Guest-side helpers for the VFIO tests (config `iommu`): bind the edu
// devices to vfio-pci, drive edu's DMA engine through any register window,
// read the hardware command register and the kernel log. Guest only (root).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { EDU_BUFFER, EDU_DEVICE, EDU_MAX_END, EDU_VENDOR } from '../../examples/edu/edu.js';
import { bindVfio } from '../../lib/vfio/index.js';

export { EDU_BUFFER, EDU_MAX_END };

const PCI = '/sys/bus/pci';

/** An edu device bound to vfio-pci. */
export interface VfioEduInfo {
  bdf: string;
  /** IOMMU group number (/dev/vfio/<group>). */
  group: number;
  /** The group's type file: DMA / DMA-FQ (translated) or identity. */
  groupType: string;
}

/** Bind every edu device (1234:11e8) to vfio-pci (bindVfio: idempotent). Returns them in bdf order. */
export function bindEdusToVfio(): VfioEduInfo[] {
  const rd = (bdf: string, f: string) => parseInt(fs.readFileSync(`${PCI}/devices/${bdf}/${f}`, 'utf8'), 16);
  return fs
    .readdirSync(`${PCI}/devices`)
    .filter((bdf) => rd(bdf, 'vendor') === EDU_VENDOR && rd(bdf, 'device') === EDU_DEVICE)
    .sort()
    .map((bdf) => {
      const { group } = bindVfio(bdf);
      return { bdf, group, groupType: fs.readFileSync(`/sys/kernel/iommu_groups/${group}/type`, 'utf8').trim() };
    });
}

/** The registers of edu's BAR 0 that DMA needs (an Mmio). */
export interface EduRegs {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  write64(offset: number, value: bigint): void;
}

/** The hardware command register (config offset 4) as sysfs reads it, past VFIO's virtualized view. */
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
