import { afterEach, describe, expect, it } from 'vitest';
import { EINVAL, GFP_ATOMIC, GFP_KERNEL, allocateDma, allocatorCleanup, allocatorInit, compatPool, dmaBuffer, freeDma } from '../lib/compat.js';

afterEach(() => allocatorCleanup());

describe('physmem/compat (the original allocator API, linked mode)', () => {
  it('exports the original constants', () => {
    expect(EINVAL).toBe(22);
    expect(GFP_KERNEL).not.toBe(GFP_ATOMIC);
  });

  it('returns 0n before allocatorInit and after allocatorCleanup', () => {
    expect(allocateDma(4096, GFP_KERNEL)).toBe(0n);
    allocatorInit({ backend: 'fake', size: 1 << 20 });
    expect(allocateDma(4096, GFP_KERNEL)).not.toBe(0n);
    allocatorCleanup();
    expect(allocateDma(4096, GFP_KERNEL)).toBe(0n);
  });

  it('allocates page-aligned physical addresses and frees them with 0', () => {
    expect(allocatorInit({ backend: 'fake', size: 1 << 20 })).toBe(0);
    const a = allocateDma(1000, GFP_KERNEL);
    const b = allocateDma(5000, GFP_ATOMIC);
    expect(typeof a).toBe('bigint');
    expect(a % 4096n).toBe(0n);
    expect(b % 4096n).toBe(0n);
    expect(a).not.toBe(b);
    dmaBuffer(a)!.bytes[0] = 1;
    expect(freeDma(a)).toBe(0);
    expect(freeDma(b)).toBe(0);
    expect(compatPool()!.stats().count).toBe(0);
  });

  it('returns -EINVAL for addresses it does not handle', () => {
    allocatorInit({ backend: 'fake', size: 1 << 20 });
    const a = allocateDma(4096, GFP_KERNEL);
    expect(freeDma(a + 64n)).toBe(-22);
    expect(freeDma(12345)).toBe(-EINVAL);
    expect(freeDma(a)).toBe(0);
    expect(freeDma(a)).toBe(-22);
    expect(freeDma(Number.NaN)).toBe(-22);
  });

  it('fails with 0n on bad priority, bad size, or no memory (GFP_KERNEL does not wait in linked mode)', () => {
    allocatorInit({ backend: 'fake', size: 1 << 20 });
    expect(allocateDma(4096, 0)).toBe(0n);
    expect(allocateDma(4096, GFP_KERNEL | GFP_ATOMIC)).toBe(0n);
    expect(allocateDma(0, GFP_KERNEL)).toBe(0n);
    expect(allocateDma(-5, GFP_KERNEL)).toBe(0n);
    expect(allocateDma(1.5, GFP_KERNEL)).toBe(0n);
    expect(allocateDma(2 << 20, GFP_KERNEL)).toBe(0n);
    expect(allocateDma(2 << 20, GFP_ATOMIC)).toBe(0n);
  });

  it('refuses a second allocatorInit with EBUSY, and cleanup frees everything', () => {
    allocatorInit({ backend: 'fake', size: 1 << 20 });
    expect(() => allocatorInit({ backend: 'fake' })).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    const a = allocateDma(4096, GFP_KERNEL);
    const buf = dmaBuffer(a)!;
    allocatorCleanup();
    expect(buf.bytes.length).toBe(0);
    expect(freeDma(a)).toBe(-22);
    allocatorCleanup();
  });
});
