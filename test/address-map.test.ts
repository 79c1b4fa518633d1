import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AddressMap } from '../lib/internal/address-map.js';

describe('AddressMap (the pool\'s address -> view id table)', () => {
  it('agrees with a Map over random set/delete/get sequences, through growth and backward-shift deletes', () => {
    // Few distinct addresses (so deletes hit) spread over the whole safe range, sharing low bits as block addresses do.
    const addr = fc.oneof(fc.integer({ min: 0, max: 63 }).map((i) => i * 4096), fc.integer({ min: 0, max: 63 }).map((i) => 2 ** 32 + i * 2 ** 21), fc.constant(2 ** 53 - 8));
    const op = fc.tuple(fc.constantFrom('set', 'delete', 'get'), addr, fc.integer({ min: 0, max: 2 ** 31 - 1 }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const m = new AddressMap(4);
        const model = new Map<number, number>();
        for (const [kind, a, v] of ops) {
          if (kind === 'set') {
            m.set(a, v);
            model.set(a, v);
          } else if (kind === 'delete') {
            expect(m.delete(a)).toBe(model.get(a) ?? -1);
            model.delete(a);
          } else {
            expect(m.get(a)).toBe(model.get(a) ?? -1);
          }
          expect(m.size).toBe(model.size);
        }
        for (const [a, v] of model) expect(m.get(a)).toBe(v);
        const values: number[] = [];
        m.forEachValue((v) => values.push(v));
        expect(values.sort()).toEqual([...model.values()].sort());
        for (const bad of [-1, -0.5, NaN, 1.5]) {
          expect(m.get(bad)).toBe(-1);
          expect(m.delete(bad)).toBe(-1);
        }
        expect(m.size).toBe(model.size);
        m.clear();
        expect(m.size).toBe(0);
        for (const a of model.keys()) expect(m.get(a)).toBe(-1);
      }),
      { numRuns: 300 },
    );
  });
});
