// Tensor basics: dtypes, shapes, views, copies, factories, element access, printing.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/kiln.h"

using namespace kiln;

TEST_CASE("bfloat16 conversion rounds to nearest even and keeps NaN", "[tensor][dtype]") {
  CHECK(static_cast<float>(BFloat16(1.0f)) == 1.0f);
  CHECK(static_cast<float>(BFloat16(-3.5f)) == -3.5f);
  // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0).
  CHECK(static_cast<float>(BFloat16(1.0f + 1.0f / 256)) == 1.0f);
  // 1 + 3 * 2^-8 is halfway too: rounds up to the even 1 + 2^-6.
  CHECK(static_cast<float>(BFloat16(1.0f + 3.0f / 256)) == 1.0f + 1.0f / 64);
  CHECK(std::isnan(static_cast<float>(BFloat16(NAN))));
  Tensor f = Tensor::from_vector(std::vector<float>{1.0f, 2.5f, -0.15625f}, Shape{3});
  Tensor b = f.to(DType::bf16);
  CHECK(b.dtype() == DType::bf16);
  CHECK(b.nbytes() == 6);
  CHECK(b.to(DType::f32).to_vector<float>() == std::vector<float>{1.0f, 2.5f, -0.15625f});
}

TEST_CASE("every dtype has its size and name, and converts through copies", "[tensor][dtype]") {
  CHECK(dtype_size(DType::f32) == 4);
  CHECK(dtype_size(DType::bf16) == 2);
  CHECK(dtype_size(DType::i32) == 4);
  CHECK(dtype_size(DType::i64) == 8);
  CHECK(dtype_size(DType::u8) == 1);
  CHECK(std::string(dtype_name(DType::u8)) == "uint8");
  Tensor a = Tensor::arange(5, 0, 60, TensorOptions{DType::i64});
  CHECK(a.to(DType::u8).to_vector<int64_t>() == std::vector<int64_t>{0, 60, 120, 180, 240});
  CHECK(a.to(DType::i32).to(DType::f32).to_vector<float>() == std::vector<float>{0, 60, 120, 180, 240});
  // Integer to integer wraps as C++20 and PyTorch do, without a double in between (which
  // rounded 2^53 + 1 and sent out-of-range values to 0).
  const Tensor big = Tensor::from_vector(std::vector<int64_t>{INT64_MAX, -2147483649LL, (1LL << 53) + 1, -1}, Shape{4});
  CHECK(big.to_vector<int64_t>() == std::vector<int64_t>{INT64_MAX, -2147483649LL, (1LL << 53) + 1, -1});  // exact
  CHECK(big.to(DType::u8).to_vector<int64_t>() == std::vector<int64_t>{255, 255, 1, 255});
  CHECK(big.to(DType::i32).to_vector<int64_t>() == std::vector<int64_t>{-1, 2147483647, 1, -1});
  // A float out of an integer's range, or NaN, gives INT32_MIN's answer (documented, not UB).
  const Tensor f = Tensor::from_vector(std::vector<float>{1e10f, -3.7f, NAN, 255.9f}, Shape{4});
  CHECK(f.to(DType::i32).to_vector<int64_t>() == std::vector<int64_t>{INT32_MIN, -3, INT32_MIN, 255});
  CHECK(f.to(DType::i64).to_vector<int64_t>() == std::vector<int64_t>{10000000000LL, -3, INT64_MIN, 255});
}

TEST_CASE("host memory is 64-byte aligned and pinned falls back to plain memory without CUDA", "[tensor]") {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::empty(Shape{n}, TensorOptions{DType::u8});
    CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
  }
  Tensor p = Tensor::zeros(Shape{4}, TensorOptions{DType::f32, Device::cpu(), true});
  CHECK(p.to_vector<float>() == std::vector<float>(4, 0.0f));
}

TEST_CASE("shapes have row-major strides and views share memory", "[tensor]") {
  Tensor t = Tensor::arange(24).reshape(Shape{2, 3, 4});
  CHECK(t.strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK(t.at({1, 2, 3}) == 23);
  Tensor v = t.reshape(Shape{6, -1});
  CHECK(v.shape() == Shape{6, 4});
  CHECK(v.raw_data() == t.raw_data());
  Tensor s = t.slice(1, 2);
  CHECK(s.shape() == Shape{1, 3, 4});
  CHECK(s.at({0, 0, 0}) == 12);
  // Writing through a view is visible in the base.
  s.copy_from(Tensor::zeros(Shape{12}));
  CHECK(t.at({1, 0, 0}) == 0);
  CHECK(t.at({0, 2, 3}) == 11);
}

TEST_CASE("host copies are exact at every size and byte offset, threaded and streamed", "[tensor][memory]") {
  // Sizes for each way CpuBackend::copy takes: memmove, threads over memcpy (256 KiB and
  // more), threads with non-temporal stores (32 MiB and more), each at odd offsets.
  for (const int64_t n : {int64_t{100}, (int64_t{300} << 10) + 3, (int64_t{33} << 20) + 7}) {
    INFO("bytes " << n);
    Tensor src_base = Tensor::empty(Shape{n + 1}, TensorOptions{DType::u8});
    Tensor dst_base = Tensor::zeros(Shape{n + 10}, TensorOptions{DType::u8});
    uint8_t* sp = src_base.data<uint8_t>();
    for (int64_t i = 0; i <= n; ++i) sp[i] = static_cast<uint8_t>((i * 131 + 7) % 251);
    Tensor dst = dst_base.slice(5, 5 + n);
    dst.copy_from(src_base.slice(1, 1 + n));
    const uint8_t* dp = dst_base.data<uint8_t>();
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += dp[5 + i] != sp[1 + i];
    CHECK(wrong == 0);
    CHECK(std::all_of(dp, dp + 5, [](uint8_t b) { return b == 0; }));  // nothing written around it
    CHECK(std::all_of(dp + 5 + n, dp + n + 10, [](uint8_t b) { return b == 0; }));
    // Overlapping views of one tensor copy as memmove would.
    std::vector<uint8_t> want(sp + 3, sp + 1 + n);
    src_base.slice(0, n - 2).copy_from(src_base.slice(3, n + 1));
    CHECK(std::equal(want.begin(), want.end(), src_base.data<uint8_t>()));
  }
}

TEST_CASE("factories fill as asked", "[tensor]") {
  CHECK(Tensor::ones(Shape{2, 2}).to_vector<float>() == std::vector<float>(4, 1.0f));
  CHECK(Tensor::full(Shape{3}, 2.5).to_vector<float>() == std::vector<float>(3, 2.5f));
  CHECK(Tensor::arange(4, 1, 0.5).to_vector<float>() == std::vector<float>{1, 1.5, 2, 2.5});
  CHECK(Tensor::zeros(Shape{}).numel() == 1);
  CHECK(Tensor::zeros(Shape{0, 3}).numel() == 0);
  // An integer type must hold the value (no wrap, no saturation).
  CHECK(Tensor::full(Shape{2}, 255, TensorOptions{DType::u8}).to_vector<double>() == std::vector<double>{255, 255});
  CHECK_THROWS_WITH(Tensor::full(Shape{2}, 300, TensorOptions{DType::u8}), Catch::Contains("300 does not fit uint8 (0..255)"));
  CHECK_THROWS_WITH(Tensor::full(Shape{2}, -1, TensorOptions{DType::u8}), Catch::Contains("does not fit uint8"));
  // arange's last value too: 254, 255, then 256 would wrap to 0.
  CHECK_THROWS_WITH(Tensor::arange(5, 254, 1, TensorOptions{DType::u8}), Catch::Contains("arange: 258 does not fit uint8"));
  CHECK(Tensor::arange(2, 254, 1, TensorOptions{DType::u8}).numel() == 2);
  CHECK(Tensor::full(Shape{1}, 255.5, TensorOptions{DType::u8}).to_vector<double>() == std::vector<double>{255});
  CHECK_THROWS_WITH(Tensor::full(Shape{2}, 1e20, TensorOptions{DType::i32}), Catch::Contains("does not fit int32"));
  CHECK_THROWS_WITH(Tensor::full(Shape{2}, std::nan(""), TensorOptions{DType::i64}), Catch::Contains("does not fit int64"));
}

TEST_CASE("clone and to(device) copy, and to the same device is the same tensor", "[tensor]") {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3});
  Tensor c = a.clone();
  CHECK(c.raw_data() != a.raw_data());
  CHECK(a.to(Device::cpu()).raw_data() == a.raw_data());
  CHECK(c.to_vector<float>() == a.to_vector<float>());
}

TEST_CASE("asking for a GPU where there is none names the device", "[tensor][errors]") {
  if (device_count(DeviceType::cuda) > 0) return;
  REQUIRE_THROWS_WITH(Tensor::zeros(Shape{2}, TensorOptions{DType::f32, Device::cuda(0)}),
                      Catch::Contains("cuda:0") && (Catch::Contains("no CUDA backend") || Catch::Contains("no GPU")));
}

TEST_CASE("element access checks rank and bounds", "[tensor][errors]") {
  Tensor t = Tensor::zeros(Shape{2, 3});
  REQUIRE_THROWS_WITH(t.at({2, 0}), Catch::Contains("out of range") && Catch::Contains("float32[2, 3]"));
  REQUIRE_THROWS_WITH(t.at({0}), Catch::Contains("1 indices"));
  REQUIRE_THROWS_WITH(t.item(), Catch::Contains("one-element"));
  REQUIRE_THROWS_WITH(t.data<int64_t>(), Catch::Contains("float32"));
  REQUIRE_THROWS_WITH(t.reshape(Shape{4, 2}), Catch::Contains("6 elements"));
  REQUIRE_THROWS_WITH(t.slice(1, 3), Catch::Contains("out of range"));
  // A kiln::Error naming the shape, not std::vector's out_of_range.
  REQUIRE_THROWS_AS(t.dim(2), Error);
  REQUIRE_THROWS_WITH(t.dim(2), Catch::Contains("dimension 2 is out of range for shape [2, 3]") &&
                                    Catch::Contains("-2..1"));
  CHECK(t.dim(-1) == 3);
  REQUIRE_THROWS_WITH(Tensor::zeros(Shape{}).dim(0), Catch::Contains("0-d"));
}

TEST_CASE("error locations are relative to the repository root, python/ included", "[tensor][errors]") {
  // Found by audit: the Python module's checks reported /work/main/python/src/tensor.cpp:31,
  // the core's core/ops_nn.cpp:116.
  const auto location = [](const char* file) {
    try {
      detail::throw_error(file, 7, "m");
    } catch (const Error& e) {
      return e.location();
    }
    return std::string();
  };
  const std::string self = __FILE__, tail = "tests/core/test_tensor.cpp";
  REQUIRE(self.size() > tail.size());
  const std::string root = self.substr(0, self.size() - tail.size());
  CHECK(location(__FILE__) == "tests/core/test_tensor.cpp:7");
  CHECK(location((root + "python/src/tensor.cpp").c_str()) == "python/src/tensor.cpp:7");
  CHECK(location((root + "core/ops_nn.cpp").c_str()) == "core/ops_nn.cpp:7");
  CHECK(location("/elsewhere/include/kiln/layers/layers.h") == "layers/layers.h:7");
  try {
    Tensor::zeros(Shape{2}).dim(3);
    FAIL("dim(3) of a 1-d tensor did not throw");
  } catch (const Error& e) {
    CHECK(e.location().rfind("core/", 0) == 0);
  }
}

TEST_CASE("printing shows dtype, shape, device and elided values", "[tensor]") {
  Tensor t = Tensor::arange(20).reshape(Shape{2, 10});
  const std::string s = t.str();
  CHECK_THAT(s, Catch::StartsWith("Tensor(float32[2, 10] on cpu)"));
  CHECK_THAT(s, Catch::Contains("[[0., 1., 2., ..., 7., 8., 9.],"));  // floats look like floats
  CHECK_THAT(Tensor::full(Shape{}, 3).str(), Catch::EndsWith("\n3."));
  CHECK_THAT(Tensor::full(Shape{2}, 0.25f).str(), Catch::EndsWith("[0.25, 0.25]"));
  CHECK_THAT(Tensor::full(Shape{}, 1e20f).str(), Catch::EndsWith("1e+20"));
  CHECK_THAT(Tensor::full(Shape{}, -INFINITY).str(), Catch::EndsWith("-inf"));
  Tensor l = Tensor::arange(3, 0, 1, TensorOptions{DType::i64});
  CHECK_THAT(l.str(), Catch::Contains("[0, 1, 2]"));
  CHECK_THAT(t.str(1), Catch::Contains("[[0., ..., 9.],"));
  // edge_items 0 printed "[..., ]".
  REQUIRE_THROWS_WITH(t.str(0), Catch::Contains("edge_items") && Catch::Contains("at least 1, got 0"));
}

TEST_CASE("large host blocks are reused by the next tensor of the same size", "[tensor][memory]") {
  CachingAllocator& cache = host_cache();
  const int64_t n = (int64_t{8} << 20) / 4 + 3;  // 8 MiB and a bit: an unusual size
  void* first = nullptr;
  {
    Tensor a = Tensor::empty(Shape{n});
    first = a.raw_data();
  }
  const CachingAllocator::Stats before = cache.stats();
  Tensor b = Tensor::empty(Shape{n});
  CHECK(b.raw_data() == first);
  CHECK(cache.stats().hits == before.hits + 1);
  // Other sizes do not take it.
  Tensor c = Tensor::empty(Shape{n + 1});
  CHECK(c.raw_data() != first);
}

// The VmFlags of the mapping that holds `p`, from /proc/self/smaps ("" when not found).
static std::string vm_flags_at(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) inside = lo <= at && at < hi;
    else if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST_CASE("host blocks of 2 MiB and more start on a 2 MiB boundary and ask for huge pages", "[tensor][memory]") {
  if (!host_huge_pages()) {
    WARN("huge-page case skipped: host_huge_pages() is off (KILN_HUGE_PAGES=0 or a sanitizer build)");
    return;
  }
  const int64_t n = (int64_t{5} << 20) / 4 + 7;  // 5 MiB and a bit: two whole huge pages and a tail
  Tensor t = Tensor::empty(Shape{n});
  CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % (size_t{2} << 20) == 0);
  float* d = t.data<float>();
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(i % 1009);  // every byte is ours to write
  CHECK(d[n - 1] == static_cast<float>((n - 1) % 1009));
  const std::string flags = vm_flags_at(t.raw_data());
  if (flags.empty()) {
    WARN("huge-page case skipped: no /proc/self/smaps entry for the block to check the advice in");
    return;
  }
  INFO(flags);
  CHECK(flags.find(" hg") != std::string::npos);  // MADV_HUGEPAGE took
}

// Hidden: run by the poisoned_memory ctest, which sets KILN_POISON=1 for the suite it runs,
// so that a kernel reading memory nobody wrote gives NaN there. This case proves the switch
// took: a fresh block and a reused one of every size class hold NaN bytes.
TEST_CASE("under KILN_POISON=1 every new host tensor holds NaN until written", "[.poison][tensor][memory]") {
  if (std::getenv("KILN_POISON") == nullptr) {  // a filter such as "~[cuda]" matches hidden cases too
    WARN("KILN_POISON is not set: skipped (the poisoned_memory ctest sets it)");
    return;
  }
  for (const int64_t n : {int64_t{1}, int64_t{1000}, (int64_t{8} << 20) / 4 + 5}) {
    for (int reuse = 0; reuse < 2; ++reuse) {  // the second: a block back from the cache
      Tensor f = Tensor::empty(Shape{n});
      const std::vector<float> v = f.to_vector<float>();
      CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isnan(x); }));
      f.copy_from(Tensor::full(Shape{n}, 1.0f));  // written: the next empty() must poison it again
      Tensor b = Tensor::empty(Shape{n}, TensorOptions{DType::bf16});
      CHECK(std::isnan(b.to(DType::f32).to_vector<float>().back()));
    }
  }
}

TEST_CASE("from_external borrows memory and releases it once, after the last view", "[tensor]") {
  std::vector<float> owner{1, 2, 3, 4, 5, 6};
  int released = 0;
  Tensor view;
  {
    Tensor t = Tensor::from_external(owner.data(), Shape{2, 3}, DType::f32, Device::cpu(), [&] { ++released; });
    CHECK(t.raw_data() == owner.data());
    CHECK(t.is_contiguous());
    CHECK_FALSE(t.is_pinned());
    owner[4] = 50;  // the owner writes, kiln sees
    CHECK(t.at({1, 1}) == 50);
    view = t.reshape(Shape{6}).slice(3, 6);
    Tensor sum = kiln::sum(t);
    CHECK(sum.item() == 1 + 2 + 3 + 4 + 50 + 6);
  }
  CHECK(released == 0);  // the view still uses it
  CHECK(view.to_vector<float>() == std::vector<float>{4, 50, 6});
  view = Tensor();
  CHECK(released == 1);
  CHECK_THROWS_WITH(Tensor::from_external(nullptr, Shape{2}, DType::f32, Device::cpu(), [] {}),
                    Catch::Contains("null data"));
}
