// Barriers and ordered/relaxed MMIO accessors on the host: the barrier
// functions run, the compiled addon has the fence where Linux's accessors
// have it (read from its disassembly), and the relaxed accessors do the same
// exact-width access with the same checks (on a regular file mapped as a BAR).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { barrierArch, dmaRmb, dmaWmb, mb, rmb, wcFlush, wmb } from '../lib/index.js';
import { Mmio } from '../lib/pci/mmio.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ADDON = path.join(REPO, 'build/Release/physmem.node');

describe('barriers', () => {
  it('each barrier is a callable native function; the barrier set matches this CPU', () => {
    for (const f of [mb, rmb, wmb, dmaRmb, dmaWmb, wcFlush]) expect(f()).toBeUndefined();
    expect(barrierArch()).toBe(process.arch === 'x64' ? 'x86-64' : process.arch === 'arm64' ? 'arm64' : 'generic');
  });

  /** Instruction mnemonics of each accessor in the built addon, by "WriteN<unsigned int, 1>"-like key. */
  function accessorBodies(): Map<string, string[]> {
    const r = spawnSync('objdump', ['-d', '-C', '--no-show-raw-insn', ADDON], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const out = new Map<string, string[]>();
    let cur: string[] | undefined;
    for (const line of r.stdout.split('\n')) {
      const head = /^[0-9a-f]+ <Napi::Value pm::\(anonymous namespace\)::((?:Read|Write)(?:N|64))<(?:([a-z ]+), )?\(pm::\(anonymous namespace\)::Order\)(\d)>\(Napi::CallbackInfo const&\)>:$/.exec(line);
      if (head) {
        cur = [];
        out.set(`${head[1]}<${head[2] ?? 'u64'}, ${head[3]}>`, cur);
      } else if (/^[0-9a-f]+ </.test(line)) {
        cur = undefined;
      } else if (cur && /^\s+[0-9a-f]+:\s+(\S+)/.test(line)) {
        cur.push(/^\s+[0-9a-f]+:\s+(.*)$/.exec(line)![1].trim());
      }
    }
    return out;
  }

  const hasObjdump = spawnSync('objdump', ['--version']).status === 0;
  it.skipIf(!hasObjdump || process.arch !== 'x64')('x86-64: writeN carries an sfence before its store, writeNRelaxed and readN none (as Linux\'s writel/readl there)', () => {
    const bodies = accessorBodies();
    const writes = [...bodies].filter(([k]) => k.startsWith('Write'));
    const reads = [...bodies].filter(([k]) => k.startsWith('Read'));
    expect(writes.length).toBe(8); // 4 widths x ordered/relaxed
    expect(reads.length).toBe(8);
    for (const [k, insns] of writes) {
      const fences = insns.filter((i) => /fence/.test(i));
      if (k.endsWith(', 1>')) expect(fences, k).toEqual(['sfence']);
      else expect(fences, k).toEqual([]);
    }
    for (const [k, insns] of reads) expect(insns.filter((i) => /fence/.test(i)), k).toEqual([]);
  });

  // arm64 is checked by cross-compiling where Debian's g++-aarch64-linux-gnu is installed
  // (not part of CI: it is a 100 MB toolchain); the same expectations as Linux's arm64 io.h.
  const cross = spawnSync('aarch64-linux-gnu-g++', ['--version']).status === 0 && spawnSync('aarch64-linux-gnu-objdump', ['--version']).status === 0;
  it.skipIf(!cross)('arm64 (cross-compiled): writeN has dmb oshst before the store, readN dmb oshld after the load, relaxed none; barriers as Linux', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-arm64-'));
    try {
      const headers = ['/usr/include/node', path.join(REPO, 'node_modules/node-addon-api')].map((d) => '-I' + d);
      const insns = new Map<string, string[]>();
      for (const src of ['physmem.cc', 'barrier.cc']) {
        const obj = path.join(out, src + '.o');
        const cc = spawnSync('aarch64-linux-gnu-g++', ['-std=c++17', '-O2', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-fexceptions', ...headers, '-c', path.join(REPO, 'native', src), '-o', obj], { encoding: 'utf8' });
        expect(cc.status, cc.stderr).toBe(0);
        const dis = spawnSync('aarch64-linux-gnu-objdump', ['-d', '-C', '--no-show-raw-insn', obj], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout;
        let cur: string[] | undefined;
        for (const line of dis.split('\n')) {
          const head = /^[0-9a-f]+ <(?:Napi::Value )?pm::(?:\(anonymous namespace\)::)?([A-Za-z0-9]+(?:<[^>]*>)?)/.exec(line);
          if (head) insns.set(head[1].replace(/\(pm::\(anonymous namespace\)::Order\)/g, ''), (cur = []));
          else if (cur && /^\s+[0-9a-f]+:\s/.test(line)) cur.push(line.replace(/^\s+[0-9a-f]+:\s+/, '').trim());
        }
      }
      const fences = (k: string): string[] => (insns.get(k) ?? ['<missing>']).filter((i) => /^(dmb|dsb)\b/.test(i)).map((i) => i.replace(/\s+/g, ' '));
      for (const t of ['unsigned char', 'unsigned short', 'unsigned int']) {
        expect(fences(`WriteN<${t}, 1>`)).toEqual(['dmb oshst']);
        expect(fences(`ReadN<${t}, 1>`)).toEqual(['dmb oshld']);
        expect(fences(`WriteN<${t}, 0>`)).toEqual([]);
        expect(fences(`ReadN<${t}, 0>`)).toEqual([]);
      }
      expect([fences('Write64<1>'), fences('Read64<1>'), fences('Write64<0>'), fences('Read64<0>')]).toEqual([['dmb oshst'], ['dmb oshld'], [], []]);
      const barrier = (name: string): string[] => fences(`JsBarrier<&pm::${name}>`);
      expect([barrier('Mb'), barrier('Rmb'), barrier('Wmb'), barrier('DmaRmb'), barrier('DmaWmb'), barrier('WcFlush')]).toEqual([
        ['dsb sy'], ['dsb ld'], ['dsb st'], ['dmb oshld'], ['dmb oshst'], ['dsb st'],
      ]);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('Mmio ordered and relaxed accessors (a regular file mapped as a BAR)', () => {
  let dir: string;
  let file: string;
  let m: Mmio;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-ordering-'));
    file = path.join(dir, 'resource0');
    fs.writeFileSync(file, Buffer.alloc(4096));
    m = new Mmio({ path: file, size: 4096, bar: 0, phys: 0xfe000000n, writeCombining: false, hint: () => undefined });
  });
  afterEach(() => {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('relaxed writes land exactly like ordered ones, at every width', () => {
    m.write8Relaxed(1, 0xab);
    m.write16Relaxed(2, 0xcdef);
    m.write32Relaxed(4, ~0); // negative int32 as two's complement
    m.write64Relaxed(8, -2n);
    m.write32(16, 0x11223344);
    m.write64(24, 0x0102030405060708n);
    const b = fs.readFileSync(file);
    expect(b[0]).toBe(0);
    expect(b[1]).toBe(0xab);
    expect(b.readUInt16LE(2)).toBe(0xcdef);
    expect(b.readUInt32LE(4)).toBe(0xffffffff);
    expect(b.readBigUInt64LE(8)).toBe(0xfffffffffffffffen);
    expect([m.read8Relaxed(1), m.read16Relaxed(2), m.read32Relaxed(4), m.read64Relaxed(8)]).toEqual([0xab, 0xcdef, 0xffffffff, 0xfffffffffffffffen]);
    expect([m.read32(16), m.read32Relaxed(16), m.read64(24)]).toEqual([0x11223344, 0x11223344, 0x0102030405060708n]);
  });

  it('relaxed accessors make the same checks: alignment, range, value, closed', () => {
    expect(() => m.write32Relaxed(2, 0)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/write32Relaxed at 0x2 .*multiple of 4/) }));
    expect(() => m.read64Relaxed(4)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => m.read16Relaxed(4096)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => m.write8Relaxed(0, 256)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/write8Relaxed: value 256/) }));
    expect(() => m.write64Relaxed(0, 2n ** 64n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    m.close();
    expect(() => m.write32Relaxed(0, 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => m.read32Relaxed(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
