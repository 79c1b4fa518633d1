// Same-run C++ reference for bench/allocator.ts and bench/subpool.ts.
//
// What this is: physmem's own implementation (written for this benchmark,
// no code copied) of the design published by Sebastian Aaltonen's
// OffsetAllocator (github.com/sebbbi/OffsetAllocator): 256 bins indexed by
// an 8-bit float of the size (5-bit exponent, 3-bit mantissa; rounded up to
// search, rounded down to file), a two-level bitmap (32 top bits, 8 leaf
// bits each) found with ctz, a fixed pool of 32-bit nodes (offset, size, bin
// list links, address neighbour links, used flag) with a stack of unused
// node indexes, and free by node index with immediate merging of free
// neighbours. It is not the upstream library: figures printed from it are
// labelled "OffsetAllocator-design C++ reference".
//
// Like OffsetAllocator, offsets and sizes are 32-bit counts of elements; the
// benchmarks pass an element size (64 bytes for W1/W4/W2, 4096 for W3c) that
// divides every size they use, so the placements are those of a byte
// allocator that aligns to that element.
//
// The workloads replay bench/allocator.ts exactly: the sizes come from the
// file the JS side wrote (float64, bytes), the victims from the same inline
// xorshift32 with the same seeds and the same `% count`.
//
// Build: g++ -O2 -std=c++17 (bench/allocator.ts does it into a cache dir).
// Usage:
//   ref churn SIZES ELEMENT RANGE_BYTES LIVE_CAP STEPS SEED   -> ns/step
//   ref util SIZES ELEMENT RANGE_BYTES STEPS SEED RETRY       -> perFailure perStep failures ns/step
//   ref fifo ELEMENT TOTAL_BYTES BLOCK_BYTES LIVE PAIRS        -> ns/pair

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr uint32_t kNone = 0xffffffffu;
constexpr uint32_t kTopBins = 32;
constexpr uint32_t kLeafBins = 8;
constexpr uint32_t kBins = kTopBins * kLeafBins;

inline uint32_t HighBit(uint32_t v) { return 31u - static_cast<uint32_t>(__builtin_clz(v)); }

// Bin of the smallest size class whose every member is >= size (search key).
inline uint32_t BinRoundUp(uint32_t size) {
  if (size < kLeafBins) return size;
  const uint32_t shift = HighBit(size) - 3;
  uint32_t bin = ((shift + 1) << 3) + ((size >> shift) & 7u);
  if ((size & ((1u << shift) - 1u)) != 0) bin++;  // a mantissa carry moves into the exponent
  return bin;
}

// Bin a free block of `size` is filed under (its size rounded down).
inline uint32_t BinRoundDown(uint32_t size) {
  if (size < kLeafBins) return size;
  const uint32_t shift = HighBit(size) - 3;
  return ((shift + 1) << 3) + ((size >> shift) & 7u);
}

// Lowest set bit of `mask` at index >= from, or kNone.
inline uint32_t LowestFrom(uint32_t mask, uint32_t from) {
  if (from >= 32) return kNone;
  const uint32_t m = mask & (~0u << from);
  return m ? static_cast<uint32_t>(__builtin_ctz(m)) : kNone;
}

struct Node {
  uint32_t offset;
  uint32_t size;
  uint32_t binPrev;
  uint32_t binNext;
  uint32_t addrPrev;
  uint32_t addrNext;
  uint32_t used;
};

class Reference {
 public:
  Reference(uint32_t total, uint32_t maxNodes) : nodes_(maxNodes), spare_(maxNodes) {
    for (uint32_t i = 0; i < maxNodes; i++) spare_[i] = maxNodes - 1 - i;
    spareTop_ = maxNodes;
    for (uint32_t b = 0; b < kBins; b++) head_[b] = kNone;
    File(total, 0);
  }

  // Returns the node index (the handle), or kNone; *offset gets the start.
  uint32_t Alloc(uint32_t size, uint32_t* offset) {
    if (spareTop_ < 1) return kNone;
    const uint32_t want = BinRoundUp(size);
    uint32_t top = want >> 3;
    uint32_t leaf = kNone;
    if (topBits_ & (1u << top)) leaf = LowestFrom(leafBits_[top], want & 7u);
    if (leaf == kNone) {
      top = LowestFrom(topBits_, top + 1);
      if (top == kNone) return kNone;
      leaf = static_cast<uint32_t>(__builtin_ctz(leafBits_[top]));
    }
    const uint32_t bin = (top << 3) | leaf;
    const uint32_t n = head_[bin];
    Node& node = nodes_[n];
    const uint32_t whole = node.size;
    node.size = size;
    node.used = 1;
    head_[bin] = node.binNext;
    if (node.binNext != kNone) nodes_[node.binNext].binPrev = kNone;
    if (head_[bin] == kNone) {
      leafBits_[top] &= ~(1u << leaf);
      if (leafBits_[top] == 0) topBits_ &= ~(1u << top);
    }
    const uint32_t rest = whole - size;
    if (rest > 0) {
      const uint32_t r = File(rest, node.offset + size);  // nodes_ never reallocates: `node` stays valid
      if (node.addrNext != kNone) nodes_[node.addrNext].addrPrev = r;
      nodes_[r].addrPrev = n;
      nodes_[r].addrNext = node.addrNext;
      node.addrNext = r;
    }
    *offset = node.offset;
    return n;
  }

  void Free(uint32_t n) {
    Node& node = nodes_[n];
    uint32_t offset = node.offset;
    uint32_t size = node.size;
    uint32_t prev = node.addrPrev;
    uint32_t next = node.addrNext;
    if (prev != kNone && !nodes_[prev].used) {
      offset = nodes_[prev].offset;
      size += nodes_[prev].size;
      const uint32_t pp = nodes_[prev].addrPrev;
      Unfile(prev);
      prev = pp;
    }
    if (next != kNone && !nodes_[next].used) {
      size += nodes_[next].size;
      const uint32_t nx = nodes_[next].addrNext;
      Unfile(next);
      next = nx;
    }
    node.used = 0;
    spare_[spareTop_++] = n;
    const uint32_t m = File(size, offset);
    nodes_[m].addrPrev = prev;
    nodes_[m].addrNext = next;
    if (prev != kNone) nodes_[prev].addrNext = m;
    if (next != kNone) nodes_[next].addrPrev = m;
  }

 private:
  // Take a spare node for free block [offset, offset + size) and file it.
  uint32_t File(uint32_t size, uint32_t offset) {
    const uint32_t bin = BinRoundDown(size);
    const uint32_t top = bin >> 3;
    const uint32_t leaf = bin & 7u;
    if (head_[bin] == kNone) {
      leafBits_[top] |= 1u << leaf;
      topBits_ |= 1u << top;
    }
    const uint32_t n = spare_[--spareTop_];
    const uint32_t h = head_[bin];
    nodes_[n] = Node{offset, size, kNone, h, kNone, kNone, 0};
    if (h != kNone) nodes_[h].binPrev = n;
    head_[bin] = n;
    return n;
  }

  // Take free node n off its bin and return it to the spare stack.
  void Unfile(uint32_t n) {
    Node& node = nodes_[n];
    if (node.binPrev != kNone) {
      nodes_[node.binPrev].binNext = node.binNext;
      if (node.binNext != kNone) nodes_[node.binNext].binPrev = node.binPrev;
    } else {
      const uint32_t bin = BinRoundDown(node.size);
      head_[bin] = node.binNext;
      if (node.binNext != kNone) nodes_[node.binNext].binPrev = kNone;
      if (head_[bin] == kNone) {
        const uint32_t top = bin >> 3;
        leafBits_[top] &= ~(1u << (bin & 7u));
        if (leafBits_[top] == 0) topBits_ &= ~(1u << top);
      }
    }
    spare_[spareTop_++] = n;
  }

  std::vector<Node> nodes_;
  std::vector<uint32_t> spare_;
  uint32_t spareTop_ = 0;
  uint32_t topBits_ = 0;
  uint32_t leafBits_[kTopBins] = {};
  uint32_t head_[kBins];
};

std::vector<double> ReadSizes(const char* path) {
  std::vector<double> out;
  FILE* f = std::fopen(path, "rb");
  if (!f) {
    std::perror(path);
    std::exit(2);
  }
  double buf[4096];
  size_t got;
  while ((got = std::fread(buf, sizeof(double), 4096, f)) > 0) out.insert(out.end(), buf, buf + got);
  std::fclose(f);
  return out;
}

// The victim choice of bench/allocator.ts: xorshift32 (13, 17, 5) on int32 bits.
inline uint32_t Step(uint32_t& x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

uint32_t Seed(const char* s) {
  const uint32_t x = static_cast<uint32_t>(std::strtoull(s, nullptr, 0));
  return x ? x : 1;
}

double Now() {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Churn(char** argv) {
  const std::vector<double> bytes = ReadSizes(argv[0]);
  const double element = std::atof(argv[1]);
  const uint32_t range = static_cast<uint32_t>(std::atof(argv[2]) / element);
  const uint32_t liveCap = static_cast<uint32_t>(std::atol(argv[3]));
  const long steps = std::atol(argv[4]);
  uint32_t x = Seed(argv[5]);
  std::vector<uint32_t> sizes(bytes.size());
  for (size_t i = 0; i < bytes.size(); i++) sizes[i] = static_cast<uint32_t>(bytes[i] / element);
  Reference a(range, 2 * liveCap + 64);
  std::vector<uint32_t> live(liveCap + 1);
  uint32_t count = 0;
  size_t si = 0;
  const size_t nsizes = sizes.size();
  uint32_t off;
  while (count < liveCap) {
    const uint32_t h = a.Alloc(sizes[si], &off);
    si = si + 1 == nsizes ? 0 : si + 1;
    if (h == kNone) break;
    live[count++] = h;
  }
  const double t0 = Now();
  for (long step = 0; step < steps; step++) {
    if (count >= liveCap) {
      const uint32_t i = Step(x) % count;
      a.Free(live[i]);
      live[i] = live[--count];
    }
    const uint32_t size = sizes[si];
    si = si + 1 == nsizes ? 0 : si + 1;
    uint32_t h = a.Alloc(size, &off);
    while (h == kNone) {
      const uint32_t i = Step(x) % count;
      a.Free(live[i]);
      live[i] = live[--count];
      h = a.Alloc(size, &off);
    }
    live[count++] = h;
  }
  std::printf("%.3f\n", (Now() - t0) / static_cast<double>(steps));
  return 0;
}

int Util(char** argv) {
  const std::vector<double> bytes = ReadSizes(argv[0]);
  const double element = std::atof(argv[1]);
  const double rangeBytes = std::atof(argv[2]);
  const uint32_t range = static_cast<uint32_t>(rangeBytes / element);
  const long steps = std::atol(argv[3]);
  uint32_t x = Seed(argv[4]);
  const bool retry = std::atoi(argv[5]) != 0;
  const size_t cap = static_cast<size_t>(range) + 1;
  Reference a(range, 2 * range + 64);
  std::vector<uint32_t> handle(cap);
  std::vector<double> size(cap);
  uint32_t count = 0;
  double used = 0, sum = 0, sumStep = 0;
  long failures = 0, failedSteps = 0;
  uint32_t off;
  const double t0 = Now();
  for (long step = 0; step < steps; step++) {
    const double s = bytes[static_cast<size_t>(step) % bytes.size()];
    uint32_t h = a.Alloc(static_cast<uint32_t>(s / element), &off);
    if (h == kNone) {
      sumStep += used / rangeBytes;
      failedSteps++;
    }
    while (h == kNone) {
      sum += used / rangeBytes;
      failures++;
      const uint32_t i = Step(x) % count;
      a.Free(handle[i]);
      used -= size[i];
      count--;
      handle[i] = handle[count];
      size[i] = size[count];
      if (!retry) break;
      h = a.Alloc(static_cast<uint32_t>(s / element), &off);
    }
    if (h == kNone) continue;
    handle[count] = h;
    size[count] = s;
    count++;
    used += s;
  }
  const double ns = (Now() - t0) / static_cast<double>(steps);
  std::printf("%.6f %.6f %ld %.3f\n", failures ? sum / failures : 1.0, failedSteps ? sumStep / failedSteps : 1.0, failures, ns);
  return 0;
}

int Fifo(char** argv) {
  const double element = std::atof(argv[0]);
  const uint32_t total = static_cast<uint32_t>(std::atof(argv[1]) / element);
  const uint32_t block = static_cast<uint32_t>(std::atof(argv[2]) / element);
  const uint32_t liveN = static_cast<uint32_t>(std::atol(argv[3]));
  const long pairs = std::atol(argv[4]);
  if ((liveN & (liveN - 1)) != 0) return 2;
  Reference a(total, 2 * liveN + 64);
  std::vector<uint32_t> fifo(liveN);
  uint32_t off;
  for (uint32_t i = 0; i < liveN; i++) {
    fifo[i] = a.Alloc(block, &off);
    if (fifo[i] == kNone) return 3;
  }
  uint32_t head = 0;
  uint64_t sink = 0;
  const double t0 = Now();
  for (long n = 0; n < pairs; n++) {
    a.Free(fifo[head]);
    fifo[head] = a.Alloc(block, &off);
    sink += off;
    head = (head + 1) & (liveN - 1);
  }
  const double ns = (Now() - t0) / static_cast<double>(pairs);
  std::printf("%.3f %llu\n", ns, static_cast<unsigned long long>(sink & 1));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 8 && std::strcmp(argv[1], "churn") == 0) return Churn(argv + 2);
  if (argc >= 8 && std::strcmp(argv[1], "util") == 0) return Util(argv + 2);
  if (argc >= 7 && std::strcmp(argv[1], "fifo") == 0) return Fifo(argv + 2);
  std::fprintf(stderr, "usage: see the header of offset-allocator-design.cc\n");
  return 2;
}
