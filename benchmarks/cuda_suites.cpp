#include "benchmarks/cuda_suites.h"

// No CUDA runtime calls here: cudart lives (statically) in libkiln only.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "benchmarks/bench_common.h"
#include "core/kiln.h"
#include "io/atomic_file.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_info.h"

namespace kiln::bench {
namespace {

const Device kGpu = Device::cuda(0);

using kiln::LayerPlan;
using kiln::cpubench::vgg16_plan;

// Times fn with CUDA events on the compute stream: warm-up, then `repeat` timed runs.
CudaRow time_gpu(const std::string& name, int warmup, int repeat, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  synchronize(kGpu);
  std::vector<double> ms;
  cuda::StreamTimer timer(0);
  for (int i = 0; i < repeat; ++i) {
    timer.start();
    fn();
    ms.push_back(timer.stop_ms());
  }
  std::sort(ms.begin(), ms.end());
  CudaRow r;
  r.name = name;
  r.median_ms = ms[ms.size() / 2];
  r.min_ms = ms.front();
  r.max_ms = ms.back();
  return r;
}

// Max relative difference (scaled by mean |ref|) between a GPU tensor and a CPU reference.
double rel_diff(const Tensor& gpu, const Tensor& cpu) {
  const std::vector<float> g = gpu.to_vector<float>(), c = cpu.to_vector<float>();
  double worst = 0, scale = 0;
  for (float v : c) scale += std::fabs(v);
  scale = std::max(scale / static_cast<double>(c.size()), 1e-30);
  for (size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(g[i]) - c[i]) / scale);
  return worst;
}

}  // namespace

CudaCeilings measure_cuda_ceilings() {
  CudaCeilings c;
  c.gpu = cuda::device_name(0);
  const int64_t n = 8192;
  Generator g(1);
  Tensor a = Tensor::uniform(Shape{n, n}, -1, 1, g, TensorOptions{DType::f32, kGpu});
  Tensor b = Tensor::uniform(Shape{n, n}, -1, 1, g, TensorOptions{DType::f32, kGpu});
  Tensor out = Tensor::empty(Shape{n, n}, TensorOptions{DType::f32, kGpu});
  cublasHandle_t h = cuda::cublas_handle(0);
  const float one = 1, zero = 0;
  for (bool tf32 : {false, true}) {
    KILN_CUBLAS_CHECK(cublasSetMathMode(h, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
    CudaRow r = time_gpu("gemm", 1, 3, [&] {
      KILN_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.data<float>(), n, b.data<float>(), n,
                                    &zero, out.data<float>(), n));
    });
    (tf32 ? c.tf32_gflops : c.fp32_gflops) = 2.0 * n * n * n / (r.median_ms * 1e6);
  }
  KILN_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  const int64_t bytes = int64_t{1} << 31;  // 2 GiB each way: far past the 60 MB L2
  Tensor src = Tensor::empty(Shape{bytes}, TensorOptions{DType::u8, kGpu});
  Tensor dst = Tensor::empty(Shape{bytes}, TensorOptions{DType::u8, kGpu});
  CudaRow r = time_gpu("copy", 1, 5, [&] { dst.copy_from(src); });
  c.copy_gbps = 2.0 * static_cast<double>(bytes) / (r.median_ms * 1e6);  // read + write
  return c;
}

std::vector<CudaRow> run_conv_cuda(int64_t batch, int warmup, int repeat) {
  std::vector<CudaRow> rows;
  Generator g(7);
  const Conv2dParams same{1, 1, 1, 1};
  for (const LayerPlan& l : kiln::cpubench::vgg16_convs()) {
    const int64_t c = l.in_channels, s = l.in_size, v = l.out_channels;
    const std::string& name = l.name;
    // Check one small batch of this shape against the CPU backend before timing.
    {
      Tensor xc = Tensor::normal(Shape{1, std::min<int64_t>(s, 28), std::min<int64_t>(s, 28), c}, 0, 1, g);
      Tensor wc = Tensor::normal(Shape{v, 3, 3, c}, 0, 0.05f, g);
      const double d = rel_diff(conv2d(xc.to(kGpu), wc.to(kGpu), Tensor(), same), conv2d(xc, wc, Tensor(), same));
      KILN_CHECK(d < 1e-4, "conv_cuda: ", name, " differs from the CPU by ", d, " (relative to mean |ref|)");
    }
    Tensor x = Tensor::normal(Shape{batch, s, s, c}, 0, 1, g, TensorOptions{DType::f32, kGpu});
    Tensor w = Tensor::normal(Shape{v, 3, 3, c}, 0, 0.05f, g, TensorOptions{DType::f32, kGpu});
    Tensor y = Tensor::empty(Shape{batch, s, s, v}, TensorOptions{DType::f32, kGpu});
    Tensor dy = Tensor::normal(Shape{batch, s, s, v}, 0, 1, g, TensorOptions{DType::f32, kGpu});
    Tensor dx = Tensor::empty(x.shape(), TensorOptions{DType::f32, kGpu});
    Tensor dw = Tensor::empty(w.shape(), TensorOptions{DType::f32, kGpu});
    Tensor none;
    Backend& be = backend_for(kGpu);
    const double flops = 2.0 * batch * s * s * v * 9 * c;
    CudaRow f = time_gpu(name + "/fwd", warmup, repeat, [&] { be.conv2d_forward(x, w, none, same, y); });
    CudaRow bd = time_gpu(name + "/bwd_data", warmup, repeat, [&] { be.conv2d_backward_data(dy, w, same, dx); });
    CudaRow bf = time_gpu(name + "/bwd_filter", warmup, repeat, [&] { be.conv2d_backward_filter(x, dy, same, dw, none); });
    for (CudaRow* r : {&f, &bd, &bf}) {
      r->flops = flops;
      r->note = "checked vs CPU";
      rows.push_back(*r);
    }
    // The variant: the other way of choosing cuDNN's algorithm (heuristics vs Find), timed
    // the same way; rows named "@heuristic" or "@find". Plans are cached per mode.
    {
      bool& exhaustive = compute_options().exhaustive_conv_search;
      exhaustive = !exhaustive;
      const std::string tag = exhaustive ? "@find" : "@heuristic";
      CudaRow vf = time_gpu(name + "/fwd" + tag, warmup, repeat, [&] { be.conv2d_forward(x, w, none, same, y); });
      CudaRow vd = time_gpu(name + "/bwd_data" + tag, warmup, repeat, [&] { be.conv2d_backward_data(dy, w, same, dx); });
      CudaRow vb = time_gpu(name + "/bwd_filter" + tag, warmup, repeat,
                            [&] { be.conv2d_backward_filter(x, dy, same, dw, none); });
      exhaustive = !exhaustive;
      for (CudaRow* r : {&vf, &vd, &vb}) {
        r->flops = flops;
        r->note = "variant";
        rows.push_back(*r);
      }
    }
  }
  return rows;
}

namespace {

struct Vgg16 {
  std::vector<LayerPlan::Kind> features;  // conv or pool, in order (from the plan)
  std::vector<Tensor> conv_w, conv_b;
  Tensor fc_w[3], fc_b[3];
};

Vgg16 make_vgg16(int64_t classes, Generator& g) {
  Vgg16 m;
  int fc = 0;
  for (const LayerPlan& l : vgg16_plan(classes)) {
    const int64_t c = l.in_channels, v = l.out_channels;
    if (l.kind != LayerPlan::Kind::fc) m.features.push_back(l.kind);
    if (l.kind == LayerPlan::Kind::conv) {
      m.conv_w.push_back(Tensor::normal(Shape{v, l.kernel, l.kernel, c}, 0, std::sqrt(2.0f / (9.0f * c)), g,
                                        TensorOptions{DType::f32, kGpu}));
      m.conv_b.push_back(Tensor::zeros(Shape{v}, TensorOptions{DType::f32, kGpu}));
    } else if (l.kind == LayerPlan::Kind::fc) {
      m.fc_w[fc] = Tensor::normal(Shape{v, c}, 0, std::sqrt(1.0f / c), g, TensorOptions{DType::f32, kGpu});
      m.fc_b[fc++] = Tensor::zeros(Shape{v}, TensorOptions{DType::f32, kGpu});
    }
  }
  return m;
}

Tensor vgg16_forward(const Vgg16& m, const Tensor& x, bool train, Generator& drop) {
  Tensor h = x;
  size_t k = 0;
  for (const LayerPlan::Kind kind : m.features) {
    if (kind == LayerPlan::Kind::pool) {
      h = max_pool2d(h);
    } else {
      h = relu(conv2d(h, m.conv_w[k], m.conv_b[k], Conv2dParams{1, 1, 1, 1}));
      ++k;
    }
  }
  h = flatten(h);
  h = dropout(relu(linear(h, m.fc_w[0], m.fc_b[0])), 0.5f, train, drop);
  h = dropout(relu(linear(h, m.fc_w[1], m.fc_b[1])), 0.5f, train, drop);
  return linear(h, m.fc_w[2], m.fc_b[2]);
}

std::vector<Tensor*> all_params(Vgg16& m) {
  std::vector<Tensor*> p;
  for (size_t i = 0; i < m.conv_w.size(); ++i) {
    p.push_back(&m.conv_w[i]);
    p.push_back(&m.conv_b[i]);
  }
  for (int i = 0; i < 3; ++i) {
    p.push_back(&m.fc_w[i]);
    p.push_back(&m.fc_b[i]);
  }
  return p;
}

}  // namespace

std::vector<CudaRow> run_step_cuda(int64_t batch, int warmup, int repeat) {
  std::vector<CudaRow> rows;
  Generator g(3), drop(4);
  Vgg16 m = make_vgg16(8, g);
  const LayerPlan first = vgg16_plan().front();
  Tensor x = Tensor::normal(Shape{batch, first.in_size, first.in_size, first.in_channels}, 0, 1, g,
                            TensorOptions{DType::f32, kGpu});
  std::vector<int64_t> lab(static_cast<size_t>(batch));
  for (size_t i = 0; i < lab.size(); ++i) lab[i] = static_cast<int64_t>(i % 8);
  Tensor labels = Tensor::from_vector(lab, Shape{batch}).to(kGpu);
  const double fwd_flops = kiln::cpubench::vgg16_forward_cost(batch, 8).first;

  auto record = [&](CudaRow r, double flops) {
    r.flops = flops;
    r.img_per_s = static_cast<double>(batch) / (r.median_ms / 1e3);
    r.peak_bytes = memory_stats(kGpu).peak_bytes;
    rows.push_back(r);
  };

  reset_peak_memory(kGpu);
  record(time_gpu("vgg16/forward", warmup, repeat, [&] {
           NoGradGuard ng;
           vgg16_forward(m, x, false, drop);
         }),
         fwd_flops);

  // Phase 1: conv1..fc7 frozen (no grad), fc8 trained with SGD.
  m.fc_w[2].set_requires_grad(true);
  m.fc_b[2].set_requires_grad(true);
  std::vector<Tensor*> params = all_params(m);
  auto step = [&](float lr) {
    Tensor loss = softmax_cross_entropy(vgg16_forward(m, x, true, drop), labels);
    for (Tensor* p : params) p->zero_grad();
    loss.backward();
    std::vector<SgdParamRef> refs;
    for (Tensor* p : params)
      if (p->requires_grad()) refs.push_back({*p, p->grad(), Tensor()});  // frozen ones left out
    sgd_update(refs, SgdOptions{lr});
  };
  reset_peak_memory(kGpu);
  // fc8's two gradient products on top of the forward.
  const double head_flops = 4.0 * batch * m.fc_w[2].dim(1) * m.fc_w[2].dim(0);
  record(time_gpu("vgg16/step_fc8", warmup, repeat, [&] { step(1e-3f); }), fwd_flops + head_flops);

  // Phase 2: every layer trains.
  for (Tensor* p : params) p->set_requires_grad(true);
  reset_peak_memory(kGpu);
  record(time_gpu("vgg16/step_all", warmup, repeat, [&] { step(1e-5f); }), 3.0 * fwd_flops);
  return rows;
}

}  // namespace kiln::bench

// ---------------------------------------------------------------- the driver
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace kiln::bench {
namespace {

struct PeerRow {
  double ms = 0, img_per_s = 0, peak_bytes = 0;
};

// Reads the rows of torch_cuda_peer.py's JSON: objects with "name", "ms" and optional
// "img_per_s", "peak_bytes" (a format this file and that script agree on).
std::map<std::string, PeerRow> parse_peer(const std::string& text, std::string& meta) {
  std::map<std::string, PeerRow> rows;
  auto number_after = [&](size_t from, size_t to, const std::string& key) -> double {
    const size_t k = text.find("\"" + key + "\":", from);
    if (k == std::string::npos || k > to) return 0;
    return std::strtod(text.c_str() + k + key.size() + 3, nullptr);
  };
  size_t pos = 0;
  while ((pos = text.find("\"name\":", pos)) != std::string::npos) {
    const size_t q1 = text.find('"', pos + 7), q2 = text.find('"', q1 + 1);
    const size_t end = text.find('}', q2);
    PeerRow r{number_after(q2, end, "ms"), number_after(q2, end, "img_per_s"), number_after(q2, end, "peak_bytes")};
    rows[text.substr(q1 + 1, q2 - q1 - 1)] = r;
    pos = end;
  }
  const size_t m = text.find("\"meta\":");
  if (m != std::string::npos) meta = text.substr(m + 7, text.find('}', m) - m - 6);
  return rows;
}

std::string run_peer(const std::vector<std::string>& suites, int64_t batch, int warmup, int repeat) {
  const char* py = std::getenv("KILN_PYTHON");
  const char* src = std::getenv("KILN_SOURCE_DIR");
  std::string names;
  for (const std::string& s : suites) names += (names.empty() ? "" : ",") + s;
  const std::string cmd = std::string(py ? py : "python3") + " " + (src ? src : KILN_SOURCE_DIR) +
                          "/benchmarks/torch_cuda_peer.py --batch " + std::to_string(batch) + " --warmup " +
                          std::to_string(warmup) + " --repeat " + std::to_string(repeat) + " --suites " + names +
                          " --plan " + kiln::cpubench::peer_plan_file() +
                          (compute_options().allow_tf32 ? " --tf32" : "");
  std::printf("\nrunning the PyTorch peer: %s\n", cmd.c_str());
  std::fflush(stdout);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return "";
  std::string out;
  std::array<char, 4096> buf{};
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), got);
  if (pclose(pipe) != 0) {
    std::printf("--compare: the PyTorch peer failed; kiln results only\n");
    return "";
  }
  return out;
}

}  // namespace

int cuda_main(const std::vector<std::string>& suites, int64_t batch, int warmup, int repeat, bool compare,
              const std::string& json_path) {
  if (device_count(DeviceType::cuda) == 0) {
    std::fprintf(stderr, "kiln_bench: --device cuda: no GPU found\n");
    return 1;
  }
  const CudaCeilings ceil = measure_cuda_ceilings();
  std::printf("kiln_bench --device cuda: %s, batch %lld, warmup %d, repeat %d, %s, conv algorithms by %s\n",
              ceil.gpu.c_str(), static_cast<long long>(batch), warmup, repeat,
              compute_options().allow_tf32 ? "TF32 allowed" : "strict fp32 (KILN_ALLOW_TF32=1 allows TF32)",
              compute_options().exhaustive_conv_search ? "exhaustive search (cuDNN Find)" : "cuDNN heuristics");
  std::printf("measured ceilings: fp32 GEMM %.1f TFLOP/s, TF32 GEMM %.1f TFLOP/s (cuBLAS 8192^3), copy %.0f GB/s "
              "(2 GiB device-to-device, read + write)\n",
              ceil.fp32_gflops / 1e3, ceil.tf32_gflops / 1e3, ceil.copy_gbps);
  std::vector<CudaRow> rows;
  for (const std::string& s : suites) {
    std::vector<CudaRow> r;
    if (s == "conv_cuda") r = run_conv_cuda(batch, warmup, repeat);
    else if (s == "step_cuda") r = run_step_cuda(batch, warmup, repeat);
    else {
      std::fprintf(stderr, "kiln_bench: unknown CUDA suite '%s' (have: conv_cuda, step_cuda)\n", s.c_str());
      return 2;
    }
    rows.insert(rows.end(), r.begin(), r.end());
  }
  std::map<std::string, PeerRow> peer;
  std::string meta;
  if (compare) peer = parse_peer(run_peer(suites, batch, warmup, repeat), meta);
  if (!meta.empty()) std::printf("peer: %s\n", meta.c_str());
  const double limit = compute_options().allow_tf32 ? ceil.tf32_gflops : ceil.fp32_gflops;
  std::printf("\n%-22s %10s %10s %10s %7s %9s %7s %10s %10s %12s %12s\n", "row", "kiln ms", "min", "max", "%ceil",
              "torch ms", "ratio", "kiln img/s", "torch img/s", "kiln peak MiB", "torch peak MiB");
  for (const CudaRow& r : rows) {
    const double tflops = r.flops / (r.median_ms * 1e-3) / 1e9;
    const auto it = peer.find(r.name);
    const bool has = it != peer.end() && it->second.ms > 0;
    std::printf("%-22s %10.3f %10.3f %10.3f %6.1f%% ", r.name.c_str(), r.median_ms, r.min_ms, r.max_ms,
                100.0 * tflops / limit);
    if (has) std::printf("%9.3f %7.2f ", it->second.ms, it->second.ms / r.median_ms);
    else std::printf("%9s %7s ", "-", "-");
    if (r.img_per_s > 0) {
      std::printf("%10.0f %10.0f %12.0f %12.0f", r.img_per_s, has ? it->second.img_per_s : 0.0,
                  static_cast<double>(r.peak_bytes) / 1048576.0, has ? it->second.peak_bytes / 1048576.0 : 0.0);
    }
    std::printf("\n");
  }
  std::printf("(ratio = torch ms / kiln ms: above 1 kiln is faster; %%ceil = achieved FLOP/s of the measured %s "
              "GEMM ceiling)\n", compute_options().allow_tf32 ? "TF32" : "fp32");
  std::printf("(conv rows without a suffix use this run's --conv-search; \"@find\" / \"@heuristic\" rows are the other "
              "choice, timed in the same run; kiln's library default is heuristics unless KILN_CONV_SEARCH=exhaustive)\n");
  if (!json_path.empty()) {
    std::ostringstream f;  // written whole and renamed into place (io/atomic_file.h)
    f << "{\"gpu\": \"" << ceil.gpu << "\", \"fp32_gflops\": " << ceil.fp32_gflops << ", \"tf32_gflops\": "
      << ceil.tf32_gflops << ", \"copy_gbps\": " << ceil.copy_gbps << ", \"batch\": " << batch << ", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const CudaRow& r = rows[i];
      const auto it = peer.find(r.name);
      f << (i ? ", " : "") << "{\"name\": \"" << r.name << "\", \"median_ms\": " << r.median_ms
        << ", \"min_ms\": " << r.min_ms << ", \"max_ms\": " << r.max_ms << ", \"flops\": " << r.flops
        << ", \"img_per_s\": " << r.img_per_s << ", \"peak_bytes\": " << r.peak_bytes;
      if (it != peer.end()) f << ", \"torch_ms\": " << it->second.ms << ", \"torch_peak_bytes\": " << it->second.peak_bytes;
      f << "}";
    }
    f << "]}\n";
    kiln::io::write_file_atomic(json_path, f.str());
  }
  return 0;
}

}  // namespace kiln::bench
