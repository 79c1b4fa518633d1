/**
 * The O(n) views of a {@link AllocatorState}: `stats`, `walk` and the
 * invariant check behind {@link RangeAllocator.check}.
 * @internal
 * @module
 */
import { hex } from '../internal/validate.js';
import { hashGet, hashOf } from './address-hash.js';
import { fileClass } from './free-lists.js';
import { Cls } from './size-class.js';
import { checkSkipList } from './skip-list.js';
import { type AllocatorState, Lists, Rec, Tag, corrupt } from './state.js';
import type { AllocatorStats, BlockInfo, RangeStats, RangeStatsEntry, WalkCallback } from './types.js';

/** The allocation granule (also MIN_ALIGN of range-allocator.ts). */
const GRANULE = 8;

function addStats(into: RangeStats, e: RangeStats): void {
  into.total += e.total;
  into.used += e.used;
  into.free += e.free;
  into.count += e.count;
  into.freeBlocks += e.freeBlocks;
  if (e.largestFree > into.largestFree) into.largestFree = e.largestFree;
}

/** Byte and block counts, in total and per range. */
export function stats(st: AllocatorState): AllocatorStats {
  const all: AllocatorStats = { total: 0, used: 0, free: 0, largestFree: 0, count: 0, freeBlocks: 0, ranges: [] };
  const F = st.F;
  const I = st.I;
  for (let r = 0; r < st.nRanges; r++) {
    const e: RangeStatsEntry = { start: st.rStart[r], total: st.rEnd[r] - st.rStart[r], used: 0, free: 0, largestFree: 0, count: 0, freeBlocks: 0 };
    const tail = st.rTail[r];
    for (let n = I[st.rHead[r] * Rec.NI + Rec.PNEXT]; n !== tail; n = I[n * Rec.NI + Rec.PNEXT]) {
      const size = F[n * Rec.NF + 1];
      if (I[n * Rec.NI + Rec.META] <= Tag.FREE0) {
        e.free += size;
        e.freeBlocks++;
        if (size > e.largestFree) e.largestFree = size;
      } else {
        e.used += size;
        e.count++;
      }
    }
    addStats(all, e);
    all.ranges.push(e);
  }
  return all;
}

/** Every block in address order, as objects or through `fn`. */
export function walk(st: AllocatorState, fn?: WalkCallback): BlockInfo[] | undefined {
  const out: BlockInfo[] | undefined = fn === undefined ? [] : undefined;
  for (let r = 0; r < st.nRanges; r++) {
    const tail = st.rTail[r];
    for (let n = st.I[st.rHead[r] * Rec.NI + Rec.PNEXT]; n !== tail; n = st.I[n * Rec.NI + Rec.PNEXT]) {
      const meta = st.I[n * Rec.NI + Rec.META];
      const address = st.F[n * Rec.NF];
      const size = st.F[n * Rec.NF + 1];
      const free = meta < 0;
      if (out) out.push({ address, size, free, owner: free ? -1 : meta });
      else fn!(address, size, free, free ? -1 : meta);
    }
  }
  return out;
}

/**
 * Verify every invariant (see RangeAllocator.check).
 * @throws PhysmemError `EIO` describing the first inconsistency found.
 */
export function check(st: AllocatorState): void {
  const F = st.F;
  const I = st.I;
  let liveNodes = 0;
  let usedBytes = 0;
  let nodesSeen = 0;
  for (let r = 0; r < st.nRanges; r++) {
    const head = st.rHead[r];
    const tail = st.rTail[r];
    if (I[head * Rec.NI + Rec.META] !== Tag.SENTINEL || I[tail * Rec.NI + Rec.META] !== Tag.SENTINEL) {
      throw corrupt(`range ${r}: sentinels lost their tag`);
    }
    if (F[tail * Rec.NF] !== st.rEnd[r]) throw corrupt(`range ${r}: end sentinel moved`);
    let prev = head;
    let prevFree = false;
    let n = I[head * Rec.NI + Rec.PNEXT];
    if (F[n * Rec.NF] !== st.rStart[r]) throw corrupt(`range ${r}: first block starts at ${hex(F[n * Rec.NF])}`);
    for (; n !== tail; n = I[n * Rec.NI + Rec.PNEXT]) {
      if (n < 0 || n >= st.nodeCap) throw corrupt(`range ${r}: link to node ${n} out of bounds`);
      if (++nodesSeen > st.nodeCap) throw corrupt(`range ${r}: address list has a cycle`);
      const a = F[n * Rec.NF];
      const x = I[n * Rec.NI + Rec.PNEXT];
      const size = F[n * Rec.NF + 1];
      const meta = I[n * Rec.NI + Rec.META];
      if (I[n * Rec.NI + Rec.PPREV] !== prev) throw corrupt(`block ${hex(a)}: back link does not match`);
      if (!(size > 0) || !Number.isInteger(a)) throw corrupt(`block ${hex(a)} has size ${size} (blocks out of order)`);
      if (F[x * Rec.NF] !== a + size) throw corrupt(`block ${hex(a)} of size ${size} is followed by ${hex(F[x * Rec.NF])}`);
      if (meta <= Tag.FREE0) {
        if (prevFree) throw corrupt(`free block ${hex(a)} follows another free block (not coalesced)`);
        const g = Tag.FREE0 - meta;
        if (g !== r * Lists.RSTRIDE + fileClass(size)) throw corrupt(`free block ${hex(a)} of ${size} bytes is on the wrong free list ${g}`);
        prevFree = true;
      } else if (meta >= 0) {
        if (a % GRANULE !== 0 || size % GRANULE !== 0) throw corrupt(`live block ${hex(a)} (size ${size}) is not 8-byte granular`);
        if (st.hashOn && hashGet(st, a) !== n) throw corrupt(`live block ${hex(a)} is missing from the address hash`);
        liveNodes++;
        usedBytes += size;
        prevFree = false;
      } else {
        throw corrupt(`block ${hex(a)} has invalid tag ${meta}`);
      }
      prev = n;
    }
    if (I[tail * Rec.NI + Rec.PPREV] !== prev) throw corrupt(`range ${r}: end sentinel back link does not match`);
    checkSkipList(st, r);
    checkFreeLists(st, r);
  }
  if (liveNodes !== st.counts[1]) throw corrupt(`live block counter says ${st.counts[1]}, ${liveNodes} blocks are live`);
  if (usedBytes !== st.counts[0]) throw corrupt(`used bytes counter says ${st.counts[0]}, live blocks hold ${usedBytes}`);
  if (st.hashOn) {
    let hashed = 0;
    for (let i = 0; i <= st.htMask; i++) {
      const v = st.HT[2 * i];
      if (v < 0) continue;
      hashed++;
      // The stored home slot must be the key's, or deletion would misplace entries.
      if (st.HT[2 * i + 1] !== hashOf(st, F[v * Rec.NF])) throw corrupt(`address hash entry of ${hex(F[v * Rec.NF])} has the wrong home slot`);
    }
    if (hashed !== liveNodes || st.htCount !== liveNodes) {
      throw corrupt(`address hash has ${hashed} entries (counter ${st.htCount}) for ${liveNodes} live blocks`);
    }
  }
  let unused = 0;
  for (let u = st.nodeFree; u >= 0; u = I[u * Rec.NI + Rec.FNEXT]) {
    if (I[u * Rec.NI + Rec.META] !== Tag.UNUSED) throw corrupt(`node ${u} on the unused stack is in use`);
    if (++unused > st.nodeCap) throw corrupt('unused node stack has a cycle');
  }
  if (unused !== st.nodeAvail) throw corrupt(`unused node counter says ${st.nodeAvail}, stack has ${unused}`);
  if (unused + nodesSeen + 2 * st.nRanges !== st.nodeCap) {
    throw corrupt(`node arena leaks: ${st.nodeCap} records, ${nodesSeen} blocks, ${unused} unused`);
  }
}

function checkFreeLists(st: AllocatorState, r: number): void {
  const I = st.I;
  const F = st.F;
  let onLists = 0;
  for (let fl = 0; fl < Lists.FL_STRIDE; fl++) {
    const bits = st.slBits[r * Lists.FL_STRIDE + fl];
    const flBit = fl < 32 ? (st.flLo[r] >>> fl) & 1 : (st.flHi[r] >>> (fl - 32)) & 1;
    if ((bits !== 0 ? 1 : 0) !== flBit) throw corrupt(`range ${r}: first-level bit ${fl} disagrees with the second level`);
    if (fl >= Cls.FL_COUNT && bits !== 0) throw corrupt(`range ${r}: free list bits set above the last size class`);
    for (let sl = 0; sl < 32; sl++) {
      const g = r * Lists.RSTRIDE + fl * 32 + sl;
      const h = st.heads[g];
      if ((h >= 0 ? 1 : 0) !== ((bits >>> sl) & 1)) throw corrupt(`range ${r}: bitmap bit of free list ${g} disagrees with the list`);
      let prev = -1;
      for (let n = h; n >= 0; n = I[n * Rec.NI + Rec.FNEXT]) {
        if (n >= st.nodeCap) throw corrupt(`range ${r}: free list ${g} links out of bounds`);
        if (I[n * Rec.NI + Rec.META] !== Tag.FREE0 - g) throw corrupt(`range ${r}: block ${hex(F[n * Rec.NF])} on free list ${g} is tagged ${I[n * Rec.NI + Rec.META]}`);
        if (I[n * Rec.NI + Rec.FPREV] !== prev) throw corrupt(`range ${r}: free list ${g} back link does not match`);
        if (++onLists > st.nodeCap) throw corrupt(`range ${r}: free list ${g} has a cycle`);
        prev = n;
      }
    }
  }
  let freeBlocks = 0;
  const tail = st.rTail[r];
  for (let n = I[st.rHead[r] * Rec.NI + Rec.PNEXT]; n !== tail; n = I[n * Rec.NI + Rec.PNEXT]) {
    if (I[n * Rec.NI + Rec.META] <= Tag.FREE0) freeBlocks++;
  }
  if (freeBlocks !== onLists) throw corrupt(`range ${r}: ${freeBlocks} free blocks but ${onLists} on the free lists`);
}
