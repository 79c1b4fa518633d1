// Runs inside the VM (config `iommu`: q35 + intel-iommu, two edu devices in
// translated IOMMU groups, bound to vfio-pci): vfio pools mapped into a real
// VFIO type1 container, exercised by edu's DMA engine.
//  - DMA round trips RAM -> device -> RAM, byte for byte, both devices sharing one pool;
//  - the conformance suite on vfio pools (4 KiB and 2 MiB pages);
//  - a DMA aimed at IOVAs that are not mapped is blocked, faults in the log, changes nothing;
//  - a non-root user with /dev/vfio/N maps a pool and meets RLIMIT_MEMLOCK with a clear error;
//  - a driver killed with -9 mid-DMA leaves a quiesced device; the next program's buffers stay intact.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openPoolSync, type DmaBuffer, type Pool } from '../../lib/index.js';
import { VfioContainer, VfioDevice } from '../../lib/vfio/index.js';
import type { Mmio } from '../../lib/pci/index.js';
import { conformanceSuite } from '../conformance/suite.js';
import { startLineChild } from '../helpers/child.js';
import { describeGuest, inGuest } from './guest.js';
import { EDU_MAX_END, bindEdusToVfio, dma, dmaBusy, dmarFaults, hardwareCommand, kernelLog, startDma, waitDma, type VfioEduInfo } from './vfio-guest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MiB = 1 << 20;
const M2 = 2 * MiB;
const PIECE = 2048; // edu's buffer is 4 KiB and a transfer must end before its last byte: move data in pieces
const BUS_MASTER = 0x4;

function random(n: number): Uint8Array {
  return randomFillSync(new Uint8Array(n));
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Wait (event: a kernel log line appears) with a generous safety deadline. */
async function waitForLog(pred: (log: string) => boolean, what: string, deadlineMs = 20_000): Promise<string> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const log = kernelLog();
    if (pred(log)) return log;
    if (Date.now() > end) throw new Error(`no ${what} in the kernel log within ${deadlineMs} ms; its tail:\n${log.split('\n').slice(-15).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The edus alone in their groups (bus 0); the pair behind the bridge shares one group (vfio-device tests).
const edus: VfioEduInfo[] = inGuest ? bindEdusToVfio().filter((e) => e.bdf.startsWith('0000:00:')) : [];

describeGuest('vfio pools on edu behind intel-iommu (both devices in one container)', () => {
  let container: VfioContainer;
  let devs: VfioDevice[] = [];
  let regs: Mmio[] = [];
  const pools: Pool[] = [];
  const pool = (o: { size: number; pageSize?: number; iova?: bigint }) => {
    const p = openPoolSync({ backend: 'vfio', device: container, ...o });
    pools.push(p);
    return p;
  };

  beforeAll(() => {
    container = VfioContainer.open();
    devs = edus.map((e) => VfioDevice.open(e.bdf, { container }));
    for (const d of devs) d.setBusMaster(true);
    regs = devs.map((d) => d.mapBar(0));
  });
  afterAll(() => {
    for (const p of pools) p.close();
    for (const d of devs) d.close();
    container?.close();
  });

  it('two edu devices, each alone in a translated group; the container reports VT-d\'s IOVA ranges without the MSI window', () => {
    expect(edus).toHaveLength(2);
    for (const e of edus) expect(['DMA', 'DMA-FQ']).toContain(e.groupType);
    expect(container.iommuType).toBe('type1v2');
    expect(container.groups).toHaveLength(2);
    expect(container.iovaRanges).toEqual([
      { start: 0n, end: 0xfedf_ffffn },
      { start: 0xfef0_0000n, end: 0x7f_ffff_ffffn },
    ]);
    expect(container.pageSizes & 0x4020_1000n).toBe(0x4020_1000n); // 4 KiB, 2 MiB, 1 GiB
    expect(container.dmaAvail).toBeGreaterThan(0);
    for (const r of regs) expect(r.read32(0)).toBe(0x010000ed);
  });

  it('each pool is one IOMMU mapping (dma_entry_limit counts it) at IOVAs from 1 MiB, never the MSI window', () => {
    const before = container.dmaAvail!;
    const a = pool({ size: MiB });
    const b = pool({ size: 3 * MiB });
    expect(container.dmaAvail).toBe(before - 2);
    for (const p of [a, b]) {
      const r = p.stats().ranges[0];
      expect(r.start >= 0x10_0000n).toBe(true);
      expect(r.start + BigInt(r.size) <= 0xfee0_0000n || r.start > 0xfeef_ffffn).toBe(true);
    }
    a.close();
    b.close();
    expect(container.dmaAvail).toBe(before);
  });

  // Copy src[srcOff, +len) to the devices and back into dst[dstOff, +len), in
  // pieces, the two devices working on alternate pieces at the same time.
  function roundTrip(src: DmaBuffer, srcOff: number, dst: DmaBuffer, dstOff: number, len: number): void {
    for (let at = 0; at < len; at += PIECE * regs.length) {
      const jobs = regs
        .map((r, i) => ({ r, off: at + i * PIECE, devOff: (at / PIECE + i) % 7 * 257 }))
        .filter((j) => j.off < len)
        .map((j) => ({ ...j, n: Math.min(PIECE, len - j.off, EDU_MAX_END - j.devOff) }));
      for (const j of jobs) startDma(j.r, false, src.bus + BigInt(srcOff + j.off), j.devOff, j.n);
      for (const j of jobs) waitDma(j.r);
      for (const j of jobs) startDma(j.r, true, dst.bus + BigInt(dstOff + j.off), j.devOff, j.n);
      for (const j of jobs) waitDma(j.r);
      // A piece shortened by the device buffer's end: finish it on the first device.
      for (const j of jobs) {
        const rest = Math.min(PIECE, len - j.off) - j.n;
        if (rest > 0) {
          dma(regs[0], false, src.bus + BigInt(srcOff + j.off + j.n), 0, rest);
          dma(regs[0], true, dst.bus + BigInt(dstOff + j.off + j.n), 0, rest);
        }
      }
    }
  }

  for (const pageSize of [4096, M2]) {
    it(`edu DMA round trips RAM -> device -> RAM through a vfio pool of ${pageSize === M2 ? '2 MiB' : '4 KiB'} pages: random data, 64 B..64 KiB, several offsets, byte for byte`, () => {
      const p = pool({ size: 2 * M2, pageSize });
      const cases: [size: number, srcOff: number, dstOff: number][] = [
        [64, 0, 0],
        [100, 1, 63],
        [1000, 63, 1],
        [4096, 4095, 0],
        [5000, 8, 2048],
        [65536, 0, 4096],
      ];
      for (const [size, srcOff, dstOff] of cases) {
        const src = p.alloc(srcOff + size + 64, { align: 64 });
        const dst = p.alloc(dstOff + size + 64, { align: 4096 });
        const data = random(size);
        src.bytes.set(data, srcOff);
        const guard = random(dst.size);
        dst.bytes.set(guard);
        roundTrip(src, srcOff, dst, dstOff, size);
        expect(same(dst.bytes.subarray(dstOff, dstOff + size), data), `${size} bytes from +${srcOff} to +${dstOff}`).toBe(true);
        // Nothing outside the target range was written.
        expect(same(dst.bytes.subarray(0, dstOff), guard.subarray(0, dstOff))).toBe(true);
        expect(same(dst.bytes.subarray(dstOff + size), guard.subarray(dstOff + size))).toBe(true);
        src.free();
        dst.free();
      }
      p.close(); // gives its huge pages back for the conformance pools
    });
  }

  it('a DMA aimed at IOVAs that are not mapped is blocked: DMAR faults in the kernel log, no byte of any buffer changes', async () => {
    const live = pool({ size: MiB });
    const other = pool({ size: MiB });
    const stale = pool({ size: MiB });
    const staleIova = stale.stats().ranges[0].start;
    stale.close(); // its IOVAs were real a moment ago: the use-after-close case
    const a = live.alloc(MiB, { align: 4096 });
    const b = other.alloc(MiB / 2);
    const c = other.alloc(MiB / 2);
    a.bytes.set(random(a.size));
    b.bytes.set(random(b.size));
    c.bytes.fill(0xee, 0, PIECE);
    const snapshot = [a, b, c].map((x) => x.bytes.slice());
    dma(regs[0], false, c.bus, 0, PIECE); // the device buffer now holds 0xee: what a stray write would carry
    const top = 0x7f_ffff_f000n; // the last page of the IOMMU's address space, never mapped
    const targets = [staleIova, 0n, staleIova + 0x8_0000n, top];
    dma(regs[1], false, 0n, 0, PIECE); // RAM -> device from IOVA 0 (the other device): blocked
    for (const t of targets) dma(regs[0], true, t, 0, PIECE); // device -> RAM: blocked
    for (const [i, x] of [a, b, c].entries()) expect(same(x.bytes, snapshot[i]), `buffer ${i} unchanged`).toBe(true);
    // The IOMMU reports the first fault of each device. QEMU's intel-iommu then
    // collapses further faults from a device whose record is still pending
    // ("New fault is not recorded due to compression of faults" on QEMU's
    // stderr), so later targets need not each get a line.
    const [w, r] = edus.map((e) => e.bdf.replace(/^0000:/, ''));
    const writeFault = new RegExp(`DMA Write[^\\n]*Request device \\[${w}\\] fault addr 0x${staleIova.toString(16)} [^\\n]*PTE Write access is not set`);
    const readFault = new RegExp(`DMA Read[^\\n]*Request device \\[${r}\\] fault addr 0x0 [^\\n]*PTE Read access is not set`);
    const log = await waitForLog((l) => writeFault.test(l) && readFault.test(l), `DMAR faults of ${w} (write 0x${staleIova.toString(16)}) and ${r} (read 0x0)`);
    console.log(`DMAR faults in the kernel log:\n${[...dmarFaults(edus[0].bdf, log), ...dmarFaults(edus[1].bdf, log)].join('\n')}`);
    // The device still works where memory is mapped.
    dma(regs[0], true, a.bus + 4096n, 0, PIECE);
    expect(a.bytes.subarray(4096, 4096 + PIECE).every((v) => v === 0xee)).toBe(true);
  });

  describe('conformance on real IOMMU mappings', () => {
    conformanceSuite('vfio pool, 4 KiB pages (real VFIO type1 container)', () => pool({ size: 8 * MiB }));
    conformanceSuite('vfio pool, 2 MiB pages (real VFIO type1 container)', () => pool({ size: 4 * M2, pageSize: M2 }));
  });
});

/** A dist/ module path for a child process (the guest runs no build: the host built dist/ before booting). */
function dist(rel: string): string {
  const p = path.join(REPO, 'dist', rel);
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run \`npx tsc -p tsconfig.json\` on the host first`);
  return JSON.stringify(p);
}

// One edu DMA from a child process, plain JS over an Mmio (see vfio-guest.ts).
const CHILD_DMA = `
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const start = (r, toRam, bus, len) => {
    r.write64(0x80, toRam ? 0x40000n : bus); r.write64(0x88, toRam ? bus : 0x40000n);
    r.write64(0x90, BigInt(len)); r.write32(0x98, toRam ? 3 : 1);
  };
  const wait = (r) => { while (r.read32(0x98) & 1) Atomics.wait(pause, 0, 0, 1); };`;

describeGuest('a non-root user with access to /dev/vfio/N', () => {
  it('opens edu, DMAs through a vfio pool, and a pool past RLIMIT_MEMLOCK fails naming the limit and the fix', () => {
    const e = edus[1];
    const dev = `/dev/vfio/${e.group}`;
    const st = fs.statSync(dev);
    fs.chownSync(dev, 65534, 65534);
    try {
      const script = `
        import { VfioDevice } from ${dist('lib/vfio/index.js')};
        import { openPoolSync } from ${dist('lib/index.js')};
        ${CHILD_DMA}
        const out = { uid: process.getuid() };
        const d = VfioDevice.open(${JSON.stringify(e.bdf)});
        d.setBusMaster(true);
        const r = d.mapBar(0);
        const p = openPoolSync({ backend: 'vfio', device: d, size: 4 << 20 });
        const a = p.alloc(1024), b = p.alloc(1024);
        for (let i = 0; i < 1024; i++) a.bytes[i] = (i * 13 + 5) & 255;
        start(r, false, a.bus, 1024); wait(r); start(r, true, b.bus, 1024); wait(r);
        out.roundTrip = Buffer.from(a.bytes).equals(Buffer.from(b.bytes));
        out.limit = (/^Max locked memory\\s+(\\S+)/m.exec((await import('node:fs')).readFileSync('/proc/self/limits', 'utf8')) ?? [])[1];
        try { openPoolSync({ backend: 'vfio', device: d, size: 16 << 20 }); out.big = 'opened'; }
        catch (err) { out.big = { code: err.code, message: err.message }; }
        p.close(); d.close();
        console.log(JSON.stringify(out));`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', uid: 65534, gid: 65534, cwd: '/', timeout: 60_000 });
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ uid: 65534, roundTrip: true, limit: String(8 * MiB) });
      expect(out.big.code).toBe('ENOMEM');
      expect(out.big.message).toMatch(/pinning 16 MiB for DMA passes RLIMIT_MEMLOCK: limit 8 MiB, already locked 4 MiB/);
      expect(out.big.message).toMatch(/ulimit -l \d+.*LimitMEMLOCK=.*CAP_IPC_LOCK/s);
    } finally {
      fs.chownSync(dev, st.uid, st.gid);
    }
  });
});

describeGuest('a driver killed with -9 mid-DMA', () => {
  const children = new Set<ChildProcess>();
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('leaves the device with bus mastering off (VFIO release); the next program opens it, allocates, and its buffers stay intact', async () => {
    const e = edus[0];
    const IOVA = 0x4000_0000n; // the dying driver and the next one use the same IOVAs on purpose
    const script = `
      import { VfioDevice } from ${dist('lib/vfio/index.js')};
      import { openPoolSync } from ${dist('lib/index.js')};
      ${CHILD_DMA}
      const d = VfioDevice.open(${JSON.stringify(e.bdf)});
      d.setBusMaster(true);
      const r = d.mapBar(0);
      const p = openPoolSync({ backend: 'vfio', device: d, size: 1 << 20, iova: ${IOVA}n });
      const b = p.alloc(1 << 20);
      for (let n = 0; ; n++) {
        start(r, true, b.bus + BigInt((n % 64) * 4096), 2048);
        console.log('dma ' + n + ' pending ' + (r.read32(0x98) & 1));
        wait(r);
      }`;
    const child = startLineChild(['--input-type=module', '-e', script], { cwd: '/', track: children });
    const died = child.exit.then((code) => {
      throw new Error(`the driver child exited (${code}) before its fourth DMA: ${child.stderr()}`);
    });
    died.catch(() => undefined); // raced below; once we kill the child it fires, expectedly
    let line = '';
    while (!/^dma 3 /.test(line)) line = await Promise.race([child.line(), died]);
    child.child.kill('SIGKILL');
    expect(await child.exit).toBe(null);

    // What VFIO did when the killed process's fds were closed: bus mastering off in the hardware.
    expect(hardwareCommand(e.bdf) & BUS_MASTER).toBe(0);

    // The next program: same device, same IOVAs, fresh data.
    const d = VfioDevice.open(e.bdf);
    try {
      const r = d.mapBar(0);
      const p = openPoolSync({ backend: 'vfio', device: d, size: 2 * MiB, iova: IOVA });
      const mine = p.alloc(MiB);
      expect(mine.bus).toBe(IOVA); // exactly where the dead driver's DMA was aimed
      const data = random(MiB);
      mine.bytes.set(data);
      expect(d.busMaster).toBe(false);
      // A transfer the dead driver left pending runs out (edu: ~100 ms of VM time) without touching us.
      const pendingAtOpen = dmaBusy(r);
      waitDma(r);
      console.log(`kill -9: a DMA of the killed driver was ${pendingAtOpen ? 'still pending' : 'already done'} when the next program had mapped its pool`);
      expect(same(mine.bytes, data)).toBe(true);
      // With bus mastering off the device cannot write memory at all, IOMMU mapping or not.
      startDma(r, true, mine.bus, 0, PIECE);
      waitDma(r);
      expect(same(mine.bytes, data)).toBe(true);
      // Once this program turns it on, DMA works, into this program's own buffers only.
      d.setBusMaster(true);
      const probe = p.alloc(PIECE);
      const back = p.alloc(PIECE);
      probe.bytes.fill(0x77);
      dma(r, false, probe.bus, 0, PIECE);
      dma(r, true, back.bus, 0, PIECE);
      expect(back.bytes.every((v) => v === 0x77)).toBe(true);
      expect(same(mine.bytes, data)).toBe(true);
    } finally {
      d.close();
    }
  });
});
