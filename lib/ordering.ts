/**
 * Memory barriers with Linux's names and meanings, for ordering the CPU's
 * accesses to DMA memory and device registers as a device sees them. Each
 * is one call into the addon, which is also a compiler barrier for V8 (it
 * cannot move typed-array loads or stores across a native call).
 *
 * | function | Linux | x86-64 | arm64 |
 * |---|---|---|---|
 * | {@link mb} | `mb()` | `mfence` | `dsb sy` |
 * | {@link rmb} | `rmb()` | `lfence` | `dsb ld` |
 * | {@link wmb} | `wmb()` | `sfence` | `dsb st` |
 * | {@link dmaRmb} | `dma_rmb()` | compiler only | `dmb oshld` |
 * | {@link dmaWmb} | `dma_wmb()` | compiler only | `dmb oshst` |
 * | {@link wcFlush} | `wmb()` after write-combined stores | `sfence` | `dsb st` |
 *
 * `Mmio.write32()` and friends already carry the write barrier a doorbell
 * needs (Linux's `writel`); the `*Relaxed` accessors do not. See
 * docs/ordering.md for the rules and patterns.
 * @module
 */
import { native } from './native.js';

// Counts write barriers (wmb, dmaWmb, mb, wcFlush) so physmem/testing's fake
// devices can tell whether a relaxed doorbell was preceded by one. One integer
// add per barrier.
let writeBarriers = 0;

/** @internal How many write barriers (mb, wmb, dmaWmb, wcFlush) this thread has issued; read by physmem/testing. */
export function writeBarrierCount(): number {
  return writeBarriers;
}

/**
 * Full barrier, Linux's `mb()`: every load and store before it (to memory
 * and to device registers) is performed before any after it.
 * Needed rarely: e.g. a store to DMA memory followed by a load that must see
 * the device's answer to it.
 */
export function mb(): void {
  writeBarriers++;
  native().mb();
}

/**
 * Read barrier, Linux's `rmb()`: loads before it complete before loads after
 * it, including loads from device registers and write-combining memory.
 */
export function rmb(): void {
  native().rmb();
}

/**
 * Write barrier, Linux's `wmb()`: stores before it are visible (to memory and
 * devices) before stores after it, including write-combined and uncached
 * stores. Stronger and slower than {@link dmaWmb}; use it to order stores to
 * DMA memory before a *relaxed* doorbell write when the doorbell must also
 * wait for write-combined stores.
 */
export function wmb(): void {
  writeBarriers++;
  native().wmb();
}

/**
 * Read barrier for coherent DMA memory, Linux's `dma_rmb()`: after reading a
 * flag the device wrote (a phase or valid bit), call it before reading the
 * rest of the entry, so those loads are not satisfied before the flag's.
 * Compiler-only on x86 (loads are not reordered there), `dmb oshld` on arm64.
 */
export function dmaRmb(): void {
  native().dmaRmb();
}

/**
 * Write barrier for coherent DMA memory, Linux's `dma_wmb()`: stores to DMA
 * memory before it are visible to devices before stores to DMA memory after
 * it, e.g. a descriptor's fields before its ownership or valid bit. Does not
 * order against device registers: a doorbell written with `Mmio.write32()`
 * has its own barrier; with `write32Relaxed()` a dmaWmb() (or wmb()) before
 * it is what makes it safe. Compiler-only on x86, `dmb oshst` on arm64.
 */
export function dmaWmb(): void {
  writeBarriers++;
  native().dmaWmb();
}

/**
 * Drain write-combining buffers: stores to a BAR mapped with
 * `mapBar(n, { writeCombining: true })` are posted in the CPU's write-combining
 * buffers and may reach the device late, merged and out of order; call this
 * after them and before anything that must find them done (an uncached
 * doorbell written relaxed, or reading a register the device updates in
 * response). `sfence` on x86, `dsb st` on arm64.
 */
export function wcFlush(): void {
  writeBarriers++;
  native().wcFlush();
}

/**
 * Which barrier instructions the addon was built with: `'x86-64'`,
 * `'arm64'`, or `'generic'` (another CPU: a full fence for every barrier,
 * correct but slower).
 */
export function barrierArch(): 'x86-64' | 'arm64' | 'generic' {
  return native().barrierArch() as 'x86-64' | 'arm64' | 'generic';
}
