// Memory barriers for JS (lib/ordering.ts): one native call each, Linux's
// names and meanings (native/barrier.h has the table per CPU). A call into the
// addon is also a compiler barrier for V8: it cannot move typed-array loads or
// stores across it.

#include <napi.h>

#include "barrier.h"
#include "common.h"

namespace pm {
namespace {

// One JS function per barrier: no arguments, returns undefined.
template <void (*Barrier)()>
Napi::Value JsBarrier(const Napi::CallbackInfo& info) {
  Barrier();
  return info.Env().Undefined();
}

// Which barrier set was compiled in: "x86-64", "arm64" or "generic" (full fences).
Napi::Value JsBarrierArch(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), PM_BARRIER_ARCH); }

}  // namespace

void RegisterBarrier(Napi::Env env, Napi::Object exports) {
  exports.Set("mb", Napi::Function::New(env, JsBarrier<Mb>, "mb"));
  exports.Set("rmb", Napi::Function::New(env, JsBarrier<Rmb>, "rmb"));
  exports.Set("wmb", Napi::Function::New(env, JsBarrier<Wmb>, "wmb"));
  exports.Set("dmaRmb", Napi::Function::New(env, JsBarrier<DmaRmb>, "dmaRmb"));
  exports.Set("dmaWmb", Napi::Function::New(env, JsBarrier<DmaWmb>, "dmaWmb"));
  exports.Set("wcFlush", Napi::Function::New(env, JsBarrier<WcFlush>, "wcFlush"));
  exports.Set("barrierArch", Napi::Function::New(env, JsBarrierArch, "barrierArch"));
}

}  // namespace pm
