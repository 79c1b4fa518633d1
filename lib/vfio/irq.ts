/**
 * Device interrupts as events: the interface every interrupt-capable device
 * of physmem implements (`VfioDevice` over VFIO eventfds, `FakePciDevice` in
 * tests), so a driver is written once against it.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { native, toPhysmemError } from '../native.js';
import { checkSignal, checkTimeoutMs, describeValue, optionNames, optionsChecker } from '../internal/validate.js';

/** Which interrupt mechanism to enable. */
export type InterruptType = 'msix' | 'msi' | 'intx';

/** Arguments of {@link InterruptSource.enableInterrupts}. */
export interface EnableInterruptsOptions {
  /** `'msix'`, `'msi'` or `'intx'` (INTx has exactly one vector). */
  type: InterruptType;
  /**
   * Number of vectors to enable, vectors 0 to `vectors - 1`. Default 1.
   * At most what the device offers for `type` (MSI: a power of two is not
   * required by physmem; the kernel rounds up).
   */
  vectors?: number;
}

/** Arguments of {@link InterruptSource.waitInterrupt}; unknown names are refused with EINVAL. */
export interface WaitInterruptOptions {
  /**
   * Give up after this many milliseconds with a typed `ETIMEDOUT`: an integer
   * from 0 to 2^31 - 1, or `Infinity`; anything else is EINVAL. Default: wait forever.
   */
  timeoutMs?: number;
  /** Abort the wait: it rejects with `ECANCELED` (the interrupt, if it comes, is kept). */
  signal?: AbortSignal;
}

/** Arguments of {@link InterruptSource.interrupts}; unknown names are refused with EINVAL. */
export interface InterruptsOptions {
  /** End the iteration when this aborts. */
  signal?: AbortSignal;
}

const enableChecker = optionsChecker('enableInterrupts()', optionNames<EnableInterruptsOptions>({ type: true, vectors: true }));
const waitChecker = optionsChecker('waitInterrupt()', optionNames<WaitInterruptOptions>({ timeoutMs: true, signal: true }));
const iterateChecker = optionsChecker('interrupts()', optionNames<InterruptsOptions>({ signal: true }));

/**
 * Check the options of {@link InterruptSource.enableInterrupts} as every
 * implementation must: an object with known names, a known `type`, `vectors`
 * an integer in [1, 2048] (whether the device offers that many is the caller's check).
 * @returns `type` and `vectors` (default 1).
 * @throws {PhysmemError} EINVAL naming the option.
 */
export function checkEnableInterruptsOptions(options: EnableInterruptsOptions): { type: InterruptType; vectors: number } {
  if (options === undefined) throw invalidArgument("enableInterrupts() needs options { type, vectors }, e.g. { type: 'msi' }");
  enableChecker(options);
  const { type } = options;
  const vectors = options.vectors ?? 1;
  if (type !== 'msix' && type !== 'msi' && type !== 'intx') throw invalidArgument(`enableInterrupts() type must be 'msix', 'msi' or 'intx', got ${describeValue(type)}`);
  if (!Number.isInteger(vectors) || vectors < 1 || vectors > 2048) throw invalidArgument(`enableInterrupts() vectors must be an integer in [1, 2048], got ${describeValue(vectors)}`);
  return { type, vectors };
}

/**
 * Check the options of {@link InterruptSource.waitInterrupt}.
 * @throws {PhysmemError} EINVAL naming the option (unknown name, timeoutMs outside [0, 2^31 - 1] and not Infinity, signal not an AbortSignal).
 */
export function checkWaitInterruptOptions(options: WaitInterruptOptions | undefined): void {
  waitChecker(options);
  if (options === undefined) return;
  checkTimeoutMs(options.timeoutMs, 'waitInterrupt()', true);
  checkSignal(options.signal, 'waitInterrupt()');
}

/**
 * Check the options of {@link InterruptSource.interrupts}.
 * @throws {PhysmemError} EINVAL naming the option.
 */
export function checkInterruptsOptions(options: InterruptsOptions | undefined): void {
  iterateChecker(options);
  if (options !== undefined) checkSignal(options.signal, 'interrupts()');
}

/**
 * Interrupts of a device, one counter per vector. Delivery is level-free:
 * every interrupt adds one to its vector's counter, and a wait takes the
 * whole counter (the count since the last one taken), so an interrupt that
 * arrives while nobody waits is not lost, and several that arrive between
 * two waits are reported as one wake-up with their number.
 */
export interface InterruptSource {
  /**
   * Route the device's interrupts of `type` to this process, vectors
   * `0..vectors-1`. Replaces any previous configuration.
   * @throws {PhysmemError} EINVAL (type or count not offered by the device), EBADF (closed).
   */
  enableInterrupts(options: EnableInterruptsOptions): void;
  /**
   * Wait for the next interrupt on `vector` (or take one that already came).
   * @returns the number of interrupts since the last one taken on that vector (>= 1).
   * @throws {PhysmemError} ETIMEDOUT (timeoutMs elapsed), ECANCELED (signal aborted),
   *   EBADF (interrupts disabled or device closed while waiting), EINVAL (vector not enabled).
   */
  waitInterrupt(vector: number, options?: WaitInterruptOptions): Promise<number>;
  /**
   * The interrupts of `vector` as an async iterator of counts; ends when
   * interrupts are disabled or the device closed, or when `signal` aborts.
   */
  interrupts(vector: number, options?: InterruptsOptions): AsyncIterableIterator<number>;
  /** Stop delivery; pending waits reject with EBADF. Idempotent. */
  disableInterrupts(): void;
}

/**
 * The async iterator of {@link InterruptSource.interrupts} on top of a
 * `waitInterrupt`: each step waits for the next delivery (so INTx is
 * unmasked only when the consumer asks for more); ends on EBADF (disabled,
 * closed) or ECANCELED (the signal). For implementers of InterruptSource.
 */
export async function* interruptIterator(
  wait: (vector: number, options: WaitInterruptOptions) => Promise<number>,
  vector: number,
  options: { signal?: AbortSignal } = {},
): AsyncGenerator<number, void, undefined> {
  for (;;) {
    try {
      yield await wait(vector, { signal: options.signal });
    } catch (e) {
      if (e instanceof PhysmemError && (e.code === 'EBADF' || e.code === 'ECANCELED')) return;
      throw e;
    }
  }
}

// ---- the VFIO implementation ------------------------------------------------

/** VFIO_PCI_*_IRQ_INDEX for each interrupt type. */
export const VFIO_IRQ_INDEX: Readonly<Record<InterruptType, number>> = Object.freeze({ intx: 0, msi: 1, msix: 2 });

interface Waiter {
  resolve(count: number): void;
  reject(e: Error): void;
}

interface Vector {
  efd: number;
  watch: number;
  pending: number;
  waiters: Waiter[];
  /** INTx only: the kernel masked the line when it fired; unmask when the consumer asks for the next one. */
  masked: boolean;
}

/** What {@link VfioInterrupts} needs of its device. @internal */
export interface InterruptHost {
  /** The device fd (throws EBADF once closed). */
  readonly fd: number;
  /** For messages: `0000:00:03.0`. */
  readonly label: string;
  /** VFIO_DEVICE_GET_IRQ_INFO for an index. */
  irqCount(index: number): number;
  /** Deliveries that no waiter took go here first (the device's 'interrupt' event); returns true when taken. */
  emit(vector: number, count: number): boolean;
}

/**
 * Interrupts of a VFIO device through eventfds (VFIO_DEVICE_SET_IRQS) watched
 * by the addon on the event loop. One eventfd and one libuv poll handle per
 * vector; no thread.
 *
 * Each delivery (the eventfd counter read at once, so several interrupts
 * that came together count as one delivery of `n`) goes to the oldest
 * waiter of its vector, else to the device's `'interrupt'` listeners, else
 * into the vector's pending count, which the next wait takes at once.
 * INTx is level-triggered and masked by the kernel when it fires; it is
 * unmasked when the consumer asks for the next interrupt (waitInterrupt, the
 * iterator's next step) or after the 'interrupt' listeners returned, i.e.
 * once the driver has serviced (acknowledged) the device.
 * @internal Use VfioDevice's methods.
 */
export class VfioInterrupts {
  readonly #host: InterruptHost;
  #type: InterruptType | undefined;
  #vectors: Vector[] = [];

  constructor(host: InterruptHost) {
    this.#host = host;
  }

  /** The enabled type, or undefined. */
  get type(): InterruptType | undefined {
    return this.#type;
  }

  /** Number of enabled vectors (0 when disabled). */
  get vectorCount(): number {
    return this.#vectors.length;
  }

  /** See {@link InterruptSource.enableInterrupts}. */
  enable(options: EnableInterruptsOptions): void {
    const { type, vectors } = checkEnableInterruptsOptions(options);
    const fd = this.#host.fd;
    const index = VFIO_IRQ_INDEX[type];
    const offered = this.#host.irqCount(index);
    if (vectors > offered) {
      const all = (['msix', 'msi', 'intx'] as const).map((t) => `${t}: ${this.#host.irqCount(VFIO_IRQ_INDEX[t])}`).join(', ');
      throw new PhysmemError('EINVAL', `${this.#host.label} offers ${offered} ${type} vector(s), ${vectors} asked`, {
        hint: `vectors it offers: ${all}`,
      });
    }
    this.disable();
    const n = native();
    const made: Vector[] = [];
    try {
      for (let v = 0; v < vectors; v++) {
        const efd = n.eventfdCreate();
        const vec: Vector = { efd, watch: 0, pending: 0, waiters: [], masked: false };
        made.push(vec);
        vec.watch = n.eventfdWatch(efd, (count) => this.#deliver(v, count));
        n.eventfdWatchRef(vec.watch, false); // only waiters keep the process alive
      }
      n.vfioIrqSetEventfds(fd, index, 0, made.map((m) => m.efd));
    } catch (e) {
      for (const m of made) release(m);
      throw toPhysmemError(e, this.#host.label, `could not route ${type} to eventfds; see dmesg`);
    }
    this.#type = type;
    this.#vectors = made;
  }

  /** See {@link InterruptSource.disableInterrupts}. */
  disable(): void {
    const type = this.#type;
    if (type === undefined) return;
    const vectors = this.#vectors;
    this.#type = undefined;
    this.#vectors = [];
    try {
      native().vfioIrqDisable(this.#host.fd, VFIO_IRQ_INDEX[type]);
    } catch {
      /* the device fd is closing or closed: the kernel tears the routing down with it */
    }
    for (const vec of vectors) {
      release(vec);
      const gone = new PhysmemError('EBADF', `interrupts of ${this.#host.label} were disabled while waiting`, { hint: 'enableInterrupts() again to wait' });
      for (const w of vec.waiters.splice(0)) w.reject(gone);
    }
  }

  /** See {@link InterruptSource.waitInterrupt}; for INTx also unmasks the line first. */
  wait(vector: number, options: WaitInterruptOptions = {}): Promise<number> {
    let vec: Vector;
    try {
      vec = this.#vector(vector, 'waitInterrupt');
      checkWaitInterruptOptions(options);
      if (vec.masked) this.#unmask(vec);
    } catch (e) {
      return Promise.reject(e);
    }
    if (vec.pending > 0) {
      const c = vec.pending;
      vec.pending = 0;
      return Promise.resolve(c);
    }
    const { timeoutMs, signal } = options;
    if (signal?.aborted) return Promise.reject(canceled(this.#host.label, vector));
    return new Promise<number>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = vec.waiters.indexOf(w);
        if (i >= 0) vec.waiters.splice(i, 1);
        if (vec.waiters.length === 0 && this.#vectors.includes(vec)) native().eventfdWatchRef(vec.watch, false);
      };
      const w: Waiter = {
        resolve: (c) => { done(); resolve(c); },
        reject: (e) => { done(); reject(e); },
      };
      const onAbort = (): void => w.reject(canceled(this.#host.label, vector));
      if (timeoutMs !== undefined && timeoutMs !== Infinity) {
        timer = setTimeout(() => w.reject(new PhysmemError('ETIMEDOUT', `no interrupt on vector ${vector} of ${this.#host.label} within ${timeoutMs} ms`, {
          hint: 'check that the device was told to raise one, that bus mastering is on for MSI (setBusMaster(true)), and the type enabled',
        })), timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      if (vec.waiters.length === 0) native().eventfdWatchRef(vec.watch, true);
      vec.waiters.push(w);
    });
  }

  /** See {@link InterruptSource.interrupts}. @throws {PhysmemError} EBADF (not enabled), EINVAL (no such vector). */
  iterate(vector: number, options: InterruptsOptions = {}): AsyncGenerator<number, void, undefined> {
    checkInterruptsOptions(options);
    this.#vector(vector, 'interrupts');
    return interruptIterator((v, o) => this.wait(v, o), vector, options);
  }

  #deliver(vector: number, count: number): void {
    const vec = this.#vectors[vector];
    if (vec === undefined) return;
    if (this.#type === 'intx') vec.masked = true;
    const w = vec.waiters[0];
    if (w !== undefined) {
      w.resolve(count + vec.pending);
      vec.pending = 0;
    } else if (this.#host.emit(vector, count + vec.pending)) {
      vec.pending = 0;
      // The listeners ran synchronously (and serviced the device): take the next one.
      if (vec.masked && this.#vectors[vector] === vec) this.#unmask(vec);
    } else {
      vec.pending += count;
    }
  }

  #unmask(vec: Vector): void {
    vec.masked = false;
    try {
      native().vfioIrqUnmask(this.#host.fd, VFIO_IRQ_INDEX.intx, 0);
    } catch (e) {
      throw toPhysmemError(e, this.#host.label);
    }
  }

  #vector(vector: number, op: string): Vector {
    void this.#host.fd; // EBADF once closed
    if (this.#type === undefined) {
      throw new PhysmemError('EBADF', `${op}: interrupts of ${this.#host.label} are not enabled`, { hint: "call enableInterrupts({ type: 'msi' }) (or 'msix', 'intx') first" });
    }
    const vec = Number.isInteger(vector) ? this.#vectors[vector] : undefined;
    if (vec === undefined) throw invalidArgument(`${op}: vector must be an integer in [0, ${this.#vectors.length - 1}], got ${String(vector)}`);
    return vec;
  }
}

function release(vec: Vector): void {
  const n = native();
  try {
    if (vec.watch !== 0) n.eventfdUnwatch(vec.watch);
  } finally {
    n.close(vec.efd);
  }
}

function canceled(label: string, vector: number): PhysmemError {
  return new PhysmemError('ECANCELED', `waiting for an interrupt on vector ${vector} of ${label} was aborted`);
}
