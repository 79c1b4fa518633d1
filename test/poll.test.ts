// pollUntil / pollUntilAsync: results, timeouts naming what was awaited,
// aborts, yielding to the event loop, bad options. Outcomes are asserted on
// counts and events, never on how long something took.
import { describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { pollUntil, pollUntilAsync } from '../lib/index.js';

describe('pollUntil (sync)', () => {
  it('returns the first truthy result, calling the predicate until then', () => {
    let calls = 0;
    const v = pollUntil(() => (++calls === 5 ? { entry: 7 } : undefined), { intervalUs: 0, timeoutMs: 600_000 });
    expect(v).toEqual({ entry: 7 });
    expect(calls).toBe(5);
  });

  it('sleeps between polls when intervalUs > 0 and still finds the result', () => {
    let calls = 0;
    // A time limit no stall reaches (the default 1 s could end the wait between two polls).
    expect(pollUntil(() => ++calls >= 3, { intervalUs: 50, timeoutMs: 600_000 })).toBe(true);
    expect(calls).toBe(3);
  });

  it('times out with ETIMEDOUT naming what was awaited and the time limit', () => {
    let calls = 0;
    const err = throwsWith(
      () => pollUntil(() => (calls++, false), { timeoutMs: 5, intervalUs: 200, what: 'edu DMA done' }),
      'ETIMEDOUT',
      /^ETIMEDOUT: edu DMA done did not happen within 5 ms \(waited [\d.]+ ms, \d+ polls\)/,
    );
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(err.message).toContain(`${calls} polls`);
  });

  it('without `what`, the message names the predicate function', () => {
    function dmaIdle(): boolean {
      return false;
    }
    expect(() => pollUntil(dmaIdle, { timeoutMs: 0 })).toThrow(expect.objectContaining({ message: expect.stringMatching(/^ETIMEDOUT: dmaIdle\(\) did not happen within 0 ms/) }));
  });

  it('timeoutMs 0 still calls the predicate once', () => {
    expect(pollUntil(() => 42, { timeoutMs: 0 })).toBe(42);
  });

  it('an aborted signal ends the wait with ECANCELED; predicate errors pass through', () => {
    const ac = new AbortController();
    let calls = 0;
    expect(() => pollUntil(() => (++calls === 3 && ac.abort(new Error('stop')), false), { timeoutMs: Infinity, signal: ac.signal, intervalUs: 0 })).toThrow(
      expect.objectContaining({ code: 'ECANCELED' }),
    );
    expect(calls).toBe(3);
    expect(() => pollUntil(() => false, { signal: ac.signal })).toThrow(expect.objectContaining({ code: 'ECANCELED' }));
    expect(() => pollUntil(() => {
      throw new RangeError('device gone');
    })).toThrow(RangeError);
  });

  it('refuses bad options with EINVAL', () => {
    expect(() => pollUntil(() => true, { timeoutMs: -1 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => pollUntil(() => true, { intervalUs: Number.NaN })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => pollUntil(() => true, { intervalUs: Infinity })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error not a function
    expect(() => pollUntil(5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error not an AbortSignal
    expect(() => pollUntil(() => true, { signal: {} })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('pollUntilAsync', () => {
  it('yields to the event loop between polls: a timer and an immediate set the condition', async () => {
    let ready = false;
    let calls = 0;
    setImmediate(() => setTimeout(() => (ready = true), 1));
    const v = await pollUntilAsync(() => (calls++, ready && 'done'), { intervalUs: 0, timeoutMs: Infinity });
    expect(v).toBe('done');
    expect(calls).toBeGreaterThan(1);
  });

  it('sleeps with a timer for intervals of 1 ms and more, and accepts async predicates', async () => {
    let calls = 0;
    expect(await pollUntilAsync(async () => ++calls === 3, { intervalUs: 1000, timeoutMs: 600_000 })).toBe(true);
    expect(calls).toBe(3);
  });

  it('rejects with ETIMEDOUT naming what was awaited', async () => {
    await expect(pollUntilAsync(() => false, { timeoutMs: 3, intervalUs: 1000, what: 'the completion queue entry' })).rejects.toMatchObject({
      code: 'ETIMEDOUT',
      message: expect.stringMatching(/^ETIMEDOUT: the completion queue entry did not happen within 3 ms/),
    });
  });

  it('an abort during a long pause ends the wait at once with ECANCELED', async () => {
    const ac = new AbortController();
    const p = pollUntilAsync(() => false, { timeoutMs: Infinity, intervalUs: 3_600_000_000, signal: ac.signal, what: 'nothing' });
    setImmediate(() => ac.abort());
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED', message: expect.stringMatching(/waiting for nothing was aborted/) });
  });

  it('bad options reject (not throw) with EINVAL', async () => {
    const p = pollUntilAsync(() => true, { timeoutMs: Number.NaN });
    await expect(p).rejects.toMatchObject({ code: 'EINVAL' });
  });
});
