/**
 * A userspace driver for QEMU's `edu` PCI device, in TypeScript.
 *
 * edu is QEMU's teaching device (QEMU docs/specs/edu.rst): an ID register, a
 * liveness check, a factorial unit, and a DMA engine that copies between
 * RAM (by bus address) and a 4 KiB buffer inside the device. Start QEMU
 * with `-device edu,dma_mask=0xffffffffff` so it reaches RAM above 256 MiB.
 *
 * Copy this file to start a driver for your own device: find it, enable it
 * and its bus mastering, map its registers, then program DMA with the bus
 * addresses of physmem buffers. Needs root.
 *
 * The driver itself ({@link Edu}) takes only an `Mmio` (and, for interrupts,
 * an `InterruptSource`), so the same code drives the real device
 * (`Edu.open()`) and physmem/testing's `FakeEdu` model in CI.
 *
 * In your own project, import from 'physmem' and 'physmem/pci' instead.
 * @module
 */
import { PhysmemError, pollUntil } from '../../lib/index.js';
import { PciDevice, type Mmio } from '../../lib/pci/index.js';
import type { InterruptSource } from '../../lib/vfio/irq.js';

/** PCI vendor and device ID of edu. */
export const EDU_VENDOR = 0x1234;
export const EDU_DEVICE = 0x11e8;

// BAR 0 registers. edu answers only 32-bit accesses below 0x80, and 32- or
// 64-bit ones from 0x80 on: Mmio does exactly one access of the width asked.
const REG_ID = 0x00; // 0xRRrr00ed: major RR, minor rr
const REG_LIVENESS = 0x04; // reads back the bitwise inverse of what was written
const REG_FACTORIAL = 0x08; // write n, read n! once the status bit clears
const REG_STATUS = 0x20;
const REG_IRQ_STATUS = 0x24; // which causes are pending
const REG_IRQ_ACK = 0x64; // write the bits to clear
const REG_DMA_SRC = 0x80;
const REG_DMA_DST = 0x88;
const REG_DMA_COUNT = 0x90;
const REG_DMA_CMD = 0x98;

const STATUS_COMPUTING = 0x01;
const STATUS_IRQ_FACTORIAL = 0x80; // interrupt when the factorial is done
const IRQ_FACTORIAL = 0x1; // cause bit in the interrupt status register
const DMA_START = 0x1; // cleared by the device when the transfer is done
const DMA_TO_RAM = 0x2; // direction: set = device buffer -> RAM
const DMA_IRQ = 0x4; // interrupt when the transfer is done
const IRQ_DMA = 0x100; // cause bit in the interrupt status register

/** The device's own buffer, as the DMA engine addresses it. */
export const EDU_BUFFER = 0x40000;
/** Size of that buffer in bytes. */
export const EDU_BUFFER_SIZE = 4096;
/**
 * Largest transfer this driver starts, and no transfer may end at the
 * buffer's last byte: QEMU up to 7.2 has an off-by-one check (QEMU issue
 * 1254) that aborts the whole VM on a transfer ending exactly at 0x41000.
 */
export const EDU_MAX_END = EDU_BUFFER_SIZE - 1;

/** Default time limit of one operation, ms. Each DMA takes about 100 ms of the VM's clock. */
export const EDU_TIMEOUT_MS = 5000;

/** Options of the {@link Edu} driver. */
export interface EduOptions {
  /** The device's interrupts (a VfioDevice, or FakePciDevice in tests): needed by {@link Edu.factorialAsync}. */
  irq?: InterruptSource;
  /** Name for messages, e.g. the PCI address. Default: `regs.path`. */
  name?: string;
  /** Called once by {@link Edu.close} (e.g. to turn bus mastering off and close the PCI device). */
  onClose?: () => void;
}

/** The edu driver: everything it does goes through `regs` (BAR 0) and `irq`. */
export class Edu {
  /** BAR 0: the registers. */
  readonly regs: Mmio;
  /** The device's interrupts, when given. */
  readonly irq: InterruptSource | undefined;
  /** The PCI function, when opened with {@link Edu.open}. */
  readonly pci: PciDevice | undefined;
  /** The device's name in messages (its PCI address for real hardware). */
  readonly name: string;
  readonly #onClose: (() => void) | undefined;
  #closed = false;

  /**
   * Drive the edu device whose BAR 0 is `regs` (hardware: `Edu.open()`;
   * tests: `new Edu(new FakeEdu({ pool }).mapBar(0))`).
   */
  constructor(regs: Mmio, options: EduOptions & { pci?: PciDevice } = {}) {
    this.regs = regs;
    this.irq = options.irq;
    this.pci = options.pci;
    this.name = options.name ?? options.pci?.bdf ?? regs.path;
    this.#onClose = options.onClose;
  }

  /**
   * Find the edu device (or open the one at `bdf`), enable it and its DMA, map its registers.
   * @throws {PhysmemError} ENOENT (no edu device), EACCES (not root).
   */
  static open(bdf?: string): Edu {
    const pci = bdf === undefined ? PciDevice.find({ vendor: EDU_VENDOR, device: EDU_DEVICE }) : PciDevice.open(bdf);
    try {
      pci.enable(); // memory decoding on
      pci.setBusMaster(true); // allow the device to do DMA
      const regs = pci.mapBar(0);
      return new Edu(regs, {
        pci,
        onClose: () => {
          pci.setBusMaster(false); // stop DMA
          pci.close();
        },
      });
    } catch (e) {
      pci.close();
      throw e;
    }
  }

  /** The version in the identification register, e.g. `{ major: 1, minor: 0 }`. @throws {PhysmemError} EIO when the register does not look like edu's. */
  version(): { major: number; minor: number } {
    const id = this.regs.read32(REG_ID);
    if ((id & 0xff) !== 0xed) throw new PhysmemError('EIO', `edu: identification register reads 0x${id.toString(16)}, expected 0xRRrr00ed`);
    return { major: id >>> 24, minor: (id >>> 16) & 0xff };
  }

  /** True when the device inverts what is written to its liveness register. */
  isAlive(value = 0x12345678): boolean {
    this.regs.write32(REG_LIVENESS, value);
    return this.regs.read32(REG_LIVENESS) === (~value >>> 0);
  }

  /**
   * n! computed by the device (32 bits, wrapping).
   * @throws {PhysmemError} ETIMEDOUT.
   */
  factorial(n: number, timeoutMs = EDU_TIMEOUT_MS): number {
    this.regs.write32(REG_FACTORIAL, n);
    pollUntil(() => (this.regs.read32(REG_STATUS) & STATUS_COMPUTING) === 0, { timeoutMs, what: `${this.name}: edu factorial (status bit 0 clear)` });
    return this.regs.read32(REG_FACTORIAL);
  }

  /**
   * n! computed by the device, waiting for its interrupt instead of polling
   * (the event loop keeps running). Needs `irq` with interrupts enabled.
   * @throws {PhysmemError} EINVAL (no interrupt source), ETIMEDOUT (no interrupt in time).
   */
  async factorialAsync(n: number, timeoutMs = EDU_TIMEOUT_MS): Promise<number> {
    if (this.irq === undefined) throw new PhysmemError('EINVAL', `${this.name}: factorialAsync needs an interrupt source (options.irq)`);
    this.regs.write32(REG_STATUS, STATUS_IRQ_FACTORIAL); // interrupt when done
    this.regs.write32(REG_FACTORIAL, n);
    try {
      await this.irq.waitInterrupt(0, { timeoutMs });
      const cause = this.regs.read32(REG_IRQ_STATUS);
      this.regs.write32(REG_IRQ_ACK, cause); // lower it, or INTx stays asserted
      if ((cause & IRQ_FACTORIAL) === 0) throw new PhysmemError('EIO', `${this.name}: interrupt with status 0x${cause.toString(16)}, expected the factorial bit`);
    } finally {
      this.regs.write32(REG_STATUS, 0);
    }
    return this.regs.read32(REG_FACTORIAL);
  }

  /**
   * DMA `length` bytes from RAM at bus address `bus` into the device buffer at `offset`; returns when done.
   * @throws {PhysmemError} EINVAL (outside the usable buffer), ETIMEDOUT.
   */
  toDevice(bus: bigint, offset: number, length: number, timeoutMs = EDU_TIMEOUT_MS): void {
    this.#dma(bus, BigInt(EDU_BUFFER + this.#check(offset, length)), length, DMA_START, timeoutMs);
  }

  /**
   * DMA `length` bytes from the device buffer at `offset` to RAM at bus address `bus`; returns when done.
   * @throws {PhysmemError} EINVAL (outside the usable buffer), ETIMEDOUT.
   */
  fromDevice(offset: number, bus: bigint, length: number, timeoutMs = EDU_TIMEOUT_MS): void {
    this.#dma(BigInt(EDU_BUFFER + this.#check(offset, length)), bus, length, DMA_START | DMA_TO_RAM, timeoutMs);
  }

  /**
   * As {@link Edu.toDevice}, waiting for the device's DMA-done interrupt
   * instead of polling (the event loop keeps running). Needs `irq` with
   * interrupts enabled.
   * @throws {PhysmemError} EINVAL (outside the buffer, or no interrupt source), ETIMEDOUT, EIO (another cause).
   */
  async toDeviceAsync(bus: bigint, offset: number, length: number, timeoutMs = EDU_TIMEOUT_MS): Promise<void> {
    await this.#dmaAsync(bus, BigInt(EDU_BUFFER + this.#check(offset, length)), length, DMA_START | DMA_IRQ, timeoutMs);
  }

  /**
   * As {@link Edu.fromDevice}, waiting for the DMA-done interrupt.
   * @throws {PhysmemError} EINVAL, ETIMEDOUT, EIO.
   */
  async fromDeviceAsync(offset: number, bus: bigint, length: number, timeoutMs = EDU_TIMEOUT_MS): Promise<void> {
    await this.#dmaAsync(BigInt(EDU_BUFFER + this.#check(offset, length)), bus, length, DMA_START | DMA_TO_RAM | DMA_IRQ, timeoutMs);
  }

  /** Stop DMA and unmap the registers (for `Edu.open()`: bus mastering off, device closed). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#onClose) this.#onClose();
    else this.regs.close();
  }

  #check(offset: number, length: number): number {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 1 || offset + length > EDU_MAX_END) {
      throw new PhysmemError('EINVAL', `edu: [${offset}, +${length}) must lie within the first ${EDU_MAX_END} bytes of the device buffer`);
    }
    return offset;
  }

  async #dmaAsync(src: bigint, dst: bigint, length: number, cmd: number, timeoutMs: number): Promise<void> {
    if (this.irq === undefined) throw new PhysmemError('EINVAL', `${this.name}: interrupt-driven DMA needs an interrupt source (options.irq)`);
    if ((this.regs.read32(REG_DMA_CMD) & DMA_START) !== 0) throw new PhysmemError('EBUSY', `${this.name}: an edu DMA transfer is still running`);
    this.regs.write64Relaxed(REG_DMA_SRC, src);
    this.regs.write64Relaxed(REG_DMA_DST, dst);
    this.regs.write64Relaxed(REG_DMA_COUNT, BigInt(length));
    this.regs.write32(REG_DMA_CMD, cmd); // the doorbell, with the write barrier
    await this.irq.waitInterrupt(0, { timeoutMs });
    const cause = this.regs.read32(REG_IRQ_STATUS); // readl: later reads of the buffer stay after it
    this.regs.write32(REG_IRQ_ACK, cause); // lower it, or INTx stays asserted
    if ((cause & IRQ_DMA) === 0) throw new PhysmemError('EIO', `${this.name}: interrupt with status 0x${cause.toString(16)}, expected the DMA bit`);
  }

  #dma(src: bigint, dst: bigint, length: number, cmd: number, timeoutMs: number): void {
    if ((this.regs.read32(REG_DMA_CMD) & DMA_START) !== 0) throw new PhysmemError('EBUSY', `${this.name}: an edu DMA transfer is still running`);
    // The address and count registers hand over no memory yet: relaxed stores.
    this.regs.write64Relaxed(REG_DMA_SRC, src);
    this.regs.write64Relaxed(REG_DMA_DST, dst);
    this.regs.write64Relaxed(REG_DMA_COUNT, BigInt(length));
    // The doorbell: write32 carries the write barrier (Linux's writel), so the
    // data the caller stored in the source buffer reaches memory before the
    // device sees the start bit, on every CPU.
    this.regs.write32(REG_DMA_CMD, cmd);
    // read32 is readl: its read barrier keeps the caller's later reads of the
    // destination buffer after the load that saw the transfer done.
    pollUntil(() => (this.regs.read32(REG_DMA_CMD) & DMA_START) === 0, {
      timeoutMs,
      what: `${this.name}: edu DMA of ${length} bytes 0x${src.toString(16)} -> 0x${dst.toString(16)} (command bit 0 clear)`,
    });
  }
}
