/**
 * A map from block address to a small non-negative integer (the pool's
 * address -> backend view id), built for alloc+free churn.
 *
 * A `Map` holding a handful of entries rehashes or shrinks every few
 * set+delete pairs (deleted entries stay in its table until the next
 * rehash); that was about 5 % of a DmaBuffer alloc+free. This is open
 * addressing with linear probing and backward-shift deletion over typed
 * arrays: no tombstones, nothing allocated per operation, a rehash only when
 * it grows.
 * @module
 */

const EMPTY = -1; // addresses are >= 0

/** @internal Address (a non-negative integer below 2^53) -> value (an integer in [0, 2^31)). */
export class AddressMap {
  #keys: Float64Array;
  #values: Int32Array;
  #shift: number; // 32 - log2(capacity): Fibonacci hashing takes the hash's top bits
  #mask: number;
  #size = 0;

  constructor(capacity = 16) {
    let bits = 4;
    while (1 << bits < capacity) bits++;
    this.#keys = new Float64Array(1 << bits).fill(EMPTY);
    this.#values = new Int32Array(1 << bits);
    this.#shift = 32 - bits;
    this.#mask = (1 << bits) - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  // Home slot of `addr`: both 32-bit halves mixed (addresses share their low bits, often above 4 GiB).
  #home(addr: number): number {
    const lo = addr >>> 0;
    const hi = (addr / 4294967296) >>> 0;
    return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.#shift;
  }

  /** The value of `addr`, or -1 when absent. */
  get(addr: number): number {
    if (!(addr >= 0)) return -1; // never the EMPTY marker (nor NaN)
    const keys = this.#keys;
    for (let i = this.#home(addr); ; i = (i + 1) & this.#mask) {
      const k = keys[i];
      if (k === addr) return this.#values[i];
      if (k === EMPTY) return -1;
    }
  }

  /** Set the value of `addr` (added or replaced). */
  set(addr: number, value: number): void {
    if ((this.#size + 1) * 2 > this.#keys.length) this.#grow();
    const keys = this.#keys;
    let i = this.#home(addr);
    while (keys[i] !== EMPTY && keys[i] !== addr) i = (i + 1) & this.#mask;
    if (keys[i] === EMPTY) this.#size++;
    keys[i] = addr;
    this.#values[i] = value;
  }

  /** Remove `addr`; returns its value, or -1 when it was absent. */
  delete(addr: number): number {
    if (!(addr >= 0)) return -1; // never the EMPTY marker (nor NaN)
    const keys = this.#keys;
    const values = this.#values;
    const mask = this.#mask;
    let i = this.#home(addr);
    while (keys[i] !== addr) {
      if (keys[i] === EMPTY) return -1;
      i = (i + 1) & mask;
    }
    const value = values[i];
    // Backward shift: pull later entries of the probe run into the hole unless
    // their home lies cyclically in (hole, j], so every probe run stays unbroken.
    for (let j = (i + 1) & mask; keys[j] !== EMPTY; j = (j + 1) & mask) {
      const home = this.#home(keys[j]);
      if (((j - home) & mask) >= ((j - i) & mask)) {
        keys[i] = keys[j];
        values[i] = values[j];
        i = j;
      }
    }
    keys[i] = EMPTY;
    this.#size--;
    return value;
  }

  /** Call `fn` with every value. */
  forEachValue(fn: (value: number) => void): void {
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== EMPTY) fn(this.#values[i]);
  }

  /** Remove every entry. */
  clear(): void {
    this.#keys.fill(EMPTY);
    this.#size = 0;
  }

  #grow(): void {
    const keys = this.#keys;
    const values = this.#values;
    const bits = 33 - this.#shift;
    this.#keys = new Float64Array(1 << bits).fill(EMPTY);
    this.#values = new Int32Array(1 << bits);
    this.#shift = 32 - bits;
    this.#mask = (1 << bits) - 1;
    this.#size = 0;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== EMPTY) this.set(keys[i], values[i]);
  }
}
