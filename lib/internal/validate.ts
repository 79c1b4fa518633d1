/**
 * The argument checks every public entry point shares: one `hex`, one
 * power-of-two test, one address conversion and one options-object check, so
 * each rule is written once and refuses bad input the same way everywhere.
 * Internal: not exported from a package subpath.
 * @module
 */
import { invalidArgument } from '../errors.js';

/**
 * `0x` plus hex digits, zero-padded to `width` digits when given.
 * @param n - a non-negative integer (number or bigint).
 * @param width - minimum number of digits (default: none).
 * @param upper - upper-case digits (default false: lower case), as some kernel interfaces print them.
 */
export function hex(n: number | bigint, width = 0, upper = false): string {
  const digits = upper ? n.toString(16).toUpperCase() : n.toString(16);
  return '0x' + (width > digits.length ? digits.padStart(width, '0') : digits);
}

/** True for 1, 2, 4, ... 2^52 given as numbers (anything else, including bigints, is false). */
export function isPowerOfTwo(x: unknown): x is number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 1) return false;
  // Bitwise operators see 32 bits; above 2^31 compare with the exact power instead.
  return x <= 0x8000_0000 ? (x & (x - 1)) === 0 : 2 ** Math.round(Math.log2(x)) === x;
}

/**
 * Convert a bigint or number address/offset option to a safe non-negative
 * integer number.
 * @param value - the caller's value.
 * @param name - the option's name, for the message.
 * @throws {PhysmemError} EINVAL when it is not a bigint or number, or not an integer in [0, 2^53).
 */
export function toAddressNumber(value: bigint | number, name: string): number {
  if (typeof value !== 'bigint' && typeof value !== 'number') {
    throw invalidArgument(`${name} must be a bigint or a number, got ${describeValue(value)}`);
  }
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (!Number.isSafeInteger(n) || n < 0 || (typeof value === 'bigint' && BigInt(n) !== value)) {
    throw invalidArgument(`${name} must be a non-negative integer below 2^53, got ${String(value)}`);
  }
  return n;
}

/**
 * `Array.isArray` that keeps a declared array's element type: the built-in
 * narrows a `readonly T[]` to `any[]`, which would let unchecked values through.
 */
export function isArray<T>(value: readonly T[] | null | undefined): value is readonly T[] {
  return Array.isArray(value);
}

/** A short description of a bad value for a message: `null`, `an array`, `function`, `'abc'`, `1.5`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  return typeof value;
}

/** Edit distance (insert, delete, substitute, swap of neighbours), for "did you mean". */
function distance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[(i - 1) * cols + j] + 1, d[i * cols + j - 1] + 1, d[(i - 1) * cols + j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[(i - 2) * cols + j - 2] + 1);
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1];
}

/**
 * The known name closest to `name` (case-insensitive edit distance at most a
 * third of its length, at least 2; or one contains the other), or undefined.
 */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const kl = k.toLowerCase();
    const dist = kl === lower ? 0 : kl.includes(lower) || lower.includes(kl) ? 1 : distance(lower, kl);
    if (dist < bestDistance) {
      bestDistance = dist;
      best = k;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

/**
 * A checker for one options object of the public API: it refuses a value
 * that is not a plain object (null, an array, a number, ...) and any property
 * name it does not know, so a misspelt option (`alignment` for `align`)
 * cannot be silently ignored. Built once per entry point; the check itself
 * is one `for...in` over the caller's keys, each compared with the known
 * names (a Set lookup past 16 names).
 * @param where - the entry point, for messages, e.g. `'pool.alloc()'`.
 * @param names - every option name the entry point accepts.
 * @returns a function that returns its argument, typed, or throws.
 */
export function optionsChecker(where: string, names: readonly string[]): <T extends object>(options: T | undefined) => T | undefined {
  const known = new Set(names);
  const fail = (options: unknown, key?: string): never => {
    if (key === undefined) {
      throw invalidArgument(`${where} options must be an object, got ${describeValue(options)}`, `Pass an object such as { ${names[0] ?? ''}: ... } or leave it out.`);
    }
    const guess = closestName(key, names);
    throw invalidArgument(
      `unknown option '${key}' for ${where}${guess === undefined ? '' : `; did you mean '${guess}'?`}`,
      `${where} accepts: ${names.join(', ')}.`,
    );
  };
  // Up to 16 names, a loop of string compares (option names are internalized: pointer compares)
  // beats Set.has here; the per-call cost is one for...in over the caller's keys.
  const list = names.length <= 16 ? names.slice() : undefined;
  return <T extends object>(options: T | undefined): T | undefined => {
    if (options === undefined) return undefined;
    if (typeof options !== 'object' || options === null || Array.isArray(options)) return fail(options);
    for (const key in options) {
      if (list === undefined) {
        if (!known.has(key)) fail(options, key);
        continue;
      }
      let i = 0;
      while (i < list.length && list[i] !== key) i++;
      if (i === list.length) fail(options, key);
    }
    return options;
  };
}

/**
 * Every option name of `T`, checked by the compiler both ways: the record
 * must list each key of `T` (a new option cannot be forgotten) and nothing
 * else (an excess key is a compile error). For {@link optionsChecker}.
 * @example optionNames<MapBarOptions>({ writeCombining: true }) // ['writeCombining']
 */
export function optionNames<T extends object>(names: { readonly [K in keyof Required<T>]: true }): (keyof T & string)[] {
  return Object.keys(names) as (keyof T & string)[];
}

/** The longest timer Node.js honours: setTimeout clamps anything longer to 1 ms. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Check a `timeoutMs` option (or another duration, named by `name`): an integer number of milliseconds in
 * [0, 2^31 - 1] (the longest timer Node.js runs; longer ones it would fire
 * after 1 ms), or `Infinity` where `infinite` says it means "no limit".
 * @param value - the caller's value; undefined passes (no timeout).
 * @param where - the entry point, for the message, e.g. `'pool.allocAsync()'`.
 * @param infinite - also accept `Infinity` (no limit). Default false.
 * @param name - the option's name, for the message. Default `'timeoutMs'`.
 * @throws {PhysmemError} EINVAL naming the option and the accepted range.
 */
export function checkTimeoutMs(value: unknown, where: string, infinite = false, name = 'timeoutMs'): void {
  if (value === undefined) return;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_TIMEOUT_MS) return;
  if (infinite && value === Infinity) return;
  throw invalidArgument(
    `${where} ${name} must be an integer number of milliseconds from 0 to 2^31 - 1${infinite ? ' or Infinity' : ''}, got ${describeValue(value)}`,
    infinite ? 'For no limit pass Infinity; 2^31 - 1 ms is about 24.8 days.' : `Leave ${name} out for the default; 2^31 - 1 ms is about 24.8 days.`,
  );
}

/**
 * Convert a `busOffset` option (bus = phys + busOffset; may be negative) to a bigint.
 * @param value - a bigint or an integer number; undefined means 0.
 * @throws {PhysmemError} EINVAL for anything else (1.5, 'abc', {}, NaN).
 */
export function toBusOffset(value: unknown, name = 'busOffset'): bigint {
  if (value === undefined) return 0n;
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw invalidArgument(`${name} must be a bigint or an integer number of bytes, got ${describeValue(value)}`, 'Pass e.g. 0x4000_0000n or -0x8000_0000.');
}

/**
 * Check an optional boolean option.
 * @throws {PhysmemError} EINVAL naming the option when it is neither undefined nor a boolean.
 */
export function checkBoolean(value: unknown, name: string, where: string): void {
  if (value !== undefined && typeof value !== 'boolean') throw invalidArgument(`${where} ${name} must be true or false, got ${describeValue(value)}`);
}

/**
 * Check an optional AbortSignal option.
 * @throws {PhysmemError} EINVAL when it is neither undefined nor an AbortSignal.
 */
export function checkSignal(value: unknown, where: string): void {
  if (value !== undefined && !(value instanceof AbortSignal)) throw invalidArgument(`${where} signal must be an AbortSignal, got ${describeValue(value)}`);
}

/**
 * Check an optional path (or other string) option.
 * @param allowEmpty - accept `''` (a root prefix, where '' means `/`). Default false.
 * @throws {PhysmemError} EINVAL naming the option when it is neither undefined nor a (non-empty) string.
 */
export function checkPath(value: unknown, name: string, where: string, allowEmpty = false): void {
  if (value !== undefined && (typeof value !== 'string' || (value === '' && !allowEmpty))) {
    throw invalidArgument(`${where} ${name} must be a ${allowEmpty ? '' : 'non-empty '}string, got ${describeValue(value)}`);
  }
}
