// Waiting helpers shared by the service tests (error assertions: ./errors.ts).

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
