/**
 * Device interrupts as events: the interface every interrupt-capable device
 * of physmem implements (`VfioDevice` over VFIO eventfds, `FakePciDevice` in
 * tests), so a driver is written once against it.
 * @module
 */

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

/** Arguments of {@link InterruptSource.waitInterrupt}. */
export interface WaitInterruptOptions {
  /** Give up after this many milliseconds with a typed `ETIMEDOUT`. Default: wait forever. */
  timeoutMs?: number;
  /** Abort the wait: it rejects with `ECANCELED` (the interrupt, if it comes, is kept). */
  signal?: AbortSignal;
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
  interrupts(vector: number, options?: { signal?: AbortSignal }): AsyncIterableIterator<number>;
  /** Stop delivery; pending waits reject with EBADF. Idempotent. */
  disableInterrupts(): void;
}
