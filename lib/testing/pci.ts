/**
 * A register-level fake PCI device for driver tests without hardware: a
 * register model you write (read/write handlers per offset and width) behind
 * the same {@link Mmio} class a real BAR gives, DMA into a pool through
 * {@link FakeDmaDevice}'s checks, and interrupts through the same
 * {@link InterruptSource} interface as a VFIO device.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { writeBarrierCount } from '../ordering.js';
import { Pool } from '../pool.js';
import { Mmio, type MmioAccessors } from '../pci/mmio.js';
import {
  checkEnableInterruptsOptions,
  checkInterruptsOptions,
  checkWaitInterruptOptions,
  interruptIterator,
  type EnableInterruptsOptions,
  type InterruptSource,
  type InterruptsOptions,
  type InterruptType,
  type WaitInterruptOptions,
} from '../vfio/irq.js';
import { FakeDmaDevice } from './dma.js';
import { checkBoolean, describeValue, hex, isArray, isPowerOfTwo, optionNames, optionsChecker } from '../internal/validate.js';

/** Width of one register access in bytes. */
export type RegisterWidth = 1 | 2 | 4 | 8;

/** One register access, as a model's handler sees it. */
export interface RegisterAccess {
  /** BAR number. */
  readonly bar: number;
  /** Byte offset in the BAR. */
  readonly offset: number;
  /** Width in bytes. */
  readonly width: RegisterWidth;
  /**
   * Writes: true when this store is ordered after the driver's earlier stores
   * to DMA memory, i.e. it was a `writeN` (Linux's writel, which carries a
   * write barrier), or a `writeNRelaxed` with a write barrier (`dmaWmb`,
   * `wmb`, `mb`, `wcFlush`) issued since this device last checked ordering
   * ({@link FakePciDevice.checkOrdered}). Reads: always true.
   */
  readonly ordered: boolean;
}

/** A model of one register, or of a range of them: what {@link FakePciDevice.defineRegister} takes. */
export interface RegisterHandler {
  /** First byte offset covered (in the BAR). */
  offset: number;
  /** Bytes covered from `offset`. Default: the largest of `widths` (one register). */
  size?: number;
  /**
   * Access widths the register answers. An access of another width is recorded
   * as a violation; the read returns all ones and the write is dropped (what
   * most devices do). Default `[4]`.
   */
  widths?: readonly RegisterWidth[];
  /** Value of a read: a number for widths 1-4 (masked to the width), a number or bigint for 8. Default: all ones. */
  read?: (access: RegisterAccess) => number | bigint;
  /** A write: `value` is an unsigned number for widths 1-4, a bigint for 8. Default: ignored. */
  write?: (value: number | bigint, access: RegisterAccess) => void;
}

/** A BAR of a {@link FakePciDevice}. */
export interface FakeBarOptions {
  /** Size in bytes, a power of two. */
  size: number;
  /** Bus address shown as `mmio.phys`. Default: 0xfe000000 + n * 16 MiB. */
  phys?: bigint;
}

const checkFakeBarOptions = optionsChecker('new FakePciDevice() bars[n]', optionNames<FakeBarOptions>({ size: true, phys: true }));

/** Options of {@link FakePciDevice}. */
export interface FakePciDeviceOptions {
  /** The pool whose memory the device reaches by bus address (a fake-backend pool in CI). */
  pool: Pool;
  /** BARs by number; `undefined` entries are unimplemented BARs. */
  bars: readonly (FakeBarOptions | undefined)[];
  /** PCI address shown in messages and `mmio.path`. Default `'0000:00:00.0'`. */
  bdf?: string;
  /** Interrupts the device offers: number of MSI and MSI-X vectors, INTx or not. Default `{ msi: 1, intx: true }`. */
  interrupts?: { msi?: number; msix?: number; intx?: boolean };
  /**
   * Register reads after which work the model scheduled (a DMA, a computation)
   * is done: 2 (default) lets the driver see the device busy once, as a
   * driver polling a status register would on hardware. Scheduled work also
   * runs on its own once the event loop turns (setImmediate), for drivers
   * that wait for an interrupt instead of polling.
   */
  latencyReads?: number;
}

const checkFakeInterrupts = optionsChecker('new FakePciDevice() interrupts', ['msi', 'msix', 'intx']);
const checkFakePciDeviceOptions = optionsChecker('new FakePciDevice()', optionNames<FakePciDeviceOptions>({ pool: true, bars: true, bdf: true, interrupts: true, latencyReads: true }));

/** Something a driver did that hardware would not forgive. */
export interface DeviceViolation {
  /** `'register'` (unmapped offset, wrong width), `'dma'` (outside a live buffer), `'ordering'` (doorbell before data), `'device'` (the model's own check, e.g. a range the device refuses). */
  kind: 'register' | 'dma' | 'ordering' | 'device';
  /** What happened, with addresses. */
  message: string;
}

interface Vector {
  pending: number;
  line: boolean; // INTx level
  waiters: { resolve: (n: number) => void; reject: (e: unknown) => void }[];
}

const ONES: Record<RegisterWidth, number> = { 1: 0xff, 2: 0xffff, 4: 0xffffffff, 8: 0 };
const ALL_ONES_64 = (1n << 64n) - 1n;

/**
 * A PCI device made of a register model, for tests of driver code on the fake
 * backend. `mapBar(n)` returns a real {@link Mmio} whose accesses reach the
 * model's handlers after the same checks as a hardware BAR (offset, width,
 * alignment, range, value, closed), with the same ordered (`writeN`) and
 * relaxed (`writeNRelaxed`) accessors.
 *
 * Violations that hardware would punish (a register that does not exist, a
 * width it ignores, DMA outside live buffers, a doorbell rung before the data
 * was written) are recorded in {@link FakePciDevice.violations}; a test ends
 * with {@link FakePciDevice.assertNoViolations}.
 *
 * @example
 * const dev = new FakePciDevice({ pool, bars: [{ size: 4096 }] });
 * let ctrl = 0;
 * dev.defineRegister(0, { offset: 0x10, read: () => ctrl, write: (v) => { ctrl = Number(v); } });
 * const regs = dev.mapBar(0); // an Mmio, as PciDevice.mapBar(0) returns
 */
export class FakePciDevice implements InterruptSource, Disposable {
  /** PCI address shown in messages. */
  readonly bdf: string;
  /** Every violation so far, oldest first. */
  readonly violations: DeviceViolation[] = [];
  /** The DMA path, with FakeDmaDevice's checks (its `violations` list the DMA ones again). */
  readonly dma: FakeDmaDevice;
  readonly #bars: (FakeBarOptions | undefined)[];
  readonly #handlers: RegisterHandler[][];
  readonly #mmios = new Set<Mmio>();
  readonly #offered: { msi: number; msix: number; intx: boolean };
  readonly #latency: number;
  #work: { fn: () => void; reads: number }[] = [];
  #immediate: NodeJS.Immediate | undefined;
  #barrierMark = writeBarrierCount();
  #irqType: InterruptType | undefined;
  #vectors: Vector[] = [];
  #closed = false;

  /** @throws {PhysmemError} EINVAL for bad options. */
  constructor(options: FakePciDeviceOptions) {
    checkFakePciDeviceOptions(options);
    if (!(options.pool instanceof Pool)) throw invalidArgument(`new FakePciDevice() pool must be a Pool (from openPoolSync()), got ${describeValue(options.pool)}`);
    if (!isArray(options.bars) || options.bars.length > 6) throw invalidArgument('bars must be an array of at most 6 { size } entries');
    options.bars.forEach((b, n) => {
      if (b === undefined) return;
      checkFakeBarOptions(b);
      if (!isPowerOfTwo(b.size) || b.size < 16) throw invalidArgument(`BAR ${n}: size must be a power of two of at least 16 bytes, got ${describeValue(b.size)}`);
      if (b.phys !== undefined && typeof b.phys !== 'bigint') throw invalidArgument(`BAR ${n}: phys must be a bigint, got ${describeValue(b.phys)}`);
    });
    const latency = options.latencyReads ?? 2;
    if (!Number.isInteger(latency) || latency < 1) throw invalidArgument(`latencyReads must be a positive integer, got ${String(latency)}`);
    if (options.bdf !== undefined && typeof options.bdf !== 'string') throw invalidArgument(`new FakePciDevice() bdf must be a PCI address string such as '0000:00:05.0', got ${describeValue(options.bdf)}`);
    this.bdf = options.bdf ?? '0000:00:00.0';
    this.dma = new FakeDmaDevice(options.pool);
    this.#bars = [...options.bars];
    this.#handlers = this.#bars.map(() => []);
    const irq = checkFakeInterrupts(options.interrupts) ?? { msi: 1, intx: true };
    for (const k of ['msi', 'msix'] as const) {
      const v = irq[k];
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 2048)) throw invalidArgument(`new FakePciDevice() interrupts.${k} must be an integer in [0, 2048], got ${describeValue(v)}`);
    }
    checkBoolean(irq.intx, 'interrupts.intx', 'new FakePciDevice()');
    this.#offered = { msi: irq.msi ?? 0, msix: irq.msix ?? 0, intx: irq.intx ?? false };
    this.#latency = latency;
  }

  /** True once {@link FakePciDevice.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  // ---- the model's side ------------------------------------------------------

  /**
   * Add a register (or a range of them) to BAR `bar`. Later definitions
   * covering the same offset take precedence.
   * @returns this, for chaining.
   * @throws {PhysmemError} EINVAL (no such BAR, range outside it, bad widths).
   */
  defineRegister(bar: number, handler: RegisterHandler): this {
    const b = this.#bars[bar];
    if (b === undefined) throw invalidArgument(`BAR ${String(bar)} of the fake device ${this.bdf} is not implemented`);
    const widths = handler.widths ?? [4];
    if (widths.length === 0 || widths.some((w) => w !== 1 && w !== 2 && w !== 4 && w !== 8)) throw invalidArgument('widths must be a non-empty list of 1, 2, 4, 8');
    const size = handler.size ?? Math.max(...widths);
    if (!Number.isSafeInteger(handler.offset) || handler.offset < 0 || !Number.isSafeInteger(size) || size < 1 || handler.offset + size > b.size) {
      throw invalidArgument(`register [${String(handler.offset)}, +${String(size)}) is outside BAR ${bar} of ${b.size} bytes`);
    }
    this.#handlers[bar].unshift({ ...handler, widths, size });
    return this;
  }

  /**
   * For a model's doorbell: was this write ordered after the driver's
   * stores to DMA memory (see {@link RegisterAccess.ordered})? Records an
   * `'ordering'` violation naming `what` when it was not, and starts a new
   * ordering epoch (a later relaxed doorbell needs a new barrier).
   * @returns `access.ordered`.
   */
  checkOrdered(access: RegisterAccess, what: string): boolean {
    this.#barrierMark = writeBarrierCount();
    if (!access.ordered) {
      this.violation('ordering', `${what}: relaxed write at ${hex(access.offset)} of BAR ${access.bar} with no write barrier (dmaWmb/wmb) since the device last read memory; the device may see stale descriptors or data`);
    }
    return access.ordered;
  }

  /**
   * Run `fn` once the device is "done": before the `latencyReads`-th register
   * read from now, or when the event loop turns, whichever comes first.
   */
  schedule(fn: () => void): void {
    this.#work.push({ fn, reads: this.#latency });
    this.#immediate ??= setImmediate(() => {
      this.#immediate = undefined;
      this.settle();
    });
  }

  /** Run all scheduled work now (a test can call it to let the device finish). */
  settle(): void {
    while (this.#work.length !== 0) {
      const w = this.#work.shift()!;
      w.fn();
    }
  }

  /**
   * The device reads `length` bytes of memory at bus address `bus`.
   * @returns a copy, or undefined when the range is not inside one live buffer (a `'dma'` violation is recorded).
   */
  dmaRead(bus: bigint, length: number): Uint8Array | undefined {
    try {
      return this.dma.read(bus, length);
    } catch (e) {
      this.violation('dma', (e as Error).message);
      return undefined;
    }
  }

  /**
   * The device writes `data` at bus address `bus`.
   * @returns false when the range is not inside one live buffer (nothing is written; a `'dma'` violation is recorded).
   */
  dmaWrite(bus: bigint, data: Uint8Array): boolean {
    try {
      this.dma.write(bus, data);
      return true;
    } catch (e) {
      this.violation('dma', (e as Error).message);
      return false;
    }
  }

  /**
   * Signal interrupt `vector`. MSI/MSI-X: every call is one interrupt. INTx:
   * the line goes high, which is one interrupt only if it was low (lower it
   * with {@link FakePciDevice.lowerInterrupt}). Dropped while interrupts are
   * not enabled, or the vector is not.
   */
  raiseInterrupt(vector = 0): void {
    const v = this.#vectors[vector];
    if (v === undefined) return;
    if (this.#irqType === 'intx') {
      if (v.line) return;
      v.line = true;
    }
    const w = v.waiters.shift();
    if (w === undefined) {
      v.pending++;
      return;
    }
    const n = v.pending + 1; // a wait takes the whole count
    v.pending = 0;
    w.resolve(n);
  }

  /** Lower the INTx line of `vector` (a no-op for MSI/MSI-X). */
  lowerInterrupt(vector = 0): void {
    const v = this.#vectors[vector];
    if (v !== undefined) v.line = false;
  }

  /** The interrupt type enabled by the driver, or undefined. */
  get interruptType(): InterruptType | undefined {
    return this.#irqType;
  }

  /** Record a violation (models call it for their own checks). */
  violation(kind: DeviceViolation['kind'], message: string): void {
    this.violations.push({ kind, message: `${this.bdf}: ${message}` });
  }

  /**
   * Throw if anything was recorded in {@link FakePciDevice.violations}.
   * @throws {PhysmemError} EIO listing every violation.
   */
  assertNoViolations(): void {
    if (this.violations.length === 0) return;
    throw new PhysmemError('EIO', `the driver did ${this.violations.length} thing(s) the device would not forgive:\n` + this.violations.map((v) => `  [${v.kind}] ${v.message}`).join('\n'));
  }

  // ---- the driver's side -----------------------------------------------------

  /**
   * Map BAR `n`: an {@link Mmio} whose accesses go to the model.
   * @throws {PhysmemError} ENOENT (BAR not implemented), EBADF (closed).
   */
  mapBar(n: number): Mmio {
    if (this.#closed) throw new PhysmemError('EBADF', `mapBar on a closed FakePciDevice ${this.bdf}`);
    const b = this.#bars[n];
    if (b === undefined) throw new PhysmemError('ENOENT', `BAR ${String(n)} of the fake device ${this.bdf} is not implemented`);
    const mmio: Mmio = new Mmio({
      kind: 'handlers',
      size: b.size,
      bar: n,
      phys: b.phys ?? 0xfe000000n + BigInt(n) * 0x1000000n,
      path: `fake:${this.bdf}/resource${n}`,
      accessors: this.#accessors(n),
      onClose: () => this.#mmios.delete(mmio),
    });
    this.#mmios.add(mmio);
    return mmio;
  }

  /** @inheritDoc */
  enableInterrupts(options: EnableInterruptsOptions): void {
    if (this.#closed) throw new PhysmemError('EBADF', `enableInterrupts on a closed FakePciDevice ${this.bdf}`);
    const { type, vectors } = checkEnableInterruptsOptions(options);
    const offered = type === 'intx' ? (this.#offered.intx ? 1 : 0) : type === 'msi' ? this.#offered.msi : this.#offered.msix;
    if (vectors > offered) {
      throw invalidArgument(`${this.bdf} offers ${offered} ${type} vector(s); asked for ${String(vectors)}`);
    }
    this.#dropWaiters(`interrupts of ${this.bdf} were reconfigured`);
    this.#irqType = type;
    this.#vectors = Array.from({ length: vectors }, () => ({ pending: 0, line: false, waiters: [] }));
  }

  /** @inheritDoc */
  waitInterrupt(vector: number, options: WaitInterruptOptions = {}): Promise<number> {
    try {
      checkWaitInterruptOptions(options);
    } catch (e) {
      return Promise.reject(e);
    }
    const v = this.#vectors[vector];
    if (this.#closed) return Promise.reject(new PhysmemError('EBADF', `waitInterrupt on a closed FakePciDevice ${this.bdf}`));
    if (v === undefined) {
      return Promise.reject(invalidArgument(`vector ${String(vector)} of ${this.bdf} is not enabled (${this.#irqType ? `${this.#vectors.length} ${this.#irqType} vector(s) are` : 'call enableInterrupts() first'})`));
    }
    const { timeoutMs, signal } = options;
    if (signal?.aborted) return Promise.reject(cancelled(vector, signal));
    if (v.pending > 0) {
      const n = v.pending;
      v.pending = 0;
      return Promise.resolve(n);
    }
    return new Promise<number>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = v.waiters.indexOf(waiter);
        if (i >= 0) v.waiters.splice(i, 1);
      };
      const waiter = {
        resolve: (n: number) => (done(), resolve(n)),
        reject: (e: unknown) => (done(), reject(e)),
      };
      const onAbort = (): void => waiter.reject(cancelled(vector, signal!));
      if (timeoutMs !== undefined && timeoutMs !== Infinity) {
        timer = setTimeout(() => waiter.reject(new PhysmemError('ETIMEDOUT', `no interrupt on vector ${vector} of ${this.bdf} within ${timeoutMs} ms`, {
          hint: 'did the driver ask the device for an interrupt (and enable it), and did the device finish?',
        })), timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      v.waiters.push(waiter);
    });
  }

  /** @inheritDoc */
  interrupts(vector: number, options: InterruptsOptions = {}): AsyncIterableIterator<number> {
    checkInterruptsOptions(options);
    return interruptIterator((v, o) => this.waitInterrupt(v, o), vector, options);
  }

  /** @inheritDoc */
  disableInterrupts(): void {
    this.#dropWaiters(`interrupts of ${this.bdf} were disabled`);
    this.#irqType = undefined;
    this.#vectors = [];
  }

  /** Unmap every BAR, disable interrupts, drop scheduled work. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.disableInterrupts();
    for (const m of [...this.#mmios]) m.close();
    if (this.#immediate) clearImmediate(this.#immediate);
    this.#immediate = undefined;
    this.#work = [];
    this.#closed = true;
  }

  /** Alias of {@link FakePciDevice.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---- internals ---------------------------------------------------------------

  #dropWaiters(why: string): void {
    for (const v of this.#vectors) {
      for (const w of v.waiters.splice(0)) w.reject(new PhysmemError('EBADF', why));
    }
  }

  #handlerAt(bar: number, offset: number): RegisterHandler | undefined {
    for (const h of this.#handlers[bar]) {
      if (offset >= h.offset && offset < h.offset + h.size!) return h;
    }
    return undefined;
  }

  #read(bar: number, offset: number, width: RegisterWidth): number | bigint {
    // The device makes progress while the driver polls it.
    for (const w of [...this.#work]) {
      if (--w.reads <= 0) {
        this.#work.splice(this.#work.indexOf(w), 1);
        w.fn();
      }
    }
    const h = this.#handlerAt(bar, offset);
    const access: RegisterAccess = { bar, offset, width, ordered: true };
    let v: number | bigint | undefined;
    if (h === undefined) this.violation('register', `read${width * 8} at ${hex(offset)} of BAR ${bar}: no register there`);
    else if (!h.widths!.includes(width) || offset + width > h.offset + h.size!) this.violation('register', `read${width * 8} at ${hex(offset)} of BAR ${bar}: the register takes ${h.widths!.join('/')}-byte accesses`);
    else if (h.read) v = h.read(access);
    if (width === 8) return v === undefined ? ALL_ONES_64 : BigInt.asUintN(64, BigInt(v));
    return v === undefined ? ONES[width] : Number(BigInt.asUintN(width * 8, BigInt(v)));
  }

  #write(bar: number, offset: number, width: RegisterWidth, value: number | bigint, release: boolean): void {
    const h = this.#handlerAt(bar, offset);
    const access: RegisterAccess = { bar, offset, width, ordered: release || writeBarrierCount() !== this.#barrierMark };
    if (h === undefined) this.violation('register', `write${width * 8} at ${hex(offset)} of BAR ${bar}: no register there`);
    else if (!h.widths!.includes(width) || offset + width > h.offset + h.size!) this.violation('register', `write${width * 8} at ${hex(offset)} of BAR ${bar}: the register takes ${h.widths!.join('/')}-byte accesses; the write is lost`);
    else h.write?.(value, access);
  }

  #accessors(bar: number): MmioAccessors {
    const r = (w: RegisterWidth) => (_h: number, off: number) => this.#read(bar, off, w) as number;
    const r64 = (_h: number, off: number) => this.#read(bar, off, 8) as bigint;
    const w = (width: RegisterWidth, release: boolean) => (_h: number, off: number, v: number | bigint) => this.#write(bar, off, width, v, release);
    return {
      read8: r(1), read16: r(2), read32: r(4), read64: r64,
      read8Relaxed: r(1), read16Relaxed: r(2), read32Relaxed: r(4), read64Relaxed: r64,
      write8: w(1, true), write16: w(2, true), write32: w(4, true), write64: w(8, true),
      write8Relaxed: w(1, false), write16Relaxed: w(2, false), write32Relaxed: w(4, false), write64Relaxed: w(8, false),
    };
  }
}

function cancelled(vector: number, signal: AbortSignal): PhysmemError {
  return new PhysmemError('ECANCELED', `waiting for an interrupt on vector ${vector} was aborted`, { hint: 'the AbortSignal passed as `signal` fired', cause: signal.reason });
}
