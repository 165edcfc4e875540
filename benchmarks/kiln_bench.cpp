// kiln_bench: benchmarks that check each kernel against a double-precision reference
// before timing it, and report the time against the device's own measured limits (an
// fp32 GEMM peak and a copy bandwidth) and, with --compare, against PyTorch on the same
// shapes and device. Suites live in one table (kSuites), one file each (suite_*.cpp); a suite returns
// rows, and a suite with a peer script is compared row by row, by name. The machinery they
// share (timing, limits, rows, checks, peers, JSON) is in bench_common.{h,cpp}.
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/backend.h"

namespace kiln::bench {
namespace {

// ---------------------------------------------------------------- the suite table

const char* const kCpuPeer = "benchmarks/torch_cpu_peer.py";
constexpr int64_t kMaxBatch = 65536;  // --batch's largest size

const Suite kSuites[] = {
    {.name = "vgg16_forward", .help = "VGG16 inference: each conv(+relu), pool and fc layer, then the whole forward",
     .run = run_vgg16_forward, .peer_script = "benchmarks/torch_vgg16_forward.py", .takes_batch = true},
    {.name = "conv", .help = "VGG16's 13 convs at batch 1, 8, 64: forward, backward-data, backward-filter",
     .run = run_conv, .peer_script = kCpuPeer, .peer_takes_suite = true, .sweeps_batches = true, .on_cuda = true},
    {.name = "step", .help = "VGG16 steps as vgg_finetune runs them: inference, fc8-only (phase 1), all layers (phase 2); "
             "--model resnet50 for ResNet-50's",
     .run = run_step, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true, .takes_batch = true},
    {.name = "gemm", .help = "kiln::linear at VGG16's fc shapes (batch 1, 8, 64) and square 1024, 2048",
     .run = run_gemm, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "pool",
     .help = "max_pool2d 2x2/2 forward and backward at VGG16's 5 pool inputs, and adaptive_avg_pool2d (pool5 to 7x7, "
             "global), batch 8",
     .run = run_pool, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "norm",
     .help = "batch_norm2d at ResNet-50's shapes (batch 8): training forward and backward, inference forward",
     .run = run_norm, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true, .peer_takes_plan = false},
    {.name = "softmax_ce", .help = "fused softmax cross-entropy forward and backward, batch 64..1024 x classes 8, 1000",
     .run = run_softmax_ce, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "elementwise",
     .help = "relu, relu backward, dropout, add, div, a per-channel add and its sum_to, transpose, "
             "exp/log/sqrt/tanh/sigmoid/gelu/silu/abs/softplus (conv3_3 only), fill_uniform, fill_normal at VGG16 "
             "activation sizes (batch 8)",
     .run = run_elementwise, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "sgd",
     .help = "multi-tensor SGD (momentum, weight decay) and Adam over VGG16's 32 parameters, all and fc8-only; "
             "@per_tensor",
     .run = run_sgd, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "copy", .help = "tensor copies within the device, 1 to 256 MiB; on a GPU also H2D/D2H, pinned and pageable",
     .run = run_copy, .peer_script = kCpuPeer, .peer_takes_suite = true, .on_cuda = true},
    {.name = "pipeline",
     .help = "image pipeline on generated JPEGs: decode, transforms, the loader at 1..all threads; @device_atlas",
     .run = run_pipeline, .peer_script = "benchmarks/torch_pipeline.py", .peer_takes_data = true,
     .peer_takes_plan = false},
    {.name = "ops",
     .help = "every case of the op table (check/op_cases.h), forward, checked against the CPU; its own small shapes",
     .run = run_ops, .peer_script = nullptr, .on_cuda = true, .peer_takes_plan = false},
};

// ---------------------------------------------------------------- main

// --suite all, or one name, or several separated by commas; on a GPU the suites marked
// on_cuda, with conv and step the default there (VGG16's convs and whole steps).
std::vector<const Suite*> select_suites(const Options& opt, bool cuda) {
  std::vector<const Suite*> suites;
  std::stringstream ss(cuda && opt.suite == "vgg16_forward" ? std::string("conv,step") : opt.suite);
  for (std::string n; std::getline(ss, n, ',');) {
    if (n == "all") {
      for (const Suite& s : kSuites)
        if (!cuda || s.on_cuda) suites.push_back(&s);
      continue;
    }
    const Suite* suite = nullptr;
    for (const Suite& s : kSuites)
      if (n == s.name) suite = &s;
    if (!suite) {
      std::string names;
      for (const Suite& s : kSuites) names += std::string(names.empty() ? "" : ", ") + s.name;
      throw std::invalid_argument("unknown suite '" + n + "' (have: " + names + ", all)");
    }
    if (cuda && !suite->on_cuda) {
      std::string names;
      for (const Suite& s : kSuites)
        if (s.on_cuda) names += std::string(names.empty() ? "" : ", ") + s.name;
      throw std::invalid_argument("suite " + n + " runs on the CPU only; with --device cuda: " + names + ", all");
    }
    if (!opt.batches.empty() && !takes_batch(*suite)) {  // named, not through all: it would ignore --batch
      std::string readers;
      for (const Suite& s : kSuites)
        if (takes_batch(s)) readers += std::string(readers.empty() ? "" : ", ") + s.name;
      throw std::invalid_argument("--batch: suite " + n + " times its own fixed shapes and takes no batch size "
                                  "(--batch goes with " + readers + ")");
    }
    suites.push_back(suite);
  }
  if (suites.empty()) throw std::invalid_argument("--suite needs a name");
  if (opt.batches.size() > 1) {
    for (const Suite* s : suites)
      if (!s->sweeps_batches)
        throw std::invalid_argument("--batch with a list: suite " + std::string(s->name) +
                                    " takes one batch size (only conv sweeps a list)");
  }
  return suites;
}

// "batch 8, " when a suite of the run reads --batch (those named when others do not), else "".
std::string batch_text(const Options& opt, const std::vector<const Suite*>& suites) {
  std::string readers, list;
  for (const Suite* s : suites)
    if (takes_batch(*s)) readers += (readers.empty() ? "" : ", ") + std::string(s->name);
  if (readers.empty()) return "";
  for (const int64_t b : opt.batches) list += (list.empty() ? "" : ",") + std::to_string(b);
  const bool all_read = std::all_of(suites.begin(), suites.end(), [](const Suite* s) { return takes_batch(*s); });
  return "batch " + (list.empty() ? std::to_string(opt.batch) : list) + (all_read ? "" : " (" + readers + ")") + ", ";
}

// What the run measures against, before its rows: options, the device and its limits, and
// how to read the table's columns.
void print_header(const Options& opt, const std::vector<const Suite*>& suites, const MachineLimits& m) {
  const dnnl_version_t* dv = dnnl_version();
  std::printf("kiln_bench --suite %s: %s%d threads, warmup %d, repeat %d, oneDNN %d.%d.%d\n",
              suites.size() == 1 ? suites[0]->name : opt.suite.c_str(), batch_text(opt, suites).c_str(), opt.threads,
              opt.warmup, opt.repeat, dv->major, dv->minor, dv->patch);
  std::printf("machine: %s, load average %s\n", m.device.c_str(), m.loadavg.c_str());
  if (opt.device == "cuda") std::printf("GPU: %s\n", kiln::gpu_math_summary().c_str());
  std::printf("limits: fp32 peak %.1f GFLOP/s (best %s), bandwidth %.1f GB/s (best %s, read + write)%s\n",
              m.peak_gflops, m.sgemm_shape.c_str(), m.bandwidth_gbs, m.copy_size.c_str(),
              m.disturbed() ? " -- DISTURBED by other processes: they may be measured low, and every fraction of "
                              "them is marked '?'" : "");
  if (m.theoretical_gflops > 0)
    std::printf("        theoretical fp32 %.1f GFLOP/s (from /proc/cpuinfo: %s)\n", m.theoretical_gflops,
                m.theoretical_from.c_str());
  if (m.peak_gflops > 0 && opt.device == "cpu")  // a CPU has no TF32: its fp32 rows all run fp32
    std::printf("        bf16 peak %.1f GFLOP/s (%s; 0: not measured)\n", m.peak_bf16_gflops, m.peaks_from.c_str());
  else if (m.peak_gflops > 0)
    std::printf("        TF32 peak %.1f GFLOP/s, bf16 peak %.1f GFLOP/s (%s; 0: not measured)\n", m.peak_tf32_gflops,
                m.peak_bf16_gflops, m.peaks_from.c_str());
  std::printf("%%peak: of the GEMM peak of the row's math, fp32, TF32 (GPU convs by default) or bf16 (rows @bf16)\n"
              "(a kernel better tuned than that GEMM, or a Winograd convolution, can exceed 100%%); %%roof: of\n"
              "min(peak, FLOP/byte * bandwidth) (a row whose data fits in the last-level cache can exceed 100%%);\n"
              "bound: mem or flop, the lower of those two roofs at the row's FLOP/byte; '-': not measured (--only);\n"
              "cache: %s\n"
              "other: CPU share taken by other processes while timing\n"
              "(! over 10%%: not trustworthy); check: worst |error| / tolerance of the checked elements\n\n",
              opt.cold_cache ? "cold (the last-level cache is evicted before every timed run; --cache warm keeps it)"
                             : "warm (--cache warm: data may stay cache-resident between runs)");
  std::fflush(stdout);
}

// Says last, where it is read, which timings ran beside other work and which peers were
// weak or refused. Returns whether every row's check passed.
bool print_warnings(const std::vector<SuiteReport>& reports, const MachineLimits& m, bool several) {
  std::string disturbed;
  bool all_checks_ok = true;
  for (const SuiteReport& rep : reports) {
    all_checks_ok = all_checks_ok && rep.res.all_checks_ok;
    for (const Row& r : rep.res.rows) {
      const PeerRow* t = rep.peer && rep.peer->ok ? rep.peer->row(r.name) : nullptr;
      if ((r.timed && r.t.other_load > kDisturbed) || (t && t->t.other_load > kDisturbed))
        disturbed += (disturbed.empty() ? "" : ", ") + (several ? std::string(rep.suite->name) + "/" : "") + r.name;
    }
  }
  if (m.other_load > kDisturbed) disturbed = "the peak/bandwidth measurement" + (disturbed.empty() ? "" : ", " + disturbed);
  // A weak or refused peer is said again here, where a reader of the ratios looks last.
  for (const SuiteReport& rep : reports) {
    if (rep.peer && rep.peer->ok && rep.peer->weak)
      std::printf("\nWARNING: WEAK PEER in %s: %s\n", rep.suite->name, rep.peer->weak_why.c_str());
    if (rep.peer && rep.peer->refused)
      std::printf("\nWARNING: PyTorch comparison REFUSED in %s: %s\n", rep.suite->name, rep.peer->why.c_str());
  }
  if (!disturbed.empty())
    std::printf("\nWARNING: other processes took over %.0f%% of the CPUs while timing %s; rerun on a quiet machine\n",
                100.0 * kDisturbed, disturbed.c_str());
  return all_checks_ok;
}

// --conv-search, read by the CUDA backend only (cuDNN's Find or its heuristics); the CPU has
// one way. On a GPU, core's check refuses it with KILN_DETERMINISTIC=1, as it refuses
// KILN_CONV_SEARCH.
void apply_conv_search(const Options& opt, bool cuda) {
  if (opt.conv_search != "exhaustive" && opt.conv_search != "heuristic")
    throw std::invalid_argument("--conv-search must be exhaustive or heuristic, got '" + opt.conv_search + "'");
  kiln::ComputeOptions math = kiln::compute_options();
  math.exhaustive_conv_search = opt.conv_search == "exhaustive";
  if (cuda) {
    try {
      kiln::check_compute_options(math);
    } catch (const std::exception& e) {
      throw std::invalid_argument("--conv-search " + opt.conv_search + " (exhaustive is kiln_bench's default on " +
                                  "CUDA): " + e.what());
    }
  }
  kiln::compute_options() = math;
}

// --print-plan: the layer plan the suites measure, for the PyTorch peers (--plan FILE) and
// people. An unknown model or an image size it cannot take is a bad argument.
int print_plan(const std::string& model, int64_t image_size, int64_t classes) {
  std::string json;
  try {
    const kiln::ModelSpec& spec = kiln::find_model_spec(model);
    json = kiln::plan_json(spec, image_size, classes ? classes : spec.default_num_classes);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("--print-plan: ") + e.what());
  }
  std::fputs(json.c_str(), stdout);
  return 0;
}

// One suite's rows, and with --compare its PyTorch peer's, printed as they come.
SuiteReport run_suite(const Suite& suite, const Options& opt, const MachineLimits& m) {
  SuiteReport rep;
  rep.suite = &suite;
  rep.res = suite.run(opt, m);
  if (opt.compare) {
    if (!suite.peer_script) {
      std::printf("\n--compare: suite %s has no PyTorch peer; kiln results only\n", suite.name);
    } else {
      rep.peer = run_peer(suite, opt, m);
      if (rep.peer->ok) print_comparison(rep.res, *rep.peer);
      else std::printf("\n--compare: PyTorch comparison %s: %s; kiln results only\n",
                       rep.peer->refused ? "REFUSED" : "unavailable", rep.peer->why.c_str());
    }
  }
  set_table_widths(0, 0);
  for (const std::string& name : opt.only)  // a misspelt name, or a row this device does not run
    if (std::none_of(rep.res.rows.begin(), rep.res.rows.end(), [&](const Row& r) { return r.name == name; }))
      std::printf("--only %s: no such row ran on %s (a misspelt name, a skipped row, or a GPU-only row)\n",
                  name.c_str(), opt.device.c_str());
  return rep;
}

// --print-plan's model and the sizes that go with it.
struct PlanRequest {
  std::string model;
  int64_t image_size = 0, classes = 0;
};

// The command line into opt (and plan); returns an exit status when the flags say to stop
// here (--list, --help), else nothing.
std::optional<int> parse_args(int argc, char** argv, Options& opt, PlanRequest& plan) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    const auto count = [&](int64_t lo, int64_t hi) { return static_cast<int>(parse_int(a, value(), lo, hi)); };
    if (a == "--suite") opt.suite = value();
    else if (a == "--device") opt.device = value();
    else if (a == "--conv-search") opt.conv_search = value();
    else if (a == "--batch") {
      std::stringstream ss(value());
      opt.batches.clear();
      for (std::string b; std::getline(ss, b, ',');) opt.batches.push_back(parse_int(a, b.c_str(), 1, kMaxBatch));
      if (opt.batches.empty()) throw std::invalid_argument("--batch needs a size");
      opt.batch = opt.batches.front();
    } else if (a == "--cache") {
      const std::string v = value();
      if (v != "cold" && v != "warm") throw std::invalid_argument("--cache must be cold or warm, got '" + v + "'");
      opt.cold_cache = v == "cold";
    }
    else if (a == "--repeat") opt.repeat = count(1, 100000);
    else if (a == "--warmup") opt.warmup = count(0, 100000);
    else if (a == "--threads") opt.threads = count(1, 4096);
    else if (a == "--json") {
      opt.json_path = value();
      if (opt.json_path.empty()) throw std::invalid_argument("--json needs a file path, e.g. /tmp/bench.json");
    }
    else if (a == "--data") opt.data_dir = value();
    else if (a == "--compare") opt.compare = true;
    else if (a == "--only") {
      std::stringstream ss(value());
      for (std::string r; std::getline(ss, r, ',');)
        if (!r.empty()) opt.only.push_back(r);
      if (opt.only.empty()) throw std::invalid_argument("--only needs a row name");
      setenv("KILN_PEER_ONLY", argv[i], 1);  // the peer (torch_cpu_peer.py) runs the same rows
    }
    else if (a == "--model") opt.model = value();
    else if (a == "--profile") opt.profile = count(1, 10000);
    else if (a == "--print-plan") plan.model = value();
    else if (a == "--image-size") plan.image_size = parse_int(a, value(), 32, 8192);
    else if (a == "--classes") plan.classes = parse_int(a, value(), 1, 1000000);
    else if (a == "--list") {
      for (const Suite& s : kSuites) std::printf("%-16s %s%s\n", s.name, s.help, s.on_cuda ? " [cpu, cuda]" : "");
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      throw std::invalid_argument("unknown argument '" + a + "'");
    }
  }
  return std::nullopt;
}

// --json FILE, before any timing: a file path (not a folder) whose folder exists and can be
// written (the report is written beside FILE, then renamed over it).
void check_json_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw std::invalid_argument("--json " + path + ": is a folder; give a file path, e.g. " + path + "/bench.json");
  const fs::path parent = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  if (!fs::is_directory(parent, ec))
    throw std::invalid_argument("--json " + path + ": folder " + parent.string() + " does not exist; create it first");
  if (access(parent.c_str(), W_OK) != 0)
    throw std::invalid_argument("--json " + path + ": folder " + parent.string() +
                                " is not writable; give another path");
}

// --only, before any timing: the step suite alone, and names among its rows.
void check_only(const Options& opt, bool step_alone) {
  if (opt.only.empty()) return;
  if (!step_alone) throw std::invalid_argument("--only picks rows of the step suite: use it with --suite step");
  const std::vector<std::string> names = step_row_names(kiln::find_model_spec(opt.model));
  for (const std::string& want : opt.only) {
    if (std::find(names.begin(), names.end(), want) != names.end()) continue;
    std::string have;
    for (const std::string& n : names) have += (have.empty() ? "" : ", ") + n;
    throw std::invalid_argument("--only: the step suite has no row '" + want + "' (" + opt.model + ": " + have + ")");
  }
}

// What must hold before any timing, so that a bad flag costs no minutes of measuring: the
// model, --only's rows, the JSON path, the pipeline's folder, the PyTorch peer; and a warning
// when --threads passes the CPUs this process may use.
void check_before_timing(const Options& opt, const std::vector<const Suite*>& suites) {
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && opt.threads > CPU_COUNT(&cpus))
    std::fprintf(stderr, "kiln_bench: warning: --threads %d is more than the %d CPUs this process may use; the "
                 "threads will share them\n", opt.threads, CPU_COUNT(&cpus));
  const bool step_alone = suites.size() == 1 && std::string(suites[0]->name) == "step";
  if (opt.model != "vgg16") {
    if (!step_alone)
      throw std::invalid_argument("--model picks the step suite's model (the other suites time VGG16's layers): use "
                                  "it with --suite step");
    try {  // an unknown model is a bad argument, named with the known ones
      (void)kiln::find_model_spec(opt.model);
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("--model: ") + e.what());
    }
  }
  check_only(opt, step_alone);
  if (!opt.json_path.empty()) check_json_path(opt.json_path);
  for (const Suite* s : suites)
    if (std::string(s->name) == "pipeline") check_data_dir(opt.data_dir);
  if (opt.compare) {
    if (std::none_of(suites.begin(), suites.end(), [](const Suite* s) { return s->peer_script != nullptr; }))
      throw std::invalid_argument("--compare: suite " + opt.suite + " has no PyTorch peer (nothing to compare)");
    std::vector<const char*> checked;  // each peer script once (torch_cpu_peer.py serves several suites)
    for (const Suite* s : suites)
      if (s->peer_script && std::find(checked.begin(), checked.end(), s->peer_script) == checked.end()) {
        check_peer_python(*s);
        checked.push_back(s->peer_script);
      }
  }
}

int run(int argc, char** argv) {
  Options opt;
  PlanRequest plan;
  for (int i = 0; i < argc; ++i) opt.command_line += (i ? " " : "") + std::string(argv[i]);
  if (const std::optional<int> status = parse_args(argc, argv, opt, plan)) return *status;
  if (!plan.model.empty()) return print_plan(plan.model, plan.image_size, plan.classes);
  if (plan.image_size || plan.classes) throw std::invalid_argument("--image-size and --classes go with --print-plan");
  const kiln::Device device = bench_device(opt);  // --device, checked there
  const bool cuda = !device.is_cpu();
  const std::vector<const Suite*> suites = select_suites(opt, cuda);
  apply_conv_search(opt, cuda);
  if (cuda && kiln::device_count(kiln::DeviceType::cuda) == 0) {
    std::fprintf(stderr, "kiln_bench: --device cuda: no GPU found\n");
    return 1;
  }
  check_before_timing(opt, suites);

  // Before any parallel region: kiln's loops and oneDNN both follow OpenMP's setting, and
  // the environment carries it to the peer script too.
  setenv("OMP_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);
  omp_set_num_threads(opt.threads);

  // --only: no limits (their GEMM and 2 GiB copy would be in any memory meter's reading).
  const MachineLimits m = opt.only.empty() ? measure_limits(device, opt.threads, opt.repeat)
                                           : unmeasured_limits(device, opt.threads);
  set_cold_cache(opt.cold_cache);
  print_header(opt, suites, m);

  std::vector<SuiteReport> reports;
  const Suite* running = nullptr;
  if (!opt.json_path.empty())  // the rows so far, rewritten after each (no PyTorch rows until the end)
    set_row_listener([&](const SuiteResult& partial) {
      std::vector<SuiteReport> so_far = reports;
      so_far.push_back(SuiteReport{running, partial, std::nullopt});
      write_json(opt.json_path, opt, m, so_far);
    });
  for (const Suite* suite : suites) {
    running = suite;
    if (suites.size() > 1) {
      std::printf("\n================ %s: %s\n\n", suite->name, suite->help);
      std::fflush(stdout);
    }
    reports.push_back(run_suite(*suite, opt, m));
  }
  set_row_listener(nullptr);
  if (!opt.json_path.empty()) {
    write_json(opt.json_path, opt, m, reports);
    std::printf("\nJSON written to %s\n", opt.json_path.c_str());
  }
  const bool all_checks_ok = print_warnings(reports, m, suites.size() > 1);
  if (!all_checks_ok) {
    std::fprintf(stderr, "kiln_bench: some checks FAILED (rows without timings above)\n");
    return 1;
  }
  for (const SuiteReport& rep : reports)  // asked for and not had: not a success
    if (rep.peer && !rep.peer->ok && !rep.peer->refused) {
      std::fprintf(stderr, "kiln_bench: --compare: the PyTorch comparison of suite %s did not run: %s\n",
                   rep.suite->name, rep.peer->why.c_str());
      return 1;
    }
  return 0;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) {
  try {
    return kiln::bench::run(argc, argv);
  } catch (const std::invalid_argument& e) {
    // The error alone, where it is seen; the flags are one --help away.
    std::fprintf(stderr, "kiln_bench: %s (kiln_bench --help lists the flags)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_bench: %s\n", e.what());
    return 1;
  }
}
