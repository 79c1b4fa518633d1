import { afterEach, describe, expect, it, vi } from 'vitest';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { inspect } from 'node:util';
import { openPool, openPoolSync, PhysmemError, type Pool } from '../lib/index.js';
import { RangeAllocator } from '../lib/allocator/index.js';
import { throwsWith } from './helpers/errors.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let pools: Pool[] = [];
function fake(size = 1 << 20, extra: Record<string, unknown> = {}): Pool {
  const p = openPoolSync({ backend: 'fake', size, ...extra });
  pools.push(p);
  return p;
}
afterEach(() => {
  pools.forEach((p) => p.close());
  pools = [];
  vi.restoreAllMocks();
});

describe('opening pools', () => {
  it('defaults the fake backend to 64 MiB at physical 4 GiB', () => {
    const p = openPoolSync({ backend: 'fake' });
    pools.push(p);
    expect(p.stats()).toMatchObject({ total: 64 << 20, backend: 'fake' });
    expect(p.stats().ranges[0].start).toBe(0x1_0000_0000n);
    expect(p.alloc(64).phys >= 0x1_0000_0000n).toBe(true);
  });

  it("'auto' falls back to the fake backend with a warning that names what it looked for", async () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const p = await openPool({ size: 1 << 20 });
    pools.push(p);
    expect(p.backend).toBe('fake');
    expect(p.fallbackReason).toMatch(/devmem: .*udmabuf: /);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(/using the fake backend.*mem= or memmap=/s);
    const q = openPoolSync({ backend: 'auto', quiet: true, size: 1 << 20 });
    pools.push(q);
    expect(warn).toHaveBeenCalledTimes(1);
  });

  it('refuses bad options with EINVAL', () => {
    // @ts-expect-error an unknown backend, refused at run time
    expect(() => openPoolSync({ backend: 'nope' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'fake', size: -1 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'fake', physBase: 123n })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => openPoolSync({ backend: 'fake', physBase: 2n ** 60n })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error an unknown leakCheck mode
    expect(() => openPoolSync({ backend: 'fake', leakCheck: 'loud' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error options that are not an object
    expect(() => openPoolSync(42)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('DmaBuffer', () => {
  it('carries phys and bus as bigints (bus = phys + busOffset)', () => {
    const p = fake(1 << 20, { physBase: 0x2000_0000n, busOffset: 0x1_0000_0000n });
    const b = p.alloc(100);
    expect(typeof b.phys).toBe('bigint');
    expect(b.bus - b.phys).toBe(0x1_0000_0000n);
    expect(p.toPhys(b.bus)).toBe(b.phys);
    // Accessors (made on first read), so util.inspect is told to show them; they survive free.
    expect(inspect(b)).toMatch(new RegExp(`^DmaBuffer \\{\\s+phys: ${b.phys}n,\\s+bus: ${b.bus}n,\\s+size: 100,\\s+freed: false`));
    b.free();
    expect(inspect(b)).toMatch(/freed: true/);
    expect(b.bus - b.phys).toBe(0x1_0000_0000n);
  });

  it('accepts at and maxAddress as numbers or bigints', () => {
    const p = fake();
    const base = p.stats().ranges[0].start;
    const a = p.alloc(4096, { at: base + 8192n });
    expect(a.phys).toBe(base + 8192n);
    const b = p.alloc(4096, { at: Number(base) + 16384 });
    expect(b.phys).toBe(base + 16384n);
    expect(() => p.alloc(4096, { at: base + 8192n })).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
    const c = p.alloc(64, { maxAddress: 2n ** 64n });
    expect(c.size).toBe(64);
    expect(() => p.alloc(64, { maxAddress: base - 1n })).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
  });

  it('refuses bad sizes and options with EINVAL', () => {
    const p = fake();
    for (const size of [0, -1, 1.5, NaN, '64' as unknown as number]) {
      expect(() => p.alloc(size)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
    expect(() => p.alloc(64, { align: 3 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => p.alloc(64, { at: -1 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // @ts-expect-error zero must be a boolean
    expect(() => p.alloc(64, { zero: 'yes' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(p.stats().count).toBe(0);
  });

  it('bytes: one Uint8Array over exactly the block, whether first read before or after free, zero-length after free', () => {
    const p = fake();
    const a = p.alloc(100, { zero: false });
    const b = p.alloc(100, { zero: false });
    expect(a.bytes).toBe(a.bytes);
    expect(a.bytes.byteLength).toBe(100);
    a.bytes[99] = 7;
    p.findBlock(a.phys); // unrelated lookups leave it as it is
    expect(a.bytes[99]).toBe(7);
    const view = a.bytes.subarray(90);
    a.free();
    expect(a.bytes.byteLength).toBe(0);
    expect(view.byteLength).toBe(0);
    b.free(); // never read while live
    expect(b.bytes).toBeInstanceOf(Uint8Array);
    expect(b.bytes.byteLength).toBe(0);
    expect(b.freed).toBe(true);
  });

  it('frees through Symbol.dispose, once', () => {
    const p = fake();
    const b = p.alloc(64);
    b[Symbol.dispose]();
    b[Symbol.dispose]();
    expect(b.freed).toBe(true);
    expect(p.stats().count).toBe(0);
  });

  it('never frees a reused address through a stale buffer', () => {
    const p = fake();
    const a = p.alloc(4096, { align: 4096 });
    p.free(a.phys);
    const b = p.alloc(4096, { at: a.phys });
    expect(() => a.free()).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(b.freed).toBe(false);
    expect(p.stats().count).toBe(1);
  });

  it('warns once, naming the block, when a buffer is collected without free, and keeps the memory allocated', async () => {
    const p = fake(1 << 20, { leakCheck: 'trace' });
    const warnings: string[] = [];
    const onWarning = (w: Error) => {
      if ((w as { code?: string }).code === 'PHYSMEM_LEAK') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    let phys = 0n;
    (function leak() {
      phys = p.alloc(12344).phys;
    })();
    for (let i = 0; i < 20 && warnings.length === 0; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    process.off('warning', onWarning);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`0x${phys.toString(16)}`);
    expect(warnings[0]).toContain("12344 bytes");
    expect(warnings[0]).toMatch(/Allocated at:\n.*pool\.test\.ts/);
    expect(p.stats().count).toBe(1);
  });
});

describe('Pool.free', () => {
  it('refuses addresses that start no live block (negative, NaN, fractional, interior, twice) and frees nothing else', () => {
    const p = fake();
    const a = p.alloc(4096, { align: 4096 });
    for (const bad of [-1, -0.5, NaN, 1.5, Number(a.phys) + 64]) throwsWith(() => p.free(bad), 'EINVAL');
    expect(a.freed).toBe(false);
    expect(p.stats().count).toBe(1);
    p.free(a.phys);
    expect(a.freed).toBe(true);
    throwsWith(() => p.free(a.phys), 'EINVAL');
    p.close();
  });
  it("frees by the allocator's handle: buffer.free(), dispose and pool.free(phys) never build the allocator's address index; the pool's own index, built by pool.free(phys), stays exact", () => {
    const free = vi.spyOn(RangeAllocator.prototype, 'free');
    const p = fake();
    const bufs = Array.from({ length: 40 }, (_, i) => p.alloc(64 + i * 8));
    for (let i = 0; i < 40; i += 4) bufs[i].free();
    const hashOn = () => (free.mock.contexts[0] as { st: { hashOn: boolean } }).st.hashOn;
    for (let i = 1; i < 40; i += 4) bufs[i][Symbol.dispose]();
    expect(hashOn()).toBe(false);
    p.free(bufs[2].phys); // builds the pool's index of live blocks (20 left)
    const more = Array.from({ length: 10 }, () => p.alloc(4096)); // recorded in it from now on
    for (const b of more) p.free(Number(b.phys));
    for (let i = 6; i < 40; i += 4) p.free(bufs[i].phys);
    for (let i = 3; i < 40; i += 4) bufs[i].free();
    expect(hashOn()).toBe(false);
    expect(free.mock.calls.every((c) => c.length === 2 && Number.isInteger(c[1]))).toBe(true);
    expect(bufs.every((b) => b.freed)).toBe(true);
    expect(p.stats().count).toBe(0);
    p.check();
    // Stale: each way of freeing twice is refused, and nothing else is freed.
    const live = p.alloc(64);
    throwsWith(() => bufs[0].free(), 'EINVAL');
    throwsWith(() => p.free(bufs[2].phys), 'EINVAL');
    expect(live.freed).toBe(false);
    expect(p.findBlock(live.phys)).toEqual({ phys: live.phys, size: 64 });
    p.check();
  });
});

describe('leak check (default)', () => {
  // Collect until a PHYSMEM_LEAK warning arrives (or give up after `rounds`):
  // registration waits for the next turn of the event loop, so each round
  // yields before collecting again.
  async function leakWarnings(run: () => void, rounds = 30): Promise<string[]> {
    const warnings: string[] = [];
    const onWarning = (w: Error) => {
      if ((w as { code?: string }).code === 'PHYSMEM_LEAK') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      run();
      for (let i = 0; i < rounds && warnings.length === 0; i++) {
        await new Promise((r) => setImmediate(r));
        gc();
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      process.off('warning', onWarning);
    }
    return warnings;
  }

  it('warns about a buffer dropped without free() with no leakCheck option, and keeps its memory allocated', async () => {
    const p = fake(1 << 20);
    let phys = 0n;
    const warnings = await leakWarnings(() => {
      phys = p.alloc(4240).phys;
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`0x${phys.toString(16)}`);
    expect(warnings[0]).toContain('4240 bytes');
    expect(warnings[0]).toContain('PHYSMEM_TRACE_ALLOCATIONS=1');
    // The registry only reports: the block stays allocated until close.
    expect(p.stats().count).toBe(1);
    expect(p.findBlock(phys)).toEqual({ phys, size: 4240 });
    p.close();
  });

  it('warns about one buffer dropped among 5,000 allocated and freed in one synchronous loop (more than a batch)', async () => {
    const p = fake(1 << 20);
    let phys = 0n;
    const warnings = await leakWarnings(() => {
      for (let i = 0; i < 5000; i++) {
        const b = p.alloc(64, { zero: false });
        if (i === 2500) phys = b.phys;
        else b.free();
      }
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`0x${phys.toString(16)}`);
    expect(p.stats().count).toBe(1);
    p.close();
  });

  it('never warns about freed buffers, nor after close', async () => {
    const p = fake(1 << 20);
    const warnings = await leakWarnings(() => {
      for (let i = 0; i < 3000; i++) p.alloc(128, { zero: false }).free();
      const kept = p.alloc(128);
      kept.free();
    }, 8);
    expect(warnings).toEqual([]);
    const q = fake(1 << 20);
    const afterClose = await leakWarnings(() => {
      q.alloc(256);
      q.close();
    }, 8);
    expect(afterClose).toEqual([]);
    p.close();
  });

  it('holds no freed buffer: one freed in the same turn can be collected before the batch is registered', async () => {
    const p = fake(1 << 20);
    let collected = 0;
    const seen = new FinalizationRegistry(() => collected++);
    const keep = p.alloc(64); // stays in the batch, and the freed ones after it too unless the batch lets them go
    (function churn() {
      for (let i = 0; i < 3; i++) {
        const b = p.alloc(64, { zero: false });
        seen.register(b, i);
        b.free();
      }
    })();
    gc(); // same turn: the batch has not been registered yet
    for (let i = 0; i < 20 && collected < 3; i++) await new Promise((r) => setTimeout(r, 5));
    expect(collected).toBe(3);
    keep.free();
    p.close();
  });

  it("sends nothing through the registry with leakCheck 'off'", async () => {
    const p = fake(1 << 20, { leakCheck: 'off' });
    const warnings = await leakWarnings(() => {
      p.alloc(512);
    }, 8);
    expect(warnings).toEqual([]);
    expect(p.stats().count).toBe(1);
    p.close();
  });
});

describe('allocAsync', () => {
  it('statsAsync works on a linked pool as on a daemon\'s: the figures of stats(); EBADF after close', async () => {
    const p = fake(64 << 10);
    const a = p.alloc(5000);
    const s = await p.statsAsync();
    expect(s).toEqual(p.stats());
    expect(s).toMatchObject({ total: 64 << 10, count: 1 });
    expect(s.used).toBeGreaterThanOrEqual(5000);
    a.free();
    expect((await p.statsAsync()).count).toBe(0);
    p.close();
    await expect(p.statsAsync()).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('fails at once without wait (GFP_ATOMIC) and succeeds when memory is there', async () => {
    const p = fake(64 << 10);
    const a = await p.allocAsync(32 << 10);
    expect(a.size).toBe(32 << 10);
    await expect(p.allocAsync(48 << 10)).rejects.toMatchObject({ code: 'ENOMEM' });
  });

  it('waits (GFP_KERNEL) until enough is freed, first come first served', async () => {
    const p = fake(64 << 10);
    const a = p.alloc(48 << 10);
    const order: string[] = [];
    const big = p.allocAsync(40 << 10, { wait: true }).then((b) => (order.push('big'), b));
    const small = p.allocAsync(1024, { wait: true }).then((b) => (order.push('small'), b));
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual([]); // small fits now, but must not overtake big
    expect(p.stats().waiting).toBe(2);
    a.free();
    const [bb, sb] = await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    expect(bb.size).toBe(40 << 10);
    expect(sb.size).toBe(1024);
    expect(p.stats().waiting).toBe(0);
  });

  it('times out with ETIMEDOUT and lets the next waiter through', async () => {
    const p = fake(64 << 10);
    p.alloc(60 << 10);
    const t0 = Date.now();
    await expect(p.allocAsync(32 << 10, { wait: true, timeoutMs: 50 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(p.stats().waiting).toBe(0);
  });

  it('is cancelled by an AbortSignal with ECANCELED', async () => {
    const p = fake(64 << 10);
    p.alloc(60 << 10);
    const ac = new AbortController();
    const pending = p.allocAsync(32 << 10, { wait: true, signal: ac.signal });
    ac.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ECANCELED' });
    await expect(p.allocAsync(1, { wait: true, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ECANCELED' });
  });

  it('refuses at once what could never fit, and rejects waiters on close with EBADF', async () => {
    const p = fake(64 << 10);
    await expect(p.allocAsync(1 << 20, { wait: true })).rejects.toMatchObject({ code: 'ENOMEM' });
    p.alloc(60 << 10);
    const pending = p.allocAsync(32 << 10, { wait: true });
    p.close();
    await expect(pending).rejects.toMatchObject({ code: 'EBADF' });
    await expect(p.allocAsync(64)).rejects.toBeInstanceOf(PhysmemError);
  });
});
