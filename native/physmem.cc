// physmem native layer: system calls only.
//
// Everything here is OS work: open/close, memfd, mmap/munmap, external
// ArrayBuffers over mappings (and their detach), exact-width volatile access.
// Policy, bookkeeping and messages live in TypeScript (lib/native.ts declares
// this surface). Arguments arrive checked from JS, but every function still
// validates them and throws instead of crashing: a bad call must never take
// the process down.
//
// Errors: a system call failure throws an Error with `errno` (positive),
// `code` ("EACCES") and `syscall`; argument errors throw with code "EINVAL".

#include <napi.h>

#include "barrier.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pm {
namespace {

// ---- files -----------------------------------------------------------------

// open(path, writable, sync) -> fd. O_CLOEXEC always: children must not
// inherit a /dev/mem descriptor.
Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  bool writable = ArgBool(info, 1, "writable");
  bool sync = ArgBool(info, 2, "sync");
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (sync ? O_SYNC : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) ThrowErrno(info.Env(), errno, "open");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (close(fd) != 0) ThrowErrno(info.Env(), errno, "close");
  return info.Env().Undefined();
}

// memfdCreate(name, size) -> fd: anonymous shared memory for the fake backend.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  uint64_t size = ArgUint(info, 1, "size", (1ull << 53));
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC));
  if (fd < 0) ThrowErrno(info.Env(), errno, "memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(info.Env(), err, "ftruncate");
  }
  return Napi::Number::New(info.Env(), fd);
}

// ---- mappings --------------------------------------------------------------

uint32_t Register(napi_env env, void* p, size_t length, bool writable) {
  Instance* inst = GetInstance(env);
  Mapping* m = new Mapping{static_cast<uint8_t*>(p), length, writable, 0};
  if (!inst->freeHandles.empty()) {
    uint32_t handle = inst->freeHandles.back();
    inst->freeHandles.pop_back();
    inst->mappings[handle - 1] = m;
    return handle;
  }
  inst->mappings.push_back(m);
  return static_cast<uint32_t>(inst->mappings.size());
}

// mmap(fd, offset: bigint, length, writable) -> handle. MAP_SHARED so writes
// reach the physical memory (or the memfd) rather than a private copy.
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t offset = ArgBigUint(info, 1, "offset");
  uint64_t length = ArgUint(info, 2, "length", (1ull << 53));
  bool writable = ArgBool(info, 3, "writable");
  if (length == 0) ThrowInvalid(env, "length must be > 0");
  if (offset > static_cast<uint64_t>(INT64_MAX)) ThrowInvalid(env, "offset must be below 2^63");
  long page = sysconf(_SC_PAGESIZE);
  if (offset % static_cast<uint64_t>(page) != 0) ThrowInvalid(env, "offset must be a multiple of the page size");
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* p = mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap");

  return Napi::Number::New(env, Register(env, p, length, writable));
}

// reserve(length, writable) -> handle: address space only (PROT_NONE, no
// memory, nothing of any file), to be filled piece by piece with mapInto.
// Mapping a large /dev/mem region at once makes the kernel write every page
// table entry up front; reserving first keeps opening a pool cheap.
Napi::Value Reserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t length = ArgUint(info, 0, "length", (1ull << 53));
  bool writable = ArgBool(info, 1, "writable");
  if (length == 0) ThrowInvalid(env, "length must be > 0");
  void* p = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap");
  return Napi::Number::New(env, Register(env, p, length, writable));
}

// mapInto(handle, offset, fd, fileOffset: bigint, length): MAP_FIXED|MAP_SHARED
// of the file over [offset, offset + length) of a reserved mapping.
Napi::Value MapInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mapping* m = ArgMapping(info, 0);
  uint64_t offset = ArgUint(info, 1, "offset", (1ull << 53));
  int fd = ArgFd(info, 2);
  uint64_t fileOffset = ArgBigUint(info, 3, "fileOffset");
  uint64_t length = ArgUint(info, 4, "length", (1ull << 53));
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (length == 0 || offset % page != 0 || fileOffset % page != 0 || fileOffset > static_cast<uint64_t>(INT64_MAX)) {
    ThrowInvalid(env, "offset and fileOffset must be page-aligned and length > 0");
  }
  CheckRange(info, m, offset, length);
  int prot = PROT_READ | (m->writable ? PROT_WRITE : 0);
  void* p = mmap(m->base + offset, length, prot, MAP_SHARED | MAP_FIXED, fd, static_cast<off_t>(fileOffset));
  if (p == MAP_FAILED) {
    int err = errno;
    // Put the placeholder back so the range stays reserved (and inaccessible).
    mmap(m->base + offset, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    ThrowErrno(env, err, "mmap");
  }
  return env.Undefined();
}

// munmap(handle): refused with EBUSY while ArrayBuffers over the mapping are
// attached, so no JS view can ever point at unmapped memory.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t handle = 0;
  Mapping* m = ArgMapping(info, 0, &handle);
  if (m->attached != 0) {
    ThrowCode(env, PM_ERR(EBUSY), std::to_string(m->attached) + " ArrayBuffers over this mapping are still attached; detach them first");
  }
  int rc = munmap(m->base, m->length);
  int err = errno;
  Instance* inst = GetInstance(env);
  inst->mappings[handle - 1] = nullptr;
  inst->freeHandles.push_back(handle);
  delete m;
  if (rc != 0) ThrowErrno(env, err, "munmap");
  return env.Undefined();
}

// arrayBuffer and detach are the two calls of every DmaBuffer alloc+free, so
// they are raw Node-API callbacks: one napi_get_cb_info for exactly the
// arguments they read, and the environment's Instance as the function's data
// (no instance-data lookup per call). Same checks as every other function.
// Raw callbacks must not let a C++ exception out: Raw() turns the Napi::Error
// that ThrowCode throws into a pending JS exception.
template <size_t N>
struct RawArgs {
  napi_value argv[N];
  Instance* inst = nullptr;
  RawArgs(napi_env env, napi_callback_info info) {
    size_t argc = N;
    void* data = nullptr;
    // Missing arguments read as undefined, which every reader refuses.
    if (napi_get_cb_info(env, info, &argc, argv, nullptr, &data) != napi_ok || data == nullptr) {
      ThrowCode(env, PM_ERR(EIO), "could not read the call's arguments");
    }
    inst = static_cast<Instance*>(data);
  }
};

template <napi_value (*F)(napi_env, napi_callback_info)>
napi_value Raw(napi_env env, napi_callback_info info) {
  try {
    return F(env, info);
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
    return nullptr;
  }
}

// arrayBuffer(handle, offset, length) -> an external ArrayBuffer over exactly
// [base + offset, + length): no copy, and no way to reach past its end. No
// finalizer: the memory belongs to the mapping, and JS detaches the buffer
// (detach) before the mapping goes away.
napi_value ArrayBufferOver(napi_env env, napi_callback_info info) {
  RawArgs<3> a(env, info);
  Mapping* m = MappingValue(env, a.inst, a.argv[0]);
  uint64_t offset = UintValue(env, a.argv[1], "offset", (1ull << 53));
  uint64_t length = UintValue(env, a.argv[2], "length", (1ull << 53));
  // Never empty: detach takes a zero-length buffer for one already detached, and the count must stay exact.
  if (length == 0) ThrowInvalid(env, "length must be > 0");
  CheckRange(env, m, offset, length);
  napi_value ab;
  if (napi_create_external_arraybuffer(env, m->base + offset, length, nullptr, nullptr, &ab) != napi_ok) {
    ThrowCode(env, PM_ERR(ENOTSUP), "this runtime refuses external ArrayBuffers (V8 sandbox?)");
  }
  m->attached++;
  return ab;
}

// detach(handle, arrayBuffer): every view over the buffer becomes zero-length.
// Only buffers that lie inside this mapping are accepted, and a buffer already
// detached is a no-op, so the attached count stays exact.
napi_value Detach(napi_env env, napi_callback_info info) {
  RawArgs<2> a(env, info);
  Mapping* m = MappingValue(env, a.inst, a.argv[0]);
  void* data = nullptr;
  size_t len = 0;
  // Refuses anything but an ArrayBuffer (napi_invalid_arg).
  if (napi_get_arraybuffer_info(env, a.argv[1], &data, &len) != napi_ok) ThrowInvalid(env, "second argument must be an ArrayBuffer");
  if (data == nullptr || len == 0) return nullptr;  // already detached (arrayBuffer never makes empty ones)
  uint8_t* p = static_cast<uint8_t*>(data);
  if (p < m->base || p + len > m->base + m->length) ThrowInvalid(env, "ArrayBuffer does not belong to this mapping");
  if (napi_detach_arraybuffer(env, a.argv[1]) != napi_ok) ThrowInvalid(env, "ArrayBuffer is not detachable");
  m->attached--;
  return nullptr;
}

// Number of ArrayBuffers over a mapping still attached: for tests and stats.
Napi::Value AttachedCount(const Napi::CallbackInfo& info) {
  Mapping* m = ArgMapping(info, 0);
  return Napi::Number::New(info.Env(), static_cast<double>(m->attached));
}

// The mapping's virtual address, for /proc/self/pagemap look-ups.
Napi::Value MappingAddress(const Napi::CallbackInfo& info) {
  Mapping* m = ArgMapping(info, 0);
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(m->base)));
}

// ---- exact-width access ----------------------------------------------------

// One volatile load or store of exactly the asked width, naturally aligned:
// devices such as QEMU's edu ignore or misread other widths.
template <typename T>
volatile T* At(const Napi::CallbackInfo& info, bool forWrite) {
  Mapping* m = ArgMapping(info, 0);
  uint64_t offset = ArgUint(info, 1, "offset", (1ull << 53));
  CheckRange(info, m, offset, sizeof(T));
  if (offset % sizeof(T) != 0) ThrowInvalid(info.Env(), "offset must be aligned to the access width");
  if (forWrite && !m->writable) ThrowCode(info.Env(), PM_ERR(EACCES), strerror(EACCES), "write (mapping is read-only)");
  return reinterpret_cast<volatile T*>(m->base + offset);
}

// Ordering of an MMIO access, as Linux's accessors: kOrdered is writel/readl
// (a write barrier before the store: prior stores to DMA memory
// reach memory before the device sees the store; a read barrier after the
// load: later reads of DMA memory are not satisfied before it), kRelaxed is
// writel_relaxed/readl_relaxed (ordered only against other MMIO accesses to
// the same device). The fence is inside this one call: no second call into
// the addon per access.
enum class Order { kRelaxed, kOrdered };

template <typename T, Order O>
Napi::Value ReadN(const Napi::CallbackInfo& info) {
  T v = *At<T>(info, false);
  if (O == Order::kOrdered) IoRmb();
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

template <typename T, Order O>
Napi::Value WriteN(const Napi::CallbackInfo& info) {
  volatile T* p = At<T>(info, true);
  uint64_t v = ArgUint(info, 2, "value", static_cast<T>(~static_cast<T>(0)));
  if (O == Order::kOrdered) IoWmb();
  *p = static_cast<T>(v);
  return info.Env().Undefined();
}

template <Order O>
Napi::Value Read64(const Napi::CallbackInfo& info) {
  uint64_t v = *At<uint64_t>(info, false);
  if (O == Order::kOrdered) IoRmb();
  return Napi::BigInt::New(info.Env(), v);
}

template <Order O>
Napi::Value Write64(const Napi::CallbackInfo& info) {
  volatile uint64_t* p = At<uint64_t>(info, true);
  uint64_t v = ArgBigUint(info, 2, "value");
  if (O == Order::kOrdered) IoWmb();
  *p = v;
  return info.Env().Undefined();
}

template <Order O>
void RegisterAccess(Napi::Env env, Napi::Object exports, const std::string& suffix) {
  const std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)> fns[] = {
      {"read8", ReadN<uint8_t, O>},   {"read16", ReadN<uint16_t, O>},   {"read32", ReadN<uint32_t, O>},   {"read64", Read64<O>},
      {"write8", WriteN<uint8_t, O>}, {"write16", WriteN<uint16_t, O>}, {"write32", WriteN<uint32_t, O>}, {"write64", Write64<O>},
  };
  for (const auto& f : fns) {
    std::string name = std::string(f.first) + suffix;
    exports.Set(name, Napi::Function::New(env, f.second, name));
  }
}

Napi::Value PageSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(sysconf(_SC_PAGESIZE)));
}

// ---- huge pages (the hugepage backend) -------------------------------------

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif

// memfdCreateHuge(name, size, hugePageShift) -> fd: a memfd on the kernel's
// internal hugetlbfs (MFD_HUGETLB) with pages of 2^hugePageShift bytes. No
// file appears anywhere, so nothing outlives the last fd and mapping, even
// after a crash. Mapped MAP_SHARED (mmap above), a fork()ed child shares the
// pages instead of copy-on-write moving ours to another physical address.
// Huge pages are reserved by mmap (which fails with ENOMEM), not here.
Napi::Value MemfdCreateHuge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  uint64_t size = ArgUint(info, 1, "size", (1ull << 53));
  uint64_t shift = ArgUint(info, 2, "hugePageShift", 63);
  // 64 KiB (arm64 contiguous PTEs) to 16 GiB (powerpc): every huge page size Linux has.
  if (shift < 16 || shift > 34) ThrowInvalid(env, "hugePageShift must be in [16, 34]");
  if (size == 0 || size % (1ull << shift) != 0) ThrowInvalid(env, "size must be a positive multiple of the huge page size");
  unsigned flags = MFD_CLOEXEC | MFD_HUGETLB | (static_cast<unsigned>(shift) << MFD_HUGE_SHIFT);
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), flags));
  if (fd < 0) ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "ftruncate");
  }
  return Napi::Number::New(env, fd);
}

// mlock(handle): lock the whole mapping in RAM, faulting it in. Unlocked by munmap.
Napi::Value Mlock(const Napi::CallbackInfo& info) {
  Mapping* m = ArgMapping(info, 0);
  if (mlock(m->base, m->length) != 0) ThrowErrno(info.Env(), errno, "mlock");
  return info.Env().Undefined();
}

// ---- region locks (lib/locks.ts) -------------------------------------------

// POSIX record locks (fcntl F_SETLK, F_WRLCK) on a lock file, with file
// offsets standing for memory addresses: the kernel finds overlaps, names the
// holder's pid (F_GETLK; OFD locks would not), and drops the locks when the
// process dies, even by SIGKILL. Two traps of POSIX locks are process-wide,
// while JS state is per worker thread, so they are handled here:
//  - closing ANY fd of a file drops all the process's locks on it: the
//    process keeps exactly one fd per lock file (found by inode), counted;
//  - a process never conflicts with itself: the ranges it holds are kept here
//    and checked before asking the kernel.
struct LockFile {
  dev_t dev;
  ino_t ino;
  int fd;
  size_t refs;
  std::vector<int> spare;  // fds of the same inode opened in a race; closed with fd
  std::vector<std::pair<uint64_t, uint64_t>> held;  // [start, end) this process holds
};

// Never destroyed: worker threads may still use them while the process exits.
std::mutex& LockMutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}
std::vector<LockFile*>& LockFiles() {
  static std::vector<LockFile*>* v = new std::vector<LockFile*>();
  return *v;
}

LockFile* LockFileByFd(const Napi::CallbackInfo& info, int fd) {
  for (LockFile* f : LockFiles()) {
    if (f->fd == fd) return f;
  }
  ThrowCode(info.Env(), PM_ERR(EBADF), "not a lock file opened by lockFileOpen");
}

// [start, start + length) as a checked off_t range.
void ArgLockRange(const Napi::CallbackInfo& info, size_t i, uint64_t* start, uint64_t* length) {
  *start = ArgBigUint(info, i, "start");
  *length = ArgBigUint(info, i + 1, "length");
  if (*length == 0) ThrowInvalid(info.Env(), "length must be > 0");
  if (*start > static_cast<uint64_t>(INT64_MAX) || *length > static_cast<uint64_t>(INT64_MAX) - *start) {
    ThrowInvalid(info.Env(), "start + length must be below 2^63");
  }
}

// lockFileOpen(path) -> fd: O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, mode 0600
// (a reader could take F_RDLCK and block everyone). The same file (inode)
// yields the same fd, counted. Refused with EPERM unless it is a regular file
// owned by root or us and writable by no one else.
Napi::Value LockFileOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  std::lock_guard<std::mutex> guard(LockMutex());
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    for (LockFile* f : LockFiles()) {
      if (f->dev == st.st_dev && f->ino == st.st_ino) {
        f->refs++;
        return Napi::Number::New(env, f->fd);
      }
    }
  }
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) ThrowErrno(env, errno, "open");
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "fstat");
  }
  for (LockFile* f : LockFiles()) {
    if (f->dev == st.st_dev && f->ino == st.st_ino) {
      // Created or renamed in between: closing fd would drop our locks on it.
      f->spare.push_back(fd);
      f->refs++;
      return Napi::Number::New(env, f->fd);
    }
  }
  // No lock of ours is on this inode, so closing fd here is safe.
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    ThrowCode(env, PM_ERR(EPERM), "lock file is not a regular file");
  }
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    close(fd);
    ThrowCode(env, PM_ERR(EPERM), "lock file is owned by uid " + std::to_string(st.st_uid) + ", neither root nor this user");
  }
  if ((st.st_mode & 022) != 0) {
    close(fd);
    ThrowCode(env, PM_ERR(EPERM), "lock file is writable by group or others");
  }
  LockFiles().push_back(new LockFile{st.st_dev, st.st_ino, fd, 1, {}, {}});
  return Napi::Number::New(env, fd);
}

// lockFileClose(fd): drop one reference; the last one closes the file, which
// also drops whatever locks this process still holds on it.
Napi::Value LockFileClose(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::lock_guard<std::mutex> guard(LockMutex());
  LockFile* f = LockFileByFd(info, fd);
  if (--f->refs != 0) return info.Env().Undefined();
  std::vector<LockFile*>& all = LockFiles();
  all.erase(std::find(all.begin(), all.end(), f));
  for (int s : f->spare) close(s);
  close(f->fd);
  delete f;
  return info.Env().Undefined();
}

Napi::Object Conflict(Napi::Env env, int64_t pid, uint64_t start, uint64_t length) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, static_cast<double>(pid)));
  o.Set("start", Napi::BigInt::New(env, start));
  o.Set("length", Napi::BigInt::New(env, length));
  return o;
}

// A POSIX record lock request for bytes [start, start + length) of the file.
struct flock RangeFlock(short type, uint64_t start, uint64_t length) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(start);
  fl.l_len = static_cast<off_t>(length);
  return fl;
}

// lockRange(fd, start: bigint, length: bigint) -> null when locked, else a
// conflicting lock { pid, start, length } (pid -1: not visible from here,
// e.g. another PID namespace; length 0: to the end of the file). A range this
// process already holds conflicts too, with our own pid.
Napi::Value LockRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t start, length;
  ArgLockRange(info, 1, &start, &length);
  std::lock_guard<std::mutex> guard(LockMutex());
  LockFile* f = LockFileByFd(info, fd);
  for (const auto& h : f->held) {
    if (h.first < start + length && start < h.second) return Conflict(env, getpid(), h.first, h.second - h.first);
  }
  // Retry when the holder goes away between F_SETLK and F_GETLK.
  for (int attempt = 0; attempt < 16; attempt++) {
    struct flock fl = RangeFlock(F_WRLCK, start, length);
    if (fcntl(fd, F_SETLK, &fl) == 0) {
      f->held.emplace_back(start, start + length);
      return env.Null();
    }
    if (errno != EAGAIN && errno != EACCES) ThrowErrno(env, errno, "fcntl");
    struct flock q = RangeFlock(F_WRLCK, start, length);
    if (fcntl(fd, F_GETLK, &q) != 0) ThrowErrno(env, errno, "fcntl");
    if (q.l_type != F_UNLCK) {
      return Conflict(env, q.l_pid > 0 ? q.l_pid : -1, static_cast<uint64_t>(q.l_start), static_cast<uint64_t>(q.l_len));
    }
  }
  ThrowCode(env, PM_ERR(EAGAIN), strerror(EAGAIN), "fcntl");
}

// unlockRange(fd, start: bigint, length: bigint): release a range taken by
// lockRange (exactly that range; EINVAL otherwise).
Napi::Value UnlockRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t start, length;
  ArgLockRange(info, 1, &start, &length);
  std::lock_guard<std::mutex> guard(LockMutex());
  LockFile* f = LockFileByFd(info, fd);
  auto it = std::find(f->held.begin(), f->held.end(), std::make_pair(start, start + length));
  if (it == f->held.end()) ThrowInvalid(env, "this range is not locked by this process");
  f->held.erase(it);
  struct flock fl = RangeFlock(F_UNLCK, start, length);
  if (fcntl(fd, F_SETLK, &fl) != 0) ThrowErrno(env, errno, "fcntl");
  return env.Undefined();
}

// ---- peer credentials (lib/service) ---------------------------------------

// peerCredentials(fd) -> { pid, uid, gid } of the process at the other end of
// a connected Unix socket (getsockopt SO_PEERCRED): the kernel's word, set at
// connect(2), so a client cannot claim to be someone else.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, static_cast<double>(cred.pid)));
  o.Set("uid", Napi::Number::New(env, static_cast<double>(cred.uid)));
  o.Set("gid", Napi::Number::New(env, static_cast<double>(cred.gid)));
  return o;
}

void Cleanup(napi_env /*env*/, void* data, void* /*hint*/) {
  Instance* inst = static_cast<Instance*>(data);
  for (Mapping* m : inst->mappings) {
    if (m == nullptr) continue;
    // At teardown JS is gone too: no view can be used any more.
    munmap(m->base, m->length);
    delete m;
  }
  delete inst;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Instance* inst = new Instance();
  if (napi_set_instance_data(env, inst, Cleanup, nullptr) != napi_ok) {
    delete inst;
    ThrowCode(env, PM_ERR(EIO), "could not attach the addon's per-environment state");
  }
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("reserve", Napi::Function::New(env, Reserve, "reserve"));
  exports.Set("mapInto", Napi::Function::New(env, MapInto, "mapInto"));
  // Raw Node-API functions with the Instance as their data (see ArrayBufferOver).
  const std::pair<const char*, napi_callback> raw[] = {{"arrayBuffer", Raw<ArrayBufferOver>}, {"detach", Raw<Detach>}};
  for (const auto& f : raw) {
    napi_value fn;
    NAPI_THROW_IF_FAILED(env, napi_create_function(env, f.first, NAPI_AUTO_LENGTH, f.second, inst, &fn), exports);
    exports.Set(f.first, Napi::Value(env, fn));
  }
  exports.Set("attachedCount", Napi::Function::New(env, AttachedCount, "attachedCount"));
  exports.Set("mappingAddress", Napi::Function::New(env, MappingAddress, "mappingAddress"));
  // MMIO accessors: "read32" is readl, "read32Relaxed" readl_relaxed, and so on.
  RegisterAccess<Order::kOrdered>(env, exports, "");
  RegisterAccess<Order::kRelaxed>(env, exports, "Relaxed");
  exports.Set("pageSize", Napi::Function::New(env, PageSize, "pageSize"));
  exports.Set("memfdCreateHuge", Napi::Function::New(env, MemfdCreateHuge, "memfdCreateHuge"));
  exports.Set("mlock", Napi::Function::New(env, Mlock, "mlock"));
  exports.Set("lockFileOpen", Napi::Function::New(env, LockFileOpen, "lockFileOpen"));
  exports.Set("lockFileClose", Napi::Function::New(env, LockFileClose, "lockFileClose"));
  exports.Set("lockRange", Napi::Function::New(env, LockRange, "lockRange"));
  exports.Set("unlockRange", Napi::Function::New(env, UnlockRange, "unlockRange"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  RegisterVfioDevice(env, exports);
  RegisterVfioIommu(env, exports);
  RegisterBarrier(env, exports);
  RegisterFloor(env, exports);
  return exports;
}

}  // namespace
}  // namespace pm

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return pm::Init(env, exports); }

NODE_API_MODULE(physmem, InitModule)
