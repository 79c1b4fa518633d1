// Memory barriers with Linux's names and meanings (arch/*/include/asm/barrier.h,
// asm/io.h), for the addon's MMIO accessors and the JS barrier functions.
//
//            x86-64               arm64                 others
//  Mb        mfence               dsb sy                full fence
//  Rmb       lfence               dsb ld                full fence
//  Wmb       sfence               dsb st                full fence
//  DmaRmb    compiler only        dmb oshld             full fence
//  DmaWmb    compiler only        dmb oshst             full fence
//  WcFlush   sfence               dsb st                full fence
//  IoWmb     sfence               dmb oshst             full fence   (before a release MMIO store)
//  IoRmb     compiler only        dmb oshld             full fence   (after an MMIO load, as readl)
//
// x86 keeps stores in order and loads in order for ordinary (write-back) and
// uncached memory, which is why Linux's dma_* barriers and readl need no
// instruction there; write-combining stores are the exception, drained by
// sfence. IoWmb on x86 is an sfence although Linux's writel has none: it
// makes stores to a write-combining mapping issued before the MMIO store
// reach the device first too, and costs little next to an uncached store.
#pragma once

namespace pm {

#if defined(__x86_64__) || defined(__i386__)
inline void CompilerBarrier() { asm volatile("" ::: "memory"); }
inline void Mb() { asm volatile("mfence" ::: "memory"); }
inline void Rmb() { asm volatile("lfence" ::: "memory"); }
inline void Wmb() { asm volatile("sfence" ::: "memory"); }
inline void DmaRmb() { CompilerBarrier(); }
inline void DmaWmb() { CompilerBarrier(); }
inline void WcFlush() { asm volatile("sfence" ::: "memory"); }
inline void IoWmb() { asm volatile("sfence" ::: "memory"); }
inline void IoRmb() { CompilerBarrier(); }
#define PM_BARRIER_ARCH "x86-64"
#elif defined(__aarch64__)
inline void CompilerBarrier() { asm volatile("" ::: "memory"); }
inline void Mb() { asm volatile("dsb sy" ::: "memory"); }
inline void Rmb() { asm volatile("dsb ld" ::: "memory"); }
inline void Wmb() { asm volatile("dsb st" ::: "memory"); }
inline void DmaRmb() { asm volatile("dmb oshld" ::: "memory"); }
inline void DmaWmb() { asm volatile("dmb oshst" ::: "memory"); }
inline void WcFlush() { asm volatile("dsb st" ::: "memory"); }
inline void IoWmb() { asm volatile("dmb oshst" ::: "memory"); }
inline void IoRmb() { asm volatile("dmb oshld" ::: "memory"); }
#define PM_BARRIER_ARCH "arm64"
#else
// No hand-written barriers for this CPU: a full fence everywhere is correct, only slower.
inline void CompilerBarrier() { asm volatile("" ::: "memory"); }
inline void Mb() { __sync_synchronize(); }
inline void Rmb() { __sync_synchronize(); }
inline void Wmb() { __sync_synchronize(); }
inline void DmaRmb() { __sync_synchronize(); }
inline void DmaWmb() { __sync_synchronize(); }
inline void WcFlush() { __sync_synchronize(); }
inline void IoWmb() { __sync_synchronize(); }
inline void IoRmb() { __sync_synchronize(); }
#define PM_BARRIER_ARCH "generic"
#endif

}  // namespace pm
