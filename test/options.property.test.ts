/**
 * Property tests over the options surface of the public API: random option
 * objects (known names with good and bad values of every JS type, unknown and
 * near-miss names, and non-objects in the options position) are either
 * accepted and honoured (the option's effect is checked) or refused with a
 * PhysmemError carrying a code; never another error type, never a crash, and
 * nothing leaks (pool stats back to empty). Entry points that need hardware
 * (devmem, udmabuf, hugepage, vfio, PCI) are covered for unknown names,
 * which are refused before anything is opened; the others run on the fake
 * backend, physmem/testing's fake devices, and a daemon serving fake memory.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PhysmemError } from '../lib/errors.js';
import { failsWith, rejectsWith, throwsWith } from './helpers/errors.js';
import { openPool, openPoolSync } from '../lib/open.js';
import type { Pool, PoolAllocOptions } from '../lib/pool.js';
import { pollUntil, pollUntilAsync } from '../lib/poll.js';
import { FakeEdu, FakePciDevice } from '../lib/testing/index.js';
import { listRegionLocks, lockRegion } from '../lib/locks.js';
import { findReservedRegions, discoverRegions, readMemoryMaps, checkExplicitRange } from '../lib/discovery/index.js';
import { PciDevice, listPciDevices, bindDriver, unbindDriver } from '../lib/pci/index.js';
import { VfioContainer, VfioDevice, bindVfio } from '../lib/vfio/index.js';
import { allocatorCleanup, allocatorInit, allocateDma, dmaBuffer, freeDma, GFP_KERNEL } from '../lib/compat.js';
import { startServer, type ServiceServer } from '../lib/service/server.js';
import { ServicePool } from '../lib/service/client.js';

// PHYSMEM_PROPERTY_RUNS raises the run count for a longer local search.
const RUNS = Number(process.env.PHYSMEM_PROPERTY_RUNS ?? 150);
const tmp = mkdtempSync(join(tmpdir(), 'physmem-options-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Any JS value a caller might pass, of every type. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
  fc.double(),
  fc.constantFrom(NaN, Infinity, -Infinity, -0, 1.5, 2 ** 40, 2 ** 53, Number.MAX_SAFE_INTEGER),
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }),
  fc.string({ maxLength: 8 }),
  fc.constantFrom([], [1], {}, { a: 1 }, () => 1, Symbol('s'), new Date(0), new AbortController().signal),
);

/** What a caller might pass where an options object belongs, other than an object. */
const notAnObject: fc.Arbitrary<unknown> = fc.constantFrom(null, 5, 0, 'x', '', true, [], [1, 2], () => 1, 1n, Symbol('o'));

/** A misspelling of `name`: changed case, a letter dropped, doubled or appended, or a suffix. */
function nearMiss(name: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constant(name.toLowerCase() === name ? name.toUpperCase() : name.toLowerCase()),
    fc.nat({ max: name.length - 1 }).map((i) => name.slice(0, i) + name.slice(i + 1)),
    fc.nat({ max: name.length - 1 }).map((i) => name.slice(0, i + 1) + name[i] + name.slice(i + 1)),
    fc.constantFrom('s', 'ment', 'Ms', '_'),
  ).map((v) => (v.length <= 4 && !v.startsWith(name.slice(0, 1)) ? name + v : v));
}

interface Generated {
  /** The options argument. */
  options: unknown;
  /** True when every name is known and every value came from the good set. */
  allGood: boolean;
  /** An unknown name it contains (or the non-object), when it must be refused. */
  unknown: string | undefined;
  notObject: boolean;
}

/**
 * Options objects for an entry point: each known name absent, with a good
 * value, or with any value; sometimes an unknown or near-miss name; sometimes
 * not an object at all.
 */
function optionsFor(
  good: Record<string, fc.Arbitrary<unknown>>,
  consistent: (options: Record<string, unknown>) => boolean = () => true,
): fc.Arbitrary<Generated> {
  const names = Object.keys(good);
  const entries = names.map((n) =>
    fc.oneof(
      { weight: 3, arbitrary: fc.constant<[string, unknown, boolean] | undefined>(undefined) },
      { weight: 3, arbitrary: good[n].map((v): [string, unknown, boolean] => [n, v, true]) },
      { weight: 1, arbitrary: anyValue.map((v): [string, unknown, boolean] => [n, v, false]) },
    ),
  );
  const extra = fc.oneof(
    { weight: 4, arbitrary: fc.constant<string | undefined>(undefined) },
    { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !names.includes(k)) },
    { weight: 2, arbitrary: fc.constantFrom(...names).chain(nearMiss).filter((k) => !names.includes(k)) },
  );
  const object = fc.tuple(fc.tuple(...entries), extra, anyValue).map(([es, unknown, uv]): Generated => {
    const options: Record<string, unknown> = {};
    let allGood = true;
    for (const e of es) {
      if (e === undefined) continue;
      options[e[0]] = e[1];
      if (!e[2]) allGood = false;
    }
    // An own property even for '__proto__' (a literal would set the prototype instead).
    if (unknown !== undefined) Object.defineProperty(options, unknown, { value: uv, enumerable: true, writable: true, configurable: true });
    return { options, allGood: allGood && unknown === undefined && consistent(options), unknown, notObject: false };
  });
  return fc.oneof(
    { weight: 9, arbitrary: object },
    { weight: 1, arbitrary: notAnObject.map((options): Generated => ({ options, allGood: false, unknown: undefined, notObject: true })) },
  );
}

/** The error of a refused call: a PhysmemError with an E-code, and EINVAL for unknown names and non-objects. */
function checkRefusal(e: unknown, g: Generated, unknownCode = 'EINVAL'): void {
  if (!(e instanceof PhysmemError)) throw new Error(`not a PhysmemError: ${String(e)}`, { cause: e });
  expect(e.code).toMatch(/^E[A-Z]+$/);
  if (g.notObject) expect(e.code).toBe('EINVAL');
  if (g.unknown !== undefined && !g.notObject && e.message.includes('unknown option')) {
    expect(e.code).toBe(unknownCode);
    expect(e.message).toContain(`'${g.unknown.slice(0, 40)}'`);
  }
}

/** Run `f`: either it succeeds (then `honoured` checks the effect) or it throws a PhysmemError. */
function either<T>(g: Generated, f: () => T, honoured: (v: T) => void, unknownCode?: string): void {
  let v: T;
  try {
    v = f();
  } catch (e) {
    checkRefusal(e, g, unknownCode);
    // Good options may still find no memory (ENOMEM) and the like, never EINVAL.
    if (g.allGood && (e as PhysmemError).code === 'EINVAL') throw new Error(`good options refused: ${show(g.options)}: ${(e as Error).message}`, { cause: e });
    return;
  }
  if (g.unknown !== undefined || g.notObject) throw new Error(`accepted ${show(g.options)}, which has an unknown name or is not an object`);
  honoured(v);
}

async function eitherAsync<T>(g: Generated, f: () => Promise<T>, honoured: (v: T) => void | Promise<void>, unknownCode?: string): Promise<void> {
  let v: T;
  try {
    v = await f();
  } catch (e) {
    checkRefusal(e, g, unknownCode);
    if (g.allGood && (e as PhysmemError).code === 'EINVAL') throw new Error(`good options refused: ${show(g.options)}: ${(e as Error).message}`, { cause: e });
    return;
  }
  if (g.unknown !== undefined || g.notObject) throw new Error(`accepted ${show(g.options)}, which has an unknown name or is not an object`);
  await honoured(v);
}

function show(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : typeof x === 'function' || typeof x === 'symbol' ? String(x) : x));
  } catch {
    return String(v);
  }
}

const pow2 = (min: number, max: number) => fc.integer({ min, max }).map((k) => 2 ** k);

// ---------------------------------------------------------------------------
// pool.alloc / pool.allocAsync on the fake backend
// ---------------------------------------------------------------------------

const BASE = 0x1_0000_0000;
const POOL_SIZE = 1 << 22;
// Sizes up to 8 KiB: every good boundary holds them, every good `at` leaves room, every `at` is align-aligned.
const allocGood = {
  align: pow2(0, 12),
  boundary: pow2(13, 22),
  maxAddress: fc.oneof(fc.constant(BASE + POOL_SIZE - 1), fc.constant(BigInt(BASE + POOL_SIZE / 2)), fc.constant(2n ** 64n)),
  at: fc.integer({ min: 0, max: POOL_SIZE / 4096 - 3 }).map((p) => BigInt(BASE + p * 4096)),
  zero: fc.boolean(),
};
// `at` with a boundary or maxAddress it may violate is a contradiction (EINVAL), not a good request.
const allocConsistent = (o: Record<string, unknown>) => o.at === undefined || (o.boundary === undefined && o.maxAddress === undefined);

function honoursAlloc(pool: Pool, size: number, options: PoolAllocOptions, buf: { phys: bigint; size: number; bytes: Uint8Array; free(): void }): void {
  const phys = Number(buf.phys);
  expect(buf.size).toBe(size);
  expect(phys % (options.align ?? 64)).toBe(0);
  if (options.boundary !== undefined) expect(Math.floor(phys / options.boundary)).toBe(Math.floor((phys + size - 1) / options.boundary));
  if (options.maxAddress !== undefined) expect(BigInt(phys + size - 1) <= BigInt(options.maxAddress)).toBe(true);
  if (options.at !== undefined) expect(buf.phys).toBe(BigInt(options.at));
  if (options.zero !== false) expect(buf.bytes.every((b) => b === 0)).toBe(true);
  buf.bytes.fill(0xa5); // so a later zeroed alloc of the same memory is a real check
  buf.free();
  expect(pool.stats().count).toBe(0);
}

describe('options of pool.alloc and pool.allocAsync (fake backend)', () => {
  let pool: Pool;
  beforeAll(() => {
    pool = openPoolSync({ backend: 'fake', size: POOL_SIZE, physBase: BigInt(BASE), leakCheck: 'off' });
  });
  afterAll(() => pool.close());

  it('alloc: every random options object is honoured or refused with a PhysmemError, and nothing leaks', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8192 }), optionsFor(allocGood, allocConsistent), (size, g) => {
        either(g, () => pool.alloc(size, g.options as PoolAllocOptions), (buf) => honoursAlloc(pool, size, g.options as PoolAllocOptions, buf));
        expect(pool.stats().count).toBe(0);
        pool.check();
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('allocAsync: the same, plus wait, timeoutMs and signal', async () => {
    const asyncGood = {
      ...allocGood,
      wait: fc.boolean(),
      timeoutMs: fc.oneof(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constant(2 ** 31 - 1)),
      signal: fc.constant(new AbortController().signal),
    };
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 8192 }), optionsFor(asyncGood, allocConsistent), async (size, g) => {
        // A pool per run: a request no memory can ever satisfy (maxAddress below the pool, `at` outside it)
        // waits, as documented, until close() rejects it; it must not block the next run.
        const own = openPoolSync({ backend: 'fake', size: POOL_SIZE, physBase: BigInt(BASE), leakCheck: 'off' });
        try {
          let settled = false;
          const p = own.allocAsync(size, g.options as PoolAllocOptions);
          p.then(() => (settled = true), () => (settled = true));
          await new Promise((r) => setImmediate(r));
          if (!settled) {
            // Only an accepted wait may still be pending, and a good request in an empty pool is granted at once.
            expect((g.options as { wait?: unknown }).wait).toBe(true);
            expect(g.allGood).toBe(false);
            expect(own.stats().waiting).toBe(1);
            own.close();
            await rejectsWith(p, 'EBADF');
            return;
          }
          await eitherAsync(g, () => p, (buf) => honoursAlloc(own, size, g.options as PoolAllocOptions, buf));
          expect(own.stats()).toMatchObject({ count: 0, waiting: 0 });
        } finally {
          own.close();
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('the bad inputs of the battery: null, a string, a number, a misspelt name, a timer Node would clamp', async () => {
    for (const bad of [null, 'x', 5, [], () => 1]) {
      throwsWith(() => pool.alloc(64, bad as never), 'EINVAL', 'options must be an object');
      await rejectsWith(pool.allocAsync(64, bad as never), 'EINVAL', 'options must be an object');
    }
    throwsWith(() => pool.alloc(64, { alignment: 1 << 20 } as never), 'EINVAL', "did you mean 'align'?");
    for (const timeoutMs of [2 ** 40, 2 ** 31, -1, 1.5, NaN, Infinity, '5']) {
      await rejectsWith(pool.allocAsync(64, { wait: true, timeoutMs: timeoutMs as number }), 'EINVAL', 'timeoutMs');
    }
    expect(pool.stats()).toMatchObject({ count: 0, waiting: 0 });
  });

  it('a wait no memory of the pool could ever satisfy (maxAddress below it, at outside it) is ENOMEM at once, not queued for ever', async () => {
    const all = pool.alloc(POOL_SIZE); // something must be waiting-worthy: the pool is full
    await rejectsWith(pool.allocAsync(64, { wait: true, maxAddress: BASE - 1 }), 'ENOMEM', 'maxAddress');
    await rejectsWith(pool.allocAsync(64, { wait: true, at: BigInt(BASE + POOL_SIZE) }), 'ENOMEM');
    await rejectsWith(pool.allocAsync(64, { wait: true, at: BigInt(BASE + POOL_SIZE - 32) }), 'ENOMEM');
    expect(pool.stats().waiting).toBe(0);
    all.free();
    expect(pool.stats()).toMatchObject({ count: 0, waiting: 0 });
  });

  it('a wait with the longest timeout Node allows (2^31 - 1 ms) stays queued instead of timing out at once', async () => {
    const all = pool.alloc(POOL_SIZE);
    const ac = new AbortController();
    const p = pool.allocAsync(64, { wait: true, timeoutMs: 2 ** 31 - 1, signal: ac.signal });
    let settled = false;
    p.then(() => (settled = true), () => (settled = true));
    // A clamped timer fires after 1 ms: give it several event-loop turns and timer phases.
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 2));
    expect(settled).toBe(false);
    expect(pool.stats().waiting).toBe(1);
    ac.abort();
    await rejectsWith(p, 'ECANCELED');
    all.free();
    expect(pool.stats()).toMatchObject({ count: 0, waiting: 0 });
  });
});

// ---------------------------------------------------------------------------
// openPoolSync / openPool on the fake backend
// ---------------------------------------------------------------------------

describe('options of openPoolSync and openPool (fake backend)', () => {
  const openGood = {
    backend: fc.constant('fake' as const),
    size: fc.integer({ min: 1, max: 1 << 20 }),
    physBase: fc.integer({ min: 1, max: 1 << 20 }).map((p) => BigInt(p) * 4096n),
    busOffset: fc.oneof(fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }), fc.integer({ min: -(2 ** 40), max: 2 ** 40 })),
    leakCheck: fc.constantFrom('off', 'warn', 'trace'),
  };

  it('every random options object opens a pool that honours it, or is refused with a PhysmemError', () => {
    fc.assert(
      fc.property(optionsFor(openGood), (g) => {
        // backend is always 'fake' here: 'auto' would probe this machine's real backends.
        const options = g.notObject ? g.options : { ...(g.options as object), backend: 'fake' };
        either(
          g,
          () => openPoolSync(options as never),
          (pool) => {
            try {
              const o = options as { size?: number; physBase?: bigint | number; busOffset?: bigint | number };
              const s = pool.stats();
              expect(s.total).toBeGreaterThanOrEqual(o.size ?? 1);
              if (o.physBase !== undefined) expect(s.ranges[0].start).toBe(BigInt(o.physBase));
              expect(pool.busOffset).toBe(BigInt(o.busOffset ?? 0));
              const buf = pool.alloc(64);
              expect(buf.bus - buf.phys).toBe(BigInt(o.busOffset ?? 0));
              buf.free();
            } finally {
              pool.close();
            }
          },
        );
      }),
      { numRuns: RUNS },
    );
  });

  it('busOffset 1.5, "abc", {} and NaN are EINVAL naming busOffset, not a RangeError', () => {
    for (const busOffset of [1.5, 'abc', {}, NaN, Infinity, null]) {
      throwsWith(() => openPoolSync({ backend: 'fake', size: 4096, busOffset: busOffset as number }), 'EINVAL', 'busOffset');
    }
  });

  it('a misspelt name is refused with the accepted list, for openPoolSync and openPool alike', async () => {
    throwsWith(() => openPoolSync({ backend: 'fake', sise: 4096 } as never), 'EINVAL', "did you mean 'size'?");
    await rejectsWith(openPool({ backend: 'fake', sise: 4096 } as never), 'EINVAL', "did you mean 'size'?");
    await rejectsWith(openPool({ service: join(tmp, 'none.sock'), mapBlock: false } as never), 'EINVAL', "unknown option 'mapBlock'");
    throwsWith(() => openPoolSync({ backend: 'fkae' } as never), 'EINVAL', "did you mean 'fake'?");
  });
});

// ---------------------------------------------------------------------------
// Entry points that need hardware: unknown names are refused before anything is opened
// ---------------------------------------------------------------------------

describe('unknown option names on entry points that need hardware (refused before touching it)', () => {
  const refuses = (label: string, known: string[], call: (options: Record<string, unknown>) => unknown) =>
    it(label, async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...known).chain(nearMiss).filter((k) => !known.includes(k)), anyValue, async (name, value) => {
          await failsWith(() => call({ [name]: value }), 'EINVAL', `unknown option '${name}'`);
        }),
        { numRuns: 40 },
      );
    });
  refuses("openPoolSync({ backend: 'devmem' })", ['regions', 'cache', 'busOffset', 'size', 'lockDir'], (o) => openPoolSync({ ...o, backend: 'devmem' } as never));
  refuses("openPoolSync({ backend: 'udmabuf' })", ['devices', 'cache', 'sysfsRoot', 'devRoot'], (o) => openPoolSync({ ...o, backend: 'udmabuf' } as never));
  refuses("openPoolSync({ backend: 'hugepage' })", ['pages', 'pageSize', 'busOffset'], (o) => openPoolSync({ ...o, backend: 'hugepage' } as never));
  refuses("openPoolSync({ backend: 'vfio' })", ['device', 'size', 'pageSize', 'iova'], (o) => openPoolSync({ ...o, backend: 'vfio' } as never));
  refuses("openPoolSync({ backend: 'auto' })", ['size', 'quiet', 'physBase'], (o) => openPoolSync({ ...o, backend: 'auto' } as never));
  refuses('PciDevice.open', ['sysfsRoot', 'lock', 'lockDir', 'quiesce'], (o) => PciDevice.open('0000:00:01.0', o));
  refuses('PciDevice.find', ['vendor', 'device', 'classCode', 'classMask', 'index'], (o) => PciDevice.find({ vendor: 0x1234, ...o }));
  refuses('listPciDevices', ['vendor', 'device', 'classCode', 'sysfsRoot'], (o) => listPciDevices(o));
  refuses('bindDriver / unbindDriver / bindVfio', ['sysfsRoot'], (o) => {
    try {
      bindDriver('0000:00:01.0', 'x', o);
    } catch (e) {
      expect(() => unbindDriver('0000:00:01.0', o)).toThrow(PhysmemError);
      expect(() => bindVfio('0000:00:01.0', o)).toThrow(PhysmemError);
      throw e;
    }
  });
  refuses('VfioDevice.open', ['container', 'sysfsRoot', 'devDir'], (o) => VfioDevice.open('0000:00:01.0', o));
  refuses('VfioContainer.open', ['path'], (o) => VfioContainer.open(o));
  refuses('startServer', ['socket', 'size', 'stateDir', 'graceMs', 'quarantineMs', 'maxWaits'], (o) => startServer({ socket: join(tmp, 'never.sock'), ...o }));
  refuses('ServicePool.connect', ['unrefWhenIdle', 'mapBlocks'], (o) => ServicePool.connect(join(tmp, 'never.sock'), o));
  refuses('readMemoryMaps / discoverRegions', ['root', 'pageSize'], (o) => {
    try {
      discoverRegions(o);
    } catch (e) {
      expect(() => readMemoryMaps(o)).toThrow(PhysmemError);
      throw e;
    }
  });
  refuses('checkExplicitRange', ['allowDeviceMemory'], (o) => checkExplicitRange(0x1000_0000n, 0x1000n, [], '', o));
  refuses('findReservedRegions', ['firmware', 'iomem', 'cmdline', 'pageSize'], (o) => findReservedRegions({ firmware: [], iomem: '', ...o }));

  it('a non-string where a path belongs is EINVAL naming the option (never a TypeError from node:path), before anything is opened', async () => {
    const calls: [string, (v: unknown) => unknown][] = [
      ['sysfsRoot', (v) => PciDevice.open('0000:00:01.0', { sysfsRoot: v as string })],
      ['lockDir', (v) => PciDevice.open('0000:00:01.0', { lockDir: v as string })],
      ['sysfsRoot', (v) => listPciDevices({ sysfsRoot: v as string })],
      ['sysfsRoot', (v) => bindDriver('0000:00:01.0', 'x', { sysfsRoot: v as string })],
      ['sysfsRoot', (v) => bindVfio('0000:00:01.0', { sysfsRoot: v as string })],
      ['devDir', (v) => VfioDevice.open('0000:00:01.0', { devDir: v as string })],
      ['path', (v) => VfioContainer.open({ path: v as string })],
      ['root', (v) => discoverRegions({ root: v as string })],
      ['root', (v) => readMemoryMaps({ root: v as string })],
      ['lockDir', (v) => lockRegion('fake-props', [{ start: 0x1000n, size: 0x1000n }], { dir: v as string })],
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...calls), anyValue.filter((v) => typeof v !== 'string' && v !== undefined), async ([name, call], value) => {
        await failsWith(() => call(value), 'EINVAL', name);
      }),
      { numRuns: 80 },
    );
  });

  it('a non-boolean where a boolean belongs is EINVAL naming the option, before anything is opened', async () => {
    const calls: [string, (v: unknown) => unknown][] = [
      ['lock', (v) => PciDevice.open('0000:00:01.0', { lock: v as boolean })],
      ['quiesce', (v) => PciDevice.open('0000:00:01.0', { quiesce: v as boolean })],
      ['allowDeviceMemory', (v) => checkExplicitRange(0x1000_0000n, 0x1000n, [], '', { allowDeviceMemory: v as boolean })],
      ['allowDeviceMemory', (v) => openPoolSync({ backend: 'devmem', allowDeviceMemory: v as boolean })],
      ['quiesceOrphans', (v) => openPoolSync({ backend: 'hugepage', quiesceOrphans: v as boolean })],
      ['quiet', (v) => openPoolSync({ backend: 'auto', quiet: v as boolean })],
      ['mapBlocks', (v) => ServicePool.connect(join(tmp, 'never.sock'), { mapBlocks: v as boolean })],
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...calls), anyValue.filter((v) => typeof v !== 'boolean' && v !== undefined), async ([name, call], value) => {
        await failsWith(() => call(value), 'EINVAL', name);
      }),
      { numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------------------
// pollUntil / pollUntilAsync
// ---------------------------------------------------------------------------

describe('options of pollUntil and pollUntilAsync', () => {
  const pollGood = {
    timeoutMs: fc.oneof(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constant(Infinity)),
    intervalUs: fc.integer({ min: 0, max: 100 }),
    signal: fc.constant(new AbortController().signal),
    what: fc.string({ maxLength: 10 }),
  };

  it('pollUntil: honoured (the first truthy value comes back; timeoutMs 0 times out naming what) or refused', () => {
    fc.assert(
      fc.property(optionsFor(pollGood), (g) => {
        // A condition that never comes only with a short valid timeout, so no run waits long (or forever).
        const t = (g.options as { timeoutMs?: unknown } | null)?.timeoutMs;
        const ready = !(typeof t === 'number' && t >= 0 && t <= 5);
        either(
          g,
          () => {
            try {
              return pollUntil(() => (ready ? 42 : 0), g.options as never);
            } catch (e) {
              // A valid timeout on a condition that never comes is the option honoured, not a refusal.
              if (!ready && e instanceof PhysmemError && e.code === 'ETIMEDOUT') return 'timed out';
              throw e;
            }
          },
          (v) => {
            if (ready) expect(v).toBe(42);
            else expect(v).toBe('timed out');
          },
        );
      }),
      { numRuns: RUNS },
    );
  }, 120_000);

  it('pollUntilAsync: the same as a Promise', async () => {
    await fc.assert(
      fc.asyncProperty(optionsFor(pollGood), async (g) => {
        await eitherAsync(g, () => pollUntilAsync(async () => 'done', g.options as never), (v) => expect(v).toBe('done'));
      }),
      { numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------
// physmem/testing fakes: FakePciDevice, FakeEdu and the InterruptSource options
// ---------------------------------------------------------------------------

describe('options of the physmem/testing fakes (fake PCI device, fake edu)', () => {
  let pool: Pool;
  beforeAll(() => {
    pool = openPoolSync({ backend: 'fake', size: 1 << 20, leakCheck: 'off' });
  });
  afterAll(() => pool.close());

  it('new FakePciDevice(options): honoured (its BARs and interrupt counts) or refused', () => {
    const good = {
      pool: fc.constant(pool),
      bars: fc.array(fc.option(fc.record({ size: pow2(4, 16) }, { requiredKeys: ['size'] }), { nil: undefined }), { maxLength: 6 }),
      bdf: fc.constantFrom('0000:00:05.0', '0000:01:00.0'),
      interrupts: fc.record({ msi: fc.integer({ min: 0, max: 32 }), msix: fc.integer({ min: 0, max: 64 }), intx: fc.boolean() }, { requiredKeys: [] }),
      latencyReads: fc.integer({ min: 1, max: 4 }),
    };
    fc.assert(
      fc.property(optionsFor(good, (o) => 'pool' in o && 'bars' in o), (g) => {
        const o = g.options as { bars?: ({ size: number } | undefined)[]; bdf?: string; interrupts?: { msi?: number } };
        either(
          g,
          () => new FakePciDevice(g.options as never),
          (dev) => {
            try {
              if (o.bdf !== undefined) expect(dev.bdf).toBe(o.bdf);
              (o.bars ?? []).forEach((b, n) => {
                if (b === undefined) return;
                const m = dev.mapBar(n);
                expect(m.size).toBe(b.size);
                m.close();
              });
              const msi = o.interrupts === undefined ? 1 : o.interrupts.msi ?? 0;
              if (msi > 0) dev.enableInterrupts({ type: 'msi', vectors: msi });
              expect(() => dev.enableInterrupts({ type: 'msi', vectors: msi + 1 })).toThrow(PhysmemError);
            } finally {
              dev.close();
            }
          },
        );
      }),
      { numRuns: RUNS },
    );
  });

  it('new FakeEdu(options): accepted (an edu at the given bdf) or refused', () => {
    const good = {
      pool: fc.constant(pool),
      bdf: fc.constant('0000:00:04.0'),
      dmaMask: fc.constantFrom(0xfff_ffffn, 0xff_ffff_ffffn),
      offByOne: fc.boolean(),
      latencyReads: fc.integer({ min: 1, max: 3 }),
    };
    fc.assert(
      fc.property(optionsFor(good, (o) => 'pool' in o), (g) => {
        either(
          g,
          () => new FakeEdu(g.options as never),
          (edu) => {
            try {
              expect(edu.bdf).toBe((g.options as { bdf?: string }).bdf ?? '0000:00:04.0');
              const regs = edu.mapBar(0);
              expect(regs.read32(0)).toBe(0x010000ed);
              regs.close();
            } finally {
              edu.close();
            }
          },
        );
      }),
      { numRuns: RUNS / 3 },
    );
  });

  it('enableInterrupts, waitInterrupt and interrupts: honoured or refused, on the fake PCI device', async () => {
    const dev = new FakePciDevice({ pool, bars: [{ size: 4096 }], interrupts: { msi: 4, msix: 8, intx: true } });
    try {
      const enableGood = { type: fc.constantFrom('msi', 'msix', 'intx'), vectors: fc.constant(1) };
      fc.assert(
        fc.property(optionsFor(enableGood, (o) => 'type' in o), (g) => {
          either(g, () => dev.enableInterrupts(g.options as never), () => expect(dev.interruptType).toBe((g.options as { type: string }).type));
        }),
        { numRuns: RUNS },
      );
      dev.enableInterrupts({ type: 'msi', vectors: 1 });
      const waitGood = { timeoutMs: fc.integer({ min: 0, max: 2 ** 31 - 1 }), signal: fc.constant(new AbortController().signal) };
      await fc.assert(
        fc.asyncProperty(optionsFor(waitGood), async (g) => {
          dev.raiseInterrupt(0); // so an accepted wait is answered at once
          await eitherAsync(g, () => dev.waitInterrupt(0, g.options as never), (count) => expect(count).toBeGreaterThanOrEqual(1));
          await dev.waitInterrupt(0, { timeoutMs: 0 }).catch(() => undefined); // take what a refused wait left
        }),
        { numRuns: RUNS },
      );
      for (const bad of [null, 5, { sginal: 1 }]) throwsWith(() => dev.interrupts(0, bad as never), 'EINVAL');
    } finally {
      dev.close();
    }
  });
});

// ---------------------------------------------------------------------------
// locks, discovery inputs
// ---------------------------------------------------------------------------

describe('options of lockRegion, listRegionLocks and findReservedRegions', () => {
  it('lockRegion({ dir }): honoured (the lock appears there) or refused', () => {
    fc.assert(
      // Any other string is a valid (relative) directory: it would be created in the working directory.
      fc.property(optionsFor({ dir: fc.constant(join(tmp, 'locks')) }).filter((g) => typeof (g.options as { dir?: unknown } | null)?.dir !== 'string' || (g.options as { dir: string }).dir === join(tmp, 'locks')), (g) => {
        either(
          g,
          () => lockRegion('fake-props', [{ start: 0x1000n, size: 0x1000n }], g.options as never),
          (lock) => {
            try {
              const dir = (g.options as { dir?: string }).dir;
              if (dir !== undefined) expect(listRegionLocks({ dir }).holders.some((h) => h.pid === process.pid)).toBe(true);
            } finally {
              lock.release();
            }
          },
        );
      }),
      { numRuns: 30 },
    );
  });

  it('findReservedRegions(input): honoured (pageSize rounds the regions) or refused', () => {
    const firmware = [
      { start: '0x0', end: '0x9fbff', type: 'System RAM' },
      { start: '0x100000', end: '0x3fffffff', type: 'System RAM' },
    ];
    const good = {
      firmware: fc.constant(firmware),
      iomem: fc.constant('00100000-1fffffff : System RAM\n'),
      cmdline: fc.constant('mem=512M'),
      pageSize: pow2(12, 21),
    };
    fc.assert(
      fc.property(optionsFor(good, (o) => 'firmware' in o && 'iomem' in o), (g) => {
        either(g, () => findReservedRegions(g.options as never), (r) => {
          const page = BigInt((g.options as { pageSize?: number }).pageSize ?? 4096);
          for (const region of r.regions) {
            expect(region.start % page).toBe(0n);
            expect(region.size % page).toBe(0n);
          }
        });
      }),
      { numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------
// compat
// ---------------------------------------------------------------------------

describe('physmem/compat options and double frees (fake backend)', () => {
  afterAll(() => allocatorCleanup());

  it('allocatorInit(options) refuses unknown names like openPoolSync, and opens with good ones', () => {
    throwsWith(() => allocatorInit({ backend: 'fake', sise: 1 } as never), 'EINVAL', "did you mean 'size'?");
    expect(allocatorInit({ backend: 'fake', size: 1 << 20 })).toBe(0);
  });

  it('freeDma after dmaBuffer(a).free() returns -EINVAL (-22), as the original did, and dmaBuffer forgets it', () => {
    const a = allocateDma(4096, GFP_KERNEL);
    expect(a).not.toBe(0n);
    dmaBuffer(a)!.free();
    expect(freeDma(a)).toBe(-22);
    expect(dmaBuffer(a)).toBeUndefined();
    const b = allocateDma(4096, GFP_KERNEL);
    expect(freeDma(b)).toBe(0);
    expect(freeDma(b)).toBe(-22);
  });
});

// ---------------------------------------------------------------------------
// The daemon's client (a daemon serving fake file memory)
// ---------------------------------------------------------------------------

describe('options of a daemon pool (fake memory served by startServer)', () => {
  let server: ServiceServer;
  let client: ServicePool;
  beforeAll(async () => {
    const socket = join(tmp, 'd.sock');
    server = await startServer({ socket, size: 1 << 20, quarantineMs: 0, log: () => undefined });
    client = await ServicePool.connect(socket);
  });
  afterAll(async () => {
    await client?.close();
    await server?.close();
  });

  it('allocAsync: honoured (align) or refused with a PhysmemError; unknown names and linked-only options are ENOTSUP', async () => {
    const good = {
      align: pow2(0, 12),
      wait: fc.boolean(),
      timeoutMs: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      signal: fc.constant(new AbortController().signal),
    };
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 8192 }), optionsFor(good), async (size, g) => {
        await eitherAsync(
          g,
          () => client.allocAsync(size, g.options as never),
          async (buf) => {
            expect(buf.size).toBe(size);
            expect(buf.phys % BigInt((g.options as { align?: number }).align ?? 1)).toBe(0n);
            await buf.free();
          },
          'ENOTSUP',
        );
        expect((await client.statsAsync()).count).toBe(0);
      }),
      { numRuns: RUNS / 3 },
    );
    await rejectsWith(client.allocAsync(64, { alignment: 4096 } as never), 'ENOTSUP', "did you mean 'align'?");
    await rejectsWith(client.allocAsync(64, { wait: true, timeoutMs: 2 ** 40 }), 'EINVAL', 'timeoutMs');
  });
});
