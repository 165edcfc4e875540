// Run-to-run determinism: the same inputs give the same bits. On the CPU every op is
// deterministic by construction; on the GPU, max-pool backward gathers where windows
// overlap (no atomics), and KILN_DETERMINISTIC (compute_options().deterministic) keeps
// cuDNN to algorithms it marks deterministic. The gather's math (kernels/common/pool.h) is
// checked here on the CPU against the CPU backend's scatter, so the GPU kernel that calls
// it is tested before any GPU runs it.
#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/conv_api.h"
#include "kernels/common/pool.h"
#include "tests/support/gpu.h"

using namespace kiln;

namespace {

const Device kGpu = Device::cuda(0);

// Windows that overlap (the gather's case) and ones that do not, with padding, gaps and odd sizes.
const std::vector<Pool2dParams>& pool_geometries() {
  static const std::vector<Pool2dParams> g = {
      {2, 2, 2, 2, 0, 0},  // VGG
      {3, 3, 2, 2, 1, 1},  // ResNet's stem
      {2, 2, 1, 1, 0, 0},  // every input in up to four windows
      {3, 3, 1, 1, 1, 1},  // up to nine
      {3, 2, 2, 1, 1, 0},  // different per axis
      {3, 3, 3, 3, 1, 1},  // stride == kernel with padding: no overlap
      {2, 2, 3, 3, 0, 0},  // stride > kernel: inputs in no window (their gradient is 0)
  };
  return g;
}

// Values from a small set, so windows often tie and the tie rule decides the argmax.
Tensor tied_values(const Shape& s, uint64_t seed, DType dtype) {
  Generator g(seed);
  std::vector<float> v = Tensor::uniform(s, -2.49f, 2.49f, g).to_vector<float>();
  for (float& e : v) e = std::nearbyint(e);
  return Tensor::from_vector(v, s).to(dtype);
}

std::vector<uint32_t> f32_bits(const Tensor& t) {
  const std::vector<float> v = t.to(DType::f32).cpu().to_vector<float>();
  std::vector<uint32_t> b(v.size());
  std::memcpy(b.data(), v.data(), v.size() * 4);
  return b;
}

// The gradient of max_pool2d at x for upstream `up`, on x's device.
Tensor pool_grad(const Tensor& x, const Tensor& up, const Pool2dParams& p) {
  Tensor xr = x.detach();
  xr.set_requires_grad(true);
  max_pool2d(xr, p).backward(up);
  return xr.grad();
}

}  // namespace

TEST_CASE("sums over many blocks match a long-double sum and give the same bits on 1 or 2 threads",
          "[determinism][ops]") {
  // Three 8192-element blocks and a tail that fills no 16-lane row: every path of the
  // blocked, laned sum (kernels/cpu/cpu_elementwise.cpp).
  Generator g(3);
  const Tensor x = Tensor::normal(Shape{3 * 8192 + 37}, 1.0f, 2.0f, g);
  const std::vector<float> v = x.to_vector<float>();
  long double ref = 0, ref_sq = 0;
  for (const float f : v) {
    ref += f;
    ref_sq += static_cast<long double>(f) * f;
  }
  const int threads = omp_get_max_threads();
  std::vector<float> got;
  for (const int t : {1, 2}) {
    omp_set_num_threads(t);
    got.push_back(sum(x).to_vector<float>()[0]);
    got.push_back(mean(x).to_vector<float>()[0]);
    got.push_back(l2_penalty(std::vector<Tensor>{x}, 2.0f).to_vector<float>()[0]);  // the sum of squares
  }
  omp_set_num_threads(threads);
  // Summed in double, rounded once to float: within float rounding of the exact values.
  const auto n = static_cast<long double>(v.size());
  const auto near = [](float value, long double want) {
    const double w = static_cast<double>(want);
    return std::fabs(static_cast<double>(value) - w) <= 1e-7 * std::fabs(w);
  };
  CHECK(near(got[0], ref));
  CHECK(near(got[1], ref / n));
  CHECK(near(got[2], ref_sq));
  for (size_t i = 0; i < 3; ++i) CHECK(std::memcmp(&got[i], &got[i + 3], sizeof(float)) == 0);
}

TEST_CASE("the max-pool gradient gathered per input equals the CPU backend's scatter, bit for bit",
          "[ops][pool][determinism]") {
  for (const DType dtype : {DType::f32, DType::bf16}) {
    for (const Pool2dParams& p : pool_geometries()) {
      INFO(dtype_name(dtype) << ", kernel " << p.kernel_h << "x" << p.kernel_w << " stride " << p.stride_h << "x"
                             << p.stride_w << " pad " << p.pad_h << "x" << p.pad_w);
      const Shape s{2, 13, 11, 5};
      const Tensor x = tied_values(s, 40, dtype);
      const Tensor y = max_pool2d(x, p);
      Generator gu(41);
      const Tensor up = Tensor::uniform(y.shape(), -1.0f, 1.0f, gu).to(dtype);
      const Tensor dx = pool_grad(x, up, p);
      // The argmax the forward records, and the gather over it.
      Tensor idx = Tensor::empty(y.shape(), TensorOptions{DType::i32, Device::cpu()});
      Tensor y2 = Tensor::empty(y.shape(), TensorOptions{dtype, Device::cpu()});
      backend_for(Device::cpu()).max_pool2d_forward(x, p, y2, idx);
      const std::vector<float> g = up.to(DType::f32).to_vector<float>();
      const std::vector<int32_t> a = idx.to_vector<int32_t>();
      const int64_t h = s[1], w = s[2], c = s[3], oh = y.dim(1), ow = y.dim(2);
      std::vector<float> gathered;
      for (int64_t b = 0; b < s[0]; ++b)
        for (int64_t hh = 0; hh < h; ++hh)
          for (int64_t ww = 0; ww < w; ++ww)
            for (int64_t k = 0; k < c; ++k) {
              const size_t first = static_cast<size_t>(b * oh * ow * c + k);
              const float v = common::max_pool_grad_at(g.data() + first, a.data() + first, hh, ww, w, c, oh, ow, p);
              gathered.push_back(dtype == DType::bf16 ? static_cast<float>(BFloat16(v)) : v);  // one rounding
            }
      const std::vector<float> scattered = dx.to(DType::f32).to_vector<float>();
      REQUIRE(gathered.size() == scattered.size());
      size_t differ = 0;
      for (size_t i = 0; i < gathered.size(); ++i) differ += std::memcmp(&gathered[i], &scattered[i], 4) != 0;
      CHECK(differ == 0);
    }
  }
}

// The GPU's max-pool kernels work a pack of channels per thread (16 bytes: 8 bf16, 4 float)
// through kernels/common/pool.h; run here on the CPU for every pack, they must give the CPU
// backend's bits: the forward's values and argmax, and, where windows do not overlap, the
// routed gradient.
TEST_CASE("max-pool by channel packs, as the GPU runs it, gives the CPU backend's bits", "[ops][pool][determinism]") {
  for (const DType dtype : {DType::f32, DType::bf16}) {
    for (const Pool2dParams& p : pool_geometries()) {
      INFO(dtype_name(dtype) << ", kernel " << p.kernel_h << "x" << p.kernel_w << " stride " << p.stride_h << "x"
                             << p.stride_w << " pad " << p.pad_h << "x" << p.pad_w);
      const Shape s{2, 13, 11, 16};
      const Tensor x = tied_values(s, 60, dtype);
      Tensor y = max_pool2d(x, p);
      Tensor idx = Tensor::empty(y.shape(), TensorOptions{DType::i32, Device::cpu()});
      backend_for(Device::cpu()).max_pool2d_forward(x, p, y, idx);
      const int64_t h = s[1], w = s[2], c = s[3], oh = y.dim(1), ow = y.dim(2);
      Generator gu(61);
      const Tensor up = Tensor::uniform(y.shape(), -1.0f, 1.0f, gu).to(dtype);
      const Tensor dx = pool_grad(x, up, p);
      Tensor y2 = Tensor::zeros(y.shape(), TensorOptions{dtype, Device::cpu()});
      Tensor idx2 = Tensor::zeros(y.shape(), TensorOptions{DType::i32, Device::cpu()});
      Tensor dx2 = Tensor::zeros(x.shape(), TensorOptions{dtype, Device::cpu()});  // what no window covers stays 0
      const auto run = [&](auto tag) {
        using T = decltype(tag);
        REQUIRE(common::whole_packs<T>(c, x.raw_data()));
        const int64_t packs = y.numel() / common::Pack16<T>::n;
        for (int64_t i = 0; i < packs; ++i)
          common::max_pool_pack_at(x.data<T>(), h, w, c, oh, ow, p, i, y2.data<T>(), idx2.data<int32_t>());
        if (!common::pool_windows_overlap(p))
          for (int64_t i = 0; i < packs; ++i)
            common::max_pool_route_pack_at(up.data<T>(), idx.data<int32_t>(), h, w, c, oh, ow, p, i, dx2.data<T>());
      };
      if (dtype == DType::bf16) run(BFloat16());
      else run(0.0f);
      CHECK(f32_bits(y2) == f32_bits(y));
      CHECK(idx2.to_vector<int32_t>() == idx.to_vector<int32_t>());
      if (!common::pool_windows_overlap(p)) CHECK(f32_bits(dx2) == f32_bits(dx));
    }
  }
  CHECK_FALSE(common::whole_packs<float>(6, nullptr));  // 6 channels: no whole packs of 4
  alignas(16) float buf[8] = {};
  CHECK_FALSE(common::whole_packs<float>(4, buf + 1));  // a pixel not 16-byte aligned
}

TEST_CASE("max-pool backward on the GPU gives the CPU's bits, overlapping windows too", "[cuda][determinism]") {
  KILN_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    for (const Pool2dParams& p : pool_geometries()) {
      INFO(dtype_name(dtype) << ", kernel " << p.kernel_h << "x" << p.kernel_w << " stride " << p.stride_h);
      const Tensor x = tied_values(Shape{4, 57, 55, 64}, 50, dtype);
      const Tensor y = max_pool2d(x, p);
      Generator g(51);
      const Tensor up = Tensor::uniform(y.shape(), -1.0f, 1.0f, g).to(dtype);
      const std::vector<uint32_t> cpu = f32_bits(pool_grad(x, up, p));
      CHECK(f32_bits(pool_grad(x.to(kGpu), up.to(kGpu), p)) == cpu);
      CHECK(f32_bits(pool_grad(x.to(kGpu), up.to(kGpu), p)) == cpu);
    }
  }
}

TEST_CASE("adaptive average pooling on the GPU gives the CPU's bits, forward and backward", "[cuda][determinism]") {
  KILN_SKIP_WITHOUT_GPU();
  // VGG's pool5 to 7x7 from 2x2 (inputs repeated) and from 10x10 (windows overlap), and
  // global pooling; cuda_pool.cu is compiled without FMA contraction, as the CPU's loops.
  struct Case {
    int64_t h, oh;
  };
  for (const DType dtype : {DType::f32, DType::bf16})
    for (const Case& c : {Case{2, 7}, Case{10, 7}, Case{7, 1}, Case{13, 5}}) {
      INFO(dtype_name(dtype) << ", " << c.h << " -> " << c.oh);
      Generator g(70);
      const Tensor x = Tensor::uniform(Shape{3, c.h, c.h, 96}, -1.0f, 1.0f, g).to(dtype);
      const Tensor up = Tensor::uniform(Shape{3, c.oh, c.oh, 96}, -1.0f, 1.0f, g).to(dtype);
      const auto run = [&](Device d, std::vector<uint32_t>& y, std::vector<uint32_t>& dx) {
        Tensor xr = x.to(d).detach();
        xr.set_requires_grad(true);
        Tensor out = adaptive_avg_pool2d(xr, c.oh, c.oh);
        out.backward(up.to(d));
        y = f32_bits(out);
        dx = f32_bits(xr.grad());
      };
      std::vector<uint32_t> cy, cdx, gy, gdx;
      run(Device::cpu(), cy, cdx);
      run(kGpu, gy, gdx);
      CHECK(gy == cy);
      CHECK(gdx == cdx);
    }
}

TEST_CASE("KILN_DETERMINISTIC convolutions give the same bits every run, on both cuDNN APIs", "[cuda][determinism]") {
  KILN_SKIP_WITHOUT_GPU();
  struct Case {
    const char* name;
    Shape x, w;
    Conv2dParams p;
  };
  // Shapes where cuDNN's fastest backward-filter algorithms accumulate with atomics:
  // many images, small filters, ResNet's strided and 1x1 convolutions.
  const std::vector<Case> cases = {
      {"3x3, 128 channels", {32, 28, 28, 128}, {128, 3, 3, 128}, {1, 1, 1, 1}},
      {"1x1 expand", {32, 56, 56, 64}, {256, 1, 1, 64}, {1, 1, 0, 0}},
      {"3x3 stride 2", {32, 56, 56, 128}, {128, 3, 3, 128}, {2, 2, 1, 1}},
      {"7x7 stem, 3 channels", {16, 224, 224, 3}, {64, 7, 7, 3}, {2, 2, 3, 3}},
  };
  const test::ScopedComputeOptions restore;
  compute_options().deterministic = true;
  compute_options().exhaustive_conv_search = false;
  for (const ConvApi api : {ConvApi::legacy, ConvApi::graph}) {
    const ScopedConvApi scoped(api);
    for (const bool tf32 : {false, true}) {
      compute_options().conv_tf32 = tf32;
      for (const Case& c : cases) {
        INFO(conv_api_name(api) << (tf32 ? ", tf32, " : ", strict fp32, ") << c.name);
        Generator g(60);
        const Tensor x = Tensor::normal(c.x, 0.0f, 1.0f, g).to(kGpu), w = Tensor::normal(c.w, 0.0f, 0.1f, g).to(kGpu);
        std::vector<std::vector<uint32_t>> runs[3];
        for (int run = 0; run < 2; ++run) {
          Tensor xr = x.detach(), wr = w.detach();
          xr.set_requires_grad(true);
          wr.set_requires_grad(true);
          Tensor y = conv2d(xr, wr, Tensor(), c.p);
          Generator gu(61);
          y.backward(Tensor::normal(y.shape(), 0.0f, 1.0f, gu).to(kGpu));
          runs[0].push_back(f32_bits(y));
          runs[1].push_back(f32_bits(xr.grad()));
          runs[2].push_back(f32_bits(wr.grad()));
        }
        CHECK(runs[0][0] == runs[0][1]);  // forward
        CHECK(runs[1][0] == runs[1][1]);  // backward-data
        CHECK(runs[2][0] == runs[2][1]);  // backward-filter
      }
    }
  }
}
