/**
 * Size classes of the segregated free lists (TLSF-style two-level index)
 * and the alignment arithmetic on addresses held in doubles. (The power-of-two
 * test of option values is lib/internal/validate.ts's.)
 *
 * Sizes below 64 bytes each have their own class; from 64 up every power of
 * two is split into 32 classes, so a class spans at most 1/32 (3 %) of its
 * sizes. That keeps "good fit" close to best fit, which is what keeps
 * fragmentation down (see the W3c benchmark).
 *
 * Everything here works on integers below 2^53 stored in doubles: JS bitwise
 * operators only see 32 bits, so the helpers switch to float arithmetic
 * (exact for powers of two) above 2^32.
 * @internal
 * @module
 */

// Const enums, so that tsc writes the values into the hot paths (see Rec in state.ts).

/** The size-class index. */
export const enum Cls {
  /** log2 of the number of second-level classes per power of two. */
  SL_LOG2 = 5,
  /** Second-level classes per power of two. */
  SL_COUNT = 1 << SL_LOG2,
  /** First-level entries: enough for sizes up to 2^54 (a search size may exceed 2^53). */
  FL_COUNT = 50,
  /** Number of size classes. */
  NCLASS = FL_COUNT * SL_COUNT,
}

/** Powers of two used on addresses held in doubles. */
export const enum Num {
  /** 2^32 as a double. */
  TWO32 = 4294967296,
  /** 2^-32, exact: multiplying by it is an exact division. */
  INV_TWO32 = 1 / TWO32,
  /** 2^53: no address or end of range may exceed it. */
  TWO53 = 9007199254740992,
}

const POW2 = new Float64Array(64);
/** INV_POW2[i] = 2^-i: multiplying by it divides exactly. */
export const INV_POW2 = new Float64Array(64);
for (let i = 0; i < 64; i++) {
  POW2[i] = 2 ** i;
  INV_POW2[i] = 2 ** -i;
}

/** floor(log2(x)) for an integer 1 <= x < 2^64 held in a double. */
export function log2floor(x: number): number {
  return x < Num.TWO32 ? 31 - Math.clz32(x) : 63 - Math.clz32(x * Num.INV_TWO32);
}

/**
 * The class holding free blocks of `size` bytes (rounding down): every block
 * in class c is at least as large as the smallest size mapped to c.
 */
export function classOf(size: number): number {
  if (size < 64) return size;
  const l = log2floor(size);
  // q is the top 6 bits of size: 32..63.
  const q = size < Num.TWO32 ? size >>> (l - Cls.SL_LOG2) : Math.floor(size * INV_POW2[l - Cls.SL_LOG2]);
  return ((l - Cls.SL_LOG2) << Cls.SL_LOG2) + q;
}

/**
 * The smallest class all of whose blocks are >= `size` (rounding up), so the
 * head of any non-empty class >= it fits without looking at it: TLSF's
 * O(1) good fit. May return >= Cls.NCLASS for sizes near 2^54 (then nothing fits).
 */
export function searchClassOf(size: number): number {
  if (size < 64) return size;
  return classOf(size + POW2[log2floor(size) - Cls.SL_LOG2] - 1);
}

/** x mod p for an integer x < 2^53 and a power of two p. */
export function modPow2(x: number, p: number): number {
  // For p <= 2^31 the low 32 bits (x >>> 0 is x mod 2^32) carry the answer.
  return p <= 2147483648 ? (x >>> 0) & (p - 1) : x % p;
}

/** Bytes to add to x to reach the next multiple of the power of two p (0 if aligned). */
export function padTo(x: number, p: number): number {
  const r = modPow2(x, p);
  return r === 0 ? 0 : p - r;
}
