/**
 * Polling with a deadline: wait for a device to set a status bit, clear a
 * busy bit, or write a completion, without each driver writing its own loop.
 * @module
 */
import { PhysmemError, invalidArgument } from './errors.js';
import { checkSignal, checkTimeoutMs, describeValue, optionNames, optionsChecker } from './internal/validate.js';

/** Options of {@link pollUntil} and {@link pollUntilAsync}; unknown names are refused with EINVAL. */
export interface PollOptions {
  /**
   * Give up after this many milliseconds with `ETIMEDOUT`: an integer from 0
   * to 2^31 - 1, or `Infinity` to wait forever (then only `signal` ends the
   * wait); anything else is EINVAL. Default 1000.
   */
  timeoutMs?: number;
  /**
   * Pause between two calls of the predicate, in microseconds. Default 100.
   * `pollUntil`: 0 spins without pausing; otherwise the thread sleeps (Atomics.wait)
   * so it does not burn a CPU. `pollUntilAsync`: below 1000 the loop yields
   * to the event loop once (setImmediate) between calls; from 1000 on it
   * sleeps with a timer of `intervalUs / 1000` ms.
   */
  intervalUs?: number;
  /** Stop waiting: throws (or rejects with) `ECANCELED`. Checked between calls of the predicate. */
  signal?: AbortSignal;
  /** What is awaited, for the timeout message, e.g. `'edu DMA done (cmd bit 0 clear)'`. Default: the predicate's name. */
  what?: string;
}

/** A value that ends the poll: anything truthy. */
type Truthy<T> = Exclude<T, false | 0 | 0n | '' | null | undefined>;

// A private cell to sleep on: Atomics.wait with a timeout is a sub-millisecond sleep.
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * Call `predicate` until it returns something truthy, and return that value;
 * between calls pause `intervalUs`. Blocks the thread (use
 * {@link pollUntilAsync} where the event loop must keep running). The
 * predicate is always called at least once, and once more after the deadline
 * passed before giving up, so a slow pause never loses a result.
 *
 * @example
 * pollUntil(() => (regs.read32(0x98) & 1) === 0, { timeoutMs: 5000, what: 'DMA done' });
 * @returns the predicate's first truthy result.
 * @throws {PhysmemError} ETIMEDOUT (naming `what` and the time waited), ECANCELED (`signal` aborted),
 *   EINVAL (bad options); whatever the predicate throws.
 */
export function pollUntil<T>(predicate: () => T, options: PollOptions = {}): Truthy<T> {
  const { timeoutMs, intervalMs, signal } = checkOptions(predicate, options);
  const start = performance.now();
  const deadline = start + timeoutMs;
  let polls = 0;
  for (;;) {
    const v = predicate();
    polls++;
    if (v) return v as Truthy<T>;
    if (signal?.aborted) throw cancelled(options, signal);
    const now = performance.now();
    if (now >= deadline) throw timedOut(predicate, options, now - start, polls);
    if (intervalMs > 0) Atomics.wait(sleepCell, 0, 0, Math.min(intervalMs, deadline - now));
  }
}

/**
 * {@link pollUntil} that lets the event loop run between calls of the
 * predicate (other I/O, timers, interrupts delivered as events).
 * @returns a Promise of the predicate's first truthy result (the predicate may itself be async).
 * @throws {PhysmemError} (as a rejection) ETIMEDOUT, ECANCELED, EINVAL; whatever the predicate throws.
 */
export async function pollUntilAsync<T>(predicate: () => T | Promise<T>, options: PollOptions = {}): Promise<Truthy<T>> {
  const { timeoutMs, intervalMs, signal } = checkOptions(predicate, options);
  const start = performance.now();
  const deadline = start + timeoutMs;
  let polls = 0;
  for (;;) {
    const v = await predicate();
    polls++;
    if (v) return v as Truthy<T>;
    if (signal?.aborted) throw cancelled(options, signal);
    const now = performance.now();
    if (now >= deadline) throw timedOut(predicate, options, now - start, polls);
    await pause(intervalMs, deadline - now, signal);
  }
}

function pause(intervalMs: number, leftMs: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (intervalMs < 1) {
      setImmediate(resolve);
      return;
    }
    // An abort ends the pause early; the loop then sees signal.aborted.
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.min(intervalMs, leftMs));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const checkPollOptions = optionsChecker('pollUntil()', optionNames<PollOptions>({ timeoutMs: true, intervalUs: true, signal: true, what: true }));

function checkOptions(predicate: unknown, options: PollOptions): { timeoutMs: number; intervalMs: number; signal: AbortSignal | undefined } {
  if (typeof predicate !== 'function') throw invalidArgument(`pollUntil(): predicate must be a function, got ${describeValue(predicate)}`);
  checkPollOptions(options);
  const { timeoutMs = 1000, intervalUs = 100, signal, what } = options;
  checkTimeoutMs(timeoutMs, 'pollUntil()', true);
  if (typeof intervalUs !== 'number' || !(intervalUs >= 0) || !Number.isFinite(intervalUs)) {
    throw invalidArgument(`pollUntil() intervalUs must be a non-negative finite number, got ${describeValue(intervalUs)}`);
  }
  checkSignal(signal, 'pollUntil()');
  if (what !== undefined && typeof what !== 'string') throw invalidArgument(`pollUntil() what must be a string, got ${describeValue(what)}`);
  if (signal?.aborted) throw cancelled(options, signal);
  return { timeoutMs, intervalMs: intervalUs / 1000, signal };
}

function describeWhat(predicate: () => unknown, options: PollOptions): string {
  return options.what ?? (predicate.name ? `${predicate.name}()` : 'the polled condition');
}

function timedOut(predicate: () => unknown, options: PollOptions, elapsedMs: number, polls: number): PhysmemError {
  return new PhysmemError(
    'ETIMEDOUT',
    `${describeWhat(predicate, options)} did not happen within ${options.timeoutMs ?? 1000} ms (waited ${elapsedMs.toFixed(1)} ms, ${polls} polls)`,
    { hint: 'check that the device is enabled and may master the bus, and that it was given valid addresses; raise timeoutMs for slow devices' },
  );
}

function cancelled(options: PollOptions, signal: AbortSignal): PhysmemError {
  return new PhysmemError('ECANCELED', `waiting for ${options.what ?? 'the polled condition'} was aborted`, {
    hint: 'the AbortSignal passed as `signal` fired',
    cause: signal.reason,
  });
}
