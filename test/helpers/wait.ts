// Assertion and waiting helpers shared by the service tests.
import { expect } from 'vitest';
import { PhysmemError } from '../../lib/errors.js';

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `get` every 10 ms until `ok` accepts its value, and return that value;
 * after `deadlineMs` return the last value anyway, so the caller's assertion
 * fails with it. The deadline only stops a hang: no outcome depends on it.
 */
export async function eventually<T>(get: () => T | Promise<T>, ok: (v: T) => boolean, deadlineMs = 30_000): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await get();
    if (ok(v) || Date.now() > end) return v;
    await sleep(10);
  }
}

/** Expect `p` to reject with a PhysmemError of `code`; returns the error. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<PhysmemError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(PhysmemError);
  expect((e as PhysmemError).code).toBe(code);
  return e as PhysmemError;
}
