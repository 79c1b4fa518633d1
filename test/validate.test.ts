import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_TIMEOUT_MS, checkTimeoutMs, closestName, hex, isPowerOfTwo, optionNames, optionsChecker, toAddressNumber, toBusOffset } from '../lib/internal/validate.js';
import { throwsWith } from './helpers/errors.js';

describe('internal/validate', () => {
  it('hex pads to a width and takes numbers and bigints', () => {
    expect(hex(255)).toBe('0xff');
    expect(hex(0x1_0000_0000n)).toBe('0x100000000');
    expect(hex(5, 4)).toBe('0x0005');
    expect(hex(0xabcn, 4, true)).toBe('0x0ABC');
  });

  it('checkTimeoutMs takes integers from 0 to 2^31 - 1 (and Infinity only where it means no limit)', () => {
    for (const ok of [undefined, 0, 1, MAX_TIMEOUT_MS]) checkTimeoutMs(ok, 'x()');
    checkTimeoutMs(Infinity, 'x()', true);
    for (const bad of [-1, 1.5, NaN, 2 ** 31, 2 ** 40, Infinity, '5', null, 5n]) throwsWith(() => checkTimeoutMs(bad, 'x()'), 'EINVAL', 'x() timeoutMs');
  });

  it('toBusOffset takes bigints and integer numbers, negative too, and refuses the rest', () => {
    expect(toBusOffset(undefined)).toBe(0n);
    expect(toBusOffset(-0x1000)).toBe(-0x1000n);
    expect(toBusOffset(2n ** 70n)).toBe(2n ** 70n);
    for (const bad of [1.5, 'abc', {}, NaN, Infinity, null, 2 ** 60]) throwsWith(() => toBusOffset(bad), 'EINVAL', 'busOffset');
  });

  it('optionNames lists every key of the record it is given', () => {
    expect(optionNames<{ a?: number; b: string }>({ a: true, b: true })).toEqual(['a', 'b']);
  });

  it('isPowerOfTwo agrees with the exact definition over the whole safe range', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 52 }).map((k) => 2 ** k), fc.integer({ min: -10, max: 2 ** 31 + 10 }), fc.double()), (x) => {
        const exact = Number.isSafeInteger(x) && x >= 1 && Number.isInteger(Math.log2(x)) && 2 ** Math.log2(x) === x;
        expect(isPowerOfTwo(x)).toBe(exact);
      }),
    );
    expect(isPowerOfTwo(2 ** 53)).toBe(false);
    expect(isPowerOfTwo(3 * 2 ** 40)).toBe(false);
    expect(isPowerOfTwo(4n)).toBe(false);
  });

  it('toAddressNumber refuses what is not an exact non-negative integer below 2^53, naming the option', () => {
    expect(toAddressNumber(0x1000n, 'at')).toBe(0x1000);
    for (const bad of [1.5, -1, 2 ** 53, 2n ** 53n, -1n, Infinity, NaN, 'abc', null, {}]) {
      throwsWith(() => toAddressNumber(bad as number, 'busOffset'), 'EINVAL', 'busOffset');
    }
  });

  it('closestName suggests near misses and nothing for unrelated words', () => {
    const names = ['align', 'at', 'boundary', 'maxAddress', 'zero'];
    expect(closestName('alignment', names)).toBe('align');
    expect(closestName('maxaddress', names)).toBe('maxAddress');
    expect(closestName('bondary', names)).toBe('boundary');
    expect(closestName('colour', names)).toBeUndefined();
  });

  it('optionsChecker refuses non-objects and unknown names with EINVAL, did-you-mean and the list', () => {
    const check = optionsChecker('pool.alloc()', ['align', 'boundary']);
    const ok = { align: 64 };
    expect(check(ok)).toBe(ok);
    expect(check(undefined)).toBeUndefined();
    const unknown = throwsWith(() => check({ alignment: 1 << 20 }), 'EINVAL');
    expect(unknown.message).toMatch(/unknown option 'alignment' for pool\.alloc\(\); did you mean 'align'\?/);
    expect(unknown.message).toContain('align, boundary');
    for (const bad of [null, 5, 'x', [1], () => 1]) {
      throwsWith(() => check(bad as object), 'EINVAL', 'options must be an object');
    }
    // An own '__proto__' and inherited enumerable names are names too.
    throwsWith(() => check(JSON.parse('{"__proto__": 1}') as object), 'EINVAL', "unknown option '__proto__'");
    throwsWith(() => check(Object.create({ sneaky: 1 }) as object), 'EINVAL', "unknown option 'sneaky'");
  });
});
