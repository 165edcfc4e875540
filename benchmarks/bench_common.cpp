// kiln_bench's shared machinery; see bench_common.h.
#include "benchmarks/bench_common.h"

#include "core/backend.h"

#include <emmintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <memory>
#include <set>
#include <stdexcept>
#include <sstream>
#include <string_view>

#include "check/compare.h"
#include "check/op_cases.h"
#include "core/conv_api.h"
#include "core/profiler.h"
#include "io/atomic_file.h"
#include "layers/models/resnet.h"
#include "train/precision.h"


namespace kiln::bench {

const char* kUsage =
    "usage: kiln_bench [--device cpu|cuda] [--suite NAME[,NAME]] [--batch N[,N]] [--repeat N]\n"
    "                  [--warmup N] [--threads N] [--cache cold|warm] [--data DIR]\n"
    "                  [--conv-search exhaustive|heuristic] [--json FILE] [--compare] [--list]\n"
    "                  [--only ROW[,ROW]] [--model NAME] [--profile N]\n"
    "       kiln_bench --print-plan MODEL [--image-size N] [--classes N]\n"
    "Every row is checked against a double-precision reference, then timed; it prints the\n"
    "time, GFLOP/s or GB/s and the fraction of this machine's limits, measured at start.\n"
    "Rows named NAME@HOW are kiln's other ways of doing the same op.\n"
    "Columns: median/min/max ms of the timed runs; GFLOP/s; %peak: of the measured GEMM peak of\n"
    "the row's math; GB/s: the row's minimum traffic (inputs, weights, outputs) per second;\n"
    "bound: mem or flop, whichever roof is lower at the row's FLOP/byte; %roof: of that roof;\n"
    "other: CPU share other processes took while timing (! over 10%); check: worst\n"
    "|error| / tolerance. A '?' after a fraction: the limits were measured while other\n"
    "processes ran (DISTURBED), so it is a fraction of a limit measured low.\n"
    "  --device   cpu (default) or cuda: the same suites on the GPU (those marked [cpu, cuda] in\n"
    "             --list; conv and step by default there), timed with events on its stream\n"
    "  --conv-search  on a GPU: exhaustive (default; cuDNN Find, as PyTorch's cudnn.benchmark)\n"
    "             or heuristic (kiln's library default); conv adds rows @find or @heuristic,\n"
    "             the other choice; ignored on a CPU (it has one way)\n"
    "  --suite    which benchmark to run (default vgg16_forward; all: every suite of the\n"
    "             device; --list shows them)\n"
    "  --batch    batch size (default 8), read by conv, step and vgg16_forward only (the other\n"
    "             suites time fixed shapes and refuse it; --suite all applies it to those three);\n"
    "             conv takes a list, e.g. 1,8,64 (its default)\n"
    "  --cache    cold (default): evict the last-level cache before each timed run, outside\n"
    "             the timing; warm: leave it (small inputs then stay cache-resident)\n"
    "  --repeat   timed runs per row, at least; rows under 200 ms in all run until 200 ms\n"
    "             are measured; the median and min/max are reported (default 5)\n"
    "  --warmup   untimed runs before timing (default 1)\n"
    "  --data     pipeline: folder of generated JPEGs (default /tmp/kiln_pipeline_bench): a new\n"
    "             or empty folder, or one kiln_bench made (it holds .kiln_pipeline_bench)\n"
    "  --threads  OpenMP threads for kiln, oneDNN and the PyTorch peer (default 2)\n"
    "  --json     also write the results as JSON to FILE (its folder must exist)\n"
    "  --only     step suite only: run only these rows (e.g. vgg16/step_fc8@bf16-frozen) and skip\n"
    "             measuring the limits, so an outside meter sees those rows' memory alone; an\n"
    "             unknown row name is an error that lists the suite's rows\n"
    "  --model    step suite: the model it trains (default vgg16; resnet50: rows resnet50/forward,\n"
    "             resnet50/step_fc with the backbone and its batch norms frozen, resnet50/step_all;\n"
    "             the PyTorch peer is torchvision's resnet50; vgg11, vgg13, vgg19, resnet50_v1)\n"
    "  --profile  after timing each row, run it once more with every kiln op timed alone\n"
    "             (kiln::Profiler) and print its N most expensive ops by input shape: the suites\n"
    "             vgg16_forward, step, gemm, sgd and ops; the others call the backend (pipeline:\n"
    "             the image code) directly and have no op records\n"
    "  --compare  run the suite's PyTorch peer script in the same run and print ratios:\n"
    "             ratio = torch ms / kiln ms, > 1 means kiln is faster (interpreter:\n"
    "             $KILN_PYTHON, else /usr/bin/python3; checked before any timing, exit status 2\n"
    "             when it or torch is missing), without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE;\n"
    "             a peer whose GEMM is wrong is refused, one whose GEMM runs under 50% of the\n"
    "             sgemm limit is marked WEAK PEER on every row; the ops suite has no peer\n"
    "  --print-plan  print MODEL's layer plan as JSON (any --model name; default\n"
    "             224x224, 1000 classes) and exit: the shapes the suites and peer scripts use\n";

bool row_wanted(const Options& opt, const std::string& name) {
  return opt.only.empty() || std::find(opt.only.begin(), opt.only.end(), name) != opt.only.end();
}

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

namespace {
bool g_cold_cache = false;

size_t last_level_cache_bytes() {
  size_t best = 0;
  for (int idx = 0; idx < 8; ++idx) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(idx) + "/size");
    std::string v;
    if (!(f >> v) || v.empty()) continue;
    size_t n = std::strtoull(v.c_str(), nullptr, 10);
    if (v.back() == 'K') n <<= 10;
    else if (v.back() == 'M') n <<= 20;
    best = std::max(best, n);
  }
  return best ? best : size_t{32} << 20;
}
}  // namespace

void set_cold_cache(bool cold) { g_cold_cache = cold; }

kiln::Device bench_device(const Options& opt) {
  if (opt.device == "cpu") return kiln::Device::cpu();
  if (opt.device != "cuda") throw std::invalid_argument("--device must be cpu or cuda, got '" + opt.device + "'");
  // The CUDA backend registers itself when libkiln is built with it: no #if here.
  if (!kiln::has_backend(kiln::DeviceType::cuda))
    throw std::invalid_argument("--device cuda: this kiln was built without CUDA (configure with -DKILN_CUDA=ON)");
  return kiln::Device::cuda(0);
}

Tensor to_bench_device(const Tensor& host, const Options& opt) {
  const kiln::Device d = bench_device(opt);
  return d.is_cpu() ? host : host.to(d);
}

Tensor empty_on_bench_device(const Shape& shape, const Options& opt, kiln::DType dtype) {
  return Tensor::empty(shape, kiln::TensorOptions{dtype, bench_device(opt)});
}

namespace {
// The runs every timing makes: at least `repeat`, and short kernels until kMinTimedMs are
// measured; with a cold cache, evict() before each, outside the timing. Evicting costs a
// few ms a run, so short kernels then stop at a tenth of the runs.
std::vector<double> timed_runs(int repeat, const std::function<void()>& evict, const std::function<double()>& run_ms) {
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(repeat));
  double total_ms = 0;
  const int max_runs = g_cold_cache ? kMaxRuns / 10 : kMaxRuns;
  for (int i = 0; i < repeat || (total_ms < kMinTimedMs && i < max_runs); ++i) {
    if (g_cold_cache) evict();
    ms.push_back(run_ms());
    total_ms += ms.back();
  }
  return ms;
}
}  // namespace

size_t evict_cache() {
  // Read, not written: written lines would be written back during the next timed run.
  static std::vector<uint64_t> buf(2 * last_level_cache_bytes() / sizeof(uint64_t), 1);
  static volatile uint64_t sink = 0;
  uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(buf.size()); i += 8) sum += buf[static_cast<size_t>(i)];
  sink = sink + sum;
  return buf.size() * sizeof(uint64_t);
}

namespace {
// Evicts `device`'s last-level cache: the CPU's by reading (evict_cache), a GPU's by
// overwriting 256 MiB (2x an H100/H200 L2 and then some) through a device copy.
void evict_device_cache(kiln::Device device) {
  if (device.is_cpu()) {
    evict_cache();
    return;
  }
  // Never freed: a device tensor destroyed during static destruction could outlive the
  // device runtime.
  static Tensor* src = nullptr;
  static Tensor* dst = nullptr;
  if (!src) {
    src = new Tensor(Tensor::zeros(Shape{int64_t{256} << 20}, kiln::TensorOptions{kiln::DType::u8, device}));
    dst = new Tensor(Tensor::empty(Shape{int64_t{256} << 20}, kiln::TensorOptions{kiln::DType::u8, device}));
  }
  dst->copy_from(*src);
}
}  // namespace

// Runs fn warmup times untimed, then at least repeat times (more for short kernels, see
// kMinTimedMs), each run timed on its own by the device's clock (kiln::time_ms: a steady
// clock on the CPU, events on a GPU's compute stream).
Stats time_it(kiln::Device device, int warmup, int repeat, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  kiln::synchronize(device);
  const CpuTicks before = cpu_ticks();
  Stats s = summarize(timed_runs(
      repeat, [&] { evict_device_cache(device); }, [&] { return kiln::time_ms(device, fn); }));
  s.other_load = other_load(before, cpu_ticks());
  return s;
}

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

namespace {

// fp32 FLOP a cycle of one core, where the vendor and family fix it: AMD Zen 2, 3 and 4 have
// two 256-bit FMA pipes (Zen 4 runs AVX-512 on them too): 2 x 8 x 2 = 32; Zen 1, 128-bit: 16.
// Elsewhere 0: Intel's AVX-512 parts have one or two 512-bit FMA units, which /proc/cpuinfo
// does not tell, and Zen 5's datapath differs by part.
int fp32_flop_per_cycle(const std::string& vendor, int family, int model) {
  if (vendor != "AuthenticAMD") return 0;
  if (family == 0x19) return 32;
  if (family == 0x17) return model >= 0x30 ? 32 : 16;
  return 0;
}

// The CPU's fp32 rate from what /proc/cpuinfo says (cores used x FLOP/cycle x clock), printed
// beside the measured peak so that a peak measured low on a busy machine can be told. The
// clock is cpufreq's maximum where the kernel gives one, else cpuinfo's "cpu MHz" (on a VM the
// nominal clock: boost can run above it). Left 0 where the FLOP/cycle or the cores are unknown.
void cpu_fp32_theoretical(MachineLimits& m) {
  std::ifstream f("/proc/cpuinfo");
  std::string vendor, phys;
  int family = -1, model = -1;
  double mhz = 0;
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id): SMT siblings share FMA units
  for (std::string line; std::getline(f, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string val = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "vendor_id") vendor = val;
    else if (key == "cpu family") family = std::atoi(val.c_str());
    else if (key == "model") model = std::atoi(val.c_str());
    else if (key == "cpu MHz") mhz = std::max(mhz, std::atof(val.c_str()));
    else if (key == "physical id") phys = val;
    else if (key == "core id") cores.emplace(phys, val);
  }
  const int per_cycle = fp32_flop_per_cycle(vendor, family, model);
  std::ifstream maxf("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");  // kHz
  double max_khz = 0;
  const bool have_max = static_cast<bool>(maxf >> max_khz) && max_khz > 0;
  const double ghz = have_max ? max_khz / 1e6 : mhz / 1e3;
  const int used = std::min<int>(m.threads, static_cast<int>(cores.size()));
  if (per_cycle == 0 || used <= 0 || ghz <= 0) return;
  m.theoretical_gflops = used * per_cycle * ghz;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%d core%s x %d FLOP/cycle x %.2f GHz, %s", used, used == 1 ? "" : "s", per_cycle,
                ghz, have_max ? "cpufreq's maximum clock" : "cpuinfo's clock (boost clocks can run above it)");
  m.theoretical_from = buf;
}

// A peak from a wrong product is no peak: c = a b (b_transposed: a b^T; n x n, row-major)
// at three elements against a double reference, judged as every row is (check_row, the
// reduction class).
void check_peak_gemm(const char* what, int64_t n, const std::vector<float>& a, const std::vector<float>& b,
                     bool b_transposed, const std::function<float(int64_t, int64_t)>& c,
                     double rtol = kiln::check::kRtolReduction) {
  Row probe;
  probe.name = what;
  std::vector<double> got, want;
  for (const auto& [i, j] : {std::pair<int64_t, int64_t>{0, 0}, {n - 1, n - 1}, {7, 1000}}) {
    double ref = 0;
    for (int64_t k = 0; k < n; ++k)
      ref += static_cast<double>(a[static_cast<size_t>(i * n + k)]) *
             b[static_cast<size_t>(b_transposed ? j * n + k : k * n + j)];
    got.push_back(c(i, j));
    want.push_back(ref);
  }
  check_row(probe, got, want, rtol);
  if (!probe.check_ok) throw std::runtime_error(std::string(what) + " computes wrong products: " + probe.check);
}

// Inputs of the peak GEMM: small values whose products are exact in float32.
std::pair<std::vector<float>, std::vector<float>> peak_operands(int64_t n) {
  std::vector<float> a(static_cast<size_t>(n * n)), b(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n * n; ++i) {
    a[static_cast<size_t>(i)] = static_cast<float>((i % 7) - 3) * 0.01f;
    b[static_cast<size_t>(i)] = static_cast<float>((i % 5) - 2) * 0.01f;
  }
  return {std::move(a), std::move(b)};
}

// The bf16 roof: the backend's GEMM (kiln linear, y = x w^T) with x, w and y in bf16 and
// fp32 accumulation, as the bf16 rows compute. Checked on the bf16-rounded operands with one
// more bf16 rounding of the output allowed (as conv's bf16 rows). 0 without native bf16.
double measure_bf16_peak_unguarded(kiln::Device device, int64_t n, int reps, double& other_load) {
  if (!kiln::native_bf16(device)) return 0;
  const auto [a, b] = peak_operands(n);
  const Tensor x = Tensor::from_vector(a, Shape{n, n}).to(device).to(kiln::DType::bf16);
  const Tensor w = Tensor::from_vector(b, Shape{n, n}).to(device).to(kiln::DType::bf16);
  Tensor y = Tensor::empty(Shape{n, n}, kiln::TensorOptions{kiln::DType::bf16, device});
  kiln::Backend& be = kiln::backend_for(device);
  const Stats s = time_it(device, 1, reps, [&] { be.linear_forward(x, w, Tensor(), y); });
  const std::vector<float> xr = x.to(kiln::DType::f32).cpu().to_vector<float>();
  const std::vector<float> wr = w.to(kiln::DType::f32).cpu().to_vector<float>();
  const Tensor y_host = y.to(kiln::DType::f32).cpu();
  const float* yp = y_host.data<float>();
  check_peak_gemm("the bf16 GEMM (kiln linear)", n, xr, wr, true, [&](int64_t i, int64_t j) { return yp[i * n + j]; },
                  1.0 / 256 + kiln::check::kRtolReduction);
  other_load = std::max(other_load, s.other_load);
  return 2.0 * n * n * n / (s.min_ms * 1e-3) / 1e9;
}

// The same; a failure leaves the bf16 roof unmeasured (its rows print '-') and says why in
// `from`, instead of ending a run whose fp32 rows need no bf16 roof.
double measure_bf16_peak(kiln::Device device, int64_t n, int reps, double& other_load, std::string& from) {
  try {
    return measure_bf16_peak_unguarded(device, n, reps, other_load);
  } catch (const std::exception& e) {
    from += std::string(" (bf16 not measured: ") + e.what() + ")";
    return 0;
  }
}

// The CPU's roofs: oneDNN's sgemm (row-major, 2048^3) and the faster of two multi-threaded
// 256 MiB copies (memcpy, streaming stores).
void measure_cpu_roofs(MachineLimits& m, int reps, Stats& g, Stats& bw) {
  const int64_t n = 2048;
  const auto [a, b] = peak_operands(n);
  std::vector<float> c(static_cast<size_t>(n * n));
  const auto sgemm = [&] {
    const dnnl_status_t st = dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    if (st != dnnl_success) throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(st));
  };
  g = time_it(kiln::Device::cpu(), 1, reps, sgemm);
  check_peak_gemm("dnnl_sgemm", n, a, b, false, [&](int64_t i, int64_t j) { return c[static_cast<size_t>(i * n + j)]; });
  m.peak_gflops = 2.0 * n * n * n / (g.min_ms * 1e-3) / 1e9;
  m.sgemm_shape = "sgemm 2048x2048x2048";
  // No TF32 on a CPU: its fp32 rows all run fp32 arithmetic.
  m.peak_tf32_gflops = m.peak_gflops;
  m.peaks_from = kiln::native_bf16(kiln::Device::cpu()) ? "bf16: kiln linear bf16 2048^3"
                                                          : "bf16: no native bf16, not measured";
  m.peak_bf16_gflops = measure_bf16_peak(kiln::Device::cpu(), n, reps, g.other_load, m.peaks_from);

  // 256 MiB each way, copied twice: by glibc's memcpy and with streaming stores; the roof is
  // the faster. memcpy's ordinary stores read each destination line first (read for
  // ownership: 3 bytes moved per 2 counted) unless a thread's share passes glibc's
  // x86_non_temporal_threshold (3/4 of its L3 share: 181 MiB on this VM, which reports 480
  // MiB of L3). 256 MiB over 2 threads stays under it and measured ~28 GB/s where streaming
  // stores reach ~50, so the roof depended on --threads and every memory-bound row's %roof
  // was inflated up to 1.8x; a row's bytes count each output once, as streaming stores move it.
  const size_t bytes = size_t{256} << 20;
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  const std::unique_ptr<char, Free> src(static_cast<char*>(std::aligned_alloc(64, bytes)));
  const std::unique_ptr<char, Free> dst(static_cast<char*>(std::aligned_alloc(64, bytes)));
  if (!src || !dst) throw std::runtime_error("could not allocate the bandwidth probe's 2 x 256 MiB");
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 0, bytes);
  // Each thread's part, on 64-byte boundaries (the streaming loop moves whole lines).
  const auto part = [&](size_t& begin, size_t& end) {
    const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
    begin = bytes * t / nt / 64 * 64;
    end = t + 1 == nt ? bytes : bytes * (t + 1) / nt / 64 * 64;
  };
  const auto copy = [&] {
#pragma omp parallel num_threads(m.threads)
    {
      size_t begin = 0, end = 0;
      part(begin, end);
      std::memcpy(dst.get() + begin, src.get() + begin, end - begin);
    }
  };
  const auto stream_copy = [&] {
#pragma omp parallel num_threads(m.threads)
    {
      size_t begin = 0, end = 0;
      part(begin, end);
      const __m128i* s = reinterpret_cast<const __m128i*>(src.get() + begin);
      __m128i* d = reinterpret_cast<__m128i*>(dst.get() + begin);
      for (size_t i = 0; i < (end - begin) / 16; i += 4) {
        const __m128i a0 = _mm_load_si128(s + i), a1 = _mm_load_si128(s + i + 1);
        const __m128i a2 = _mm_load_si128(s + i + 2), a3 = _mm_load_si128(s + i + 3);
        _mm_stream_si128(d + i, a0);
        _mm_stream_si128(d + i + 1, a1);
        _mm_stream_si128(d + i + 2, a2);
        _mm_stream_si128(d + i + 3, a3);
      }
      _mm_sfence();
    }
  };
  const Stats plain = time_it(kiln::Device::cpu(), 1, reps, copy);
  std::memset(dst.get(), 0, bytes);
  const Stats streamed = time_it(kiln::Device::cpu(), 1, reps, stream_copy);
  // A roof from a copy that copied nothing is no roof.
  if (std::memcmp(src.get(), dst.get(), bytes) != 0)
    throw std::runtime_error("the streaming-store copy of the bandwidth probe did not copy its source");
  const bool stream_wins = streamed.min_ms < plain.min_ms;
  bw = stream_wins ? streamed : plain;
  bw.other_load = std::max(plain.other_load, streamed.other_load);
  m.bandwidth_gbs = 2.0 * static_cast<double>(bytes) / (bw.min_ms * 1e-3) / 1e9;
  char what[160];
  std::snprintf(what, sizeof what, "%s 256 MiB; memcpy %.1f, streaming stores %.1f GB/s",
                stream_wins ? "streaming-store copy" : "memcpy",
                2.0 * static_cast<double>(bytes) / (plain.min_ms * 1e-3) / 1e9,
                2.0 * static_cast<double>(bytes) / (streamed.min_ms * 1e-3) / 1e9);
  m.copy_size = what;
}

// A GPU's roofs, through kiln's public API: the backend's GEMM (kiln::linear, 8192^3;
// TF32 where compute_options allow it, as every GEMM of the run) and a 2 GiB device copy.
void measure_gpu_roofs(kiln::Device device, MachineLimits& m, int reps, Stats& g, Stats& bw) {
  const int64_t n = 8192;
  const auto [a, b] = peak_operands(n);
  // linear computes y = x w^T: x = a, w = b.
  const Tensor x = Tensor::from_vector(a, Shape{n, n}).to(device);
  const Tensor w = Tensor::from_vector(b, Shape{n, n}).to(device);
  kiln::Backend& be = kiln::backend_for(device);
  Tensor y = Tensor::empty(Shape{n, n}, kiln::TensorOptions{kiln::DType::f32, device});
  g = time_it(device, 1, reps, [&] { be.linear_forward(x, w, Tensor(), y); });
  const Tensor y_host = y.cpu();
  const float* yp = y_host.data<float>();
  check_peak_gemm("the GPU's GEMM (kiln linear)", n, a, b, true, [&](int64_t i, int64_t j) { return yp[i * n + j]; });
  const bool tf32 = kiln::compute_options().matmul_tf32;
  m.peak_gflops = 2.0 * n * n * n / (g.min_ms * 1e-3) / 1e9;
  m.sgemm_shape = std::string("kiln linear ") + (tf32 ? "TF32" : "fp32") + " 8192^3";
  // TF32 convolutions (KILN_TF32=conv, the default) run on tensor cores: their roof is a
  // TF32 GEMM, measured with GEMMs switched to TF32 for this one timing.
  if (tf32) {
    m.peak_tf32_gflops = m.peak_gflops;
  } else {
    kiln::ComputeOptions& math = kiln::compute_options();
    math.matmul_tf32 = true;
    try {
      const Stats t = time_it(device, 1, reps, [&] { be.linear_forward(x, w, Tensor(), y); });
      m.peak_tf32_gflops = 2.0 * n * n * n / (t.min_ms * 1e-3) / 1e9;
      g.other_load = std::max(g.other_load, t.other_load);
    } catch (const std::exception& e) {  // its rows print '-'; the fp32 ones need no TF32 roof
      m.peaks_from = std::string(" (TF32 not measured: ") + e.what() + ")";
    }
    math.matmul_tf32 = false;
  }
  m.peaks_from = "TF32 and bf16: kiln linear 8192^3" + m.peaks_from;
  m.peak_bf16_gflops = measure_bf16_peak(device, n, reps, g.other_load, m.peaks_from);

  const int64_t bytes = int64_t{1} << 31;  // 2 GiB each way: far past a GPU's L2
  const Tensor src = Tensor::zeros(Shape{bytes}, kiln::TensorOptions{kiln::DType::u8, device});
  Tensor dst = Tensor::empty(Shape{bytes}, kiln::TensorOptions{kiln::DType::u8, device});
  bw = time_it(device, 1, reps, [&] { dst.copy_from(src); });
  m.bandwidth_gbs = 2.0 * static_cast<double>(bytes) / (bw.min_ms * 1e-3) / 1e9;
  m.copy_size = "device copy 2 GiB";
}

}  // namespace

// The roofs every row is measured against: what this device does at its best, measured
// now (measure_cpu_roofs, measure_gpu_roofs).
MachineLimits measure_limits(kiln::Device device, int threads, int repeat) {
  MachineLimits m = unmeasured_limits(device, threads);
  const int reps = std::max(3, repeat);
  Stats g, bw;
  if (device.is_cpu()) {
    measure_cpu_roofs(m, reps, g, bw);
    cpu_fp32_theoretical(m);
  } else {
    measure_gpu_roofs(device, m, reps, g, bw);
  }
  m.other_load = std::max(g.other_load, bw.other_load);
  return m;
}


MachineLimits unmeasured_limits(kiln::Device device, int threads) {
  MachineLimits m;
  m.device = device.is_cpu() ? cpu_model() : kiln::device_name(device);
  if (std::ifstream f("/proc/loadavg"); f) {
    double one = 0, five = 0, fifteen = 0;
    f >> one >> five >> fifteen;
    std::ostringstream os;
    os << one << " " << five << " " << fifteen;
    m.loadavg = os.str();
  }
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  char stamp[32] = "unknown";
  if (gmtime_r(&now, &utc)) std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  m.started_utc = stamp;
  m.threads = threads;
  m.sgemm_shape = m.copy_size = "not measured (--only)";
  return m;
}

Row make_row(std::string name, std::string kind, std::string shape, double flops, double bytes, Math math) {
  Row r;
  r.name = std::move(name);
  r.kind = std::move(kind);
  r.shape = std::move(shape);
  r.flops = flops;
  r.bytes = bytes;
  r.math = math;
  return r;
}

double gflops(const Row& r) { return r.timed ? r.flops / (r.t.median_ms * 1e-3) / 1e9 : 0; }
double gbs(const Row& r) { return r.timed ? r.bytes / (r.t.median_ms * 1e-3) / 1e9 : 0; }

// --profile: one more run of fn with each op timed alone, its `top` costliest lines indented
// under the row (the table's total is the ops' sum; the row's median is the free-running time).
// Rows that call the backend directly leave no op records: said once per suite, not as empty
// tables; a view (no bytes moved) has nothing to profile either way.
static void print_profile(const Row& row, const std::function<void()>& fn, int top, SuiteResult& res) {
  kiln::Profiler p(true);
  fn();
  p.stop();
  if (p.rows().empty()) {
    if (!res.profile_said_empty && row.bytes > 0)
      std::printf("    --profile: this suite's rows call the backend (or the image code) directly, not through "
                  "kiln's ops, so there are no op records to show\n");
    res.profile_said_empty = res.profile_said_empty || row.bytes > 0;
    return;
  }
  std::istringstream lines(p.table(static_cast<size_t>(top)));
  for (std::string l; std::getline(lines, l);) std::printf("    %s\n", l.c_str());
}

namespace {
std::function<void(const SuiteResult&)>& row_listener() {
  static std::function<void(const SuiteResult&)> listener;
  return listener;
}
}  // namespace

void set_row_listener(std::function<void(const SuiteResult&)> listener) { row_listener() = std::move(listener); }

void time_checked_row(Row row, const Options& opt, const MachineLimits& m, SuiteResult& res,
                      const std::function<void()>& fn) {
  if (row.check_ok) {
    row.t = time_it(bench_device(opt), opt.warmup, opt.repeat, fn);
    row.timed = true;
  } else {
    res.all_checks_ok = false;
  }
  print_row(row, m);
  if (!row.check_ok) std::printf("  check failed: %s\n", row.check.c_str());
  if (row.check_ok && opt.profile > 0) print_profile(row, fn, opt.profile, res);
  res.rows.push_back(std::move(row));
  if (row_listener()) row_listener()(res);
}

// The fraction of the roofline: the attainable rate is min(peak, intensity * bandwidth),
// so a memory-bound row (a pool, an fc at small batch) is judged against the bandwidth.
const char* math_name(Math m) { return m == Math::bf16 ? "bf16" : m == Math::tf32 ? "tf32" : "fp32"; }

double peak_of(const Row& r, const MachineLimits& m) {
  switch (r.math) {
    case Math::fp32: return m.peak_gflops;
    case Math::tf32: return m.peak_tf32_gflops;
    case Math::bf16: return m.peak_bf16_gflops;
  }
  return 0;
}

double roof_fraction(const Row& r, const MachineLimits& m) {
  if (!r.timed || r.bytes <= 0 || m.bandwidth_gbs <= 0) return std::nan("");
  if (r.flops > 0 && peak_of(r, m) <= 0) return std::nan("");  // no roof of its math measured: not judged
  const double attainable = std::min(peak_of(r, m), r.flops / r.bytes * m.bandwidth_gbs);
  if (attainable <= 0) return gbs(r) / m.bandwidth_gbs;
  return gflops(r) / attainable;
}

const char* bound_of(const Row& r, const MachineLimits& m) {
  if (r.bytes <= 0 || peak_of(r, m) <= 0) return "-";  // a view (no data moved), or no limits measured
  return r.flops / r.bytes * m.bandwidth_gbs < peak_of(r, m) ? "mem" : "flop";
}

namespace {
int g_name_w = 10, g_shape_w = 34;
}  // namespace

void set_table_widths(int name_width, int shape_width) {
  g_name_w = std::max(10, name_width);
  g_shape_w = std::max(34, shape_width);
}

void print_table_header() {
  std::printf("%-*s %-*s %9s %9s %9s %8s %6s %7s %5s %5s %5s  %s\n", g_name_w, "layer", g_shape_w, "shape", "median ms", "min ms",
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
    std::printf("%-*s %-*s %9s %9s %9s %8s %6s %7s %5s %5s %5s  %s\n", g_name_w, r.name.c_str(), g_shape_w,
                r.shape.c_str(), "-", "-",
                "-", "-", "-", "-", "-", "-", "-", check.c_str());
    return;
  }
  // Rows without arithmetic (copies, the image pipeline) have no GFLOP/s to show.
  char rate[16] = "-", of_peak[16] = "-", of_roof[16] = "-";
  const char* mark = m.disturbed() ? "?" : "";  // a fraction of a limit measured low
  if (r.flops > 0) {
    std::snprintf(rate, sizeof rate, "%.1f", gflops(r));
    if (peak_of(r, m) > 0)
      std::snprintf(of_peak, sizeof of_peak, "%.1f%%%s", 100.0 * gflops(r) / peak_of(r, m), mark);
  }
  if (const double roof = roof_fraction(r, m); !std::isnan(roof))
    std::snprintf(of_roof, sizeof of_roof, "%.0f%%%s", 100.0 * roof, mark);
  std::printf("%-*s %-*s %9.3f %9.3f %9.3f %8s %6s %7.2f %5s %5s %4.0f%%%s %s\n", g_name_w, r.name.c_str(),
              g_shape_w, r.shape.c_str(), r.t.median_ms, r.t.min_ms, r.t.max_ms, rate, of_peak, gbs(r), bound_of(r, m),
              of_roof, 100.0 * r.t.other_load, r.t.other_load > kDisturbed ? "!" : " ", check.c_str());
  std::fflush(stdout);
}

void check_row(Row& row, size_t n, const std::function<double(size_t)>& out,
               const std::function<double(size_t)>& ref, double rtol, const std::string& what) {
  const kiln::check::Comparison c = kiln::check::compare(n, out, ref, rtol * kiln::check::mean_abs(n, ref), rtol);
  const std::string report = (what.empty() ? "" : what + ": ") + (n > 0 ? c.report : "nothing was checked");
  const bool first = !row.checked;
  row.check_ok = (first || row.check_ok) && c.ok && n > 0;
  row.check_budget = first ? c.worst_budget : std::max(row.check_budget, c.worst_budget);
  row.check = first ? report : row.check + "; " + report;
  row.checked = true;
}

void check_row(Row& row, const std::vector<double>& out, const std::vector<double>& ref, double rtol,
               const std::string& what) {
  if (out.size() != ref.size())
    KILN_FAIL("kiln_bench: row ", row.name, " checks ", out.size(), " values against ", ref.size(), " references");
  check_row(
      row, out.size(), [&](size_t i) { return out[i]; }, [&](size_t i) { return ref[i]; }, rtol, what);
}

void fail_check(Row& row, const std::string& why) {
  row.checked = true;
  row.check_ok = false;
  row.check += "; FAILED: " + why;
}

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

// The shortest text that reads back as exactly v (integers as integers: 2097152); null for
// NaN and infinities (no value: a row without FLOPs has no GFLOP/s).
std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "null";
}

// ---------------------------------------------------------------- the PyTorch peer

namespace {

// OpenBLAS tuning variables that some machines' environments set (this project's shared
// machine sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE): they pin the peer's OpenBLAS
// to AVX2 kernels on an AVX-512 CPU, so PyTorch's fc rows ran ~3x slow. They are removed
// for the peer's command only (env -u): kiln's own process, the tests and CI keep them.
// The peer then picks its own kernel and checks an sgemm against float64 before timing.
constexpr const char* kPeerUnsetEnv[] = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"};

// "env -u NAME ... " for the variables above that are set here, and says so on stdout.
std::string peer_env_prefix() {
  std::string prefix, said;
  for (const char* name : kPeerUnsetEnv) {
    const char* v = std::getenv(name);
    if (!v) continue;
    prefix += std::string("-u ") + name + " ";
    said += std::string(said.empty() ? "" : ", ") + name + "=" + v;
  }
  if (prefix.empty()) return prefix;
  std::printf("\nthe PyTorch peer runs without %s (they pin OpenBLAS's kernels; kiln keeps them)", said.c_str());
  return "env " + prefix;
}

// Reads the peer's "blas" member (CPU peers) and judges its GEMM rate against the machine's
// sgemm limit. Weak is flagged on every row, not refused: the conv, pool and elementwise
// rows do not go through BLAS and stay honest, and a probe timed beside other work on a
// shared machine can dip below the line, which must not cost a run its whole comparison.
void read_peer_blas(const Json& j, const MachineLimits& m, PeerResult& p) {
  const Json* b = j.find("blas");
  if (!b || b->kind != Json::Kind::object) return;
  const Json* core = b->find("openblas_core");
  const Json* lib = b->find("library");
  const Json* config = b->find("openblas_config");  // "OpenBLAS 0.3.21 DYNAMIC_ARCH ... Haswell ..."
  if (core && core->kind == Json::Kind::string) {
    const std::string version = config && config->kind == Json::Kind::string
                                    ? config->str.substr(0, config->str.find(' ', config->str.find(' ') + 1))
                                    : std::string("OpenBLAS");
    p.blas = version + " core " + core->str;
  }
  else p.blas = "not OpenBLAS: " + (lib && lib->kind == Json::Kind::string ? lib->str : std::string("unknown"));
  const Json* probe = b->find("sgemm_probe");
  const std::optional<double> rate = probe ? probe->number("gflops") : std::nullopt;
  if (!rate || m.peak_gflops <= 0) return;
  p.sgemm_gflops = *rate;
  const Json* shape = probe->find("shape");
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s %.1f GFLOP/s = %.0f%% of this machine's sgemm limit %.1f",
                shape && shape->kind == Json::Kind::string ? shape->str.c_str() : "sgemm", *rate,
                100.0 * *rate / m.peak_gflops, m.peak_gflops);
  p.blas += std::string(", ") + buf;
  if (*rate < kWeakPeer * m.peak_gflops) {
    p.weak = true;
    std::snprintf(buf, sizeof buf, "the peer's GEMM runs at %.0f%% of this machine's sgemm limit (under %.0f%%)",
                  100.0 * *rate / m.peak_gflops, 100.0 * kWeakPeer);
    const bool openblas = core && core->kind == Json::Kind::string;
    p.weak_why = std::string(buf) + ": its BLAS (" + p.blas.substr(0, p.blas.find(',')) +
                 ") is slow here, so the ratios of rows that use GEMM (fc, the steps, the forward) measure that "
                 "install, not PyTorch; " +
                 (openblas ? "check the OPENBLAS_* variables the peer saw (its JSON, \"blas\")"
                           : "install an optimised BLAS (bash scripts/setup.sh --tests installs libopenblas0-pthread)");
    // Either rate measured beside other work can put an honest peer under the line.
    if (probe->number("other_load").value_or(0) > kDisturbed || m.other_load > kDisturbed)
      p.weak_why += " -- other processes took CPU time while the limit or the peer's probe ran, so load may "
                    "account for part of this: rerun on a quiet machine";
  }
}

// The peers' interpreter: $KILN_PYTHON, else /usr/bin/python3.
std::string peer_python() {
  const char* env_python = std::getenv("KILN_PYTHON");
  return env_python && *env_python ? env_python : "/usr/bin/python3";
}

// s in single quotes for /bin/sh (the peer's command line goes through popen).
std::string quote(const std::string& s) {
  std::string q = "'";
  for (const char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

// What a peer's exit status says, for people: 127 (the shell found no interpreter), 2 (no
// torch), 3 (a wrong GEMM), else a failure of the script.
std::string peer_failure(int code, const std::string& python) {
  return code == 127 ? "interpreter " + python + " not found (set KILN_PYTHON)"
         : code == 2 ? "PyTorch is not importable by " + python + " (set KILN_PYTHON to one that has it)"
         : code == 3 ? "PyTorch's fp32 GEMM computes WRONG products on this machine (the peer's message above "
                       "names its BLAS and the worst element); timings of wrong results compare nothing"
                     : "the peer script failed (exit status " + std::to_string(code) + ", see its message above)";
}

}  // namespace

void check_peer_python(const Suite& suite) {
  if (!suite.peer_script) return;
  const std::string python = peer_python();
  const std::string script = std::string(KILN_SOURCE_DIR) + "/" + suite.peer_script;
  if (!std::ifstream(script)) throw std::invalid_argument("--compare: peer script " + script + " not found");
  // The script's --help: its imports (torch, and torchvision where it needs it) and nothing more.
  const int status = std::system((quote(python) + " " + quote(script) + " --help >/dev/null 2>&1").c_str());
  const int code = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == 0) return;
  // 126: found but not executable; any other failure: no usable torch there.
  throw std::invalid_argument("--compare: " + peer_failure(code == 126 || code == 127 ? 127 : 2, python));
}

// Runs the peer script with the same batch, repeat and threads; it prints JSON on stdout
// (its stderr goes to the terminal).
PeerResult run_peer(const Suite& suite, const Options& opt, const MachineLimits& m) {
  PeerResult p;
  const std::string python = peer_python();
  const std::string script = std::string(KILN_SOURCE_DIR) + "/" + suite.peer_script;
  if (!std::ifstream(script)) {
    p.why = "peer script " + script + " not found";
    return p;
  }
  std::string batch = std::to_string(opt.batch);
  if (suite.sweeps_batches) {
    batch.clear();
    for (const int64_t b : opt.batches) batch += (batch.empty() ? "" : ",") + std::to_string(b);
    if (batch.empty()) batch = "default";  // the peer's own list, the same as the suite's
  }
  const std::string env = opt.device == "cpu" ? peer_env_prefix() : std::string();
  const std::string cmd = env + quote(python) + " " + quote(script) + " --batch " + batch +
                          " --cache " + (opt.cold_cache ? "cold" : "warm") + " --repeat " + std::to_string(opt.repeat) + " --warmup " + std::to_string(opt.warmup) +
                          " --threads " + std::to_string(opt.threads) +
                          (suite.peer_takes_suite ? " --suite " + quote(suite.name) : std::string()) +
                          (suite.peer_takes_data ? " --dir " + quote(opt.data_dir) : std::string()) +
                          (suite.peer_takes_plan ? " --plan " + quote(peer_plan_file(opt)) : std::string()) +
                          (opt.device == "cuda" ? " --device cuda --conv-search " + opt.conv_search +
                                                      " --tf32 " + std::string(kiln::tf32_mode())
                                                : std::string());
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
    p.refused = code == 3;
    p.why = peer_failure(code, python);
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
      const Json* note = r.find("note");  // the peer's caveat (torch_pipeline.py: no decode cache)
      p.rows.emplace_back(name->str, PeerRow{Stats{*med, lo.value_or(*med), hi.value_or(*med),
                                                   r.number("other_load").value_or(0)},
                                             note && note->kind == Json::Kind::string ? note->str : ""});
    }
    if (const Json* s = j.find("summary"); s && s->kind == Json::Kind::object)
      for (const auto& [k, v] : s->obj)
        if (v.kind == Json::Kind::number) p.summary.emplace_back(k, v.num);
    read_peer_blas(j, m, p);
    p.ok = true;
  } catch (const std::exception& e) {
    p.why = std::string("could not read the peer's output (") + e.what() + ")";
  }
  return p;
}

namespace {
// " (torch: NOTE)" after a compared row whose peer row says what its time is not, else "".
std::string peer_note(const std::string& note) { return note.empty() ? "" : " (torch: " + note + ")"; }
}  // namespace

void print_comparison(const SuiteResult& res, const PeerResult& peer) {
  std::printf("\nkiln vs %s (ratio = torch ms / kiln ms; > 1 means kiln is faster)\n", peer.label.c_str());
  if (!peer.blas.empty()) std::printf("peer BLAS: %s\n", peer.blas.c_str());
  if (peer.weak)
    std::printf("WEAK PEER: %s. Every row below is marked WEAK PEER.\n", peer.weak_why.c_str());
  const char* weak_mark = peer.weak ? " WEAK PEER" : "";
  std::printf("%-*s %10s %10s %7s   %21s %21s  %s\n", g_name_w, "layer", "kiln ms", "torch ms", "ratio", "kiln min..max",
              "torch min..max", "other kiln/torch");
  for (const Row& r : res.rows) {
    const PeerRow* t = peer.row(r.name);
    if (!r.timed || !t) {
      // Variant rows ("name@how") are kiln's other ways to do the op: PyTorch has no twin.
      const bool variant = r.name.find('@') != std::string::npos;
      if (r.timed)
        std::printf("%-*s %10.3f %10s %7s   %9.3f..%-9.3f %21s %s\n", g_name_w, r.name.c_str(), r.t.median_ms, "-",
                    "-", r.t.min_ms, r.t.max_ms, "", variant ? "(a kiln variant: no peer row)" : "(no peer row)");
      else
        std::printf("%-*s %10s %10s %7s\n", g_name_w, r.name.c_str(), "-", t ? "" : "-", "-");
      continue;
    }
    const bool disturbed = r.t.other_load > kDisturbed || t->t.other_load > kDisturbed;
    std::printf("%-*s %10.3f %10.3f %7.2f   %9.3f..%-9.3f %9.3f..%-9.3f %5.0f%%/%.0f%%%s%s%s\n", g_name_w,
                r.name.c_str(),
                r.t.median_ms, t->t.median_ms, t->t.median_ms / r.t.median_ms, r.t.min_ms, r.t.max_ms, t->t.min_ms,
                t->t.max_ms, 100.0 * r.t.other_load, 100.0 * t->t.other_load, disturbed ? " !" : "",
                peer_note(t->note).c_str(), weak_mark);
  }
  // The peer's own variants (torch.compile): PyTorch's other ways, shown beside kiln's rows.
  for (const auto& [name, t] : peer.rows) {
    const bool kiln_has = std::any_of(res.rows.begin(), res.rows.end(), [&](const Row& r) { return r.name == name; });
    if (!kiln_has)
      std::printf("%-*s %10s %10.3f %7s   %21s %9.3f..%-9.3f %s\n", g_name_w, name.c_str(), "-", t.t.median_ms, "-",
                  "", t.t.min_ms, t.t.max_ms, "(a PyTorch variant: no kiln row)");
  }
  for (const auto& [k, v] : res.summary) {
    for (const auto& [pk, pv] : peer.summary) {
      if (pk != k) continue;
      // Times (…_ms) compare as the rows do, torch / kiln; rates (…_per_s) as kiln / torch:
      // either way, above 1 means kiln is faster.
      const bool time = k.size() > 3 && k.compare(k.size() - 3, 3, "_ms") == 0;
      // A summary named after a row ("loader/w2/cached_img_per_s") carries that row's peer note.
      const PeerRow* row = peer.row(k.substr(0, k.rfind("_img_per_s")));
      std::printf("%s: kiln %.2f, torch %.2f, %s %.2f%s%s\n", k.c_str(), v, pv, time ? "torch/kiln" : "kiln/torch",
                  time ? pv / v : v / pv, row ? peer_note(row->note).c_str() : "", weak_mark);
    }
  }
}

// ---------------------------------------------------------------- JSON report

namespace {

// A suite's "rows", "summary" and "peer" members.
void json_suite_body(std::ostringstream& js, const MachineLimits& m, const SuiteResult& res,
                     const std::optional<PeerResult>& peer) {
  const double nan = std::nan("");  // written as null
  js << "  \"rows\": [\n";
  for (size_t i = 0; i < res.rows.size(); ++i) {
    const Row& r = res.rows[i];
    js << "    {\"name\": " << json_str(r.name) << ", \"kind\": " << json_str(r.kind) << ", \"shape\": "
       << json_str(r.shape) << ", \"flops\": " << json_num(r.flops) << ", \"bytes\": " << json_num(r.bytes)
       << ", \"check_ok\": " << (r.check_ok ? "true" : "false") << ", \"check_budget_used\": "
       << json_num(r.check_budget) << ", \"check\": " << json_str(r.check);
    if (r.timed) {
      js << ", \"median_ms\": " << json_num(r.t.median_ms) << ", \"min_ms\": " << json_num(r.t.min_ms)
         << ", \"max_ms\": " << json_num(r.t.max_ms) << ", \"gflops\": " << json_num(r.flops > 0 ? gflops(r) : nan)
         << ", \"math\": \"" << math_name(r.math) << "\", \"fraction_of_peak\": "
         << json_num(r.flops > 0 ? gflops(r) / peak_of(r, m) : nan)
         << ", \"gbs\": " << json_num(gbs(r))
         << ", \"fraction_of_roof\": " << json_num(roof_fraction(r, m))
         << ", \"runs\": " << r.t.runs << ", \"other_load\": " << json_num(r.t.other_load);
    }
    if (peer && peer->ok) {
      if (const PeerRow* t = peer->row(r.name)) {
        js << ", \"torch_median_ms\": " << json_num(t->t.median_ms) << ", \"torch_min_ms\": "
           << json_num(t->t.min_ms) << ", \"torch_max_ms\": " << json_num(t->t.max_ms)
           << ", \"torch_other_load\": " << json_num(t->t.other_load);
        if (!t->note.empty()) js << ", \"torch_note\": " << json_str(t->note);
        if (r.timed) js << ", \"ratio_torch_over_kiln\": " << json_num(t->t.median_ms / r.t.median_ms);
        if (peer->weak) js << ", \"torch_weak_peer\": true";
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
      js << ", \"label\": " << json_str(peer->label);
      if (!peer->blas.empty())
        js << ", \"blas\": " << json_str(peer->blas) << ", \"sgemm_gflops\": " << json_num(peer->sgemm_gflops)
           << ", \"sgemm_fraction_of_peak\": " << json_num(peer->sgemm_gflops / m.peak_gflops)
           << ", \"weak\": " << (peer->weak ? "true" : "false");
      if (peer->weak) js << ", \"weak_why\": " << json_str(peer->weak_why);
      js << ", \"summary\": {";
      for (size_t i = 0; i < peer->summary.size(); ++i)
        js << (i ? ", " : "") << json_str(peer->summary[i].first) << ": " << json_num(peer->summary[i].second);
      js << "}, \"rows\": [";  // every peer row, its own variants (torch.compile) included
      for (size_t i = 0; i < peer->rows.size(); ++i)
        js << (i ? ", " : "") << "{\"name\": " << json_str(peer->rows[i].first)
           << ", \"median_ms\": " << json_num(peer->rows[i].second.t.median_ms) << "}";
      js << "]";
    } else {
      js << ", \"refused\": " << (peer->refused ? "true" : "false") << ", \"why\": " << json_str(peer->why);
    }
    js << "}";
  }
}

}  // namespace

void write_json(const std::string& path, const Options& opt, const MachineLimits& m,
                const std::vector<SuiteReport>& reports) {
  std::ostringstream js;
  const dnnl_version_t* dv = dnnl_version();
  js << "{\n  \"suite\": " << json_str(reports.size() == 1 ? std::string(reports[0].suite->name) : opt.suite) << ",\n";
  js << "  \"kiln_commit\": " << json_str(KILN_BENCH_COMMIT) << ", \"timestamp_utc\": " << json_str(m.started_utc)
     << ", \"command\": " << json_str(opt.command_line) << ",\n";
  // The batch only where a suite of the report reads it (conv, step, vgg16_forward).
  const bool batched =
      std::any_of(reports.begin(), reports.end(), [](const SuiteReport& r) { return takes_batch(*r.suite); });
  js << "  \"options\": {";
  if (batched) js << "\"batch\": " << opt.batch << ", ";
  js << "\"repeat\": " << opt.repeat << ", \"warmup\": " << opt.warmup
     << ", \"threads\": " << opt.threads
     << ", \"cache\": \"" << (opt.cold_cache ? "cold" : "warm") << "\", \"device\": " << json_str(opt.device)
     << ", \"tf32\": " << json_str(kiln::tf32_mode())
     << ", \"conv_api\": " << json_str(kiln::conv_api_name(kiln::conv_api()))
     << ", \"conv_fuse\": " << (kiln::conv_fuse() ? "true" : "false") << "},\n";
  js << "  \"machine\": {\"device\": " << json_str(m.device) << ", \"threads\": " << m.threads
     << ", \"peak_gflops\": " << json_num(m.peak_gflops) << ", \"peak_from\": " << json_str(m.sgemm_shape)
     << ", \"peak_tf32_gflops\": " << json_num(m.peak_tf32_gflops) << ", \"peak_bf16_gflops\": "
     << json_num(m.peak_bf16_gflops) << ", \"peaks_from\": " << json_str(m.peaks_from)
     << ", \"loadavg\": " << json_str(m.loadavg) << ", \"other_load\": " << json_num(m.other_load) << ", \"bandwidth_gbs\": " << json_num(m.bandwidth_gbs) << ", \"bandwidth_from\": " << json_str(m.copy_size)
     << ", \"onednn\": \"" << dv->major << "." << dv->minor << "." << dv->patch << "\"";
  if (m.theoretical_gflops > 0)
    js << ", \"theoretical_gflops\": " << json_num(m.theoretical_gflops) << ", \"theoretical_from\": "
       << json_str(m.theoretical_from);
  js << "},\n";
  if (reports.size() == 1) {
    json_suite_body(js, m, reports[0].res, reports[0].peer);
  } else {
    js << "  \"suites\": [\n";
    for (size_t k = 0; k < reports.size(); ++k) {
      js << "  {\"suite\": " << json_str(reports[k].suite->name) << ",\n";
      json_suite_body(js, m, reports[k].res, reports[k].peer);
      js << "}" << (k + 1 < reports.size() ? "," : "") << "\n";
    }
    js << "  ]";
  }
  js << "\n}\n";
  // Written whole, then renamed: a reader never sees half a report.
  kiln::io::write_file_atomic(path, js.str());
}

const kiln::ModelSpec& bench_model() { return kiln::find_model_spec("vgg16"); }

std::vector<kiln::LayerPlan> vgg16_plan(int64_t classes) { return bench_model().plan(kiln::ModelOptions{classes}); }

std::vector<kiln::LayerPlan> vgg16_layers(kiln::LayerPlan::Kind kind) {
  std::vector<kiln::LayerPlan> out;
  for (kiln::LayerPlan& l : vgg16_plan())
    if (l.kind == kind) out.push_back(std::move(l));
  return out;
}

kiln::LayerPlan vgg16_layer(const std::string& name) {
  for (kiln::LayerPlan& l : vgg16_plan())
    if (l.name == name) return std::move(l);
  KILN_FAIL("kiln_bench: ", bench_model().name, " has no layer '", name, "'");
}

std::vector<kiln::LayerPlan> vgg16_convs() { return vgg16_layers(kiln::LayerPlan::Kind::conv); }

namespace {

// Conv and fc terms of a forward's cost, as forward_cost counts them.
void add_conv(double n, int64_t in, int64_t c, int64_t o, int64_t k, int64_t out, double& flops, double& bytes) {
  const double kk = static_cast<double>(k * k);
  flops += 2.0 * n * out * out * o * kk * c;
  bytes += 4.0 * (n * (static_cast<double>(in) * in * c + static_cast<double>(out) * out * o) + o * kk * c + o);
}
void add_fc(double n, int64_t c, int64_t o, double& flops, double& bytes) {
  flops += 2.0 * n * c * o;
  bytes += 4.0 * (n * (c + o) + static_cast<double>(c) * o + o);
}

// ResNet-50's options when `spec` is one of its variants (the spec registers no plan).
std::optional<kiln::ResNetOptions> resnet_options(const kiln::ModelSpec& spec, int64_t classes) {
  if (spec.name == "resnet50") return kiln::ResNetOptions{kiln::ResNetVariant::v1_5, classes, spec.default_image_size};
  if (spec.name == "resnet50_v1") return kiln::ResNetOptions{kiln::ResNetVariant::v1, classes, spec.default_image_size};
  return std::nullopt;
}

}  // namespace

std::pair<double, double> forward_cost(const kiln::ModelSpec& spec, int64_t n, int64_t classes) {
  double flops = 0, bytes = 0;
  const double nd = static_cast<double>(n);
  if (const auto ro = resnet_options(spec, classes)) {
    int64_t channels = 0, side = 0;
    for (const kiln::ResNetConv& c : kiln::resnet50_convs(*ro)) {
      const int64_t out = kiln::window_out_size(c.in_size, c.kernel, c.stride, c.pad);
      add_conv(nd, c.in_size, c.in_channels, c.out_channels, c.kernel, out, flops, bytes);
      // Its batch norm reads and writes the conv's output once more.
      bytes += 2.0 * 4.0 * nd * out * out * c.out_channels;
      channels = c.out_channels;
      side = out;
    }
    bytes += 4.0 * nd * side * side * channels;  // global average pooling reads the last map
    add_fc(nd, channels, classes, flops, bytes);
    return {flops, bytes};
  }
  const std::vector<kiln::LayerPlan> plan = spec.plan(kiln::ModelOptions{classes});
  if (plan.empty()) KILN_FAIL("kiln_bench: no cost model for ", spec.name, " (it has no layer plan)");
  for (const kiln::LayerPlan& l : plan) {
    const int64_t h = l.in_size, o = l.out_channels;
    switch (l.kind) {
      case kiln::LayerPlan::Kind::conv:
        add_conv(nd, h, l.in_channels, o, l.kernel, l.out_size, flops, bytes);
        break;
      case kiln::LayerPlan::Kind::pool:  // reads its block's output, writes a quarter of it
      case kiln::LayerPlan::Kind::adaptive_avg_pool:  // reads the map, writes its grid
        bytes += 4.0 * nd * (h * h + l.out_size * l.out_size) * o;
        break;
      case kiln::LayerPlan::Kind::fc:
        add_fc(nd, l.in_channels, o, flops, bytes);
        break;
    }
  }
  return {flops, bytes};
}

namespace {
// The plan file handed to peer scripts, removed at exit.
struct PlanFile {
  std::string path;
  ~PlanFile() {
    if (!path.empty()) std::remove(path.c_str());
  }
};
}  // namespace

std::string peer_plan_file(const Options& opt) {
  static PlanFile file;  // one model per process: the step suite's, else the bench model
  if (file.path.empty()) {
    const kiln::ModelSpec& spec = kiln::find_model_spec(opt.model);
    const std::string p = "/tmp/kiln_bench_plan_" + std::to_string(getpid()) + ".json";
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << kiln::plan_json(spec, 0, spec.default_num_classes);
    if (!f.flush()) throw std::runtime_error("could not write the model plan for the peer script to " + p);
    file.path = p;
  }
  return file.path;
}

std::vector<int64_t> batches_or(const Options& opt, std::vector<int64_t> fallback) {
  return opt.batches.empty() ? fallback : opt.batches;
}

int64_t parse_int(const std::string& flag, const char* v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || errno == ERANGE || x < lo || x > hi)
    throw std::invalid_argument(flag + " expects an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
                                ", got '" + v + "'");
  return x;
}

}  // namespace kiln::bench
