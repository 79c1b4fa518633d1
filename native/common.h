// Shared by the addon's source files: per-environment mapping table, the
// throw path and the argument readers. Every function here
// throws a JS exception (node_addon_api_except) instead of crashing.
#pragma once

#include <napi.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <string>
#include <vector>

namespace pm {

// A mapping and the number of ArrayBuffers over it that are still attached.
// JS (lib/mapping.ts) keeps the buffers themselves and detaches them before
// unmapping; the count lets munmap refuse rather than leave a live buffer
// pointing at unmapped memory.
struct Mapping {
  uint8_t* base;
  size_t length;
  bool writable;
  size_t attached;
};

// Per-environment state (worker threads each get their own).
struct Instance {
  std::vector<Mapping*> mappings;  // handle = index + 1; nullptr = free slot
  std::vector<uint32_t> freeHandles;
};


// An errno constant as the two things an error needs: its name and its
// number. PM_ERR(EINVAL) is "EINVAL", EINVAL: the name is the macro's own
// spelling (# does not expand its argument), so the addon keeps no table of
// errno names; lib/errors.ts names errnos from os.constants.errno, the one table.
#define PM_ERR(e) #e, (e)

// The name of a runtime errno ("EACCES") for a failed system call, from the C
// library (glibc >= 2.32 has strerrorname_np; looked up at run time so the
// addon loads on any libc), or "UNKNOWN". lib/native.ts names it from `errno`
// anyway; this is for callers of the raw addon.
inline const char* ErrnoName(int err) {
  using NameFn = const char* (*)(int);
  static const NameFn name = reinterpret_cast<NameFn>(dlsym(RTLD_DEFAULT, "strerrorname_np"));
  const char* n = name != nullptr ? name(err) : nullptr;
  return n != nullptr ? n : "UNKNOWN";
}

// The one throw path of the addon: an Error "CODE: what[, syscall]" with
// `code`, positive `errno` and, for a failed system call, `syscall`.
[[noreturn]] inline void ThrowCode(Napi::Env env, const char* code, int err, const std::string& what, const char* syscall = nullptr) {
  std::string message = std::string(code) + ": " + what;
  if (syscall != nullptr) message += std::string(", ") + syscall;
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  if (syscall != nullptr) e.Set("syscall", Napi::String::New(env, syscall));
  throw e;
}

// A system call failed with `err`.
[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const char* syscall) { ThrowCode(env, ErrnoName(err), err, strerror(err), syscall); }

// A bad argument.
[[noreturn]] inline void ThrowInvalid(Napi::Env env, const std::string& what) { ThrowCode(env, PM_ERR(EINVAL), what); }

inline Instance* GetInstance(napi_env env) {
  void* data = nullptr;
  if (napi_get_instance_data(env, &data) != napi_ok || data == nullptr) {
    ThrowCode(env, PM_ERR(EIO), "the addon's per-environment state is missing");
  }
  return static_cast<Instance*>(data);
}

// Argument readers: exact types, integral, in range, or EINVAL. Every check
// happens on the double before any conversion (converting NaN, an infinity, a
// negative or anything >= 2^64 to an integer is undefined behaviour).
// The *Value forms read one napi_value (for raw Node-API callbacks); the Arg*
// forms read argument i of a node-addon-api call.
inline double NumberValue(napi_env env, napi_value v, const char* name) {
  double d = 0;
  // One call: napi_get_value_double refuses non-numbers (and a missing argument, undefined) itself.
  if (napi_get_value_double(env, v, &d) != napi_ok) ThrowInvalid(env, std::string(name) + " must be a number");
  return d;
}

inline double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name) { return NumberValue(info.Env(), info[i], name); }

// An integer in [0, max] (max is capped at 2^53: larger numbers are not exact in JS).
inline uint64_t UintValue(napi_env env, napi_value v, const char* name, uint64_t max) {
  double d = NumberValue(env, v, name);
  const uint64_t cap = max < (1ull << 53) ? max : (1ull << 53);
  // Range first; converting after it is exact and defined, so the round trip tests for a fraction.
  if (!(d >= 0 && d <= static_cast<double>(cap)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowInvalid(env, std::string(name) + " must be an integer in [0, " + std::to_string(cap) + "]");
  }
  return static_cast<uint64_t>(d);
}

inline uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t max) { return UintValue(info.Env(), info[i], name, max); }

inline int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<int>(ArgUint(info, i, "fd", INT32_MAX));
}

inline bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  bool b = false;
  if (napi_get_value_bool(info.Env(), info[i], &b) != napi_ok) ThrowInvalid(info.Env(), std::string(name) + " must be a boolean");
  return b;
}

inline std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) ThrowInvalid(info.Env(), std::string(name) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowInvalid(info.Env(), std::string(name) + " must not contain NUL");
  return s;
}

inline uint64_t ArgBigUint(const Napi::CallbackInfo& info, size_t i, const char* name) {
  uint64_t v = 0;
  bool lossless = false;
  // napi_get_value_bigint_uint64 refuses non-bigints; lossless is false for negatives and values >= 2^64.
  if (napi_get_value_bigint_uint64(info.Env(), info[i], &v, &lossless) != napi_ok) ThrowInvalid(info.Env(), std::string(name) + " must be a bigint");
  if (!lossless) ThrowInvalid(info.Env(), std::string(name) + " must be in [0, 2^64)");
  return v;
}

// A mapping handle: an open mapping of `inst`, or EBADF.
inline Mapping* MappingValue(napi_env env, Instance* inst, napi_value v, uint32_t* handle = nullptr) {
  uint64_t h = UintValue(env, v, "mapping handle", UINT32_MAX);
  if (h == 0 || h > inst->mappings.size() || inst->mappings[h - 1] == nullptr) {
    ThrowCode(env, PM_ERR(EBADF), "mapping is not open (already unmapped?)");
  }
  if (handle != nullptr) *handle = static_cast<uint32_t>(h);
  return inst->mappings[h - 1];
}

inline Mapping* ArgMapping(const Napi::CallbackInfo& info, size_t i, uint32_t* handle = nullptr) {
  return MappingValue(info.Env(), GetInstance(info.Env()), info[i], handle);
}

// [offset, offset + len) must lie inside the mapping.
inline void CheckRange(napi_env env, const Mapping* m, uint64_t offset, uint64_t len) {
  if (offset > m->length || len > m->length - offset) {
    ThrowCode(env, PM_ERR(ERANGE), "[" + std::to_string(offset) + ", +" + std::to_string(len) + ") is outside the mapping of " +
                                               std::to_string(m->length) + " bytes");
  }
}

inline void CheckRange(const Napi::CallbackInfo& info, const Mapping* m, uint64_t offset, uint64_t len) { CheckRange(info.Env(), m, offset, len); }

// Each further source file adds its functions to the exports object with a
// Register<Name>(env, exports) declared here and called from Init.
void RegisterBarrier(Napi::Env env, Napi::Object exports);  // barrier.cc

// native/vfio_device.cc: VFIO groups/devices, IRQs, eventfds and their watchers.
void RegisterVfioDevice(Napi::Env env, Napi::Object exports);
// native/vfio_iommu.cc: VFIO container and type1 IOMMU ioctls (vfioContainer*, vfioIommu*, vfio{Map,Unmap}Dma, vfioGroupSetContainer).
void RegisterVfioIommu(Napi::Env env, Napi::Object exports);
// native/floor.cc: napiFloorCreate/napiFloorDetach, the minimal external ArrayBuffer pair bench/buffers.ts compares against.
void RegisterFloor(Napi::Env env, Napi::Object exports);

}  // namespace pm
