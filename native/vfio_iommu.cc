// VFIO type1 IOMMU container: the ioctls on /dev/vfio/vfio that decide what a
// device behind the IOMMU may reach (lib/vfio/container.ts holds the policy).
//
// The container fd itself is opened with the generic open(); this file only
// issues the container and IOMMU ioctls. Every failure throws with errno and
// the ioctl's name as `syscall`, so JS can say which limit was hit.

#include <napi.h>

#include "common.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <string>
#include <vector>

namespace pm {
namespace {

// ioctl, retried on EINTR (MAP_DMA of a large range pins pages and may be interrupted).
int Ioctl(int fd, unsigned long request, void* arg) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

int IoctlNoArg(int fd, unsigned long request, unsigned long arg) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

// vfioContainerApiVersion(fd) -> VFIO_GET_API_VERSION (0 is the only version there is).
Napi::Value ApiVersion(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int v = IoctlNoArg(fd, VFIO_GET_API_VERSION, 0);
  if (v < 0) ThrowErrno(info.Env(), errno, "ioctl(VFIO_GET_API_VERSION)");
  return Napi::Number::New(info.Env(), v);
}

// vfioContainerCheckExtension(fd, extension) -> VFIO_CHECK_EXTENSION's answer
// (0: not supported; > 0: supported).
Napi::Value CheckExtension(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t ext = ArgUint(info, 1, "extension", INT32_MAX);
  int v = IoctlNoArg(fd, VFIO_CHECK_EXTENSION, static_cast<unsigned long>(ext));
  if (v < 0) ThrowErrno(info.Env(), errno, "ioctl(VFIO_CHECK_EXTENSION)");
  return Napi::Number::New(info.Env(), v);
}

// vfioGroupSetContainer(groupFd, containerFd): VFIO_GROUP_SET_CONTAINER.
Napi::Value GroupSetContainer(const Napi::CallbackInfo& info) {
  int group = ArgFd(info, 0);
  int container = ArgFd(info, 1);
  if (Ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) ThrowErrno(info.Env(), errno, "ioctl(VFIO_GROUP_SET_CONTAINER)");
  return info.Env().Undefined();
}

// vfioIommuSetType(containerFd, type): VFIO_SET_IOMMU (needs a group attached first).
Napi::Value SetType(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t type = ArgUint(info, 1, "type", INT32_MAX);
  if (IoctlNoArg(fd, VFIO_SET_IOMMU, static_cast<unsigned long>(type)) < 0) ThrowErrno(info.Env(), errno, "ioctl(VFIO_SET_IOMMU)");
  return info.Env().Undefined();
}

#ifndef VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
#define VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL 3
struct vfio_iommu_type1_info_dma_avail {
  struct vfio_info_cap_header header;
  __u32 avail;
};
#endif

// vfioIommuGetInfo(containerFd) -> { flags, pageSizes: bigint, iovaRanges:
// [{ start, end }] (bigints, end inclusive) | null, dmaAvail: number | null }.
// The kernel says how large the answer with its capability chain is in argsz;
// ask again with that size. Capability offsets are from the start of the
// struct; each one is checked to lie inside what the kernel filled.
Napi::Value GetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::vector<uint8_t> buf(sizeof(struct vfio_iommu_type1_info));
  for (int attempt = 0; attempt < 4; attempt++) {
    auto* hdr = reinterpret_cast<struct vfio_iommu_type1_info*>(buf.data());
    uint32_t asked = static_cast<uint32_t>(buf.size());
    hdr->argsz = asked;
    hdr->flags = 0;
    if (Ioctl(fd, VFIO_IOMMU_GET_INFO, buf.data()) < 0) ThrowErrno(env, errno, "ioctl(VFIO_IOMMU_GET_INFO)");
    if (hdr->argsz <= asked) break;
    if (hdr->argsz > (1u << 20)) ThrowCode(env, PM_ERR(EOVERFLOW), "VFIO_IOMMU_GET_INFO wants an implausible " + std::to_string(hdr->argsz) + " bytes");
    std::vector<uint8_t> bigger(hdr->argsz, 0);
    buf.swap(bigger);
  }
  auto* hdr = reinterpret_cast<struct vfio_iommu_type1_info*>(buf.data());
  Napi::Object out = Napi::Object::New(env);
  out.Set("flags", Napi::Number::New(env, hdr->flags));
  out.Set("pageSizes", Napi::BigInt::New(env, static_cast<uint64_t>((hdr->flags & VFIO_IOMMU_INFO_PGSIZES) ? hdr->iova_pgsizes : 0)));
  Napi::Value ranges = env.Null();
  Napi::Value avail = env.Null();
  const size_t size = std::min<size_t>(buf.size(), hdr->argsz);
  if ((hdr->flags & VFIO_IOMMU_INFO_CAPS) && size >= sizeof(struct vfio_iommu_type1_info)) {
    uint32_t off = hdr->cap_offset;
    for (int guard = 0; off != 0 && guard < 64; guard++) {
      if (off < sizeof(struct vfio_iommu_type1_info) || off + sizeof(struct vfio_info_cap_header) > size) break;
      auto* cap = reinterpret_cast<struct vfio_info_cap_header*>(buf.data() + off);
      if (cap->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE && off + sizeof(struct vfio_iommu_type1_info_cap_iova_range) <= size) {
        auto* r = reinterpret_cast<struct vfio_iommu_type1_info_cap_iova_range*>(cap);
        size_t room = (size - off - sizeof(*r)) / sizeof(struct vfio_iova_range);
        uint32_t n = std::min<uint32_t>(r->nr_iovas, static_cast<uint32_t>(room));
        Napi::Array arr = Napi::Array::New(env, n);
        for (uint32_t i = 0; i < n; i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("start", Napi::BigInt::New(env, static_cast<uint64_t>(r->iova_ranges[i].start)));
          o.Set("end", Napi::BigInt::New(env, static_cast<uint64_t>(r->iova_ranges[i].end)));
          arr.Set(i, o);
        }
        ranges = arr;
      } else if (cap->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL && off + sizeof(struct vfio_iommu_type1_info_dma_avail) <= size) {
        avail = Napi::Number::New(env, reinterpret_cast<struct vfio_iommu_type1_info_dma_avail*>(cap)->avail);
      }
      if (cap->next != 0 && cap->next <= off) break;  // the chain only goes forward
      off = cap->next;
    }
  }
  out.Set("iovaRanges", ranges);
  out.Set("dmaAvail", avail);
  return out;
}

// vfioMapDma(containerFd, mappingHandle, offset, length, iova: bigint, read, write):
// VFIO_IOMMU_MAP_DMA of [offset, offset + length) of an addon mapping at
// `iova`. The kernel pins the pages (charged to RLIMIT_MEMLOCK) for as long
// as they stay mapped.
Napi::Value MapDma(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Mapping* m = ArgMapping(info, 1);
  uint64_t offset = ArgUint(info, 2, "offset", (1ull << 53));
  uint64_t length = ArgUint(info, 3, "length", (1ull << 53));
  uint64_t iova = ArgBigUint(info, 4, "iova");
  bool read = ArgBool(info, 5, "read");
  bool write = ArgBool(info, 6, "write");
  if (length == 0) ThrowInvalid(env, "length must be > 0");
  if (!read && !write) ThrowInvalid(env, "read or write access must be granted");
  CheckRange(info, m, offset, length);
  if (write && !m->writable) ThrowCode(env, PM_ERR(EACCES), strerror(EACCES), "ioctl(VFIO_IOMMU_MAP_DMA) (device write access to a read-only mapping)");
  struct vfio_iommu_type1_dma_map map = {};
  map.argsz = sizeof(map);
  map.flags = (read ? VFIO_DMA_MAP_FLAG_READ : 0) | (write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
  map.vaddr = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(m->base + offset));
  map.iova = iova;
  map.size = length;
  if (Ioctl(fd, VFIO_IOMMU_MAP_DMA, &map) < 0) ThrowErrno(env, errno, "ioctl(VFIO_IOMMU_MAP_DMA)");
  return env.Undefined();
}

// vfioUnmapDma(containerFd, iova: bigint, length) -> bytes the kernel unmapped
// (VFIO_IOMMU_UNMAP_DMA; it unmaps whole mappings only, and waits for the
// IOTLB flush, so the device can no longer reach them when this returns).
Napi::Value UnmapDma(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t iova = ArgBigUint(info, 1, "iova");
  uint64_t length = ArgUint(info, 2, "length", (1ull << 53));
  if (length == 0) ThrowInvalid(env, "length must be > 0");
  struct vfio_iommu_type1_dma_unmap unmap = {};
  unmap.argsz = sizeof(unmap);
  unmap.iova = iova;
  unmap.size = length;
  if (Ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0) ThrowErrno(env, errno, "ioctl(VFIO_IOMMU_UNMAP_DMA)");
  return Napi::Number::New(env, static_cast<double>(unmap.size));
}

}  // namespace

void RegisterVfioIommu(Napi::Env env, Napi::Object exports) {
  exports.Set("vfioContainerApiVersion", Napi::Function::New(env, ApiVersion, "vfioContainerApiVersion"));
  exports.Set("vfioContainerCheckExtension", Napi::Function::New(env, CheckExtension, "vfioContainerCheckExtension"));
  exports.Set("vfioGroupSetContainer", Napi::Function::New(env, GroupSetContainer, "vfioGroupSetContainer"));
  exports.Set("vfioIommuSetType", Napi::Function::New(env, SetType, "vfioIommuSetType"));
  exports.Set("vfioIommuGetInfo", Napi::Function::New(env, GetInfo, "vfioIommuGetInfo"));
  exports.Set("vfioMapDma", Napi::Function::New(env, MapDma, "vfioMapDma"));
  exports.Set("vfioUnmapDma", Napi::Function::New(env, UnmapDma, "vfioUnmapDma"));
}

}  // namespace pm
