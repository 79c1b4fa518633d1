import { describe, expect, it } from 'vitest';
import { formatSize, memoryMap, toJson } from '../lib/cli/format.js';

describe('CLI formatting', () => {
  it('draws used, partly used, free and gaps between ranges', () => {
    const map = memoryMap(
      [
        { phys: 0n, size: 400, free: false },
        { phys: 400n, size: 100, free: false },
        { phys: 500n, size: 500, free: true },
        // 1000..2000: not in the pool
        { phys: 2000n, size: 40, free: false },
        { phys: 2040n, size: 960, free: true },
      ],
      30,
    );
    expect(map).toBe('[#####.....          +.........] 0x0..0xbb8');
  });

  it('formats sizes and bigints', () => {
    expect(formatSize(1536)).toBe('1.5 KiB');
    expect(formatSize(64 << 20)).toBe('64 MiB');
    expect(JSON.parse(toJson({ start: 0x100000000n, size: 4096n, a: 5n }))).toEqual({ start: '0x100000000', size: 4096, a: 5 });
    expect(JSON.parse(toJson({ phys: 4096, bus: null }))).toEqual({ phys: '0x1000', bus: null }); // number addresses too
  });
});
