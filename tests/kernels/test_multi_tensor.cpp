// The optimizers' multi-tensor launches (kernels/cuda/multi_tensor.h), run on the CPU: every
// element of every tensor falls in exactly one block of exactly one launch, whatever the
// tensor count and sizes; launches split at kMaxTensors and at the grid's block limit.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <vector>

#include "kernels/cuda/multi_tensor.h"

using namespace kiln::cuda;

namespace {

struct Launch {
  int tensors = 0;
  int64_t blocks = 0;
};

// Packs tensors of `sizes` (arrays[0] of tensor i is a fake address naming it) and walks
// every block of every launch as the kernel would; counts how often each element is visited
// unless `count_elements` is false (sizes too large to visit).
std::vector<Launch> run(const std::vector<int64_t>& sizes, std::map<int64_t, std::vector<int>>* visits) {
  std::vector<Launch> launches;
  auto name = [](int64_t i) { return reinterpret_cast<float*>(static_cast<intptr_t>(16 * (i + 1))); };
  pack_launches<2>(
      static_cast<int64_t>(sizes.size()),
      [&](int64_t i) { return MultiTensorItem<2>{sizes[static_cast<size_t>(i)], {name(i), nullptr}}; },
      [&](const MultiTensorBatch<2>& b, int64_t blocks) {
        launches.push_back(Launch{b.count, blocks});
        REQUIRE(blocks <= kMaxBlocks);
        if (!visits) return;
        for (int64_t block = 0; block < blocks; ++block) {
          const BlockRange r = block_range(b, block);
          REQUIRE(r.t >= 0);
          REQUIRE(r.t < b.count);
          REQUIRE(r.begin < r.end);  // no block is idle
          const int64_t tensor = reinterpret_cast<intptr_t>(b.arrays[0][r.t]) / 16 - 1;
          REQUIRE(b.n[r.t] == sizes[static_cast<size_t>(tensor)]);
          std::vector<int>& seen = (*visits)[tensor];
          seen.resize(static_cast<size_t>(b.n[r.t]));
          for (int64_t e = r.begin; e < r.end; ++e) ++seen[static_cast<size_t>(e)];
        }
      });
  return launches;
}

}  // namespace

TEST_CASE("multi-tensor launches cover every element once", "[kernels][optim]") {
  // VGG16-like sizes with tails, empty tensors, one element, and more tensors than one launch takes.
  std::vector<int64_t> sizes = {1728, 64, 0, 36864, 64, 1, 4096, 4095, 4097, 8192, 0, 102765};
  for (int i = 0; i < 60; ++i) sizes.push_back(1 + 977 * i);
  std::map<int64_t, std::vector<int>> visits;
  const std::vector<Launch> launches = run(sizes, &visits);
  CHECK(launches.size() == 2);  // 70 non-empty tensors: 48, then 22
  CHECK(launches[0].tensors == kMaxTensors);
  CHECK(launches[1].tensors == 70 - kMaxTensors);
  for (size_t i = 0; i < sizes.size(); ++i) {
    INFO("tensor " << i << " of " << sizes[i] << " elements");
    if (sizes[i] == 0) {
      CHECK(visits.count(static_cast<int64_t>(i)) == 0);
      continue;
    }
    const std::vector<int>& seen = visits[static_cast<int64_t>(i)];
    REQUIRE(seen.size() == static_cast<size_t>(sizes[i]));
    for (const int v : seen) REQUIRE(v == 1);
  }
  CHECK(run({}, nullptr).empty());
  CHECK(run({0, 0}, nullptr).empty());
}

TEST_CASE("a multi-tensor launch never passes the grid's block limit", "[kernels][optim]") {
  // Sizes whose blocks add up past 2^31 - 1 (nothing is allocated: only the packing runs).
  const int64_t big = (kMaxBlocks / 2 + 1) * kMultiChunk;  // just over half the limit in blocks
  const std::vector<Launch> launches = run({big, 5, big, big}, nullptr);
  REQUIRE(launches.size() == 3);
  CHECK(launches[0].tensors == 2);  // big + 5 fit; a second big would not
  CHECK(launches[1].tensors == 1);
  CHECK(launches[2].tensors == 1);
  for (const Launch& l : launches) CHECK(l.blocks <= kMaxBlocks);
}
