// The device side of VFIO: group status, device fd, device/region/irq info
// (with capability chains), reset, exact-width pread/pwrite on the device fd,
// VFIO_DEVICE_SET_IRQS, eventfds, and eventfd watchers on the environment's
// libuv loop (one uv_poll_t per eventfd: no thread per vector, no busy wait).
// Only OS work here; lib/vfio/ validates and chooses policy.
#include "common.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <node_api.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

#include <map>

namespace pm {
namespace {

// Largest byte offset accepted for pread/pwrite: VFIO region offsets are
// index << 40, far below 2^53, so offsets travel as JS numbers (no bigint per access).
constexpr uint64_t kMaxOffset = (1ull << 53) - 1;

Napi::Value GroupGetStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct vfio_group_status st = {};
  st.argsz = sizeof(st);
  if (ioctl(fd, VFIO_GROUP_GET_STATUS, &st) != 0) ThrowErrno(env, errno, "ioctl VFIO_GROUP_GET_STATUS");
  Napi::Object o = Napi::Object::New(env);
  o.Set("viable", Napi::Boolean::New(env, (st.flags & VFIO_GROUP_FLAGS_VIABLE) != 0));
  o.Set("containerSet", Napi::Boolean::New(env, (st.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) != 0));
  return o;
}

Napi::Value GroupGetDeviceFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::string name = ArgString(info, 1, "device name");
  int dfd = ioctl(fd, VFIO_GROUP_GET_DEVICE_FD, name.c_str());
  if (dfd < 0) ThrowErrno(env, errno, "ioctl VFIO_GROUP_GET_DEVICE_FD");
  // The kernel sets O_CLOEXEC on it already (since 5.x); make sure.
  fcntl(dfd, F_SETFD, FD_CLOEXEC);
  return Napi::Number::New(env, dfd);
}

Napi::Value DeviceGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct vfio_device_info di = {};
  di.argsz = sizeof(di);
  if (ioctl(fd, VFIO_DEVICE_GET_INFO, &di) != 0) ThrowErrno(env, errno, "ioctl VFIO_DEVICE_GET_INFO");
  Napi::Object o = Napi::Object::New(env);
  o.Set("flags", Napi::Number::New(env, di.flags));
  o.Set("numRegions", Napi::Number::New(env, di.num_regions));
  o.Set("numIrqs", Napi::Number::New(env, di.num_irqs));
  o.Set("reset", Napi::Boolean::New(env, (di.flags & VFIO_DEVICE_FLAGS_RESET) != 0));
  o.Set("pci", Napi::Boolean::New(env, (di.flags & VFIO_DEVICE_FLAGS_PCI) != 0));
  return o;
}

// Region info, then the capability chain when the kernel has one (it tells
// us the size it needs in argsz; ask again with that much room).
Napi::Value DeviceGetRegionInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgUint(info, 1, "region index", 0xffff));
  std::vector<uint8_t> buf(sizeof(struct vfio_region_info));
  auto* ri = reinterpret_cast<struct vfio_region_info*>(buf.data());
  ri->argsz = sizeof(struct vfio_region_info);
  ri->index = index;
  if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, ri) != 0) ThrowErrno(env, errno, "ioctl VFIO_DEVICE_GET_REGION_INFO");
  if (ri->argsz > sizeof(struct vfio_region_info) && ri->argsz <= 65536) {
    uint32_t need = ri->argsz;
    buf.assign(need, 0);
    ri = reinterpret_cast<struct vfio_region_info*>(buf.data());
    ri->argsz = need;
    ri->index = index;
    if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, ri) != 0) ThrowErrno(env, errno, "ioctl VFIO_DEVICE_GET_REGION_INFO");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", Napi::Number::New(env, ri->index));
  o.Set("flags", Napi::Number::New(env, ri->flags));
  o.Set("readable", Napi::Boolean::New(env, (ri->flags & VFIO_REGION_INFO_FLAG_READ) != 0));
  o.Set("writable", Napi::Boolean::New(env, (ri->flags & VFIO_REGION_INFO_FLAG_WRITE) != 0));
  o.Set("mmap", Napi::Boolean::New(env, (ri->flags & VFIO_REGION_INFO_FLAG_MMAP) != 0));
  o.Set("size", Napi::Number::New(env, static_cast<double>(ri->size)));
  o.Set("offset", Napi::Number::New(env, static_cast<double>(ri->offset)));
  Napi::Array caps = Napi::Array::New(env);
  Napi::Value sparse = env.Undefined();
  bool msixMappable = false;
  if ((ri->flags & VFIO_REGION_INFO_FLAG_CAPS) && ri->cap_offset != 0) {
    uint32_t off = ri->cap_offset;
    uint32_t n = 0;
    // Walk the chain; every header must lie inside what the kernel filled,
    // and the walk is bounded so a malformed chain cannot loop.
    for (int guard = 0; off != 0 && guard < 64; guard++) {
      if (off < sizeof(struct vfio_region_info) || off + sizeof(struct vfio_info_cap_header) > buf.size()) break;
      auto* h = reinterpret_cast<struct vfio_info_cap_header*>(buf.data() + off);
      caps.Set(n++, Napi::Number::New(env, h->id));
      if (h->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP && off + sizeof(struct vfio_region_info_cap_sparse_mmap) <= buf.size()) {
        auto* sm = reinterpret_cast<struct vfio_region_info_cap_sparse_mmap*>(h);
        Napi::Array areas = Napi::Array::New(env);
        for (uint32_t i = 0; i < sm->nr_areas; i++) {
          size_t at = off + sizeof(*sm) + i * sizeof(struct vfio_region_sparse_mmap_area);
          if (at + sizeof(struct vfio_region_sparse_mmap_area) > buf.size()) break;
          auto* a = reinterpret_cast<struct vfio_region_sparse_mmap_area*>(buf.data() + at);
          Napi::Object area = Napi::Object::New(env);
          area.Set("offset", Napi::Number::New(env, static_cast<double>(a->offset)));
          area.Set("size", Napi::Number::New(env, static_cast<double>(a->size)));
          areas.Set(i, area);
        }
        sparse = areas;
      } else if (h->id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
        msixMappable = true;
      }
      if (h->next != 0 && h->next <= off) break;  // chains only go forward
      off = h->next;
    }
  }
  o.Set("caps", caps);
  o.Set("sparse", sparse);
  o.Set("msixMappable", Napi::Boolean::New(env, msixMappable));
  return o;
}

Napi::Value DeviceGetIrqInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct vfio_irq_info ii = {};
  ii.argsz = sizeof(ii);
  ii.index = static_cast<uint32_t>(ArgUint(info, 1, "irq index", 0xffff));
  if (ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, &ii) != 0) ThrowErrno(env, errno, "ioctl VFIO_DEVICE_GET_IRQ_INFO");
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", Napi::Number::New(env, ii.index));
  o.Set("flags", Napi::Number::New(env, ii.flags));
  o.Set("count", Napi::Number::New(env, ii.count));
  o.Set("eventfd", Napi::Boolean::New(env, (ii.flags & VFIO_IRQ_INFO_EVENTFD) != 0));
  o.Set("maskable", Napi::Boolean::New(env, (ii.flags & VFIO_IRQ_INFO_MASKABLE) != 0));
  o.Set("automasked", Napi::Boolean::New(env, (ii.flags & VFIO_IRQ_INFO_AUTOMASKED) != 0));
  return o;
}

Napi::Value DeviceReset(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (ioctl(fd, VFIO_DEVICE_RESET) != 0) ThrowErrno(info.Env(), errno, "ioctl VFIO_DEVICE_RESET");
  return info.Env().Undefined();
}

uint32_t ArgWidth(const Napi::CallbackInfo& info, size_t i) {
  uint32_t w = static_cast<uint32_t>(ArgUint(info, i, "width", 8));
  if (w != 1 && w != 2 && w != 4) ThrowInvalid(info.Env(), "width must be 1, 2 or 4 (use pread64/pwrite64 for 8)");
  return w;
}

// One access of exactly `len` bytes: VFIO turns a pread/pwrite of the device
// fd into one access of that width on the device (config space or BAR).
void ExactIo(Napi::Env env, bool write, int fd, void* p, size_t len, uint64_t off) {
  ssize_t n = write ? pwrite(fd, p, len, static_cast<off_t>(off)) : pread(fd, p, len, static_cast<off_t>(off));
  if (n < 0) ThrowErrno(env, errno, write ? "pwrite" : "pread");
  if (static_cast<size_t>(n) != len) {
    ThrowCode(env, PM_ERR(EIO), std::string(write ? "pwrite" : "pread") + " moved " + std::to_string(n) + " of " + std::to_string(len) + " bytes");
  }
}

Napi::Value Pread(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t off = ArgUint(info, 1, "offset", kMaxOffset);
  uint32_t w = ArgWidth(info, 2);
  uint32_t v = 0;
  if (w == 1) { uint8_t b; ExactIo(info.Env(), false, fd, &b, 1, off); v = b; }
  else if (w == 2) { uint16_t h; ExactIo(info.Env(), false, fd, &h, 2, off); v = h; }
  else { ExactIo(info.Env(), false, fd, &v, 4, off); }
  return Napi::Number::New(info.Env(), v);
}

Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t off = ArgUint(info, 1, "offset", kMaxOffset);
  uint32_t w = ArgWidth(info, 2);
  uint64_t max = w == 1 ? 0xff : w == 2 ? 0xffff : 0xffffffffu;
  uint64_t v = ArgUint(info, 3, "value", max);
  if (w == 1) { uint8_t b = static_cast<uint8_t>(v); ExactIo(info.Env(), true, fd, &b, 1, off); }
  else if (w == 2) { uint16_t h = static_cast<uint16_t>(v); ExactIo(info.Env(), true, fd, &h, 2, off); }
  else { uint32_t x = static_cast<uint32_t>(v); ExactIo(info.Env(), true, fd, &x, 4, off); }
  return info.Env().Undefined();
}

Napi::Value Pread64(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t off = ArgUint(info, 1, "offset", kMaxOffset);
  uint64_t v = 0;
  ExactIo(info.Env(), false, fd, &v, 8, off);
  return Napi::BigInt::New(info.Env(), v);
}

Napi::Value Pwrite64(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t off = ArgUint(info, 1, "offset", kMaxOffset);
  uint64_t v = ArgBigUint(info, 2, "value");
  ExactIo(info.Env(), true, fd, &v, 8, off);
  return info.Env().Undefined();
}

Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// Take the counter (0 when nothing is pending): non-blocking read of 8 bytes.
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof(v));
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    ThrowErrno(info.Env(), errno, "read");
  }
  if (n != sizeof(v)) ThrowCode(info.Env(), PM_ERR(EIO), "short read of an eventfd");
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

// Add to the counter (what the kernel does on an interrupt): for tests and
// for waking a waiter from JS.
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t v = ArgUint(info, 1, "value", 0xfffffffeu);
  if (write(fd, &v, sizeof(v)) != sizeof(v)) ThrowErrno(info.Env(), errno, "write");
  return info.Env().Undefined();
}

// VFIO_DEVICE_SET_IRQS with a variable tail of `count` s32 eventfds.
void SetIrqs(Napi::Env env, int fd, uint32_t flags, uint32_t index, uint32_t start, const std::vector<int32_t>& fds, uint32_t count) {
  std::vector<uint8_t> buf(sizeof(struct vfio_irq_set) + fds.size() * sizeof(int32_t));
  auto* s = reinterpret_cast<struct vfio_irq_set*>(buf.data());
  s->argsz = static_cast<uint32_t>(buf.size());
  s->flags = flags;
  s->index = index;
  s->start = start;
  s->count = count;
  if (!fds.empty()) memcpy(s->data, fds.data(), fds.size() * sizeof(int32_t));
  if (ioctl(fd, VFIO_DEVICE_SET_IRQS, s) != 0) ThrowErrno(env, errno, "ioctl VFIO_DEVICE_SET_IRQS");
}

// vfioIrqSetEventfds(deviceFd, index, start, fds[]): trigger eventfds for
// vectors start..start+n-1 (-1 in the list: leave that vector unrouted).
Napi::Value IrqSetEventfds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgUint(info, 1, "irq index", 0xffff));
  uint32_t start = static_cast<uint32_t>(ArgUint(info, 2, "start", 2048));
  if (info.Length() <= 3 || !info[3].IsArray()) ThrowInvalid(env, "eventfds must be an array of fds");
  Napi::Array arr = info[3].As<Napi::Array>();
  if (arr.Length() == 0 || arr.Length() > 2048) ThrowInvalid(env, "eventfds must hold 1 to 2048 fds");
  std::vector<int32_t> fds(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.5;
    if (!(d >= -1 && d <= INT32_MAX) || d != static_cast<double>(static_cast<int32_t>(d))) ThrowInvalid(env, "eventfds must be integers >= -1");
    fds[i] = static_cast<int32_t>(d);
  }
  SetIrqs(env, fd, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, start, fds, static_cast<uint32_t>(fds.size()));
  return env.Undefined();
}

// vfioIrqDisable(deviceFd, index): DATA_NONE | ACTION_TRIGGER with count 0
// tears down every vector of the index.
Napi::Value IrqDisable(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgUint(info, 1, "irq index", 0xffff));
  SetIrqs(info.Env(), fd, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, {}, 0);
  return info.Env().Undefined();
}

// vfioIrqUnmask(deviceFd, index, vector): INTx is masked by the kernel on
// delivery (automasked) until userspace says it has serviced it.
Napi::Value IrqUnmask(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgUint(info, 1, "irq index", 0xffff));
  uint32_t vector = static_cast<uint32_t>(ArgUint(info, 2, "vector", 2048));
  SetIrqs(info.Env(), fd, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, index, vector, {}, 1);
  return info.Env().Undefined();
}

// ---- eventfd watchers on the libuv loop ----

struct Watch;

// Per-environment table of watchers. At environment teardown an async
// cleanup hook closes the handles and is released only when their close
// callbacks (code of this addon) have run, so a worker's addon is never
// unloaded under a pending callback.
struct Watches {
  uint32_t next = 1;
  std::map<uint32_t, Watch*> live;
  int closing = 0;  // uv_close called, close callback not yet run
  bool tearingDown = false;
  napi_async_cleanup_hook_handle hook = nullptr;
};

struct Watch {
  uv_poll_t poll;
  int fd;
  uint32_t id;
  bool teardown = false;
  Watches* owner;
  napi_env owner_env;
  // Raw N-API here: these are used from a libuv callback, where a C++
  // exception (node-addon-api's way) must never be thrown.
  napi_ref callback = nullptr;
  napi_async_context context = nullptr;
};

// The callback and async context are released here, not in StopWatch, so a
// callback that unwatches itself keeps them alive until it has returned.
void OnClosed(uv_handle_t* h) {
  Watch* w = static_cast<Watch*>(h->data);
  // At teardown the environment is going away and takes its references
  // with it; otherwise give them back now.
  if (!w->teardown) {
    if (w->callback != nullptr) napi_delete_reference(w->owner_env, w->callback);
    if (w->context != nullptr) napi_async_destroy(w->owner_env, w->context);
  }
  Watches* ws = w->owner;
  delete w;
  if (--ws->closing == 0 && ws->tearingDown) {
    napi_remove_async_cleanup_hook(ws->hook);
    delete ws;
  }
}

void StopWatchUnlisted(Watch* w) {
  w->owner->closing++;
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

void StopWatch(Watch* w) {
  w->owner->live.erase(w->id);
  StopWatchUnlisted(w);
}

void OnReadable(uv_poll_t* p, int status, int events) {
  Watch* w = static_cast<Watch*>(p->data);
  if (status < 0 || !(events & UV_READABLE)) return;
  uint64_t v = 0;
  ssize_t n = read(w->fd, &v, sizeof(v));
  if (n != sizeof(v) || v == 0) return;  // EAGAIN: someone else took it
  napi_env env = w->owner_env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  if (napi_get_reference_value(env, w->callback, &fn) == napi_ok && fn != nullptr && napi_get_global(env, &recv) == napi_ok &&
      napi_create_double(env, static_cast<double>(v), &arg) == napi_ok) {
    // napi_make_callback runs the microtasks afterwards, so promises resolved
    // by the callback settle before the loop goes on.
    if (napi_make_callback(env, w->context, recv, fn, 1, &arg, &result) == napi_pending_exception) {
      // A throwing listener is an uncaught exception of the process, as with
      // any event listener. (While a worker terminates there is nothing to report.)
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok && exc != nullptr) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
}

Watches* WatchesOf(const Napi::CallbackInfo& info) {
  return static_cast<Watches*>(info.Data());
}

// eventfdWatch(fd, callback(count)) -> watch id. The handle starts referenced.
Napi::Value EventfdWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  if (info.Length() <= 1 || !info[1].IsFunction()) ThrowInvalid(env, "callback must be a function");
  if (fcntl(fd, F_GETFD) < 0) ThrowErrno(env, errno, "fcntl");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) ThrowCode(env, PM_ERR(ENOSYS), "no libuv loop for this environment");
  Watches* ws = WatchesOf(info);
  auto* w = new Watch();
  w->fd = fd;
  w->owner = ws;
  w->owner_env = env;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r != 0) {
    delete w;
    ThrowErrno(env, -r, "uv_poll_init");
  }
  w->poll.data = w;
  r = uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  if (r != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
    ThrowErrno(env, -r, "uv_poll_start");
  }
  napi_value name;
  napi_create_string_utf8(env, "physmem:eventfd", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, info[1], 1, &w->callback) != napi_ok ||
      napi_async_init(env, nullptr, name, &w->context) != napi_ok) {
    StopWatchUnlisted(w);
    ThrowCode(env, PM_ERR(ENOMEM), "could not keep the callback");
  }
  w->id = ws->next++;
  if (ws->next == 0) ws->next = 1;
  ws->live[w->id] = w;
  return Napi::Number::New(env, w->id);
}

Watch* ArgWatch(const Napi::CallbackInfo& info, size_t i) {
  uint32_t id = static_cast<uint32_t>(ArgUint(info, i, "watch id", UINT32_MAX));
  Watches* ws = WatchesOf(info);
  auto it = ws->live.find(id);
  if (it == ws->live.end()) ThrowCode(info.Env(), PM_ERR(EBADF), "no such eventfd watch (already unwatched?)");
  return it->second;
}

// Stop and close the poll handle; the eventfd itself stays open (JS closes it).
Napi::Value EventfdUnwatch(const Napi::CallbackInfo& info) {
  StopWatch(ArgWatch(info, 0));
  return info.Env().Undefined();
}

// Whether the watch keeps the event loop (the process) alive.
Napi::Value EventfdWatchRef(const Napi::CallbackInfo& info) {
  Watch* w = ArgWatch(info, 0);
  if (ArgBool(info, 1, "ref")) uv_ref(reinterpret_cast<uv_handle_t*>(&w->poll));
  else uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  return info.Env().Undefined();
}

void CleanupWatches(napi_async_cleanup_hook_handle hook, void* arg) {
  Watches* ws = static_cast<Watches*>(arg);
  ws->hook = hook;
  ws->tearingDown = true;
  // JS is gone: leave the references to the dying environment.
  while (!ws->live.empty()) {
    Watch* w = ws->live.begin()->second;
    w->teardown = true;
    StopWatch(w);
  }
  if (ws->closing == 0) {
    napi_remove_async_cleanup_hook(hook);
    delete ws;
  }
}

}  // namespace

void RegisterVfioDevice(Napi::Env env, Napi::Object exports) {
  auto* ws = new Watches();
  napi_add_async_cleanup_hook(env, CleanupWatches, ws, nullptr);
  exports.Set("vfioGroupGetStatus", Napi::Function::New(env, GroupGetStatus, "vfioGroupGetStatus"));
  exports.Set("vfioGroupGetDeviceFd", Napi::Function::New(env, GroupGetDeviceFd, "vfioGroupGetDeviceFd"));
  exports.Set("vfioDeviceGetInfo", Napi::Function::New(env, DeviceGetInfo, "vfioDeviceGetInfo"));
  exports.Set("vfioDeviceGetRegionInfo", Napi::Function::New(env, DeviceGetRegionInfo, "vfioDeviceGetRegionInfo"));
  exports.Set("vfioDeviceGetIrqInfo", Napi::Function::New(env, DeviceGetIrqInfo, "vfioDeviceGetIrqInfo"));
  exports.Set("vfioDeviceReset", Napi::Function::New(env, DeviceReset, "vfioDeviceReset"));
  exports.Set("vfioIrqSetEventfds", Napi::Function::New(env, IrqSetEventfds, "vfioIrqSetEventfds"));
  exports.Set("vfioIrqDisable", Napi::Function::New(env, IrqDisable, "vfioIrqDisable"));
  exports.Set("vfioIrqUnmask", Napi::Function::New(env, IrqUnmask, "vfioIrqUnmask"));
  exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
  exports.Set("pwrite", Napi::Function::New(env, Pwrite, "pwrite"));
  exports.Set("pread64", Napi::Function::New(env, Pread64, "pread64"));
  exports.Set("pwrite64", Napi::Function::New(env, Pwrite64, "pwrite64"));
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate, "eventfdCreate"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("eventfdWatch", Napi::Function::New(env, EventfdWatch, "eventfdWatch", ws));
  exports.Set("eventfdUnwatch", Napi::Function::New(env, EventfdUnwatch, "eventfdUnwatch", ws));
  exports.Set("eventfdWatchRef", Napi::Function::New(env, EventfdWatchRef, "eventfdWatchRef", ws));
}

}  // namespace pm
