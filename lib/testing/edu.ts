/**
 * A model of QEMU's `edu` PCI device (QEMU docs/specs/edu.rst, hw/misc/edu.c)
 * on {@link FakePciDevice}, so an edu driver runs in CI without a VM.
 * @module
 */
import type { Pool } from '../pool.js';
import { invalidArgument } from '../errors.js';
import { FakePciDevice, type FakePciDeviceOptions, type RegisterAccess } from './pci.js';
import { checkBoolean, describeValue, hex, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of {@link FakeEdu}. */
export interface FakeEduOptions {
  /** The pool whose memory the device reaches (a fake-backend pool in CI). */
  pool: Pool;
  /** PCI address shown in messages. Default `'0000:00:04.0'`. */
  bdf?: string;
  /**
   * The device's DMA address mask, as QEMU's `dma_mask` property. Default
   * `0xff_ffff_ffff` (40 bits: physmem's guest tests start edu with it);
   * QEMU's own default is 28 bits (`0xfff_ffff`). An address with bits
   * outside the mask is clamped by QEMU (the transfer goes elsewhere): the
   * model records a violation and drops the transfer.
   */
  dmaMask?: bigint;
  /**
   * Model QEMU 7.2's range check (Debian bookworm's QEMU; QEMU issue 1254):
   * a transfer that ends exactly at the end of the device buffer (0x41000)
   * is refused as out of bounds, and any out-of-bounds transfer stops the
   * whole VM (`hw_error`): the model then records a violation and plays
   * dead (reads all ones). Default true. false: newer QEMU, where an
   * out-of-bounds transfer is only logged (recorded here, and dropped).
   */
  offByOne?: boolean;
  /** See FakePciDeviceOptions.latencyReads. Default 2. */
  latencyReads?: number;
}

// The FakePciDevice options of an edu, after checking the caller's (before super(), which cannot follow a statement using them).
function eduDevice(options: FakeEduOptions): FakePciDeviceOptions {
  if (options === undefined) throw invalidArgument('new FakeEdu() needs options { pool }');
  checkFakeEduOptions(options);
  if (options.dmaMask !== undefined && (typeof options.dmaMask !== 'bigint' || options.dmaMask < 0n)) {
    throw invalidArgument(`new FakeEdu() dmaMask must be a non-negative bigint, got ${describeValue(options.dmaMask)}`);
  }
  checkBoolean(options.offByOne, 'offByOne', 'new FakeEdu()');
  return { pool: options.pool, bdf: options.bdf ?? '0000:00:04.0', bars: [{ size: 1 << 20, phys: 0xfea00000n }], interrupts: { msi: 1, intx: true }, latencyReads: options.latencyReads };
}

const checkFakeEduOptions = optionsChecker('new FakeEdu()', optionNames<FakeEduOptions>({ pool: true, bdf: true, dmaMask: true, offByOne: true, latencyReads: true }));

/** Device address of edu's DMA buffer. */
const DMA_START = 0x40000;
/** Size of edu's DMA buffer. */
const DMA_SIZE = 4096;
const STATUS_COMPUTING = 0x01;
const STATUS_IRQFACT = 0x80;
const FACT_IRQ = 0x1;
const DMA_IRQ = 0x100;
const DMA_RUN = 0x1n;
const DMA_TO_RAM = 0x2n;
const DMA_IRQ_WHEN_DONE = 0x4n;

/**
 * QEMU's edu device, register for register: identification (0x00 reads
 * 0x010000ed), liveness (0x04 reads back the inverse), factorial (0x08, with
 * the computing bit 0x01 and the interrupt-when-done bit 0x80 of status 0x20),
 * interrupt status/raise/ack (0x24/0x60/0x64), and the DMA engine (source
 * 0x80, destination 0x88, count 0x90, command 0x98: bit 0 start, bit 1
 * direction 1 = device to RAM, bit 2 interrupt when done) with its 4 KiB
 * buffer at device address 0x40000. One MSI vector and INTx, as edu.
 *
 * Accesses of the wrong width read all ones and are dropped (edu answers
 * only 4-byte accesses below 0x80, 4 or 8 from 0x80), recorded as
 * violations. The work edu does on its own thread or timer (factorial, DMA)
 * finishes when the driver polls (see `latencyReads`) or when the event
 * loop turns.
 *
 * Checks beyond edu's own, recorded in `violations`:
 * - DMA outside live buffers of the pool (use after free, overrun);
 * - ordering: a DMA start (command write) that was relaxed with no write
 *   barrier before it, and source memory that changed between the command
 *   write and the transfer (the driver wrote the data after ringing);
 * - DMA registers written while a transfer runs (edu ignores those writes).
 */
export class FakeEdu extends FakePciDevice {
  /** The device's 4 KiB buffer, as the model holds it (tests may inspect it). */
  readonly buffer = new Uint8Array(DMA_SIZE);
  /** True once the model stopped the way QEMU 7.2's hw_error stops the VM; every read is then all ones. */
  dead = false;
  readonly #dmaMask: bigint;
  readonly #offByOne: boolean;
  #addr4 = 0;
  #fact = 0;
  #status = 0;
  #irqStatus = 0;
  readonly #dma = { src: 0n, dst: 0n, cnt: 0n, cmd: 0n };

  /** @throws {PhysmemError} EINVAL for bad options. */
  constructor(options: FakeEduOptions) {
    super(eduDevice(options));
    this.#dmaMask = options.dmaMask ?? 0xff_ffff_ffffn;
    this.#offByOne = options.offByOne ?? true;
    this.defineRegister(0, { offset: 0, size: 0x80, widths: [4], read: (a) => this.#read(a), write: (v, a) => this.#write(BigInt(v), a) });
    this.defineRegister(0, { offset: 0x80, size: (1 << 20) - 0x80, widths: [4, 8], read: (a) => this.#read(a), write: (v, a) => this.#write(BigInt(v), a) });
  }

  /** The PCI vendor and device ID of edu. */
  static readonly VENDOR = 0x1234;
  /** The PCI device ID of edu. */
  static readonly DEVICE = 0x11e8;

  #read(a: RegisterAccess): number | bigint {
    if (this.dead) return -1n;
    switch (a.offset) {
      case 0x00: return 0x010000ed;
      case 0x04: return this.#addr4;
      case 0x08: return this.#fact;
      case 0x20: return this.#status;
      case 0x24: return this.#irqStatus;
      case 0x80: return this.#dma.src;
      case 0x88: return this.#dma.dst;
      case 0x90: return this.#dma.cnt;
      case 0x98: return this.#dma.cmd;
      default:
        this.violation('register', `edu has no register at ${hex(a.offset)} (read${a.width * 8})`);
        return -1n;
    }
  }

  #write(val: bigint, a: RegisterAccess): void {
    if (this.dead) return;
    const v32 = Number(val & 0xffff_ffffn);
    switch (a.offset) {
      case 0x04:
        this.#addr4 = ~v32 >>> 0;
        return;
      case 0x08:
        if (this.#status & STATUS_COMPUTING) return; // edu ignores a new n while computing
        this.#fact = v32;
        this.#status |= STATUS_COMPUTING;
        this.schedule(() => this.#computeFactorial());
        return;
      case 0x20:
        this.#status = v32 & STATUS_IRQFACT ? this.#status | STATUS_IRQFACT : this.#status & ~STATUS_IRQFACT;
        return;
      case 0x60:
        this.#raise(v32);
        return;
      case 0x64:
        this.#lower(v32);
        return;
      case 0x80:
      case 0x88:
      case 0x90:
        if (this.#dma.cmd & DMA_RUN) {
          this.violation('device', `DMA register ${hex(a.offset)} written while a transfer runs: edu ignores it`);
          return;
        }
        if (a.offset === 0x80) this.#dma.src = val;
        else if (a.offset === 0x88) this.#dma.dst = val;
        else this.#dma.cnt = val;
        return;
      case 0x98:
        if (!(val & DMA_RUN)) return;
        if (this.#dma.cmd & DMA_RUN) {
          this.violation('device', 'DMA command written while a transfer runs: edu ignores it');
          return;
        }
        this.#dma.cmd = val;
        this.#startDma(a);
        return;
      default:
        this.violation('register', `edu has no register at ${hex(a.offset)} (write${a.width * 8})`);
    }
  }

  #computeFactorial(): void {
    let r = 1;
    for (let n = this.#fact; n > 0; n--) r = Math.imul(r, n) >>> 0; // 32 bits, wrapping, as edu
    this.#fact = r;
    this.#status &= ~STATUS_COMPUTING;
    if (this.#status & STATUS_IRQFACT) this.#raise(FACT_IRQ);
  }

  // As edu_raise_irq/edu_lower_irq: MSI sends a message per raise; INTx is a level.
  #raise(bits: number): void {
    this.#irqStatus = (this.#irqStatus | bits) >>> 0;
    if (this.#irqStatus !== 0) this.raiseInterrupt(0);
  }

  #lower(bits: number): void {
    this.#irqStatus = (this.#irqStatus & ~bits) >>> 0;
    if (this.#irqStatus === 0 && this.interruptType !== 'msi') this.lowerInterrupt(0);
  }

  #startDma(a: RegisterAccess): void {
    const { src, dst, cnt, cmd } = this.#dma;
    const toRam = (cmd & DMA_TO_RAM) !== 0n;
    this.checkOrdered(a, 'edu DMA start');
    const bus = this.#clamp(toRam ? dst : src);
    // What RAM held when the command was written: all the device may rely on.
    const atDoorbell = !toRam && cnt > 0n && this.#rangeOk(dst, cnt, false) ? this.dmaRead(bus, Number(cnt)) : undefined;
    this.schedule(() => {
      this.#finishDma(toRam, toRam ? src : dst, cnt, bus, atDoorbell);
      this.#dma.cmd &= ~DMA_RUN;
      if (this.#dma.cmd & DMA_IRQ_WHEN_DONE) this.#raise(DMA_IRQ);
    });
  }

  #finishDma(toRam: boolean, devAddr: bigint, cnt: bigint, bus: bigint, atDoorbell: Uint8Array | undefined): void {
    if (!this.#rangeOk(devAddr, cnt, true) || cnt === 0n) return;
    const bufOffset = Number(devAddr - BigInt(DMA_START));
    if (toRam) {
      this.dmaWrite(bus, this.buffer.slice(bufOffset, bufOffset + Number(cnt)));
      return;
    }
    if (atDoorbell === undefined) return; // the read at the command write failed: recorded then
    const now = this.dmaRead(bus, Number(cnt)); // recorded when freed since
    if (now === undefined) return;
    const changed = now.findIndex((b, i) => b !== atDoorbell[i]);
    if (changed >= 0) {
      this.violation('ordering', `memory at bus ${hex((bus + BigInt(changed)))} changed between the DMA start and the transfer: the driver wrote the data after ringing (or while the device read it); the device used the older bytes`);
    }
    this.buffer.set(atDoorbell, bufOffset);
  }

  // edu_check_range of QEMU 7.2 (offByOne) or of later QEMU.
  #rangeOk(start: bigint, cnt: bigint, report: boolean): boolean {
    const end = start + cnt;
    const lo = BigInt(DMA_START);
    const hi = BigInt(DMA_START + DMA_SIZE);
    const ok = this.#offByOne ? start >= lo && start < hi && end > start && end < hi : start >= lo && end >= start && end <= hi;
    if (!ok && report) {
      const range = `EDU: DMA range ${hex(start)}-${hex((end - 1n))} out of bounds (${hex(lo)}-${hex((hi - 1n))})`;
      if (this.#offByOne) {
        this.dead = true;
        this.violation('device', `${range}: QEMU 7.2 stops the whole VM here (hw_error${end === hi ? '; a transfer ending exactly at 0x41000 is refused by its off-by-one check, QEMU issue 1254' : ''})`);
      } else {
        this.violation('device', `${range}: the transfer was dropped`);
      }
    }
    return ok;
  }

  #clamp(addr: bigint): bigint {
    const res = addr & this.#dmaMask;
    if (res !== addr) this.violation('device', `EDU: DMA address ${hex(addr)} is outside dma_mask ${hex(this.#dmaMask)}; QEMU clamps it to ${hex(res)}`);
    return res;
  }
}
