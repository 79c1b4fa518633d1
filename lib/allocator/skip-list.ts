/**
 * The skip list over each range's address-ordered block list, to find the
 * block containing an address in O(log n) expected (`alloc` with `at`,
 * `blockContaining`, messages about bad frees).
 *
 * Towers are lazy: none exist until a lookup needs them; then
 * {@link ensureTowers} builds them for every block in one O(n) pass, and
 * splits and merges maintain them. When {@link AllocatorState.towerBudget}
 * splits and merges (4 per block, at least 4096) pass without a lookup they
 * are dropped again, so the hot paths pay for towers only while lookups
 * happen, and a rebuild costs no more, amortised, than keeping them.
 *
 * Level 0 is the address list itself (Rec.PPREV/Rec.PNEXT); towers hold levels
 * 1..15. A node's level is 1 + the number of leading zero bit triples of a
 * xorshift32 draw: P(level > k) = 8^-k (half as many towers to build and
 * unlink as with p = 1/4, for about the same search cost).
 * @internal
 * @module
 */
import { type AllocatorState, Rec, corrupt } from './state.js';
import { hex } from '../internal/validate.js';

/** Highest level, counting the address list as level 1's base (towers hold levels 1..MAX_LEVEL-1). */
const MAX_LEVEL = 16;
/** Levels per tower. */
const TW = MAX_LEVEL - 1;
/** Tower stride in T. */
const TS = 2 * TW;
const INITIAL_TOWERS = 16;
/** Fewest splits and merges between the last lookup and dropping the towers. */
const MIN_BUDGET = 4096;

function growTowers(st: AllocatorState): void {
  const old = st.towerCap;
  const cap = old === 0 ? INITIAL_TOWERS : old * 2;
  const T = new Int32Array(cap * TS);
  T.set(st.T);
  for (let t = cap - 1; t >= old; t--) {
    T[t * TS] = st.towerFree;
    st.towerFree = t;
  }
  st.T = T;
  st.towerAvail += cap - old;
  st.towerCap = cap;
}

function takeTower(st: AllocatorState): number {
  if (st.towerAvail === 0) growTowers(st);
  const t = st.towerFree;
  st.towerFree = st.T[t * TS];
  st.towerAvail--;
  return t;
}

/** Next xorshift32 draw's level (1..MAX_LEVEL). */
function drawLevel(st: AllocatorState): number {
  let z = st.rng[0];
  z ^= z << 13;
  z ^= z >>> 17;
  z ^= z << 5;
  st.rng[0] = z;
  return z >>> 29 !== 0 ? 1 : Math.min(MAX_LEVEL, 1 + ((Math.clz32(z) / 3) | 0));
}

/** Forget every tower (the hot paths stop maintaining them). */
export function dropAllTowers(st: AllocatorState): void {
  st.towersOn = false;
  st.T = new Int32Array(0);
  st.towerCap = 0;
  st.towerFree = -1;
  st.towerAvail = 0;
}

/**
 * Build towers for every block if there are none, and give them a fresh
 * budget: call before any {@link containing}.
 */
export function ensureTowers(st: AllocatorState): void {
  st.towerBudget = Math.max(MIN_BUDGET, 4 * (st.nodeCap - st.nodeAvail));
  if (st.towersOn) return;
  st.towersOn = true;
  const I = st.I;
  const last = new Int32Array(MAX_LEVEL); // per level k, the last node linked at k
  for (let r = 0; r < st.nRanges; r++) {
    const head = st.rHead[r];
    const tail = st.rTail[r];
    // The sentinels reach every level.
    const ht = takeTower(st);
    const tt = takeTower(st);
    I[head * Rec.NI + Rec.TOWER] = ht * 32 + MAX_LEVEL;
    I[tail * Rec.NI + Rec.TOWER] = tt * 32 + MAX_LEVEL;
    last.fill(head);
    for (let n = I[head * Rec.NI + Rec.PNEXT]; n !== tail; n = I[n * Rec.NI + Rec.PNEXT]) {
      const level = drawLevel(st);
      if (level === 1) {
        I[n * Rec.NI + Rec.TOWER] = -1;
        continue;
      }
      const tw = takeTower(st);
      I[n * Rec.NI + Rec.TOWER] = tw * 32 + level;
      const T = st.T;
      for (let k = 1; k < level; k++) {
        const l = last[k];
        T[(I[l * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1)] = n;
        T[tw * TS + 2 * (k - 1) + 1] = l;
        last[k] = n;
      }
    }
    const T = st.T;
    for (let k = 1; k < MAX_LEVEL; k++) {
      const l = last[k];
      T[(I[l * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1)] = tail;
      T[tt * TS + 2 * (k - 1) + 1] = l;
      T[tt * TS + 2 * (k - 1)] = -1;
      T[ht * TS + 2 * (k - 1) + 1] = -1;
    }
  }
}

/**
 * Give node x (just linked into the address list) a random level, while
 * towers are built; spends one unit of the budget, and drops every tower
 * when it runs out.
 */
export function towerFor(st: AllocatorState, x: number): void {
  if (--st.towerBudget < 0) {
    dropAllTowers(st);
    return;
  }
  const level = drawLevel(st);
  if (level === 1) st.I[x * Rec.NI + Rec.TOWER] = -1;
  else buildTower(st, x, level);
}

function buildTower(st: AllocatorState, x: number, level: number): void {
  const I = st.I;
  const tw = takeTower(st);
  const T = st.T;
  I[x * Rec.NI + Rec.TOWER] = tw * 32 + level;
  let cand = I[x * Rec.NI + Rec.PPREV];
  for (let k = 1; k < level; k++) {
    // Walk back along level k-1 to the nearest node reaching level k
    // (expected 8 steps: the head sentinel reaches every level).
    let ct = I[cand * Rec.NI + Rec.TOWER];
    while (ct < 0 || (ct & 31) <= k) {
      cand = k === 1 ? I[cand * Rec.NI + Rec.PPREV] : T[(ct >> 5) * TS + 2 * (k - 2) + 1];
      ct = I[cand * Rec.NI + Rec.TOWER];
    }
    const cl = (ct >> 5) * TS + 2 * (k - 1);
    const xl = tw * TS + 2 * (k - 1);
    const nxt = T[cl];
    T[xl] = nxt;
    T[xl + 1] = cand;
    T[cl] = x;
    T[(I[nxt * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1) + 1] = x;
  }
}

/**
 * Unlink node x's tower (if it has one) from levels 1.. and recycle it,
 * while towers are built; spends one unit of the budget like {@link towerFor}.
 */
export function dropTower(st: AllocatorState, x: number): void {
  if (--st.towerBudget < 0) {
    dropAllTowers(st);
    return;
  }
  const I = st.I;
  const code = I[x * Rec.NI + Rec.TOWER];
  if (code < 0) return;
  const T = st.T;
  const tw = code >> 5;
  const level = code & 31;
  for (let k = 1; k < level; k++) {
    const a = T[tw * TS + 2 * (k - 1) + 1];
    const b = T[tw * TS + 2 * (k - 1)];
    T[(I[a * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1)] = b;
    T[(I[b * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1) + 1] = a;
  }
  T[tw * TS] = st.towerFree;
  st.towerFree = tw;
  st.towerAvail++;
}

/** The block (node) of range r containing address `at` (rStart <= at < rEnd). Builds towers if needed. */
export function containing(st: AllocatorState, r: number, at: number): number {
  ensureTowers(st);
  const F = st.F;
  const I = st.I;
  const T = st.T;
  let cur = st.rHead[r];
  for (let k = MAX_LEVEL - 1; k >= 1; k--) {
    let ct = I[cur * Rec.NI + Rec.TOWER] >> 5;
    for (;;) {
      const nx = T[ct * TS + 2 * (k - 1)];
      if (F[nx * Rec.NF] > at) break;
      cur = nx;
      ct = I[nx * Rec.NI + Rec.TOWER] >> 5;
    }
  }
  for (;;) {
    const nx = I[cur * Rec.NI + Rec.PNEXT];
    if (F[nx * Rec.NF] > at) return cur;
    cur = nx;
  }
}

/** Verify range r's towers, when built: level k links, in order, exactly the nodes whose level exceeds k. */
export function checkSkipList(st: AllocatorState, r: number): void {
  if (!st.towersOn) return;
  const I = st.I;
  const F = st.F;
  const head = st.rHead[r];
  const tail = st.rTail[r];
  for (let k = 1; k < MAX_LEVEL; k++) {
    let cur = head;
    let e = head;
    for (let steps = 0; ; steps++) {
      if (steps > st.nodeCap) throw corrupt(`range ${r}: skip list level ${k} has a cycle`);
      e = I[e * Rec.NI + Rec.PNEXT];
      while (e !== tail) {
        const et = I[e * Rec.NI + Rec.TOWER];
        if (et >= 0 && (et & 31) > k) break;
        e = I[e * Rec.NI + Rec.PNEXT];
      }
      const nx = st.T[(I[cur * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1)];
      if (nx !== e) throw corrupt(`range ${r}: skip list level ${k} does not link ${hex(F[e * Rec.NF])} next`);
      if (st.T[(I[nx * Rec.NI + Rec.TOWER] >> 5) * TS + 2 * (k - 1) + 1] !== cur) {
        throw corrupt(`range ${r}: skip list level ${k} back link of ${hex(F[nx * Rec.NF])}`);
      }
      if (e === tail) break;
      cur = nx;
    }
  }
}
