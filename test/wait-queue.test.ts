import { describe, expect, it } from 'vitest';
import { WaitQueue } from '../lib/wait-queue.js';

describe('WaitQueue (the FIFO of waiting allocations shared by Pool and the daemon)', () => {
  it('keeps FIFO order; removes any node in O(1) without visiting the others; a removed node is not removed twice', () => {
    const q = new WaitQueue<number>();
    const nodes = Array.from({ length: 10_000 }, (_, i) => q.push(i));
    expect(q.length).toBe(10_000);
    const v0 = q.visited;
    expect(q.remove(nodes[5000])).toBe(true);
    expect(q.remove(nodes[0])).toBe(true);
    expect(q.remove(nodes[9999])).toBe(true);
    expect(q.remove(nodes[5000])).toBe(false);
    expect(q.visited).toBe(v0); // no walk
    expect(q.length).toBe(9997);
    const order = [...q];
    expect(order[0]).toBe(1);
    expect(order.at(-1)).toBe(9998);
    expect(order).not.toContain(5000);
    expect(order).toHaveLength(9997);
  });

  it('serve() takes heads while they are served and stops at the first that must wait, looking at no one behind it', () => {
    const q = new WaitQueue<number>();
    for (const v of [1, 2, 3, 100, 4, 5]) q.push(v);
    let budget = 10;
    const served: number[] = [];
    const v0 = q.visited;
    q.serve((v) => {
      if (v > budget) return false; // strict FIFO: 100 does not fit, so 4 and 5 wait behind it
      budget -= v;
      served.push(v);
      return true;
    });
    expect(served).toEqual([1, 2, 3]);
    expect(q.visited - v0).toBe(4); // three served and the head that waits
    expect([...q]).toEqual([100, 4, 5]);
  });

  it('an attempt may remove the node itself (a failed wait answered and dropped); drain empties the queue in order', () => {
    const q = new WaitQueue<string>();
    const a = q.push('a');
    q.push('b');
    q.serve((v) => {
      if (v === 'a') q.remove(a);
      return v === 'a';
    });
    expect([...q]).toEqual(['b']);
    q.push('c');
    expect(q.drain()).toEqual(['b', 'c']);
    expect(q.length).toBe(0);
    expect([...q]).toEqual([]);
    const d = q.push('d');
    expect(q.remove(d)).toBe(true);
    expect(q.length).toBe(0);
  });
});
