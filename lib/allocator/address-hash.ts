/**
 * The address hash of a {@link AllocatorState}: open addressing with linear
 * probing, backward-shift deletion and load <= 1/2, from each live block's
 * start address to its node, for `free(address)`, `sizeOf` and `ownerOf`.
 * Built lazily ({@link ensureHash}): callers that free by handle, as Pool
 * can, never pay for it.
 *
 * Entries are int32 pairs: the node, and the home slot of its address. The
 * key itself is read from the node only to confirm a match, so deletion
 * shifts entries without touching other nodes' records (the costly part of
 * `free` before). `free` and `takeLow` in range-allocator.ts inline copies
 * of hashOf, hashDelete's loop and hashInsert.
 * @internal
 * @module
 */
import { Num } from './size-class.js';
import { type AllocatorState, Rec } from './state.js';

/** Slots of a fresh table. */
const INITIAL_HASH = 256;

/** Forget the table (until {@link ensureHash}); the hot paths stop maintaining it. */
export function dropHash(st: AllocatorState): void {
  st.hashOn = false;
  st.HT = new Int32Array(0);
  st.htMask = 0;
  st.htShift = 0;
  st.htCount = 0;
}

/** Build the table from every live block if it is not built: call before any lookup. */
export function ensureHash(st: AllocatorState): void {
  if (st.hashOn) return;
  let cap = INITIAL_HASH;
  while (cap < 2 * st.counts[1] + 2) cap *= 2;
  hashInit(st, cap);
  st.hashOn = true;
  const I = st.I;
  for (let r = 0; r < st.nRanges; r++) {
    const tail = st.rTail[r];
    for (let n = I[st.rHead[r] * Rec.NI + Rec.PNEXT]; n !== tail; n = I[n * Rec.NI + Rec.PNEXT]) {
      if (I[n * Rec.NI + Rec.META] >= 0) hashInsert(st, n, st.F[n * Rec.NF]);
    }
  }
}

/** A fresh empty table of `cap` slots (a power of two). */
export function hashInit(st: AllocatorState, cap: number): void {
  st.HT = new Int32Array(2 * cap).fill(-1);
  st.htMask = cap - 1;
  st.htShift = 32 - (31 - Math.clz32(cap));
  st.htCount = 0;
}

/**
 * Home slot of address a: Fibonacci hashing of both 32-bit halves
 * (addresses reach 2^53; `a >>> 0` is a mod 2^32).
 */
export function hashOf(st: AllocatorState, a: number): number {
  return (Math.imul((a >>> 0) ^ Math.imul((a * Num.INV_TWO32) | 0, 0x2545f491), 0x9e3779b1) >>> st.htShift) & st.htMask;
}

/** Node of the live block starting at a, or -1. */
export function hashGet(st: AllocatorState, a: number): number {
  if (typeof a !== 'number') return -1;
  const HT = st.HT;
  const m = st.htMask;
  for (let i = hashOf(st, a); ; i = (i + 1) & m) {
    const n = HT[2 * i];
    if (n < 0 || st.F[n * Rec.NF] === a) return n;
  }
}

/** Add node n, whose block starts at a (not present yet). */
export function hashInsert(st: AllocatorState, n: number, a: number): void {
  const HT = st.HT;
  const m = st.htMask;
  const home = hashOf(st, a);
  let i = home;
  while (HT[2 * i] >= 0) i = (i + 1) & m;
  HT[2 * i] = n;
  HT[2 * i + 1] = home;
  if (++st.htCount > m >>> 1) hashGrow(st);
}

/** Remove node n, whose block starts at a (present). */
export function hashDelete(st: AllocatorState, n: number, a: number): void {
  const HT = st.HT;
  const m = st.htMask;
  let i = hashOf(st, a);
  while (HT[2 * i] !== n) i = (i + 1) & m;
  shiftBack(st, i);
}

/**
 * Empty slot i, then pull later entries of its cluster into the hole unless
 * their home slot lies cyclically in (hole, j]. Decrements the count.
 */
export function shiftBack(st: AllocatorState, i: number): void {
  const HT = st.HT;
  const m = st.htMask;
  let j = i;
  for (;;) {
    j = (j + 1) & m;
    const v = HT[2 * j];
    if (v < 0) break;
    const k = HT[2 * j + 1];
    if (i <= j ? k <= i || k > j : k <= i && k > j) {
      HT[2 * i] = v;
      HT[2 * i + 1] = k;
      i = j;
    }
  }
  HT[2 * i] = -1;
  st.htCount--;
}

/** Double the table: keeps the load factor at most 1/2. */
export function hashGrow(st: AllocatorState): void {
  const old = st.HT;
  const count = st.htCount;
  hashInit(st, old.length); // old.length is 2 x the old slot count
  const HT = st.HT;
  const m = st.htMask;
  for (let s = 0; s < old.length; s += 2) {
    const n = old[s];
    if (n < 0) continue;
    const home = hashOf(st, st.F[n * Rec.NF]);
    let i = home;
    while (HT[2 * i] >= 0) i = (i + 1) & m;
    HT[2 * i] = n;
    HT[2 * i + 1] = home;
  }
  st.htCount = count;
}
