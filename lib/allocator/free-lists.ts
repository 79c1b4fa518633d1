/**
 * The segregated free lists of a {@link AllocatorState}: one doubly linked
 * list per (range, size class), with a two-level bitmap to find the first
 * non-empty class >= a size in O(1). The hot paths in range-allocator.ts
 * inline copies of these (each copy says which helper it copies).
 * @internal
 * @module
 */
import { INV_POW2, Cls } from './size-class.js';
import { type AllocatorState, Lists, Rec, Tag } from './state.js';

/**
 * classOf (size-class.ts) for a block size held in a double, written so that
 * sizes below 2^31 stay in int32 arithmetic. The hot paths inline this body.
 */
export function fileClass(size: number): number {
  if (size < 64) return size;
  if (size < 2147483648) {
    const l = 31 - Math.clz32(size);
    return ((l - 5) << 5) + (size >>> (l - 5));
  }
  const l = 63 - Math.clz32(size * (1 / 4294967296));
  return ((l - 5) << 5) + Math.floor(size * INV_POW2[l - 5]);
}

/** Put free node n (its size already set) at the head of free list g (range * Lists.RSTRIDE + class). */
export function insertFree(st: AllocatorState, n: number, g: number): void {
  const I = st.I;
  const h = st.heads[g];
  I[n * Rec.NI + Rec.FPREV] = -1;
  I[n * Rec.NI + Rec.FNEXT] = h;
  I[n * Rec.NI + Rec.META] = Tag.FREE0 - g;
  if (h >= 0) I[h * Rec.NI + Rec.FPREV] = n;
  else setBit(st, g);
  st.heads[g] = n;
}

/** Take free node n off its free list (its tag still says free). */
export function removeFree(st: AllocatorState, n: number): void {
  const I = st.I;
  const fp = I[n * Rec.NI + Rec.FPREV];
  const fx = I[n * Rec.NI + Rec.FNEXT];
  if (fx >= 0) I[fx * Rec.NI + Rec.FPREV] = fp;
  if (fp >= 0) I[fp * Rec.NI + Rec.FNEXT] = fx;
  else {
    const g = Tag.FREE0 - I[n * Rec.NI + Rec.META];
    st.heads[g] = fx;
    if (fx < 0) clearBit(st, g);
  }
}

/** Mark free list g non-empty in both bitmap levels. */
export function setBit(st: AllocatorState, g: number): void {
  const w = g >>> 5;
  if (st.slBits[w] === 0) {
    const r = g >>> Lists.RSTRIDE_LOG2;
    const fl = w - r * Lists.FL_STRIDE;
    if (fl < 32) st.flLo[r] |= 1 << fl;
    else st.flHi[r] |= 1 << (fl - 32);
  }
  st.slBits[w] |= 1 << (g & 31);
}

/** Mark free list g empty (and its first-level bit when its word empties). */
export function clearBit(st: AllocatorState, g: number): void {
  const w = g >>> 5;
  const m = st.slBits[w] & ~(1 << (g & 31));
  st.slBits[w] = m;
  if (m === 0) {
    const r = g >>> Lists.RSTRIDE_LOG2;
    const fl = w - r * Lists.FL_STRIDE;
    if (fl < 32) st.flLo[r] &= ~(1 << fl);
    else st.flHi[r] &= ~(1 << (fl - 32));
  }
}

/** First non-empty class >= c in range r, or -1. The hot path (allocPlain) inlines this. */
export function findClass(st: AllocatorState, r: number, c: number): number {
  if (c >= Cls.NCLASS) return -1;
  let fl = c >>> 5;
  let m = st.slBits[r * Lists.FL_STRIDE + fl] & (-1 << (c & 31));
  if (m !== 0) return (fl << 5) + (31 - Math.clz32(m & -m));
  fl++;
  if (fl < 32) {
    m = st.flLo[r] & (-1 << fl);
    if (m !== 0) fl = 31 - Math.clz32(m & -m);
    else if ((m = st.flHi[r]) !== 0) fl = 63 - Math.clz32(m & -m);
    else return -1;
  } else {
    m = st.flHi[r] & (-1 << (fl - 32));
    if (m === 0) return -1;
    fl = 63 - Math.clz32(m & -m);
  }
  m = st.slBits[r * Lists.FL_STRIDE + fl];
  return (fl << 5) + (31 - Math.clz32(m & -m));
}
