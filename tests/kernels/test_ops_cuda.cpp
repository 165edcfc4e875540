// The CUDA backend against the CPU backend on the same inputs, op by op (the op table),
// plus what only a GPU has: pools, streams, pinned copies, out-of-memory reports.
// Every case skips, saying so, where no GPU is found.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>

#include "check/op_cases.h"
#include "core/conv_api.h"
#include "tests/support/gpu.h"
#include "tests/support/require_close.h"

using namespace kiln;
using namespace kiln::check;

namespace {

const Device kGpu = Device::cuda(0);

struct Run {
  std::vector<double> out;
  std::vector<std::vector<double>> grads;
  std::vector<float> out_f;
  std::vector<std::vector<double>> updated;  // c.updated_inputs after the forward
};

Run run_case(const OpCase& c, Device d) {
  std::vector<Tensor> in = prepare_inputs(c, d, true);
  Tensor out = c.forward(in);
  CHECK(out.device() == d);
  std::vector<std::vector<double>> updated;
  for (size_t i : c.updated_inputs) updated.push_back(in[i].to_vector<double>());
  Generator rg(99);
  // The upstream gradient in the output's dtype (bf16 cases: the same rounded values on both).
  if (has_gradient(c)) {  // else a comparison or an integer concat, checked forward only
    Tensor up = Tensor::normal(out.shape(), 0.0f, 1.0f, rg).to(out.dtype()).to(d);
    out.backward(up);
  }
  Run r;
  r.out = out.to_vector<double>();
  r.out_f = out.to_vector<float>();
  r.updated = updated;
  for (const Tensor& t : in) r.grads.push_back(t.requires_grad() ? t.grad().to_vector<double>() : std::vector<double>{});
  return r;
}

using ConvOp = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;

// op(x, w, b) on `device` with all three trained, then backward from `up`: the output and
// the gradients of x, w and b. With `node`, the output's grad_fn must be that node.
std::vector<std::vector<double>> value_and_grads(const ConvOp& op, const Tensor& x, const Tensor& w, const Tensor& b,
                                                 const Tensor& up, Device device, const char* node) {
  std::vector<Tensor> leaves{x.to(device).detach(), w.to(device).detach(), b.to(device).detach()};
  for (Tensor& t : leaves) t.set_requires_grad(true);
  const Tensor y = op(leaves[0], leaves[1], leaves[2]);
  if (node != nullptr) {
    REQUIRE(y.grad_fn() != nullptr);
    CHECK(y.grad_fn()->name() == node);
  }
  y.backward(up.to(device));
  std::vector<std::vector<double>> out{y.to_vector<double>()};
  for (const Tensor& t : leaves) out.push_back(t.grad().to_vector<double>());
  return out;
}

// x, w and b for a 3x3, stride-1, padding-1 convolution whose every output is exact in fp32
// in any order of summation, at least 1/256 from 0, and at least 2^-12 from the other values
// of its 2x2 pooling window. The CPU and the GPU then agree on every ReLU mask and max-pool
// argmax: summed in another order, a value within ~1e-6 of 0 or of its neighbour could
// flip one, and a flip moves gradients far past any tolerance (a few percent of seeds).
// x and w: multiples of 1/8 in [-1/2, 1/2]; x's last channel codes the position in its 2x2
// window (1..4 times 2^-12), which w's centre tap alone reads; b: 1/128 off the 1/64 grid.
struct ExactConv {
  Tensor x, w, b;
};
ExactConv exact_conv_inputs(int64_t n, int64_t h, int64_t wd, int64_t c, int64_t o, Generator& g) {
  const auto eighths = [&](const Shape& s) {
    std::vector<float> v = Tensor::uniform(s, 0.0f, 9.0f, g).to_vector<float>();
    for (float& e : v) e = (std::floor(e) - 4.0f) / 8.0f;
    return v;
  };
  std::vector<float> x = eighths(Shape{n, h, wd, c}), w = eighths(Shape{o, 3, 3, c});
  for (int64_t i = 0; i < n * h * wd; ++i) {
    const int64_t row = (i / wd) % h, col = i % wd;
    x[i * c + c - 1] = static_cast<float>(1 + 2 * (row % 2) + col % 2) / 4096.0f;
  }
  for (int64_t i = 0; i < o * 9; ++i) w[i * c + c - 1] = i % 9 == 4 ? 1.0f : 0.0f;  // tap (1, 1) of 3x3
  std::vector<float> b = Tensor::uniform(Shape{o}, 0.0f, 64.0f, g).to_vector<float>();
  for (float& e : b) e = (std::floor(e) - 32.0f) / 64.0f + 1.0f / 128.0f;
  return {Tensor::from_vector(x, Shape{n, h, wd, c}), Tensor::from_vector(w, Shape{o, 3, 3, c}),
          Tensor::from_vector(b, Shape{o})};
}

// Every case of `dtype`, forward and gradients, on the GPU against the CPU's run.
void compare_backends(DType dtype, double rtol_scale) {
  for (const OpCase& c : all_op_cases()) {
    if (c.dtype != dtype) continue;
    DYNAMIC_SECTION(c.name) {
      const Run cpu = run_case(c, Device::cpu()), gpu = run_case(c, kGpu);
      const double rtol = c.rtol * rtol_scale;
      INFO("forward");
      KILN_REQUIRE_CLOSE(gpu.out, cpu.out, rtol * mean_abs(cpu.out), rtol);
      if (c.op == "dropout") CHECK(std::memcmp(gpu.out_f.data(), cpu.out_f.data(), cpu.out_f.size() * 4) == 0);
      for (size_t i = 0; i < c.inputs.size(); ++i) {
        if (!c.differentiable[i]) continue;
        INFO("gradient of input " << i);
        KILN_REQUIRE_CLOSE(gpu.grads[i], cpu.grads[i], rtol * mean_abs(cpu.grads[i]), rtol);
      }
      for (size_t u = 0; u < c.updated_inputs.size(); ++u) {
        INFO("input " << c.updated_inputs[u] << " as the op left it (updated in place)");
        KILN_REQUIRE_CLOSE(gpu.updated[u], cpu.updated[u], rtol * mean_abs(cpu.updated[u]), rtol);
      }
    }
  }
}

}  // namespace

TEST_CASE("every op on the GPU matches the CPU backend in fp32", "[cuda][ops]") {
  KILN_SKIP_WITHOUT_GPU();
  compare_backends(DType::f32, 1.0);
}

// Every bf16 case, forward and backward, against the CPU's bf16 run at the case's
// tolerance: the kRtolExact ones bit for bit (relu, max-pool without overlap, dropout with
// the CPU's mask, the cast round trip).
TEST_CASE("the op table's bf16 cases on the GPU match the CPU's bf16 forward and gradients", "[cuda][ops][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  compare_backends(DType::bf16, 1.0);
}

TEST_CASE("with TF32 allowed, conv and GEMM stay within 3e-3 of the CPU", "[cuda][ops][tf32]") {
  KILN_SKIP_WITHOUT_GPU();
  const test::ScopedComputeOptions restore;
  compute_options().conv_tf32 = true;
  compute_options().matmul_tf32 = true;
  Generator g(4);
  Tensor x = Tensor::normal(Shape{4, 14, 14, 64}, 0, 1, g), w = Tensor::normal(Shape{32, 3, 3, 64}, 0, 0.1f, g);
  Tensor b = Tensor::normal(Shape{32}, 0, 1, g);
  const std::vector<double> cpu = conv2d(x, w, b, Conv2dParams{1, 1, 1, 1}).to_vector<double>();
  const std::vector<double> gpu = conv2d(x.to(kGpu), w.to(kGpu), b.to(kGpu), Conv2dParams{1, 1, 1, 1}).to_vector<double>();
  KILN_REQUIRE_CLOSE(gpu, cpu, check::kRtolTf32 * mean_abs(cpu), check::kRtolTf32);
  Tensor a = Tensor::normal(Shape{64, 512}, 0, 1, g), m = Tensor::normal(Shape{256, 512}, 0, 0.05f, g);
  const std::vector<double> lc = linear(a, m).to_vector<double>();
  const std::vector<double> lg = linear(a.to(kGpu), m.to(kGpu)).to_vector<double>();
  KILN_REQUIRE_CLOSE(lg, lc, check::kRtolTf32 * mean_abs(lc), check::kRtolTf32);
}

TEST_CASE("VGG-sized conv and linear on the GPU match the CPU within 1e-4", "[cuda][ops]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(8);
  Tensor x = Tensor::normal(Shape{2, 28, 28, 256}, 0, 1, g).set_requires_grad(true);
  Tensor w = Tensor::normal(Shape{512, 3, 3, 256}, 0, 0.02f, g).set_requires_grad(true);
  Tensor b = Tensor::normal(Shape{512}, 0, 0.1f, g).set_requires_grad(true);
  Tensor xg = x.to(kGpu).detach().set_requires_grad(true), wg = w.to(kGpu).detach().set_requires_grad(true),
         bg = b.to(kGpu).detach().set_requires_grad(true);
  Tensor up = Tensor::normal(Shape{2, 28, 28, 512}, 0, 1, g);
  Tensor yc = conv2d(x, w, b, Conv2dParams{1, 1, 1, 1}), yg = conv2d(xg, wg, bg, Conv2dParams{1, 1, 1, 1});
  yc.backward(up);
  yg.backward(up.to(kGpu));
  for (auto [gpu, cpu] : {std::pair{yg, yc}, std::pair{xg.grad(), x.grad()}, std::pair{wg.grad(), w.grad()},
                          std::pair{bg.grad(), b.grad()}}) {
    const std::vector<double> c = cpu.to_vector<double>(), d = gpu.to_vector<double>();
    KILN_REQUIRE_CLOSE(d, c, 1e-4 * mean_abs(c), 1e-4);
  }
  Tensor f = Tensor::normal(Shape{16, 25088}, 0, 1, g), fw = Tensor::normal(Shape{4096, 25088}, 0, 0.01f, g);
  Tensor fb = Tensor::normal(Shape{4096}, 0, 0.1f, g);
  const std::vector<double> c = linear(f, fw, fb).to_vector<double>();
  const std::vector<double> d = linear(f.to(kGpu), fw.to(kGpu), fb.to(kGpu)).to_vector<double>();
  KILN_REQUIRE_CLOSE(d, c, 1e-4 * mean_abs(c), 1e-4);
}

TEST_CASE("conv2d_relu on the GPU (bias and ReLU in one pass) equals relu(conv2d) there bit for bit",
          "[cuda][conv][fused]") {
  KILN_SKIP_WITHOUT_GPU();
  // The legacy API's path; the graph API's fused plan rounds once and may take another
  // engine (test_conv_graph_cuda.cpp compares it within a tolerance).
  const ScopedConvApi legacy(ConvApi::legacy);
  Generator g(33);
  for (const DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    // NaN and -0 bias entries: the fused pass must map them as relu(y + b) does.
    std::vector<float> bias = Tensor::normal(Shape{64}, 0, 0.5f, g).to_vector<float>();
    bias[3] = -0.0f;
    bias[7] = std::nanf("");
    const Tensor x = Tensor::normal(Shape{4, 30, 29, 32}, 0, 1, g).to(dt).to(kGpu);
    const Tensor w = Tensor::normal(Shape{64, 3, 3, 32}, 0, 0.1f, g).to(dt).to(kGpu);
    const Tensor b = Tensor::from_vector(bias, Shape{64}).to(dt).to(kGpu);
    for (const Conv2dParams& p : {Conv2dParams{1, 1, 1, 1}, Conv2dParams{2, 1, 0, 1}}) {
      const std::vector<float> fused = conv2d_relu(x, w, b, p).to(DType::f32).to_vector<float>();
      const std::vector<float> apart = relu(conv2d(x, w, b, p)).to(DType::f32).to_vector<float>();
      REQUIRE(fused.size() == apart.size());
      CHECK(std::memcmp(fused.data(), apart.data(), fused.size() * 4) == 0);
    }
  }
}

TEST_CASE("a trained conv2d_relu on the GPU is one fused node whose gradients match relu(conv2d)'s",
          "[cuda][conv][fused]") {
  KILN_SKIP_WITHOUT_GPU();
  // Deterministic algorithms (which need heuristic search, whatever KILN_CONV_SEARCH says):
  // the unfused runs below must give the same bits twice.
  test::ScopedComputeOptions restore;
  compute_options().deterministic = true;
  compute_options().exhaustive_conv_search = false;
  Generator g(34);
  const auto [x, w, b] = exact_conv_inputs(4, 30, 29, 32, 64, g);
  const Conv2dParams p{1, 1, 1, 1};
  const Tensor up = Tensor::normal(Shape{4, 30, 29, 64}, 0, 1, g);
  // y and the gradients of x, w and b, from conv2d_relu (fused) or relu(conv2d) on `device`.
  const auto run = [&](Device device, bool fused) {
    const ConvOp fused_op = [&](const Tensor& a, const Tensor& k, const Tensor& c) { return conv2d_relu(a, k, c, p); };
    const ConvOp apart = [&](const Tensor& a, const Tensor& k, const Tensor& c) { return relu(conv2d(a, k, c, p)); };
    return value_and_grads(fused ? fused_op : apart, x, w, b, up, device,
                           fused && device == kGpu ? "conv2d_relu" : nullptr);
  };
  const std::vector<std::vector<double>> cpu = run(Device::cpu(), false);
  for (const auto& [api, fuse] : {std::pair{ConvApi::legacy, true}, {ConvApi::graph, true}, {ConvApi::graph, false}}) {
    INFO(conv_api_name(api) << (fuse ? "" : ", KILN_CONV_FUSE=0"));
    const ScopedConvApi scoped(api);
    const ScopedConvFuse scoped_fuse(fuse);
    const ConvApiCounts before = conv_api_counts();
    const std::vector<std::vector<double>> fused = run(kGpu, true);
    if (!fuse) CHECK(conv_api_counts().fused_runs == before.fused_runs);  // no fused graph asked for
    // Unfused (the legacy API, or fusion off), the node runs the convolution, then bias and
    // ReLU in one pass, as relu(conv2d) runs them in two: the same bits.
    if (api == ConvApi::legacy || !fuse) CHECK(fused == run(kGpu, false));
    for (size_t i = 0; i < cpu.size(); ++i) {
      INFO("output " << i << " (y, dx, dw, db)");
      KILN_REQUIRE_CLOSE(fused[i], cpu[i], 1e-4 * mean_abs(cpu[i]), 1e-4);
    }
  }
}

TEST_CASE("conv2d_relu_max_pool2d on the GPU is one node whose values and gradients match the CPU's",
          "[cuda][conv][fused]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(35);
  const auto [x, w, b] = exact_conv_inputs(4, 30, 28, 32, 64, g);
  const Conv2dParams cp{1, 1, 1, 1};
  const Pool2dParams pp{};  // VGG's 2x2, stride 2
  const Tensor up = Tensor::normal(Shape{4, 15, 14, 64}, 0, 1, g);
  const auto run = [&](Device device) {
    return value_and_grads(
        [&](const Tensor& a, const Tensor& k, const Tensor& c) { return conv2d_relu_max_pool2d(a, k, c, cp, pp); }, x,
        w, b, up, device, "conv2d_relu_max_pool2d");
  };
  const std::vector<std::vector<double>> cpu = run(Device::cpu());
  for (const ConvApi api : {ConvApi::legacy, ConvApi::graph}) {
    INFO(conv_api_name(api));
    const ScopedConvApi scoped(api);
    const std::vector<std::vector<double>> gpu = run(kGpu);
    for (size_t i = 0; i < cpu.size(); ++i) {
      INFO("output " << i << " (pooled y, dx, dw, db)");
      KILN_REQUIRE_CLOSE(gpu[i], cpu[i], 1e-4 * mean_abs(cpu[i]), 1e-4);
    }
  }
}

TEST_CASE("a copy between devices is differentiable: the gradient returns to the input's device", "[cuda][autograd]") {
  KILN_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3}, Shape{3});
  x.set_requires_grad(true);
  Tensor y = x.to(kGpu);
  CHECK(y.requires_grad());
  sum(mul(y, 2.0f)).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().device().is_cpu());
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
}

TEST_CASE("GPU dropout masks equal the CPU's for the same seed and offset", "[cuda][dropout]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator a(31), b(31);
  Tensor x = Tensor::ones(Shape{1001, 37});
  const std::vector<float> cpu = dropout(x, 0.5f, true, a).to_vector<float>();
  const std::vector<float> gpu = dropout(x.to(kGpu), 0.5f, true, b).to_vector<float>();
  REQUIRE(std::memcmp(cpu.data(), gpu.data(), cpu.size() * sizeof(float)) == 0);
}

TEST_CASE("cumsum on the GPU gives the CPU's bits forward and backward", "[cuda][ops]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(4);
  const auto bits = [](const Tensor& t) { return t.cpu().to(DType::f32).to_vector<float>(); };
  struct Case {
    Shape shape;
    int64_t dim;
  };
  // Long rows (a thread each), lines along a middle dimension, and along the first.
  for (const Case& c : {Case{Shape{5, 1000}, 1}, Case{Shape{3, 40, 257}, 1}, Case{Shape{700, 3}, 0}})
    for (const DType dt : {DType::f32, DType::bf16}) {
      INFO(c.shape << " dim " << c.dim << " " << dtype_name(dt));
      const Tensor x = Tensor::normal(c.shape, 0.0f, 1.0f, g).to(dt);
      const Tensor up = Tensor::normal(c.shape, 0.0f, 1.0f, g).to(dt);
      Tensor xc = x.clone().set_requires_grad(true), xg = x.to(kGpu).set_requires_grad(true);
      const Tensor yc = cumsum(xc, c.dim), yg = cumsum(xg, c.dim);
      yc.backward(up);
      yg.backward(up.to(kGpu));
      const std::vector<float> fc = bits(yc), fg = bits(yg), gc = bits(xc.grad()), gg = bits(xg.grad());
      CHECK(std::memcmp(fc.data(), fg.data(), fc.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(gc.data(), gg.data(), gc.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("GPU SGD matches the CPU over many odd-sized tensors and writes nothing it was not given", "[cuda][sgd]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(12);
  std::vector<Tensor> cpu_p, gpu_p, cpu_g, gpu_g, cpu_v, gpu_v;
  std::vector<bool> left_out;
  // Many tensors of odd sizes: more than one launch's worth, with tensors the update is not
  // given (as an optimizer leaves frozen parameters out) allocated between them.
  for (int i = 0; i < 70; ++i) {
    const int64_t n = 1 + (i * 7919) % 5000;
    Tensor p = Tensor::normal(Shape{n}, 0, 1, g), gr = Tensor::normal(Shape{n}, 0, 1, g), v = Tensor::normal(Shape{n}, 0, 1, g);
    cpu_p.push_back(p.clone());
    gpu_p.push_back(p.to(kGpu));
    cpu_g.push_back(gr);
    gpu_g.push_back(gr.to(kGpu));
    cpu_v.push_back(v.clone());
    gpu_v.push_back(v.to(kGpu));
    left_out.push_back(i % 3 == 1);
  }
  std::vector<Tensor> before;
  for (const Tensor& p : gpu_p) before.push_back(p.cpu());
  std::vector<SgdParamRef> rc, rg;
  for (size_t i = 0; i < cpu_p.size(); ++i) {
    if (left_out[i]) continue;
    rc.push_back({cpu_p[i], cpu_g[i], cpu_v[i]});
    rg.push_back({gpu_p[i], gpu_g[i], gpu_v[i]});
  }
  const SgdOptions o{0.01f, 0.9f, 5e-4f, true};
  sgd_update(rc, o);
  sgd_update(rg, o);
  for (size_t i = 0; i < cpu_p.size(); ++i) {
    const std::vector<float> now = gpu_p[i].to_vector<float>();
    if (left_out[i]) {
      const std::vector<float> was = before[i].to_vector<float>();
      REQUIRE(std::memcmp(now.data(), was.data(), was.size() * 4) == 0);
    } else {
      KILN_REQUIRE_CLOSE(gpu_p[i].to_vector<double>(), cpu_p[i].to_vector<double>(), 1e-6, 1e-5);
      KILN_REQUIRE_CLOSE(gpu_v[i].to_vector<double>(), cpu_v[i].to_vector<double>(), 1e-6, 1e-5);
    }
  }
}

TEST_CASE("copies round-trip through the GPU in every dtype, blocking and from pinned memory", "[cuda][memory]") {
  KILN_SKIP_WITHOUT_GPU();
  for (DType t : kDTypes) {
    Tensor h = Tensor::arange(200, 0, 1, TensorOptions{t});  // 200 fits every dtype exactly
    CHECK(h.to(kGpu).cpu().to_vector<int64_t>() == h.to_vector<int64_t>());
    CHECK(h.to(kGpu).to(DType::f32).cpu().to_vector<float>() == h.to(DType::f32).to_vector<float>());
  }
  Tensor pinned = Tensor::empty(Shape{1 << 20}, TensorOptions{DType::f32, Device::cpu(), true});
  REQUIRE(pinned.is_pinned());
  pinned.copy_from(Tensor::arange(1 << 20));
  Tensor d = Tensor::empty(Shape{1 << 20}, TensorOptions{DType::f32, kGpu});
  d.copy_from(pinned, /*non_blocking=*/true);
  Tensor back = Tensor::empty(Shape{1 << 20}, TensorOptions{DType::f32, Device::cpu(), true});
  back.copy_from(mul(d, 2.0f), /*non_blocking=*/true);
  synchronize(kGpu);
  const std::vector<float> v = back.to_vector<float>();
  for (size_t i = 0; i < v.size(); i += 4097) REQUIRE(v[i] == 2.0f * static_cast<float>(i));
}

TEST_CASE("a training step in steady state takes no new memory from the driver", "[cuda][memory]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(2);
  Tensor w1 = Tensor::normal(Shape{16, 3, 3, 3}, 0, 0.2f, g).to(kGpu).set_requires_grad(true);
  Tensor w2 = Tensor::normal(Shape{10, 16 * 8 * 8}, 0, 0.05f, g).to(kGpu).set_requires_grad(true);
  Tensor x = Tensor::normal(Shape{32, 16, 16, 3}, 0, 1, g).to(kGpu);
  std::vector<int64_t> l(32);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<int64_t>(i % 10);
  Tensor y = Tensor::from_vector(l, Shape{32}).to(kGpu);
  std::vector<int64_t> reserved;
  for (int step = 0; step < 6; ++step) {
    w1.zero_grad();
    w2.zero_grad();
    Tensor loss = softmax_cross_entropy(linear(flatten(max_pool2d(relu(conv2d(x, w1, Tensor(), Conv2dParams{1, 1, 1, 1})))), w2), y);
    loss.backward();
    std::vector<SgdParamRef> refs = {{w1, w1.grad(), Tensor()}, {w2, w2.grad(), Tensor()}};
    sgd_update(refs, SgdOptions{0.01f});
    synchronize(kGpu);
    reserved.push_back(memory_stats(kGpu).reserved_bytes);
  }
  const MemoryStats s = memory_stats(kGpu);
  CHECK(s.peak_bytes >= s.current_bytes);
  CHECK(s.current_bytes > 0);
  CHECK(reserved[2] == reserved[5]);
}

TEST_CASE("out-of-memory on the GPU says how much was asked for and how much is free", "[cuda][errors]") {
  KILN_SKIP_WITHOUT_GPU();
  REQUIRE_THROWS_WITH(Tensor::empty(Shape{int64_t{1} << 48}, TensorOptions{DType::f32, kGpu}),
                      Catch::Contains("out of memory") && Catch::Contains("asked for") && Catch::Contains("free"));
  // The device is still usable afterwards.
  CHECK(Tensor::ones(Shape{4}, TensorOptions{DType::f32, kGpu}).cpu().to_vector<float>() == std::vector<float>(4, 1.0f));
}

TEST_CASE("out-of-range labels on the GPU are reported like on the CPU", "[cuda][errors]") {
  KILN_SKIP_WITHOUT_GPU();
  Tensor logits = Tensor::zeros(Shape{3, 4}, TensorOptions{DType::f32, kGpu});
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 4, 1}, Shape{3}).to(kGpu);
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, labels), Catch::Contains("label 4") && Catch::Contains("row 1"));
}

// The GPU kernels check each index as they read it and report the first bad position through a
// device flag (kernels/cuda/cuda_elementwise.cu): the same messages as the CPU's, every path.
TEST_CASE("indices outside their dimension on the GPU are reported like on the CPU", "[cuda][errors]") {
  KILN_SKIP_WITHOUT_GPU();
  const auto gpu = [](const Tensor& t) { return t.to(kGpu); };
  const int64_t n = 100000;
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i % 3;
  v[n - 3] = 3;  // the first bad one
  v[n - 1] = -1;
  const Tensor rows = gpu(Tensor::from_vector(v, Shape{n}));
  const std::string at = "at position " + std::to_string(n - 3) + " ";
  const auto named = [&](const char* op) { return Catch::Contains(std::string(op) + ": index 3 " + at); };
  const Tensor x = gpu(Tensor::zeros(Shape{3, 5}));
  REQUIRE_THROWS_WITH(index_select(x, 0, rows), named("index_select"));
  REQUIRE_THROWS_WITH(index_select(gpu(Tensor::zeros(Shape{2, 3})), 1, rows.to(DType::i32)), named("index_select"));
  REQUIRE_THROWS_WITH(embedding(x, rows), named("embedding"));
  REQUIRE_THROWS_WITH(gather(gpu(Tensor::zeros(Shape{3})), 0, rows), named("gather"));
  REQUIRE_THROWS_WITH(index_add(x, 0, rows, gpu(Tensor::ones(Shape{n, 5}))), named("index_add"));
  REQUIRE_THROWS_WITH(scatter_add(gpu(Tensor::zeros(Shape{3})), 0, rows, gpu(Tensor::ones(Shape{n}))),
                      named("scatter_add"));
  // The device is still usable afterwards: nothing was written outside.
  CHECK(index_select(x, 0, gpu(Tensor::from_vector(std::vector<int64_t>{2, 0}, Shape{2}))).cpu().to_vector<float>() ==
        std::vector<float>(10, 0.0f));
}

TEST_CASE("a seed gradient on another device than the tensor backward starts from is refused", "[cuda][autograd]") {
  KILN_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::ones(Shape{2, 3}).to(kGpu);
  x.set_requires_grad(true);
  const Tensor y = mul(x, 2.0f);
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones(Shape{2, 3})),
                      Catch::Contains("seed gradient float32[2, 3] on cpu does not match") &&
                          Catch::Contains("device must agree"));
}
