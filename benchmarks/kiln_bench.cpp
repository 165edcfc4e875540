// kiln_bench: benchmarks that check each kernel against a double-precision reference
// before timing it, and report the time against this machine's own measured limits (an
// fp32 sgemm peak and a copy bandwidth) and, with --compare, against PyTorch on the same
// shapes. Suites live in one table (kSuites); a suite returns rows, and a suite with a
// peer script is compared row by row, by name.
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(KILN_HAS_CUDA)
#include "benchmarks/cuda_suites.h"
#endif
#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace {

using kiln::Shape;
using kiln::Tensor;

// ---------------------------------------------------------------- options

struct Options {
  std::string suite = "vgg16_forward";
  int64_t batch = 8;
  int repeat = 5;
  int warmup = 1;
  int threads = 2;
  std::string json_path;
  bool compare = false;
  std::string device = "cpu";
  std::string conv_search = "exhaustive";  // CUDA suites: as PyTorch's cudnn.benchmark = True
};

const char* kUsage =
    "usage: kiln_bench [--device cpu|cuda] [--suite NAME[,NAME]] [--batch N] [--repeat N]\n"
    "                  [--warmup N] [--threads N] [--json FILE] [--compare] [--list]\n"
    "  --device   cpu (default): the CPU suites; cuda: the GPU suites conv_cuda, step_cuda\n"
    "  --conv-search  CUDA suites: exhaustive (default; cuDNN Find, as PyTorch's cudnn.benchmark)\n"
    "             or heuristic (kiln's library default)\n"
    "  --suite    which benchmark to run (default vgg16_forward; --list shows them)\n"
    "  --batch    batch size (default 8)\n"
    "  --repeat   timed runs per row, at least; rows under 200 ms in all run until 200 ms\n"
    "             are measured; the median and min/max are reported (default 5)\n"
    "  --warmup   untimed runs before timing (default 1)\n"
    "  --threads  OpenMP threads for kiln, oneDNN and the PyTorch peer (default 2)\n"
    "  --json     also write the results as JSON to FILE\n"
    "  --compare  run the suite's PyTorch peer script in the same run and print ratios\n"
    "             (interpreter: $KILN_PYTHON, else /usr/bin/python3)\n";

// ---------------------------------------------------------------- timing

struct Stats {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  // Share of the machine's CPU time that other processes took while this was timed. The
  // cores may be shared: a time measured beside someone else's compile is not kiln's.
  double other_load = 0;
  int runs = 0;
};

Stats summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  return Stats{median, ms.front(), ms.back(), 0, static_cast<int>(n)};
}

// Short kernels are run until this much time is measured (at most kMaxRuns runs): their
// median gets more samples, and the load check (10 ms clock ticks) gets enough of them.
constexpr double kMinTimedMs = 200.0;
constexpr int kMaxRuns = 1000;

// Loads above this mark a timing as disturbed.
constexpr double kDisturbed = 0.10;

// Clock ticks of the whole machine (/proc/stat) and of this process (/proc/self/stat).
struct CpuTicks {
  long long busy = 0, total = 0, self = 0;
  bool ok = false;
};

CpuTicks cpu_ticks() {
  CpuTicks t;
  std::ifstream st("/proc/stat");
  std::string cpu;
  std::array<long long, 8> v{};  // user nice system idle iowait irq softirq steal
  st >> cpu;
  for (long long& x : v) st >> x;
  if (!st || cpu != "cpu") return t;
  for (const long long x : v) t.total += x;
  t.busy = t.total - v[3] - v[4];
  std::ifstream ss("/proc/self/stat");
  std::string line;
  std::getline(ss, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return t;
  std::istringstream is(line.substr(close + 2));  // from field 3 (state) on
  std::string skip;
  for (int field = 3; field < 14; ++field) is >> skip;
  long long utime = 0, stime = 0;
  is >> utime >> stime;
  if (!is) return t;
  t.self = utime + stime;
  t.ok = true;
  return t;
}

double other_load(const CpuTicks& a, const CpuTicks& b) {
  if (!a.ok || !b.ok || b.total <= a.total) return 0;
  const long long other = (b.busy - a.busy) - (b.self - a.self);
  return std::max(0.0, static_cast<double>(other) / static_cast<double>(b.total - a.total));
}

// Runs fn warmup times untimed, then at least repeat times (more for short kernels, see
// kMinTimedMs), each run timed on its own.
Stats time_it(int warmup, int repeat, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(repeat));
  const CpuTicks before = cpu_ticks();
  double total_ms = 0;
  for (int i = 0; i < repeat || (total_ms < kMinTimedMs && i < kMaxRuns); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    total_ms += ms.back();
  }
  Stats s = summarize(std::move(ms));
  s.other_load = other_load(before, cpu_ticks());
  return s;
}

// ---------------------------------------------------------------- machine limits

struct MachineLimits {
  std::string cpu;
  int threads = 0;
  double peak_gflops = 0;    // best fp32 sgemm rate
  double bandwidth_gbs = 0;  // best copy rate, bytes read + written
  std::string sgemm_shape;
  std::string copy_size;
  std::string loadavg;  // /proc/loadavg at start: other work on the machine skews everything
  double other_load = 0;  // the larger of the two measurements' Stats::other_load
};

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// The roofs every row is measured against: what this machine does at its best, measured
// now, by oneDNN's sgemm (row-major) and a multi-threaded copy.
MachineLimits measure_limits(int threads, int repeat) {
  MachineLimits m;
  m.cpu = cpu_model();
  if (std::ifstream f("/proc/loadavg"); f) {
    double one = 0, five = 0, fifteen = 0;
    f >> one >> five >> fifteen;
    std::ostringstream os;
    os << one << " " << five << " " << fifteen;
    m.loadavg = os.str();
  }
  m.threads = threads;
  const int reps = std::max(3, repeat);

  const int64_t n = 2048;
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    a[i] = static_cast<float>((i % 7) - 3) * 0.01f;
    b[i] = static_cast<float>((i % 5) - 2) * 0.01f;
  }
  const auto sgemm = [&] {
    const dnnl_status_t st = dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    if (st != dnnl_success) throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(st));
  };
  const Stats g = time_it(1, reps, sgemm);
  // A peak from a wrong product is no peak: a few elements against a double reference.
  for (const auto& [i, j] : {std::pair<int64_t, int64_t>{0, 0}, {n - 1, n - 1}, {7, 1000}}) {
    double ref = 0, scale = 0;
    for (int64_t k = 0; k < n; ++k) {
      ref += static_cast<double>(a[i * n + k]) * b[k * n + j];
      scale += std::fabs(static_cast<double>(a[i * n + k]) * b[k * n + j]);
    }
    if (std::fabs(c[i * n + j] - ref) > 1e-6 + 1e-5 * scale)
      throw std::runtime_error("dnnl_sgemm gave c[" + std::to_string(i) + "," + std::to_string(j) + "] = " +
                               std::to_string(c[i * n + j]) + ", expected " + std::to_string(ref));
  }
  m.peak_gflops = 2.0 * n * n * n / (g.min_ms * 1e-3) / 1e9;
  m.sgemm_shape = "sgemm 2048x2048x2048";

  // 256 MiB each way: far beyond the last-level cache.
  const size_t bytes = size_t{256} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const auto copy = [&] {
#pragma omp parallel num_threads(threads)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
      const size_t begin = bytes * t / nt, end = bytes * (t + 1) / nt;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
  };
  const Stats bw = time_it(1, reps, copy);
  m.bandwidth_gbs = 2.0 * static_cast<double>(bytes) / (bw.min_ms * 1e-3) / 1e9;
  m.copy_size = "memcpy 256 MiB";
  m.other_load = std::max(g.other_load, bw.other_load);
  return m;
}

// ---------------------------------------------------------------- rows and results

// One checked, timed kernel (or a whole forward pass).
struct Row {
  std::string name;
  std::string kind;   // conv, pool, fc, net
  std::string shape;  // what it computes, e.g. "[8,224,224,3] -> [8,224,224,64]"
  double flops = 0;   // useful floating-point operations of one run
  double bytes = 0;   // minimum memory traffic of one run (inputs, weights, outputs)
  bool checked = false;
  bool check_ok = false;
  std::string check;  // what the check found, for people
  double check_budget = 0;  // worst |out - ref| / tolerance over the checked elements
  bool timed = false;
  Stats t;
};

struct SuiteResult {
  std::vector<Row> rows;
  std::vector<std::pair<std::string, double>> summary;  // e.g. forward_img_per_s
  bool all_checks_ok = true;
};

double gflops(const Row& r) { return r.timed ? r.flops / (r.t.median_ms * 1e-3) / 1e9 : 0; }
double gbs(const Row& r) { return r.timed ? r.bytes / (r.t.median_ms * 1e-3) / 1e9 : 0; }

// The fraction of the roofline: the attainable rate is min(peak, intensity * bandwidth),
// so a memory-bound row (a pool, an fc at small batch) is judged against the bandwidth.
double roof_fraction(const Row& r, const MachineLimits& m) {
  if (!r.timed || r.bytes <= 0) return 0;
  const double attainable = std::min(m.peak_gflops, r.flops / r.bytes * m.bandwidth_gbs);
  if (attainable <= 0) return gbs(r) / m.bandwidth_gbs;
  return gflops(r) / attainable;
}

const char* bound_of(const Row& r, const MachineLimits& m) {
  return r.flops / r.bytes * m.bandwidth_gbs < m.peak_gflops ? "mem" : "flop";
}

void print_table_header() {
  std::printf("%-10s %-34s %9s %9s %9s %8s %6s %7s %5s %5s %5s  %s\n", "layer", "shape", "median ms", "min ms",
              "max ms", "GFLOP/s", "%peak", "GB/s", "bound", "%roof", "other", "check");
}

void print_row(const Row& r, const MachineLimits& m) {
  std::string check = r.checked ? (r.check_ok ? "ok" : "FAILED") : "-";
  if (r.checked) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " (%.2g)", r.check_budget);
    check += buf;
  }
  if (!r.timed) {
    std::printf("%-10s %-34s %9s %9s %9s %8s %6s %7s %5s %5s %5s  %s\n", r.name.c_str(), r.shape.c_str(), "-", "-",
                "-", "-", "-", "-", "-", "-", "-", check.c_str());
    return;
  }
  std::printf("%-10s %-34s %9.3f %9.3f %9.3f %8.1f %5.1f%% %7.2f %5s %4.0f%% %4.0f%%%s %s\n", r.name.c_str(),
              r.shape.c_str(), r.t.median_ms, r.t.min_ms, r.t.max_ms, gflops(r), 100.0 * gflops(r) / m.peak_gflops,
              gbs(r), bound_of(r, m), 100.0 * roof_fraction(r, m), 100.0 * r.t.other_load,
              r.t.other_load > kDisturbed ? "!" : " ", check.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------- checking

// |out - ref| <= atol + rtol * scale, where scale is sum |terms| of the reference sum
// (so cancellation does not shrink the budget). Records the worst element and how much
// of its budget it used.
struct Checker {
  Checker(double atol_, double rtol_) : atol(atol_), rtol(rtol_) {}
  double atol, rtol;
  double worst_budget = 0;
  std::string worst;
  int64_t checked = 0;
  int64_t failed = 0;

  void compare(double out, double ref, double scale, const std::string& where) {
    ++checked;
    const double tol = atol + rtol * scale;
    const double err = std::fabs(out - ref);
    const double used = std::isfinite(out) ? err / tol : INFINITY;
    if (used > 1.0) ++failed;
    if (used > worst_budget || worst.empty()) {
      worst_budget = used;
      std::ostringstream os;
      os << where << ": got " << out << ", reference " << ref << ", |diff| " << err << ", tolerance " << tol;
      worst = os.str();
    }
  }
  void finish(Row& row) const {
    row.checked = true;
    row.check_ok = failed == 0 && checked > 0;
    row.check_budget = worst_budget;
    std::ostringstream os;
    os << checked << " elements, " << failed << " outside tolerance; worst " << worst;
    row.check = os.str();
  }
};

// Host view of a tensor's floats: the tensor itself when it already lives on the host.
const float* host_floats(const Tensor& t, Tensor& keep) {
  keep = t.cpu();
  return keep.data<float>();
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (int64_t i = 0; i < s.rank(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

// ---------------------------------------------------------------- vgg16_forward

// VGG16 at inference: 13 conv3x3 (+bias, +relu), 5 max-pools 2x2/2, 3 fc layers.
struct VggLayer {
  enum class Kind { conv, pool, fc } kind;
  std::string name;
  int64_t h = 0, w = 0, c_in = 0, c_out = 0;  // conv/pool: input map; fc: in -> out
  bool relu = true;
  Tensor weight, bias;  // conv: [O, 3, 3, C] OHWI; fc: [out, in]
};

std::vector<VggLayer> make_vgg16(kiln::Generator& gen) {
  // Channel plan of VGG16 ("D" in the paper); 0 marks a max-pool.
  const std::array<int64_t, 18> plan = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
  std::vector<VggLayer> layers;
  int64_t h = 224, c = 3, block = 1, in_block = 1;
  for (const int64_t o : plan) {
    VggLayer l;
    l.h = l.w = h;
    l.c_in = c;
    if (o == 0) {
      l.kind = VggLayer::Kind::pool;
      l.name = "pool" + std::to_string(block);
      l.c_out = c;
      h /= 2;
      ++block;
      in_block = 1;
    } else {
      l.kind = VggLayer::Kind::conv;
      l.name = "conv" + std::to_string(block) + "_" + std::to_string(in_block++);
      l.c_out = o;
      // He-normal weights keep activations O(1) through the stack, so checks and the
      // final logits are meaningful numbers rather than under- or overflow.
      const float std = static_cast<float>(std::sqrt(2.0 / (9.0 * static_cast<double>(c))));
      l.weight = Tensor::normal(Shape{o, 3, 3, c}, 0.0f, std, gen);
      l.bias = Tensor::uniform(Shape{o}, -0.1f, 0.1f, gen);
      c = o;
    }
    layers.push_back(std::move(l));
  }
  const std::array<std::pair<int64_t, int64_t>, 3> fcs = {{{h * h * c, 4096}, {4096, 4096}, {4096, 1000}}};
  for (size_t i = 0; i < fcs.size(); ++i) {
    VggLayer l;
    l.kind = VggLayer::Kind::fc;
    l.name = "fc" + std::to_string(6 + i);
    l.c_in = fcs[i].first;
    l.c_out = fcs[i].second;
    l.relu = i + 1 < fcs.size();
    const float std = static_cast<float>(std::sqrt(2.0 / static_cast<double>(l.c_in)));
    l.weight = Tensor::normal(Shape{l.c_out, l.c_in}, 0.0f, std, gen);
    l.bias = Tensor::uniform(Shape{l.c_out}, -0.1f, 0.1f, gen);
    layers.push_back(std::move(l));
  }
  return layers;
}

Tensor vgg_apply(const VggLayer& l, const Tensor& x) {
  switch (l.kind) {
    case VggLayer::Kind::conv:
      return kiln::relu(kiln::conv2d(x, l.weight, l.bias, kiln::Conv2dParams{1, 1, 1, 1}));
    case VggLayer::Kind::pool:
      return kiln::max_pool2d(x, kiln::Pool2dParams{});
    case VggLayer::Kind::fc: {
      Tensor y = kiln::linear(x.rank() == 2 ? x : kiln::flatten(x), l.weight, l.bias);
      return l.relu ? kiln::relu(y) : y;
    }
  }
  return Tensor();
}

Shape vgg_input_shape(const VggLayer& l, int64_t n) {
  return l.kind == VggLayer::Kind::fc ? Shape{n, l.c_in} : Shape{n, l.h, l.w, l.c_in};
}

// Positions (n, oh, ow) to check: the corners (where padding matters) and two inside.
std::vector<std::array<int64_t, 3>> check_positions(int64_t n, int64_t oh, int64_t ow) {
  return {{0, 0, 0}, {n - 1, oh - 1, ow - 1}, {n / 2, oh / 2, ow / 3}, {n - 1, 0, ow - 1}, {0, oh - 1, 1 % ow}};
}

// Float32 sums of up to 25088 products: the rounding error stays near eps * sum|terms|
// (~1e-7 of the scale), while one wrong or missing term moves the result by ~1/K of the
// scale (>= 4e-5 for K = 25088). 1e-5 separates the two.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-6;

void check_vgg_layer(const VggLayer& l, const Tensor& x_dev, const Tensor& y_dev, Row& row) {
  Tensor xk, yk, wk, bk;
  const float* x = host_floats(x_dev, xk);
  const float* y = host_floats(y_dev, yk);
  Checker ck(kAtol, kRtol);
  const auto at = [](const char* what, std::initializer_list<int64_t> idx) {
    std::ostringstream os;
    os << what << "[";
    bool first = true;
    for (int64_t i : idx) os << (first ? "" : ",") << i, first = false;
    os << "]";
    return os.str();
  };
  const int64_t n = x_dev.dim(0);
  if (l.kind == VggLayer::Kind::conv) {
    const float* w = host_floats(l.weight, wk);
    const float* b = host_floats(l.bias, bk);
    const int64_t h = l.h, wd = l.w, c = l.c_in, o_n = l.c_out;
    for (const auto& [b_i, oh, ow] : check_positions(n, h, wd)) {
      for (int64_t o = 0; o < o_n; ++o) {
        double ref = b[o], scale = std::fabs(b[o]);
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t ih = oh - 1 + kh;
          if (ih < 0 || ih >= h) continue;
          for (int64_t kw = 0; kw < 3; ++kw) {
            const int64_t iw = ow - 1 + kw;
            if (iw < 0 || iw >= wd) continue;
            const float* xp = x + ((b_i * h + ih) * wd + iw) * c;
            const float* wp = w + ((o * 3 + kh) * 3 + kw) * c;
            for (int64_t ci = 0; ci < c; ++ci) {
              const double t = static_cast<double>(xp[ci]) * wp[ci];
              ref += t;
              scale += std::fabs(t);
            }
          }
        }
        ref = std::max(ref, 0.0);
        ck.compare(y[((b_i * h + oh) * wd + ow) * o_n + o], ref, scale, at("y", {b_i, oh, ow, o}));
      }
    }
  } else if (l.kind == VggLayer::Kind::pool) {
    const int64_t h = l.h, wd = l.w, c = l.c_in, oh_n = h / 2, ow_n = wd / 2;
    for (const auto& [b_i, oh, ow] : check_positions(n, oh_n, ow_n)) {
      for (int64_t ci = 0; ci < c; ++ci) {
        double ref = -INFINITY;
        for (int64_t kh = 0; kh < 2; ++kh)
          for (int64_t kw = 0; kw < 2; ++kw)
            ref = std::max(ref, static_cast<double>(x[((b_i * h + 2 * oh + kh) * wd + 2 * ow + kw) * c + ci]));
        // A max is exact: the budget is only there to report, any difference fails.
        ck.compare(y[((b_i * oh_n + oh) * ow_n + ow) * c + ci], ref, 0.0, at("y", {b_i, oh, ow, ci}));
      }
    }
  } else {
    const float* w = host_floats(l.weight, wk);
    const float* b = host_floats(l.bias, bk);
    const int64_t in = l.c_in, out = l.c_out;
    for (const int64_t r : {int64_t{0}, n - 1}) {
      for (int64_t o = 0; o < out; ++o) {
        double ref = b[o], scale = std::fabs(b[o]);
        for (int64_t i = 0; i < in; ++i) {
          const double t = static_cast<double>(x[r * in + i]) * w[o * in + i];
          ref += t;
          scale += std::fabs(t);
        }
        if (l.relu) ref = std::max(ref, 0.0);
        ck.compare(y[r * out + o], ref, scale, at("y", {r, o}));
      }
    }
  }
  ck.finish(row);
}

Row vgg_row(const VggLayer& l, int64_t n) {
  Row r;
  r.name = l.name;
  const double f = 4.0;  // bytes per float
  if (l.kind == VggLayer::Kind::conv) {
    r.kind = "conv";
    // conv FLOPs = 2 * N * OH * OW * O * KH * KW * C (stride 1, pad 1: OH = H).
    r.flops = 2.0 * n * l.h * l.w * l.c_out * 9.0 * l.c_in;
    r.bytes = f * (n * l.h * l.w * l.c_in + l.c_out * 9.0 * l.c_in + l.c_out + n * l.h * l.w * l.c_out);
    r.shape = shape_str(Shape{n, l.h, l.w, l.c_in}) + "->" + std::to_string(l.c_out);
  } else if (l.kind == VggLayer::Kind::pool) {
    r.kind = "pool";
    r.flops = 1.0 * n * (l.h / 2) * (l.w / 2) * l.c_in * 4.0;  // comparisons
    r.bytes = f * (n * l.h * l.w * l.c_in + n * (l.h / 2) * (l.w / 2) * l.c_in);
    r.shape = shape_str(Shape{n, l.h, l.w, l.c_in}) + "->" + shape_str(Shape{n, l.h / 2, l.w / 2, l.c_in});
  } else {
    r.kind = "fc";
    r.flops = 2.0 * n * l.c_in * l.c_out;
    r.bytes = f * (n * l.c_in + l.c_in * static_cast<double>(l.c_out) + l.c_out + n * l.c_out);
    r.shape = shape_str(Shape{n, l.c_in}) + "->" + std::to_string(l.c_out);
  }
  if (l.relu && l.kind != VggLayer::Kind::pool) r.shape += "+relu";
  return r;
}

SuiteResult run_vgg16_forward(const Options& opt, const MachineLimits& m) {
  kiln::NoGradGuard no_grad;
  kiln::Generator gen(20240601);
  std::vector<VggLayer> layers = make_vgg16(gen);
  const int64_t n = opt.batch;
  SuiteResult res;
  print_table_header();

  for (size_t i = 0; i < layers.size(); ++i) {
    const VggLayer& l = layers[i];
    Row row = vgg_row(l, n);
    kiln::Generator xgen(1000 + i);
    const Tensor x = Tensor::uniform(vgg_input_shape(l, n), -1.0f, 1.0f, xgen);
    {
      const Tensor y = vgg_apply(l, x);
      check_vgg_layer(l, x, y, row);
    }
    if (row.check_ok) {
      row.t = time_it(opt.warmup, opt.repeat, [&] { (void)vgg_apply(l, x); });
      row.timed = true;
    } else {
      res.all_checks_ok = false;
    }
    print_row(row, m);
    if (!row.check_ok) std::printf("  check failed: %s\n", row.check.c_str());
    res.rows.push_back(std::move(row));
  }

  // The whole network, layer after layer, as inference runs it.
  Row net;
  net.name = "forward";
  net.kind = "net";
  net.shape = shape_str(Shape{n, 224, 224, 3}) + "->" + shape_str(Shape{n, 1000});
  for (const Row& r : res.rows) {
    net.flops += r.flops;
    net.bytes += r.bytes;
  }
  kiln::Generator xgen(7);
  const Tensor x = Tensor::uniform(Shape{n, 224, 224, 3}, -1.0f, 1.0f, xgen);
  const auto forward = [&] {
    Tensor h = x;
    for (const VggLayer& l : layers) h = vgg_apply(l, h);
    return h;
  };
  {
    // The layers were each checked above; here only that the chain yields sane logits.
    const std::vector<float> logits = forward().to_vector<float>();
    const bool finite = std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); });
    const auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
    net.checked = true;
    net.check_ok = finite && *hi > *lo;
    net.check_budget = 0;
    net.check = std::string(finite ? "finite" : "NOT finite") + " logits in [" + std::to_string(*lo) + ", " +
                std::to_string(*hi) + "]";
  }
  if (net.check_ok) {
    net.t = time_it(opt.warmup, opt.repeat, [&] { (void)forward(); });
    net.timed = true;
  } else {
    res.all_checks_ok = false;
  }
  print_row(net, m);
  if (net.timed) {
    const double img_s = static_cast<double>(n) / (net.t.median_ms * 1e-3);
    res.summary.emplace_back("forward_img_per_s", img_s);
    double sum_layers = 0;
    for (const Row& r : res.rows) sum_layers += r.t.median_ms;
    std::printf("\nforward: %.2f img/s (batch %lld, median %.1f ms; sum of the per-layer medians %.1f ms)\n", img_s,
                static_cast<long long>(n), net.t.median_ms, sum_layers);
  } else {
    std::printf("  check failed: %s\n", net.check.c_str());
  }
  res.rows.push_back(std::move(net));
  return res;
}

// ---------------------------------------------------------------- the suite table

struct Suite {
  const char* name;
  const char* help;
  SuiteResult (*run)(const Options&, const MachineLimits&);
  const char* peer_script;  // relative to the source tree; nullptr when there is no peer
};

const Suite kSuites[] = {
    {"vgg16_forward", "VGG16 inference: each conv(+relu), pool and fc layer, then the whole forward",
     run_vgg16_forward, "benchmarks/torch_vgg16_forward.py"},
};

// ---------------------------------------------------------------- a small JSON reader

// Just enough JSON to read a peer script's output.
struct Json {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;

  const Json* find(std::string_view key) const {
    for (const auto& [k, v] : obj)
      if (k == key) return &v;
    return nullptr;
  }
  std::optional<double> number(std::string_view key) const {
    const Json* v = find(key);
    if (v && v->kind == Kind::number) return v->num;
    return std::nullopt;
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view s) : s_(s) {}
  Json parse() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(std::string_view lit) {
    if (s_.substr(i_, lit.size()) != lit) return false;
    i_ += lit.size();
    return true;
  }
  std::string string() {
    if (!eat("\"")) fail("expected a string");
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char ch = s_[i_++];
      if (ch == '\\') {
        if (i_ >= s_.size()) fail("bad escape");
        const char e = s_[i_++];
        switch (e) {
          case 'n': ch = '\n'; break;
          case 't': ch = '\t'; break;
          case 'r': ch = '\r'; break;
          case 'b': ch = '\b'; break;
          case 'f': ch = '\f'; break;
          case 'u': i_ += 4; ch = '?'; break;  // names here are ASCII; keep a placeholder
          default: ch = e;
        }
      }
      out.push_back(ch);
    }
    if (!eat("\"")) fail("unterminated string");
    return out;
  }
  Json value() {
    ws();
    Json v;
    if (i_ >= s_.size()) fail("unexpected end");
    const char ch = s_[i_];
    if (ch == '{') {
      ++i_;
      v.kind = Json::Kind::object;
      ws();
      if (eat("}")) return v;
      do {
        ws();
        std::string k = string();
        ws();
        if (!eat(":")) fail("expected ':'");
        v.obj.emplace_back(std::move(k), value());
        ws();
      } while (eat(","));
      if (!eat("}")) fail("expected '}'");
    } else if (ch == '[') {
      ++i_;
      v.kind = Json::Kind::array;
      ws();
      if (eat("]")) return v;
      do v.arr.push_back(value());
      while ((ws(), eat(",")));
      if (!eat("]")) fail("expected ']'");
    } else if (ch == '"') {
      v.kind = Json::Kind::string;
      v.str = string();
    } else if (eat("true")) {
      v.kind = Json::Kind::boolean;
      v.b = true;
    } else if (eat("false")) {
      v.kind = Json::Kind::boolean;
    } else if (eat("null")) {
    } else {
      const std::string rest(s_.substr(i_, std::min<size_t>(64, s_.size() - i_)));
      char* end = nullptr;
      v.num = std::strtod(rest.c_str(), &end);
      if (end == rest.c_str()) fail("unexpected character '" + std::string(1, ch) + "'");
      v.kind = Json::Kind::number;
      i_ += static_cast<size_t>(end - rest.c_str());
    }
    return v;
  }
  std::string_view s_;
  size_t i_ = 0;
};

// ---------------------------------------------------------------- JSON writing

std::string json_str(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// ---------------------------------------------------------------- the PyTorch peer

struct PeerRow {
  Stats t;
};

struct PeerResult {
  bool ok = false;
  std::string why;  // when !ok: what went wrong, for people
  std::string label;
  std::vector<std::pair<std::string, PeerRow>> rows;
  std::vector<std::pair<std::string, double>> summary;
  const PeerRow* row(const std::string& name) const {
    for (const auto& [k, v] : rows)
      if (k == name) return &v;
    return nullptr;
  }
};

// Runs the peer script with the same batch, repeat and threads; it prints JSON on stdout
// (its stderr goes to the terminal).
PeerResult run_peer(const Suite& suite, const Options& opt) {
  PeerResult p;
  const char* env_python = std::getenv("KILN_PYTHON");
  const std::string python = env_python && *env_python ? env_python : "/usr/bin/python3";
  const std::string script = std::string(KILN_SOURCE_DIR) + "/" + suite.peer_script;
  if (!std::ifstream(script)) {
    p.why = "peer script " + script + " not found";
    return p;
  }
  const auto quote = [](const std::string& s) {
    std::string q = "'";
    for (const char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
  };
  const std::string cmd = quote(python) + " " + quote(script) + " --batch " + std::to_string(opt.batch) +
                          " --repeat " + std::to_string(opt.repeat) + " --warmup " + std::to_string(opt.warmup) +
                          " --threads " + std::to_string(opt.threads);
  std::printf("\nrunning the PyTorch peer: %s\n", cmd.c_str());
  std::fflush(stdout);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    p.why = "could not start " + python + ": " + std::strerror(errno);
    return p;
  }
  std::string out;
  std::array<char, 4096> buf;
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), got);
  const int status = pclose(pipe);
  if (status != 0) {
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    p.why = code == 127 ? "interpreter " + python + " not found (set KILN_PYTHON)"
            : code == 2 ? "PyTorch is not importable by " + python + " (set KILN_PYTHON to one that has it)"
                        : "the peer script failed (exit status " + std::to_string(code) + ", see its message above)";
    return p;
  }
  try {
    const Json j = JsonReader(out).parse();
    if (const Json* label = j.find("peer"); label && label->kind == Json::Kind::string) p.label = label->str;
    if (const Json* v = j.find("torch_version"); v && v->kind == Json::Kind::string) p.label += " " + v->str;
    const Json* rows = j.find("rows");
    if (!rows || rows->kind != Json::Kind::array) throw std::runtime_error("no \"rows\" array");
    for (const Json& r : rows->arr) {
      const Json* name = r.find("name");
      const auto med = r.number("median_ms"), lo = r.number("min_ms"), hi = r.number("max_ms");
      if (!name || name->kind != Json::Kind::string || !med) throw std::runtime_error("a row lacks name/median_ms");
      p.rows.emplace_back(name->str, PeerRow{Stats{*med, lo.value_or(*med), hi.value_or(*med),
                                                   r.number("other_load").value_or(0)}});
    }
    if (const Json* s = j.find("summary"); s && s->kind == Json::Kind::object)
      for (const auto& [k, v] : s->obj)
        if (v.kind == Json::Kind::number) p.summary.emplace_back(k, v.num);
    p.ok = true;
  } catch (const std::exception& e) {
    p.why = std::string("could not read the peer's output (") + e.what() + ")";
  }
  return p;
}

void print_comparison(const SuiteResult& res, const PeerResult& peer) {
  std::printf("\nkiln vs %s (ratio = torch ms / kiln ms; > 1 means kiln is faster)\n", peer.label.c_str());
  std::printf("%-10s %10s %10s %7s   %21s %21s  %s\n", "layer", "kiln ms", "torch ms", "ratio", "kiln min..max",
              "torch min..max", "other kiln/torch");
  for (const Row& r : res.rows) {
    const PeerRow* t = peer.row(r.name);
    if (!r.timed || !t) {
      std::printf("%-10s %10s %10s %7s\n", r.name.c_str(), r.timed ? "" : "-", t ? "" : "-", "-");
      continue;
    }
    const bool disturbed = r.t.other_load > kDisturbed || t->t.other_load > kDisturbed;
    std::printf("%-10s %10.3f %10.3f %7.2f   %9.3f..%-9.3f %9.3f..%-9.3f %5.0f%%/%.0f%%%s\n", r.name.c_str(),
                r.t.median_ms, t->t.median_ms, t->t.median_ms / r.t.median_ms, r.t.min_ms, r.t.max_ms, t->t.min_ms,
                t->t.max_ms, 100.0 * r.t.other_load, 100.0 * t->t.other_load, disturbed ? " !" : "");
  }
  for (const auto& [k, v] : res.summary) {
    for (const auto& [pk, pv] : peer.summary) {
      if (pk == k) std::printf("%s: kiln %.2f, torch %.2f, kiln/torch %.2f\n", k.c_str(), v, pv, v / pv);
    }
  }
}

// ---------------------------------------------------------------- JSON report

void write_json(const std::string& path, const Options& opt, const MachineLimits& m, const SuiteResult& res,
                const std::optional<PeerResult>& peer) {
  std::ostringstream js;
  const dnnl_version_t* dv = dnnl_version();
  js << "{\n  \"suite\": " << json_str(opt.suite) << ",\n";
  js << "  \"options\": {\"batch\": " << opt.batch << ", \"repeat\": " << opt.repeat << ", \"warmup\": " << opt.warmup
     << ", \"threads\": " << opt.threads << "},\n";
  js << "  \"machine\": {\"cpu\": " << json_str(m.cpu) << ", \"threads\": " << m.threads
     << ", \"peak_gflops\": " << json_num(m.peak_gflops) << ", \"peak_from\": " << json_str(m.sgemm_shape)
     << ", \"loadavg\": " << json_str(m.loadavg) << ", \"other_load\": " << json_num(m.other_load) << ", \"bandwidth_gbs\": " << json_num(m.bandwidth_gbs) << ", \"bandwidth_from\": " << json_str(m.copy_size)
     << ", \"onednn\": \"" << dv->major << "." << dv->minor << "." << dv->patch << "\"},\n";
  js << "  \"rows\": [\n";
  for (size_t i = 0; i < res.rows.size(); ++i) {
    const Row& r = res.rows[i];
    js << "    {\"name\": " << json_str(r.name) << ", \"kind\": " << json_str(r.kind) << ", \"shape\": "
       << json_str(r.shape) << ", \"flops\": " << json_num(r.flops) << ", \"bytes\": " << json_num(r.bytes)
       << ", \"check_ok\": " << (r.check_ok ? "true" : "false") << ", \"check_budget_used\": "
       << json_num(r.check_budget) << ", \"check\": " << json_str(r.check);
    if (r.timed) {
      js << ", \"median_ms\": " << json_num(r.t.median_ms) << ", \"min_ms\": " << json_num(r.t.min_ms)
         << ", \"max_ms\": " << json_num(r.t.max_ms) << ", \"gflops\": " << json_num(gflops(r))
         << ", \"fraction_of_peak\": " << json_num(gflops(r) / m.peak_gflops) << ", \"gbs\": " << json_num(gbs(r))
         << ", \"fraction_of_roof\": " << json_num(roof_fraction(r, m))
         << ", \"runs\": " << r.t.runs << ", \"other_load\": " << json_num(r.t.other_load);
    }
    if (peer && peer->ok) {
      if (const PeerRow* t = peer->row(r.name)) {
        js << ", \"torch_median_ms\": " << json_num(t->t.median_ms) << ", \"torch_min_ms\": "
           << json_num(t->t.min_ms) << ", \"torch_max_ms\": " << json_num(t->t.max_ms)
           << ", \"torch_other_load\": " << json_num(t->t.other_load);
        if (r.timed) js << ", \"ratio_torch_over_kiln\": " << json_num(t->t.median_ms / r.t.median_ms);
      }
    }
    js << "}" << (i + 1 < res.rows.size() ? "," : "") << "\n";
  }
  js << "  ],\n  \"summary\": {";
  for (size_t i = 0; i < res.summary.size(); ++i)
    js << (i ? ", " : "") << json_str(res.summary[i].first) << ": " << json_num(res.summary[i].second);
  js << "}";
  if (peer) {
    js << ",\n  \"peer\": {\"ok\": " << (peer->ok ? "true" : "false");
    if (peer->ok) {
      js << ", \"label\": " << json_str(peer->label) << ", \"summary\": {";
      for (size_t i = 0; i < peer->summary.size(); ++i)
        js << (i ? ", " : "") << json_str(peer->summary[i].first) << ": " << json_num(peer->summary[i].second);
      js << "}";
    } else {
      js << ", \"why\": " << json_str(peer->why);
    }
    js << "}";
  }
  js << "\n}\n";
  // Written whole, then renamed: a reader never sees half a report.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << js.str();
    f.flush();
    if (!f) throw std::runtime_error("could not write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("could not rename " + tmp + " to " + path + ": " + std::strerror(errno));
}

// ---------------------------------------------------------------- main

int64_t parse_int(const std::string& flag, const char* v, int64_t lo) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || x < lo)
    throw std::invalid_argument(flag + " expects an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return x;
}

int run(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--suite") opt.suite = value();
    else if (a == "--device") opt.device = value();
    else if (a == "--conv-search") opt.conv_search = value();
    else if (a == "--batch") opt.batch = parse_int(a, value(), 1);
    else if (a == "--repeat") opt.repeat = static_cast<int>(parse_int(a, value(), 1));
    else if (a == "--warmup") opt.warmup = static_cast<int>(parse_int(a, value(), 0));
    else if (a == "--threads") opt.threads = static_cast<int>(parse_int(a, value(), 1));
    else if (a == "--json") opt.json_path = value();
    else if (a == "--compare") opt.compare = true;
    else if (a == "--list") {
      for (const Suite& s : kSuites) std::printf("%-16s %s\n", s.name, s.help);
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      throw std::invalid_argument("unknown argument '" + a + "'");
    }
  }
  if (opt.device == "cuda") {
#if defined(KILN_HAS_CUDA)
    if (opt.conv_search != "exhaustive" && opt.conv_search != "heuristic")
      throw std::invalid_argument("--conv-search must be exhaustive or heuristic, got '" + opt.conv_search + "'");
    kiln::compute_options().exhaustive_conv_search = opt.conv_search == "exhaustive";
    std::vector<std::string> names;
    std::stringstream ss(opt.suite == "vgg16_forward" ? std::string("conv_cuda,step_cuda") : opt.suite);
    for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
    return kiln::bench::cuda_main(names, opt.batch, opt.warmup, opt.repeat, opt.compare, opt.json_path);
#else
    throw std::invalid_argument("--device cuda: this kiln_bench was built without CUDA");
#endif
  }
  if (opt.device != "cpu") throw std::invalid_argument("--device must be cpu or cuda, got '" + opt.device + "'");
  const Suite* suite = nullptr;
  for (const Suite& s : kSuites)
    if (opt.suite == s.name) suite = &s;
  if (!suite) {
    std::string names;
    for (const Suite& s : kSuites) names += std::string(names.empty() ? "" : ", ") + s.name;
    throw std::invalid_argument("unknown suite '" + opt.suite + "' (have: " + names + ")");
  }

  // Before any parallel region: kiln's loops and oneDNN both follow OpenMP's setting, and
  // the environment carries it to the peer script too.
  setenv("OMP_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);
  omp_set_num_threads(opt.threads);

  const dnnl_version_t* dv = dnnl_version();
  std::printf("kiln_bench --suite %s: batch %lld, %d threads, warmup %d, repeat %d, oneDNN %d.%d.%d\n", suite->name,
              static_cast<long long>(opt.batch), opt.threads, opt.warmup, opt.repeat, dv->major, dv->minor,
              dv->patch);
  const MachineLimits m = measure_limits(opt.threads, opt.repeat);
  std::printf("machine: %s, load average %s\n", m.cpu.c_str(), m.loadavg.c_str());
  std::printf("limits: fp32 peak %.1f GFLOP/s (best %s), bandwidth %.1f GB/s (best %s, read + write)%s\n",
              m.peak_gflops, m.sgemm_shape.c_str(), m.bandwidth_gbs, m.copy_size.c_str(),
              m.other_load > kDisturbed ? " -- DISTURBED by other processes" : "");
  std::printf("%%peak: of the sgemm peak (a kernel better tuned than oneDNN's sgemm can exceed 100%%); %%roof: of\n"
              "min(peak, FLOP/byte * bandwidth) (a row whose data fits in the last-level cache can exceed 100%%);\n"
              "other: CPU share taken by other processes while timing\n"
              "(! over 10%%: not trustworthy); check: worst |error| / tolerance of the checked elements\n\n");
  std::fflush(stdout);

  const SuiteResult res = suite->run(opt, m);

  std::optional<PeerResult> peer;
  if (opt.compare) {
    if (!suite->peer_script) {
      std::printf("\n--compare: suite %s has no PyTorch peer; kiln results only\n", suite->name);
    } else {
      peer = run_peer(*suite, opt);
      if (peer->ok) print_comparison(res, *peer);
      else std::printf("\n--compare: PyTorch comparison unavailable: %s; kiln results only\n", peer->why.c_str());
    }
  }
  if (!opt.json_path.empty()) {
    write_json(opt.json_path, opt, m, res, peer);
    std::printf("\nJSON written to %s\n", opt.json_path.c_str());
  }
  // Say it last, where it is read: which timings ran beside other work.
  std::string disturbed;
  for (const Row& r : res.rows) {
    const PeerRow* t = peer && peer->ok ? peer->row(r.name) : nullptr;
    if ((r.timed && r.t.other_load > kDisturbed) || (t && t->t.other_load > kDisturbed))
      disturbed += (disturbed.empty() ? "" : ", ") + r.name;
  }
  if (m.other_load > kDisturbed) disturbed = "the peak/bandwidth measurement" + (disturbed.empty() ? "" : ", " + disturbed);
  if (!disturbed.empty())
    std::printf("\nWARNING: other processes took over %.0f%% of the CPUs while timing %s; rerun on a quiet machine\n",
                100.0 * kDisturbed, disturbed.c_str());
  if (!res.all_checks_ok) {
    std::fprintf(stderr, "kiln_bench: some checks FAILED (rows without timings above)\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "kiln_bench: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_bench: %s\n", e.what());
    return 1;
  }
}
