// kiln_bench's shared machinery, one of each for every device (--device cpu or cuda):
// options, the timing loop, the device's measured limits, rows and their table, checking
// with the tests' comparison helper, the PyTorch peer and JSON. Each suite lives in its
// own suite_*.cpp and returns rows; kiln_bench.cpp holds main and the suite table.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "train/model_spec.h"

namespace kiln::bench {

using kiln::Shape;
using kiln::Tensor;

// ---------------------------------------------------------------- options

struct Options {
  std::string suite = "vgg16_forward";
  int64_t batch = 8;
  // --batch as given: one size, or a list ("1,8,64") for the suites that sweep batches
  // (conv); empty when not given, and those suites use their own list.
  std::vector<int64_t> batches;
  int repeat = 5;
  int warmup = 1;
  int threads = 2;
  std::string json_path;
  bool compare = false;
  std::string device = "cpu";
  std::string conv_search = "exhaustive";  // CUDA suites: as PyTorch's cudnn.benchmark = True
  // Evict the last-level cache before each timed run (untimed), so a kernel whose data
  // would stay cache-resident between repeats is not flattered; false: --cache warm.
  bool cold_cache = true;
  // pipeline: where the generated JPEGs live (made on first use).
  std::string data_dir = "/tmp/kiln_pipeline_bench";
  // --only: the rows to run (step suite), by name; empty: all. With it the device's limits
  // are not measured, so the process touches nothing but those rows (an outside memory meter).
  std::vector<std::string> only;
  // --model: the registered model the step suite builds (train/model_spec.h); the other
  // suites measure VGG16's layers whatever this says, so kiln_bench refuses it with them.
  std::string model = "vgg16";
  // --profile N: after timing each row, run it once more under kiln::Profiler (by op and
  // input shape) and print its N most expensive lines; 0: off.
  int profile = 0;
  // The command line as given, for the JSON report (who ran what).
  std::string command_line;
};

// Whether --only lets row `name` run.
bool row_wanted(const Options& opt, const std::string& name);

// Where the suite's kernels run (--device; an unknown device, or cuda in a kiln built
// without it, is a bad argument); inputs are made on the host (the references read them
// there) and copied with to_bench_device, outputs made with empty_on_bench_device.
kiln::Device bench_device(const Options& opt);
Tensor to_bench_device(const Tensor& host, const Options& opt);
Tensor empty_on_bench_device(const Shape& shape, const Options& opt, kiln::DType dtype = kiln::DType::f32);

// The batch sizes a sweeping suite runs: --batch's list, else `fallback`.
std::vector<int64_t> batches_or(const Options& opt, std::vector<int64_t> fallback);


extern const char* kUsage;

// ---------------------------------------------------------------- timing

struct Stats {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  // Share of the machine's CPU time that other processes took while this was timed. The
  // cores may be shared: a time measured beside someone else's compile is not kiln's.
  double other_load = 0;
  int runs = 0;
};

// Loads above this mark a timing as disturbed.
constexpr double kDisturbed = 0.10;

// The one timing loop: runs fn warmup times untimed, then at least repeat times (more for
// short kernels: rows under 200 ms in all run until 200 ms are measured), each run timed
// on its own by the device's clock (kiln::time_ms: a steady clock on the CPU, events on a
// GPU's compute stream). With set_cold_cache(true), the device's last-level cache is
// evicted before each run, outside the timing.
Stats time_it(kiln::Device device, int warmup, int repeat, const std::function<void()>& fn);
void set_cold_cache(bool cold);
// Reads a buffer twice the size of the last-level cache (sysfs; 32 MiB if unknown), so
// what the next run touches comes from memory. Returns the buffer's size in bytes.
size_t evict_cache();

// ---------------------------------------------------------------- machine limits

// The roofs of the device the rows run on (--device), measured at start: one model for
// the CPU and a GPU.
struct MachineLimits {
  std::string device;  // the CPU's or the GPU's model
  int threads = 0;
  double peak_gflops = 0;    // best fp32 GEMM rate (TF32 on a GPU where allowed)
  // The roofs of rows that compute in other math (Row::math): a TF32 GEMM (a GPU only; the
  // same as peak_gflops where GEMMs already use TF32) and a bf16 GEMM (where the device has
  // native bf16: AMX or AVX512_BF16 on a CPU, tensor cores on a GPU); 0 where not measured.
  double peak_tf32_gflops = 0;
  double peak_bf16_gflops = 0;
  std::string peaks_from;  // how the TF32 and bf16 roofs were measured, for the header
  double bandwidth_gbs = 0;  // best copy rate, bytes read + written
  std::string sgemm_shape;
  std::string copy_size;
  std::string loadavg;  // /proc/loadavg at start: other work on the machine skews everything
  std::string started_utc;  // when the run started, "2026-12-04T10:00:00Z"
  double other_load = 0;  // the larger of the two measurements' Stats::other_load
  // The theoretical fp32 rate of the cores used (cores x FMA FLOP/cycle x clock), from what
  // /proc/cpuinfo says, printed beside the measured peak; 0 where that is not known (GPUs,
  // CPUs whose FMA width /proc/cpuinfo does not determine).
  double theoretical_gflops = 0;
  std::string theoretical_from;  // "2 cores x 32 FLOP/cycle x 2.60 GHz (...)"
  // Other processes took CPU time while the limits were measured: fractions of them are
  // fractions of limits measured low (printed with a '?').
  bool disturbed() const { return other_load > kDisturbed; }
};

// The roofs every row is measured against: what `device` does at its best, measured now.
// CPU: oneDNN's sgemm (row-major) and the faster of a memcpy and a streaming-store copy; a GPU: kiln's GEMM and a
// device copy, through the public API.
MachineLimits measure_limits(kiln::Device device, int threads, int repeat);
// The device's name only, its roofs zero (printed as "-"): for --only runs.
MachineLimits unmeasured_limits(kiln::Device device, int threads);

// ---------------------------------------------------------------- rows and results

// One checked, timed kernel (or a whole forward pass).
// The arithmetic a row's FLOPs run in, which picks its compute roof: an fp32 peak does not
// bound a bf16 convolution on AMX (16x fp32's FLOPs a cycle) or a TF32 one on tensor cores.
enum class Math { fp32, tf32, bf16 };
const char* math_name(Math m);

struct Row {
  std::string name;
  std::string kind;   // conv, pool, fc, net
  std::string shape;  // what it computes, e.g. "[8,32,32,3] -> [8,32,32,16]"
  double flops = 0;   // useful floating-point operations of one run
  double bytes = 0;   // minimum memory traffic of one run (inputs, weights, outputs)
  Math math = Math::fp32;  // the compute roof it is judged against (peak_of)
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
  bool profile_said_empty = false;  // --profile: the "no op records" note was printed
};

// A row before it is checked and timed: what it is and what one run costs, judged against
// the peak of `math`.
Row make_row(std::string name, std::string kind, std::string shape, double flops, double bytes,
             Math math = Math::fp32);
double gflops(const Row& r);
// The compute roof of the row's math; 0 where that roof was not measured (then %peak and
// %roof print "-" rather than a fraction of another math's peak).
double peak_of(const Row& r, const MachineLimits& m);
double gbs(const Row& r);
// The fraction of the roofline: min(peak_of(r), intensity * bandwidth); NaN where the row is
// not judged (untimed, no bytes, or that roof not measured: printed '-', JSON null).
double roof_fraction(const Row& r, const MachineLimits& m);
const char* bound_of(const Row& r, const MachineLimits& m);

// Widths of the table's name and shape columns (10 and 34 unless a suite asks for more).
void set_table_widths(int name_width, int shape_width);
void print_table_header();
void print_row(const Row& r, const MachineLimits& m);

// Check, then time: when row.check_ok, times fn into row; prints the row; records it.
void time_checked_row(Row row, const Options& opt, const MachineLimits& m, SuiteResult& res,
                      const std::function<void()>& fn);
// Called with the suite's result so far after each row time_checked_row adds (empty: none).
// kiln_bench --json rewrites its file each time, so a run cut short (a GPU check's time
// limit) keeps the rows it timed.
void set_row_listener(std::function<void(const SuiteResult&)> listener);

// ---------------------------------------------------------------- checking

// Judges a row's n values as the op table and the tests do, with the one comparison
// helper (check/compare.h): |out - ref| <= rtol * mean|ref| + rtol * |ref|, so rtol 0
// demands equality. The rtol is one of the op table's classes (check/op_cases.h) or a
// tighter one the suite explains. Records the verdict and the worst element on the row;
// called again for another quantity of the same row (`what`: "dbeta"), it adds to them.
void check_row(Row& row, size_t n, const std::function<double(size_t)>& out,
               const std::function<double(size_t)>& ref, double rtol, const std::string& what = "");
void check_row(Row& row, const std::vector<double>& out, const std::vector<double>& ref, double rtol,
               const std::string& what = "");
// Fails a checked row for a reason beyond its values (a wrong argmax, a broken mask).
void fail_check(Row& row, const std::string& why);

// Host view of a tensor's floats: the tensor itself when it already lives on the host.
const float* host_floats(const Tensor& t, Tensor& keep);
std::string shape_str(const Shape& s);

// ---------------------------------------------------------------- VGG16's shapes

// The model every VGG16 suite measures, from the model spec registry (train/): the suites
// read their shapes from its plan, and the PyTorch peers read the same plan as JSON
// (kiln_bench --print-plan), so no suite or peer restates the layer list.
const kiln::ModelSpec& bench_model();
// Its plan at the default image size (224) with `classes` outputs.
std::vector<kiln::LayerPlan> vgg16_plan(int64_t classes = 1000);
// The plan's layers of one kind, in order: the 13 convs, the 5 pools or the 3 fcs.
std::vector<kiln::LayerPlan> vgg16_layers(kiln::LayerPlan::Kind kind);
// The plan's layer named `name` ("conv3_3"); a name the plan lacks is an error.
kiln::LayerPlan vgg16_layer(const std::string& name);
// The 13 convs in order (3x3, stride 1, pad 1); a 2x2/2 max-pool follows each block.
std::vector<kiln::LayerPlan> vgg16_convs();
// A model's forward at batch n, default image size, with a `classes`-way head: {FLOPs,
// bytes its layers read and write at least once (weights, inputs, outputs)}. From the
// spec's plan (the VGGs), or ResNet-50's convolution list (layers/models/resnet.h) for
// its variants; a model with neither is an error.
std::pair<double, double> forward_cost(const kiln::ModelSpec& spec, int64_t n, int64_t classes);
// Writes the plan of the model the suites run (--model for the step suite, else the bench
// model) as JSON to a temporary file for a peer script (--plan) and returns its path; the
// file is removed when the process exits.
std::string peer_plan_file(const Options& opt);

// ---------------------------------------------------------------- suites and peers

struct Suite {
  const char* name;
  const char* help;
  SuiteResult (*run)(const Options&, const MachineLimits&);
  const char* peer_script;  // relative to the source tree; nullptr when there is no peer
  bool peer_takes_suite = false;  // pass --suite NAME to the peer script (torch_cpu_peer.py)
  bool sweeps_batches = false;    // runs each of --batch's list (conv), not one size
  bool peer_takes_data = false;   // pass --dir DATA_DIR to the peer script (pipeline)
  bool on_cuda = false;           // also runs with --device cuda (tensors and timing on the GPU)
  bool peer_takes_plan = true;    // pass --plan FILE (the model plan as JSON) to the peer script
  bool takes_batch = false;       // reads --batch (one size); sweeps_batches implies it
};

// Whether the suite reads --batch (kiln_bench refuses --batch for the others).
inline bool takes_batch(const Suite& s) { return s.takes_batch || s.sweeps_batches; }

// ---------------------------------------------------------------- the PyTorch peer

struct PeerRow {
  Stats t;
  std::string note;  // the peer's caveat for this row ("no decode cache: every epoch decodes"), or ""
};

struct PeerResult {
  bool ok = false;
  bool refused = false;  // the peer ran but its results must not be compared (a wrong sgemm)
  std::string why;  // when !ok: what went wrong, for people
  std::string label;
  // CPU peers: the BLAS torch's GEMM runs on and its rate ("OpenBLAS 0.3.21 core Cooperlake,
  // F.linear 1024x1024x1024 ... GFLOP/s = N% of ..."), and that best fp32 rate as the peer
  // measured it; 0 when the peer reports none (the pipeline peer, GPU peers).
  std::string blas;
  double sgemm_gflops = 0;
  // The peer's GEMM runs below kWeakPeer of this machine's sgemm limit: every compared row
  // is flagged, since its ratio then measures the peer's BLAS install, not PyTorch.
  bool weak = false;
  std::string weak_why;
  std::vector<std::pair<std::string, PeerRow>> rows;
  std::vector<std::pair<std::string, double>> summary;
  const PeerRow* row(const std::string& name) const {
    for (const auto& [k, v] : rows)
      if (k == name) return &v;
    return nullptr;
  }
};

// A peer whose fp32 GEMM reaches less than this share of the machine's sgemm limit is weak.
constexpr double kWeakPeer = 0.5;

// Runs the suite's peer script with the same batch, repeat and threads (and --suite NAME
// for torch_cpu_peer.py, which serves several suites, and --plan FILE, the shapes it
// times); it prints JSON on stdout. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed
// from the peer's environment only; the peer's GEMM rate is judged against m (weak).
PeerResult run_peer(const Suite& suite, const Options& opt, const MachineLimits& m);
// --compare, before any timing: the suite's peer script starts under its interpreter
// ($KILN_PYTHON, else /usr/bin/python3) and imports torch; otherwise a bad argument saying
// which and what to set.
void check_peer_python(const Suite& suite);
void print_comparison(const SuiteResult& res, const PeerResult& peer);

// One suite's results, with its peer's when there is one.
struct SuiteReport {
  const Suite* suite = nullptr;
  SuiteResult res;
  std::optional<PeerResult> peer;
};
// One suite: the same JSON as before; several (--suite all): {"suites": [...]} with the
// options and machine once.
void write_json(const std::string& path, const Options& opt, const MachineLimits& m,
                const std::vector<SuiteReport>& reports);

// `v` as an integer in [lo, hi]; anything else (not a number, out of range) is a bad
// argument naming the flag and the range.
int64_t parse_int(const std::string& flag, const char* v, int64_t lo, int64_t hi);

}  // namespace kiln::bench
