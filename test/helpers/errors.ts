// The error assertions every test uses: a call must fail with a PhysmemError
// of one code (and optionally a message), and the test gets that error back to
// check its other fields. One copy here instead of a local helper per file.
import { expect } from 'vitest';
import { PhysmemError } from '../../lib/errors.js';

/** What a message assertion accepts: a RegExp, or a string the message must contain. */
export type MessagePattern = RegExp | string;

function describeOutcome(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return `${typeof e} ${String(e)}`;
}

/** Asserts `e` is a PhysmemError with `code` whose message matches `message`; returns it typed. */
function physmemError(e: unknown, code: string, message: MessagePattern | undefined): PhysmemError {
  if (!(e instanceof PhysmemError)) return expect.unreachable(`expected a PhysmemError ${code}, got ${describeOutcome(e)}`);
  expect(e.code, e.message).toBe(code);
  if (message !== undefined) expect(e.message).toMatch(message);
  return e;
}

/**
 * Calls `fn`, which must throw a PhysmemError with `code` (and, if given, a
 * message matching `message`); returns the error for further checks.
 */
export function throwsWith(fn: () => unknown, code: string, message?: MessagePattern): PhysmemError {
  try {
    fn();
  } catch (e) {
    return physmemError(e, code, message);
  }
  return expect.unreachable(`expected a PhysmemError ${code}, but nothing was thrown`);
}

/**
 * Awaits `p`, which must reject with a PhysmemError with `code` (and, if given,
 * a message matching `message`); returns the error for further checks.
 */
export async function rejectsWith(p: PromiseLike<unknown>, code: string, message?: MessagePattern): Promise<PhysmemError> {
  let value: unknown;
  try {
    value = await p;
  } catch (e) {
    return physmemError(e, code, message);
  }
  return expect.unreachable(`expected a rejection with a PhysmemError ${code}, but it resolved to ${describeOutcome(value)}`);
}

/**
 * For an API that is synchronous on one kind of pool and asynchronous on
 * another: calls `fn`, which must throw or return a promise that rejects with
 * a PhysmemError with `code` (and, if given, a message matching `message`).
 */
export async function failsWith(fn: () => unknown, code: string, message?: MessagePattern): Promise<PhysmemError> {
  return rejectsWith(new Promise((resolve) => resolve(fn())), code, message);
}
