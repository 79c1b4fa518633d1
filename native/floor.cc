// The Node-API floor that bench/buffers.ts measures physmem against: the least
// any addon can do to give JS an ArrayBuffer over memory it does not own and
// take it back. Raw Node-API (no node-addon-api wrapper, no arguments to
// convert, no bookkeeping): napiFloorCreate() is one
// napi_create_external_arraybuffer over a static 4 KiB with no finalizer,
// napiFloorDetach(ab) one napi_detach_arraybuffer. Not used by lib/.

#include <node_api.h>

#include <stdint.h>

#include "common.h"

namespace pm {
namespace {

uint8_t floorPage[4096];

napi_value FloorCreate(napi_env env, napi_callback_info /*info*/) {
  napi_value ab = nullptr;
  if (napi_create_external_arraybuffer(env, floorPage, sizeof(floorPage), nullptr, nullptr, &ab) != napi_ok) {
    napi_throw_error(env, "ENOTSUP", "ENOTSUP: this runtime refuses external ArrayBuffers");
    return nullptr;
  }
  return ab;
}

napi_value FloorDetach(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value ab = nullptr;
  if (napi_get_cb_info(env, info, &argc, &ab, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_detach_arraybuffer(env, ab) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "EINVAL: napiFloorDetach needs an ArrayBuffer from napiFloorCreate");
  }
  return nullptr;
}

}  // namespace

void RegisterFloor(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, napi_callback> fns[] = {{"napiFloorCreate", FloorCreate}, {"napiFloorDetach", FloorDetach}};
  for (const auto& f : fns) {
    napi_value fn;
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_function(env, f.first, NAPI_AUTO_LENGTH, f.second, nullptr, &fn));
    exports.Set(f.first, Napi::Value(env, fn));
  }
}

}  // namespace pm
