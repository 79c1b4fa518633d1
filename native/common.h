// Shared by the addon's source files: per-environment mapping table, errno
// to code, the throw helpers and the argument readers. Every function here
// throws a JS exception (node_addon_api_except) instead of crashing.
#pragma once

#include <napi.h>

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

inline Instance* GetInstance(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<Instance*>(data);
}

inline const char* ErrnoCode(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "ENOTSUP";
    default: return "UNKNOWN";
  }
}

[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(ErrnoCode(err)) + ": " + strerror(err) + ", " + syscall);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  e.Set("syscall", Napi::String::New(env, syscall));
  throw e;
}

[[noreturn]] inline void ThrowInvalid(Napi::Env env, const std::string& what) {
  Napi::Error e = Napi::TypeError::New(env, "EINVAL: " + what);
  e.Set("errno", Napi::Number::New(env, EINVAL));
  e.Set("code", Napi::String::New(env, "EINVAL"));
  throw e;
}

// Argument readers: exact types, integral, in range, or EINVAL.
inline double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowInvalid(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

inline uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t max) {
  double d = ArgNumber(info, i, name);
  if (!(d >= 0) || d != static_cast<double>(static_cast<uint64_t>(d)) || d > static_cast<double>(max)) {
    ThrowInvalid(info.Env(), std::string(name) + " must be an integer in [0, " + std::to_string(max) + "]");
  }
  return static_cast<uint64_t>(d);
}

inline int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<int>(ArgUint(info, i, "fd", INT32_MAX));
}

inline bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBoolean()) ThrowInvalid(info.Env(), std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

inline std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) ThrowInvalid(info.Env(), std::string(name) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowInvalid(info.Env(), std::string(name) + " must not contain NUL");
  return s;
}

inline uint64_t ArgBigUint(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBigInt()) ThrowInvalid(info.Env(), std::string(name) + " must be a bigint");
  bool lossless = false;
  uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) ThrowInvalid(info.Env(), std::string(name) + " must be in [0, 2^64)");
  return v;
}

inline Mapping* ArgMapping(const Napi::CallbackInfo& info, size_t i) {
  uint64_t h = ArgUint(info, i, "mapping handle", UINT32_MAX);
  Instance* inst = GetInstance(info.Env());
  if (h == 0 || h > inst->mappings.size() || inst->mappings[h - 1] == nullptr) {
    Napi::Error e = Napi::Error::New(info.Env(), "EBADF: mapping is not open (already unmapped?)");
    e.Set("errno", Napi::Number::New(info.Env(), EBADF));
    e.Set("code", Napi::String::New(info.Env(), "EBADF"));
    throw e;
  }
  return inst->mappings[h - 1];
}

// [offset, offset + len) must lie inside the mapping.
inline void CheckRange(const Napi::CallbackInfo& info, const Mapping* m, uint64_t offset, uint64_t len) {
  if (offset > m->length || len > m->length - offset) {
    Napi::Error e = Napi::RangeError::New(info.Env(), "ERANGE: [" + std::to_string(offset) + ", +" +
                                                          std::to_string(len) + ") is outside the mapping of " +
                                                          std::to_string(m->length) + " bytes");
    e.Set("errno", Napi::Number::New(info.Env(), ERANGE));
    e.Set("code", Napi::String::New(info.Env(), "ERANGE"));
    throw e;
  }
}


[[noreturn]] inline void ThrowCode(Napi::Env env, int err, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, std::string(ErrnoCode(err)) + ": " + message);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  throw e;
}

// Each further source file adds its functions to the exports object with a
// Register<Name>(env, exports) declared here and called from Init.
void RegisterBarrier(Napi::Env env, Napi::Object exports);  // barrier.cc

// native/vfio_device.cc: VFIO groups/devices, IRQs, eventfds and their watchers.
void RegisterVfioDevice(Napi::Env env, Napi::Object exports);
// native/vfio_iommu.cc: VFIO container and type1 IOMMU ioctls (vfioContainer*, vfioIommu*, vfio{Map,Unmap}Dma, vfioGroupSetContainer).
void RegisterVfioIommu(Napi::Env env, Napi::Object exports);

}  // namespace pm
