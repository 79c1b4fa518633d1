// Runs inside the VM (scripts/vm/run.mjs) with QEMU's edu device: physmem/pci
// against real hardware registers, then DMA by the device into and out of
// buffers of every backend the boot config offers, verified byte for byte,
// and the example driver (examples/edu) run as a test.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Edu, EDU_DEVICE, EDU_MAX_END, EDU_VENDOR } from '../../examples/edu/edu.js';
import { main as eduExample } from '../../examples/edu/main.js';
import { hugepageCounts } from '../../lib/backends/hugepage.js';
import { barrierArch, dmaRmb, dmaWmb, openPoolSync, pollUntil, pollUntilAsync, wmb, type DmaBuffer, type Pool } from '../../lib/index.js';
import { PciDevice } from '../../lib/pci/index.js';
import { describeGuest, guestConfig, hex, inGuest } from './guest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cfg = inGuest ? guestConfig() : undefined;
const M2 = 2 * 1024 * 1024;

describeGuest('physmem/pci on the real edu device', () => {
  let dev: PciDevice;
  beforeAll(() => {
    dev = PciDevice.find({ vendor: EDU_VENDOR, device: EDU_DEVICE });
  });
  afterAll(() => dev?.close());

  it('finds edu by ID and reads its identity from sysfs and config space', () => {
    expect(dev.bdf).toMatch(/^0000:00:[0-9a-f]{2}\.0$/);
    expect(dev).toMatchObject({ vendor: 0x1234, device: 0x11e8, classCode: 0x00ff00, configSize: 256 });
    expect(dev.readConfig16(0)).toBe(0x1234);
    expect(dev.readConfig16(2)).toBe(0x11e8);
    expect(dev.readConfig32(0)).toBe(0x11e81234);
    expect(dev.resources[0]).toMatchObject({ kind: 'memory', size: 1n << 20n, prefetchable: false });
    // A second PciDevice on it is EBUSY (the device lock); one that only looks opts out of the lock.
    expect(() => PciDevice.open(dev.bdf)).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/another PciDevice of this process/) }));
    const again = PciDevice.open(dev.bdf.slice(5), { lock: false }); // short form
    expect(again.bdf).toBe(dev.bdf);
    again.close();
  });

  it('an unknown ID or address is ENOENT naming what is present', () => {
    expect(() => PciDevice.find({ vendor: 0x1234, device: 0x0bad })).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining(`${dev.bdf} 1234:11e8`) }),
    );
    expect(() => PciDevice.open('0000:00:1f.7')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('enable() turns the device on; setBusMaster() flips only bit 2 of the command register', () => {
    dev.enable();
    expect(dev.enabled).toBe(true);
    expect(fs.readFileSync(path.join(dev.path, 'enable'), 'utf8').trim()).toBe('1');
    dev.enable(); // idempotent: the kernel's count is not raised again
    dev.setBusMaster(false);
    const cmd = dev.readConfig16(4);
    expect(cmd & 0x2).toBe(0x2); // memory decoding, from enable
    expect(dev.busMaster).toBe(false);
    dev.setBusMaster(true);
    expect(dev.readConfig16(4)).toBe(cmd | 0x4);
    expect(dev.busMaster).toBe(true);
    dev.setBusMaster(false);
    expect(dev.readConfig16(4)).toBe(cmd);
    dev.setBusMaster(true);
  });

  it('BAR 0: identification, liveness (inverse read back, unsigned), factorial', () => {
    const regs = dev.mapBar(0);
    try {
      expect(regs.size).toBe(1 << 20);
      expect(regs.phys).toBe(dev.resources[0].start);
      expect(regs.read32(0x00)).toBe(0x010000ed);
      regs.write32(0x04, 0x12345678);
      expect(regs.read32(0x04)).toBe(0xedcba987);
      regs.write32(0x04, 0);
      expect(regs.read32(0x04)).toBe(0xffffffff); // unsigned, not -1
      regs.write32(0x04, ~0xff); // negative int32: stored as 0xffffff00
      expect(regs.read32(0x04)).toBe(0xff);
      regs.write32(0x08, 5);
      pollUntil(() => (regs.read32(0x20) & 1) === 0, { timeoutMs: 5000, what: 'factorial done' });
      expect(regs.read32(0x08)).toBe(120);
    } finally {
      regs.close();
    }
  });

  it('each access is exactly the width asked (edu answers only 32-bit accesses below 0x80)', () => {
    const regs = dev.mapBar(0);
    try {
      // A narrower access faked with a 32-bit load would return part of 0x010000ed.
      expect(regs.read8(0x00)).not.toBe(0xed);
      expect(regs.read16(0x00)).not.toBe(0x00ed);
      // A 64-bit access below 0x80 is answered with all ones by edu itself.
      expect(regs.read64(0x00)).toBe(0xffff_ffff_ffff_ffffn);
      // A narrower store to the liveness register is ignored.
      regs.write32(0x04, 0);
      regs.write8(0x04, 0x55);
      regs.write16(0x04, 0x5555);
      expect(regs.read32(0x04)).toBe(0xffffffff);
      // One 64-bit store keeps all 64 bits (two 32-bit stores would lose the high half: edu ignores 0x84).
      regs.write64(0x80, 0x1234_5678_9abc_def0n);
      expect(regs.read64(0x80)).toBe(0x1234_5678_9abc_def0n);
      expect(regs.read32(0x80)).toBe(0x9abcdef0);
      regs.write64(0x80, 0n);
    } finally {
      regs.close();
    }
  });

  it('bounds, alignment and closed mappings are typed errors', () => {
    const regs = dev.mapBar(0);
    expect(() => regs.read32(1 << 20)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => regs.read32(0x102)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => regs.read64(0x84)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    regs.close();
    expect(() => regs.read32(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => dev.mapBar(1)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('an I/O-port BAR of another device is refused with ENOTSUP', () => {
    const withIo = PciDevice.list()
      .map((d) => PciDevice.open(d.bdf, { lock: false }))
      .find((d) => {
        const ok = d.resources.slice(0, 6).some((r) => r.kind === 'io');
        if (!ok) d.close();
        return ok;
      });
    expect(withIo, 'the pc machine has I/O BARs (PIIX IDE, legacy virtio)').toBeDefined();
    const n = withIo!.resources.findIndex((r) => r.kind === 'io');
    expect(() => withIo!.mapBar(n)).toThrow(expect.objectContaining({ code: 'ENOTSUP', message: expect.stringMatching(/I\/O-port BAR/) }));
    withIo!.close();
  });

  it('write-combining: resource<n>_wc for a prefetchable BAR, the plain file otherwise', () => {
    const regs = dev.mapBar(0, { writeCombining: true }); // edu BAR 0 is not prefetchable: no _wc
    expect(regs.writeCombining).toBe(false);
    expect(regs.read32(0)).toBe(0x010000ed);
    regs.close();
    const prefetchable = PciDevice.list()
      .map((d) => PciDevice.open(d.bdf, { lock: false }))
      .find((d) => {
        const ok = d.resources.slice(0, 6).some((r) => r.prefetchable && fs.existsSync(path.join(d.path, `resource${r.index}_wc`)));
        if (!ok) d.close();
        return ok;
      });
    expect(prefetchable, 'the pc machine has a VGA with a prefetchable BAR').toBeDefined();
    const n = prefetchable!.resources.findIndex((r) => r.prefetchable);
    const wc = prefetchable!.mapBar(n, { writeCombining: true });
    expect(wc.writeCombining).toBe(true);
    expect(wc.path.endsWith(`resource${n}_wc`)).toBe(true);
    wc.read32(0);
    prefetchable!.close();
  });

  it('as a non-root user: identity readable, BAR mapping and config writes EACCES with "run as root"', () => {
    const script = `
      import { PciDevice } from ${JSON.stringify(path.join(REPO, 'dist/lib/pci/index.js'))};
      const d = PciDevice.open(${JSON.stringify(dev.bdf)});
      const out = { vendor: d.vendor };
      for (const [k, f] of [['bar', () => d.mapBar(0)], ['bm', () => d.setBusMaster(!d.busMaster)], ['cfg64', () => d.readConfig8(64)]]) {
        try { f(); out[k] = 'no error'; } catch (e) { out[k] = { code: e.code, message: e.message }; }
      }
      console.log(JSON.stringify(out));`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: '/',
    });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.vendor).toBe(0x1234);
    for (const k of ['bar', 'bm', 'cfg64']) expect(out[k]).toMatchObject({ code: 'EACCES', message: expect.stringMatching(/run as root/) });
  });
});

// ---------------------------------------------------------------------------
// DMA by the device, through every backend available in this boot.

/** Bytes per device transfer: inside edu's buffer (see EDU_MAX_END); each transfer takes ~100 ms. */
const CHUNK = 4000;

/** RAM at `src` -> edu -> RAM at `dst`, in pieces that fit the device buffer. */
function roundTrip(edu: Edu, src: bigint, dst: bigint, length: number, deviceOffset = 0): void {
  for (let done = 0; done < length; done += CHUNK) {
    const n = Math.min(CHUNK, length - done);
    edu.toDevice(src + BigInt(done), deviceOffset, n);
    edu.fromDevice(deviceOffset, dst + BigInt(done), n);
  }
}

/** Index of the first differing byte, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length)) ? -1 : a.findIndex((x, i) => x !== b[i]);
}

/** Fill `src` randomly, `dst` with a pattern, move src -> device -> dst, expect dst == src and src unchanged. */
function checkRoundTrip(edu: Edu, src: DmaBuffer, dst: DmaBuffer, length = src.size): void {
  randomFillSync(src.bytes.subarray(0, length));
  dst.bytes.fill(0x5a);
  const expected = Uint8Array.from(src.bytes.subarray(0, length));
  roundTrip(edu, src.bus, dst.bus, length);
  const bad = firstDifference(dst.bytes.subarray(0, length), expected);
  expect(bad, `first differing byte at ${bad} (phys ${hex(Number(dst.phys) + bad)})`).toBe(-1);
  expect(firstDifference(src.bytes.subarray(0, length), expected)).toBe(-1);
}

interface BackendCase {
  name: string;
  open: () => Pool;
  /** Skip reason, when not available in this boot. */
  skip?: string;
}

function backendCases(): BackendCase[] {
  if (!cfg) return [{ name: 'guest only', open: () => openPoolSync({ backend: 'fake' }), skip: 'not in the VM' }];
  const cases: BackendCase[] = [];
  const above = cfg.regions.find((r) => r.kind === 'above-mem');
  if (above) cases.push({ name: 'devmem above mem= (regions: auto)', open: () => openPoolSync({ backend: 'devmem' }) });
  for (const r of cfg.regions.filter((x) => x.kind === 'memmap-reserved')) {
    cases.push({
      name: `devmem in the memmap= region ${hex(r.start)}-${hex(r.end)}`,
      open: () => openPoolSync({ backend: 'devmem', regions: [{ start: BigInt(r.start), size: BigInt(r.end - r.start + 1) }] }),
    });
  }
  cases.push({ name: 'hugepage (8 x 2 MiB)', open: () => openPoolSync({ backend: 'hugepage', pages: 8, pageSize: M2 }) });
  return cases;
}

// Boots without reserved huge pages get 8 for these tests, returned afterwards.
let savedHugepages: string | undefined;
function reserveHugepages(n: number): void {
  if (hugepageCounts(M2).available >= n) return;
  savedHugepages = fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8').trim();
  fs.writeFileSync('/proc/sys/vm/nr_hugepages', String(Number(savedHugepages) + n));
}

describeGuest('DMA by the edu device into physmem buffers', () => {
  let edu: Edu;
  beforeAll(() => {
    reserveHugepages(8);
    edu = Edu.open();
  });
  afterAll(() => {
    edu?.close();
    if (savedHugepages !== undefined) fs.writeFileSync('/proc/sys/vm/nr_hugepages', savedHugepages);
  });

  for (const c of backendCases()) {
    describe.skipIf(c.skip !== undefined)(c.name, () => {
      let pool: Pool;
      beforeAll(() => {
        pool = c.open();
        if (edu.pci === undefined) throw new Error('Edu.open() returned an edu without its PCI function');
        edu.pci.setBusMaster(true);
      });
      afterAll(() => {
        if (!pool) return;
        expect(pool.stats().used).toBe(0);
        pool.check();
        pool.close();
      });

      it('round trips random data RAM -> edu -> RAM at sizes 64 B to 64 KiB', () => {
        for (const size of [64, 1000, 4096, 65536]) {
          const src = pool.alloc(size);
          const dst = pool.alloc(size);
          checkRoundTrip(edu, src, dst);
          src.free();
          dst.free();
        }
      });

      it('at odd byte offsets inside buffers and across a 4 KiB page boundary, touching nothing around', () => {
        const src = pool.alloc(3 * 4096, { align: 4096 });
        const dst = pool.alloc(3 * 4096, { align: 4096 });
        randomFillSync(src.bytes);
        for (const [from, to, len] of [
          [1, 3, 61],
          [4096 - 100, 4096 - 7, 200], // both cross the first page boundary
          [5, 2 * 4096 - 1, 4095 - 5], // device offset below: the largest piece edu takes here
        ]) {
          dst.bytes.fill(0x5a);
          edu.toDevice(src.busAt(from), 5, len);
          edu.fromDevice(5, dst.busAt(to), len);
          expect(firstDifference(dst.bytes.subarray(to, to + len), src.bytes.subarray(from, from + len))).toBe(-1);
          expect(dst.bytes[to - 1]).toBe(0x5a);
          expect(dst.bytes[to + len]).toBe(0x5a);
        }
        src.free();
        dst.free();
      });

      it('blocks at the first byte and ending at the last byte of every range', () => {
        for (const r of pool.stats().ranges) {
          const end = r.start + BigInt(r.size);
          for (const size of [64, 4104]) {
            const last = pool.alloc(size, { at: end - BigInt(size) });
            const first = pool.alloc(size, { at: r.start });
            const other = pool.alloc(size);
            expect(last.phys + BigInt(last.size)).toBe(end);
            checkRoundTrip(edu, other, last); // the device writes up to the range's last byte
            checkRoundTrip(edu, last, other); // and reads from it
            checkRoundTrip(edu, other, first);
            checkRoundTrip(edu, first, other);
            for (const b of [last, first, other]) b.free();
          }
        }
      });

      it('an allocation with maxAddress lies at or below it, and the device reaches it there', () => {
        const ranges = pool.stats().ranges;
        const hi = ranges[ranges.length - 1];
        // A limit in the middle of the highest range, and edu's default 28-bit DMA mask.
        for (const limit of [hi.start + BigInt(hi.size / 2) - 1n, 0x0fff_ffffn]) {
          const fits = ranges.some((r) => r.start + 4096n - 1n <= limit);
          if (!fits) {
            expect(() => pool.alloc(4096, { maxAddress: limit })).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
            continue;
          }
          const a = pool.alloc(4096, { maxAddress: limit });
          const b = pool.alloc(4096, { maxAddress: limit });
          expect(a.phys + 4095n <= limit && b.phys + 4095n <= limit).toBe(true);
          checkRoundTrip(edu, a, b);
          a.free();
          b.free();
        }
        const lowest = ranges[0].start;
        expect(() => pool.alloc(64, { maxAddress: lowest + 32n })).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
      });

      it.skipIf(!c.name.startsWith('hugepage'))('a block spanning a huge page boundary inside a merged range', () => {
        const merged = pool.stats().ranges.find((r) => r.size >= 2 * M2);
        expect(merged, `no two huge pages were physically adjacent: ${pool.describe()}`).toBeDefined();
        // 16 KiB centred on the first 2 MiB boundary of the range.
        const at = merged!.start + BigInt(M2) - 8192n;
        const span = pool.alloc(16384, { at });
        const other = pool.alloc(16384);
        checkRoundTrip(edu, other, span);
        checkRoundTrip(edu, span, other);
        span.free();
        other.free();
      });
    });
  }

  it('ordering on the real device: relaxed doorbell after dmaWmb(), writel doorbell, readl then Atomics.load of the result', async () => {
    expect(barrierArch()).toBe('x86-64');
    const pool = openPoolSync({ backend: 'hugepage', pages: 1, pageSize: M2 });
    try {
      const src = pool.alloc(1024, { align: 4096 });
      const dst = pool.alloc(1024, { align: 4096 });
      const regs = edu.regs;
      const run = async (cmd: number, from: bigint, to: bigint, relaxedDoorbell: boolean): Promise<void> => {
        regs.write64Relaxed(0x80, from);
        regs.write64Relaxed(0x88, to);
        regs.write64Relaxed(0x90, 1024n);
        if (relaxedDoorbell) {
          dmaWmb(); // the data stores above are visible before the doorbell
          regs.write32Relaxed(0x98, cmd);
        } else {
          regs.write32(0x98, cmd); // writel: the barrier is inside
        }
        // The async poll lets the event loop run while the device works.
        await pollUntilAsync(() => (regs.read32(0x98) & 1) === 0, { timeoutMs: 5000, intervalUs: 1000, what: 'edu DMA done' });
      };
      for (const relaxed of [true, false]) {
        randomFillSync(src.bytes);
        wmb();
        dst.bytes.fill(0);
        await run(0x1, src.bus, 0x40000n, relaxed);
        await run(0x3, 0x40000n, dst.bus, relaxed);
        dmaRmb(); // the completion was read; now the payload
        const words = new Int32Array(dst.bytes.buffer, 0, 256);
        const expected = new Int32Array(src.bytes.buffer, 0, 256);
        // Atomics.load: a load V8 may not hoist or merge (see docs/ordering.md).
        expect(Array.from({ length: 256 }, (_, i) => Atomics.load(words, i))).toEqual([...expected]);
      }
      src.free();
      dst.free();
    } finally {
      pool.close();
    }
  });

  it('pollUntil on a register that never changes: ETIMEDOUT naming what was awaited', () => {
    expect(() => pollUntil(() => (edu.regs.read32(0x24) & 0x8000_0000) !== 0, { timeoutMs: 50, what: 'an edu interrupt cause nobody raised' })).toThrow(
      expect.objectContaining({ code: 'ETIMEDOUT', message: expect.stringMatching(/an edu interrupt cause nobody raised did not happen within 50 ms/) }),
    );
  });

  it('edu refuses transfers that would end at the end of its buffer (QEMU 7.2 would abort)', () => {
    expect(() => edu.toDevice(0n, 0, EDU_MAX_END + 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => edu.fromDevice(4000, 0n, 96)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describeGuest('examples/edu, the example driver', () => {
  beforeAll(() => reserveHugepages(1));
  afterAll(() => {
    if (savedHugepages !== undefined) fs.writeFileSync('/proc/sys/vm/nr_hugepages', savedHugepages);
  });

  for (const backend of ['auto', 'hugepage'] as const) {
    it(`runs end to end with ${backend} memory`, () => {
      const lines: string[] = [];
      eduExample(backend, (l) => lines.push(l));
      expect(lines[0]).toMatch(/^edu 1\.0 at 0000:00:[0-9a-f]{2}\.0/);
      expect(lines).toContain('liveness: ok');
      expect(lines).toContain('factorial(10) = 3628800');
      expect(lines[3]).toMatch(backend === 'auto' ? /^devmem backend/ : /^hugepage backend/);
      expect(lines[4]).toMatch(/^DMA: 2048 random bytes 0x[0-9a-f]+ -> edu -> 0x[0-9a-f]+: identical$/);
    });
  }

  it('runs as a program (node dist/examples/edu/main.js) and exits 0', () => {
    const out = execFileSync(process.execPath, [path.join(REPO, 'dist/examples/edu/main.js'), 'hugepage'], { encoding: 'utf8' });
    expect(out).toMatch(/factorial\(10\) = 3628800\n.*\nDMA: 2048 random bytes .*: identical\n$/s);
  });
});
